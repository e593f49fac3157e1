"""Augmented views of a test image for test-time prompt tuning.

TPT (Shu et al., "Test-Time Prompt Tuning for Zero-Shot Generalization in Vision-Language Models",
NeurIPS 2022) adapts on N views of one test image: the original (resized and centre-cropped, as
at evaluation) followed by N-1 augmented views. Every augmented view starts from a random resized
crop (scale 0.08-1, bilinear, as torchvision's default in the reference code) and a horizontal flip:

* ``crop_flip``: that alone. The reference code's views for ImageNet and its variants.
* ``augmix``: that crop, then AugMix as the reference code implements it (its own operations, not
  torchvision's): three chains of 1-3 operations drawn uniformly from autocontrast, equalize,
  posterize, rotate, solarize, shear x/y and translate x/y (the ones that do not overlap the
  ImageNet-C corruptions), each at a level drawn uniformly from [0.1, severity] (severity 1: rotations
  of up to 2 degrees, shears up to 0.03, shifts up to 7 pixels at 224, solarize thresholds 231-254,
  4-bit posterize); the chains are mixed with Dirichlet(1, 1, 1) weights, and the mixture with the crop
  by a Beta(1, 1) weight, in floating point after normalisation. The reference code's views for the
  fine-grained (cross-dataset) sets.
* ``augmix_torchvision``: the crop, then ``torchvision.transforms.AugMix(severity=1, all_ops=False)``.
  Not the reference's distribution: torchvision's severity 1 always picks the zero magnitude (its
  geometric operations are then the identity, its solarize threshold 255) and the mixture is rounded
  to 8 bits. Kept as a named option (vlpt's ``augmix`` before it followed the reference code).

``auto`` (TPT's default) is what the reference code does (``augmix=len(set_id) > 1``):
``crop_flip`` for a dataset of the ImageNet family (``family: imagenet`` in its catalog file:
ImageNet, -A, -R, -Sketch, -V2), ``augmix`` for every other dataset; ``resolve_augment`` turns it
into one of the three for a dataset.

A view generator follows one small contract, ``views(image, n) -> Tensor[n, 3, H, W]``.
Randomness comes from a seed per image, so a run's views do not depend on loading order or
worker processes.
"""
from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from vlpt.data.transforms import eval_transform
from vlpt.tta import pixel_ops

ViewAugment = Literal["auto", "crop_flip", "augmix", "augmix_torchvision"]
CONCRETE_AUGMENTS = ("crop_flip", "augmix", "augmix_torchvision")
ViewInterpolation = Literal["bilinear", "bicubic"]


def check_view_settings(views: int, selection: float, augment: str) -> None:
    """Refuse a test-time method's view count, confident fraction or augmentation name (ValueError)."""
    if views < 1:
        raise ValueError(f"views must be at least 1, got {views}")
    if not 0 < selection <= 1:
        raise ValueError(f"selection must be in (0, 1], got {selection}")
    if augment not in ("auto", *CONCRETE_AUGMENTS):
        raise ValueError(f"augment must be auto, crop_flip, augmix or augmix_torchvision, got {augment!r}")


def image_seed(seed: int, key: str) -> int:
    """A process-independent 63-bit seed from a run seed and an image key (``Sample.seed_key``)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resolve_augment(augment: str, dataset: str | None) -> str:
    """The concrete view augmentation for ``dataset`` (a catalog name, optionally ``@domain`` or
    ``~corruption``): ``auto`` becomes ``crop_flip`` for the ImageNet family and ``augmix`` otherwise."""
    from vlpt.data.catalog import dataset_family
    from vlpt.errors import ConfigError

    if augment in CONCRETE_AUGMENTS:
        return augment
    if augment != "auto":
        raise ConfigError(f"view augment {augment!r}: expected auto, {', '.join(CONCRETE_AUGMENTS)}")
    if not dataset:
        raise ConfigError("view augment 'auto' depends on the dataset (crop_flip for ImageNet and its variants, "
                          "augmix otherwise), but no dataset was given; name the augment or the dataset")
    return "crop_flip" if dataset_family(dataset) == "imagenet" else "augmix"


# ---- AugMix as in the TPT reference code (which follows the AugMix authors' operations) ------------
def _uniform(low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * torch.rand(()).item()


def _level(severity: float) -> float:
    return _uniform(0.1, severity)


def _signed(value: float) -> float:
    return -value if _uniform() > 0.5 else value


def _affine(image: Image.Image, coefficients: tuple) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)


def _autocontrast(image, severity):
    return pixel_ops.autocontrast(image)


def _equalize(image, severity):
    return pixel_ops.equalize(image)


def _posterize(image, severity):
    return pixel_ops.posterize(image, 4 - int(_level(severity) * 4 / 10))


def _rotate(image, severity):
    return image.rotate(_signed(int(_level(severity) * 30 / 10)), resample=Image.Resampling.BILINEAR)


def _solarize(image, severity):
    return pixel_ops.solarize(image, 256 - int(_level(severity) * 256 / 10))


def _shear_x(image, severity):
    return _affine(image, (1, _signed(_level(severity) * 0.3 / 10), 0, 0, 1, 0))


def _shear_y(image, severity):
    return _affine(image, (1, 0, 0, _signed(_level(severity) * 0.3 / 10), 1, 0))


def _translate_x(image, severity):
    return _affine(image, (1, 0, _signed(int(_level(severity) * image.width / 3 / 10)), 0, 1, 0))


def _translate_y(image, severity):
    return _affine(image, (1, 0, 0, 0, 1, _signed(int(_level(severity) * image.height / 3 / 10))))


#: the operations that do not overlap ImageNet-C's corruptions (no colour, contrast, brightness, sharpness)
AUGMIX_OPERATIONS = (_autocontrast, _equalize, _posterize, _rotate, _solarize, _shear_x, _shear_y,
                     _translate_x, _translate_y)


class NormalisedBatch:
    """PIL images to one normalised tensor ``[n, 3, H, W]``: torchvision's ``ToTensor`` then ``Normalize`` of each,
    element for element, in one conversion."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.uint8) for image in images]))
        return pixels.permute(0, 3, 1, 2).float().div(255).sub(self.mean).div(self.std)

    def __repr__(self) -> str:
        return f"ToTensor, Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class ReferenceAugMix:
    """AugMix over an already cropped PIL image, returning the normalised mixture (see the module docstring).

    ``to_tensors`` turns the crop and its chains into one normalised batch (``NormalisedBatch``)."""

    def __init__(self, to_tensors, severity: float = 1.0, width: int = 3, max_depth: int = 3):
        self.to_tensors, self.severity, self.width, self.max_depth = to_tensors, severity, width, max_depth
        self.chain_weights = torch.distributions.Dirichlet(torch.ones(width))
        self.crop_weight = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        weights, keep = self.chain_weights.sample(), self.crop_weight.sample()
        chains = []
        for _ in range(self.width):
            chain = image
            for _ in range(int(torch.randint(1, self.max_depth + 1, ()))):
                operation = AUGMIX_OPERATIONS[int(torch.randint(len(AUGMIX_OPERATIONS), ()))]
                chain = operation(chain, self.severity)
            chains.append(chain)
        crop, *chains = self.to_tensors([image, *chains])
        mix = torch.zeros(())
        for weight, chain in zip(weights, chains):
            mix = mix + weight * chain
        return keep * crop + (1 - keep) * mix

    def __repr__(self) -> str:
        return (f"ReferenceAugMix(severity={self.severity}, width={self.width}, max_depth={self.max_depth}, "
                f"then {self.to_tensors!r})")


class AugmentedViews:
    """The original view plus ``n - 1`` augmented views, normalised for the backbone (crops of ``crop_scale`` of the
    image's area: torchvision's default 0.08-1, as TPT; DMN crops 0.5-1)."""

    def __init__(self, image_size: int, mean, std, augment: str = "crop_flip",
                 interpolation: ViewInterpolation = "bilinear", crop_scale: tuple[float, float] = (0.08, 1.0)):
        if augment not in CONCRETE_AUGMENTS:
            raise ValueError(f"view augment {augment!r}: expected one of {', '.join(CONCRETE_AUGMENTS)} "
                             f"('auto' is resolved per dataset by resolve_augment)")
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"view interpolation {interpolation!r}: expected bilinear or bicubic")
        self.augment, self.interpolation = augment, interpolation
        self.original = eval_transform(image_size, mean, std)
        mode = T.InterpolationMode.BILINEAR if interpolation == "bilinear" else T.InterpolationMode.BICUBIC
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"view crop scale must be 0 < low <= high <= 1, got {tuple(crop_scale)}")
        crop = [T.RandomResizedCrop(image_size, scale=tuple(crop_scale), interpolation=mode), T.RandomHorizontalFlip()]
        normalise = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        if augment == "crop_flip":
            self.augmented = T.Compose([*crop, normalise])
        elif augment == "augmix":
            self.augmented = T.Compose([*crop, ReferenceAugMix(NormalisedBatch(mean, std))])
        else:
            self.augmented = T.Compose([*crop, T.AugMix(severity=1, all_ops=False), normalise])

    def __repr__(self) -> str:
        """Everything the views depend on besides the image and the seed (part of stored view features' keys)."""
        return f"AugmentedViews(original={self.original!r}, augmented={self.augmented!r})"

    def views(self, image: Image.Image, n: int, seed: int = 0) -> torch.Tensor:
        """``[n, 3, H, W]``: view 0 is the original, the others are augmented (seeded by ``seed``)."""
        if n < 1:
            raise ValueError(f"number of views must be at least 1, got {n}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self.original(image)] + [self.augmented(image) for _ in range(n - 1)])
