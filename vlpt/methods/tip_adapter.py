"""Tip-Adapter: training-free adaption of CLIP (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for
Few-shot Classification", ECCV 2022).

A key-value cache of the few-shot training set beside zero-shot CLIP: the keys are the training images'
L2-normalised features (each the mean of ``augment_passes`` augmented passes), the values their one-hot labels.
A test feature ``f`` (normalised) scores ``clip_scale f W^T + alpha exp(-beta (1 - f K^T)) V``: zero-shot CLIP's
logits plus the labels of similar training images, weighted by their affinity. Nothing is trained: ``alpha`` and
``beta`` are searched on the validation images.

Defaults follow the reference code (gaopengcuhk/Tip-Adapter, ``main.py``, ``utils.py``, ``configs/*.yaml``): 10
passes of a random resized crop (half to all of the image, bicubic) and a flip (``cache_augment: tip``;
``suite``: the suite's training augmentation instead); the zero-shot logits at the backbone's logit scale (the
reference's fixed 100, OpenAI CLIP's; ``clip_scale`` fixes another); the search over ``search_steps`` evenly spaced values from 0.1 to ``search_scale`` for beta and
alpha, beta-major, the first best validation accuracy kept; its per-dataset ranges (``dataset_search``: DTD
[13, 13], EuroSAT [12, 10], FGVC Aircraft [30, 30], ImageNet and Oxford Pets [7, 3], the ``search_scale``
default), and its per-dataset initial alpha (``dataset_init_alpha``; 1.17 otherwise), kept with ``search: false``.
The reference searches on each dataset's whole validation split (ImageNet: on the test set); vlpt searches on the
protocol's validation images (min(K, 4) per class in few-shot runs), never on the test set. The cache holds labels of the
training classes only, so the method scores those classes (subsets of them), never unseen ones. Tip-Adapter-F,
which fine-tunes the keys, builds on this class (``vlpt.methods.tip_adapter_f``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from vlpt.data.corruptions import catalog_name
from vlpt.data.transforms import crop_flip_as
from vlpt.errors import CheckpointError, ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.methods.linear_probe import extract_features, training_class_rows
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.registry import register_method


def _in_fp32(function):
    """Run ``function`` with autocast off (the cache's scores are float32)."""
    def wrapped(self, *args, **kwargs):
        with torch.autocast(self.keys.device.type, enabled=False):
            return function(self, *args, **kwargs)
    wrapped.__doc__, wrapped.__name__ = function.__doc__, function.__name__
    return wrapped


@dataclass
class TipAdapterConfig(MethodConfig):
    #: augmented passes over the training images whose features are averaged into each key
    augment_passes: int = 10
    #: tip: the reference's crop (scale 0.5-1, bicubic) and flip; suite: the suite's training augmentation
    cache_augment: Literal["tip", "suite"] = "tip"
    #: the scale of zero-shot CLIP's logits; None: the backbone's logit scale (the reference's fixed 100 is OpenAI
    #: CLIP's, the only weights it ran)
    clip_scale: float | None = None
    init_beta: float = 1.0
    #: alpha before the search (kept with ``search: false``); per dataset: ``dataset_init_alpha``
    init_alpha: float = 1.17
    #: search beta and alpha on the validation images (else keep the initial values)
    search: bool = True
    #: the largest beta and alpha searched (from 0.1, ``search_steps`` values each)
    search_scale: list[float] = field(default_factory=lambda: [7.0, 3.0])
    search_steps: list[int] = field(default_factory=lambda: [200, 20])
    #: dataset -> search_scale, from the reference's per-dataset configs (the others: ``search_scale``)
    dataset_search: dict[str, list[float]] = field(default_factory=lambda: {
        "caltech101": [12.0, 5.0], "dtd": [13.0, 13.0], "eurosat": [12.0, 10.0], "fgvc_aircraft": [30.0, 30.0],
        "food101": [10.0, 10.0], "oxford_flowers": [50.0, 50.0], "stanford_cars": [20.0, 10.0],
        "sun397": [12.0, 10.0]})
    #: dataset -> init_alpha, from the same configs (the others: ``init_alpha``)
    dataset_init_alpha: dict[str, float] = field(default_factory=lambda: {
        "caltech101": 3.0, "dtd": 2.0, "eurosat": 2.0, "fgvc_aircraft": 5.0, "oxford_flowers": 10.0,
        "stanford_cars": 3.0, "ucf101": 3.0})

    def __post_init__(self):
        super().__post_init__()
        if self.augment_passes < 1:
            raise ValueError(f"augment_passes must be at least 1, got {self.augment_passes}")
        if self.cache_augment not in ("tip", "suite"):
            raise ValueError(f"cache_augment must be tip or suite, got {self.cache_augment!r}")
        scales = [self.search_scale, *self.dataset_search.values()]
        if any(len(s) != 2 or min(s) <= 0.1 for s in scales) or len(self.search_steps) != 2 \
                or min(self.search_steps) < 1:
            raise ValueError(f"search_scale (and each dataset_search entry) must be [beta, alpha] above 0.1 and "
                             f"search_steps two positive counts; got {self.search_scale}, {self.dataset_search}, "
                             f"{self.search_steps}")

    def scale_for(self, dataset: str | None) -> list[float]:
        """The search ranges of ``dataset`` (its corrupted copies and domains follow it)."""
        return self.dataset_search.get(catalog_name(dataset), self.search_scale)

    def alpha_for(self, dataset: str | None) -> float:
        """The initial alpha of ``dataset``."""
        return self.dataset_init_alpha.get(catalog_name(dataset), self.init_alpha)


def search_grid(scale: float, steps: int) -> list[float]:
    """The reference's ``steps`` values from 0.1 towards ``scale`` (the last one below it)."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@register_method("tip_adapter")
class TipAdapter(PromptMethod):
    """Zero-shot CLIP plus an affinity-weighted vote of the few-shot training images' labels."""

    Config = TipAdapterConfig
    frozen_image_features = True

    @classmethod
    def unseen_classes(cls, config):
        return "subset"  # cache values exist for the training classes only

    @classmethod
    def hyperparameter_selection(cls, config):
        return "validation" if config.search else "fixed"  # beta and alpha

    def build(self, classnames, templates):
        dim, n = self.backbone.embed_dim, len(classnames)
        self.trained_classnames = list(classnames)
        self.register_buffer("keys", torch.zeros(0, dim))
        self.register_buffer("values", torch.zeros(0, n))
        self.register_buffer("beta", torch.tensor(float(self.config.init_beta)))
        self.register_buffer("alpha", torch.tensor(float(self.config.init_alpha)))
        self.register_buffer("rows", torch.arange(n), persistent=False)
        self._set_classifier(classnames, templates)

    def update_classnames(self, classnames, templates):
        self.rows = training_class_rows(self.trained_classnames, classnames,
                                        "tip_adapter's cache holds no images of classes").to(self.keys.device)
        self._set_classifier(classnames, templates)

    def _set_classifier(self, classnames, templates):
        with torch.no_grad():
            weights = zero_shot_weights(self.backbone, classnames, templates[:1])
        self.register_buffer("classifier", weights.float(), persistent=False)

    # ---- the cache ------------------------------------------------------------------------
    def cache_transform(self, datamodule):
        """The random transform of the cache's passes (``cache_augment``)."""
        if self.config.cache_augment == "suite":
            return datamodule.train_tf
        return crop_flip_as(datamodule, self.backbone.image_size, (0.5, 1.0))

    @torch.no_grad()
    def fit_without_gradients(self, datamodule) -> bool:
        self.build_cache(datamodule)
        if self.config.search:
            self.search_on(*self.validation_features(datamodule), datamodule.data.dataset)
        return True

    @torch.no_grad()
    def build_cache(self, datamodule) -> None:
        """Keys (the mean of the augmented passes, normalised), one-hot values and the dataset's initial alpha."""
        cfg = self.config
        dataset = getattr(datamodule.data, "dataset", None)
        if cfg.search and not datamodule.data.val:
            raise ConfigError("tip_adapter searches beta and alpha on validation images, and this run has none; "
                              "give the dataset a validation split, or set search: false")
        transform = self.cache_transform(datamodule)
        passes, labels = [], None
        for view in range(cfg.augment_passes):
            features, labels = extract_features(self, datamodule.train_view_dataloader(transform, view))
            passes.append(torch.from_numpy(features))
        device = self.keys.device
        self.keys = F.normalize(torch.stack(passes).mean(dim=0), dim=-1).to(device)
        self.values = F.one_hot(torch.from_numpy(labels).long(), len(self.trained_classnames)).float().to(device)
        self.alpha.fill_(cfg.alpha_for(dataset))

    @torch.no_grad()
    def validation_features(self, datamodule) -> tuple[torch.Tensor, torch.Tensor]:
        x_val, y_val = extract_features(self, datamodule.val_dataloader())
        return torch.from_numpy(x_val).to(self.keys.device), torch.from_numpy(y_val).to(self.keys.device)

    @torch.no_grad()
    def search_on(self, features: torch.Tensor, labels: torch.Tensor, dataset: str | None) -> None:
        """Keep the (beta, alpha) that ``search`` chooses on these validation features."""
        beta, alpha = self.search(features, labels, self.config.scale_for(dataset))
        self.beta.fill_(beta)
        self.alpha.fill_(alpha)

    @_in_fp32
    def search(self, features: torch.Tensor, labels: torch.Tensor, scale: list[float]) -> tuple[float, float]:
        """The (beta, alpha) of the best validation accuracy over the reference's grid; the first best wins."""
        features = F.normalize(features.float(), dim=-1)
        clip_logits = self.clip_logits(features)
        affinity = self.affinity(features)
        best, chosen = -1.0, (float(self.beta), float(self.alpha))
        for beta in search_grid(scale[0], self.config.search_steps[0]):
            cache = self.cache_logits(affinity, beta)
            for alpha in search_grid(scale[1], self.config.search_steps[1]):
                accuracy = ((clip_logits + alpha * cache).argmax(dim=-1) == labels).float().mean().item()
                if accuracy > best:
                    best, chosen = accuracy, (beta, alpha)
        return chosen

    # ---- scores ---------------------------------------------------------------------------
    def clip_logits(self, features: torch.Tensor) -> torch.Tensor:
        scale = self.config.clip_scale if self.config.clip_scale is not None else float(self.backbone.logit_scale)
        return scale * features @ self.classifier.T

    def cache_logits(self, affinity: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        """``exp(-beta (1 - affinity)) V`` over the current classes."""
        return torch.exp(-beta * (1 - affinity)) @ self.values[:, self.rows]

    def logits(self, images):
        features = self.image_features(images).float()
        return self._scores(features)

    @_in_fp32
    def _scores(self, features: torch.Tensor) -> torch.Tensor:
        """Zero-shot plus cache logits of image features, in float32 whatever autocast a caller runs under: beta
        (up to 50) multiplies the affinity inside an exponential, where bf16 rounding would show."""
        features = F.normalize(features, dim=-1)
        return self.clip_logits(features) + self.alpha * self.cache_logits(self.affinity(features), self.beta)

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of normalised features to the cache's keys ``[B, N]``."""
        return features @ self.keys.T

    def checkpoint_extra(self) -> dict:
        return {"trained_classnames": self.trained_classnames}

    def restore_checkpoint_extra(self, extra: dict) -> None:
        """A checkpoint's cache columns follow its training classes' order: score the current classes by it."""
        trained = list(extra.get("trained_classnames", self.trained_classnames))
        unknown = [c for c in self.classnames if c not in trained]
        if unknown:
            raise CheckpointError(f"tip_adapter checkpoint holds no cache of classes {unknown[:5]}")
        self.trained_classnames = trained
        self.rows = torch.tensor([trained.index(c) for c in self.classnames], device=self.keys.device)

    #: tensors with one row per cached training image: a checkpoint's sizes them
    cache_sized: tuple[str, ...] = ("keys", "values")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A checkpoint's cache has its own size (training images x classes): those tensors take it first."""
        for name in self.cache_sized:
            value, current = state_dict.get(name), getattr(self, name)
            if value is not None and value.dim() == 2 and value.shape[1] == current.shape[1]:
                resized = torch.empty_like(value, device=self.keys.device)
                setattr(self, name, torch.nn.Parameter(resized) if isinstance(current, torch.nn.Parameter) else resized)
        return super().load_state_dict(state_dict, strict, assign)
