"""Mid-training checkpoints: a run interrupted in training resumes where it stopped, with the same result.

``RunCheckpoint``, a Lightning callback, writes ``<output>/.lightning/<run_id>/last.ckpt`` (atomically) at
the end of every N-th epoch but the last: Lightning's training state (the module's ``state_dict``, which
holds the method's own tensors only, never the frozen backbone; optimizer and schedule; loop progress)
plus what the epochs after it draw from: the python, numpy and torch (and CUDA) random states, which give
the training augmentations and the stored feature view each image gets, and the training loader's
shuffling generators. With them restored, the resumed epochs are those of the uninterrupted run, bitwise
on a CPU (with ``num_workers: 0``: worker processes keep random states of their own, which restart on
resume).

A checkpoint also holds its run's fingerprint (run id, settings, backbone, epochs, precision, world
size, the shapes of the prompt tensors); ``resumable_checkpoint`` accepts it only when the fingerprint
is the current run's, and moves any other checkpoint aside with a warning (never deleted).
"""
from __future__ import annotations

import contextlib
import json
import random
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from vlpt.errors import CheckpointError
from vlpt.results.store import writer_temp_path

CHECKPOINT_NAME = "last.ckpt"
STATE_KEY = "RunCheckpoint"


class ResumeWarning(UserWarning):
    """A mid-training checkpoint was found but not used (another run's, or unreadable)."""


def random_states() -> dict[str, Any]:
    """The python, numpy, torch and CUDA random states, as values a ``weights_only`` load accepts."""
    numpy_state = np.random.get_state(legacy=False)
    states = {
        "python": random.getstate(),
        "numpy": {"key": numpy_state["state"]["key"].tolist(), "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what ``random_states`` returned."""
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def loader_generators(loader) -> list[torch.Generator]:
    """The torch generators a training loader shuffles with (its own, its sampler's, its batch sampler's)."""
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates = (loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None))
    for owner in candidates:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and not any(generator is g for g in found):
            found.append(generator)
    return found


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def fingerprint_differences(stored: dict, current: dict) -> list[str]:
    """``key: stored -> current`` for each (flattened) fingerprint entry that differs."""
    old, new = _flatten(json.loads(json.dumps(stored))), _flatten(json.loads(json.dumps(current)))
    return [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _move_aside(path: Path, why: str) -> None:
    stamp, count = time.strftime("%Y%m%d-%H%M%S"), 0
    aside = path.with_name(f"{path.stem}.{stamp}.unused{path.suffix}")
    while aside.exists():  # an earlier one moved aside in the same second is kept too
        count += 1
        aside = path.with_name(f"{path.stem}.{stamp}-{count}.unused{path.suffix}")
    path.replace(aside)
    warnings.warn(f"mid-training checkpoint {path} {why}; not resuming from it (moved to {aside.name})",
                  ResumeWarning, stacklevel=3)


def resumable_checkpoint(path: Path, fingerprint: dict, move: bool = True) -> int | None:
    """The number of epochs done when ``path`` is a mid-training checkpoint of the run ``fingerprint``
    describes; None when there is none. A checkpoint of another run or other settings, or one that cannot
    be read, is moved aside with a ``ResumeWarning`` (when ``move``: the first DDP process moves, the
    others only skip it)."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["callbacks"][STATE_KEY]
        stored, epochs_done = state["fingerprint"], int(state["epochs_done"])
    except Exception as exc:  # any unreadable file: truncated, not a checkpoint, another version's
        if move:
            _move_aside(path, f"cannot be read ({type(exc).__name__}: {exc})")
        return None
    differences = fingerprint_differences(stored, fingerprint)
    if differences:
        if move:
            _move_aside(path, f"belongs to another run or other settings ({'; '.join(differences[:5])})")
        return None
    return epochs_done


class RunCheckpoint(Callback):
    """Writes a resumable checkpoint of the run in flight after every ``every_n_epochs``-th epoch (but the
    last), and restores the random states and the loader ``generators`` from one on resume.
    ``fingerprint`` (JSON values) describes the run; set it before training."""

    def __init__(self, path: Path, every_n_epochs: int, generators: list[torch.Generator]):
        self.path = Path(path)
        self.fingerprint: dict = {}
        self.every_n_epochs = every_n_epochs
        self._epochs_done = 0
        self.generators = generators

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "epochs_done": self._epochs_done, "random": random_states(),
                "generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called by Lightning on resume, before the training loader is iterated."""
        if len(state_dict["generators"]) != len(self.generators):
            raise CheckpointError(f"checkpoint {self.path} holds {len(state_dict['generators'])} loader "
                                  f"generator(s), the training loader has {len(self.generators)}")
        set_random_states(state_dict["random"])
        for generator, state in zip(self.generators, state_dict["generators"]):
            generator.set_state(state)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1  # epochs finished
        if done % self.every_n_epochs or done >= trainer.max_epochs:
            return
        self._epochs_done = done
        temporary = writer_temp_path(self.path)
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(temporary, weights_only=False)  # every process takes part; the first writes
        if trainer.is_global_zero:
            temporary.replace(self.path)


def remove_checkpoint(path: Path) -> None:
    """Delete a run's mid-training checkpoint, temporary files a killed writer left, and the folder when
    empty: the run's record is written."""
    path.unlink(missing_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: a checkpoint moved aside is kept
        path.parent.rmdir()
