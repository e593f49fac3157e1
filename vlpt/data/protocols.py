"""Evaluation protocols: which samples train a method and which sets it is evaluated on.

* ``few_shot``: K per class from train (``split_rng(seed, "train")``), min(K, 4) per class from val
  (``split_rng(seed, "val")``); evaluated on the test split ("test").
* ``base_to_novel``: the same on the base classes (first ceil(n/2) labels); evaluated on the test
  images of the base classes ("base") and of the novel classes ("novel"), each relabelled from 0.
* ``cross_dataset``: few-shot on the source; evaluated on its test split ("test") and on every
  target's test split with the target's own classes and templates (named by the target's name).
* ``domain_generalization``: as cross_dataset, but every target's classes must be among the
  source's (ImageNet -> ImageNet-A/-R/-V2/-Sketch, pacs@photo -> pacs@sketch).
* ``test_time``: nothing is trained (no train or val samples); evaluated on the source's test
  split ("test") and on every target's test split with its own classes, for methods that adapt
  per test image (TPT) or not at all (zero-shot). A prompt trained elsewhere enters through
  ``init_from`` (TPT+CoOp).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from vlpt.data.fewshot import base_novel_split, sample_few_shot, split_rng
from vlpt.data.samples import DatasetSplits, Sample
from vlpt.errors import ConfigError, DatasetError

PROTOCOLS = ("few_shot", "base_to_novel", "cross_dataset", "domain_generalization", "test_time")
TEST_TIME = "test_time"
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


def _few_shot(splits: DatasetSplits, shots: int | None, seed: int) -> tuple[list[Sample], list[Sample]]:
    """K-shot train and min(K, 4)-shot val; a class left without training images is an error."""
    train = sample_few_shot(splits.train, shots, split_rng(seed, "train"))
    val_shots = None if shots is None else min(shots, MAX_VAL_SHOTS)
    val = sample_few_shot(splits.val, val_shots, split_rng(seed, "val"))
    if shots != 0:
        present = {s.label for s in train}
        empty = [name for label, name in enumerate(splits.classnames) if label not in present]
        if empty:
            raise DatasetError(f"{splits.name}: {len(empty)} class(es) have no training image: "
                               f"{', '.join(map(repr, empty[:10]))}")
    return train, val


def _eval_set(name: str, splits: DatasetSplits) -> EvalSet:
    return EvalSet(name, list(splits.test), list(splits.classnames), list(splits.templates), dataset=splits.name)


def build_protocol(protocol: str, source: DatasetSplits, shots: int | None, seed: int,
                   targets: Sequence[DatasetSplits] = ()) -> ProtocolData:
    """Build the train/val samples and evaluation sets of one run.

    ``shots`` is K (``None``: every training image; 0: no training images, for zero-shot runs);
    ``seed`` selects the few-shot subsets.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    if protocol in ("cross_dataset", "domain_generalization") and not targets:
        raise ConfigError(f"protocol {protocol} needs at least one target dataset")
    if targets and protocol not in ("cross_dataset", "domain_generalization", TEST_TIME):
        raise ConfigError(f"protocol {protocol} takes no target datasets (got {', '.join(t.name for t in targets)})")
    names = [source.name] + [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"protocol {protocol}: datasets must be distinct, got {', '.join(names)}")

    if protocol == "base_to_novel":
        base, novel = base_novel_split(source)
        train, val = _few_shot(base, shots, seed)
        trained_on, eval_sets = base, [_eval_set("base", base), _eval_set("novel", novel)]
    elif protocol == TEST_TIME:
        if shots:
            raise ConfigError(f"protocol {TEST_TIME} trains nothing; got shots={shots} (train a prompt in another "
                              f"experiment and start from it with init_from)")
        train, val = [], []
        trained_on, eval_sets = source, [_eval_set("test", source)]
    else:
        train, val = _few_shot(source, shots, seed)
        trained_on, eval_sets = source, [_eval_set("test", source)]
    if protocol == "domain_generalization":
        known = set(source.classnames)
        for target in targets:
            foreign = [c for c in target.classnames if c not in known]
            if foreign:
                raise DatasetError(f"domain_generalization: {len(foreign)} class(es) of target {target.name} are not "
                                   f"classes of the source {source.name}: {', '.join(map(repr, foreign[:10]))}")
    eval_sets += [_eval_set(target.name, target) for target in targets]
    return ProtocolData(train, val, list(trained_on.classnames), list(trained_on.templates), eval_sets,
                        protocol=protocol, dataset=source.name, shots=shots, seed=seed,
                        targets=[t.name for t in targets])
