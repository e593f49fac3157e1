"""Augmented views of a test image for test-time prompt tuning.

TPT (Shu et al., "Test-Time Prompt Tuning for Zero-Shot Generalization in Vision-Language Models",
NeurIPS 2022) adapts on N views of one test image: the original (resized and centre-cropped, as
at evaluation) followed by N-1 augmented views: a random resized crop and horizontal flip for
ImageNet-like sets (``crop_flip``), or that followed by AugMix (``augmix``, for fine-grained sets;
severity 1 and only the operations that do not overlap the ImageNet-C corruptions, as in TPT).

A view generator follows one small contract, ``views(image, n) -> Tensor[n, 3, H, W]``.
Randomness comes from a seed per image, so a run's views do not depend on loading order or
worker processes.
"""
from __future__ import annotations

import hashlib
from typing import Literal

import torch
from PIL import Image
from torchvision import transforms as T

from vlpt.data.transforms import eval_transform

ViewAugment = Literal["crop_flip", "augmix"]


def image_seed(seed: int, key: str) -> int:
    """A process-independent 63-bit seed from a run seed and an image key (its path)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class AugmentedViews:
    """The original view plus ``n - 1`` augmented views, normalised for the backbone."""

    def __init__(self, image_size: int, mean, std, augment: ViewAugment = "crop_flip"):
        if augment not in ("crop_flip", "augmix"):
            raise ValueError(f"view augment {augment!r}: expected crop_flip or augmix")
        self.original = eval_transform(image_size, mean, std)
        steps = [T.RandomResizedCrop(image_size, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip()]
        if augment == "augmix":
            steps.append(T.AugMix(severity=1, all_ops=False))
        self.augmented = T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])

    def views(self, image: Image.Image, n: int, seed: int = 0) -> torch.Tensor:
        """``[n, 3, H, W]``: view 0 is the original, the others are augmented (seeded by ``seed``)."""
        if n < 1:
            raise ValueError(f"number of views must be at least 1, got {n}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self.original(image)] + [self.augmented(image) for _ in range(n - 1)])
