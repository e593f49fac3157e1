"""Evaluation protocols, one module each (see ``vlpt.protocols.base``), with their facts files in
``vlpt/configs/protocols/``. ``get_protocol(name)`` gives the protocol object the suite loader, preflight and
harness ask; a protocol from another package registers with ``@register_protocol`` after
``vlpt.results.protocols.register_facts``."""
from __future__ import annotations

from typing import Sequence

from vlpt.errors import ConfigError
from vlpt.protocols import (  # noqa: F401  (each registers its protocol)
    base_to_novel, cross_dataset, domain_generalization, few_shot, multitask, segmentation, test_time,
)
from vlpt.protocols.base import Evaluation, PreparedRun, Protocol, register_protocol, registered


def protocol_names() -> tuple[str, ...]:
    """The protocols a suite may name, in table order."""
    found = registered()
    return tuple(sorted(found, key=lambda name: (found[name].facts.order, name)))


def get_protocol(name: str) -> Protocol:
    """The protocol named ``name``; ConfigError listing the valid names for an unknown one."""
    found = registered()
    if name not in found:
        raise ConfigError(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())}")
    return found[name]


def build_data(name: str, source, shots: int | None, seed: int, targets: Sequence = ()):
    """The train/val samples and evaluation sets of one run of classification protocol ``name`` on ``source``
    (with ``targets``); see each protocol's module."""
    protocol = get_protocol(name)
    if not hasattr(protocol, "data"):
        raise ConfigError(f"protocol {name!r} is not a classification protocol over one dataset")
    return protocol.data(source, shots, seed, targets)


__all__ = ["Evaluation", "PreparedRun", "Protocol", "build_data", "get_protocol", "protocol_names",
           "register_protocol"]
