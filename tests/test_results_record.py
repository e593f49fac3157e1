"""Run identity hashing, record (de)serialization and environment capture."""
import dataclasses
import json
import subprocess

import pytest

from vlpt.errors import ConfigError
from vlpt.results.record import RunIdentity, RunRecord, git_state, library_versions


def make_identity(**overrides):
    fields = dict(method="coop", backbone="ViT-B-16", dataset="dtd", protocol="few_shot", shots=16, seed=1)
    fields.update(overrides)
    return RunIdentity(**fields)


def make_record(**overrides):
    return RunRecord(
        identity=overrides.pop("identity", make_identity()),
        metrics={"test": {"accuracy": 63.5}},
        config={"lr": 0.002, "epochs": 200},
        timings={"fit_s": 12.5},
        peak_memory_mb=812.0,
        library_versions={"python": "3.11.7"},
        git_commit="0" * 40,
        git_dirty=False,
        **overrides,
    )


def test_run_id_is_stable_and_hex():
    a = make_identity(targets=["dtd", "eurosat"])
    b = make_identity(targets=("dtd", "eurosat"))
    assert a.run_id == b.run_id
    assert len(a.run_id) == 16 and int(a.run_id, 16) >= 0
    # pinned: the id must not change between vlpt versions, or existing records would be orphaned
    assert make_identity().run_id == "29068c625d3c1898"
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize(
    "change",
    [
        {"method": "cocoop"}, {"variant": "csc"}, {"backbone": "RN50"}, {"dataset": "eurosat"},
        {"protocol": "base_to_novel"}, {"shots": 8}, {"seed": 2}, {"targets": ["eurosat"]},
    ],
)
def test_run_id_changes_with_every_field(change):
    assert make_identity(**change).run_id != make_identity().run_id


def test_identity_rejects_bad_values():
    with pytest.raises(ConfigError, match="shots"):
        make_identity(shots=-1)
    with pytest.raises(ConfigError, match="method"):
        make_identity(method="")


def test_record_json_round_trip():
    record = make_record()
    text = record.to_json()
    assert text.endswith("\n")
    data = json.loads(text)
    assert data["schema_version"] == 1 and data["run_id"] == record.run_id
    assert RunRecord.from_dict(data, source="x.json") == record


def test_from_dict_names_source_and_field():
    data = json.loads(make_record().to_json())
    del data["identity"]["seed"]
    with pytest.raises(ConfigError, match=r"records/abc\.json.*'identity\.seed'"):
        RunRecord.from_dict(data, source="records/abc.json")

    data = json.loads(make_record().to_json())
    data["metrics"]["test"]["accuracy"] = "high"
    with pytest.raises(ConfigError, match=r"r\.json.*'metrics'"):
        RunRecord.from_dict(data, source="r.json")

    data = json.loads(make_record().to_json())
    data["schema_version"] = 2
    with pytest.raises(ConfigError, match="schema_version"):
        RunRecord.from_dict(data, source="r.json")


def test_from_dict_rejects_edited_identity():
    data = json.loads(make_record().to_json())
    data["identity"]["seed"] = 3
    with pytest.raises(ConfigError, match="run_id"):
        RunRecord.from_dict(data, source="r.json")


def test_to_json_rejects_nan():
    record = dataclasses.replace(make_record(), metrics={"test": {"accuracy": float("nan")}})
    with pytest.raises(ConfigError, match="metrics"):
        record.to_json()


def test_library_versions_lists_every_library():
    versions = library_versions()
    expected = {"python", "torch", "torchvision", "open_clip", "lightning", "timm", "sklearn", "numpy", "vlpt"}
    assert expected <= set(versions)
    assert all(isinstance(v, str) and v for v in versions.values())


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_state(tmp_path):
    assert git_state(tmp_path) is None  # not a repository
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    tracked = tmp_path / "a.txt"
    tracked.write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    state = git_state(tracked)
    assert state is not None and len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "untracked.json").write_text("{}")
    assert git_state(tmp_path)["dirty"] is False
    tracked.write_text("two\n")
    assert git_state(tmp_path)["dirty"] is True
