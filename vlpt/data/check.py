"""``vlpt data check DATASET``: what a dataset holds, and what is wrong with it, before any training."""
from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from vlpt.data.consistency import repeated_class_names
from vlpt.data.samples import DatasetSplits


def dataset_report(splits: DatasetSplits, open_images: bool = False) -> tuple[list[str], list[str]]:
    """Lines describing ``splits`` (classes, images per split and per class) and the problems found: repeated
    class names, classes without images in a split, and with ``open_images`` every image that does not decode."""
    names = splits.classnames
    shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
    lines = [f"dataset {splits.name}: {len(names)} classes: {shown}"]
    problems = [f"class name {name!r} is given to labels {', '.join(map(str, labels))} (one prompt for all)"
                for name, labels in repeated_class_names(names).items()]
    for split in ("train", "val", "test"):
        samples = getattr(splits, split)
        counts = [0] * len(names)
        for sample in samples:
            counts[sample.label] += 1
        spread = f", {min(counts)}-{max(counts)} per class" if samples else ""
        lines.append(f"  {split}: {len(samples)} images{spread}")
        empty = [names[label] for label, count in enumerate(counts) if count == 0]
        if samples and empty:
            problems.append(f"{split}: {len(empty)} class(es) without images, first: {empty[0]!r}")
        if open_images:
            problems += [f"{split}: {path}: {why}" for path, why in unreadable(sample.path for sample in samples)]
    return lines, problems


def unreadable(paths) -> list[tuple[str, str]]:
    """The image files among ``paths`` that PIL cannot decode, with why."""
    found = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(Path(path)) as image:
                    image.convert("RGB")
        except Exception as exc:  # noqa: BLE001  (any decoding error is the finding)
            found.append((str(path), f"{type(exc).__name__}: {exc}"))
    return found
