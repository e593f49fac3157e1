"""A run trained by two DDP processes (gloo, CPU) gives the single process's prompt and metrics."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from vlpt.data.datamodule import GlobalBatchSampler, seeded_loader
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.results import RecordStore

pytestmark = pytest.mark.slow  # spawns processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_ddp_suite(tmp_path, name: str, devices: int) -> str:
    suite = {
        "name": "ddp",
        "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
        "data_root": str(tmp_path / "data"),
        "output": str(tmp_path / name),
        "trainer": {"accelerator": "cpu", "devices": devices, **({"strategy": "ddp"} if devices > 1 else {})},
        "feature_cache": {"folder": str(tmp_path / "cache")},
        "experiments": [{
            # 24 classes x 2 shots = 48 images: 6 global batches of 8, each split 4 + 4
            "protocol": "few_shot", "dataset": "starter_shapes", "shots": [2], "seeds": [1],
            "train_augment": "none", "params": {"epochs": 3, "batch_size": 8, "lr": 0.01},
            "methods": ["coop_m4", "kgcoop"],
        }],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def test_global_batches_are_split_across_processes(monkeypatch):
    alone = [b.tolist() for b in seeded_loader(list(range(12)), 4, True, seed=5)]
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(GlobalBatchSampler, "world", staticmethod(lambda rank=rank: (rank, 2)))
        parts.append([b.tolist() for b in seeded_loader(list(range(12)), 4, True, seed=5)])
    assert [a + b for a, b in zip(*parts)] == alone
    monkeypatch.setattr(GlobalBatchSampler, "world", staticmethod(lambda: (0, 3)))
    with pytest.raises(Exception, match="batch_size 4 .* cannot be split evenly across 3 processes"):
        list(seeded_loader(list(range(12)), 4, True, seed=5))


def test_two_process_ddp_run_matches_the_single_process_run(tmp_path):
    single = Harness(load_suite(write_ddp_suite(tmp_path, "single", devices=1)), progress=False)
    single.run_all()
    path = write_ddp_suite(tmp_path, "ddp", devices=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "vlpt.cli", "bench", "--suite", path]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = {r.identity.method: r for r in RecordStore(tmp_path / "ddp" / "records").records()}
    alone = {r.identity.method: r for r in RecordStore(tmp_path / "single" / "records").records()}
    assert ddp.keys() == alone.keys() == {"coop", "kgcoop"}
    for method, record in ddp.items():
        assert record.config["trainer"]["world_size"] == 2 and alone[method].config["trainer"]["world_size"] == 1
        assert record.metrics["test"]["n"] == alone[method].metrics["test"]["n"]
        assert abs(record.metrics["test"]["accuracy"] - alone[method].metrics["test"]["accuracy"]) < 0.11, method
        trained = torch.load(tmp_path / "ddp" / "checkpoints" / f"{record.run_id}.pt", weights_only=True)
        reference = torch.load(tmp_path / "single" / "checkpoints" / f"{record.run_id}.pt", weights_only=True)
        start = single.backbone.embed_tokens(single.backbone.tokenize(["a photo of a"]))[0, 1:5]
        for key, value in reference["state_dict"].items():
            torch.testing.assert_close(trained["state_dict"][key], value, rtol=1e-4, atol=1e-5)
            assert not torch.allclose(value, start, atol=1e-4), "the prompt did not move: nothing was compared"
    assert (tmp_path / "ddp" / "LEADERBOARD.md").is_file()
