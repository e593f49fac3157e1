"""Protocols are one module each plus a facts file: the harness, preflight, suite loader and results ask the
protocol object (``vlpt.protocols``) or its facts (``vlpt.results.protocols``) instead of branching on names.
A new protocol written outside vlpt (``protocol_few_shot_val.py``, one module) runs end to end."""
from __future__ import annotations

import importlib
import sys

import pytest
import yaml

from vlpt.errors import ConfigError
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.protocols import base as protocol_base
from vlpt.protocols import build_data, get_protocol, protocol_names
from vlpt.results import protocols as facts_module
from vlpt.results.leaderboard import aggregate, render_markdown
from vlpt.results.protocols import all_facts, facts_from_dict, protocol_facts
from vlpt.results.validate import validate_records


def test_every_protocol_has_a_module_and_a_facts_file():
    assert set(protocol_names()) == set(all_facts())
    for name in protocol_names():
        protocol = get_protocol(name)
        assert protocol.name == name and protocol.facts is protocol_facts(name)
        assert protocol.facts.task in ("classification", "segmentation")


def test_facts_drive_the_evaluation_sets_and_the_derived_columns():
    assert protocol_facts("base_to_novel").expected_eval_sets("d", []) == ["base", "novel"]
    assert protocol_facts("multitask").expected_eval_sets("a+b", []) == ["a", "b"]
    assert protocol_facts("test_time").expected_eval_sets("d", ["t1", "t2"]) == ["test", "t1", "t2"]
    columns = protocol_facts("segmentation").table_columns(["k", "c"])
    assert [c.header for c in columns] == ["Dice", "IoU", "k Dice", "k IoU", "c Dice", "c IoU"]
    assert [(c.set, c.metric) for c in columns[2:4]] == [("k", "dice"), ("k", "iou")]


@pytest.mark.parametrize("change, message", [
    ({"targets": "some"}, "targets is 'some'; expected one of none, optional, required"),
    ({"colums": []}, "unknown key\\(s\\) colums"),
    ({"columns": [{"heading": "x"}]}, "columns: .*heading"),
])
def test_bad_facts_name_the_file_and_the_key(change, message):
    with pytest.raises(ConfigError, match=f"my.yaml: {message}"):
        facts_from_dict("mine", {"title": "Mine", "order": 9, **change}, "my.yaml")


def test_plot_names_of_facts_files_are_the_pages_plots():
    from vlpt.results.protocols import PLOT_NAMES
    from vlpt.results.site import PLOTS

    assert set(PLOTS) == set(PLOT_NAMES)
    with pytest.raises(ConfigError, match="plot is 'pie'"):
        facts_from_dict("mine", {"title": "Mine", "order": 9, "plot": "pie"}, "my.yaml")


def test_a_suite_is_checked_by_its_protocol(tmp_path):
    def suite(**experiment):
        path = tmp_path / "suite.yaml"
        base = {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1], "methods": ["coop"]}
        path.write_text(yaml.safe_dump({"name": "s", "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
                                        "data_root": str(tmp_path / "data"),
                                        "experiments": [{**base, **experiment}]}))
        return path

    with pytest.raises(ConfigError, match="protocol few_shot takes no targets"):
        load_suite(suite(targets=["starter_digits"]))
    with pytest.raises(ConfigError, match="`vlsm` is for protocol segmentation only"):
        load_suite(suite(vlsm={"kind": "clip_decoder"}))
    with pytest.raises(ConfigError, match="protocol test_time trains nothing"):
        load_suite(suite(protocol="test_time"))
    with pytest.raises(ConfigError, match=r"suite.yaml: experiments\[0\]: vlsm: unknown key"):
        load_suite(suite(protocol="segmentation", dataset="starter_seg_shapes", methods=["seg_coop"],
                         vlsm={"kindd": "clip_decoder"}))
    with pytest.raises(ConfigError, match="not a classification protocol over one dataset"):
        build_data("multitask", None, 1, 1)


@pytest.fixture
def few_shot_val():
    """The protocol of tests/protocol_few_shot_val.py, registered for one test and removed afterwards."""
    module = importlib.import_module("protocol_few_shot_val")
    yield module
    protocol_base._REGISTRY.pop("few_shot_val", None)
    facts_module._registered.pop("few_shot_val", None)
    sys.modules.pop("protocol_few_shot_val", None)


def test_a_new_protocol_is_one_module(tmp_path, few_shot_val):
    suite = {
        "name": "plugin", "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
        "data_root": str(tmp_path / "data"), "output": str(tmp_path / "out"), "feature_cache": False,
        "experiments": [{"protocol": "few_shot_val", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                         "params": {"epochs": 1}, "methods": ["zeroshot", "coop"]}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    harness = Harness(load_suite(path), progress=False)
    harness.run_all()
    report = validate_records(harness.store.directory)
    assert report.ok and len(report.valid) == 2
    source = harness.dataset("starter_shapes")
    for valid in report.valid:
        assert set(valid.record.metrics) == {"test", "val"}
        assert valid.record.metrics["val"]["n"] == len(source.val)
        assert valid.record.metrics["test"]["n"] == len(source.test)
    table = render_markdown(aggregate([v.record for v in report.valid]), 2, "records")
    assert "## Few-shot, scored on val and test (`few_shot_val`)" in table
    assert "| Test | Val |" in table and "Val: the dataset's whole validation split." in table
