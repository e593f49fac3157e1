"""Suites: YAML files naming methods x datasets x shots x seeds x protocol.

A suite is validated whole before any run starts: unknown keys, wrong types, unknown
methods, datasets or protocols, and invalid method parameters all fail up front with the
file and key named. ``expand`` turns it into the list of runs, each with its identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpt.config import build_dataclass, load_yaml
from vlpt.data.protocols import PROTOCOLS
from vlpt.data.transforms import TrainAugment
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.paths import CONFIG_DIR
from vlpt.registry import DATASETS, METHODS
from vlpt.results import RunIdentity

METHOD_CONFIG_DIR = CONFIG_DIR / "methods"
DEFAULT_SUITE = CONFIG_DIR / "suites" / "starter.yaml"


@dataclass
class BackboneSpec:
    model: str
    pretrained: str | None = None
    precision: str = "fp32"

    def describe(self) -> str:
        return f"{self.model}@{self.pretrained or 'random'}"


@dataclass
class TrainerSpec:
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = "32-true"
    num_workers: int = 0


@dataclass
class MethodSpec:
    config: str
    variant: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentSpec:
    protocol: str
    dataset: str
    methods: list[Any]
    shots: list[int] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    targets: list[str] = field(default_factory=list)
    train_augment: TrainAugment = "crop_flip"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteSpec:
    name: str
    backbone: dict[str, Any]
    experiments: list[dict[str, Any]]
    data_root: str | None = None
    output: str | None = None
    trainer: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResolvedMethod:
    """A method class with its validated config and the identity pieces that name it."""

    cls: type[PromptMethod]
    config: MethodConfig
    variant: str


@dataclass
class Run:
    """One run of the suite: identity plus everything needed to execute it."""

    identity: RunIdentity
    method: ResolvedMethod
    experiment: ExperimentSpec


@dataclass
class Suite:
    path: Path
    name: str
    backbone: BackboneSpec
    trainer: TrainerSpec
    data_root: str | None
    output: str | None
    runs: list[Run]


def load_method_config(name: str, overrides: dict[str, Any], where: str) -> ResolvedMethod:
    """Resolve ``configs/methods/<name>.yaml`` plus overrides into a method class and typed config."""
    path = METHOD_CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in METHOD_CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"{where}: unknown method config {name!r}; available: {', '.join(known)}")
    data = load_yaml(path)
    for key in data:
        if key not in ("method", "params"):
            raise ConfigError(f"{path}: unknown key {key!r}; allowed keys: method, params")
    cls = METHODS.get(data.get("method", name))
    params = {**(data.get("params") or {}), **overrides}
    config = build_dataclass(cls.Config, params, f"{where} (method {name}, config {path.name})")
    return ResolvedMethod(cls, config, "default" if name == cls.name else name)


def _check_dataset_name(name: str, where: str) -> None:
    try:
        DATASETS.get(name.split("@")[0])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file, expanding it into runs (duplicates removed)."""
    path = Path(path)
    spec = build_dataclass(SuiteSpec, load_yaml(path), str(path))
    backbone = build_dataclass(BackboneSpec, spec.backbone, f"{path}: backbone")
    trainer = build_dataclass(TrainerSpec, spec.trainer, f"{path}: trainer")
    runs: dict[str, Run] = {}
    for index, raw in enumerate(spec.experiments):
        where = f"{path}: experiments[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping, found {raw!r}")
        experiment = build_dataclass(ExperimentSpec, raw, where)
        if experiment.protocol not in PROTOCOLS:
            raise ConfigError(f"{where}: unknown protocol {experiment.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        for name in [experiment.dataset, *experiment.targets]:
            _check_dataset_name(name, where)
        if experiment.protocol in ("cross_dataset", "domain_generalization") and not experiment.targets:
            raise ConfigError(f"{where}: protocol {experiment.protocol} needs a list of targets")
        for shots in experiment.shots:
            if shots < 1:
                raise ConfigError(f"{where}: shots must be at least 1, got {shots}")
        for entry in experiment.methods:
            method_spec = build_dataclass(MethodSpec, {"config": entry} if isinstance(entry, str) else entry,
                                          f"{where}: methods entry {entry!r}")
            resolved = load_method_config(method_spec.config, {**experiment.params, **method_spec.params}, where)
            if method_spec.variant:
                resolved.variant = method_spec.variant
            for shots in experiment.shots:
                for seed in experiment.seeds:
                    identity = RunIdentity(
                        method=resolved.cls.name, variant=resolved.variant, backbone=backbone.describe(),
                        dataset=experiment.dataset, protocol=experiment.protocol,
                        shots=shots if resolved.cls.trains else 0, seed=seed, targets=tuple(experiment.targets),
                    )
                    runs.setdefault(identity.run_id, Run(identity, resolved, experiment))
    return Suite(path, spec.name, backbone, trainer, spec.data_root, spec.output, list(runs.values()))
