"""vlpt's numpy versions of PIL's lookup-table operations give PIL's pixels, and AugMix views built on them (and on
one tensor conversion per view) equal views built on PIL's operations and per-image conversions, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

from vlpt.tta import pixel_ops
from vlpt.tta import views as view_ops
from vlpt.tta.views import AugmentedViews


def _images():
    """Random, constant, two-level, narrow-range and single-pixel images, RGB and greyscale."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (17, 23, 3), dtype=np.uint8),
              np.full((8, 8, 3), 77, dtype=np.uint8),
              (rng.random((12, 9, 3)) > 0.5).astype(np.uint8) * 200,
              rng.integers(100, 104, (30, 30, 3), dtype=np.uint8),
              rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
              np.concatenate([np.zeros((5, 5, 1)), np.full((5, 5, 1), 255), rng.integers(0, 256, (5, 5, 1))],
                             axis=-1).astype(np.uint8)]
    for skew in (0.3, 3.0):  # histograms heavy at one end (equalize's rounding at its top level)
        arrays.append((255 * rng.random((40, 40, 3)) ** skew).astype(np.uint8))
    images = [Image.fromarray(a) for a in arrays]
    return images + [image.convert("L") for image in images]


@pytest.mark.parametrize("name, arguments", [("autocontrast", ()), ("equalize", ())]
                         + [("posterize", (bits,)) for bits in range(1, 9)]
                         + [("solarize", (threshold,)) for threshold in (0, 1, 128, 230, 255, 256)])
def test_each_operation_gives_pils_pixels(name, arguments):
    for image in _images():
        ours, pils = getattr(pixel_ops, name)(image, *arguments), getattr(ImageOps, name)(image, *arguments)
        assert ours.mode == pils.mode and ours.size == pils.size
        assert np.array_equal(np.asarray(ours), np.asarray(pils)), f"{name}{arguments} on {image.mode} {image.size}"


def test_augmix_views_equal_views_from_pils_operations_and_per_image_tensors(monkeypatch):
    mean, std = (0.48, 0.45, 0.41), (0.27, 0.26, 0.28)
    images = [image for image in _images() if image.mode == "RGB" and min(image.size) > 1]
    fast = [AugmentedViews(32, mean, std, "augmix").views(image, 24, seed=i) for i, image in enumerate(images)]
    monkeypatch.setattr(view_ops, "pixel_ops", ImageOps)
    per_image = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    monkeypatch.setattr(view_ops.NormalisedBatch, "__call__",
                        lambda self, batch: torch.stack([per_image(image) for image in batch]))
    slow = [AugmentedViews(32, mean, std, "augmix").views(image, 24, seed=i) for i, image in enumerate(images)]
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))
    assert not torch.equal(fast[0][1], fast[0][2])  # the views differ from one another
