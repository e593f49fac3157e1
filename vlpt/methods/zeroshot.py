"""Zero-shot CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021): classify by cosine similarity to hand-written prompts.

``templates: dataset`` uses the dataset's single template (CoOp's zero-shot baseline);
``imagenet7`` the 7 templates CoOp selected and ``clip80`` CLIP's 80 ImageNet templates,
averaged per class. The classifier is built with open_clip's own zero-shot helper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.prompts.context import readable
from vlpt.registry import register_method

ENSEMBLES = {"imagenet7": SIMPLE_IMAGENET_TEMPLATES, "clip80": OPENAI_IMAGENET_TEMPLATES}


@dataclass
class ZeroShotConfig(MethodConfig):
    templates: Literal["dataset", "imagenet7", "clip80"] = "dataset"


def zero_shot_weights(backbone, classnames: list[str], templates) -> torch.Tensor:
    """Normalized class embeddings ``[C, D]``, each the mean over the templates (memoized on the backbone)."""
    names = [readable(c) for c in classnames]
    texts = tuple(t if isinstance(t, str) else t("{}") for t in templates)

    def compute() -> torch.Tensor:
        with torch.no_grad():
            return backbone.zero_shot_classifier(names, templates)

    return backbone.remember(("zero_shot", tuple(names), texts), compute)


class TemplateClassifier:
    """Mixin: ``classifier``, zero-shot CLIP's class embeddings of the dataset's template, made again for every
    class list (a method classifying its own image features against the hand-written prompts)."""

    def update_classnames(self, classnames, templates):
        self._set_classifier(classnames, templates)

    def _set_classifier(self, classnames, templates):
        with torch.no_grad():
            weights = zero_shot_weights(self.backbone, classnames, templates[:1])
        self.register_buffer("classifier", weights, persistent=False)


@register_method("zeroshot")
class ZeroShotCLIP(PromptMethod):
    """CLIP with hand-written prompts; nothing is trained."""

    Config = ZeroShotConfig
    trains = False
    frozen_image_features = True

    def build(self, classnames, templates):
        self.update_classnames(classnames, templates)

    def update_classnames(self, classnames, templates):
        chosen = templates[:1] if self.config.templates == "dataset" else ENSEMBLES[self.config.templates]
        self.register_buffer("class_embeddings", zero_shot_weights(self.backbone, classnames, chosen), persistent=False)

    def logits(self, images):
        features = F.normalize(self.image_features(images), dim=-1)
        return self.backbone.logit_scale * features @ self.class_embeddings.T
