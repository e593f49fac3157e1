"""DMN-ZS: the zero-shot Dual Memory Network (Zhang et al., "Dual Memory Networks: A Versatile Adaptation Approach
for Vision-Language Models", CVPR 2024). Online: a dynamic memory of test features carries over the test stream
(protocol ``online_test_time``).

For each test image, in stream order (as the reference code, YBZh/DMN ``dmn_main.py``, ``DualMem``):

1. Zero-shot CLIP scores its 32 views (the original and 31 random resized crops of 0.5-1 of the area, with flips,
   plus the reference's AugMix outside the ImageNet family); the 10% with the lowest entropy give the
   pseudo-label and its entropy (of their mean softmax).
2. The dynamic memory (``memory_size`` 50 per class) is offered the original view's feature under that label;
   it keeps each class's lowest-entropy entries (``vlpt.tta.cache``). Written before it is read.
3. Read-out: for each class, attention over its stored features and its text feature, weights
   exp(-beta (1 - q.k)) (``beta`` 5.5) with the original view's feature q; the weighted sum, normalised, is the
   class's memory prototype, and the softmax of the scaled cosines to the prototypes is p_dyn.
4. Score: p_zs + w p_dyn, with p_zs the zero-shot softmax of the original view alone and w the dynamic weight.
   The image's scores are the log of that mixture, normalised to sum to 1 (the same ranking; calibrated as
   probabilities).

The weight w per dataset (``DYNAMIC_WEIGHT``, null ``dynamic_weight``) is the reference's: it picks w from a grid
by accuracy on the test labels after the pass, and its camera-ready logs give each dataset's pick for ViT-B/16
(ImageNet 1; datasets outside the table take ImageNet's). The reference's prompts are the dataset's templates
plus CuPL's GPT-3 sentences (``tip_cupl``); vlpt uses the templates (``templates: auto``: the 7 ImageNet
templates for the ImageNet family, the dataset's own otherwise), as the CuPL sentences are not shipped. The
static memory of few-shot features (DMN-TF) and the trained biases (DMN) are not implemented: with no shots and
no training they are exact no-ops in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F

from vlpt.data.catalog import dataset_family
from vlpt.data.corruptions import catalog_name
from vlpt.methods.training_free_tta import TrainingFreeConfig, TrainingFreeTestTime
from vlpt.registry import register_method
from vlpt.tta.cache import EntropyCache
from vlpt.tta.selection import confident_views

#: the dynamic memory's weight per dataset, as the reference searched it on the test labels (ViT-B/16)
DYNAMIC_WEIGHT = {"imagenet": 1.0, "imagenet_a": 3.0, "imagenet_v2": 1.0, "imagenet_r": 0.3, "imagenet_sketch": 1.0,
                  "oxford_flowers": 10.0, "dtd": 10.0, "oxford_pets": 1.0, "stanford_cars": 0.3, "ucf101": 0.3,
                  "caltech101": 0.3, "food101": 0.3, "sun397": 3.0, "fgvc_aircraft": 1.0, "eurosat": 0.3}


@dataclass
class DMNConfig(TrainingFreeConfig):
    views: int = 32
    augment: str = "auto"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    memory_size: int = 50
    beta: float = 5.5
    #: null: the reference's pick for the dataset (DYNAMIC_WEIGHT; ImageNet's elsewhere)
    dynamic_weight: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.memory_size < 0:
            raise ValueError(f"memory_size must be at least 0, got {self.memory_size}")
        if self.dynamic_weight is not None and self.dynamic_weight < 0:
            raise ValueError(f"dynamic_weight must be at least 0, got {self.dynamic_weight}")


@register_method("dmn_zs")
class DMNZeroShot(TrainingFreeTestTime):
    """Zero-shot scores mixed with those of a dynamic memory of confident test features."""

    Config = DMNConfig
    test_stream = "online"

    def build(self, classnames, templates):
        self.memory: EntropyCache | None = None
        super().build(classnames, templates)

    def auto_templates(self, dataset):
        """The 7 ImageNet templates for the ImageNet family, the dataset's own otherwise."""
        return "imagenet7" if dataset and dataset_family(dataset) == "imagenet" else "dataset"

    def prepare_dataset(self, dataset):
        super().prepare_dataset(dataset)
        weight = self.config.dynamic_weight
        self.dynamic_weight = DYNAMIC_WEIGHT.get(catalog_name(dataset), DYNAMIC_WEIGHT["imagenet"]) \
            if weight is None else weight

    def start_episodes(self):
        """An empty memory for a new stream."""
        self.memory = EntropyCache(len(self.classnames), self.config.memory_size, self.class_embeddings.shape[-1],
                                   device=self.class_embeddings.device)

    def classify_views(self, features):
        if self.memory is None:
            self.start_episodes()
        logits = self.zero_shot(features)
        kept = confident_views(logits, self.config.selection)
        pseudo = logits[kept].softmax(-1).mean(0)
        entropy = float(-(pseudo * torch.log(pseudo + 1e-8)).sum())  # the reference's epsilon
        query = features[0]
        self.memory.offer(int(pseudo.argmax()), query, entropy)
        mixture = logits[0].softmax(-1) + self.dynamic_weight * self.memory_probabilities(query)
        return torch.log(mixture / (1 + self.dynamic_weight))

    def memory_probabilities(self, query: torch.Tensor) -> torch.Tensor:
        """p_dyn ``[C]``: softmax of the scaled cosines of ``query`` to each class's memory prototype."""
        # empty slots are zero vectors: they add nothing to the weighted sum
        keys = torch.cat([self.memory.features, self.class_embeddings[:, None, :]], dim=1)  # [C, K + 1, D]
        weights = torch.exp(-self.config.beta * (1 - keys @ query))  # [C, K + 1]
        prototypes = F.normalize((weights[..., None] * keys).sum(1), dim=-1)
        return (self.backbone.logit_scale.detach().float() * prototypes @ query).softmax(-1)

