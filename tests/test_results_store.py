"""The record store: atomic writes, lookup by identity, skipping corrupt files, setting them aside, and removing
temporary files that killed writers left."""
import os
import subprocess
import sys
import time

import pytest

from vlpt.errors import ConfigError
from vlpt.results.record import RunIdentity, RunRecord
from vlpt.results.store import RecordStore, RecordWarning, atomic_write_text, remove_stale_temp_files


def make_record(seed=1, dataset="dtd", accuracy=60.0):
    identity = RunIdentity(
        method="coop", backbone="ViT-B-16", dataset=dataset, protocol="few_shot", shots=16, seed=seed
    )
    return RunRecord(identity=identity, metrics={"test": {"accuracy": accuracy}}, config={"lr": 0.002})


def test_write_round_trips_and_leaves_no_temp_files(tmp_path):
    store = RecordStore(tmp_path / "records")
    record = make_record()
    assert not store.has(record.identity)
    path = store.write(record)
    assert path == store.path_for(record.identity) == tmp_path / "records" / f"{record.run_id}.json"
    assert store.has(record.identity)
    assert os.listdir(tmp_path / "records") == [path.name]
    assert store.get(record.identity) == record
    assert store.records() == [record]


def test_write_replaces_existing_record(tmp_path):
    store = RecordStore(tmp_path)
    store.write(make_record(accuracy=50.0))
    store.write(make_record(accuracy=55.0))
    assert [r.metrics["test"]["accuracy"] for r in store.records()] == [55.0]
    assert len(os.listdir(tmp_path)) == 1


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_corrupt_records_are_warned_about_and_skipped(tmp_path):
    store = RecordStore(tmp_path)
    good = make_record()
    store.write(good)
    (tmp_path / "truncated.json").write_text('{"schema_version": 1, "run_id": ')
    (tmp_path / "wrong.json").write_text('{"schema_version": 1}')
    renamed = tmp_path / "0000000000000000.json"
    renamed.write_text(make_record(seed=2).to_json())
    with pytest.warns(RecordWarning) as caught:
        records = store.records()
    assert records == [good]
    messages = "\n".join(str(w.message) for w in caught)
    for name in ("truncated.json", "wrong.json", "0000000000000000.json"):
        assert name in messages
    with pytest.raises(ConfigError, match="truncated.json"):
        store.read(tmp_path / "truncated.json")


def test_records_are_sorted_and_missing_dir_is_empty(tmp_path):
    assert RecordStore(tmp_path / "absent").records() == []
    store = RecordStore(tmp_path)
    for seed in (3, 1, 2):
        for dataset in ("eurosat", "dtd"):
            store.write(make_record(seed=seed, dataset=dataset))
    order = [(r.identity.dataset, r.identity.seed) for r in store.records()]
    assert order == sorted(order)


def _dead_pid() -> int:
    """The id of a process that has ended."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_temporary_files_of_dead_or_old_writers_are_removed_and_others_kept(tmp_path):
    now = time.time()

    def temp(name, age):
        path = tmp_path / name
        path.write_text("{")
        os.utime(path, (now - age, now - age))
        return path

    dead = _dead_pid()
    removed = {
        temp(f".a.json.{dead}.0123abcd.tmp", 120),            # writer gone, a minute past
        temp(f".b.json.{os.getpid()}.0123abcd.tmp", 7200),    # old, whoever wrote it
        temp(".c.json.k2j_x9ab.tmp", 7200),                    # an old mkstemp-style name
    }
    kept = {
        temp(f".d.json.{dead}.0123abcd.tmp", 5),              # writer gone, but maybe on another machine
        temp(f".e.json.{os.getpid()}.0123abcd.tmp", 600),     # a running writer
        temp(".f.json.k2j_x9ab.tmp", 600),                     # no writer id, not old yet
        temp("0123456789abcdef.json", 7200),                   # a record
        temp(".hidden", 7200),                                 # not a temporary file
    }
    (tmp_path / ".g.tmp").mkdir()                              # a folder: not for this function
    assert set(remove_stale_temp_files(tmp_path, now=now)) == removed
    assert {p for p in tmp_path.iterdir()} == kept | {tmp_path / ".g.tmp"}
    assert remove_stale_temp_files(tmp_path / "absent") == []


def test_atomic_writes_use_a_name_that_says_which_process_writes(tmp_path, monkeypatch):
    names = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: names.append(os.path.basename(src)) or real_replace(src, dst))
    atomic_write_text(tmp_path / "out.json", "{}")
    (name,) = names
    assert name.startswith(".out.json.") and f".{os.getpid()}." in name and name.endswith(".tmp")


def test_an_unreadable_record_is_set_aside_under_a_free_name_and_kept(tmp_path):
    store = RecordStore(tmp_path)
    good = make_record()
    path = store.write(good)
    path.write_text('{"schema_version": 1, "run_id": ')
    first = store.set_aside(path)
    assert first == tmp_path / f"{path.name}.corrupt" and first.read_text() == '{"schema_version": 1, "run_id": '
    assert not path.exists() and store.get(good.identity) is None
    path.write_text("also broken")
    second = store.set_aside(path)
    assert second == tmp_path / f"{path.name}.corrupt-2" and second.read_text() == "also broken"
    assert first.read_text() == '{"schema_version": 1, "run_id": '
    store.write(good)
    assert store.records() == [good]  # set-aside files are not records
