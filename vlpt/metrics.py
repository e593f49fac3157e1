"""Scoring a classification method: top-1 accuracy and calibration over an evaluation set.

Calibration follows C-TPT (Yoon et al., ICLR 2024), which reports it for test-time methods: the expected
calibration error over 20 equal-width confidence bins, confidence being the top softmax probability of the
method's scores (torchmetrics' ``MulticlassCalibrationError``, L1 norm), in percent; and the negative
log-likelihood of the true class (nats, mean over images).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from vlpt.results.record import ACCURACY, ECE, NLL, SAMPLE_COUNT

#: confidence bins of the expected calibration error (C-TPT's 20)
ECE_BINS = 20


class ClassificationScores:
    """Accumulates a method's scores over an evaluation set: accuracy, ECE (percent) and NLL."""

    def __init__(self):
        self.correct = 0
        self.count = 0
        self.nll_sum = 0.0
        self.calibration: MulticlassCalibrationError | None = None

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: scores ``[B, C]`` (any scale; softmax gives the probabilities) and labels ``[B]``."""
        logits, labels = logits.detach().float().cpu(), labels.cpu().long()
        if self.calibration is None:
            # one process evaluates (the first, under DDP): no gathering across processes
            self.calibration = MulticlassCalibrationError(num_classes=logits.shape[-1], n_bins=ECE_BINS, norm="l1",
                                                          sync_on_compute=False)
        self.calibration.update(logits.softmax(dim=-1), labels)
        self.correct += int((logits.argmax(dim=-1) == labels).sum())
        self.count += len(labels)
        self.nll_sum += float(F.cross_entropy(logits, labels, reduction="sum"))

    def compute(self) -> dict[str, float]:
        if not self.count:
            raise ValueError("accuracy of an empty evaluation set")
        return {ACCURACY: 100.0 * self.correct / self.count, SAMPLE_COUNT: self.count,
                ECE: 100.0 * float(self.calibration.compute()), NLL: self.nll_sum / self.count}


def evaluate_classifier(method, loader, device: torch.device) -> dict[str, float]:
    """Accuracy (percent), sample count, ECE (percent) and NLL of ``method.logits`` over ``loader``."""
    scores = ClassificationScores()
    with torch.no_grad():
        for images, y in loader:
            scores.update(method.logits(images.to(device)), y)
    return scores.compute()
