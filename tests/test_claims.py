"""Run claims: an exclusive flock per name, refused to a second claimant, released on close and on SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vlpt.eval.claims import ClaimFolder

HOLDER = textwrap.dedent("""
    import sys, time
    from vlpt.eval.claims import ClaimFolder
    claim = ClaimFolder(sys.argv[1]).try_claim(sys.argv[2])
    print("held" if claim else "refused", flush=True)
    time.sleep(float(sys.argv[3]))
""")


def hold_in_other_process(folder, name: str, seconds: float = 60.0) -> subprocess.Popen:
    """A process that claims ``name`` and sleeps holding it (the claim is confirmed before returning)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name, str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_claimant_is_refused_until_the_first_releases(tmp_path):
    first, second = ClaimFolder(tmp_path), ClaimFolder(tmp_path)  # two owners, as two processes would be
    claim = first.try_claim("run-a")
    assert claim is not None and claim.held
    assert second.try_claim("run-a") is None
    other = second.try_claim("run-b")
    assert other is not None  # claims are per name
    claim.release()
    assert not claim.held
    with second.try_claim("run-a") as again:
        assert again.held and first.try_claim("run-a") is None
    assert first.try_claim("run-a") is not None  # the with block released it
    assert (tmp_path / "run-a.lock").is_file()  # lock files stay behind, harmlessly


def test_a_name_this_folder_already_holds_is_refused_instead_of_waiting_for_itself(tmp_path):
    claims = ClaimFolder(tmp_path)
    held = claims.claim("run-a")
    with pytest.raises(RuntimeError, match="already holds the claim .*run-a.lock"):
        claims.claim("run-a")
    held.release()
    claims.claim("run-a").release()


def test_a_claim_is_released_when_its_holder_is_killed(tmp_path):
    holder = hold_in_other_process(tmp_path, "run-a")
    claims = ClaimFolder(tmp_path)
    try:
        assert claims.try_claim("run-a") is None
        assert claims.holder("run-a") == f"pid {holder.pid} on {os.uname().nodename}"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    claim = claims.try_claim("run-a")  # no stale lock: the kernel dropped it with the process
    assert claim is not None
    assert claims.holder("run-a") == f"pid {os.getpid()} on {os.uname().nodename}"


def test_a_blocking_claim_waits_for_the_holder_to_end(tmp_path):
    holder = hold_in_other_process(tmp_path, "run-a", seconds=1.5)
    started = time.monotonic()
    with ClaimFolder(tmp_path).claim("run-a") as claim:
        waited = time.monotonic() - started
        assert claim.held
    assert waited > 1.0  # the holder slept 1.5 s holding it after confirming
    assert holder.wait(timeout=10) == 0


def test_a_forked_child_does_not_keep_its_parents_claim(tmp_path):
    """DataLoader workers are forked while a run is claimed; they must not hold the claim after the run."""
    folder = ClaimFolder(tmp_path)
    claim = folder.try_claim("run-a")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a worker that outlives the claim
        os.close(read)
        os.write(write, b"started")
        time.sleep(30)
        os._exit(0)
    try:
        os.close(write)
        assert os.read(read, 7) == b"started"
        claim.release()
        again = ClaimFolder(tmp_path).try_claim("run-a")
        assert again is not None, "the forked child kept the claim after its parent released it"
        again.release()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
