"""DMN-ZS and DMN-TF: the zero-shot and training-free Dual Memory Networks (Zhang et al., "Dual Memory Networks: A
Versatile Adaptation Approach for Vision-Language Models", CVPR 2024). Online: a dynamic memory of test features
carries over the test stream (protocol ``online_test_time``).

For each test image, in stream order (as the reference code, YBZh/DMN ``dmn_main.py``, ``DualMem``):

1. Zero-shot CLIP scores its 32 views (the original and 31 random resized crops of 0.5-1 of the area, with flips,
   plus the reference's AugMix outside the ImageNet family); the 10% with the lowest entropy give the
   pseudo-label and its entropy (of their mean softmax).
2. The dynamic memory (``memory_size`` 50 per class) is offered the original view's feature under that label;
   it keeps each class's lowest-entropy entries (``vlpt.tta.cache``). Written before it is read.
3. Read-out: for each class, attention over its stored features and its fixed slots (its text feature; DMN-TF:
   also its few-shot images' features, never replaced), weights exp(-beta (1 - q.k)) (``beta`` 5.5) with the
   original view's feature q; the weighted sum, normalised, is the class's prototype, and the softmax of the
   scaled cosines to the prototypes is p_dyn. DMN-TF's static memory is read the same way over the fixed slots
   alone: p_static.
4. Score: p_zs + w_dyn p_dyn (+ w_static p_static), with p_zs the zero-shot softmax of the original view alone.
   The image's scores are the log of that mixture, normalised to sum to 1 (the same ranking; calibrated as
   probabilities).

DMN-TF (``dmn_tf``) reads K labelled images per class (``shots``, under ``online_test_time``): their features,
centre crops, normalised; the reference samples them with seed 0 per class, vlpt with the run's seed like every
few-shot protocol. The weights per dataset and shot count (``WEIGHTS``, null ``dynamic_weight`` /
``static_weight``) are the reference's: it picks them from a grid by accuracy on the test labels after the pass,
and its camera-ready logs give each pick for ViT-B/16 (datasets outside the table take ImageNet's; a shot count
between two of the table's takes the lower's). The reference's prompts are the dataset's templates plus CuPL's
GPT-3 sentences (``tip_cupl``); vlpt uses the templates (``templates: auto``: the 7 ImageNet templates for the
ImageNet family, the dataset's own otherwise), as the CuPL sentences are not shipped. DMN's trained biases
(``--ft``) are not implemented: without training they are zero, an exact no-op in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F

from vlpt.data.catalog import dataset_family
from vlpt.data.corruptions import catalog_name
from vlpt.errors import CheckpointError
from vlpt.methods.linear_probe import extract_features
from vlpt.methods.training_free_tta import TrainingFreeConfig, TrainingFreeTestTime
from vlpt.registry import register_method
from vlpt.tta.cache import EntropyCache
from vlpt.tta.selection import confident_views

#: (dynamic weight, static weight) per dataset and shot count, as the reference picked them on the test labels
#: (ViT-B/16, its camera-ready logs ``camera_ready_dmn_tf_searched_vit_0.txt`` and ``camera_ready_dmn_tf_shift_0.txt``)
_ORDER = ("imagenet", "oxford_flowers", "dtd", "oxford_pets", "stanford_cars", "ucf101", "caltech101", "food101",
          "sun397", "fgvc_aircraft", "eurosat")
_PICKS = {  # shots: (dynamic weights, static weights) in _ORDER
    0: ((1, 10, 10, 1, .3, .3, .3, .3, 3, 1, .3), (0,) * 11),
    1: ((1, .1, 300, 1, 1, 1000, .3, .3, .3, 3, 1), (.3, 1, 300, .3, .3, 1000, .001, .1, .3, 1, 1)),
    2: ((1, 1, 300, 1, 1, 1000, 1, .3, 1, .3, .1), (.3, 3, 300, .01, 1, 1000, 1, .1, 1, .3, 1)),
    4: ((1, 1, 300, 1, .3, .3, 3, .3, 1, .3, .3), (.3, 3, 300, .001, 1, 1, 3, .3, 1, 1, 1)),
    8: ((1, 1, 1, 1, .3, .3, 3, .3, .3, .1, .3), (1, 3, 3, .3, 1, 1, 3, .3, 1, 1, 1)),
    16: ((1, 1, 1, 1, .1, .3, .1, .001, .3, 1, .1), (1, 3, 3, .3, 1, 1, 1, 1, 1, 3, 1)),
}
WEIGHTS: dict[str, dict[int, tuple[float, float]]] = {
    name: {shots: (float(dyn[i]), float(static[i])) for shots, (dyn, static) in _PICKS.items()}
    for i, name in enumerate(_ORDER)}
WEIGHTS.update({name: {0: (weight, 0.0)} for name, weight in
                (("imagenet_a", 3.0), ("imagenet_v2", 1.0), ("imagenet_r", 0.3), ("imagenet_sketch", 1.0))})


def reference_weights(dataset: str | None, shots: int) -> tuple[float, float]:
    """The reference's (dynamic, static) weights for ``dataset`` at ``shots`` (the largest tabled count up to it;
    datasets outside the table, and ImageNet's shifts with shots, take ImageNet's)."""
    table = WEIGHTS.get(catalog_name(dataset))
    if table is None or (shots > 0 and max(table) == 0):  # outside the table, or no few-shot picks (the shifts)
        table = WEIGHTS["imagenet"]
    return table[max(k for k in table if k <= shots)]


@dataclass
class DMNConfig(TrainingFreeConfig):
    views: int = 32
    augment: str = "auto"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    memory_size: int = 50
    beta: float = 5.5
    #: null: the reference's pick for the dataset and shot count (WEIGHTS; ImageNet's elsewhere)
    dynamic_weight: float | None = None
    #: weight of the static memory of few-shot features (DMN-TF); null: the reference's pick
    static_weight: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.memory_size < 0:
            raise ValueError(f"memory_size must be at least 0, got {self.memory_size}")
        for name in ("dynamic_weight", "static_weight"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")


def read_out(keys: torch.Tensor, query: torch.Tensor, beta: float, scale: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``[C]`` of a memory ``[C, K, D]`` (zero rows: empty slots): each class's prototype is the
    normalised sum of its keys weighted by exp(-beta (1 - k.q)); softmax of the scaled cosines of ``query``."""
    weights = torch.exp(-beta * (1 - keys @ query))  # [C, K]
    prototypes = F.normalize((weights[..., None] * keys).sum(1), dim=-1)
    return (scale * prototypes @ query).softmax(-1)


@register_method("dmn_zs")
class DMNZeroShot(TrainingFreeTestTime):
    """Zero-shot scores mixed with those of a dynamic memory of confident test features."""

    Config = DMNConfig
    test_stream = "online"

    def build(self, classnames, templates):
        self.memory: EntropyCache | None = None
        super().build(classnames, templates)

    def update_classnames(self, classnames, templates):
        super().update_classnames(classnames, templates)
        self.memory = None  # a new class list: a new stream

    def auto_templates(self, dataset):
        """The 7 ImageNet templates for the ImageNet family, the dataset's own otherwise."""
        return "imagenet7" if dataset and dataset_family(dataset) == "imagenet" else "dataset"

    def shots(self) -> int:
        """Labelled images per class behind the static memory (DMN-ZS: none)."""
        return 0

    def prepare_dataset(self, dataset):
        super().prepare_dataset(dataset)
        self.memory = None
        cfg = self.config
        dynamic, static = reference_weights(dataset, self.shots())
        self.dynamic_weight = dynamic if cfg.dynamic_weight is None else cfg.dynamic_weight
        self.static_weight = static if cfg.static_weight is None else cfg.static_weight

    def start_episodes(self):
        """An empty memory for a new stream, and the fixed slots of its classes."""
        self.memory = EntropyCache(len(self.classnames), self.config.memory_size, self.class_embeddings.shape[-1],
                                   device=self.class_embeddings.device)
        self._slots = self.build_fixed_slots()

    def build_fixed_slots(self) -> torch.Tensor:
        """Keys every class's memory always holds ``[C, F, D]``: its text feature (and DMN-TF's shots)."""
        return self.class_embeddings[:, None, :]

    def fixed_slots(self) -> torch.Tensor:
        """``build_fixed_slots`` of the current stream (built once per stream)."""
        return self._slots if self.memory is not None else self.build_fixed_slots()

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
        total = 1 + self.dynamic_weight
        if self.static_weight:
            mixture = mixture + self.static_weight * self.static_probabilities(query)
            total += self.static_weight
        return torch.log(mixture / total)

    def memory_probabilities(self, query: torch.Tensor) -> torch.Tensor:
        """p_dyn ``[C]``: the read-out of each class's stored test features and fixed slots."""
        keys = torch.cat([self.memory.features, self.fixed_slots()], dim=1)  # [C, K + F, D]
        return read_out(keys, query, self.config.beta, self.backbone.logit_scale.detach().float())

    def static_probabilities(self, query: torch.Tensor) -> torch.Tensor:
        """p_static ``[C]``: the read-out of each class's fixed slots alone (its text feature and shots)."""
        return read_out(self.fixed_slots(), query, self.config.beta, self.backbone.logit_scale.detach().float())


@register_method("dmn_tf")
class DMNTrainingFree(DMNZeroShot):
    """DMN-TF: DMN-ZS plus the few-shot images' features, as fixed slots of the dynamic memory and as a static
    memory of their own."""

    trains = True  # it reads labelled images,
    reads_labelled_images = True  # without gradients (protocol online_test_time gives it shots)
    frozen_image_features = True  # the shots reach it as the frozen tower's features

    def build(self, classnames, templates):
        dim = self.backbone.embed_dim
        self.trained_classnames = list(classnames)
        self.register_buffer("shot_features", torch.zeros(0, dim))
        self.register_buffer("shot_labels", torch.zeros(0, dtype=torch.long))
        super().build(classnames, templates)

    def fit_without_gradients(self, datamodule) -> bool:
        """Store the normalised features of the training images (centre crops) with their labels."""
        features, labels = extract_features(self, datamodule.train_eval_dataloader())
        device = self.shot_features.device
        self.shot_features = F.normalize(torch.from_numpy(features).float(), dim=-1).to(device)
        self.shot_labels = torch.from_numpy(labels).long().to(device)
        self.trained_classnames = list(self.classnames)
        self.memory = None
        return True

    def shots(self):
        """The most shots any current class has (0 on a target whose classes it has no shots of)."""
        rows = [self.trained_classnames.index(c) for c in self.classnames if c in self.trained_classnames]
        counts = torch.bincount(self.shot_labels, minlength=len(self.trained_classnames))
        return int(counts[rows].max()) if rows and len(self.shot_labels) else 0

    def initialize_from(self, path):
        raise CheckpointError(f"{self.name} reads the labelled images of its own run; it does not start from a "
                              f"checkpoint ({path})")

    def build_fixed_slots(self):
        text = self.class_embeddings[:, None, :]
        rows = {name: i for i, name in enumerate(self.trained_classnames)}
        per_class = [self.shot_features[self.shot_labels == rows[c]] if c in rows else self.shot_features[:0]
                     for c in self.classnames]
        width = max((len(f) for f in per_class), default=0)
        shots = text.new_zeros(len(per_class), width, text.shape[-1])  # zero rows: a class with fewer shots
        for i, found in enumerate(per_class):
            shots[i, :len(found)] = found
        return torch.cat([text, shots], dim=1)

    def checkpoint_extra(self) -> dict:
        return {"trained_classnames": self.trained_classnames}

    def restore_checkpoint_extra(self, extra: dict) -> None:
        self.trained_classnames = list(extra.get("trained_classnames", self.trained_classnames))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A checkpoint's shots have their own count: the buffers take it first."""
        for name in ("shot_features", "shot_labels"):
            if name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[name], device=getattr(self, name).device))
        self.memory = None
        return super().load_state_dict(state_dict, strict, assign)
