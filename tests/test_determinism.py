"""Same seed, same machine, same metrics: bitwise on a CPU; records say which settings would break that."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

from vlpt.eval.determinism import determinism
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.results import RecordStore
from vlpt.results.record import ADAPT_MS
from vlpt.results.validate import schema, validate_records

from test_results_validate import record_data

EXPERIMENTS = [
    {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [2], "seeds": [1], "eval_limit": 48,
     "params": {"epochs": 2, "batch_size": 8, "lr": 0.01},
     "methods": ["zeroshot", "linear_probe", "coop_m4", {"config": "cocoop", "params": {"batch_size": 8}}, "vpt"]},
    {"protocol": "test_time", "dataset": "starter_shapes", "seeds": [1], "eval_limit": 8,
     "methods": [{"config": "tpt", "params": {"views": 16}}]},
]


def write_suite(tmp_path, name: str) -> str:
    suite = {"name": "determinism", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
             "data_root": str(tmp_path / "data"), "output": str(tmp_path / name), "trainer": {"accelerator": "cpu"},
             "feature_cache": {"folder": str(tmp_path / name / "cache")},  # each side computes its own features
             "experiments": EXPERIMENTS}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def scores(record) -> dict:
    """The record's metrics but timings (TPT's adaptation time per image)."""
    return {name: {k: v for k, v in values.items() if k != ADAPT_MS} for name, values in record.metrics.items()}


@pytest.mark.slow  # a fresh process
def test_the_same_suite_run_twice_gives_bitwise_the_same_metrics_and_prompts(tmp_path):
    """Once in this process, once in a fresh one (each with its own feature cache)."""
    Harness(load_suite(write_suite(tmp_path, "first")), progress=False).run_all()
    command = [sys.executable, "-c", "from vlpt.cli import main; "
               f"raise SystemExit(main(['bench', '--suite', {write_suite(tmp_path, 'second')!r}]))"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    first = {r.run_id: r for r in RecordStore(tmp_path / "first" / "records").records()}
    second = {r.run_id: r for r in RecordStore(tmp_path / "second" / "records").records()}
    assert first.keys() == second.keys() and validate_records(tmp_path / "first").ok
    assert {r.identity.method for r in first.values()} == {"zeroshot", "linear_probe", "coop", "cocoop", "vpt", "tpt"}
    for run_id, record in first.items():
        assert scores(record) == scores(second[run_id]), record.identity.method
        assert record.config["determinism"] == {"deterministic": True, "nondeterministic": []}
        if record.identity.shots == 0:
            continue  # zero-shot and TPT keep no prompt
        prompts = [torch.load(tmp_path / side / "checkpoints" / f"{run_id}.pt", weights_only=True)["state_dict"]
                   for side in ("first", "second")]
        assert prompts[0].keys() == prompts[1].keys() and prompts[0]
        for key, value in prompts[0].items():
            assert torch.equal(value, prompts[1][key]), f"{record.identity.method}: {key}"
    trained = [r for r in first.values() if r.identity.method in ("coop", "cocoop", "vpt")]
    assert all(r.config["trainer"]["deterministic"] == "warn" for r in trained)


CPU = dict(device_type="cpu", precision="32-true", deterministic="warn", compile=False, compile_backend="inductor",
           world_size=1, num_workers=0, resumed=False)


@pytest.mark.parametrize("settings, reason", [
    ({}, None),
    ({"num_workers": 2}, None),  # workers are seeded from the run's seed
    ({"compile": True, "compile_backend": "eager"}, None),  # traced, then the same eager kernels
    ({"device_type": "cuda", "deterministic": True}, None),
    ({"device_type": "cuda"}, "GPU with trainer.deterministic 'warn'"),
    ({"device_type": "cuda", "deterministic": False}, "GPU with trainer.deterministic False"),
    ({"device_type": "cuda", "deterministic": True, "precision": "bf16-mixed"}, "mixed precision bf16-mixed"),
    ({"compile": True}, "torch.compile (backend inductor)"),
    ({"world_size": 4}, "4 processes (DDP)"),
    ({"num_workers": 2, "resumed": True}, "resumed with 2 data loader worker"),
])
def test_the_settings_that_break_bitwise_reproducibility_are_named(settings, reason):
    flag = determinism(**{**CPU, **settings})
    assert flag["deterministic"] is (reason is None)
    assert len(flag["nondeterministic"]) == (reason is not None)
    if reason:
        assert flag["nondeterministic"][0].startswith(reason)


def test_every_reason_of_a_run_is_listed():
    flag = determinism("cuda", "16-mixed", "warn", True, "inductor", 2, 1, True)
    assert flag["deterministic"] is False and len(flag["nondeterministic"]) == 5


@pytest.mark.parametrize("flag, problem", [
    ({"deterministic": True, "nondeterministic": []}, None),
    ({"deterministic": False, "nondeterministic": ["4 processes (DDP): ..."]}, None),
    ({"deterministic": True, "nondeterministic": ["4 processes (DDP): ..."]}, "lists 1 reason"),
    ({"deterministic": "yes", "nondeterministic": []}, "deterministic = 'yes' .* is not true or false"),
    ({"deterministic": False, "nondeterministic": [""]}, "is not a list of non-empty strings"),
    ({"deterministic": True}, "nondeterministic is missing"),
    ([], "config.determinism = .* is not an object"),
])
def test_the_determinism_field_is_validated(tmp_path, flag, problem):
    jsonschema = pytest.importorskip("jsonschema")
    data = record_data()
    data["config"]["determinism"] = flag
    path = tmp_path / f"{data['run_id']}.json"
    path.write_text(json.dumps(data))
    report = validate_records(tmp_path)
    schema_errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(data))
    if problem is None:
        assert report.ok and not schema_errors
    else:
        assert any(re.search(problem, str(p)) and p.field.startswith("config.determinism") for p in report.problems)
        assert schema_errors or "reason" in problem  # the schema cannot compare the flag with its reasons
