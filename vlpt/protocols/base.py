"""The run side of a protocol: what a suite may ask of it, what a run trains on and how it is evaluated.

A protocol is one module of ``vlpt.protocols`` (a ``Protocol`` subclass, registered with
``@register_protocol``) plus its facts file ``vlpt/configs/protocols/<name>.yaml``, which records and the
leaderboard read (``vlpt.results.protocols``). The suite loader asks the protocol to check an
experiment and each of its methods; preflight asks for a run's data and its images; the harness asks
it to prepare a run (method, datamodule, evaluations) and writes what it returns into the record.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, ClassVar

from vlpt.errors import ConfigError
from vlpt.results.protocols import ProtocolFacts, protocol_facts

#: experiment keys (None when unset) that only the protocols naming them in ``own_keys`` take
OPTIONAL_KEYS = ("vlsm",)
#: what each protocol asks of a method's ability to score classes it was not trained on, weakest first
UNSEEN_CLASSES = ("none", "subset", "any")


@dataclass
class Evaluation:
    """One evaluation set of a run: its name in the record and how a trained method is scored on it.

    ``evaluate(method)`` returns the set's metrics and the test-time view augmentation it used (None for
    a method that does not adapt at test time)."""

    name: str
    evaluate: Callable[[Any], tuple[dict[str, float], str | None]]


@dataclass
class PreparedRun:
    """A run ready to train: the method, its datamodule, its evaluations, and what the record says of its data."""

    method: Any
    datamodule: Any
    evaluations: list[Evaluation]
    n_train: int
    n_val: int
    classes: int
    #: multitask runs: the tasks the multitask module trains on
    tasks: list | None = None
    #: extra keys of the record's ``config`` (segmentation: the VLSM)
    record_config: dict[str, Any] = field(default_factory=dict)


class Protocol(abc.ABC):
    """Base of every protocol; ``name`` is its name in suites and records. A subclass implements the
    abstract methods: which datasets it loads, a run's data, its images and its preparation."""

    name: ClassVar[str]
    #: the experiment's ``train_augment`` when it names none (None: ExperimentSpec's default)
    default_train_augment: ClassVar[str | None] = None
    #: optional experiment keys that only some protocols take (segmentation: ``vlsm``)
    own_keys: ClassVar[tuple[str, ...]] = ()

    @cached_property
    def facts(self) -> ProtocolFacts:
        return protocol_facts(self.name)

    # ------------------------------------------------------------------ suite checks
    def check_experiment(self, experiment, where: str) -> None:
        """Refuse an experiment this protocol cannot run; ConfigError names ``where`` and the key."""
        facts = self.facts
        if facts.datasets == "several":
            if experiment.dataset or len(experiment.datasets) < 2:
                raise ConfigError(f"{where}: protocol {self.name} needs `datasets`, a list of at least two, and no "
                                  f"`dataset`")
        elif not experiment.dataset or experiment.datasets:
            raise ConfigError(f"{where}: protocol {self.name} needs one `dataset` (`datasets` is for multitask)")
        if facts.targets == "required" and not experiment.targets:
            raise ConfigError(f"{where}: protocol {self.name} needs a list of targets")
        if facts.targets == "none" and experiment.targets:
            raise ConfigError(f"{where}: protocol {self.name} takes no targets (got {', '.join(experiment.targets)})")
        for name in [*self.task_datasets(experiment), *experiment.targets]:
            self.check_dataset_name(name, where)
        for key in OPTIONAL_KEYS:
            if getattr(experiment, key) is not None and key not in self.own_keys:
                owners = [name for name, p in _REGISTRY.items() if key in p.own_keys]
                raise ConfigError(f"{where}: `{key}` is for protocol {' or '.join(owners)} only")

    @abc.abstractmethod
    def check_dataset_name(self, name: str, where: str) -> None:
        """Refuse a dataset name this protocol cannot load."""

    def check_method(self, resolved, experiment, where: str, method_config: str) -> None:
        """Refuse a method this protocol cannot run: one that cannot score the classes it evaluates, one of the
        other task (classification, segmentation), or one that trains under a protocol that trains nothing."""
        facts = self.facts
        refusal = resolved.cls.config_refusal(resolved.config)
        if refusal:
            raise ConfigError(f"{where}: {refusal}")
        if resolved.cls.task != facts.task:
            from vlpt.registry import METHOD_REGISTRIES

            raise ConfigError(f"{where}: method {resolved.cls.name} is a {resolved.cls.task} method; protocol "
                              f"{self.name} needs a {facts.task} method ({', '.join(METHOD_REGISTRIES[facts.task].names())})")
        can = resolved.cls.unseen_classes(resolved.config)
        if UNSEEN_CLASSES.index(can) < UNSEEN_CLASSES.index(facts.unseen_classes):
            raise ConfigError(f"{where}: method {resolved.cls.name} ({resolved.variant}) can score "
                              f"{'only its training classes' if can == 'none' else 'only subsets of its training classes'}"
                              f"; protocol {self.name} evaluates other classes")
        if resolved.cls.adapts_at_test_time and resolved.cls.test_stream == "online" and \
                facts.stream != "online":
            raise ConfigError(f"{where}: method {resolved.cls.name} adapts online (its state carries from one test "
                              f"image to the next); protocol {self.name} is not a stream: run it under protocol "
                              f"online_test_time")
        reads_shots_online = resolved.cls.reads_labelled_images and facts.stream == "online"  # DMN-TF's few shots
        if not facts.trains and resolved.cls.trains and not reads_shots_online:
            raise ConfigError(f"{where}: protocol {self.name} trains nothing, but method {resolved.cls.name} "
                              f"learns from training images; train it in another experiment and start a "
                              f"test-time method from it (init_from: experiment:NAME/{method_config})")

    def task_datasets(self, experiment) -> list[str]:
        """The datasets a run of ``experiment`` trains on: several for multitask, else one."""
        return list(experiment.datasets) if self.facts.datasets == "several" else [experiment.dataset]

    def settings(self, experiment) -> dict[str, Any]:
        """Experiment settings beyond the method's that change a run's result (multitask: sampling, scoring);
        they enter the run's settings (staleness, resume) and the record's ``config.data``."""
        return {}

    def model_name(self, experiment, backbone: str, where: str = "") -> str:
        """The model a run's identity names: the suite's backbone (segmentation: its VLSM; a bad one is a
        ConfigError naming ``where``)."""
        return backbone

    # ------------------------------------------------------------------ runs
    def model(self, harness, experiment):
        """The model the run's method is built on, loaded before the run's seed is set."""
        return harness.backbone

    @abc.abstractmethod
    def build(self, harness, run, shots: int):
        """The run's data: what it trains on and its evaluation sets (few-shot sets sampled by the run's seed)."""

    @abc.abstractmethod
    def images(self, data) -> tuple[list[str], list[str]]:
        """The files of ``build``'s data to decode (what the run trains on) and to verify (what it is
        evaluated on, masks included), for the preflight check."""

    @abc.abstractmethod
    def prepare(self, harness, run, config, data, model) -> PreparedRun:
        """The run's method, datamodule and evaluations."""


_REGISTRY: dict[str, Protocol] = {}


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: make ``cls`` the protocol named ``cls.name`` (its facts must be known)."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ConfigError(f"protocol {cls.name!r} is registered twice ({type(_REGISTRY[cls.name]).__name__}, "
                          f"{cls.__name__})")
    protocol_facts(cls.name)  # an unknown protocol fails here, not in the middle of a suite
    _REGISTRY[cls.name] = cls()
    return cls


def registered() -> dict[str, Protocol]:
    return dict(_REGISTRY)
