"""Corrupt files are reported and skipped, not fatal: records in `vlpt bench` (set aside, run again) and
`vlpt leaderboard` (skipped), feature cache entries (recomputed); a corrupt source checkpoint is a clear error."""
from __future__ import annotations

import json

from vlpt.cli import main
from vlpt.results import RecordStore

from test_harness import write_suite
from test_results_store import make_record

STARTER_BACKBONE = {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"}  # the same in every Harness


def _suite(tmp_path, experiments=None) -> str:
    return write_suite(tmp_path, backbone=STARTER_BACKBONE, feature_cache={"folder": str(tmp_path / "cache")},
                       experiments=experiments or [{
                           "protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1, 2],
                           "params": {"epochs": 1}, "eval_limit": 48, "methods": ["zeroshot", "coop"]}])


def test_bench_sets_corrupt_records_aside_reports_them_and_runs_their_runs_again(tmp_path, capsys):
    suite = _suite(tmp_path)
    assert main(["bench", "--suite", suite]) == 0
    records = tmp_path / "out" / "records"
    before = {path.name: json.loads(path.read_text()) for path in records.glob("*.json")}
    assert len(before) == 4
    truncated, renamed, other = sorted(records.glob("*.json"))[:3]
    broken = {truncated: truncated.read_bytes()[:50], renamed: other.read_bytes()}  # another run's record
    for path, content in broken.items():
        path.write_bytes(content)
    entries = sorted((tmp_path / "cache").glob("*.safetensors"))
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:100])
    capsys.readouterr()

    assert main(["bench", "--suite", suite]) == 0
    out, err = capsys.readouterr()
    assert "2 to do" in out
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("running ")) == \
        sorted([truncated.stem, renamed.stem])
    for path, problem in ((truncated, "cannot be read as JSON"), (renamed, ": file name does not match its run_id")):
        aside = path.with_name(f"{path.name}.corrupt")
        assert f"vlpt: warning: run record {path}{'' if problem[0] == ':' else ' '}{problem}" in err
        assert f"kept it as {aside} and running {path.stem} again" in err
        assert aside.read_bytes() == broken[path]  # nothing is lost
    assert f"vlpt: warning: feature cache entry {entries[0].parent}" in err and "is corrupt" in err
    after = {path.name: json.loads(path.read_text()) for path in records.glob("*.json")}
    assert after.keys() == before.keys()
    for name, record in after.items():
        assert record["metrics"] == before[name]["metrics"], name
    assert "from 4 records" in (tmp_path / "out" / "LEADERBOARD.md").read_text()


def test_leaderboard_reports_unreadable_records_on_stderr_and_builds_from_the_others(tmp_path, capsys):
    store = RecordStore(tmp_path / "records")
    for seed in (1, 2):
        store.write(make_record(seed=seed, accuracy=50.0 + seed))
    (tmp_path / "records" / "aaaaaaaaaaaaaaaa.json").write_text('{"schema_version": 1, "run_id": ')
    (tmp_path / "records" / "bbbbbbbbbbbbbbbb.json").write_text('{"schema_version": 1}')
    assert main(["leaderboard", "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"vlpt: warning: skipped: run record {tmp_path / 'records' / 'aaaaaaaaaaaaaaaa.json'} cannot be read " \
           f"as JSON" in err
    assert f"vlpt: warning: skipped: run record {tmp_path / 'records' / 'bbbbbbbbbbbbbbbb.json'}: missing field" in err
    board = (tmp_path / "LEADERBOARD.md").read_text()
    assert "from 2 records" in board and "51.50" in board


def test_a_corrupt_source_checkpoint_is_an_error_naming_the_file_and_what_to_delete(tmp_path, capsys):
    suite = _suite(tmp_path, experiments=[
        {"name": "src", "protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
         "params": {"epochs": 1}, "eval_limit": 24, "methods": ["coop_m4"]},
        {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1], "params": {"epochs": 1},
         "eval_limit": 24, "methods": [{"config": "coop_m4", "variant": "mvlpt", "init_from": "experiment:src"}]}])
    assert main(["bench", "--suite", suite]) == 0
    out = tmp_path / "out"
    ids = {r.identity.variant: r.identity.run_id for r in RecordStore(out / "records").records()}
    source, target = ids["coop_m4"], ids["mvlpt"]
    checkpoint = out / "checkpoints" / f"{source}.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    (out / "records" / f"{target}.json").unlink()
    capsys.readouterr()

    assert main(["bench", "--suite", suite]) == 2
    err = capsys.readouterr().err
    assert f"vlpt: error: run {target} starts from the prompt of run {source} (coop on starter_shapes, seed 1), " \
           f"but {checkpoint} cannot be read (" in err
    assert f"; delete it and {out / 'records' / f'{source}.json'} to run the source again" in err
    checkpoint.unlink()  # as told
    (out / "records" / f"{source}.json").unlink()
    assert main(["bench", "--suite", suite]) == 0
    assert len(RecordStore(out / "records").records()) == 2
