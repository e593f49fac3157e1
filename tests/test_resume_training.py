"""Mid-training checkpoints: a run interrupted in training resumes to the uninterrupted run's prompt and
metrics, bitwise on a CPU; a checkpoint that is not the run's own is never used."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
import yaml

from vlpt.cli import main
from vlpt.errors import ConfigError
from vlpt.eval.harness import Harness
from vlpt.eval.resume import ResumeWarning
from vlpt.eval.suite import load_suite
from vlpt.results import RecordStore

#: 24 shape classes x 2 shots = 48 training images: 6 batches of 8 per epoch, cropped and flipped at random
FEW_SHOT = {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [2], "seeds": [1], "eval_limit": 48,
            "params": {"epochs": 3, "batch_size": 8, "lr": 0.01}}
#: coop_m4 trains on stored features (a new stored random crop of every image each epoch), vpt on images;
#: promptsrc's Gaussian aggregation of its epochs' prompts is state a checkpoint must keep
EXPERIMENTS = [
    {**FEW_SHOT, "methods": ["coop_m4", "vpt",
                             {"config": "promptsrc", "params": {"prompt_depth": 3, "gpa_mean": 2, "gpa_std": 1}}]},
    {"protocol": "multitask", "datasets": ["starter_shapes", "starter_digits"], "shots": [1], "seeds": [1],
     "params": {"epochs": 3, "batch_size": 8, "lr": 0.01}, "methods": ["coop_m4"]},
]


class Interrupt(Exception):
    """Stands for a crash in the middle of training."""


class InterruptAt(L.Callback):
    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            raise Interrupt(f"interrupted in epoch {self.epoch}, batch {self.batch}")


def write_suite(folder, data_root, name: str, experiments: list[dict], **trainer) -> str:
    suite = {"name": "resume", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
             "data_root": str(data_root), "output": str(folder / name), "trainer": {"accelerator": "cpu", **trainer},
             "experiments": experiments}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def interrupting(harness: Harness, epoch: int = 2, batch: int = 2) -> Harness:
    """``harness`` with every training run interrupted at (``epoch``, ``batch``)."""
    make_trainer = harness.trainer
    harness.trainer = lambda epochs, callbacks, run_id: make_trainer(epochs, [*callbacks, InterruptAt(epoch, batch)],
                                                                    run_id)
    return harness


def prompt(harness: Harness, record) -> dict[str, torch.Tensor]:
    return torch.load(harness.checkpoint_path(record.identity), weights_only=True)["state_dict"]


def assert_same_run(harness: Harness, record, reference: Harness, expected) -> None:
    assert record.metrics == expected.metrics, record.identity
    trained, wanted = prompt(harness, record), prompt(reference, expected)
    assert trained.keys() == wanted.keys()
    for key, value in wanted.items():
        assert torch.equal(trained[key], value), f"{record.identity.method}: {key} differs"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """The suite run without interruption: the harness and its records by run id."""
    folder = tmp_path_factory.mktemp("reference")
    harness = Harness(load_suite(write_suite(folder, data_root, "out", EXPERIMENTS)), progress=False)
    harness.run_all()
    return harness, {r.run_id: r for r in harness.store.records()}


def test_interrupted_runs_resume_to_the_uninterrupted_result(tmp_path, data_root, reference, capsys):
    reference_harness, expected = reference
    path = write_suite(tmp_path, data_root, "out", EXPERIMENTS)
    interrupted = interrupting(Harness(load_suite(path), progress=False))
    middle = {}
    for run in interrupted.pending():
        with pytest.raises(Interrupt):
            interrupted.execute(run)
        checkpoint = interrupted.resume_path(run.identity)
        assert checkpoint.name == "last.ckpt" and checkpoint.parent.name == run.identity.run_id
        payload = torch.load(checkpoint, weights_only=True)
        assert payload["callbacks"]["RunCheckpoint"]["epochs_done"] == 2  # written after epoch 2 of 3
        # the method's own tensors only (a multitask module prefixes them with "method."): no frozen backbone
        own = {key.removeprefix("method."): value for key, value in payload["state_dict"].items()}
        assert own.keys() == prompt(reference_harness, expected[run.identity.run_id]).keys()
        assert checkpoint.stat().st_size < 200_000  # kilobytes; the backbone alone is 30 MB in fp32
        middle[run.identity.run_id] = own
    assert len(middle) == 4 and not list((tmp_path / "out" / "records").glob("*.json"))

    resumed = Harness(load_suite(path), progress=False)
    pending = resumed.pending()
    records = [resumed.execute(run) for run in pending]
    assert all(resumed.resume_path(run.identity).is_file() for run in pending)  # kept until the record is written
    for record in records:
        resumed.store.write(record)
    assert resumed.run_all() and resumed.executed == []  # nothing left to do: the checkpoints go
    messages = capsys.readouterr().err
    for record in records:
        assert f"resuming run {record.run_id} from epoch 2 of 3" in messages
        assert record.config["trainer"]["resumed_at_epoch"] == 2
        assert record.config["determinism"] == {"deterministic": True, "nondeterministic": []}
        if record.identity.protocol == "few_shot" and record.identity.method == "coop":
            assert record.config["feature_cache"] == {"train_views": "per_epoch"}
        assert_same_run(resumed, record, reference_harness, expected[record.run_id])
        final = prompt(resumed, record)
        assert any(not torch.equal(final[k], v) for k, v in middle[record.run_id].items()), \
            "the last epoch changed nothing: the comparison would prove nothing"
        assert not resumed.resume_path(record.identity).parent.exists()  # removed with the record written
    assert "resumed_at_epoch" not in next(iter(expected.values())).config["trainer"]


@pytest.mark.slow  # kills a bench process
def test_a_killed_bench_resumes_from_its_last_checkpoint(tmp_path, data_root, capsys):
    """SIGKILL of a real `vlpt bench` process as soon as its first mid-training checkpoint appears."""
    experiments = [{**FEW_SHOT, "params": {**FEW_SHOT["params"], "epochs": 8}, "methods": ["coop_m4"]}]
    path = write_suite(tmp_path, data_root, "killed", experiments)
    (run,) = load_suite(path).runs
    checkpoint = tmp_path / "killed" / ".lightning" / run.identity.run_id / "last.ckpt"
    command = [sys.executable, "-c",
               f"from vlpt.cli import main; raise SystemExit(main(['bench', '--suite', {path!r}]))"]
    log = tmp_path / "bench.log"
    with log.open("w") as output:  # a file, not a pipe, so that the process never blocks on a full pipe
        process = subprocess.Popen(command, stdout=output, stderr=output, start_new_session=True)
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"bench ended before it was killed: {log.read_text()[-2000:]}"
    assert checkpoint.is_file() and not list((tmp_path / "killed" / "records").glob("*.json"))

    assert main(["bench", "--suite", path]) == 0
    assert f"resuming run {run.identity.run_id} from epoch " in capsys.readouterr().err
    (record,) = RecordStore(tmp_path / "killed" / "records").records()
    assert 1 <= record.config["trainer"]["resumed_at_epoch"] < 8
    assert not checkpoint.parent.exists()

    uninterrupted = Harness(load_suite(write_suite(tmp_path, data_root, "whole", experiments)), progress=False)
    uninterrupted.run_all()
    (expected,) = uninterrupted.store.records()
    assert_same_run(Harness(load_suite(path), progress=False), record, uninterrupted, expected)


@pytest.fixture(scope="module")
def foreign_checkpoint(tmp_path_factory, data_root) -> bytes:
    """The mid-training checkpoint of an interrupted coop_m4 run (seed 1), as bytes."""
    folder = tmp_path_factory.mktemp("foreign")
    harness = interrupting(Harness(load_suite(write_suite(folder, data_root, "out", MISMATCH)), progress=False))
    run = harness.pending()[0]
    with pytest.raises(Interrupt):
        harness.execute(run)
    return harness.resume_path(run.identity).read_bytes()


MISMATCH = [{**FEW_SHOT, "seeds": [1, 2], "methods": ["coop_m4"]}]


@pytest.mark.parametrize("case, seed, message", [
    ("other settings", 1, r"settings\.params\.lr: 0\.01 -> 0\.02"),  # the suite was edited after the interruption
    ("another run", 2, r"run_id: '[0-9a-f]{16}' -> '[0-9a-f]{16}'"),
    ("unreadable", 1, "cannot be read"),
])
def test_a_checkpoint_that_is_not_the_runs_own_is_moved_aside_not_used(tmp_path, data_root, foreign_checkpoint,
                                                                        case, seed, message, capsys):
    experiments = [{**MISMATCH[0], "params": {**FEW_SHOT["params"], "lr": 0.02}}] if case == "other settings" \
        else MISMATCH
    harness = Harness(load_suite(write_suite(tmp_path, data_root, "out", experiments)), progress=False)
    (run,) = [r for r in harness.pending() if r.identity.seed == seed]
    path = harness.resume_path(run.identity)
    path.parent.mkdir(parents=True)
    written = b"not a checkpoint" if case == "unreadable" else foreign_checkpoint
    path.write_bytes(written)
    with pytest.warns(ResumeWarning, match=f"{re.escape(str(path))}.*{message}"):
        record = harness.execute(run)
    assert "resumed_at_epoch" not in record.config["trainer"]  # trained from the first epoch
    assert "resuming run" not in capsys.readouterr().err
    (aside,) = [p for p in path.parent.iterdir() if p != path]  # kept, never deleted (last.ckpt: this run's own)
    assert aside.name.startswith("last.") and aside.name.endswith(".unused.ckpt") and aside.read_bytes() == written


def test_checkpoints_can_be_turned_off(tmp_path, data_root):
    experiments = [{**FEW_SHOT, "methods": ["coop_m4"]}]
    harness = interrupting(Harness(load_suite(write_suite(tmp_path, data_root, "out", experiments,
                                                          checkpoint_every_n_epochs=0)), progress=False))
    (run,) = harness.pending()
    with pytest.raises(Interrupt):
        harness.execute(run)
    assert not (tmp_path / "out" / ".lightning").exists()
    with pytest.raises(ConfigError, match="trainer: checkpoint_every_n_epochs must be 0 .never. or more, got -1"):
        load_suite(write_suite(tmp_path, data_root, "bad", experiments, checkpoint_every_n_epochs=-1))


def test_a_run_resumed_with_loader_workers_is_marked_not_bitwise_reproducible(tmp_path, data_root):
    experiments = [{**FEW_SHOT, "methods": ["coop_m4"]}]
    path = write_suite(tmp_path, data_root, "out", experiments, num_workers=1)
    harness = interrupting(Harness(load_suite(path), progress=False))
    (run,) = harness.pending()
    with pytest.raises(Interrupt):
        harness.execute(run)
    record = Harness(load_suite(path), progress=False).execute(run)
    assert record.config["trainer"]["resumed_at_epoch"] == 2
    determinism = record.config["determinism"]
    assert determinism["deterministic"] is False
    assert determinism["nondeterministic"] == ["resumed with 1 data loader worker(s): the workers' random streams "
                                               "restart at the checkpoint"]
