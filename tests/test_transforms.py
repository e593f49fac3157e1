"""Training and evaluation transforms: the reference code's augmentation (Dassl's random resized crop and flip)."""
from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T

from vlpt.data.transforms import eval_transform, train_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_default_train_transform_is_dassls_random_resized_crop_and_flip():
    """Dassl (CoOp, CoCoOp, KgCoOp, MaPLe) builds ``["random_resized_crop", "random_flip", "normalize"]`` as
    RandomResizedCrop(size, interpolation=bicubic) with torchvision's default scale (0.08, 1.0) and ratio
    (3/4, 4/3) on the original image (no resize first), RandomHorizontalFlip(0.5), ToTensor, Normalize."""
    steps = train_transform(32, MEAN, STD).transforms
    assert [type(step) for step in steps] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    crop, flip = steps[0], steps[1]
    assert crop.scale == (0.08, 1.0)
    assert crop.ratio == (3.0 / 4.0, 4.0 / 3.0)
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert tuple(crop.size) == (32, 32)
    assert flip.p == 0.5
    assert list(steps[3].mean) == list(MEAN) and list(steps[3].std) == list(STD)


def test_default_train_crops_reach_down_to_8_percent_of_the_area():
    """What the crop draws, not only how it is configured: areas from under a fifth of the image to all of it."""
    image = Image.new("RGB", (100, 100))
    torch.manual_seed(0)
    crop = train_transform(32, MEAN, STD).transforms[0]
    areas = []
    for _ in range(400):
        top, left, height, width = crop.get_params(image, crop.scale, crop.ratio)
        areas.append(height * width / (100 * 100))
    assert min(areas) < 0.2 and max(areas) > 0.9 and min(areas) >= 0.07


def test_other_augmentations_and_eval_transform():
    crop_only = train_transform(32, MEAN, STD, "crop").transforms
    assert [type(s) for s in crop_only] == [T.RandomResizedCrop, T.ToTensor, T.Normalize]
    assert crop_only[0].scale == (0.08, 1.0)
    flip_only = train_transform(32, MEAN, STD, "flip").transforms
    assert [type(s) for s in flip_only] == [T.Resize, T.CenterCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert repr(train_transform(32, MEAN, STD, "none")) == repr(eval_transform(32, MEAN, STD))
    image = Image.new("RGB", (60, 40), "red")
    assert train_transform(32, MEAN, STD)(image).shape == (3, 32, 32)
