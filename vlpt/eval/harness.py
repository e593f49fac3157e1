"""The harness: execute a suite's runs and write one record per run.

Data flows one way: suite -> protocol data -> method -> Trainer -> metrics -> record. What differs between
protocols (the run's data, model, datamodule, evaluations and what the record keeps of them) is asked of
the run's protocol (``vlpt.protocols``); the harness never branches on a protocol's name.
Runs whose record exists are skipped, so an interrupted suite resumes where it stopped;
each record is written atomically when its run ends, and each trained run's prompt is kept in
``checkpoints/<run_id>.pt`` (kilobytes) for runs that start from it (``init_from``). The suite's
meta-learned initialisations (GRAM) are made first, once, into ``inits/<name>.pt``.

Several processes may run one suite into one output folder: each run and each initialisation is
claimed (``vlpt.eval.claims``) by the process that does it, and a record file that cannot be read is
reported, set aside as ``<name>.json.corrupt`` and its run done again.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import sys
import time
import warnings
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
import torch
from tqdm import tqdm

from vlpt.backbone import ClipBackbone
from vlpt.backbone.clip import resolve_quick_gelu
from vlpt.data import DatasetSplits, load_dataset
from vlpt.data.datamodule import PER_EPOCH, CachedFeatureDataModule, describe_train_views
from vlpt.data.feature_cache import FeatureCache, default_cache_folder
from vlpt.errors import CheckpointError, ConfigError
from vlpt.eval.claims import ClaimFolder
from vlpt.eval.determinism import determinism
from vlpt.eval.preflight import check_runs
from vlpt.eval.rebuild import rebuild_leaderboard
from vlpt.eval.resume import (CHECKPOINT_NAME, RunCheckpoint, loader_generators, remove_checkpoint,
                              resumable_checkpoint)
from vlpt.tta.store import DEFAULT_FOLDER as DEFAULT_VIEW_FOLDER
from vlpt.eval.suite import Run, Suite, TrainerSpec, run_settings, settings_of, shard_of
from vlpt.meta.gram import attach_regulator, load_regulator, regulator_path_for
from vlpt.methods.base import PromptMethod
from vlpt.multitask import MultitaskPromptModule, Task
from vlpt.paths import LEADERBOARD_DIR, PROJECT_ROOT, default_data_root
from vlpt.results import RecordStore, RecordWarning, RunIdentity, RunRecord, atomic_write_text
from vlpt.results.record import git_state, library_versions
from vlpt.results.store import remove_stale_temp_files
from vlpt.seg.data import SegSplits
from vlpt.seg.datasets import load_seg_dataset
from vlpt.protocols import get_protocol
from vlpt.seg.vlsm import SegmentationModel, VLSMSpec, build_vlsm


def _device(trainer_accelerator: str) -> torch.device:
    """The GPU of this process (its ``LOCAL_RANK`` under DDP) when one is wanted and present, else the CPU."""
    wants_gpu = trainer_accelerator in ("auto", "gpu", "cuda")
    if not (wants_gpu and torch.cuda.is_available()):
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def is_global_zero() -> bool:
    """Whether this is the first (or only) process of a DDP run: the one that evaluates and writes."""
    return rank_zero_only.rank == 0


def trains_in_one_process(spec: TrainerSpec) -> bool:
    """Whether each run of a suite with these trainer settings trains in this process alone (no DDP)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or spec.num_nodes > 1:
        return False
    text = str(spec.devices).strip()
    if "," in text:  # Lightning's device indices, "0," or "0,1"
        return len([index for index in text.split(",") if index.strip()]) == 1
    if text == "1":
        return True
    if text in ("auto", "-1"):
        return spec.accelerator not in ("auto", "gpu", "cuda") or torch.cuda.device_count() <= 1
    return False


def _say(message: str) -> None:
    """A line on stdout, above the suite's progress bar when one is shown, at once."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def _peak_memory_mb(device: torch.device) -> float:
    """Peak resident memory of this process (and of the GPU when one is used), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if device.type == "cuda":
        return round(rss + torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(rss, 1)


def _checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint file a run starts from ("is missing", "cannot be read (...)"), or None."""
    if not path.is_file():
        return "is missing"
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or overwritten: any reader failure
        return f"cannot be read ({type(exc).__name__}: {exc})"
    return None


class Harness:
    """Executes runs against one backbone, loading each dataset once."""

    def __init__(self, suite: Suite, output: Path | None = None, data_root: Path | None = None,
                 progress: bool | None = None, shard: tuple[int, int] = (0, 1)):
        self.suite = suite
        self.shard = shard
        self.output = Path(output or suite.output or LEADERBOARD_DIR)
        self.data_root = Path(data_root or suite.data_root or default_data_root())
        self.view_store = Path(suite.view_store) if suite.view_store else self.data_root / DEFAULT_VIEW_FOLDER
        self.store = RecordStore(self.output / "records")
        self.checkpoints = self.output / "checkpoints"
        self.inits = self.output / "inits"
        self.claims = ClaimFolder(self.output / "claims")
        #: run ids this process executed in its latest ``run_all``
        self.executed: list[str] = []
        self._reported: set[Path] = set()
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.device = _device(suite.trainer.accelerator)
        self._backbone: ClipBackbone | None = None
        self._datasets: dict[str, DatasetSplits] = {}
        self._seg_datasets: dict[str, SegSplits] = {}
        self._vlsms: dict[str, SegmentationModel] = {}
        self._feature_cache: FeatureCache | None = None

    @property
    def backbone(self) -> ClipBackbone:
        if self._backbone is None:
            spec = self.suite.backbone
            self._backbone = ClipBackbone(spec.model, spec.pretrained, spec.precision, spec.quick_gelu).to(self.device)
            if self.suite.trainer.compile:
                self._backbone.compile_blocks(self.suite.trainer.compile_backend)
        return self._backbone

    @property
    def feature_cache(self) -> FeatureCache:
        """The disk cache of the backbone's frozen image features (see ``vlpt.data.feature_cache``)."""
        if self._feature_cache is None:
            folder = self.suite.feature_cache.folder or default_cache_folder()
            self._feature_cache = FeatureCache(folder, self.backbone, num_workers=self.suite.trainer.num_workers)
        return self._feature_cache

    def uses_feature_cache(self, method_cls: type[PromptMethod]) -> bool:
        """Whether runs of ``method_cls`` get stored image features instead of images."""
        return self.suite.feature_cache.enabled and method_cls.frozen_image_features

    def dataset(self, name: str) -> DatasetSplits:
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name, self.data_root)
        return self._datasets[name]

    def seg_dataset(self, name: str) -> SegSplits:
        if name not in self._seg_datasets:
            self._seg_datasets[name] = load_seg_dataset(name, self.data_root)
        return self._seg_datasets[name]

    def vlsm(self, experiment) -> SegmentationModel:
        """The experiment's segmentation model (loaded once; ``clip_decoder`` wraps the suite's backbone)."""
        spec = VLSMSpec(**(experiment.vlsm or {}))
        key = spec.describe(self.suite.backbone.describe())
        if key not in self._vlsms:
            self._vlsms[key] = build_vlsm(spec, self.backbone if spec.kind == "clip_decoder" else None)
        return self._vlsms[key]

    def pending(self) -> list[Run]:
        """Runs (of this harness's shard) without a valid record; a record file that cannot be read is
        reported (RecordWarning) and its run counted as to do; a record made with other settings than the
        suite's is an error."""
        index, count = self.shard
        shards = shard_of(self.suite, count)
        return [run for run in self.suite.runs
                if shards[run.identity.run_id] == index and self._stored(run) is None]

    def _stored(self, run: Run, set_aside: bool = False) -> RunRecord | None:
        """The run's record; None when there is none or it cannot be read (then reported once, and with
        ``set_aside`` renamed to ``<name>.json.corrupt``). A record of other settings raises ConfigError."""
        path = self.store.path_for(run.identity)
        try:
            record = self.store.get(run.identity)
        except ConfigError as exc:
            if set_aside:
                aside = self.store.set_aside(path)
                warnings.warn(f"{exc}; kept it as {aside} and running {run.identity.run_id} again", RecordWarning,
                              stacklevel=2)
            elif path not in self._reported:
                warnings.warn(f"{exc}; its run will run again", RecordWarning, stacklevel=2)
            self._reported.add(path)
            return None
        if record is None:
            return None
        data = record.config.get("data", {})
        stored = run_settings(record.config["method"]["params"], data.get("train_augment"), data.get("sampling"),
                              None, data.get("eval_limit"), data.get("scoring"),
                              type(run.method.config).result_neutral)
        current = settings_of(run)
        computed = self._computation_changes(record, run)
        if computed:
            raise ConfigError(
                f"record {path} ({run.identity.method}, variant {run.identity.variant!r}, {run.identity.dataset}, "
                f"seed {run.identity.seed}) was computed otherwise than the suite asks ({'; '.join(computed)}); "
                f"delete it to run again"
            )
        if {**stored, "init": None} != {**current, "init": None}:
            changed = sorted(k for k in set(stored["params"]) | set(current["params"])
                             if stored["params"].get(k) != current["params"].get(k))
            raise ConfigError(
                f"record {path} ({run.identity.method}, variant "
                f"{run.identity.variant!r}, {run.identity.dataset}, seed {run.identity.seed}) was made with other "
                f"settings than the suite's ({', '.join(changed) or 'train_augment/sampling/scoring'}); delete it to "
                f"run again, or give the changed entry its own `variant:`"
            )
        return record

    @cached_property
    def _activations(self) -> tuple[str | None, str]:
        """The activation the suite's backbone runs (None: its checkpoint does not say, refused when it loads),
        and the one a record made before records held it ran (its architecture's)."""
        spec = self.suite.backbone
        name = lambda quick: "quick_gelu" if quick else "gelu"  # noqa: E731
        resolved = resolve_quick_gelu(spec.model, spec.pretrained, spec.quick_gelu)
        return (None if resolved is None else name(resolved)), name(resolve_quick_gelu(spec.model, None))

    def _computation_changes(self, record, run: Run) -> list[str]:
        """Suite-level settings that change what a run computes and in which ``record`` differs from the suite:
        the backbone's activation (a record without one ran its architecture's) and the stored training views
        (the feature cache's ``train_views``; a record that drew none, or one deterministic view, agrees)."""
        expected, unrecorded = self._activations
        ran = record.config.get("backbone", {}).get("activation") or unrecorded
        changes = [f"activation {ran}, not {expected}"] if expected is not None and ran != expected else []
        views = (record.config.get("feature_cache") or {}).get("train_views")
        # training on images draws a new crop every epoch
        wanted = self.suite.feature_cache.train_views if self.uses_feature_cache(run.method.cls) else PER_EPOCH
        if views not in (None, 1) and views != wanted:
            changes.append(f"train_views {views}, not {wanted}")
        return changes

    def check_data(self, runs: list[Run]) -> None:
        """Check the data of ``runs`` before any long work (``vlpt.eval.preflight``); raises DatasetError."""
        if runs:
            checked = check_runs(self, runs)
            print(f"checked the data of {len(runs)} run(s): {checked} image files")

    def init_path(self, name: str) -> Path:
        return self.inits / f"{name}.pt"

    def prepare_initializations(self, names: set[str] | None = None) -> None:
        """Meta-learn each initialisation of the suite (of ``names`` only, when given: those a shard's
        runs start from) that is not on disk yet (GRAM). Each is claimed while it is made; those another
        process is making are waited for afterwards (and made here if that process ends without them)."""
        wanted = [init for init in self.suite.initializations if names is None or init.name in names]
        busy = [init for init in wanted if not self._prepare_initialization(init, wait=False)]
        for init in busy:
            print(f"waiting for initialisation {init.name!r}, which another process is making "
                  f"({self.claims.holder(f'init-{init.name}')})", flush=True)
            self._prepare_initialization(init, wait=True)

    def _prepare_initialization(self, init, wait: bool) -> bool:
        """Make one initialisation unless it is on disk; False when another process holds its claim."""
        from vlpt.meta.gram import run_gram

        claim = self.claims.claim(f"init-{init.name}") if wait else self.claims.try_claim(f"init-{init.name}")
        if claim is None:
            return False
        with claim:
            path, spec_path = self.init_path(init.name), self.init_path(init.name).with_suffix(".spec.json")
            spec = json.dumps({**dataclasses.asdict(init), "backbone": self.suite.backbone.describe(),
                               "activation": self.backbone.activation}, sort_keys=True)
            if path.is_file() and spec_path.is_file():
                if spec_path.read_text() != spec:
                    raise ConfigError(f"initialisation {init.name!r} in {path} was made with other settings than the "
                                      f"suite's ({spec_path}); delete both files to make it again")
                return True
            print(f"meta-learning initialisation {init.name!r} ({init.algorithm}, {init.method}, {init.steps} steps)")
            run_gram(init.method, self.backbone, path, init.domains, init.steps,
                     params=init.params, data_root=self.data_root, device=str(self.device), **init.options)
            atomic_write_text(spec_path, spec)
        return True

    def run_all(self) -> list[Path]:
        """Execute every run without a record, then rebuild the leaderboard; returns its files.

        Each executed run prints ``running <run_id> (...)``. A run another process is executing (it holds
        the run's claim) is left to it and waited for at the end, and run here if that process ends
        without its record; so when this returns, every run of the shard has a record. Under DDP
        (several processes per run) runs are not claimed: one DDP job per output folder.
        """
        self.executed = []
        if is_global_zero():
            self._remove_stale_temp_files()
        todo = self.pending()
        self.check_data(todo)
        needed = {run.init_name for run in todo if run.init_name}
        if needed:
            self.prepare_initializations(needed)
        claiming = trains_in_one_process(self.suite.trainer)
        bar = tqdm(todo, desc=f"suite {self.suite.name}", unit="run",
                   disable=None if self.progress else True)
        left = []
        for run in bar:
            bar.set_postfix_str(f"{run.identity.method}/{run.identity.dataset}/seed{run.identity.seed}")
            if claiming:
                if not self._run_claimed(run, wait=False):
                    left.append(run)
            else:
                if is_global_zero():
                    self._stored(run, set_aside=True)  # a corrupt record file in the way is kept
                self._run(run)
        if left:
            print(f"{len(left)} run(s) were left to other processes; waiting for them to finish", flush=True)
            for run in left:
                self._run_claimed(run, wait=True)
        if not is_global_zero():
            return []
        return rebuild_leaderboard(self.output)

    def _run_claimed(self, run: Run, wait: bool) -> bool:
        """Execute the run under its claim unless it has a record by then; False when another process
        holds the claim (and ``wait`` is False)."""
        run_id = run.identity.run_id
        claim = self.claims.claim(run_id) if wait else self.claims.try_claim(run_id)
        if claim is None:
            _say(f"run {run_id} is being run by another process ({self.claims.holder(run_id)})")
            return False
        with claim:
            if self._stored(run, set_aside=True) is None:
                self._wait_for_source(run)
                self._run(run)
        return True

    def _wait_for_source(self, run: Run) -> None:
        """Wait until the run whose prompt this one starts from has its record: another process may be
        running it (wait for its claim); run it here if nobody has."""
        source = run.init_source
        if source is None:
            return
        source_run = next(r for r in self.suite.runs if r.identity.run_id == source.run_id)
        if self._stored(source_run) is not None:
            return
        claim = self.claims.try_claim(source.run_id)
        if claim is None:
            _say(f"run {run.identity.run_id} starts from run {source.run_id}, which another process is running "
                 f"({self.claims.holder(source.run_id)}); waiting for it")
            claim = self.claims.claim(source.run_id)
        with claim:
            if self._stored(source_run, set_aside=True) is None:
                self._wait_for_source(source_run)
                self._run(source_run)

    def _run(self, run: Run) -> None:
        """Execute one run and write its record (the first DDP process prints and writes)."""
        if is_global_zero():
            _say(f"running {run.identity.run_id} ({run.identity.describe()})")
        record = self.execute(run)
        if record is not None:
            self.store.write(record)
            remove_checkpoint(self.resume_path(run.identity))  # a failure before this resumes the training
        self.executed.append(run.identity.run_id)

    def _remove_stale_temp_files(self) -> None:
        """Remove temporary files that killed writers left in the output folders and the feature cache, and the
        mid-training checkpoints of runs whose record exists."""
        folders = [self.output, self.store.directory, self.checkpoints, self.inits]
        if self.suite.feature_cache.enabled:
            folders.append(Path(self.suite.feature_cache.folder or default_cache_folder()))
        for folder in folders:
            removed = remove_stale_temp_files(folder)
            if removed:
                print(f"removed {len(removed)} temporary file(s) left by interrupted writers in {folder}")
        for checkpoint in sorted(self.output.glob(f".lightning/*/{CHECKPOINT_NAME}")):
            if self.store.directory.joinpath(f"{checkpoint.parent.name}.json").is_file():
                remove_checkpoint(checkpoint)  # its run's record was written just before a kill

    def checkpoint_path(self, identity: RunIdentity) -> Path:
        return self.checkpoints / f"{identity.run_id}.pt"

    def _config(self, run: Run):
        """The run's method config, with ``init_from`` pointing at its source run's checkpoint (or its
        GRAM initialisation); a missing or unreadable one raises CheckpointError saying what to delete."""
        if run.init_name is not None:  # GRAM: the initialisation and its gradient regulator
            path = self.init_path(run.init_name)
            files = [path, regulator_path_for(path), path.with_suffix(".spec.json")]
            for file in files[:2]:
                problem = _checkpoint_problem(file)
                if problem:
                    raise CheckpointError(
                        f"run {run.identity.run_id} starts from initialisation {run.init_name!r}, but {file} "
                        f"{problem}; delete {', '.join(str(f) for f in files)} to make it again")
            return dataclasses.replace(run.method.config, init_from=str(path),
                                       regulator_from=str(regulator_path_for(path)))
        if run.init_source is None:
            return run.method.config
        path = self.checkpoint_path(run.init_source)
        problem = _checkpoint_problem(path)
        if problem:
            delete = f"delete {self.store.path_for(run.init_source)}" if problem == "is missing" else \
                f"delete it and {self.store.path_for(run.init_source)}"
            raise CheckpointError(
                f"run {run.identity.run_id} starts from the prompt of run {run.init_source.run_id} "
                f"({run.init_source.method} on {run.init_source.dataset}, seed {run.init_source.seed}), but {path} "
                f"{problem}; {delete} to run the source again"
            )
        return dataclasses.replace(run.method.config, init_from=str(path))

    @staticmethod
    def training_shots(run: Run) -> int:
        """The run's shots, or 0 for a method that trains nothing (no images are sampled for it)."""
        return run.identity.shots if run.method.cls.trains else 0

    def execute(self, run: Run) -> RunRecord | None:
        """Train and evaluate one run, keep its prompt checkpoint, and return its record (None in DDP
        processes other than the first: they only train)."""
        identity, experiment, resolved = run.identity, run.experiment, run.method
        if not resolved.cls.trains and not is_global_zero():
            return None  # nothing to train: the first DDP process evaluates it alone
        started = time.perf_counter()
        protocol = get_protocol(identity.protocol)
        self.backbone  # built (consuming random draws) before the run's seed is set
        model = protocol.model(self, experiment)
        L.seed_everything(identity.seed, workers=True, verbose=False)
        config = self._config(run)
        data = protocol.build(self, run, self.training_shots(run))
        prepared = protocol.prepare(self, run, config, data, model)
        method, datamodule, tasks = prepared.method, prepared.datamodule, prepared.tasks
        if config.regulator_from:  # GRAM: its regulator shapes the run's training gradients
            attach_regulator(method, load_regulator(config.regulator_from))
        epochs = config.epochs_for(identity.shots, identity.dataset) if resolved.cls.trains else 0
        method.to(self.device)
        world_size, resumed_at = self._fit(run, method, datamodule, epochs, tasks)
        if resolved.cls.trains and is_global_zero():
            method.save_checkpoint(self.checkpoint_path(identity))
        if world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()  # a later run of any process may start from this checkpoint
        if not is_global_zero():
            return None
        trained = time.perf_counter()
        method.to(self.device).eval()
        metrics, view_augments = {}, {}
        for evaluation in prepared.evaluations:  # loaders made here: on the first DDP process only
            metrics[evaluation.name], views = evaluation.evaluate(method)
            if views:
                view_augments[evaluation.name] = views
        finished = time.perf_counter()
        trainer = self.suite.trainer
        resolved_config = {
            "suite": self.suite.name,
            "method": {"name": resolved.cls.name, "variant": resolved.variant, "params": dataclasses.asdict(config)},
            "init_from_run": run.init_source.run_id if run.init_source else None,
            "epochs": epochs,
            "backbone": {**dataclasses.asdict(self.suite.backbone), "activation": self.backbone.activation},
            "trainer": {**dataclasses.asdict(trainer), "precision": self.precision, "world_size": world_size,
                        **({"resumed_at_epoch": resumed_at} if resumed_at is not None else {})},
            "determinism": determinism(self.device.type, self.precision, trainer.deterministic, trainer.compile,
                                       trainer.compile_backend, world_size, trainer.num_workers,
                                       resumed_at is not None),
            **prepared.record_config,
            **({"test_time": {"views": view_augments}} if view_augments else {}),
            **({"feature_cache": {"train_views": datamodule.train_views if datamodule.views_drawn else None}}
               if isinstance(datamodule, CachedFeatureDataModule) else {}),
            "data": {"train_augment": experiment.train_augment, "n_train": prepared.n_train, "n_val": prepared.n_val,
                     "classes": prepared.classes, **protocol.settings(experiment),
                     **({"eval_limit": experiment.eval_limit} if experiment.eval_limit else {})},
            "device": str(self.device),
        }
        timings = {"train_s": round(trained - started, 3), "eval_s": round(finished - trained, 3),
                   "wall_s": round(finished - started, 3)}
        return RunRecord.capture(identity, metrics, resolved_config, timings,
                                 peak_memory_mb=_peak_memory_mb(self.device), repo=PROJECT_ROOT)

    @property
    def precision(self) -> str:
        """The suite's precision on a GPU; fp32 on a CPU."""
        return self.suite.trainer.precision if self.device.type == "cuda" else "32-true"

    def resume_path(self, identity: RunIdentity) -> Path:
        """Where the run in training keeps its resumable mid-training checkpoint (``vlpt.eval.resume``)."""
        return self.output / ".lightning" / identity.run_id / CHECKPOINT_NAME

    def _fit(self, run: Run, method: PromptMethod, datamodule, epochs: int,
             tasks: list[Task] | None) -> tuple[int, int | None]:
        """Gradient training through Lightning, unless the method fits in closed form or not at all.
        Returns the number of processes that trained (DDP's world size; 1 without a trainer) and the epoch
        training resumed at from a mid-training checkpoint (None: it started from the beginning)."""
        if tasks is None:
            if method.fit_without_gradients(datamodule):
                return 1, None
            method.max_epochs = epochs
            module = method
        elif method.trains:
            module = MultitaskPromptModule(method, tasks, max_epochs=epochs, scoring=run.experiment.scoring)
        else:
            return 1, None
        loader = datamodule.train_dataloader()
        every = self.suite.trainer.checkpoint_every_n_epochs
        checkpoint = RunCheckpoint(self.resume_path(run.identity), every, loader_generators(loader)) if every else None
        trainer = self._trainer(epochs, [checkpoint] if checkpoint else [])
        resumed_at = None
        if checkpoint is not None:
            checkpoint.fingerprint = {**self._fingerprint(run, module, datamodule, epochs, trainer.world_size),
                                      "loader_generators": len(checkpoint.generators)}
            resumed_at = resumable_checkpoint(checkpoint.path, checkpoint.fingerprint, move=is_global_zero())
            if resumed_at is not None:
                tqdm.write(f"resuming run {run.identity.run_id} from epoch {resumed_at} of {epochs} "
                           f"({checkpoint.path})", file=sys.stderr)
        trainer.fit(module, train_dataloaders=loader, ckpt_path=checkpoint.path if resumed_at is not None else None,
                    weights_only=True)
        return trainer.world_size, resumed_at  # the checkpoint stays until the run's record is written

    def _fingerprint(self, run: Run, module: L.LightningModule, datamodule, epochs: int, world_size: int) -> dict:
        """What a mid-training checkpoint must share with the run to resume it: the run, its settings, and
        what the checkpointed state depends on (backbone, device, precision, processes, loader workers, inputs,
        prompt shapes, library versions and git commit: a resume never mixes code or settings)."""
        cached = isinstance(datamodule, CachedFeatureDataModule)
        return {"run_id": run.identity.run_id, "settings": settings_of(run), "backbone": self.suite.backbone.describe(),
                "epochs": epochs, "device": self.device.type, "precision": self.precision, "world_size": world_size,
                "num_workers": self.suite.trainer.num_workers, "versions": library_versions(),
                "git": git_state(PROJECT_ROOT),
                "inputs": describe_train_views(datamodule.train_views) if cached else "images",
                "prompt": {name: list(value.shape) for name, value in module.state_dict().items()}}

    def _trainer(self, epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
        spec = self.suite.trainer
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen backbone, by design
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # inside Lightning itself
        strategy = spec.strategy
        if strategy == "ddp":
            strategy = DDPStrategy(timeout=timedelta(minutes=spec.ddp_timeout_min))
        return L.Trainer(
            max_epochs=epochs, accelerator=spec.accelerator, devices=spec.devices, num_nodes=spec.num_nodes,
            strategy=strategy, precision=self.precision, use_distributed_sampler=False,  # GlobalBatchSampler
            logger=False, enable_checkpointing=False, callbacks=callbacks, enable_model_summary=False,
            enable_progress_bar=self.progress, num_sanity_val_steps=0, limit_val_batches=0,
            deterministic=spec.deterministic, default_root_dir=str(self.output / ".lightning"),
        )
