"""A torch Dataset over samples: (transform(RGB image), label)."""
from __future__ import annotations

from typing import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset

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


class ImageDataset(Dataset):
    """Samples as (transform(image), label) pairs (the PIL image itself when ``transform`` is None)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = load_rgb(sample.path)
        return (self.transform(image) if self.transform is not None else image), sample.label
