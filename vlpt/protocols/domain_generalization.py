"""``domain_generalization``: as ``cross_dataset``, but every target's classes must be among the source's
(ImageNet -> ImageNet-A/-R/-V2/-Sketch, pacs@photo -> pacs@sketch). Facts:
``configs/protocols/domain_generalization.yaml``."""
from __future__ import annotations

from vlpt.errors import DatasetError
from vlpt.protocols.base import register_protocol
from vlpt.protocols.cross_dataset import CrossDataset


@register_protocol
class DomainGeneralization(CrossDataset):
    name = "domain_generalization"

    def split(self, source, shots, seed, targets):
        known = set(source.classnames)
        for target in targets:
            foreign = [c for c in target.classnames if c not in known]
            if foreign:
                raise DatasetError(f"domain_generalization: {len(foreign)} class(es) of target {target.name} are not "
                                   f"classes of the source {source.name}: {', '.join(map(repr, foreign[:10]))}")
        return super().split(source, shots, seed, targets)
