"""`vlpt bench` killed with SIGKILL (at a random moment, or just before a record, checkpoint or leaderboard file is
renamed into place) leaves no partial record, and resuming it gives exactly the records of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vlpt.results import RecordStore, validate_records

from board_text import unmeasured
from test_harness import write_suite

pytestmark = pytest.mark.slow  # spawns processes

#: SIGKILLs the process when os.replace is about to rename the NTH file matching PATTERN into place
KILL_BEFORE_RENAME = textwrap.dedent("""
    import fnmatch, os, signal, sys
    from vlpt.cli import main
    pattern, nth, seen, real_replace = sys.argv[1], int(sys.argv[2]), [], os.replace

    def replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.fspath(dst), pattern):
            seen.append(dst)
            if len(seen) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    sys.exit(main(sys.argv[3:]))
""")
RUNS = 6


def bench_env() -> dict:
    """One thread per process (bitwise-equal floats between processes, and modest CPU use)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def bench_command(suite: str, output: Path) -> list[str]:
    return [sys.executable, "-m", "vlpt", "bench", "--suite", suite, "--output", str(output)]


def run_bench(suite: str, output: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(bench_command(suite, output), env=bench_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def results(output: Path) -> dict[str, tuple]:
    """Run id -> (identity, metrics) of every record in ``output`` (each validated on the way)."""
    return {r.run_id: (r.identity, r.metrics) for r in RecordStore(output / "records").records()}


def assert_no_partial_records(output: Path) -> int:
    """Every records/*.json file is a whole, valid record; returns their number."""
    report = validate_records(output / "records")
    assert not report.problems, report.problems
    return report.checked


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny suite (zero-shot and 1-epoch CoOp, three seeds) run once, uninterrupted, in its own process."""
    folder = tmp_path_factory.mktemp("kill_resume")
    suite = write_suite(folder, backbone={"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
                        feature_cache={"folder": str(folder / "cache")}, experiments=[{
                            "protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1, 2, 3],
                            "params": {"epochs": 1}, "eval_limit": 48, "methods": ["zeroshot", "coop"]}])
    run_bench(suite, folder / "uninterrupted")
    found = results(folder / "uninterrupted")
    assert len(found) == RUNS
    return suite, found, (folder / "uninterrupted" / "LEADERBOARD.md").read_text()


def resume_and_compare(reference, output: Path) -> subprocess.CompletedProcess:
    suite, expected, board = reference
    resumed = run_bench(suite, output)
    assert results(output) == expected  # same run ids, bitwise-equal metrics
    assert unmeasured((output / "LEADERBOARD.md").read_text()) == unmeasured(board)  # cost cells are measured
    return resumed


def test_bench_killed_mid_suite_resumes_to_the_records_of_an_uninterrupted_run(reference, tmp_path):
    suite, _, _ = reference
    output = tmp_path / "killed"
    process = subprocess.Popen(bench_command(suite, output), env=bench_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((output / "records").glob("*.json")):
            assert process.poll() is None, "bench ended before writing a record"
            assert time.monotonic() < deadline, "no record within 300 s"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    written = assert_no_partial_records(output)
    assert 1 <= written < RUNS, "the kill came too late to interrupt the suite"
    resumed = resume_and_compare(reference, output)
    assert f"{RUNS - written} to do" in resumed.stdout


@pytest.mark.parametrize("pattern, nth, records_left", [
    ("records/*.json", 2, 1),        # the second record, whole in its temporary file, not yet in place
    ("checkpoints/*.pt", 1, 3),      # the first CoOp run's prompt (after the three zero-shot runs)
    ("LEADERBOARD.md", 1, RUNS),     # every record written, the leaderboard not
])
def test_bench_killed_just_before_a_file_is_renamed_into_place_resumes_exactly(reference, tmp_path, pattern, nth,
                                                                               records_left):
    suite, _, _ = reference
    output = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILL_BEFORE_RENAME, str(output / pattern), str(nth),
                             *bench_command(suite, output)[3:]], env=bench_env(), capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert assert_no_partial_records(output) == records_left
    left = sorted(output.rglob(".*.tmp"))  # the killed writer's temporary file, never read as a record
    assert len(left) == 1 and left[0].parent == (output / pattern).parent
    stale = time.time() - 120  # as if the crash was two minutes ago: its writer is dead, the file stale
    os.utime(left[0], (stale, stale))
    resumed = resume_and_compare(reference, output)
    assert f"removed 1 temporary file(s) left by interrupted writers in {left[0].parent}" in resumed.stdout
    assert not left[0].exists()
    assert f"{RUNS - records_left} to do" in resumed.stdout
