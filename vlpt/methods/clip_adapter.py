"""CLIP-Adapter (Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters", IJCV 2024).

A small residual bottleneck on the frozen image feature: ``f' = ratio * A(f) + (1 - ratio) * f`` with
``A = ReLU(W2 ReLU(W1 f))`` (no biases, hidden width D / ``reduction``), classified by cosine similarity with
zero-shot CLIP's class embeddings of the dataset's hand-written prompt; only the adapter learns (cross-entropy).

Defaults follow the reference code (gaopengcuhk/CLIP-Adapter, ``clip_adapter.py``, the visual adapter its
README says to run with CoOp's commands): reduction 4, residual ratio 0.2, CoOp's hand-written prompts and
CoOp's optimisation (SGD 2e-3, batch 32, cosine, 1 warm-up epoch at 1e-5; 50 / 100 / 100 / 200 / 200 epochs
for 1 / 2 / 4 / 8 / 16 shots, as CoOp's scripts). The image tower is never prompted, so runs train on stored
features (``frozen_image_features``). The classifier is the text of any class list: base-to-novel and
cross-dataset transfer apply the adapter to unseen classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.methods.zeroshot import TemplateClassifier
from vlpt.registry import register_method


@dataclass
class CLIPAdapterConfig(MethodConfig):
    #: the bottleneck's hidden width is the feature width divided by this
    reduction: int = 4
    #: weight of the adapted feature in the residual mix
    residual_ratio: float = 0.2
    epochs: int | dict[int, int] = field(default_factory=lambda: {1: 50, 2: 100, 4: 100, 8: 200, 16: 200})

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {self.reduction!r}")
        if not 0 <= self.residual_ratio <= 1:
            raise ValueError(f"residual_ratio must be in [0, 1], got {self.residual_ratio}")


@register_method("clip_adapter")
class CLIPAdapter(TemplateClassifier, PromptMethod):
    """Zero-shot CLIP whose image features pass through a learned residual bottleneck."""

    Config = CLIPAdapterConfig
    frozen_image_features = True

    def build(self, classnames, templates):
        width = self.backbone.embed_dim
        hidden = width // self.config.reduction
        if hidden < 1:
            raise ValueError(f"clip_adapter: reduction {self.config.reduction} leaves no hidden unit of the "
                             f"{width}-wide image feature")
        self.adapter = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.ReLU(),
                                     nn.Linear(hidden, width, bias=False), nn.ReLU()).to(self.backbone.dtype)
        self._set_classifier(classnames, templates)

    def adapted_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``ratio * adapter(f) + (1 - ratio) * f`` of the frozen image features ``f``."""
        features = self.image_features(inputs)
        ratio = self.config.residual_ratio
        return ratio * self.adapter(features) + (1 - ratio) * features

    def logits(self, images):
        return cosine_logits(self.adapted_features(images), self.classifier, self.backbone.logit_scale)
