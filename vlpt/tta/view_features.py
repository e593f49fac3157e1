"""Stored image features of test-time views: encode each test image's views once, adapt on them many times.

TPT's image tower is frozen and unprompted, so what it computes per test image, the features of the N views,
depends only on the backbone, the image, the run seed and the view settings, not on the prompt that adapts.
TPT, TPT+CoOp, TPT+CoCoOp, C-TPT and DiffTPT with the same view settings on one evaluation set with one seed
thus encode the same views; storing their features in the feature cache (``vlpt.data.feature_cache``) lets every
later run read them. DiffTPT's generated views are not stored here: each run reads them from the view store and
encodes them in a pass of their own, as it does without stored features. Each image's views
are encoded as one batch, exactly as ``TPT.adapt_and_predict`` encodes them, so the stored features, and every
prediction made from them, equal the encoded ones bit for bit (``tests/test_tta_view_features.py``).

Entries hold ``CHUNK`` images each. With each image's features the entry keeps the seconds its encoding took,
which ``evaluate_test_time`` adds to the adaptation time it reports, so ``adapt_ms_per_image`` means the
same with and without stored features.
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from vlpt.data.feature_cache import FeatureCache, FeatureKey
from vlpt.tta.data import TestTimeViews

#: images per cache entry (64 views x 512 dims in fp32: 8 MB per entry for a ViT-B)
CHUNK = 64


class StoredViewFeatures(Dataset):
    """Items ``(features [N, D], extra [M, 3, H, W], label, encode_seconds)``: the frozen image tower's features of
    each image's views (not normalised), from the feature cache (computed and stored when missing), and the
    image's extra views (DiffTPT's generated ones; M = 0 without), which are not stored."""

    encoded = True

    def __init__(self, views: TestTimeViews, cache: FeatureCache, dataset: str, split: str):
        self.views, self.cache, self.dataset, self.split = views, cache, dataset, split
        self._chunk: tuple[int, dict[str, torch.Tensor]] | None = None

    @property
    def augment(self) -> str:
        return self.views.augment

    def __len__(self) -> int:
        return len(self.views)

    def key(self, start: int) -> FeatureKey:
        """The cache key of the chunk of images from ``start``."""
        samples = self.views.images.samples[start:start + CHUNK]
        described = f"{self.views.describe()} on {self.cache.backbone.device.type}"  # GPU kernels round otherwise
        return self.cache.key(samples, described, self.dataset, self.split, view=0, seed=self.views.seed)

    def __getitem__(self, index: int):
        start = index - index % CHUNK
        if self._chunk is None or self._chunk[0] != start:
            count = len(self.views.images.samples[start:start + CHUNK])
            self._chunk = start, self.cache.stored(self.key(start), count, lambda: self._encode(start, count))
        tensors = self._chunk[1]
        features, seconds = tensors["features"][index - start], float(tensors["encode_seconds"][index - start])
        if self.views.extra_views is None:
            return features, features.new_zeros((0, 3, 0, 0)), self.views.images.samples[index].label, seconds
        image, label = self.views.images[index]
        return features, self.views.extra_views(image), label, seconds

    @torch.no_grad()
    def _encode(self, start: int, count: int) -> dict[str, torch.Tensor]:
        backbone = self.cache.backbone
        features, seconds = [], []
        images = DataLoader(Subset(self.views.without_extra_views(), range(start, start + count)), batch_size=None,
                            num_workers=self.cache.num_workers)  # views are seeded per image: any worker draws them
        for views, _, _ in images:
            views = views.to(backbone.device)
            started = time.perf_counter()
            with self.cache.autocast():  # the precision evaluation runs in
                encoded = backbone.encode_image(views)
            if encoded.device.type == "cuda":
                torch.cuda.synchronize(encoded.device)
            seconds.append(time.perf_counter() - started)  # as evaluation times encode_image
            features.append(encoded.cpu())
        return {"features": torch.stack(features), "encode_seconds": torch.tensor(seconds, dtype=torch.float64)}
