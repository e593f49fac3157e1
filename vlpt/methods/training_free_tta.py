"""What the training-free test-time methods share (Zero, TDA, DMN): views of each test image encoded once by the
frozen image tower, a zero-shot classifier of hand-written prompts, and a per-image decision with no backward pass.

``templates`` picks the prompts: ``dataset`` (the dataset's own template, vlpt's zero-shot baseline),
``imagenet7`` (the 7 templates Tip-Adapter and CoOp picked), ``clip80`` (CLIP's 80), ``auto`` (what the method's
reference uses for the dataset: ``auto_templates``), or one template with ``{}`` for the class name. Hyperparameters a
reference sets per dataset are resolved for every evaluation set in ``prepare_dataset`` (catalog name;
corrupted copies and domains take their dataset's).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.methods.zeroshot import ENSEMBLES, zero_shot_weights
from vlpt.tta.data import TestTimeViews
from vlpt.tta.views import AugmentedViews, ViewAugment, ViewInterpolation, check_view_settings, resolve_augment


@dataclass
class TrainingFreeConfig(MethodConfig):
    #: views per test image, the original included
    views: int = 64
    #: auto: crop_flip for the ImageNet family, augmix otherwise (TPT's rule); or one of those for every dataset
    augment: ViewAugment = "crop_flip"
    view_interpolation: ViewInterpolation = "bilinear"
    #: area fraction of the random resized crops (torchvision's default 0.08-1)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    #: fraction of views kept by confidence (lowest prediction entropy)
    selection: float = 0.1
    templates: str = "auto"
    epochs: int | dict[int, int] = 1  # nothing is trained

    def __post_init__(self):
        super().__post_init__()
        check_view_settings(self.views, self.selection, self.augment)
        if self.templates not in ("auto", "dataset", *ENSEMBLES) and "{}" not in self.templates:
            raise ValueError(f"templates must be auto, dataset, {', '.join(ENSEMBLES)} or one template with {{}} "
                             f"for the class name, got {self.templates!r}")
        self.crop_scale = tuple(self.crop_scale)


class TrainingFreeTestTime(PromptMethod):
    """Base of test-time methods that decide from each test image's view features without gradients."""

    Config = TrainingFreeConfig
    trains = False
    adapts_at_test_time = True
    frozen_view_features = True

    def build(self, classnames, templates):
        self.prepare_dataset(None)

    def update_classnames(self, classnames, templates):
        self._text = None  # encoded when next needed, for these names and the evaluation set's templates

    def auto_templates(self, dataset: str | None) -> str:
        """The templates the method's reference uses for ``dataset`` (``templates: auto``)."""
        return "dataset"

    def prepare_dataset(self, dataset: str | None) -> None:
        """Resolve what the reference sets per dataset (templates under ``auto``, subclasses' own settings)."""
        self.eval_dataset = dataset
        self._text = None

    @property
    def class_embeddings(self) -> torch.Tensor:
        """Zero-shot class embeddings ``[C, D]`` of the chosen prompts for the current classes."""
        if self._text is None:
            chosen = self.config.templates
            if chosen == "auto":
                chosen = self.auto_templates(self.eval_dataset)
            prompts = (self.templates[:1] if chosen == "dataset" else ENSEMBLES[chosen] if chosen in ENSEMBLES
                       else [chosen])
            self._text = zero_shot_weights(self.backbone, list(self.classnames), prompts).float()
        return self._text

    def logits(self, images):
        """Zero-shot scores of the chosen prompts (no adaptation)."""
        features = F.normalize(self.image_features(images), dim=-1)
        return self.backbone.logit_scale * features @ self.class_embeddings.T

    def zero_shot(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``[N, C]`` of normalised view features ``[N, D]``, in fp32."""
        return self.backbone.logit_scale.detach().float() * features.float() @ self.class_embeddings.T

    # ---- test time -----------------------------------------------------------------------
    def view_count(self, dataset: str | None) -> int:
        """Views per test image of ``dataset`` (the original included)."""
        return self.config.views

    def view_augment(self, dataset: str | None) -> str:
        return resolve_augment(self.config.augment, dataset)

    def test_time_dataset(self, samples: Sequence, image_size: int, mean, std, seed: int,
                          dataset: str | None = None, **context):
        """The views of each test image of ``dataset``; also resolves the per-dataset settings for it."""
        self.prepare_dataset(dataset)
        cfg = self.config
        views = AugmentedViews(image_size, mean, std, self.view_augment(dataset), cfg.view_interpolation,
                               cfg.crop_scale)
        return TestTimeViews(samples, views, self.view_count(dataset), seed)

    def start_episodes(self) -> None:
        """Start a test stream (an evaluation set): online methods empty their memory here."""

    def images_per_batch(self) -> int:
        return 1

    def encode_views(self, views: torch.Tensor, extra: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised image features of one image's views (one pass, no gradients)."""
        with torch.no_grad():
            return self.backbone.encode_image(views, normalize=True), None

    @torch.no_grad()
    def adapt_batch(self, features: Sequence[torch.Tensor], extra_features: Sequence[torch.Tensor | None]
                    ) -> list[torch.Tensor]:
        """Each image's scores ``[C]``, in stream order (an online method updates its memory image by image). In
        fp32 whatever the run's precision: cache affinities enter exponentials (as Tip-Adapter's)."""
        with torch.autocast(features[0].device.type, enabled=False):
            return [self.classify_views(f.float()) for f in features]

    @abc.abstractmethod
    def classify_views(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``[C]`` of one test image from its views' normalised features ``[N, D]`` (view 0: the original)."""
