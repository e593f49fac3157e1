"""Malformed suite files: whatever the content, `load_suite` returns a suite or raises a VlptError naming the file."""
from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from json_mutations import mutated
from vlpt.errors import ConfigError, VlptError
from vlpt.eval.suite import DEFAULT_SUITE, Suite, load_suite

STARTER = yaml.safe_load(DEFAULT_SUITE.read_text())
TINY = {
    "name": "tiny",
    "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
    "feature_cache": {"train_views": 2},
    "experiments": [
        {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1, 2],
         "params": {"epochs": 1}, "methods": ["zeroshot", {"config": "cocoop", "params": {"chunk_memory_mb": 64}}]},
        {"name": "src", "protocol": "cross_dataset", "dataset": "starter_digits",
         "targets": ["starter_rendered_digits~pixelate:2"], "shots": [1], "seeds": [1], "methods": ["coop"]},
        {"protocol": "test_time", "dataset": "starter_digits", "shots": [1], "seeds": [1],
         "methods": [{"config": "tpt", "variant": "coop-init", "init_from": "experiment:src/coop"}]},
    ],
}
SUITE_KEYS = sorted({k for doc in (STARTER, TINY) for k in doc} | {
    "protocol", "dataset", "datasets", "targets", "shots", "seeds", "methods", "params", "config", "variant",
    "init_from", "trainer", "precision", "devices", "epochs", "lr", "batch_size", "vlsm", "eval_limit",
})
KEYS = st.text(max_size=8) | st.sampled_from(SUITE_KEYS) | st.integers(-2, 2) | st.booleans()


def load(doc) -> tuple[Path, object]:
    """Write ``doc`` as a suite file in a fresh folder and load it: (path, Suite or the error raised)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "suite.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
        try:
            return path, load_suite(path)
        except VlptError as exc:
            return path, exc


def test_the_unmutated_suites_load():
    for doc in (STARTER, TINY):
        path, result = load(doc)
        assert isinstance(result, Suite), result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_suites_fail_only_with_a_vlpt_error_naming_the_file(data):
    doc = data.draw(mutated(data.draw(st.sampled_from([STARTER, TINY])), keys=KEYS))
    path, result = load(doc)  # any exception other than a VlptError fails the test
    if isinstance(result, VlptError):
        assert str(path) in str(result), str(result)
    else:
        assert isinstance(result, Suite)


@pytest.mark.parametrize("change, message", [
    # each escaped as another exception type (TypeError, OverflowError, ValueError) or without the suite's
    # name before; the first two were found by the property test above
    (lambda d: d.pop("name"), r"suite\.yaml: missing key\(s\) 'name'"),
    (lambda d: d.update({1: "x", "extra": 2}), r"suite\.yaml: key 1 of type int is not a name; allowed keys: "),
    (lambda d: d["experiments"][0]["params"].update({"lr": 10 ** 400}),
     r"suite\.yaml: experiments\[0\] .*key 'lr' has value 1000.*\.\.\., too large for a float"),
    (lambda d: d["experiments"][0]["methods"][1]["params"].update({"chunk_memory_mb": -1}),
     r"suite\.yaml: experiments\[0\] \(method cocoop, config cocoop\.yaml\): chunk_memory_mb must be a positive"),
    (lambda d: d["experiments"][0]["methods"].append("../suites/starter"),
     r"suite\.yaml: experiments\[0\]: unknown method config '\.\./suites/starter'"),
    (lambda d: d["experiments"][0]["methods"].append("coop\0"), r"suite\.yaml: experiments\[0\]: unknown method config"),
    (lambda d: d["experiments"][0]["methods"].append({"config": "coop", "init_from": "a\0b"}),
     r"suite\.yaml: experiments\[0\]: init_from 'a\\x00b' is not a file path"),
    (lambda d: d["experiments"][0].pop("protocol"), r"suite\.yaml: experiments\[0\]: missing key\(s\) 'protocol'"),
])
def test_malformed_suites_get_one_clear_error(change, message):
    doc = copy.deepcopy(TINY)
    change(doc)
    path, result = load(doc)
    assert isinstance(result, ConfigError), result
    assert str(path) in str(result)
    assert re.search(message, str(result)), str(result)
