"""A torch Dataset over samples: (transform(RGB image), label), corrupted images where samples say so."""
from __future__ import annotations

from typing import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset

from vlpt.data.corruptions import corrupt, parse_corruption
from vlpt.data.samples import Sample
from vlpt.errors import DatasetError


def load_rgb(path: str) -> Image.Image:
    """Open and fully decode an image as RGB; a missing or undecodable file raises DatasetError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # decodes here, so truncated files fail inside the try
    except FileNotFoundError as exc:
        raise DatasetError(f"image file {path} does not exist") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"image file {path} cannot be decoded: {exc}") from exc


def load_sample(sample: Sample) -> Image.Image:
    """A sample's RGB image, with its corruption applied (seeded by its ``seed_key``) when it has one."""
    image = load_rgb(sample.path)
    if sample.corruption is None:
        return image
    name, severity = parse_corruption(sample.corruption)
    return corrupt(image, name, severity, key=sample.seed_key)


class ImageDataset(Dataset):
    """Samples as (transform(image), label) pairs (the PIL image itself when ``transform`` is None);
    a sample's corruption is applied before the transform."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = load_sample(sample)
        return (self.transform(image) if self.transform is not None else image), sample.label
