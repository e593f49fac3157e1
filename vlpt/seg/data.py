"""Segmentation data: image/mask samples, a dataset's splits, label-map reading, and the torch Dataset.

A label map holds one label per pixel: for a binary dataset 0 (background) or 1 (the one class),
for a multi-class dataset the class index 0..C-1. Pixels to ignore in losses and metrics
(unlabelled, boundaries) hold ``ignore_index`` (255).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from vlpt.data.image_dataset import load_rgb
from vlpt.errors import ConfigError, DatasetError

IGNORE_INDEX = 255
SegAugment = Literal["flip", "none"]


@dataclass(frozen=True)
class SegSample:
    """One image and its mask (label map), both absolute paths."""

    image: str
    mask: str


@dataclass
class SegSplits:
    """A segmentation dataset's classes and its train/val/test samples.

    Binary datasets have exactly one class name (label 1; 0 is background); multi-class datasets
    name every label 0..C-1. ``templates[0]`` is the dataset's own prompt, ``{}`` standing for the
    class name. Mask values in ``ignore_values`` are read as ``ignore_index``.
    """

    name: str
    classnames: list[str]
    train: list[SegSample]
    val: list[SegSample]
    test: list[SegSample]
    binary: bool
    templates: list[str] = field(default_factory=lambda: ["{}"])
    ignore_index: int = IGNORE_INDEX
    ignore_values: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.binary and len(self.classnames) != 1:
            raise ValueError(f"binary dataset {self.name!r} must have exactly one class name, "
                             f"got {self.classnames!r}")
        labels = 2 if self.binary else self.num_classes
        if not labels <= self.ignore_index <= 255:
            raise ValueError(f"dataset {self.name!r}: ignore_index {self.ignore_index} must be in "
                             f"{labels}..255 (above every label, and fit in uint8)")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def __repr__(self) -> str:
        kind = "binary" if self.binary else f"{self.num_classes} classes"
        return (f"SegSplits({self.name!r}, {kind}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)})")


@dataclass
class SegEvalSet:
    """Images to evaluate on and the dataset (classes, templates, mask rules) they come from."""

    name: str
    samples: list[SegSample]
    splits: SegSplits


@dataclass
class SegProtocolData:
    """What a segmentation run trains on (K images of ``source``) and the sets it is evaluated on."""

    train: list[SegSample]
    source: SegSplits
    eval_sets: list[SegEvalSet]
    shots: int = 0
    seed: int = 0
    targets: list[str] = field(default_factory=list)


LABEL_MODES = ("1", "L", "P", "I", "I;16")  # single-channel modes whose values are labels


def _mask_values(path: str, binary: bool) -> np.ndarray:
    """The decoded mask: its single channel, or RGB for a coloured binary mask."""
    try:
        with Image.open(path) as image:
            if image.mode in LABEL_MODES:
                return np.asarray(image)
            if binary:
                return np.asarray(image.convert("RGB"))
            raise DatasetError(f"mask file {path} has mode {image.mode}; a multi-class mask must be a "
                               f"single-channel label map (mode L or P) holding class indices")
    except FileNotFoundError as exc:
        raise DatasetError(f"mask file {path} does not exist") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"mask file {path} cannot be decoded: {exc}") from exc


def load_label_map(path: str, binary: bool, num_classes: int, ignore_values: Sequence[int] = (),
                   ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A mask file as a uint8 ``[H, W]`` label map.

    Binary: 1 where the mask is foreground, any channel above 127 (above 0 when the largest value
    is 1), so 0/255, 1-bit, JPEG-noisy and coloured (RGB) masks all read right. Multi-class: the
    single-channel values (palette PNGs give their indices) are the labels; ``ignore_values``
    become ``ignore_index`` and any other value >= ``num_classes`` is a DatasetError.
    """
    values = _mask_values(path, binary)
    if binary:
        if values.ndim == 3:
            values = values.max(axis=2)
        return (values > (127 if values.max() > 1 else 0)).astype(np.uint8)
    ignored = np.isin(values, list(ignore_values))
    bad = np.unique(values[~ignored & ((values < 0) | (values >= num_classes))])
    if bad.size:
        ignored_text = f" or an ignored value {list(ignore_values)}" if len(ignore_values) else ""
        raise DatasetError(f"mask file {path} holds label value(s) {', '.join(map(str, bad[:10]))}; "
                           f"expected 0..{num_classes - 1}{ignored_text}")
    labels = values.astype(np.uint8)
    labels[ignored] = ignore_index
    return labels


def load_mask(sample: SegSample, splits: SegSplits) -> np.ndarray:
    """``sample``'s label map read by the rules of ``splits`` (binary or not, ignored values)."""
    return load_label_map(sample.mask, splits.binary, splits.num_classes, splits.ignore_values, splits.ignore_index)


class SegmentationDataset(Dataset):
    """Samples as (image ``[3, S, S]`` float, label map ``[S, S]`` int64) pairs.

    The whole image is resized to S x S (bicubic; no crop, so the mask covers it) and normalized;
    the label map is resized with nearest neighbours, so it holds only the mask's own values.
    ``augment="flip"`` flips image and mask together, half the time, drawing from torch's RNG.
    """

    def __init__(self, samples: Sequence[SegSample], splits: SegSplits, image_size: int, mean, std,
                 augment: SegAugment = "none"):
        if augment not in ("flip", "none"):
            raise ConfigError(f"segmentation augment must be 'flip' or 'none', got {augment!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
        self.samples = list(samples)
        self.splits = splits
        self.image_size = image_size
        self.mean, self.std = list(mean), list(std)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = load_rgb(sample.image)
        labels = load_mask(sample, self.splits)
        if image.size != (labels.shape[1], labels.shape[0]):
            raise DatasetError(f"image {sample.image} is {image.size[0]}x{image.size[1]} but its mask "
                               f"{sample.mask} is {labels.shape[1]}x{labels.shape[0]} (width x height)")
        size = (self.image_size, self.image_size)
        pixels = TF.normalize(TF.to_tensor(image.resize(size, Image.BICUBIC)), self.mean, self.std)
        mask = torch.from_numpy(np.array(Image.fromarray(labels).resize(size, Image.NEAREST))).long()
        if self.augment == "flip" and torch.rand(()).item() < 0.5:
            pixels, mask = pixels.flip(-1), mask.flip(-1)
        return pixels, mask
