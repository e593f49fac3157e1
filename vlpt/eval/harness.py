"""The harness: execute a suite's runs and write one record per run.

Data flows one way: suite -> protocol data -> method -> Trainer -> metrics -> record. The harness holds what
runs share (the backbone, loaded datasets and segmentation models, the feature cache, the output folders) and
hands the work to one module per concern:

* ``vlpt.eval.scheduler``: which runs are still to do (a record of another spec is an error), claims between
  processes, runs that wait for the run their prompt starts from;
* ``vlpt.eval.initializations``: the suite's meta-learned initialisations (GRAM), made once into
  ``inits/<name>.pt``, and the method config of a run that starts from one or from another run's prompt;
* ``vlpt.eval.runner``: one run, prepared by its protocol (``vlpt.protocols``), trained, evaluated and recorded;
* ``vlpt.eval.training``: Lightning training with resumable mid-training checkpoints;
* ``vlpt.eval.spec``: the run's resolved spec, written into its record, fingerprinted for resume and compared
  for staleness.

Runs whose record exists are skipped, so an interrupted suite resumes where it stopped; each record is
written atomically when its run ends, and each trained run's prompt is kept in ``checkpoints/<run_id>.pt``
(kilobytes) for runs that start from it (``init_from``).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from functools import cached_property
from pathlib import Path

import lightning as L
import torch

from vlpt.backbone import ClipBackbone
from vlpt.backbone.clip import resolve_quick_gelu
from vlpt.backbone.precision import autocast_for
from vlpt.data import DatasetSplits, load_dataset
from vlpt.data.datamodule import PER_EPOCH
from vlpt.data.feature_cache import FeatureCache, default_cache_folder
from vlpt.eval import initializations, runner, scheduler
from vlpt.eval.claims import ClaimFolder
from vlpt.eval.preflight import check_runs
from vlpt.eval.resume import CHECKPOINT_NAME
from vlpt.eval.spec import RunSpec
from vlpt.eval.suite import Run, Suite
from vlpt.eval.training import make_logger, make_trainer
from vlpt.methods.base import PromptMethod
from vlpt.paths import LEADERBOARD_DIR, default_data_root
from vlpt.results import RecordStore, RunIdentity, RunRecord
from vlpt.seg.data import SegSplits
from vlpt.seg.datasets import load_seg_dataset
from vlpt.seg.vlsm import SegmentationModel, VLSMSpec, build_vlsm


def _device(trainer_accelerator: str) -> torch.device:
    """The GPU of this process (its ``LOCAL_RANK`` under DDP) when one is wanted and present, else the CPU."""
    wants_gpu = trainer_accelerator in ("auto", "gpu", "cuda")
    if not (wants_gpu and torch.cuda.is_available()):
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


class Harness:
    """Executes runs against one backbone, loading each dataset once."""

    def __init__(self, suite: Suite, output: Path | None = None, data_root: Path | None = None,
                 progress: bool | None = None, shard: tuple[int, int] = (0, 1)):
        self.suite = suite
        self.shard = shard
        self.output = Path(output or suite.output or LEADERBOARD_DIR)
        self.data_root = Path(data_root or suite.data_root or default_data_root())
        self.store = RecordStore(self.output / "records")
        self.checkpoints = self.output / "checkpoints"
        self.inits = self.output / "inits"
        self.claims = ClaimFolder(self.output / "claims")
        #: run ids this process executed in its latest ``run_all``
        self.executed: list[str] = []
        #: record files already reported as unreadable
        self.reported: set[Path] = set()
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
            self._feature_cache = FeatureCache(folder, self.backbone, num_workers=self.suite.trainer.num_workers,
                                               precision=self.precision)
        return self._feature_cache

    def uses_feature_cache(self, method_cls: type[PromptMethod]) -> bool:
        """Whether runs of ``method_cls`` get stored image features instead of images."""
        return self.suite.feature_cache.enabled and method_cls.frozen_image_features

    def uses_view_features(self, method_cls: type[PromptMethod]) -> bool:
        """Whether test-time runs of ``method_cls`` adapt on stored features of their views (``vlpt.tta.view_features``)."""
        return self.suite.feature_cache.enabled and method_cls.frozen_view_features

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

    # ------------------------------------------------------------------ the run spec
    @cached_property
    def _activations(self) -> tuple[str | None, str]:
        """The activation the suite's backbone runs (None: its checkpoint does not say, refused when it loads),
        and the one a record made before records held it ran (its architecture's)."""
        spec = self.suite.backbone
        name = lambda quick: "quick_gelu" if quick else "gelu"  # noqa: E731
        resolved = resolve_quick_gelu(spec.model, spec.pretrained, spec.quick_gelu)
        return (None if resolved is None else name(resolved)), name(resolve_quick_gelu(spec.model, None))

    @property
    def unrecorded_activation(self) -> str:
        """The activation a record made before records held one ran: its architecture's."""
        return self._activations[1]

    def run_spec(self, run: Run, params: dict | None = None) -> RunSpec:
        """The run's resolved spec on this suite's backbone (``vlpt.eval.spec``); ``params``: the method config
        it executes, when known. The activation is the loaded backbone's once it is built."""
        activation = self._backbone.activation if self._backbone is not None else self._activations[0]
        # training on images draws a new crop every epoch
        views = self.suite.feature_cache.train_views if self.uses_feature_cache(run.method.cls) else PER_EPOCH
        return RunSpec.of(run, dataclasses.asdict(self.suite.backbone), activation, views, params)

    # ------------------------------------------------------------------ paths
    def init_path(self, name: str) -> Path:
        return self.inits / f"{name}.pt"

    def checkpoint_path(self, identity: RunIdentity) -> Path:
        return self.checkpoints / f"{identity.run_id}.pt"

    def resume_path(self, identity: RunIdentity) -> Path:
        """Where the run in training keeps its resumable mid-training checkpoint (``vlpt.eval.resume``)."""
        return self.output / ".lightning" / identity.run_id / CHECKPOINT_NAME

    # ------------------------------------------------------------------ the work
    def pending(self) -> list[Run]:
        """Runs of this harness's shard without a valid record (``vlpt.eval.scheduler.pending``)."""
        return scheduler.pending(self)

    def run_all(self) -> list[Path]:
        """Execute every run without a record, then rebuild the leaderboard (``vlpt.eval.scheduler.run_all``)."""
        return scheduler.run_all(self)

    def check_data(self, runs: list[Run]) -> None:
        """Check the data of ``runs`` before any long work (``vlpt.eval.preflight``); raises DatasetError."""
        if runs:
            checked = check_runs(self, runs)
            print(f"checked the data of {len(runs)} run(s): {checked} image files")

    def prepare_initializations(self, names: set[str] | None = None) -> None:
        """Meta-learn the suite's initialisations not on disk yet (``vlpt.eval.initializations``)."""
        initializations.prepare_initializations(self, names)

    def execute(self, run: Run) -> RunRecord | None:
        """Train and evaluate one run and return its record (``vlpt.eval.runner.execute``)."""
        return runner.execute(self, run)

    @staticmethod
    def training_shots(run: Run) -> int:
        """The run's shots, or 0 for a method that trains nothing (no images are sampled for it)."""
        return run.identity.shots if run.method.cls.trains else 0

    @property
    def precision(self) -> str:
        """The suite's precision; on a CPU, ``16-mixed`` runs in fp32 (CPU autocast is bf16's)."""
        precision = self.suite.trainer.precision
        return precision if self.device.type == "cuda" or precision == "bf16-mixed" else "32-true"

    def autocast(self):
        """The autocast training runs under (Lightning's for ``precision``), for evaluations and stored features
        to run in the same precision: a no-op in fp32."""
        return autocast_for(self.precision, self.device)

    def trainer(self, epochs: int, callbacks: list[L.Callback], run_id: str) -> L.Trainer:
        """The Lightning Trainer run ``run_id`` trains with (``vlpt.eval.training.make_trainer``), its curves in
        ``logs/RUN_ID`` of the output folder (``TrainerSpec.logger``)."""
        logger = make_logger(self.suite.trainer.logger, self.output / "logs", run_id, self.suite.name)
        return make_trainer(self.suite.trainer, epochs, self.precision, self.progress,
                            str(self.output / ".lightning"), callbacks, logger)
