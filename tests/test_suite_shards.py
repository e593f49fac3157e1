"""Splitting a suite across workers (`vlpt bench --shard I/N`)."""
from __future__ import annotations

import pytest

from vlpt.cli import main
from vlpt.eval.harness import Harness
from vlpt.eval.suite import DEFAULT_SUITE, load_suite, shard_of

from test_harness import write_suite


@pytest.mark.parametrize("count", [2, 3, 5])
def test_shards_partition_the_suite_and_keep_dependent_runs_together(count):
    suite = load_suite(DEFAULT_SUITE)
    shards = shard_of(suite, count)
    assert shards.keys() == {run.identity.run_id for run in suite.runs}
    assert set(shards.values()) == set(range(count))  # every worker gets work, none gets a run twice
    by_id = {run.identity.run_id: run for run in suite.runs}
    dependent = [run for run in suite.runs if run.init_source is not None]
    assert dependent and all(shards[r.identity.run_id] == shards[r.init_source.run_id] for r in dependent)
    for name in {run.init_name for run in suite.runs if run.init_name}:
        assert len({shards[i] for i, r in by_id.items() if r.init_name == name}) == 1


def test_shards_run_separately_fill_one_records_folder(tmp_path, capsys):
    path = write_suite(tmp_path)
    suite = load_suite(path)
    first, second = Harness(suite, progress=False, shard=(0, 2)), Harness(suite, progress=False, shard=(1, 2))
    assert len(first.pending()) + len(second.pending()) == len(suite.runs) == 4
    assert not {r.identity.run_id for r in first.pending()} & {r.identity.run_id for r in second.pending()}
    assert main(["bench", "--suite", path, "--shard", "0/2"]) in (0, None)
    assert second.pending() and len(Harness(suite, progress=False).pending()) == len(second.pending())
    assert main(["bench", "--suite", path, "--shard", "1/2"]) in (0, None)
    assert Harness(suite, progress=False).pending() == []
    assert len(list((tmp_path / "out" / "records").glob("*.json"))) == 4
    assert "4 records" in (tmp_path / "out" / "LEADERBOARD.md").read_text()
