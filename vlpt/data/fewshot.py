"""Seeded sampling: RNG streams, K-shot subsets, per-class splits and the base/novel class split.

Every random choice draws from a ``numpy.random.Generator`` built by ``split_rng`` from a seed and
a stream name, never from global RNG state, so a subset depends only on (seed, stream, samples).
"""
from __future__ import annotations

import hashlib
import math
import numbers
from collections import defaultdict
from dataclasses import replace
from typing import Iterable, Sequence

import numpy as np

from vlpt.data.samples import DatasetSplits, Sample
from vlpt.errors import ConfigError


def split_rng(seed: int, stream: str) -> np.random.Generator:
    """A generator seeded from ``seed`` and a stable (process-independent) hash of ``stream``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    stream_key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, stream_key]))


def group_by_label(samples: Iterable[Sample]) -> dict[int, list[Sample]]:
    """Samples per label, labels ascending, each list sorted by path (independent of input order)."""
    groups: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.label].append(sample)
    return {label: sorted(groups[label], key=lambda s: s.path) for label in sorted(groups)}


def _ordered(samples: Iterable[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.label, s.path))


def sample_few_shot(samples: Sequence[Sample], shots: int | None, rng: np.random.Generator) -> list[Sample]:
    """``shots`` samples per class drawn without replacement (all of a class that has fewer).

    ``shots=None`` keeps every sample. The result is sorted by (label, path).
    """
    if shots is None:
        return _ordered(samples)
    if shots < 0:
        raise ConfigError(f"shots must be >= 0, got {shots}")
    chosen: list[Sample] = []
    for group in group_by_label(samples).values():
        order = rng.permutation(len(group))
        chosen.extend(group[i] for i in order[:shots])
    return _ordered(chosen)


def subsample(samples: Sequence[Sample], limit: int | None, rng: np.random.Generator) -> list[Sample]:
    """At most ``limit`` samples drawn without replacement, in their original order (all when None)."""
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit < 1:
        raise ConfigError(f"an evaluation subset needs at least 1 image, got {limit}")
    keep = set(rng.choice(len(samples), size=limit, replace=False).tolist())
    return [s for i, s in enumerate(samples) if i in keep]


def split_per_class(samples: Sequence[Sample], fractions: Sequence[float],
                    rng: np.random.Generator) -> list[list[Sample]]:
    """Shuffle each class and cut it into ``len(fractions) + 1`` disjoint parts.

    Part i gets ``round(n * fractions[i])`` images of a class of n (CoOp's rule), the last part the rest.
    """
    parts: list[list[Sample]] = [[] for _ in range(len(fractions) + 1)]
    for group in group_by_label(samples).values():
        shuffled = [group[i] for i in rng.permutation(len(group))]
        start = 0
        for part, fraction in zip(parts, fractions):
            count = min(round(len(group) * fraction), len(group) - start)
            part.extend(shuffled[start:start + count])
            start += count
        parts[-1].extend(shuffled[start:])
    return [_ordered(part) for part in parts]


def select_classes(splits: DatasetSplits, labels: Sequence[int]) -> DatasetSplits:
    """The dataset restricted to ``labels``, relabelled 0..len(labels)-1 in the given order."""
    new_label = {old: new for new, old in enumerate(labels)}

    def keep(samples: list[Sample]) -> list[Sample]:
        return [replace(s, label=new_label[s.label]) for s in samples if s.label in new_label]

    return DatasetSplits(
        name=splits.name,
        classnames=[splits.classnames[i] for i in labels],
        train=keep(splits.train), val=keep(splits.val), test=keep(splits.test),
        templates=list(splits.templates),
    )


def base_novel_split(splits: DatasetSplits) -> tuple[DatasetSplits, DatasetSplits]:
    """Base = the first ceil(n/2) labels (sorted), novel = the rest; each relabelled from 0."""
    labels = list(range(splits.num_classes))
    m = math.ceil(len(labels) / 2)
    return select_classes(splits, labels[:m]), select_classes(splits, labels[m:])
