"""Image transforms at the backbone's resolution and normalization."""
from __future__ import annotations

from typing import Literal

from torchvision import transforms as T

TrainAugment = Literal["crop_flip", "crop", "flip", "none"]


def eval_transform(image_size: int, mean, std) -> T.Compose:
    """Resize the short side, centre-crop, normalize (CLIP's test-time preprocessing)."""
    return T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def train_transform(image_size: int, mean, std, augment: TrainAugment = "crop_flip") -> T.Compose:
    """CoOp's training augmentation: random resized crop and horizontal flip.

    ``crop`` drops the flip (for images whose meaning flipping changes, such as digits); ``flip``
    drops the crop (for tiny images whose object a crop can cut off); ``none`` is the evaluation
    transform.
    """
    if augment == "none":
        return eval_transform(image_size, mean, std)
    if "crop" in augment:
        steps = [T.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC)]
    else:
        steps = [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])
