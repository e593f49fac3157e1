"""R-AMT: regularized mask tuning (Zheng et al., "Regularized Mask Tuning: Uncovering Hidden Knowledge in
Pre-trained Vision-Language Models", ICCV 2023).

A binary mask on chosen weights of the frozen image tower, learned: each masked weight ``W`` acts as ``M (.) W``
with ``M = 1[s > threshold]`` of real scores ``s`` (one per weight element, straight-through gradient), so where
the mask is 1 the weight is the frozen one. The text side is zero-shot CLIP's (the dataset's template). The
scores' gradient ``g`` (of the cross-entropy plus a small L2 norm of the scores) is kept per element with
probability ``P = (sign(g) (g + k) / (|g| + |k|) + 1) / 2``, ``k`` the gradient of the distillation towards zero-shot
CLIP's prediction: always where both agree in sign, with probability ``|g| / (|g| + |k|)`` where they conflict
(gradient dropout regularity); a dropped element keeps ``1 - lambda`` of itself.

Defaults follow the reference code (wuw2019/R-AMT, ``code/trainers/masktuning.py``, ``code/modules/masklayers.py``,
``code/modules/visiontransformer.py``, ``code/configs/trainers/MASK/vit_b16.yaml``, ``code/loss/reg_loss.py``): the
attention input and output projections of every image block and the patch embedding are masked (not the MLP);
scores start at 1e-2 against a threshold of 5e-3 (so training starts from zero-shot CLIP); loss CE + 1e-4 times
the sum over masked tensors of the scores' L2 norms; the distillation is the soft cross-entropy to zero-shot
CLIP's logits at temperature 1; lambda 1 (its configs and base-to-novel scripts; its README suggests 0.3 for some
16-shot datasets); Adam lr 8e-5 without weight decay, batch 32, 30 epochs, a cosine per epoch without warm-up
(ImageNet: lr 3e-5, 10 epochs, the ``r_amt_imagenet`` config). The reference trains on its own crop (scale 0.5-1);
vlpt's runs use the suite's augmentation. The scores are kept as learned (a checkpoint holds one value per masked
weight, the size of the masked weights; the reference stores the packed binary masks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.methods.step import Grads, TrainingStep
from vlpt.methods.zeroshot import TemplateClassifier
from vlpt.registry import register_method


@dataclass
class RAMTConfig(MethodConfig):
    optimizer: Literal["sgd", "adamw", "adam"] = "adam"
    lr: float = 8e-5
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int | dict[int, int] = 30
    warmup_epochs: int = 0
    #: a weight is kept where its score exceeds this
    threshold: float = 5e-3
    #: every score's initial value
    init_score: float = 1e-2
    #: weight of the sum of the scores' L2 norms in the loss
    score_norm_weight: float = 1e-4
    #: how much of a dropped gradient element is removed (1: all)
    gdr_lambda: float = 1.0
    #: the temperature of the distillation towards zero-shot CLIP
    kl_temperature: float = 1.0
    #: mask the MLP weights too (the reference's configs do not)
    mask_mlp: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"r_amt optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if not 0 <= self.gdr_lambda <= 1:
            raise ConfigError(f"r_amt gdr_lambda must be in [0, 1], got {self.gdr_lambda}")
        if self.init_score <= self.threshold:
            raise ConfigError(f"r_amt init_score {self.init_score} must exceed the threshold {self.threshold}, so "
                              f"that training starts from zero-shot CLIP")


def masked_weight_names(visual: nn.Module, mask_mlp: bool) -> list[str]:
    """The image tower's weights R-AMT masks: the patch embedding and every block's attention projections (and
    MLP weights with ``mask_mlp``)."""
    if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
        raise ConfigError("r_amt masks a ViT image tower; this backbone's is not one")
    names = ["conv1.weight"]
    for i, _ in enumerate(visual.transformer.resblocks):
        block = f"transformer.resblocks.{i}"
        names += [f"{block}.attn.in_proj_weight", f"{block}.attn.out_proj.weight"]
        if mask_mlp:
            names += [f"{block}.mlp.c_fc.weight", f"{block}.mlp.c_proj.weight"]
    return names


def keep_probability(g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """R-AMT's per-element probability of keeping ``g`` given the zero-shot gradient ``k``."""
    return (torch.sign(g) * (g + k) / (g.abs() + k.abs() + 1e-8) + 1) / 2


@register_method("r_amt")
class RAMT(TemplateClassifier, PromptMethod):
    """Zero-shot CLIP whose image tower's weights are masked by learned binary masks."""

    Config = RAMTConfig

    def build(self, classnames, templates):
        cfg = self.config
        visual = self.backbone.model.visual
        self.masked_names = masked_weight_names(visual, cfg.mask_mlp)
        weights = dict(visual.named_parameters())
        self.scores = nn.ParameterList(
            nn.Parameter(torch.full_like(weights[name], cfg.init_score, dtype=torch.float32))
            for name in self.masked_names)
        self._set_classifier(classnames, templates)

    def masks(self) -> list[torch.Tensor]:
        """The binary masks, with the straight-through gradient to the scores."""
        threshold = self.config.threshold
        return [s + ((s > threshold).to(s.dtype) - s).detach() for s in self.scores]

    def masked_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Image features of the tower with ``M (.) W`` in place of each masked weight (the backbone unchanged)."""
        visual = self.backbone.model.visual
        weights = dict(visual.named_parameters())
        masked = {name: mask.to(weights[name].dtype) * weights[name]
                  for name, mask in zip(self.masked_names, self.masks())}
        return functional_call(visual, masked, (images.to(self.backbone.dtype),))

    def logits(self, images):
        return cosine_logits(self.masked_image_features(images), self.classifier, self.backbone.logit_scale)

    def training_loss(self, images, labels):
        norm = sum(s.norm() for s in self.scores)
        return F.cross_entropy(self.logits(images), labels) + self.config.score_norm_weight * norm

    def zero_shot_loss(self, images, labels):
        """The soft cross-entropy towards zero-shot CLIP's prediction (its gradient steers the dropout)."""
        t = self.config.kl_temperature
        with torch.no_grad():
            teacher = F.softmax(cosine_logits(self.backbone.encode_image(images), self.classifier,
                                              self.backbone.logit_scale) / t, dim=-1)
        return -(teacher * F.log_softmax(self.logits(images) / t, dim=-1)).sum(dim=-1).mean() * t * t

    def transform_gradients(self, grads: Grads, step: TrainingStep) -> Grads:
        toward = step.gradients(step.loss(self.zero_shot_loss))
        lam = self.config.gdr_lambda
        kept = {}
        for name, g in grads.items():
            keep = (keep_probability(g, toward[name]) > torch.rand_like(g)).to(g.dtype)
            kept[name] = g * ((1 - lam) + lam * keep)
        return kept

    def build_optimizer(self, params):
        cfg = self.config
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return super().build_optimizer(params)
