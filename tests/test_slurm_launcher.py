"""Submitting a suite as an array of shard jobs through submitit (`vlpt bench --slurm N`)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlpt.cli import main
from vlpt.errors import ConfigError
from vlpt.eval import rebuild
from vlpt.eval.harness import Harness
from vlpt.eval.rebuild import rebuild_leaderboard
from vlpt.eval.slurm import make_executor, run_shard, submit_suite
from vlpt.eval.suite import load_suite, shard_of

from test_harness import write_suite

pytest.importorskip("submitit")

#: shipped weights, not random ones: the backbone must not depend on what ran before in the process
STARTER_BACKBONE = {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"}


def _split_suite(folder: Path) -> str:
    """A 4-run suite (zero-shot and 1-epoch CoOp, two seeds) with runs in both of two shards."""
    for seeds in ([1, 3], [2, 3], [1, 4], [2, 4], [3, 4]):
        path = write_suite(folder, backbone=STARTER_BACKBONE, experiments=[{
            "protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": seeds,
            "params": {"epochs": 1}, "methods": ["zeroshot", "coop"]}])
        if len(set(shard_of(load_suite(path), 2).values())) == 2:
            return path
    raise AssertionError("no seed pair puts the tiny suite's runs in both of two shards")


def results_of(output: Path) -> list[dict]:
    """The leaderboard CSV's rows without the measured cost columns (timings and memory differ between runs)."""
    measured = ("train_ms_per_image", "test_ms_per_image", "peak_memory_mb")
    with (output / "leaderboard.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in measured} for row in csv.DictReader(handle)]


def _records(output: Path) -> dict[str, tuple]:
    """Run id -> (identity, metrics) of every record in ``output``."""
    found = {}
    for path in (output / "records").glob("*.json"):
        data = json.loads(path.read_text())
        found[data["run_id"]] = (data["identity"], data["metrics"])
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny suite run here, unsharded: the records every sharded launch must reproduce."""
    folder = tmp_path_factory.mktemp("slurm_suite")
    suite = _split_suite(folder)
    output = folder / "single"
    Harness(load_suite(suite), output=output, progress=False).run_all()
    records = _records(output)
    assert len(records) == 4
    return SimpleNamespace(suite=suite, output=output, records=records, shards=shard_of(load_suite(suite), 2))


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`srun` and `sbatch` stand-ins on PATH: sbatch keeps a copy of the script it is given."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tools / "sbatch").write_text('#!/bin/sh\ncp "$1" "$VLPT_TEST_SBATCH_COPY"\necho "Submitted batch job 4242"\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    script = tmp_path / "submitted.sbatch"
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("VLPT_TEST_SBATCH_COPY", str(script))
    yield script
    from submitit.slurm.slurm import SlurmJob

    SlurmJob.watcher.clear()


def test_two_shard_jobs_in_either_order_give_the_records_of_one_unsharded_run(reference, tmp_path):
    output = tmp_path / "sharded"
    jobs = submit_suite(reference.suite, 2, tmp_path / "logs", output, cluster="debug")
    assert len(jobs) == 2 and not (output / "records").exists()  # debug jobs run when asked for results
    ids = {index: sorted(i for i, s in reference.shards.items() if s == index) for index in (0, 1)}

    second = jobs[1].result()  # the second shard ends first
    assert second["shard"] == "1/2" and sorted(second["ran"]) == ids[1]
    assert sorted(_records(output)) == ids[1]
    assert f"from {len(ids[1])} record{'s' if len(ids[1]) > 1 else ''} in" in (output / "LEADERBOARD.md").read_text()

    first = jobs[0].result()
    assert first["shard"] == "0/2" and sorted(first["ran"]) == ids[0]
    assert _records(output) == reference.records  # same run ids, identities and metrics
    assert "from 4 records in" in (output / "LEADERBOARD.md").read_text()
    assert results_of(output) == results_of(reference.output)


def test_cli_debug_launch_runs_what_is_missing_and_rebuilds_the_leaderboard(reference, tmp_path, capsys):
    output = tmp_path / "resumed"
    (output / "records").mkdir(parents=True)
    for run_id, index in reference.shards.items():  # shard 0 already done, as after a partial launch
        if index == 0:
            shutil.copy(reference.output / "records" / f"{run_id}.json", output / "records")
    done = {path.name: path.stat().st_mtime_ns for path in (output / "records").iterdir()}

    assert main(["bench", "--suite", reference.suite, "--output", str(output), "--slurm", "2",
                 "--slurm-cluster", "debug"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 2 shard jobs: DEBUG_" in printed
    assert f"submitit logs in {(output / 'slurm').resolve()}" in printed
    assert str(output / "LEADERBOARD.md") in printed
    assert _records(output) == reference.records
    assert all((output / "records" / name).stat().st_mtime_ns == mtime for name, mtime in done.items())
    assert results_of(output) == results_of(reference.output)


def test_slurm_settings_reach_the_sbatch_script_and_each_job_runs_its_shard(fake_slurm, tmp_path, capsys):
    suite, output, logs = _split_suite(tmp_path), tmp_path / "out", tmp_path / "logs"
    assert main(["bench", "--suite", suite, "--output", str(output), "--slurm", "3",
                 "--slurm-folder", str(logs), "--partition", "gpu-a100", "--time-min", "90", "--gpus", "1",
                 "--cpus", "8", "--mem-gb", "32", "--parallel", "2", "--slurm-option", "account=vision",
                 "--slurm-option", "qos=high"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 3 shard jobs: 4242_0 4242_1 4242_2" in printed
    assert f"submitit logs in {logs.resolve()}" in printed
    lines = set(fake_slurm.read_text().splitlines())
    for flag in ("--partition=gpu-a100", "--time=90", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--array=0-2%2", "--account=vision", "--qos=high", "--job-name=vlpt-tiny"):
        assert f"#SBATCH {flag}" in lines
    assert not (output / "records").exists()  # submitted, nothing run here

    from submitit.slurm.slurm import SlurmJob

    for index in range(3):
        submission = SlurmJob(folder=logs, job_id=f"4242_{index}").submission()
        assert submission.function is run_shard
        assert submission.args == (str(Path(suite).resolve()), index, 3, str(output.resolve()),
                                   str((tmp_path / "data").resolve()))


def test_generic_settings_reach_a_local_executor(tmp_path):
    executor = make_executor(tmp_path, "local", name="probe", time_min=30, gpus=0, cpus=2, mem_gb=4,
                             partition="ignored-here", parallel=3, additional={"account": "x"})
    assert executor.cluster == "local"
    assert executor._executor.parameters == {"name": "probe", "timeout_min": 30, "gpus_per_node": 0,
                                             "cpus_per_task": 2, "mem_gb": 4.0}


def test_leaderboard_is_rebuilt_when_another_shard_ends_during_the_rebuild(reference, tmp_path, monkeypatch):
    output = tmp_path / "race"
    (output / "records").mkdir(parents=True)
    files = sorted((reference.output / "records").glob("*.json"))
    for path in files[:-1]:
        shutil.copy(path, output / "records")
    real, calls = rebuild.write_leaderboard, []

    def racing(records, out, **options):
        paths = real(records, out, **options)  # this shard has read the records ...
        if not calls:  # ... when the last shard's record lands
            shutil.copy(files[-1], output / "records")
        calls.append(paths)
        return paths

    monkeypatch.setattr(rebuild, "write_leaderboard", racing)
    assert rebuild_leaderboard(output) == calls[-1]
    assert len(calls) == 2
    assert f"from {len(files)} records in" in (output / "LEADERBOARD.md").read_text()


@pytest.mark.parametrize("shards", [0, -2, 1.5, True, "2"])
def test_shard_count_below_one_or_not_whole_is_refused(reference, tmp_path, shards):
    with pytest.raises(ConfigError, match=rf"shards \(jobs to submit\) must be a whole number of at least 1, "
                                          rf"got {shards!r}"):
        submit_suite(reference.suite, shards, tmp_path / "logs", tmp_path / "out", cluster="debug")
    assert not (tmp_path / "logs").exists()


def test_cli_refuses_zero_jobs(reference, tmp_path, capsys):
    assert main(["bench", "--suite", reference.suite, "--output", str(tmp_path), "--slurm", "0",
                 "--slurm-cluster", "debug"]) == 2
    assert "got 0" in capsys.readouterr().err and not (tmp_path / "slurm").exists()


def test_missing_submitit_names_the_extra_to_install(reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` now raises ImportError
    with pytest.raises(ConfigError, match=r'needs the submitit package.*pip install "vlpt\[slurm\]"'):
        submit_suite(reference.suite, 2, tmp_path / "logs", tmp_path / "out", cluster="debug")
    assert main(["bench", "--suite", reference.suite, "--output", str(tmp_path), "--slurm", "2",
                 "--slurm-cluster", "debug"]) == 2
    assert 'pip install "vlpt[slurm]"' in capsys.readouterr().err


@pytest.mark.parametrize("settings, message", [
    ({"cluster": "slurmm"}, "cluster must be one of slurm, local, debug, got 'slurmm'"),
    ({"time_min": 0}, r"time_min \(minutes\) must be a whole number of at least 1, got 0"),
    ({"gpus": -1}, "gpus must be a whole number of at least 0, got -1"),
    ({"cpus": 0}, "cpus must be a whole number of at least 1, got 0"),
    ({"mem_gb": 0}, "mem_gb must be a positive number of GB, got 0"),
    ({"parallel": 0}, r"parallel \(array tasks at once\) must be a whole number of at least 1, got 0"),
    ({"cluster": "slurm"}, r"time limit in minutes \(time_min, --time-min\)"),
])
def test_bad_settings_are_refused_by_name(tmp_path, settings, message):
    settings = {"cluster": "local", **settings}
    with pytest.raises(ConfigError, match=message):
        make_executor(tmp_path / "logs", **settings)


def test_no_slurm_on_this_machine_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    with pytest.raises(ConfigError, match="cannot submit to SLURM from this machine.*'local' or 'debug'"):
        make_executor(tmp_path / "logs", "slurm", time_min=10)


@pytest.mark.parametrize("extra, message", [
    (["--slurm", "2", "--shard", "0/2"], "--slurm 2 submits every shard itself; leave out --shard 0/2"),
    (["--partition", "gpu", "--time-min", "5"], "--partition, --time-min only apply to submitting jobs; add --slurm N"),
    (["--slurm", "2", "--slurm-option", "account"], "--slurm-option 'account' must be KEY=VALUE"),
])
def test_cli_refuses_inconsistent_launch_options(reference, tmp_path, capsys, extra, message):
    assert main(["bench", "--suite", reference.suite, "--output", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "records").exists()
