"""Dice and IoU of predicted label maps, as reported on the segmentation leaderboard.

Both are percentages, computed with torchmetrics (Dice is the pixel-wise F1 score):

- ``"dice"``: per-image Dice averaged over images. Per image and class,
  Dice = 2·TP / (2·TP + FP + FN) over the image's pixels. Binary: the foreground
  class; an image whose target and prediction are both empty scores 100.
  Multi-class: the mean over the classes present in that image's target or
  prediction (background included if the dataset lists one).
- ``"iou"``: dataset-level IoU. Per class, IoU = TP / (TP + FP + FN) with the counts
  summed over every pixel of the set. Binary: the foreground IoU (100 when no
  target or prediction of the set has foreground). Multi-class: the mean over the
  classes present in the set's targets or predictions (mIoU).
- ``"n"``: the number of images scored.

Pixels whose target is ``ignore_index`` count nowhere; an image with no other
pixel is skipped altogether (it is not counted in ``"n"`` either).
"""
from __future__ import annotations

import torch
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex, MulticlassF1Score, MulticlassJaccardIndex


class SegmentationScores:
    """Accumulates Dice and IoU over an evaluation set (torchmetrics underneath).

    ``num_classes`` is 1 or 2 for a binary task (either way the foreground class 1 is
    scored) and the number of classes, at least 2, for a multi-class one.
    """

    def __init__(self, num_classes: int, binary: bool, ignore_index: int = 255):
        if binary and num_classes not in (1, 2):
            raise ValueError(f"a binary task has 1 or 2 classes, got num_classes={num_classes}")
        if not binary and num_classes < 2:
            raise ValueError(f"a multi-class task needs num_classes >= 2, got {num_classes}")
        if 0 <= ignore_index < max(num_classes, 2):
            raise ValueError(f"ignore_index {ignore_index} is one of the classes")
        self.ignore_index = ignore_index
        local = {"sync_on_compute": False}  # one process evaluates (the first, under DDP): no gathering
        if binary:
            self._dice = BinaryF1Score(multidim_average="samplewise", ignore_index=ignore_index, zero_division=1,
                                       **local)
            self._iou = BinaryJaccardIndex(ignore_index=ignore_index, zero_division=1, **local)
        else:
            self._dice = MulticlassF1Score(
                num_classes, average="macro", multidim_average="samplewise", ignore_index=ignore_index, **local
            )
            self._iou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index, **local)
        self._n = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of int64 label maps ``prediction`` and ``target``, both [B, H, W]."""
        if prediction.dim() != 3 or prediction.shape != target.shape:
            raise ValueError(
                f"prediction and target must be label maps of one shape [B, H, W], got "
                f"{tuple(prediction.shape)} and {tuple(target.shape)}"
            )
        scored = (target != self.ignore_index).flatten(1).any(1)
        prediction, target = prediction[scored], target[scored]
        if len(target) == 0:
            return
        self._dice.to(target.device).update(prediction, target)
        self._iou.to(target.device).update(prediction, target)
        self._n += len(target)

    def compute(self) -> dict[str, float]:
        """``{"dice": percent, "iou": percent, "n": number of images}`` over every batch added so far."""
        if self._n == 0:
            raise ValueError("segmentation scores of an empty evaluation set")
        return {
            "dice": 100.0 * self._dice.compute().mean().item(),
            "iou": 100.0 * self._iou.compute().item(),
            "n": self._n,
        }


__all__ = ["SegmentationScores"]
