"""The record store: atomic writes, lookup by identity, skipping corrupt files."""
import os

import pytest

from vlpt.errors import ConfigError
from vlpt.results.record import RunIdentity, RunRecord
from vlpt.results.store import RecordStore, RecordWarning, atomic_write_text


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
