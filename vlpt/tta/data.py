"""Test-time datasets: every item is one test image's views, adapted on one at a time."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from vlpt.data.image_dataset import ImageDataset
from vlpt.data.samples import Sample
from vlpt.tta.views import AugmentedViews, image_seed

#: extra views of an image beyond the augmented ones (DiffTPT's generated views), already normalised
ExtraViews = Callable[[Image.Image], torch.Tensor]


class TestTimeViews(Dataset):
    """Items ``(views [N, 3, H, W], extra [M, 3, H, W], label)``; view 0 is the original image.

    ``extra`` is empty (M = 0) without an ``extra_views`` source. Views are seeded by the run seed
    and the image's ``seed_key``, so they are the same in every worker, every order and every data root.
    """

    def __init__(self, samples: Sequence[Sample], views: AugmentedViews, n_views: int, seed: int,
                 extra_views: ExtraViews | None = None):
        self.images = ImageDataset(samples)
        self.views = views
        self.n_views = n_views
        self.seed = seed
        self.extra_views = extra_views

    @property
    def augment(self) -> str:
        """The augmentation of the views (``crop_flip``, ``augmix`` or ``augmix_torchvision``; ``original`` for the
        original view alone)."""
        return self.views.augment if self.n_views > 1 else "original"

    def describe(self) -> str:
        """What the views of an image depend on besides the image and the seed (``extra`` views aside)."""
        return f"TestTimeViews(n_views={self.n_views}, {self.views!r})"

    def without_extra_views(self) -> "TestTimeViews":
        """The same views without the extra ones."""
        return TestTimeViews(self.images.samples, self.views, self.n_views, self.seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, label = self.images[index]
        sample = self.images.samples[index]
        views = self.views.views(image, self.n_views, image_seed(self.seed, sample.seed_key))
        extra = self.extra_views(image) if self.extra_views is not None else views.new_zeros((0, *views.shape[1:]))
        return views, extra, label
