"""Record validation (one message per problem, naming file and field), merging, and the record schema."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlpt
from checkout import CHECKOUT, LEADERBOARD
from json_mutations import mutated
from vlpt.cli import main
from vlpt.errors import ConfigError
from vlpt.registry import method_names
from vlpt.results.publish import write_leaderboard
from vlpt.results.record import RunIdentity, RunRecord
from vlpt.results.store import RecordStore
from vlpt.results.protocols import protocol_names
from vlpt.results.validate import (
    FIELDS, IDENTITY_FIELDS, SCHEMA_PATH, check_record, expected_eval_sets, records_folder, schema,
    validate_files, validate_records,
)

REAL_RECORDS = LEADERBOARD / "records"


def real_records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(REAL_RECORDS.glob("*.json"))]


def record_data(protocol="few_shot", method="coop", metrics=None, targets=(), dataset="dtd", shots=16, seed=1,
                variant="default") -> dict:
    identity = RunIdentity(method=method, variant=variant, backbone="ViT-B-16", dataset=dataset,
                           protocol=protocol, shots=shots, seed=seed, targets=targets)
    record = RunRecord(identity=identity, metrics=metrics or {"test": {"accuracy": 63.5, "n": 1692}},
                       config={"lr": 0.002}, timings={"fit_s": 12.5}, peak_memory_mb=812.0,
                       library_versions={"python": "3.11.7", "torch": "2.15.0"}, git_commit="a" * 40,
                       git_dirty=False)
    return json.loads(record.to_json())


def rehash(data: dict) -> dict:
    """Set run_id to the hash of the (edited) identity, as RunIdentity.run_id computes it."""
    canonical = json.dumps(data["identity"], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    data["run_id"] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return data


def write(folder: Path, data, name: str | None = None, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{data['run_id']}.json")
    path.write_text(text if text is not None else json.dumps(data, indent=2))
    return path


def test_committed_records_are_all_valid(tmp_path):
    shutil.copytree(REAL_RECORDS, tmp_path / "records")
    for source in (tmp_path, tmp_path / "records"):  # an output folder or its records folder
        report = validate_records(source)
        assert report.ok, [str(p) for p in report.problems]
        assert report.checked == len(report.valid) == len(list(REAL_RECORDS.glob("*.json"))) > 90
    store_ids = {r.run_id for r in RecordStore(REAL_RECORDS).records()}
    assert {v.record.run_id for v in report.valid} == store_ids


def _set(path: str, value):
    def edit(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
        return data
    return edit


def _delete(path: str):
    def edit(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]
        return data
    return edit


B2N = dict(protocol="base_to_novel", metrics={"base": {"accuracy": 80.0, "n": 10}, "novel": {"accuracy": 70.0, "n": 9}})
XD = dict(protocol="cross_dataset", dataset="imagenet", targets=("caltech101", "dtd"),
          metrics={"test": {"accuracy": 70.0}, "caltech101": {"accuracy": 90.0}, "dtd": {"accuracy": 44.0}})
SEG = dict(protocol="segmentation", method="seg_coop", dataset="kvasir",
           metrics={"test": {"dice": 80.0, "iou": 70.0, "n": 100}})
TTA = dict(protocol="test_time", method="tpt", shots=0, targets=("imagenet_a",),
           metrics={"test": {"accuracy": 60.0, "adapt_ms_per_image": 12.0},
                    "imagenet_a": {"accuracy": 50.0, "adapt_ms_per_image": 13.0}})
MULTI = dict(protocol="multitask", dataset="dtd+eurosat",
             metrics={"dtd": {"accuracy": 60.0}, "eurosat": {"accuracy": 80.0}})

# (record kind, edit, whether the edit changes the identity, field named, message)
RULES = [
    ({}, _delete("timings"), False, "timings", r"timings is missing"),
    ({}, _delete("identity.seed"), True, "identity.seed", r"identity\.seed is missing"),
    ({}, _set("notes", "hand-edited"), False, "notes", r"notes is not a field of a run record \(fields: "),
    ({}, _set("identity.gpu", "a100"), True, "identity.gpu", r"identity\.gpu is not a field of an identity"),
    ({}, _set("identity.shots", "16"), True, "identity.shots",
     r"identity\.shots = '16' \(string\) is not an integer >= 0"),
    ({}, _set("identity.seed", 1.5), True, "identity.seed", r"identity\.seed = 1\.5 \(float\) is not an integer"),
    ({}, _set("identity.method", ""), True, "identity.method", r"identity\.method = '' \(string\) is not a non-empty"),
    ({}, _set("config", []), False, "config", r"config = \[\] \(list\) is not an object"),
    ({}, _set("config.feature_cache", {"train_views": "epoch"}), False, "config.feature_cache.train_views",
     r"config\.feature_cache\.train_views = 'epoch' \(string\) is not \"per_epoch\", a number of views"),
    ({}, _set("config.feature_cache", {"train_views": -1}), False, "config.feature_cache.train_views",
     r"config\.feature_cache\.train_views = -1 \(int\) is not"),
    ({}, _set("config.feature_cache", {}), False, "config.feature_cache.train_views",
     r"config\.feature_cache\.train_views is missing"),
    ({}, _set("config.backbone", {"model": "ViT-B-16", "activation": "relu"}), False, "config.backbone.activation",
     r"config\.backbone\.activation = 'relu' \(string\) is not \"quick_gelu\" or \"gelu\""),
    ({}, _set("config.backbone", None), False, "config.backbone", r"config\.backbone = None .*is not an object"),
    ({}, _set("config.test_time", {"views": ["augmix"]}), False, "config.test_time.views",
     r"config\.test_time\.views = .* is not an object \{evaluation set: view augmentation\}"),
    ({}, _set("config.test_time", {"stream": "sometimes"}), False, "config.test_time.stream",
     r"config\.test_time\.stream = 'sometimes' .*is not \"episodic\" or \"online\""),
    (TTA, _set("config.test_time", {"stream": "online"}), False, "config.test_time.stream",
     r"config\.test_time\.stream = 'online', but protocol test_time is episodic"),
    ({}, _set("config.test_time", "augmix"), False, "config.test_time",
     r"config\.test_time = .* is not an object \{stream, views"),
    ({}, _set("config.feature_cache", 8), False, "config.feature_cache",
     r"config\.feature_cache = 8 \(int\) is not an object \{train_views\}"),
    ({}, _set("schema_version", 2), False, "schema_version",
     r"schema_version = 2 is unknown \(this vlpt reads schema_version 1\)"),
    ({}, _delete("schema_version"), False, "schema_version", r"schema_version is missing"),
    ({}, _set("identity.seed", 7), False, "run_id", r"run_id = '[0-9a-f]{16}' does not match the identity, "
                                                    r"which hashes to '[0-9a-f]{16}'"),
    ({}, _set("identity.protocol", "few-shot"), True, "identity.protocol",
     r"identity\.protocol = 'few-shot' is not a known protocol \(valid: few_shot, "),
    ({}, _set("identity.method", "coopp"), True, "identity.method",
     r"identity\.method = 'coopp' is not a registered method \(valid: .*cocoop"),
    ({}, _set("metrics.test.accuracy", 130.0), False, "metrics.test.accuracy",
     r"metrics\.test\.accuracy = 130\.0 is out of range \[0, 100\]"),
    ({}, _set("metrics.test.accuracy", -0.5), False, "metrics.test.accuracy", r"-0\.5 is out of range \[0, 100\]"),
    ({}, _set("metrics.test.accuracy", "high"), False, "metrics.test.accuracy",
     r"metrics\.test\.accuracy = 'high' \(string\) is not a number"),
    ({}, _set("metrics.test.accuracy", True), False, "metrics.test.accuracy", r"True \(boolean\) is not a number"),
    ({}, _set("metrics.test.accuracy", 10 ** 400), False, "metrics.test.accuracy", r"is not a finite number"),
    ({}, _set("metrics.test.n", 0), False, "metrics.test.n", r"metrics\.test\.n = 0 is out of range \[1, inf\]"),
    ({}, _set("metrics.test.n", 2.5), False, "metrics.test.n", r"metrics\.test\.n = 2\.5 \(float\) is not an integer"),
    ({}, _set("metrics.test", 63.5), False, "metrics.test", r"metrics\.test = 63\.5 \(float\) is not an object"),
    ({}, _set("metrics.test.accuracy", None), False, "metrics.test.accuracy", r"None \(null\) is not a number"),
    ({}, _set("timings.fit_s", -1), False, "timings.fit_s", r"timings\.fit_s = -1 is out of range \[0, inf\]"),
    ({}, _set("peak_memory_mb", "lots"), False, "peak_memory_mb", r"peak_memory_mb = 'lots' \(string\) is not a number"),
    ({}, _set("library_versions.torch", 2), False, "library_versions.torch", r"\(int\) is not a version string"),
    ({}, _set("git_commit", "HEAD"), False, "git_commit", r"git_commit = 'HEAD' \(string\) is not a commit hash"),
    ({}, _set("git_dirty", "no"), False, "git_dirty", r"git_dirty = 'no' \(string\) is not true, false or null"),
    ({}, _set("metrics.val", {"accuracy": 50.0}), False, "metrics.val",
     r"metrics\.val is not an evaluation set of protocol few_shot \(expected: test\)"),
    ({}, _set("metrics.test", {"n": 10}), False, "metrics.test.accuracy",
     r"metrics\.test\.accuracy is missing \(protocol few_shot reports accuracy on every evaluation set\)"),
    ({}, _set("identity.targets", ["eurosat"]), True, "identity.targets",
     r"identity\.targets = \['eurosat'\] must be empty: protocol few_shot has no targets"),
    (B2N, _delete("metrics.novel"), False, "metrics.novel",
     r"metrics\.novel is missing \(protocol base_to_novel reports base, novel\)"),
    (XD, _delete("metrics.dtd"), False, "metrics.dtd", r"metrics\.dtd is missing \(protocol cross_dataset reports "
                                                       r"test, caltech101, dtd\)"),
    (XD, _set("identity.targets", []), True, "identity.targets",
     r"identity\.targets is empty: protocol cross_dataset needs at least one target"),
    (XD, _set("identity.targets", ["dtd", "dtd"]), True, "identity.targets", r"names a target twice"),
    (SEG, _set("metrics.test.dice", 100.5), False, "metrics.test.dice", r"100\.5 is out of range \[0, 100\]"),
    (SEG, _delete("metrics.test.iou"), False, "metrics.test.iou", r"protocol segmentation reports iou"),
    (TTA, _set("metrics.test.adapt_ms_per_image", -2.0), False, "metrics.test.adapt_ms_per_image",
     r"= -2\.0 is out of range \[0, inf\]"),
    (MULTI, _delete("metrics.eurosat"), False, "metrics.eurosat", r"protocol multitask reports dtd, eurosat"),
]


@pytest.mark.parametrize("kind, edit, identity_changed, field, message", RULES,
                         ids=[f"{r[3]}-{i}" for i, r in enumerate(RULES)])
def test_each_rule_names_file_and_field(tmp_path, kind, edit, identity_changed, field, message):
    base = record_data(**kind)
    assert check_record(base, f"{base['run_id']}.json") == []  # the unedited record is clean
    data = edit(base)
    if identity_changed:
        rehash(data)
    path = write(tmp_path / "records", data, name=f"{data.get('run_id', base['run_id'])}.json")
    report = validate_records(tmp_path, method_names())
    assert report.valid == []
    assert [p.field for p in report.problems] == [field], [str(p) for p in report.problems]
    problem = report.problems[0]
    assert problem.file == str(path)
    assert str(problem).startswith(f"{path}: ")
    assert re.search(message, problem.message), problem.message


def test_unedited_examples_are_valid(tmp_path):
    for kind in ({}, B2N, XD, SEG, TTA, MULTI):
        data = record_data(**kind)
        write(tmp_path, data)
        assert check_record(data, f"{data['run_id']}.json") == []
    report = validate_records(tmp_path)
    assert report.ok and len(report.valid) == 6


def test_method_names_come_from_the_caller(tmp_path):
    data = rehash(record_data(method="my_plugin_method"))
    write(tmp_path, data)
    assert validate_records(tmp_path).ok  # no names given: any method
    (problem,) = validate_records(tmp_path, ["coop", "zeroshot"]).problems
    assert problem.message == "identity.method = 'my_plugin_method' is not a registered method (valid: coop, zeroshot)"


def test_known_protocols_are_the_suites():
    from vlpt.protocols import protocol_names as suite_protocols

    assert protocol_names() == suite_protocols()


def test_unreadable_files(tmp_path):
    write(tmp_path, None, name="truncated.json", text='{"schema_version": 1, "run_id": ')
    write(tmp_path, None, name="list.json", text="[1, 2]")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    report = validate_records(tmp_path)
    messages = {Path(p.file).name: p.message for p in report.problems}
    assert messages["truncated.json"].startswith("is not valid JSON: ")
    assert messages["list.json"] == "expected a JSON object (a run record), found list"
    assert messages["binary.json"].startswith("cannot be read: ")
    assert all(p.field == "" for p in report.problems) and report.checked == 3


def test_nan_and_infinity_tokens(tmp_path):
    data = record_data()
    text = json.dumps(data).replace("63.5", "NaN").replace("12.5", "-Infinity")
    path = write(tmp_path, data, text=text)
    report = validate_records(tmp_path)
    assert [str(p) for p in report.problems] == [
        f"{path}: metrics.test.accuracy = nan is not a finite number",
        f"{path}: timings.fit_s = -inf is not a finite number",
    ]


def test_file_name_must_be_the_run_id(tmp_path):
    data = record_data()
    write(tmp_path, data, name="renamed.json")
    (problem,) = validate_records(tmp_path).problems
    assert problem.field == "run_id"
    assert re.search(rf"renamed\.json: run_id = '{data['run_id']}' but the file is named renamed\.json "
                     rf"\(a record is stored as {data['run_id']}\.json\)", str(problem))


def test_every_problem_of_a_file_is_reported(tmp_path):
    data = record_data()
    data["metrics"]["test"]["accuracy"] = 130.0
    data["timings"]["fit_s"] = -1.0
    del data["git_dirty"]
    write(tmp_path, data)
    fields = [p.field for p in validate_records(tmp_path).problems]
    assert sorted(fields) == ["git_dirty", "metrics.test.accuracy", "timings.fit_s"]


def test_duplicated_runs(tmp_path):
    data = record_data()
    first = write(tmp_path, data)
    other = dict(data, metrics={"test": {"accuracy": 70.0}})
    copy = write(tmp_path, other, name="zz-copy.json")
    report = validate_records(tmp_path)
    assert [v.path for v in report.valid] == [first]
    duplicate = [p for p in report.problems if p.field == "identity"]
    assert len(duplicate) == 1 and duplicate[0].file == str(copy)
    assert f"identity duplicates the run in {first} (run_id {data['run_id']})" in str(duplicate[0])
    # the same run in two folders, files given one by one
    elsewhere = write(tmp_path / "elsewhere", data)
    report = validate_files([first, elsewhere])
    assert [v.path for v in report.valid] == [first]
    assert [(p.file, p.field) for p in report.problems] == [(str(elsewhere), "identity")]


def test_records_folder_resolution(tmp_path):
    (tmp_path / "out" / "records").mkdir(parents=True)
    assert records_folder(tmp_path / "out") == tmp_path / "out" / "records"
    assert records_folder(tmp_path / "out" / "records") == tmp_path / "out" / "records"
    with pytest.raises(ConfigError, match="records folder .*absent does not exist"):
        validate_records(tmp_path / "absent")
    data = record_data()
    single = write(tmp_path, data)
    assert validate_records(single).ok


# ---------------------------------------------------------------- CLI: validate


def test_cli_validate(tmp_path, capsys):
    shutil.copytree(REAL_RECORDS, tmp_path / "records")
    assert main(["leaderboard", "validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\d+ record file\(s\) checked: \d+ valid, 0 with problems", out)

    victim = sorted((tmp_path / "records").glob("*.json"))[0]
    data = json.loads(victim.read_text())
    eval_set, metrics = next(iter(data["metrics"].items()))
    name = "accuracy" if "accuracy" in metrics else "dice"
    metrics[name] = 130.0
    victim.write_text(json.dumps(data))
    assert main(["leaderboard", "validate", str(tmp_path / "records")]) == 1
    captured = capsys.readouterr()
    assert f"{victim}: metrics.{eval_set}.{name} = 130.0 is out of range [0, 100]" in captured.out
    assert "1 with problems" in captured.err
    assert main(["leaderboard", "validate", str(tmp_path / "absent")]) == 2


def test_cli_validate_and_merge_check_registered_methods(tmp_path, capsys):
    path = write(tmp_path / "records", rehash(record_data(method="coopp")))
    assert main(["leaderboard", "validate", str(tmp_path)]) == 1
    assert f"{path}: identity.method = 'coopp' is not a registered method (valid: " in capsys.readouterr().out
    assert main(["leaderboard", "merge", str(tmp_path), "--into", str(tmp_path / "board")]) == 1
    assert "refused: " in capsys.readouterr().out and not list((tmp_path / "board" / "records").glob("*.json"))


def test_cli_leaderboard_without_subcommand_still_rebuilds(tmp_path):
    shutil.copytree(REAL_RECORDS, tmp_path / "records")
    assert main(["leaderboard", "--output", str(tmp_path)]) == 0
    shutil.copytree(REAL_RECORDS, tmp_path / "reference" / "records")
    write_leaderboard(tmp_path / "reference" / "records", tmp_path / "reference")
    for name in ("LEADERBOARD.md", "leaderboard.csv"):
        assert (tmp_path / name).read_text() == (tmp_path / "reference" / name).read_text()


# ---------------------------------------------------------------- merge


def test_merge_copies_valid_refuses_invalid_reports_conflicts(tmp_path, capsys):
    real = sorted(REAL_RECORDS.glob("*.json"))
    board = tmp_path / "board"
    (board / "records").mkdir(parents=True)
    for path in real[:10]:
        shutil.copy(path, board / "records")
    write_leaderboard(board / "records", board)

    external = tmp_path / "external"
    external.mkdir()
    for path in real[5:20]:  # 5 already on the board (same content), 10 new
        shutil.copy(path, external)
    conflicting = json.loads(real[0].read_text())
    conflicting["metrics"] = {k: dict(v, n=v.get("n", 1) + 1) for k, v in conflicting["metrics"].items()}
    write(tmp_path / "external2", conflicting)
    bad = record_data(metrics={"test": {"accuracy": 130.0}})
    bad_path = write(tmp_path / "external2", bad)
    before = (board / "records" / real[0].name).read_text()

    status = main(["leaderboard", "merge", str(external), str(tmp_path / "external2"), "--into", str(board)])
    assert status == 1
    out = capsys.readouterr().out
    assert f"refused: {bad_path}: metrics.test.accuracy = 130.0 is out of range [0, 100]" in out
    assert f"conflict: {tmp_path / 'external2' / real[0].name}: run {real[0].stem} is already in " in out
    assert "merged 10 record(s)" in out and "5 already there, 1 refused, 1 conflict(s)" in out

    assert sorted(p.name for p in (board / "records").glob("*.json")) == sorted(p.name for p in real[:20])
    assert (board / "records" / real[0].name).read_text() == before  # the conflict left the board's record
    for path in real[10:20]:
        assert (board / "records" / path.name).read_bytes() == path.read_bytes()
    assert not list((board / "records").glob(".*"))  # no temporary files left
    assert "from 20 records" in (board / "LEADERBOARD.md").read_text()

    # merging again: everything already there, nothing changes, no problem
    capsys.readouterr()
    assert main(["leaderboard", "merge", str(external), "--into", str(board)]) == 0
    assert "merged 0 record(s)" in capsys.readouterr().out


def test_merge_into_empty_board_reproduces_the_leaderboard(tmp_path):
    from vlpt.results.merge import merge_records

    report = merge_records([LEADERBOARD], tmp_path / "board")
    assert report.ok and len(report.copied) == len(list(REAL_RECORDS.glob("*.json")))
    assert report.leaderboard == [tmp_path / "board" / "LEADERBOARD.md", tmp_path / "board" / "leaderboard.csv"]
    shutil.copytree(REAL_RECORDS, tmp_path / "reference" / "records")
    write_leaderboard(tmp_path / "reference" / "records", tmp_path / "reference")
    for name in ("LEADERBOARD.md", "leaderboard.csv"):
        assert (tmp_path / "board" / name).read_text() == (tmp_path / "reference" / name).read_text()


def test_merge_conflict_between_sources(tmp_path):
    from vlpt.results.merge import merge_records

    one = record_data()
    two = dict(record_data(), timings={"fit_s": 99.0})
    write(tmp_path / "a", one)
    write(tmp_path / "b", two)
    write(tmp_path / "c", one)
    report = merge_records([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "board")
    assert len(report.copied) == 1 and len(report.conflicts) == 1
    assert report.repeated == [tmp_path / "c" / f"{one['run_id']}.json"] and not report.ok
    assert str(tmp_path / "b" / f"{one['run_id']}.json") in report.conflicts[0]
    assert json.loads(report.copied[0].read_text()) == one


# ---------------------------------------------------------------- the schema file


def test_schema_describes_the_layout():
    doc = schema()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert tuple(doc["required"]) == FIELDS and doc["properties"]["schema_version"]["const"] == 1
    identity = doc["properties"]["identity"]
    assert tuple(identity["required"]) == IDENTITY_FIELDS
    assert all(protocol in identity["properties"]["protocol"]["description"] for protocol in protocol_names())
    for protocol in protocol_names():  # the validator knows which sets every protocol reports
        assert expected_eval_sets(protocol, "a+b", ["t"])


def test_schema_ships_as_package_data():
    import fnmatch
    import tomllib

    config = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["vlpt"]
    relative = SCHEMA_PATH.relative_to(Path(vlpt.__file__).resolve().parent).as_posix()
    assert SCHEMA_PATH.is_file() and any(fnmatch.fnmatch(relative, p) for p in patterns)


def test_schema_accepts_every_committed_record():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema())
    validator = jsonschema.Draft202012Validator(schema())
    for data in real_records():
        assert not list(validator.iter_errors(data)), data["run_id"]


# ---------------------------------------------------------------- properties

BASES = [record_data(**kind) for kind in ({}, B2N, XD, SEG, TTA, MULTI)]
REAL = real_records()
KEYS = st.text(max_size=8) | st.sampled_from([*FIELDS, *IDENTITY_FIELDS, "accuracy", "n", "test", "base"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mutated_record_validates_or_names_the_file(data):
    base = data.draw(st.sampled_from(BASES + REAL[::7]))
    doc = data.draw(mutated(base, keys=KEYS))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{base['run_id']}.json"
        path.write_text(json.dumps(doc))  # NaN and Infinity become JSON tokens the reader sees
        report = validate_records(folder)
    assert report.checked == 1
    for problem in report.problems:
        assert str(problem).startswith(f"{path}: ") and problem.file == str(path)
        assert isinstance(problem.field, str) and problem.message
    if report.ok:
        (valid,) = report.valid
        assert valid.record.to_dict()["run_id"] == valid.data["run_id"]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_validator_refuses_whatever_the_schema_refuses(data):
    jsonschema = pytest.importorskip("jsonschema")
    base = data.draw(st.sampled_from(BASES + REAL[::11]))
    doc = data.draw(mutated(base, keys=KEYS))
    schema_errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(doc))
    problems = check_record(doc, f"{base['run_id']}.json")
    if schema_errors:
        assert problems, [e.message for e in schema_errors]


@settings(max_examples=30, deadline=None)
@given(text=st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_is_reported_not_raised(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.json"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        report = validate_records(folder)
    assert not report.valid and report.problems
    assert all(str(p).startswith(f"{path}: ") for p in report.problems)


def test_feature_cache_settings_of_every_kind_are_valid():
    """``config.feature_cache.train_views``: the default per_epoch, a number of stored views (0: centre view)."""
    jsonschema = pytest.importorskip("jsonschema")
    for views in ("per_epoch", 8, 1, 0, None):
        data = record_data()
        data["config"]["feature_cache"] = {"train_views": views}
        assert check_record(data, f"{data['run_id']}.json") == [], views
        jsonschema.validate(data, schema())
