"""Training a prepared run: Lightning's loop (or a closed-form fit, or nothing), with resumable mid-training
checkpoints whose fingerprint holds the run's spec and everything its checkpointed state depends on.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
import torch
from tqdm import tqdm

from vlpt.data.datamodule import CachedFeatureDataModule, describe_train_views
from vlpt.eval.resume import RunCheckpoint, loader_generators, resumable_checkpoint
from vlpt.multitask import MultitaskPromptModule
from vlpt.paths import PROJECT_ROOT
from vlpt.results.record import git_state, library_versions


def is_global_zero() -> bool:
    """Whether this is the first (or only) process of a DDP run: the one that evaluates and writes."""
    return rank_zero_only.rank == 0


def leave_process_group(wait: bool = True) -> None:
    """End this process's part in a DDP job: with ``wait``, wait until every process is done (the first one
    evaluates and writes after the others finish training), then shut the process group down (without ``wait``:
    after a failure, so the others fail fast). A process that exits with its gloo group still open can abort in
    the group's destructor and take the job down with it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def trains_in_one_process(spec) -> bool:
    """Whether each run of a suite with these trainer settings (``TrainerSpec``) trains in this process alone
    (no DDP)."""
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


def make_logger(kind: str, logs: Path, run_name: str, project: str):
    """The Lightning logger of a run's training curves (``TrainerSpec.logger``), or False for none. CSV and
    TensorBoard write ``logs/RUN_ID/version_N/``, a new N for each time the run trains (a resumed run keeps the
    curves of its first part)."""
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(logs), name=run_name)
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(logs), name=run_name, default_hp_metric=False)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(name=run_name, project=project, save_dir=str(logs))
    raise ValueError(f"unknown trainer logger {kind!r}")


def finish_logger(trainer: L.Trainer) -> None:
    """Close a run's W&B run, so that the next run of the suite starts its own (Lightning leaves it open)."""
    logger = trainer.logger
    if logger is not None and type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
        logger.experiment.finish()


def make_trainer(spec, epochs: int, precision: str, progress: bool, root: str,
                 callbacks: list[L.Callback], logger=False) -> L.Trainer:
    """A Lightning Trainer for ``epochs`` epochs under the suite's trainer settings (``TrainerSpec``), logging
    to ``logger`` (``make_logger``)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen backbone, by design
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # inside Lightning itself
    strategy = spec.strategy
    if strategy == "ddp":
        strategy = DDPStrategy(timeout=timedelta(minutes=spec.ddp_timeout_min))
    return L.Trainer(
        max_epochs=epochs, accelerator=spec.accelerator, devices=spec.devices, num_nodes=spec.num_nodes,
        strategy=strategy, precision=precision, use_distributed_sampler=False,  # GlobalBatchSampler
        logger=logger, log_every_n_steps=1, enable_checkpointing=False, callbacks=callbacks,
        enable_model_summary=False,
        enable_progress_bar=progress, num_sanity_val_steps=0, limit_val_batches=0,
        deterministic=spec.deterministic, default_root_dir=root,
    )


def fit(harness, run, spec, prepared, epochs: int) -> tuple[int, int | None]:
    """Gradient training through Lightning, unless the method fits in closed form or not at all. Returns the
    number of processes that trained (DDP's world size; 1 without a trainer) and the epoch training resumed
    at from a mid-training checkpoint (None: it started from the beginning)."""
    method, datamodule, tasks = prepared.method, prepared.datamodule, prepared.tasks
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
    every = harness.suite.trainer.checkpoint_every_n_epochs
    checkpoint = RunCheckpoint(harness.resume_path(run.identity), every, loader_generators(loader)) if every else None
    trainer = harness.trainer(epochs, [checkpoint] if checkpoint else [], run.identity.run_id)
    steps = method.config.training_steps(run.identity.shots)
    if steps is not None:  # a run counted in iterations stops within its last epoch
        trainer.fit_loop.epoch_loop.max_steps = steps
    resumed_at = None
    if checkpoint is not None:
        checkpoint.fingerprint = {**fingerprint(harness, run, spec, module, datamodule, epochs, trainer.world_size),
                                  "loader_generators": len(checkpoint.generators)}
        resumed_at = resumable_checkpoint(checkpoint.path, checkpoint.fingerprint, move=is_global_zero())
        if resumed_at is not None:
            tqdm.write(f"resuming run {run.identity.run_id} from epoch {resumed_at} of {epochs} "
                       f"({checkpoint.path})", file=sys.stderr)
    try:
        trainer.fit(module, train_dataloaders=loader, ckpt_path=checkpoint.path if resumed_at is not None else None,
                    weights_only=True)
    finally:
        finish_logger(trainer)
    return trainer.world_size, resumed_at  # the checkpoint stays until the run's record is written


def fingerprint(harness, run, spec, module: L.LightningModule, datamodule, epochs: int, world_size: int) -> dict:
    """What a mid-training checkpoint must share with the run to resume it: the run, its spec's settings, and
    what the checkpointed state depends on (backbone, device, precision, processes, loader workers, inputs,
    prompt shapes, library versions and git commit: a resume never mixes code or settings)."""
    cached = isinstance(datamodule, CachedFeatureDataModule)
    return {"run_id": run.identity.run_id, "settings": spec.settings, "backbone": harness.suite.backbone.describe(),
            "epochs": epochs, "device": harness.device.type, "precision": harness.precision,
            "world_size": world_size, "num_workers": harness.suite.trainer.num_workers,
            "versions": library_versions(), "git": git_state(PROJECT_ROOT),
            "inputs": describe_train_views(datamodule.train_views) if cached else "images",
            "prompt": {name: list(value.shape) for name, value in module.state_dict().items()}}
