"""``vlpt data check`` for a segmentation dataset: image/mask pairs per split, and what is wrong with them."""
from __future__ import annotations

from vlpt.data.check import unreadable
from vlpt.errors import DatasetError
from vlpt.seg.data import SegSplits, load_mask


def seg_dataset_report(splits: SegSplits, open_images: bool = False) -> tuple[list[str], list[str]]:
    """Lines describing ``splits`` (classes, image/mask pairs per split) and the problems found; with
    ``open_images`` every image and mask is decoded, and a binary mask without foreground is listed too."""
    kind = "binary" if splits.binary else f"{splits.num_classes} classes"
    lines = [f"dataset {splits.name}: segmentation, {kind}: {', '.join(splits.classnames[:8])}"
             + (f", ... ({len(splits.classnames) - 8} more)" if len(splits.classnames) > 8 else "")]
    problems = []
    for split in ("train", "val", "test"):
        samples = getattr(splits, split)
        lines.append(f"  {split}: {len(samples)} image/mask pairs")
        if not open_images:
            continue
        problems += [f"{split}: {path}: {why}" for path, why in unreadable(s.image for s in samples)]
        for sample in samples:
            try:
                mask = load_mask(sample, splits)
            except DatasetError as exc:
                problems.append(f"{split}: {exc}")
                continue
            if splits.binary and not mask.any():
                problems.append(f"{split}: mask {sample.mask} has no foreground")
    return lines, problems
