"""``base_to_novel``: few-shot on the base classes (the first ceil(n/2) labels); evaluated on the test images
of the base classes ("base") and of the novel classes ("novel"), each relabelled from 0. The leaderboard adds
their harmonic mean. Facts: ``configs/protocols/base_to_novel.yaml``."""
from __future__ import annotations

from vlpt.data.fewshot import base_novel_split
from vlpt.protocols.base import register_protocol
from vlpt.protocols.classification import ClassificationProtocol, few_shot_split, test_set


@register_protocol
class BaseToNovel(ClassificationProtocol):
    name = "base_to_novel"

    def split(self, source, shots, seed, targets):
        base, novel = base_novel_split(source)
        train, val = few_shot_split(base, shots, seed)
        return train, val, base, [test_set("base", base), test_set("novel", novel)]
