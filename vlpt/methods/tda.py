"""TDA: Training-free Dynamic Adapter (Karmanov et al., "Efficient Test-Time Adaptation of Vision-Language
Models", CVPR 2024). Online: caches of test features carry over the test stream (protocol ``online_test_time``).

For each test image, in stream order (as the reference code, kdiAAA/TDA ``run_test_tda``):

1. Zero-shot CLIP scores it. ImageNet-A, -V2, -R and -Sketch: over 64 views (the original and 63 random resized
   crops with flips and the reference's AugMix, for all four), keeping the 10% with the lowest entropy: the
   image's feature is the mean of their normalised features (not renormalised), its scores the mean of their
   scores and its prediction the mean of their softmaxes. Every other dataset: the original image alone.
2. The positive cache (``positive_capacity`` 3 per class) is offered the feature under the predicted class with
   the prediction's entropy; the negative cache (2 per class) only when the normalised entropy lies strictly
   inside ``entropy_band`` (0.2, 0.5), with the prediction's class probabilities. Each keeps its lowest-entropy
   entries (``vlpt.tta.cache``). The caches are updated before the image is scored, so it finds itself in them.
3. Scores: zero-shot + alpha_p * sum_k exp(-beta_p (1 - f.k)) onehot(y_k) - alpha_n * sum_k exp(-beta_n (1 - f.k))
   1[0.03 < p_k < 1], over the positive and negative entries k.

Defaults follow the reference's configs: alpha_p and beta_p per dataset (``POSITIVE``: ImageNet 2 and 5, the
others' from ``configs/<dataset>.yaml``; datasets outside the table take ImageNet's), the negative cache's
alpha 0.117, beta 1, mask (0.03, 1). The entropy is normalised as the code does, by log2 of the class count
(``entropy_normalizer: log2``; the paper's reading, the natural log that makes it reach 1, is ``log``). Prompts
(``templates: auto``): the 7 ImageNet templates for ImageNet, -A, -V2, Caltech101, SUN397 and Cars, CLIP's 80 for
-R and -Sketch, the dataset's own template otherwise (the reference's ``datasets/*.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vlpt.data.corruptions import catalog_name
from vlpt.methods.training_free_tta import TrainingFreeConfig, TrainingFreeTestTime
from vlpt.registry import register_method
from vlpt.tta.cache import EntropyCache
from vlpt.tta.selection import confident_views, marginal_entropy, prediction_entropy

#: (alpha, beta) of the positive cache per dataset, from the reference's configs
POSITIVE = {"imagenet": (2.0, 5.0), "imagenet_a": (2.0, 5.0), "imagenet_v2": (1.0, 8.0), "imagenet_r": (1.0, 8.0),
            "imagenet_sketch": (2.363, 7.45), "caltech101": (5.0, 5.0), "dtd": (2.0, 3.0), "eurosat": (4.0, 8.0),
            "fgvc_aircraft": (2.0, 2.0), "food101": (1.0, 1.0), "oxford_flowers": (1.0, 5.0),
            "oxford_pets": (2.0, 7.0), "stanford_cars": (1.0, 7.0), "sun397": (2.0, 3.0), "ucf101": (3.0, 8.0)}
#: the reference's templates per dataset (every other dataset: its own template)
TEMPLATES = {**dict.fromkeys(("imagenet", "imagenet_a", "imagenet_v2", "caltech101", "sun397", "stanford_cars"),
                             "imagenet7"),
             **dict.fromkeys(("imagenet_r", "imagenet_sketch"), "clip80")}
#: datasets whose test images the reference scores over augmented views
MULTI_VIEW = ("imagenet_a", "imagenet_v2", "imagenet_r", "imagenet_sketch")


@dataclass
class TDAConfig(TrainingFreeConfig):
    #: views per test image of the MULTI_VIEW datasets (every other dataset: the original alone)
    views: int = 64
    augment: str = "augmix"
    positive_capacity: int = 3
    #: null: the reference's value for the dataset (POSITIVE; ImageNet's elsewhere)
    positive_alpha: float | None = None
    positive_beta: float | None = None
    negative_capacity: int = 2
    negative_alpha: float = 0.117
    negative_beta: float = 1.0
    #: normalised entropies strictly inside this band enter the negative cache
    entropy_band: tuple[float, float] = (0.2, 0.5)
    #: class probabilities strictly inside this band count as the negative cache's pseudo-labels
    mask_band: tuple[float, float] = (0.03, 1.0)
    #: log2: entropy / log2(C), the reference code; log: entropy / ln(C), the paper
    entropy_normalizer: Literal["log2", "log"] = "log2"

    def __post_init__(self):
        super().__post_init__()
        self.entropy_band, self.mask_band = tuple(self.entropy_band), tuple(self.mask_band)
        for name in ("positive_capacity", "negative_capacity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.entropy_normalizer not in ("log2", "log"):
            raise ValueError(f"entropy_normalizer must be log2 or log, got {self.entropy_normalizer!r}")


@register_method("tda")
class TDA(TrainingFreeTestTime):
    """Zero-shot scores corrected by a positive and a negative cache of confident test features."""

    Config = TDAConfig
    test_stream = "online"

    def build(self, classnames, templates):
        self.positive = self.negative = None
        super().build(classnames, templates)

    def auto_templates(self, dataset):
        return TEMPLATES.get(catalog_name(dataset), "dataset")

    def view_count(self, dataset):
        return self.config.views if catalog_name(dataset) in MULTI_VIEW else 1

    def prepare_dataset(self, dataset):
        super().prepare_dataset(dataset)
        cfg = self.config
        alpha, beta = POSITIVE.get(catalog_name(dataset), POSITIVE["imagenet"])
        self.positive_alpha = alpha if cfg.positive_alpha is None else cfg.positive_alpha
        self.positive_beta = beta if cfg.positive_beta is None else cfg.positive_beta

    def start_episodes(self):
        """Empty caches for a new stream."""
        cfg, classes = self.config, len(self.classnames)
        dim, device = self.class_embeddings.shape[-1], self.class_embeddings.device
        self.positive = EntropyCache(classes, cfg.positive_capacity, dim, device=device)
        self.negative = EntropyCache(classes, cfg.negative_capacity, dim, value_dim=classes, device=device)

    def normalised_entropy(self, entropy: float) -> float:
        classes = len(self.classnames)
        return entropy / (math.log2(classes) if self.config.entropy_normalizer == "log2" else math.log(classes))

    def zero_shot_prediction(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(image feature ``[D]``, zero-shot scores ``[C]``, class probabilities ``[C]``, entropy in nats)."""
        logits = self.zero_shot(features)
        if len(features) == 1:
            return features[0], logits[0], logits[0].softmax(-1), float(prediction_entropy(logits)[0])
        kept = confident_views(logits, self.config.selection)
        probabilities = logits[kept].softmax(-1).mean(0)
        return (features[kept].float().mean(0), logits[kept].mean(0), probabilities,
                float(marginal_entropy(logits[kept])))

    def classify_views(self, features):
        if self.positive is None:
            self.start_episodes()
        feature, logits, probabilities, entropy = self.zero_shot_prediction(features)
        label = int(logits.argmax())
        self.positive.offer(label, feature, entropy)
        low, high = self.config.entropy_band
        if low < self.normalised_entropy(entropy) < high:
            self.negative.offer(label, feature, entropy, probabilities)
        return logits + self.positive_logits(feature) - self.negative_logits(feature)

    def positive_logits(self, feature: torch.Tensor) -> torch.Tensor:
        keys, labels, _, _ = self.positive.entries()
        affinity = torch.exp(-self.positive_beta * (1 - keys @ feature))
        return self.positive_alpha * affinity @ F.one_hot(labels, len(self.classnames)).to(affinity.dtype)

    def negative_logits(self, feature: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        keys, _, _, probabilities = self.negative.entries()
        low, high = cfg.mask_band
        masks = ((probabilities > low) & (probabilities < high)).to(keys.dtype)
        return cfg.negative_alpha * torch.exp(-cfg.negative_beta * (1 - keys @ feature)) @ masks
