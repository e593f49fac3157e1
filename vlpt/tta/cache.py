"""A per-class memory of test features that keeps the most confident ones: TDA's caches and DMN's dynamic memory.

Each class (the pseudo-label a test image got) holds at most ``capacity`` entries, each a feature, the entropy of
the prediction that placed it there and an optional value (TDA's negative cache: the prediction's class
probabilities). A new entry fills a free slot; in a full class it replaces the highest-entropy entry when its own
entropy is strictly lower, and is dropped otherwise. Both references (kdiAAA/TDA ``update_cache``, YBZh/DMN
``update_memory_bank``) follow this rule, so a class always holds the lowest-entropy entries it was offered (ties
kept first come, first kept).
"""
from __future__ import annotations

import torch


class EntropyCache:
    """Slots ``[C, capacity]`` of features ``[D]``, entropies and values ``[V]``; empty slots have infinite entropy."""

    def __init__(self, classes: int, capacity: int, dim: int, value_dim: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if capacity < 0:
            raise ValueError(f"cache capacity must be at least 0, got {capacity}")
        self.capacity = capacity
        self.features = torch.zeros(classes, capacity, dim, device=device, dtype=dtype)
        self.entropies = torch.full((classes, capacity), torch.inf, device=device, dtype=torch.float64)
        self.values = torch.zeros(classes, capacity, value_dim, device=device, dtype=dtype)

    @property
    def filled(self) -> torch.Tensor:
        """``[C, capacity]`` True where a slot holds an entry."""
        return torch.isfinite(self.entropies)

    def __len__(self) -> int:
        return int(self.filled.sum())

    @torch.no_grad()
    def offer(self, label: int, feature: torch.Tensor, entropy: float, value: torch.Tensor | None = None) -> bool:
        """Store ``feature`` under class ``label`` if it has a free slot or a higher-entropy entry; True if stored."""
        if self.capacity == 0:
            return False
        row = self.entropies[label]
        slot = int(torch.argmax(row))  # a free slot (inf) first, else the least confident entry
        if not entropy < float(row[slot]):
            return False
        row[slot] = entropy
        self.features[label, slot] = feature.to(self.features.dtype)
        if value is not None:
            self.values[label, slot] = value.to(self.values.dtype)
        return True

    def entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored entries, flattened: features ``[K, D]``, labels ``[K]``, entropies ``[K]``, values ``[K, V]``."""
        filled = self.filled
        labels = torch.arange(len(filled), device=filled.device)[:, None].expand_as(filled)
        return self.features[filled], labels[filled], self.entropies[filled], self.values[filled]
