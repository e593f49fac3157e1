"""Executing one run: its protocol prepares it, training fits it, its evaluations score it, and its record is
its resolved spec (``vlpt.eval.spec``) plus what happened (epochs, trainer, determinism, data counts, views)."""
from __future__ import annotations

import dataclasses
import time

import lightning as L
import torch

from vlpt.data.datamodule import CachedFeatureDataModule
from vlpt.eval.determinism import determinism
from vlpt.eval.initializations import method_config
from vlpt.eval.memory import peak_memory_mb, reset_peak_memory
from vlpt.eval.training import fit, is_global_zero
from vlpt.meta.gram import attach_regulator, load_regulator
from vlpt.paths import PROJECT_ROOT
from vlpt.protocols import get_protocol
from vlpt.results import RunRecord


def execute(harness, run) -> RunRecord | None:
    """Train and evaluate one run, keep its prompt checkpoint, and return its record (None in DDP processes
    other than the first: they only train)."""
    identity, experiment, resolved = run.identity, run.experiment, run.method
    if not resolved.cls.trains and not is_global_zero():
        return None  # nothing to train: the first DDP process evaluates it alone
    started = time.perf_counter()
    reset_peak_memory(harness.device)
    protocol = get_protocol(identity.protocol)
    harness.backbone  # built (consuming random draws) before the run's seed is set
    model = protocol.model(harness, experiment)
    L.seed_everything(identity.seed, workers=True, verbose=False)
    config = method_config(harness, run)
    spec = harness.run_spec(run, params=dataclasses.asdict(config))
    data = protocol.build(harness, run, harness.training_shots(run))
    prepared = protocol.prepare(harness, run, config, data, model)
    method, datamodule = prepared.method, prepared.datamodule
    if config.regulator_from:  # GRAM: its regulator shapes the run's training gradients
        attach_regulator(method, load_regulator(config.regulator_from))
    epochs = config.run_epochs(identity.shots, identity.dataset, prepared.n_train) if resolved.cls.trains else 0
    method.to(harness.device)
    world_size, resumed_at = fit(harness, run, spec, prepared, epochs)
    if resolved.cls.trains and is_global_zero():
        method.save_checkpoint(harness.checkpoint_path(identity))
    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()  # a later run of any process may start from this checkpoint
    if not is_global_zero():
        return None
    trained = time.perf_counter()
    method.to(harness.device).eval()
    metrics, view_augments = {}, {}
    for evaluation in prepared.evaluations:  # loaders made here: on the first DDP process only
        with harness.autocast():  # the precision the run trained in
            metrics[evaluation.name], views = evaluation.evaluate(method)
        if views:
            view_augments[evaluation.name] = views
    finished = time.perf_counter()
    trainer = harness.suite.trainer
    sections = spec.record_sections()
    extra = method.record_extra()
    resolved_config = {
        "suite": harness.suite.name,
        "method": sections["method"],
        "selection": resolved.cls.hyperparameter_selection(config),
        "init_from_run": run.init_source.run_id if run.init_source else None,
        "epochs": epochs,
        "backbone": sections["backbone"],
        "trainer": {**dataclasses.asdict(trainer), "precision": harness.precision, "world_size": world_size,
                    **({"resumed_at_epoch": resumed_at} if resumed_at is not None else {})},
        "determinism": determinism(harness.device.type, harness.precision, trainer.deterministic, trainer.compile,
                                   trainer.compile_backend, world_size, trainer.num_workers, resumed_at is not None),
        **prepared.record_config,
        **extra,
        **({"test_time": {**prepared.record_config.get("test_time", {}), "views": view_augments}}
           if view_augments else {}),
        **({"feature_cache": {"train_views": datamodule.train_views if datamodule.views_drawn else None}}
           if isinstance(datamodule, CachedFeatureDataModule) else {}),
        "data": _data_section(sections["data"], prepared),
        "device": str(harness.device),
    }
    clash = set(extra) & {"suite", "method", "selection", "init_from_run", "epochs", "backbone", "trainer",
                          "determinism", "test_time", "feature_cache", "data", "device", *prepared.record_config}
    if clash:
        raise ValueError(f"{resolved.cls.name}.record_extra() names record keys of the harness: {sorted(clash)}")
    timings = {"train_s": round(trained - started, 3), "eval_s": round(finished - trained, 3),
               "wall_s": round(finished - started, 3)}
    return RunRecord.capture(identity, metrics, resolved_config, timings,
                             peak_memory_mb=peak_memory_mb(harness.device), repo=PROJECT_ROOT)


def _data_section(settings: dict, prepared) -> dict:
    """The record's ``data``: the spec's data settings with the counts of what the run trained on, in the
    order records have always had (train_augment, counts, protocol settings, eval_limit)."""
    rest = {k: v for k, v in settings.items() if k != "train_augment"}
    return {"train_augment": settings["train_augment"], "n_train": prepared.n_train, "n_val": prepared.n_val,
            "classes": prepared.classes, **rest}
