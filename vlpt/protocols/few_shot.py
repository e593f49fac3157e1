"""``few_shot``: K images per class from train (``split_rng(seed, "train")``) and min(K, 4) per class from val
(``split_rng(seed, "val")``); evaluated on the test split ("test"). Facts: ``configs/protocols/few_shot.yaml``."""
from __future__ import annotations

from vlpt.protocols.base import register_protocol
from vlpt.protocols.classification import ClassificationProtocol, few_shot_split, test_set


@register_protocol
class FewShot(ClassificationProtocol):
    name = "few_shot"

    def split(self, source, shots, seed, targets):
        train, val = few_shot_split(source, shots, seed)
        return train, val, source, [test_set("test", source)]
