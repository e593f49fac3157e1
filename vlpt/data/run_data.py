"""What a classification run trains on and the sets it is evaluated on (built by the protocols of
``vlpt.protocols``: one module per protocol)."""
from __future__ import annotations

from dataclasses import dataclass, field

from vlpt.data.samples import Sample

#: few-shot runs validate on min(K, MAX_VAL_SHOTS) images per class
MAX_VAL_SHOTS = 4


@dataclass
class EvalSet:
    """Samples to evaluate on, with the class names and templates the classifier is built from."""

    name: str
    samples: list[Sample]
    classnames: list[str]
    templates: list[str]
    #: the dataset the samples come from (its splits' name, with any ``@domain`` / ``~corruption``)
    dataset: str = ""


@dataclass
class ProtocolData:
    """What a run trains on (``train``, ``val`` with ``classnames``/``templates``) and is evaluated on."""

    train: list[Sample]
    val: list[Sample]
    classnames: list[str]
    templates: list[str]
    eval_sets: list[EvalSet]
    protocol: str = ""
    dataset: str = ""
    shots: int | None = None
    seed: int = 0
    targets: list[str] = field(default_factory=list)
