"""Several `vlpt bench` processes on one output: each run is executed by exactly one of them, a run held by another
process is waited for (and run here if that process dies), and the records equal a serial run's."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.results import validate_records

from board_text import unmeasured
from test_claims import hold_in_other_process
from test_harness import write_suite
from test_kill_resume import bench_command, bench_env, results, run_bench

pytestmark = pytest.mark.slow  # spawns processes

STARTER_BACKBONE = {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"}
#: `vlpt bench` that imports everything, says it is ready, and starts when the file GO appears
STARTS_ON_GO = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import vlpt.eval.harness
    from vlpt.cli import main
    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    sys.exit(main(sys.argv[3:]))
""")


def transfer_suite(folder) -> str:
    """Zero-shot and CoOp over three seeds, and a CoOp run that starts from one of them (a run that must wait)."""
    few_shot = {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "params": {"epochs": 1},
                "eval_limit": 48}
    return write_suite(folder, backbone=STARTER_BACKBONE, feature_cache={"folder": str(folder / "cache")},
                       experiments=[
                           {**few_shot, "name": "src", "seeds": [1, 2, 3], "methods": ["zeroshot", "coop_m4"]},
                           {**few_shot, "seeds": [1], "methods": [
                               {"config": "coop_m4", "variant": "mvlpt", "init_from": "experiment:src/coop_m4"}]},
                       ])


def executed(stdout: str) -> list[str]:
    return re.findall(r"^running ([0-9a-f]{16}) ", stdout, flags=re.MULTILINE)


def test_two_bench_processes_on_one_output_run_each_run_once_and_match_a_serial_run(tmp_path):
    suite = transfer_suite(tmp_path)
    run_bench(suite, tmp_path / "serial")
    expected = results(tmp_path / "serial")
    assert len(expected) == 7

    output, go = tmp_path / "shared", tmp_path / "go"
    processes = []
    for name in ("a", "b"):
        command = [sys.executable, "-c", STARTS_ON_GO, str(tmp_path / f"ready-{name}"), str(go),
                   *bench_command(suite, output)[3:]]
        processes.append(subprocess.Popen(command, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{name}").exists() for name in ("a", "b")):
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline
        time.sleep(0.05)
    go.touch()  # both start their suites at once
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]

    ran = [executed(out) for out, _ in outputs]
    assert not set(ran[0]) & set(ran[1]), "a run was executed by both processes"
    assert sorted(ran[0] + ran[1]) == sorted(expected), "a run was executed by neither process"
    assert ran[0] and ran[1], "the two processes did not overlap: one ran every run"
    for (out, _), mine in zip(outputs, ran):
        todo = re.search(r"7 runs, (\d) to do", out)  # 7, or fewer when the other process was quicker to start
        assert todo, out[-2000:]
        elsewhere = int(todo.group(1)) - len(mine)
        if elsewhere:  # each process says how many of its runs to do the other one ran
            assert f"{elsewhere} of the {todo.group(1)} runs to do were run by other processes" in out
    report = validate_records(output / "records")
    assert report.checked == 7 and not report.problems
    assert results(output) == expected
    assert unmeasured((output / "LEADERBOARD.md").read_text()) == \
        unmeasured((tmp_path / "serial" / "LEADERBOARD.md").read_text())



def test_a_run_held_by_a_process_that_dies_is_waited_for_then_run_here_with_the_run_that_starts_from_it(
        tmp_path, monkeypatch, capsys):
    harness = Harness(load_suite(transfer_suite(tmp_path)), progress=False)
    runs = {(r.identity.method, r.identity.variant, r.identity.seed): r.identity.run_id for r in harness.suite.runs}
    source, target = runs[("coop", "coop_m4", 1)], runs[("coop", "mvlpt", 1)]
    holder = hold_in_other_process(harness.claims.folder, source)
    waits = []
    blocking = harness.claims.claim

    def claim_when_the_holder_dies(name):
        waits.append(name)
        holder.send_signal(signal.SIGKILL)  # the other process dies without the record
        return blocking(name)

    monkeypatch.setattr(harness.claims, "claim", claim_when_the_holder_dies)
    try:
        harness.run_all()
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert f"run {source} is being run by another process (pid {holder.pid} on " in out
    assert f"run {target} starts from run {source}, which another process is running" in out
    assert waits[0] == source
    assert "1 run(s) were left to other processes; waiting for them to finish" in out
    assert harness.executed.index(source) < harness.executed.index(target)
    assert sorted(harness.executed) == sorted(runs.values()) and executed(out) == harness.executed
    assert not validate_records(harness.store.directory).problems


@pytest.mark.parametrize("made_by_other", [False, True])
def test_an_initialisation_another_process_is_making_is_waited_for(tmp_path, monkeypatch, capsys, made_by_other):
    path = write_suite(tmp_path, initializations=[{"name": "g", "method": "coop_m4", "domains": "starter", "steps": 2}],
                       experiments=[{"protocol": "few_shot", "dataset": "starter_shapes", "methods": ["zeroshot"]}])
    harness = Harness(load_suite(path), progress=False)
    made = []
    monkeypatch.setattr("vlpt.meta.gram.run_gram", lambda method, backbone, out, *a, **k: made.append(out) or
                        out.parent.mkdir(parents=True, exist_ok=True) or out.write_bytes(b"init"))
    if made_by_other:
        harness.prepare_initializations()  # as the other process would have done before it ended
        made.clear()
    holder = hold_in_other_process(harness.claims.folder, "init-g")
    blocking = harness.claims.claim
    monkeypatch.setattr(harness.claims, "claim", lambda name: holder.send_signal(signal.SIGKILL) or blocking(name))
    try:
        harness.prepare_initializations()
    finally:
        holder.kill()
        holder.wait()
    assert f"waiting for initialisation 'g', which another process is making (pid {holder.pid} on" in \
        capsys.readouterr().out
    assert made == ([] if made_by_other else [harness.init_path("g")])
    assert harness.init_path("g").with_suffix(".spec.json").is_file()
