"""PromptSRC: self-regulating prompts (Khattak et al., "Self-regulating Prompts: Foundational Model Adaptation
without Forgetting", ICCV 2023).

IVLP's independent deep prompts in both towers (``vlpt.methods.ivlp``), regulated three ways:

* **mutual agreement** with the frozen model: besides the cross-entropy, an L1 distance between the prompted
  and the frozen L2-normalised image features (weight ``image_loss_weight``) and between the prompted class text
  features and the frozen ones (``text_loss_weight``), and the KL divergence of the prompted prediction from
  the frozen model's, ``KL(p_frozen || p_prompted)`` summed and divided by batch x classes (weight 1);
* **textual diversity**: the frozen class text feature is the mean of the unnormalised text features of 60 of
  CLIP's ImageNet templates (the first 60 of open_clip's 80, the reference's ``IMAGENET_TEMPLATES``), then
  normalised; the frozen prediction scores the frozen image feature against it at the backbone's logit scale;
* **Gaussian prompt aggregation (GPA)**: after each epoch e (1..E) the prompts are added to a running sum with
  weight ``N(e; gpa_mean, gpa_std)`` (the weights normalised to sum to 1), and after the last epoch the prompts
  become that sum: the model evaluated is the aggregate (``tests/test_promptsrc.py``).

Defaults follow the reference code (muzairkhattak/PromptSRC, ``trainers/promptsrc.py``, ``clip/model.py``,
``configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml``): 4 text and 4 vision tokens, prompts in
layers 0-8 of both towers, text context from "a photo of a", SGD lr 0.0025 with 1 warm-up epoch at 1e-5 and a
cosine over 20 epochs, batch 4, loss weights 25 (text) and 10 (image), GPA mean 15 and std 1 (base-to-novel).
Its few-shot config is ``promptsrc_few_shot`` (50 epochs, GPA 30 / 30; the reference comments out 45 / 5 for
Cars, Flowers, Aircraft, DTD and EuroSAT), its cross-dataset and domain-generalisation one
``promptsrc_cross_dataset`` (depth 3, GPA 6 / 10). The reference keeps CLIP in fp16; vlpt runs the suite's
precision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import nn

from vlpt.errors import ConfigError
from vlpt.methods.ivlp import IVLP, IVLPConfig
from vlpt.prompts.context import readable
from vlpt.registry import register_method

#: the reference's 60 templates: CLIP's first 60, "a photo of a {}." first (the order of its sum)
DIVERSE_TEMPLATES = tuple(t("{}") for t in [OPENAI_IMAGENET_TEMPLATES[39], *OPENAI_IMAGENET_TEMPLATES[:39],
                                            *OPENAI_IMAGENET_TEMPLATES[40:60]])


@dataclass
class PromptSRCConfig(IVLPConfig):
    n_ctx: int = 4
    n_vision_tokens: int = 4
    prompt_depth: int = 9
    lr: float = 0.0025
    batch_size: int = 4
    epochs: int | dict[int, int] = 20
    #: weight of the L1 distance between prompted and frozen class text features
    text_loss_weight: float = 25.0
    #: weight of the L1 distance between prompted and frozen image features
    image_loss_weight: float = 10.0
    #: Gaussian prompt aggregation over epochs 1..E: its mean and standard deviation, in epochs
    gpa_mean: float = 15.0
    gpa_std: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.gpa_std <= 0:
            raise ConfigError(f"promptsrc gpa_std must be positive, got {self.gpa_std}")
        if self.text_loss_weight < 0 or self.image_loss_weight < 0:
            raise ConfigError(f"promptsrc loss weights must be >= 0, got text {self.text_loss_weight}, "
                              f"image {self.image_loss_weight}")


def gaussian_weights(epochs: int, mean: float, std: float) -> list[float]:
    """GPA's weight of each epoch 1..``epochs``: the normal density at the epoch, normalised to sum to 1
    (computed from log-densities, so epochs far from the mean give 0 rather than 0 / 0)."""
    logs = [-0.5 * ((e - mean) / std) ** 2 for e in range(1, epochs + 1)]
    top = max(logs)
    raw = [math.exp(x - top) for x in logs]
    return [r / sum(raw) for r in raw]


@register_method("promptsrc")
class PromptSRC(IVLP):
    """IVLP prompts kept close to the frozen model and averaged over epochs with Gaussian weights."""

    Config = PromptSRCConfig

    def build(self, classnames, templates):
        super().build(classnames, templates)
        # GPA's running sum, one tensor per prompt tensor: buffers, so a mid-training checkpoint keeps it
        self.aggregate = nn.Module()
        for i, parameter in enumerate(self.trainable_parameters()):
            self.aggregate.register_buffer(f"sum_{i}", torch.zeros_like(parameter, dtype=torch.float32))

    def frozen_text_features(self) -> torch.Tensor:
        """The frozen model's class text features: the normalised mean over the 60 templates of unnormalised
        features (memoized on the backbone per class list)."""
        names = tuple(readable(c) for c in self.classnames)

        def compute() -> torch.Tensor:
            with torch.no_grad():
                total = sum(self.backbone.encode_text(self.backbone.tokenize([t.format(n) for n in names])).float()
                            for t in DIVERSE_TEMPLATES)
                return F.normalize(total / len(DIVERSE_TEMPLATES), dim=-1)

        return self.backbone.remember(("promptsrc_diverse", names), compute)

    def training_loss(self, images, labels):
        cfg = self.config
        text = F.normalize(self.text_features(), dim=-1)
        image = F.normalize(self.backbone.encode_image(images, deep_prompts=self.vision_prompts()), dim=-1)
        scale = self.backbone.logit_scale
        logits = scale * image @ text.T
        frozen_text = self.frozen_text_features().to(text.dtype)
        with torch.no_grad():
            frozen_image = F.normalize(self.backbone.encode_image(images), dim=-1)
            frozen_logits = scale * frozen_image @ frozen_text.T
        agreement = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(frozen_logits, dim=1), reduction="sum",
                             log_target=True) / logits.numel()
        return (F.cross_entropy(logits, labels) + agreement
                + cfg.text_loss_weight * F.l1_loss(text, frozen_text)
                + cfg.image_loss_weight * F.l1_loss(image, frozen_image))

    @torch.no_grad()
    def epoch_finished(self, epoch: int, epochs: int) -> None:
        """Add the prompts of epoch ``epoch`` (0-based) to GPA's sum; after the last epoch they become the sum."""
        weight = gaussian_weights(epochs, self.config.gpa_mean, self.config.gpa_std)[epoch]
        pairs = list(zip(self.trainable_parameters(), self.aggregate.buffers()))
        if epoch == 0:  # a sum copied from another run's checkpoint (init_from) is not this run's
            for _, total in pairs:
                total.zero_()
        for parameter, total in pairs:
            total.add_(parameter.float(), alpha=weight)
        if epoch == epochs - 1:
            for parameter, total in pairs:
                parameter.copy_(total)
