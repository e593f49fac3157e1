"""PIL's lookup-table operations (``ImageOps.autocontrast``, ``equalize``, ``posterize``, ``solarize``) in numpy.

Pixel for pixel what PIL computes for an ``L`` or ``RGB`` image (``tests/test_pixel_ops.py`` compares them on
random and degenerate images), without PIL's per-call Python loops over 256-entry tables: on the small views of
test-time tuning those loops, not the pixels, are what AugMix spends its time on. Other modes go to PIL.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_LEVELS = np.arange(256)


def _numpy_mode(image: Image.Image) -> bool:
    return image.mode in ("L", "RGB")


def _bands(image: Image.Image) -> np.ndarray:
    """The pixels as ``[H, W, bands]`` uint8."""
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _apply(image: Image.Image, pixels: np.ndarray, tables: np.ndarray) -> Image.Image:
    """``image`` with band ``b`` mapped through ``tables[b]`` (values clipped to 0..255, as PIL's ``point``)."""
    mapped = np.clip(tables, 0, 255).astype(np.uint8)[np.arange(pixels.shape[-1]), pixels]
    return Image.fromarray(mapped[..., 0] if image.mode == "L" else mapped, image.mode)


def _histograms(pixels: np.ndarray) -> list[np.ndarray]:
    return [np.bincount(pixels[..., b].ravel(), minlength=256) for b in range(pixels.shape[-1])]


def autocontrast(image: Image.Image) -> Image.Image:
    """``ImageOps.autocontrast(image)``: each band stretched so its darkest level maps to 0 and its lightest to 255."""
    if not _numpy_mode(image):
        return ImageOps.autocontrast(image)
    pixels = _bands(image)
    tables = []
    for histogram in _histograms(pixels):
        present = np.flatnonzero(histogram)
        low, high = (int(present[0]), int(present[-1])) if len(present) else (255, 0)
        if high <= low:
            tables.append(_LEVELS)
            continue
        scale = 255.0 / (high - low)
        offset = -low * scale
        tables.append(np.trunc(_LEVELS * scale + offset).astype(np.int64))  # Python's int() of each float
    return _apply(image, pixels, np.stack(tables))


def equalize(image: Image.Image) -> Image.Image:
    """``ImageOps.equalize(image)``: each band's levels mapped through its cumulative histogram."""
    if not _numpy_mode(image):
        return ImageOps.equalize(image)
    pixels = _bands(image)
    tables = []
    for histogram in _histograms(pixels):
        present = histogram[histogram > 0]
        step = (int(present.sum()) - int(present[-1])) // 255 if len(present) > 1 else 0
        if not step:
            tables.append(_LEVELS)
            continue
        before = np.concatenate([[0], np.cumsum(histogram)[:-1]])  # pixels below each level
        tables.append((step // 2 + before) // step)
    return _apply(image, pixels, np.stack(tables))


def posterize(image: Image.Image, bits: int) -> Image.Image:
    """``ImageOps.posterize(image, bits)``: the ``bits`` highest bits of every level kept."""
    if not _numpy_mode(image) or not 1 <= bits <= 8:
        return ImageOps.posterize(image, bits)
    pixels = _bands(image)
    table = _LEVELS & ~(2 ** (8 - bits) - 1)
    return _apply(image, pixels, np.stack([table] * pixels.shape[-1]))


def solarize(image: Image.Image, threshold: int = 128) -> Image.Image:
    """``ImageOps.solarize(image, threshold)``: levels at or above ``threshold`` inverted."""
    if not _numpy_mode(image):
        return ImageOps.solarize(image, threshold)
    pixels = _bands(image)
    table = np.where(_LEVELS < threshold, _LEVELS, 255 - _LEVELS)
    return _apply(image, pixels, np.stack([table] * pixels.shape[-1]))
