"""Evaluation of test-time methods: adapt on each test image's views, then predict it.

The loader yields one image at a time (its views, any extra views, its label; or the stored features of
its views, ``vlpt.tta.view_features``). Adaptation runs
with gradients enabled inside evaluation; the method restores its state after every image. The
wall time spent adapting and predicting is reported per image (``adapt_ms_per_image``).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vlpt.metrics import accuracy
from vlpt.results.record import ADAPT_MS


def evaluate_test_time(method, dataset: Dataset, device: torch.device, num_workers: int = 0) -> dict[str, float]:
    """Accuracy (percent), sample count and mean adaptation time per image of a test-time method.

    ``dataset`` gives each image's views (``TestTimeViews``) or their stored features (``StoredViewFeatures``,
    ``encoded``: its items carry the seconds their encoding took, counted in the adaptation time)."""
    encoded = getattr(dataset, "encoded", False)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=0 if encoded else num_workers)
    method.start_episodes()
    predictions, labels, seconds = [], [], 0.0
    for item in loader:
        started = time.perf_counter()
        with torch.enable_grad():
            if encoded:
                features, label, encode_seconds = item
                seconds += encode_seconds
                features = F.normalize(features.to(device), dim=-1)  # as encode_image(..., normalize=True)
                scores = method.adapt_on_features(features)
            else:
                views, extra, label = item
                views, extra = views.to(device), extra.to(device)
                scores = method.adapt_and_predict(views, extra if len(extra) else None)
        prediction = int(scores.argmax())  # synchronises with the device before the clock stops
        seconds += time.perf_counter() - started
        predictions.append(prediction)
        labels.append(int(label))
    predictions, labels = torch.tensor(predictions), torch.tensor(labels)
    return {"accuracy": accuracy(predictions, labels), "n": len(labels),
            ADAPT_MS: round(1000.0 * seconds / len(labels), 3)}
