"""Scoring a classification method: top-1 accuracy over an evaluation loader."""
from __future__ import annotations

import torch


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty evaluation set")
    return 100.0 * (predictions == labels).float().mean().item()


def evaluate_classifier(method, loader, device: torch.device) -> dict[str, float]:
    """Accuracy (percent) and sample count of ``method.predict`` over ``loader``."""
    predictions, labels = [], []
    for images, y in loader:
        predictions.append(method.predict(images.to(device)).cpu())
        labels.append(y)
    labels = torch.cat(labels)
    return {"accuracy": accuracy(torch.cat(predictions), labels), "n": len(labels)}
