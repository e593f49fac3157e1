"""The leaderboard's cost and selection columns: their values from the records' timings, counts and rules."""
import csv
import io

import pytest

from vlpt.errors import ConfigError
from vlpt.methods.linear_probe import LinearProbe
from vlpt.methods.tip_adapter import TipAdapter
from vlpt.registry import method_class, method_names
from vlpt.results.cost import run_cost, run_selection, selection_text
from vlpt.results.leaderboard import aggregate, render_csv, render_markdown
from vlpt.results.paper import parse_selection, paper_selection
from vlpt.results.record import RunIdentity, RunRecord
from vlpt.results.validate import check_record


def record(seed, train_s, eval_s, n_train, peak, selection="validation", method="tip_adapter", epochs=1):
    identity = RunIdentity(method=method, backbone="ViT-B-16", dataset="dtd", protocol="base_to_novel",
                           shots=16, seed=seed, targets=())
    config = {"data": {"n_train": n_train}, "epochs": epochs, **({"selection": selection} if selection else {})}
    metrics = {"base": {"accuracy": 80.0, "n": 300}, "novel": {"accuracy": 70.0, "n": 100}}
    return RunRecord(identity=identity, metrics=metrics, config=config, timings={"train_s": train_s, "eval_s": eval_s},
                     peak_memory_mb=peak)


def test_cost_is_the_mean_per_image_over_records():
    cost = run_cost([record(1, 2.0, 0.4, 100, 1000.0), record(2, 4.0, 0.8, 100, 2000.0)])
    assert cost.train_ms_per_image == pytest.approx((20.0 + 40.0) / 2)  # seconds x 1000 / training images
    assert cost.test_ms_per_image == pytest.approx((1.0 + 2.0) / 2)  # over the 400 images of both sets
    assert cost.peak_memory_mb == pytest.approx(1500.0)


def test_runs_that_train_nothing_or_resumed_have_no_training_cost():
    assert run_cost([record(1, 0.01, 0.4, 0, 10.0, epochs=0)]).train_ms_per_image is None
    assert run_cost([record(1, 0.01, 0.4, 100, 10.0, epochs=0)]).train_ms_per_image is None
    resumed = record(1, 2.0, 0.4, 100, 10.0)
    resumed.config["trainer"] = {"resumed_at_epoch": 3}  # its train_s covers the last epochs only
    assert run_cost([resumed, record(2, 4.0, 0.4, 100, 10.0)]).train_ms_per_image == pytest.approx(40.0)


def test_selection_shows_the_runs_rule_and_the_papers():
    assert run_selection([record(1, 1, 1, 1, 1), record(2, 1, 1, 1, 1, selection="fixed")]) == "fixed/validation"
    assert run_selection([record(1, 1, 1, 1, 1, selection=None)]) == "–"  # made before records held it
    assert paper_selection("tip_adapter_f").rule == "test"
    assert selection_text("tip_adapter_f", [record(1, 1, 1, 1, 1)]) == "validation (paper: test)"
    assert selection_text("no_such_method", [record(1, 1, 1, 1, 1)]) == "validation"


def test_markdown_and_csv_carry_cost_and_selection():
    groups = aggregate([record(1, 2.0, 0.4, 100, 1000.0), record(2, 4.0, 0.8, 100, 2000.0)])
    table = render_markdown(groups, 2, "records")
    assert "| Train ms / img | Test ms / img | Peak MiB | Selection |" in table
    assert "| 30.00 | 1.50 | 1500 | validation (paper: validation) |" in table
    rows = list(csv.DictReader(io.StringIO(render_csv(groups))))
    assert {(r["train_ms_per_image"], r["test_ms_per_image"], r["peak_memory_mb"], r["selection"],
             r["paper_selection"]) for r in rows} == {("30.0000", "1.5000", "1500.0", "validation", "validation")}


def test_every_method_names_a_known_rule_and_the_search_methods_say_validation():
    for name in method_names():
        cls = method_class(name)
        assert cls.hyperparameter_selection(cls.Config()) in ("fixed", "validation"), name
    assert LinearProbe.hyperparameter_selection(LinearProbe.Config()) == "validation"
    assert TipAdapter.hyperparameter_selection(TipAdapter.Config(search=False)) == "fixed"


def test_a_record_with_an_unknown_rule_is_invalid():
    good = record(1, 1, 1, 1, 1).to_dict()
    bad = {**good, "config": {**good["config"], "selection": "test"}}
    fields = lambda d: {p.field for p in check_record(d, "r.json")}  # noqa: E731
    assert fields(bad) - fields(good) == {"config.selection"}


@pytest.mark.parametrize("entry, message", [
    ({"rule": "oracle"}, "rule must be one of fixed, validation, test"),
    ({"rule": "test", "how": "x"}, "expected a mapping with keys rule, note, unverified"),
    ({"rule": "test", "unverified": "yes"}, "unverified true or false"),
])
def test_bad_paper_selection_names_the_method(entry, message):
    with pytest.raises(ConfigError, match=f"published.yaml: selection of coop: .*{message}"):
        parse_selection({"methods": {}, "selection": {"coop": entry}}, "published.yaml")
