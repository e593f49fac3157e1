"""KgCoOp: Knowledge-guided Context Optimization (Yao et al., "Visual-Language Prompt Tuning
with Knowledge-guided Context Optimization", CVPR 2023).

CoOp plus a penalty keeping the learned class embeddings near the hand-written ones:
``L = CE + lambda * mean_c ||w_c - w_c^clip||^2`` on L2-normalized text features,
with lambda = 8.0 and 4 context tokens from "a photo of a". This is the paper's equation; on unit
vectors it equals 2 * (1 - cos), so it is twice a ``1 - cos`` penalty at the same lambda.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlpt.methods.base import cosine_logits
from vlpt.methods.coop import CoOp, CoOpConfig
from vlpt.methods.published import COOP_DATASETS, published_results
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.registry import register_method


@dataclass
class KgCoOpConfig(CoOpConfig):
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    kg_weight: float = 8.0


@register_method("kgcoop")
class KgCoOp(CoOp):
    """CoOp regularized towards the zero-shot class embeddings of the dataset's template."""

    Config = KgCoOpConfig
    published = published_results(
        "Yao et al., Visual-Language Prompt Tuning with Knowledge-guided Context Optimization (KgCoOp), CVPR 2023: "
        "base-to-novel, mean of 11 datasets", protocol="base_to_novel", backbone="ViT-B-16",
        dataset=COOP_DATASETS, shots=16, values={"base": 80.73, "novel": 73.60, "hm": 77.00})

    def build(self, classnames, templates):
        super().build(classnames, templates)
        self._set_handcrafted(classnames, templates)

    def update_classnames(self, classnames, templates):
        super().update_classnames(classnames, templates)
        self._set_handcrafted(classnames, templates)

    def _set_handcrafted(self, classnames, templates):
        with torch.no_grad():
            weights = zero_shot_weights(self.backbone, classnames, templates[:1])
        self.register_buffer("handcrafted", weights, persistent=False)

    def knowledge_distance(self, text_features: torch.Tensor) -> torch.Tensor:
        """Mean squared distance between learned and hand-written normalized class embeddings."""
        return (F.normalize(text_features, dim=-1) - self.handcrafted).pow(2).sum(dim=-1).mean()

    def training_loss(self, images, labels):
        text_features = self.text_features()
        logits = cosine_logits(self.image_features(images), text_features, self.backbone.logit_scale)
        return F.cross_entropy(logits, labels) + self.config.kg_weight * self.knowledge_distance(text_features)
