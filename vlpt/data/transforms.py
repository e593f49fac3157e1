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


#: the random resized crop of Dassl's ``random_resized_crop`` (the reference code of CoOp, CoCoOp, KgCoOp and
#: MaPLe): torchvision's defaults, a crop of 8% to 100% of the image area with aspect ratio 3/4 to 4/3
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def train_transform(image_size: int, mean, std, augment: TrainAugment = "crop_flip",
                    crop_scale: tuple[float, float] = CROP_SCALE) -> T.Compose:
    """CoOp's training augmentation, as Dassl builds it from ``["random_resized_crop", "random_flip",
    "normalize"]``: a random resized crop of the original image (no resize before it; area scale
    ``crop_scale``, by default ``CROP_SCALE``, aspect ratio ``CROP_RATIO``, bicubic) to ``image_size`` square, a horizontal flip
    with probability 0.5, then normalization.

    ``crop`` drops the flip (for images whose meaning flipping changes, such as digits); ``flip``
    drops the crop (for tiny images whose object a crop can cut off); ``none`` is the evaluation
    transform.
    """
    if augment == "none":
        return eval_transform(image_size, mean, std)
    if "crop" in augment:
        steps = [T.RandomResizedCrop(image_size, scale=crop_scale, ratio=CROP_RATIO,
                                     interpolation=T.InterpolationMode.BICUBIC)]
    else:
        steps = [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip(p=0.5))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def crop_flip_as(datamodule, image_size: int, crop_scale: tuple[float, float]) -> T.Compose:
    """A reference's own random crop (area ``crop_scale``) and flip at ``image_size``, normalised as the images of
    ``datamodule`` are (the augmented passes of Tip-Adapter, CLAP and LP++)."""
    normalize = datamodule.eval_tf.transforms[-1]
    return train_transform(image_size, normalize.mean, normalize.std, "crop_flip", crop_scale)
