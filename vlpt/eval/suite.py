"""Suites: YAML files naming methods x datasets x shots x seeds x protocol.

A suite is validated whole before any run starts: unknown keys, wrong types, unknown
methods, datasets or protocols, and invalid method parameters all fail up front with the
file and key named. Loading expands it into the list of runs, each with its identity.

A method entry's ``config`` is what ``vlpt.factory.create_method`` takes: a shipped config (``coop_m4``), a
registered method, or a ``.yaml`` file (relative paths are read from the suite file's folder; its runs'
variant is the file's name).

Every experiment names a protocol (``vlpt.protocols``, one module each), which checks what the
experiment and each of its methods ask of it. Besides the classification protocols, ``multitask`` learns one prompt on several ``datasets``
at once (MVLPT). A method entry's ``init_from`` is a checkpoint path (relative paths are read from
the suite file's folder), ``experiment:NAME``: the prompt learned by the run of the earlier
experiment NAME with the same method config, shots and seed (MVLPT's source-to-target transfer),
or ``init:NAME``: an initialisation the suite's ``initializations`` section meta-learns (GRAM),
whose gradient regulator then also shapes the run's training gradients. ``experiment:NAME/CONFIG``
names the run of another method config in that experiment (its entry without a ``variant``, else
its first entry of that config): a test-time run of ``tpt`` starts from
the prompt of ``coop_m4`` with ``init_from: experiment:source/coop_m4`` (TPT+CoOp).

``test_time`` experiments train nothing: their methods adapt per test image from the same start (TPT,
C-TPT, DiffTPT, Zero) or not at all (zero-shot), and ``shots`` only selects the source runs named by
``init_from``; ``online_test_time`` experiments stream each evaluation set in an order drawn from the
seed to methods whose state carries over the stream (TDA, DMN-ZS, DMN-TF), and their ``shots`` are the
labelled images per class DMN-TF reads (without training; the other methods read none). A run's
identity has the shots of the labelled data it used: 0 unless it trains or starts from a trained run.
``segmentation`` experiments (TuneVLSeg) tune prompts of a vision-language segmentation model, named by
``vlsm`` (default: the suite's backbone with a CLIPSeg-style decoder; see ``vlpt.seg.vlsm``), on a
segmentation dataset; ``shots`` is the number of training images K, and ``targets`` are cross-domain
test sets. Their run identity's backbone is the VLSM.
``eval_limit`` evaluates on a fixed subset of at most that many images of every evaluation set
(the same subset for every method and seed), for costly test-time methods.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from vlpt.backbone.clip import activation_suffix
from vlpt.config import build_dataclass, load_yaml
from vlpt.data.catalog import add_user_dataset, forget_user_datasets
from vlpt.data.transforms import TrainAugment
from vlpt.errors import ConfigError
from vlpt.eval.overrides import apply_overrides
from vlpt.eval.spec import settings_of
from vlpt.factory import CONFIG_SUFFIXES, ResolvedMethod, resolve_method
from vlpt.methods.base import MethodConfig
from vlpt.paths import CONFIG_DIR
from vlpt.protocols import get_protocol
from vlpt.seg.datasets import add_user_seg_dataset, forget_user_seg_datasets, is_seg_dataset
from vlpt.results import RunIdentity

EXPERIMENT_REFERENCE = "experiment:"
INIT_REFERENCE = "init:"
DEFAULT_SUITE = CONFIG_DIR / "suites" / "starter.yaml"


@dataclass
class BackboneSpec:
    model: str
    pretrained: str | None = None
    precision: str = "fp32"
    #: the MLP activation, needed only for a checkpoint file that does not state it (true: QuickGELU, as
    #: OpenAI's CLIP weights; false: GELU); elsewhere it follows the weights (``resolve_quick_gelu``)
    quick_gelu: bool | None = None

    def describe(self) -> str:
        suffix = activation_suffix(self.model, self.pretrained, self.quick_gelu)
        return f"{self.model}@{self.pretrained or 'random'}{suffix}"


@dataclass
class TrainerSpec:
    """Lightning Trainer settings shared by every run of a suite."""

    accelerator: str = "auto"
    #: devices per node; more than one trains each run with DDP (``batch_size`` stays the global batch)
    devices: int | str = 1
    num_nodes: int = 1
    #: Lightning strategy ("auto": DDP when several devices are used)
    strategy: str = "auto"
    #: mixed precision only (a "16-true" trainer would convert the frozen backbone shared by all runs);
    #: evaluation and stored features run under the same autocast; on a CPU, 16-mixed runs in fp32
    precision: Literal["32-true", "32", "16-mixed", "bf16-mixed"] = "32-true"
    #: torch.compile the backbone's transformer blocks (``compile_backend``: inductor, or eager to check)
    compile: bool = False
    compile_backend: str = "inductor"
    #: DDP: how long processes wait for each other (the first process evaluates while the others wait)
    ddp_timeout_min: int = 240
    #: data loader worker processes (0: load in the training process; needed for a bitwise exact resume)
    num_workers: int = 0
    #: write a resumable checkpoint of a run in training every N epochs (0: never); an interrupted run
    #: resumes from it (``vlpt.eval.resume``)
    checkpoint_every_n_epochs: int = 1
    #: Lightning's ``deterministic``: "warn" prefers deterministic algorithms and warns where a GPU
    #: operation has none, true refuses such operations, false leaves the choice to the libraries
    deterministic: bool | Literal["warn"] = "warn"
    #: training curves of every trained run, named by its run id: csv (``OUTPUT/logs/RUN_ID/metrics.csv``),
    #: tensorboard (``OUTPUT/logs/RUN_ID``, needs the tensorboard package), wandb (project: the suite's name,
    #: needs wandb and a login) or none
    logger: Literal["csv", "tensorboard", "wandb", "none"] = "csv"

    def __post_init__(self):
        package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(self.logger)
        if package and importlib.util.find_spec(package) is None:
            raise ValueError(f"logger {self.logger} needs the {package} package: pip install {package} "
                             f"(or logger: csv)")
        if self.checkpoint_every_n_epochs < 0:
            raise ValueError(f"checkpoint_every_n_epochs must be 0 (never) or more, "
                             f"got {self.checkpoint_every_n_epochs}")


@dataclass
class FeatureCacheSpec:
    """The frozen-feature disk cache (``vlpt.data.feature_cache``): on by default; ``enabled: false``
    (or ``feature_cache: false``) runs every method on images."""

    enabled: bool = True
    #: ``per_epoch``: a new stored crop of every training image each epoch, drawn for the run's seed and shared
    #: by the methods trained on the same images (the reference computation); a number N: N stored views per
    #: image, one drawn each epoch (faster, not the reference computation; 0: the centre view only)
    train_views: int | Literal["per_epoch"] = "per_epoch"
    #: default ``$VLPT_CACHE`` or ``~/.cache/vlpt/features``
    folder: str | None = None

    def __post_init__(self):
        if self.train_views != "per_epoch" and self.train_views < 0:
            raise ValueError(f"train_views must be per_epoch or 0 or more, got {self.train_views}")


@dataclass
class MethodSpec:
    config: str
    variant: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


@dataclass
class ExperimentSpec:
    protocol: str
    methods: list[Any]
    dataset: str | None = None
    datasets: list[str] = field(default_factory=list)
    name: str | None = None
    shots: list[int] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    targets: list[str] = field(default_factory=list)
    train_augment: TrainAugment = "crop_flip"
    sampling: Literal["mixed", "per_task"] = "mixed"
    #: multitask: score a sample against the union of all tasks' classes (MVLPT's code) or its own task's
    scoring: Literal["union", "own"] = "union"
    eval_limit: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: segmentation: the VLSM (``vlpt.seg.vlsm.VLSMSpec``; default: the suite's backbone with a decoder)
    vlsm: dict[str, Any] | None = None

    @property
    def task_datasets(self) -> list[str]:
        """The datasets a run trains on: several for multitask, else one."""
        return get_protocol(self.protocol).task_datasets(self)


@dataclass
class InitializationSpec:
    """A prompt initialisation meta-learned before the experiments run (GRAM, ``vlpt.meta.gram``)."""

    name: str
    method: str
    algorithm: Literal["gram"] = "gram"
    #: "starter" (captioned starter images) or {domain: caption folder | tar shard(s)}
    domains: str | dict[str, Any] = "starter"
    steps: int = 300
    params: dict[str, Any] = field(default_factory=dict)
    #: keyword arguments of ``meta_learn_initialization`` (inner_lr, outer_lr, batch_size, seed, ...)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteSpec:
    name: str
    backbone: dict[str, Any]
    experiments: list[dict[str, Any]]
    data_root: str | None = None
    output: str | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    initializations: list[dict[str, Any]] = field(default_factory=list)
    feature_cache: bool | dict[str, Any] = True
    #: the suite's own datasets by name: a catalog mapping (``loader``, ``folder`` relative to the suite's folder,
    #: ``templates``, ...; with ``layout``: segmentation) or the path of a catalog YAML file (``define_dataset``)
    datasets: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One run of the suite: identity plus everything needed to execute it.

    ``init_source`` is the run whose learned prompt initialises this one (``experiment:NAME``).
    """

    identity: RunIdentity
    method: ResolvedMethod
    experiment: ExperimentSpec
    init_source: RunIdentity | None = None
    init_name: str | None = None


@dataclass
class Suite:
    path: Path
    name: str
    backbone: BackboneSpec
    trainer: TrainerSpec
    data_root: str | None
    output: str | None
    runs: list[Run]
    initializations: list[InitializationSpec] = field(default_factory=list)
    feature_cache: FeatureCacheSpec = field(default_factory=FeatureCacheSpec)


def load_method_config(name: str, overrides: dict[str, Any], where: str,
                       relative_to: Path | None = None) -> ResolvedMethod:
    """A suite's method config (a name, or a ``.yaml`` path relative to ``relative_to``) plus overrides,
    resolved by ``vlpt.factory.resolve_method``."""
    return resolve_method(name, overrides, where, relative_to)


def _check_experiment(experiment: ExperimentSpec, where: str) -> None:
    """What every experiment must satisfy, then what its protocol asks (``Protocol.check_experiment``)."""
    try:
        protocol = get_protocol(experiment.protocol)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    for shots in experiment.shots:
        if shots < 1:
            raise ConfigError(f"{where}: shots must be at least 1, got {shots}")
    if experiment.eval_limit is not None and experiment.eval_limit < 1:
        raise ConfigError(f"{where}: eval_limit must be at least 1, got {experiment.eval_limit}")
    protocol.check_experiment(experiment, where)


def _init_source(method_spec: MethodSpec, named: dict[str, dict[tuple, RunIdentity]], shots: int, seed: int,
                 where: str) -> RunIdentity | None:
    """The run named by ``init_from: experiment:NAME[/CONFIG]`` for this shots and seed (CONFIG
    defaults to the entry's own method config)."""
    reference = method_spec.init_from
    if not reference or not reference.startswith(EXPERIMENT_REFERENCE):
        return None
    name, _, config = reference[len(EXPERIMENT_REFERENCE):].partition("/")
    config = config or method_spec.config
    if name not in named:
        raise ConfigError(f"{where}: init_from {reference!r} names no earlier experiment; "
                          f"earlier named experiments: {', '.join(named) or 'none'}")
    source = named[name].get((config, shots, seed))
    if source is None:
        raise ConfigError(f"{where}: experiment {name!r} has no run of method config {config!r} "
                          f"with shots {shots} and seed {seed} to initialise from")
    if source.shots == 0:
        raise ConfigError(f"{where}: init_from {reference!r}: method config {config!r} learns nothing from "
                          f"training images, so its runs leave no prompt to start from")
    return source


def shard_of(suite: Suite, count: int) -> dict[str, int]:
    """The shard (0..count-1) of every run id when a suite is split across ``count`` workers.

    A run goes with the run its prompt starts from (``init_from: experiment:...``, followed to the
    root) and runs sharing a meta-learned initialisation go together, so every shard is
    self-contained; the rest spread by run id. Shards write into one records folder and merge by
    construction (one file per run).
    """
    by_id = {r.identity.run_id: r for r in suite.runs}
    shards = {}
    for run in suite.runs:
        root = run
        while root.init_source is not None:
            root = by_id[root.init_source.run_id]
        key = f"init:{root.init_name}" if root.init_name else root.identity.run_id
        shards[run.identity.run_id] = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % count
    return shards


def _default_train_augment(protocol: Any) -> str | None:
    """The protocol's own default ``train_augment`` (segmentation: flip), None for an unknown protocol
    (refused with the experiment's other checks)."""
    try:
        return get_protocol(protocol).default_train_augment if isinstance(protocol, str) else None
    except ConfigError:
        return None


def define_dataset(name: str, values: Any, where: str, base: Path) -> None:
    """Define a suite's own dataset: a catalog mapping (``folder`` relative to ``base``, the suite's folder) or
    the path of a catalog YAML file relative to ``base`` (its ``folder`` relative to that file's folder); one
    with a ``layout`` is a segmentation dataset (``vlpt/configs/datasets/segmentation/``'s keys)."""
    if isinstance(values, str):
        file = (base / Path(values).expanduser()).resolve()
        where, values, base = f"{where} ({file})", load_yaml(file), file.parent
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: a dataset is a catalog mapping (loader, folder, ...) or a catalog file path")
    if "layout" in values:
        add_user_seg_dataset(name, values, where, base)
    elif is_seg_dataset(name):
        raise ConfigError(f"{where}: dataset name {name!r} is a segmentation dataset's (vlpt's or defined earlier "
                          f"in this process); give yours another name")
    else:
        add_user_dataset(name, values, where, base)


def forget_defined_datasets() -> None:
    """Drop every dataset, classification or segmentation, suites defined in this process (a notebook that
    redefines one, tests)."""
    forget_user_datasets()
    forget_user_seg_datasets()


def _check_levels(raw: Any, where: str) -> None:
    """Name the level a misplaced key belongs to: an experiment's key at the top of the suite, a trainer or
    backbone setting at the top, a method setting beside an experiment's keys (ConfigError)."""
    if not isinstance(raw, dict):
        return
    suite_keys = _field_names(SuiteSpec)
    homes = [(_field_names(ExperimentSpec), "an experiment's key: write it in each entry of `experiments`"),
             (_field_names(TrainerSpec), "a trainer setting: write it under `trainer:`"),
             (_field_names(BackboneSpec), "a backbone setting: write it under `backbone:`")]
    for key in raw:
        found = [home for names, home in homes if key not in suite_keys and key in names]
        if found:
            raise ConfigError(f"{where}: `{key}` is {' or '.join(found)}")
    method_keys = _field_names(MethodConfig)
    for index, experiment in enumerate(raw.get("experiments") or []):
        if not isinstance(experiment, dict):
            continue
        for key in experiment:
            if key in _field_names(ExperimentSpec) or key not in method_keys:
                continue
            if key in ("init_from", "regulator_from"):
                raise ConfigError(f"{where}: experiments[{index}]: `{key}` belongs to a methods entry, e.g. "
                                  f"{{config: coop, {key}: ...}}")
            raise ConfigError(f"{where}: experiments[{index}]: `{key}` is a method setting: write it under the "
                              f"experiment's `params:` (every method) or a methods entry's `params:`")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> Suite:
    """Read and validate a suite file, with ``--set`` style ``overrides`` applied (``vlpt.eval.overrides``),
    expanding it into runs (duplicates removed)."""
    path = Path(path)
    raw = apply_overrides(load_yaml(path), list(overrides), str(path))
    if isinstance(raw, dict) and "view_store" in raw:
        raise ConfigError(f"{path}: `view_store` is a parameter of difftpt now; write it in each difftpt entry's "
                          f"`params` ({{config: difftpt, params: {{view_store: {raw['view_store']}}}}})")
    _check_levels(raw, str(path))
    spec = build_dataclass(SuiteSpec, raw, str(path))
    for name, values in spec.datasets.items():
        define_dataset(str(name), values, f"{path}: datasets: {name}", path.parent.resolve())
    backbone = build_dataclass(BackboneSpec, spec.backbone, f"{path}: backbone")
    trainer = build_dataclass(TrainerSpec, spec.trainer, f"{path}: trainer")
    cache = spec.feature_cache if isinstance(spec.feature_cache, dict) else {"enabled": spec.feature_cache}
    feature_cache = build_dataclass(FeatureCacheSpec, cache, f"{path}: feature_cache")
    initializations = []
    for index, raw in enumerate(spec.initializations):
        init = build_dataclass(InitializationSpec, raw, f"{path}: initializations[{index}]")
        load_method_config(init.method, init.params, f"{path}: initializations[{index}]", path.parent)
        if init.method.endswith(CONFIG_SUFFIXES):  # a config file: found from the suite's folder, wherever GRAM runs
            init.method = str((path.parent / Path(init.method).expanduser()).resolve())
        if init.name in {i.name for i in initializations}:
            raise ConfigError(f"{path}: initializations[{index}]: name {init.name!r} is used twice")
        initializations.append(init)
    runs: dict[str, Run] = {}
    named: dict[str, dict[tuple, RunIdentity]] = {}
    for index, raw in enumerate(spec.experiments):
        where = f"{path}: experiments[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping, found {raw!r}")
        default_augment = _default_train_augment(raw.get("protocol"))
        if default_augment is not None and "train_augment" not in raw:
            raw = {**raw, "train_augment": default_augment}
        experiment = build_dataclass(ExperimentSpec, raw, where)
        _check_experiment(experiment, where)
        protocol = get_protocol(experiment.protocol)
        model = protocol.model_name(experiment, backbone.describe(), where)
        produced: dict[tuple, RunIdentity] = {}
        for entry in experiment.methods:
            if not isinstance(entry, (str, dict)):
                raise ConfigError(f"{where}: methods entry {entry!r} must be a method config name or a mapping "
                                  f"with `config`")
            method_spec = build_dataclass(MethodSpec, {"config": entry} if isinstance(entry, str) else entry,
                                          f"{where}: methods entry {entry!r}")
            reference = method_spec.init_from or ""
            init_name = reference[len(INIT_REFERENCE):] if reference.startswith(INIT_REFERENCE) else None
            if init_name is not None and init_name not in {i.name for i in initializations}:
                raise ConfigError(f"{where}: init_from {reference!r} names no entry of `initializations`; "
                                  f"defined: {', '.join(i.name for i in initializations) or 'none'}")
            overrides = {**experiment.params, **method_spec.params}
            if reference and init_name is None and not reference.startswith(EXPERIMENT_REFERENCE):
                if "\0" in reference:
                    raise ConfigError(f"{where}: init_from {reference!r} is not a file path (it holds a NUL character)")
                checkpoint = (path.parent / reference).resolve()
                if not checkpoint.is_file():
                    raise ConfigError(f"{where}: init_from checkpoint {reference} does not exist ({checkpoint})")
                overrides["init_from"] = str(checkpoint)
            resolved = load_method_config(method_spec.config, overrides, where, path.parent)
            protocol.check_method(resolved, experiment, where, method_spec.config)
            if method_spec.variant:
                resolved.variant = method_spec.variant
            for shots in experiment.shots:
                for seed in experiment.seeds:
                    source = _init_source(method_spec, named, shots, seed, where)
                    identity = RunIdentity(
                        method=resolved.cls.name, variant=resolved.variant, backbone=model,
                        dataset="+".join(experiment.task_datasets), protocol=experiment.protocol,
                        shots=shots if resolved.cls.trains or source else 0, seed=seed,
                        targets=tuple(experiment.targets),
                    )
                    run = Run(identity, resolved, experiment, source, init_name)
                    earlier = runs.setdefault(identity.run_id, run)
                    if earlier is not run and settings_of(earlier) != settings_of(run):
                        raise ConfigError(
                            f"{where}: methods entry {entry!r} is the same run as an earlier entry ({identity.method}, "
                            f"variant {identity.variant!r}, shots {shots}, seed {seed}) but with other settings; "
                            f"give it its own `variant:`"
                        )
                    if method_spec.variant is None:  # the config's entry without a variant names the run
                        produced[(method_spec.config, shots, seed)] = identity
                    else:
                        produced.setdefault((method_spec.config, shots, seed), identity)
        if experiment.name:
            if experiment.name in named:
                raise ConfigError(f"{where}: experiment name {experiment.name!r} is used twice")
            named[experiment.name] = produced
    return Suite(path, spec.name, backbone, trainer, spec.data_root, spec.output, list(runs.values()),
                 initializations, feature_cache)
