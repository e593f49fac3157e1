"""VPT: Visual Prompt Tuning (Jia et al., "Visual Prompt Tuning", ECCV 2022) on CLIP's image tower.

Learnable tokens are inserted after the class token: at the input only (``shallow``) or, in
``deep`` mode, fresh tokens at every layer of ``layers`` (default: all). The text tower is not
prompted, so the class embeddings of a hand-written prompt are computed once per class list: "a photo of
a {}." for every dataset, as the reference code (``text_template: null`` takes the dataset's template).
Defaults for CLIP follow the reference code of MaPLe's deep-VPT baseline (Khattak et al. 2023,
multimodal-prompt-learning ``VPT/vit_b16_c2_ep5_batch4_4``): 8 tokens in all 12 layers drawn from
N(0, 0.02), SGD lr 0.0025, batch 4, 5 epochs. ``init: uniform`` is the VPT paper's own initialisation
(Jia et al.: U(-v, v), v = sqrt(6 / (3 * patch**2 + width))). With ``init_from`` a ConES run, the classes
ConES searched are scored against their searched concepts instead (ConES's later stage; ``vlpt.methods.cones``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vlpt.errors import CheckpointError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.methods.cones import read_concepts
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.prompts.deep import PromptInit, PromptStack, check_prompt_layers
from vlpt.registry import register_method


@dataclass
class VPTConfig(MethodConfig):
    mode: Literal["shallow", "deep"] = "deep"
    n_tokens: int = 8
    #: deep mode: the prompted layers (default: every layer of the image tower)
    layers: list[int] | None = None
    #: normal: N(0, 0.02) as the reference code (MaPLe's VPT baseline); uniform: Jia et al.'s xavier-uniform
    init: PromptInit = "normal"
    #: the frozen classifier's prompt: "a photo of a {}." as the reference code; null: the dataset's template
    text_template: str | None = "a photo of a {}."
    lr: float = 0.0025
    batch_size: int = 4
    epochs: int | dict[int, int] = 5

    def __post_init__(self):
        super().__post_init__()
        if self.text_template is not None and "{}" not in self.text_template:
            raise ValueError(f"text_template must contain {{}} for the class name, got {self.text_template!r}")


@register_method("vpt")
class VPT(PromptMethod):
    """Visual prompts in the image tower; frozen hand-written text classifier."""

    Config = VPTConfig

    def build(self, classnames, templates):
        cfg = self.config
        n_layers = self.backbone.vision_layers
        if cfg.mode == "shallow":
            layers = [0]
        else:
            layers = check_prompt_layers(cfg.layers if cfg.layers is not None else range(n_layers), n_layers,
                                         "vpt layers")
        patch = self.backbone.patch_size
        self.visual_prompts = PromptStack(layers, cfg.n_tokens, self.backbone.vision_width, init=cfg.init,
                                          patch_size=patch, dtype=self.backbone.dtype)
        self.init_concepts([], torch.zeros(0, self.backbone.embed_dim))
        self.update_classnames(classnames, templates)

    def init_concepts(self, classnames: list[str], concepts: torch.Tensor) -> None:
        """A ConES classifier: ``concepts[i]`` scores class ``classnames[i]`` (saved with the prompts when set)."""
        self.concept_classnames = list(classnames)
        self.register_buffer("concepts", concepts.to(self.backbone.device, self.backbone.dtype),
                             persistent=bool(classnames))

    def update_classnames(self, classnames, templates):
        with torch.no_grad():
            weights = zero_shot_weights(self.backbone, classnames, [self.config.text_template or templates[0]])
        rows = {name: i for i, name in enumerate(self.concept_classnames)}
        if any(name in rows for name in classnames):
            weights = weights.clone()  # the backbone keeps the text features it returned: never write into them
            for i, name in enumerate(classnames):
                if name in rows:
                    weights[i] = self.concepts[rows[name]].to(weights)
        self.register_buffer("class_embeddings", weights, persistent=False)

    def initialize_from(self, path):
        """A ConES run's concepts as the classifier of the classes it searched, or another run's prompts (and the
        concepts it classified with)."""
        method, concepts = read_concepts(path, self.backbone)
        if method == "cones" and not set(concepts) & set(self.classnames):
            raise CheckpointError(f"init_from checkpoint {path}: ConES searched none of this run's classes "
                                  f"({', '.join(list(concepts)[:5])}, ...)")
        if concepts:
            self.init_concepts(list(concepts), torch.stack(list(concepts.values())))
            self.update_classnames(self.classnames, self.templates)
        if method == "cones":
            return ["concepts"]
        copied = super().initialize_from(path)
        if copied == ["concepts"]:
            raise CheckpointError(f"init_from checkpoint {path} (method {method}) shares no prompt tensor with "
                                  f"{self.name}, only its ConES classifier")
        return copied

    def checkpoint_extra(self) -> dict:
        return {"concept_classnames": self.concept_classnames} if self.concept_classnames else {}

    def restore_checkpoint_extra(self, extra: dict) -> None:
        names = list(extra.get("concept_classnames", []))
        self.init_concepts(names, torch.zeros(len(names), self.backbone.embed_dim))

    def load_checkpoint(self, path) -> None:
        super().load_checkpoint(path)
        self.update_classnames(self.classnames, self.templates)  # the classifier of the loaded concepts, if any

    def logits(self, images):
        features = self.backbone.encode_image(images, deep_prompts=self.visual_prompts())
        return cosine_logits(features, self.class_embeddings, self.backbone.logit_scale)
