"""Scoring a segmentation method on an evaluation set: Dice and IoU (``vlpt.seg.metrics``)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from vlpt.seg.data import SegEvalSet
from vlpt.seg.metrics import SegmentationScores


def evaluate_segmenter(method, loader: DataLoader, eval_set: SegEvalSet, device: torch.device) -> dict[str, float]:
    """Dice, IoU (percent) and image count of ``method.predict`` over ``loader`` (see ``vlpt.seg.metrics``)."""
    splits = eval_set.splits
    scores = SegmentationScores(splits.num_classes, splits.binary, splits.ignore_index)
    for images, masks in loader:
        scores.update(method.predict(images.to(device)).cpu(), masks)
    return scores.compute()
