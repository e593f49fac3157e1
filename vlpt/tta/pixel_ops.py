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


def _map_levels(image: Image.Image, table_for) -> Image.Image:
    """``image`` with each band's levels mapped through ``table_for(band)`` (a band's pixels ``[H, W]`` to a
    256-entry table; entries clipped to 0..255, as PIL's ``point`` clips them)."""
    pixels = np.asarray(image, dtype=np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    bands = range(pixels.shape[-1])
    tables = np.clip(np.stack([table_for(pixels[..., b]) for b in bands]), 0, 255).astype(np.uint8)
    mapped = tables[np.arange(len(bands)), pixels]
    return Image.fromarray(mapped[..., 0] if image.mode == "L" else mapped, image.mode)


def _histogram(band: np.ndarray) -> np.ndarray:
    return np.bincount(band.ravel(), minlength=256)


def _stretch(band: np.ndarray) -> np.ndarray:
    """Autocontrast's table: the band's darkest level to 0, its lightest to 255 (identity for one level)."""
    present = np.flatnonzero(_histogram(band))
    low, high = (int(present[0]), int(present[-1])) if len(present) else (255, 0)
    if high <= low:
        return _LEVELS
    scale = 255.0 / (high - low)
    offset = -low * scale
    return np.trunc(_LEVELS * scale + offset).astype(np.int64)  # Python's int() of each float


def _cumulative(band: np.ndarray) -> np.ndarray:
    """Equalize's table: the levels through the band's cumulative histogram (identity when too few levels)."""
    histogram = _histogram(band)
    present = histogram[histogram > 0]
    step = (int(present.sum()) - int(present[-1])) // 255 if len(present) > 1 else 0
    if not step:
        return _LEVELS
    before = np.concatenate([[0], np.cumsum(histogram)[:-1]])  # pixels below each level
    return (step // 2 + before) // step


def autocontrast(image: Image.Image) -> Image.Image:
    """``ImageOps.autocontrast(image)``: each band stretched so its darkest level maps to 0 and its lightest to 255."""
    return _map_levels(image, _stretch) if _numpy_mode(image) else ImageOps.autocontrast(image)


def equalize(image: Image.Image) -> Image.Image:
    """``ImageOps.equalize(image)``: each band's levels mapped through its cumulative histogram."""
    return _map_levels(image, _cumulative) if _numpy_mode(image) else ImageOps.equalize(image)


def posterize(image: Image.Image, bits: int) -> Image.Image:
    """``ImageOps.posterize(image, bits)``: the ``bits`` highest bits of every level kept."""
    if not _numpy_mode(image) or not 1 <= bits <= 8:
        return ImageOps.posterize(image, bits)
    table = _LEVELS & ~(2 ** (8 - bits) - 1)
    return _map_levels(image, lambda band: table)


def solarize(image: Image.Image, threshold: int = 128) -> Image.Image:
    """``ImageOps.solarize(image, threshold)``: levels at or above ``threshold`` inverted."""
    if not _numpy_mode(image):
        return ImageOps.solarize(image, threshold)
    table = np.where(_LEVELS < threshold, _LEVELS, 255 - _LEVELS)
    return _map_levels(image, lambda band: table)
