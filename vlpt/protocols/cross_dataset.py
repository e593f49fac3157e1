"""``cross_dataset``: few-shot on the source; evaluated on its test split ("test") and on every target's test
split with the target's own classes and templates (named by the target). Facts:
``configs/protocols/cross_dataset.yaml``."""
from __future__ import annotations

from vlpt.protocols.base import register_protocol
from vlpt.protocols.classification import ClassificationProtocol, few_shot_split, test_set


@register_protocol
class CrossDataset(ClassificationProtocol):
    name = "cross_dataset"

    def split(self, source, shots, seed, targets):
        train, val = few_shot_split(source, shots, seed)
        return train, val, source, [test_set("test", source)]
