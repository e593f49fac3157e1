"""Evaluation protocols, one module each (see ``vlpt.protocols.base``), with their facts files in
``vlpt/configs/protocols/``. Every module of this package is imported here, so a new protocol module
registers itself. ``get_protocol(name)`` gives the protocol object the suite loader, preflight and harness
ask; a protocol from another package registers its facts (``vlpt.results.protocols.register_facts``) and
then its class (``@register_protocol``) in a module imported before the suite loads."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Sequence

from vlpt.errors import ConfigError
from vlpt.protocols.base import Evaluation, PreparedRun, Protocol, register_protocol, registered
from vlpt.protocols.classification import ClassificationProtocol

for _module in pkgutil.iter_modules(__path__):  # each protocol module registers its protocol
    importlib.import_module(f"{__name__}.{_module.name}")


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
    if not isinstance(protocol, ClassificationProtocol) or protocol.facts.datasets != "one":
        raise ConfigError(f"protocol {name!r} is not a classification protocol over one dataset")
    return protocol.data(source, shots, seed, targets)


__all__ = ["Evaluation", "PreparedRun", "Protocol", "build_data", "get_protocol", "protocol_names",
           "register_protocol"]
