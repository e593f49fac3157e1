"""Evaluation of test-time methods: adapt on each test image's views, then predict it.

The loader yields one image at a time: its views (or their stored features, ``vlpt.tta.view_features``), any
extra views and its label. Adaptation runs
with gradients enabled inside evaluation; the method restores its state after every image. The
wall time spent adapting and predicting is reported per image (``adapt_ms_per_image``).
"""
from __future__ import annotations

import itertools
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vlpt.metrics import ClassificationScores
from vlpt.results.record import ADAPT_MS


def evaluate_test_time(method, dataset: Dataset, device: torch.device, num_workers: int = 0) -> dict[str, float]:
    """Accuracy (percent), sample count, calibration (``vlpt.metrics``) and mean adaptation time per image of a
    test-time method.

    ``dataset`` gives each image's views (``TestTimeViews``) or their stored features (``StoredViewFeatures``,
    ``encoded``: its items carry the seconds their encoding took, counted in the adaptation time); extra views
    (DiffTPT's generated ones) come as images either way and are encoded here. Images are
    adapted ``method.images_per_batch()`` at a time (``adapt_batch``), one by default."""
    encoded = getattr(dataset, "encoded", False)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=0 if encoded else num_workers)
    method.start_episodes()
    per_batch = method.images_per_batch()
    scores, seconds = ClassificationScores(), 0.0
    items = iter(loader)
    while batch := list(itertools.islice(items, per_batch)):
        on_device = [(item[0].to(device), item[1].to(device) if len(item[1]) else None)
                     for item in batch]  # copied before the clock starts
        started = time.perf_counter()
        features, extras = [], []
        for item, (tensor, extra) in zip(batch, on_device):
            if encoded:  # items: stored features of the views, extra views, label, encode seconds
                seconds += item[3]
                features.append(F.normalize(tensor, dim=-1))  # as encode_image(..., normalize=True)
                extras.append(None if extra is None else method.encode_views(extra)[0])
            else:  # items: views, extra views, label
                view_features, extra_features = method.encode_views(tensor, extra)
                features.append(view_features)
                extras.append(extra_features)
        with torch.enable_grad():
            logits = torch.stack(method.adapt_batch(features, extras)).detach().cpu()  # synchronises with the device
        seconds += time.perf_counter() - started
        scores.update(logits, torch.tensor([int(item[2]) for item in batch]))
    metrics = scores.compute()
    return {**metrics, ADAPT_MS: round(1000.0 * seconds / metrics["n"], 3)}
