"""Which runs of a suite to execute, in which process, and in which order.

A run with a valid record of its spec is done; a record that cannot be read is reported, set aside as
``<name>.json.corrupt`` and its run done again; a record of another spec (``vlpt.eval.spec``) is an error that
names the file to delete. Several processes may run one suite into one output folder: each run is claimed
(``vlpt.eval.claims``) by the process that executes it, a run another process holds is waited for at the end,
and a run whose prompt starts from another run's waits for (or executes) that run first.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from vlpt.data.feature_cache import default_cache_folder
from vlpt.errors import ConfigError
from vlpt.eval.rebuild import rebuild_leaderboard
from vlpt.eval.resume import CHECKPOINT_NAME, remove_checkpoint
from vlpt.eval.spec import RunSpec
from vlpt.eval.suite import shard_of
from vlpt.eval.training import is_global_zero, leave_process_group, trains_in_one_process
from vlpt.results import RecordWarning, RunRecord
from vlpt.results.store import remove_stale_temp_files


def say(message: str) -> None:
    """A line on stdout, above the suite's progress bar when one is shown, at once."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def pending(harness) -> list:
    """Runs (of the harness's shard) without a valid record; a record made with another spec is an error."""
    index, count = harness.shard
    shards = shard_of(harness.suite, count)
    return [run for run in harness.suite.runs
            if shards[run.identity.run_id] == index and stored(harness, run) is None]


def stored(harness, run, set_aside: bool = False) -> RunRecord | None:
    """The run's record; None when there is none or it cannot be read (then reported once, and with
    ``set_aside`` renamed to ``<name>.json.corrupt``). A record of another spec raises ConfigError."""
    store = harness.store
    path = store.path_for(run.identity)
    try:
        record = store.get(run.identity)
    except ConfigError as exc:
        if set_aside:
            aside = store.set_aside(path)
            warnings.warn(f"{exc}; kept it as {aside} and running {run.identity.run_id} again", RecordWarning,
                          stacklevel=2)
        elif path not in harness.reported:
            warnings.warn(f"{exc}; its run will run again", RecordWarning, stacklevel=2)
        harness.reported.add(path)
        return None
    if record is None:
        return None
    spec = harness.run_spec(run)
    computed, changed = spec.staleness(RunSpec.from_record(record.config, harness.unrecorded_activation,
                                                           spec.result_neutral))
    where = (f"record {path} ({run.identity.method}, variant {run.identity.variant!r}, {run.identity.dataset}, "
             f"seed {run.identity.seed})")
    if computed:
        raise ConfigError(f"{where} was computed otherwise than the suite asks ({'; '.join(computed)}); "
                          f"delete it to run again")
    if changed:
        raise ConfigError(f"{where} was made with other settings than the suite's ({', '.join(changed)}); delete it "
                          f"to run again, or give the changed entry its own `variant:`")
    return record


def run_all(harness) -> list[Path]:
    """Execute every run of the shard without a record, then rebuild the leaderboard; returns its files.

    Each executed run prints ``running <run_id> (...)``. A run another process is executing is left to it and
    waited for at the end, and run here if that process ends without its record; so when this returns, every
    run of the shard has a record. Under DDP (several processes per run) runs are not claimed: one DDP job per
    output folder.
    """
    try:
        files = _run_all(harness)
    except BaseException:
        leave_process_group(wait=False)  # the other DDP processes fail fast instead of waiting at a barrier
        raise
    leave_process_group(wait=True)
    return files


def _run_all(harness) -> list[Path]:
    harness.executed = []
    if is_global_zero():
        remove_stale_files(harness)
    todo = pending(harness)
    harness.check_data(todo)
    needed = {run.init_name for run in todo if run.init_name}
    if needed:
        harness.prepare_initializations(needed)
    claiming = trains_in_one_process(harness.suite.trainer)
    bar = tqdm(todo, desc=f"suite {harness.suite.name}", unit="run", disable=None if harness.progress else True)
    left = []
    for run in bar:
        bar.set_postfix_str(f"{run.identity.method}/{run.identity.dataset}/seed{run.identity.seed}")
        if claiming:
            if not _run_claimed(harness, run, wait=False):
                left.append(run)
        else:
            if is_global_zero():
                stored(harness, run, set_aside=True)  # a corrupt record file in the way is kept
            _run(harness, run)
    if left:
        print(f"{len(left)} run(s) were left to other processes; waiting for them to finish", flush=True)
        for run in left:
            _run_claimed(harness, run, wait=True)
    return rebuild_leaderboard(harness.output) if is_global_zero() else []


def _run_claimed(harness, run, wait: bool) -> bool:
    """Execute the run under its claim unless it has a record by then; False when another process holds the
    claim (and ``wait`` is False)."""
    run_id = run.identity.run_id
    claims = harness.claims
    claim = claims.claim(run_id) if wait else claims.try_claim(run_id)
    if claim is None:
        say(f"run {run_id} is being run by another process ({claims.holder(run_id)})")
        return False
    with claim:
        if stored(harness, run, set_aside=True) is None:
            _wait_for_source(harness, run)
            _run(harness, run)
    return True


def _wait_for_source(harness, run) -> None:
    """Wait until the run whose prompt this one starts from has its record: another process may be running it
    (wait for its claim); run it here if nobody has."""
    source = run.init_source
    if source is None:
        return
    source_run = next(r for r in harness.suite.runs if r.identity.run_id == source.run_id)
    if stored(harness, source_run) is not None:
        return
    claims = harness.claims
    claim = claims.try_claim(source.run_id)
    if claim is None:
        say(f"run {run.identity.run_id} starts from run {source.run_id}, which another process is running "
            f"({claims.holder(source.run_id)}); waiting for it")
        claim = claims.claim(source.run_id)
    with claim:
        if stored(harness, source_run, set_aside=True) is None:
            _wait_for_source(harness, source_run)
            _run(harness, source_run)


def _run(harness, run) -> None:
    """Execute one run and write its record (the first DDP process prints and writes)."""
    if is_global_zero():
        say(f"running {run.identity.run_id} ({run.identity.describe()})")
    record = harness.execute(run)
    if record is not None:
        harness.store.write(record)
        remove_checkpoint(harness.resume_path(run.identity))  # a failure before this resumes the training
    harness.executed.append(run.identity.run_id)


def remove_stale_files(harness) -> None:
    """Remove temporary files that killed writers left in the output folders and the feature cache, and the
    mid-training checkpoints of runs whose record exists."""
    folders = [harness.output, harness.store.directory, harness.checkpoints, harness.inits]
    if harness.suite.feature_cache.enabled:
        folders.append(Path(harness.suite.feature_cache.folder or default_cache_folder()))
    for folder in folders:
        removed = remove_stale_temp_files(folder)
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by interrupted writers in {folder}")
    for checkpoint in sorted(harness.output.glob(f".lightning/*/{CHECKPOINT_NAME}")):
        if harness.store.directory.joinpath(f"{checkpoint.parent.name}.json").is_file():
            remove_checkpoint(checkpoint)  # its run's record was written just before a kill
