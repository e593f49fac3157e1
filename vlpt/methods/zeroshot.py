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
from vlpt.methods.published import (COCOOP_BASE_TO_NOVEL, COOP_DATASETS, TPT_PAPER, PublishedResult,
                                    published_results)
from vlpt.prompts.context import readable
from vlpt.registry import register_method
from vlpt.results.record import ACCURACY

_CLIP_ENSEMBLE = ("Radford et al., Learning Transferable Visual Models From Natural Language Supervision "
                  "(CLIP), ICML 2021: OpenAI weights, 80-template ensemble")

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


@register_method("zeroshot")
class ZeroShotCLIP(PromptMethod):
    """CLIP with hand-written prompts; nothing is trained."""

    Config = ZeroShotConfig
    published = (
        *published_results(COCOOP_BASE_TO_NOVEL, protocol="base_to_novel", backbone="ViT-B-16",
                           dataset=COOP_DATASETS, shots=0, variant="default",
                           values={"base": 69.34, "novel": 74.22, "hm": 71.70}),
        *published_results(_CLIP_ENSEMBLE, protocol="domain_generalization", backbone="ViT-B-16", dataset="imagenet",
                           shots=0, variant="zeroshot_ensemble",
                           values={"test": 68.35, "imagenet_v2": 61.88, "imagenet_sketch": 48.14,
                                   "imagenet_a": 50.07, "imagenet_r": 77.67}),
        *[PublishedResult("few_shot", "ViT-B-16", dataset, 0, "test", ACCURACY, value, _CLIP_ENSEMBLE,
                          variant="zeroshot_ensemble")
          for dataset, value in (("imagenet", 68.35), ("oxford_pets", 88.9), ("stanford_cars", 64.5),
                                 ("fgvc_aircraft", 24.2), ("sun397", 64.4), ("dtd", 44.6), ("eurosat", 55.6),
                                 ("oxford_flowers", 71.4))],
        *published_results(TPT_PAPER + ": the CLIP baseline", protocol="test_time", backbone="RN50",
                           dataset="imagenet", shots=0, variant="default",
                           values={"test": 58.16, "imagenet_a": 21.83, "imagenet_v2": 51.41, "imagenet_r": 56.15,
                                   "imagenet_sketch": 33.37}),
    )
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
