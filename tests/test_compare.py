"""`vlpt compare`: runs paired by seed, mean paired difference, paired t-test, on made-up and committed records."""
from __future__ import annotations

import json
import math
import statistics

import pytest
from scipy import stats

from checkout import LEADERBOARD
from vlpt.cli import main
from vlpt.errors import ConfigError
from vlpt.results.compare import Side, compare_records, paired_test, parse_side
from vlpt.results.leaderboard import aggregate
from vlpt.results.record import RunIdentity, RunRecord
from vlpt.results.store import RecordStore

A_ACC = [60.0, 62.0, 61.0, 63.0, 64.0]
CONSISTENT = [2.0, 2.5, 1.5, 2.2, 1.8]  # mean 2.0, small spread: significant
NOISY = [3.0, -2.0, 1.0, -4.0, 2.5]     # mean 0.1, large spread: not significant


def add(store, method, seed, metrics, protocol="few_shot", dataset="dtd", shots=16, variant="default", targets=()):
    identity = RunIdentity(method=method, variant=variant, backbone="ViT-B-16", dataset=dataset, protocol=protocol,
                           shots=shots, seed=seed, targets=targets)
    store.write(RunRecord(identity=identity, metrics=metrics))


@pytest.fixture
def board(tmp_path):
    store = RecordStore(tmp_path / "records")
    for seed, (a, d_good, d_noisy) in enumerate(zip(A_ACC, CONSISTENT, NOISY), start=1):
        add(store, "coop", seed, {"test": {"accuracy": a, "n": 100}})
        add(store, "kgcoop", seed, {"test": {"accuracy": a + d_good, "n": 100}})
        add(store, "coop", seed, {"test": {"accuracy": a}}, dataset="eurosat")
        add(store, "kgcoop", seed, {"test": {"accuracy": a + d_noisy}}, dataset="eurosat")
    add(store, "coop", 1, {"test": {"accuracy": 50.0}}, dataset="oxford_pets")
    add(store, "kgcoop", 1, {"test": {"accuracy": 55.0}}, dataset="oxford_pets")
    add(store, "kgcoop", 2, {"test": {"accuracy": 56.0}}, dataset="oxford_pets")  # no coop run to pair with
    add(store, "coop", 1, {"test": {"accuracy": 40.0}}, dataset="food101")  # kgcoop has none: no row
    return tmp_path


def rows_by_dataset(rows):
    return {(r.dataset, r.eval_set): r for r in rows}


def test_significant_and_not_significant_differences(board):
    records = RecordStore(board / "records").records()
    rows = rows_by_dataset(compare_records(records, Side("coop", "default"), Side("kgcoop", "default")))
    assert set(rows) == {("dtd", "test"), ("eurosat", "test"), ("oxford_pets", "test")}

    good = rows[("dtd", "test")]
    assert good.seeds == (1, 2, 3, 4, 5) and good.metric == "accuracy" and good.shots == 16
    assert good.a_mean == pytest.approx(statistics.fmean(A_ACC))
    assert good.b_mean == pytest.approx(statistics.fmean(A_ACC) + 2.0)
    assert good.mean_difference == pytest.approx(2.0)
    assert good.differences == pytest.approx(CONSISTENT)
    assert good.p_value == pytest.approx(stats.ttest_1samp(CONSISTENT, 0.0).pvalue)
    assert good.p_value < 0.001 and good.significant is True

    noisy = rows[("eurosat", "test")]
    assert noisy.mean_difference == pytest.approx(0.1)
    assert noisy.p_value == pytest.approx(stats.ttest_1samp(NOISY, 0.0).pvalue)
    assert noisy.p_value > 0.5 and noisy.significant is False

    single = rows[("oxford_pets", "test")]
    assert single.seeds == (1,) and single.mean_difference == pytest.approx(5.0)
    assert single.p_value is None and single.significant is None


def test_swapping_sides_negates_the_difference(board):
    records = RecordStore(board / "records").records()
    forward = compare_records(records, Side("coop", "default"), Side("kgcoop", "default"))
    backward = compare_records(records, Side("kgcoop", "default"), Side("coop", "default"))
    for f, b in zip(forward, backward):
        assert b.mean_difference == pytest.approx(-f.mean_difference)
        assert (b.p_value is None and f.p_value is None) or b.p_value == pytest.approx(f.p_value)


def test_paired_test_edge_cases():
    assert paired_test([1.0], [2.0]) == (None, None)
    assert paired_test([1.0, 2.0], [1.0, 2.0]) == (1.0, False)
    assert paired_test([1.0, 2.0], [2.0, 3.0]) == (0.0, True)
    p, significant = paired_test([1.0, 2.0, 3.0], [1.5, 2.1, 3.9])
    assert 0 < p < 1 and significant is (p < 0.05)


def test_base_to_novel_adds_per_seed_hm_and_zero_shot_pairs_with_every_shot_count(tmp_path):
    store = RecordStore(tmp_path)
    for seed in (1, 2):
        add(store, "zeroshot", seed, {"base": {"accuracy": 70.0}, "novel": {"accuracy": 74.0}},
            protocol="base_to_novel", shots=0)
        for shots, gain in ((1, 1.0), (16, 5.0 + seed)):
            add(store, "coop", seed, {"base": {"accuracy": 70.0 + gain}, "novel": {"accuracy": 60.0}},
                protocol="base_to_novel", shots=shots)
    rows = compare_records(store.records(), Side("zeroshot", "default"), Side("coop", "default"))
    assert [(r.shots, r.eval_set) for r in rows] == [(1, "base"), (1, "novel"), (1, "hm"),
                                                     (16, "base"), (16, "novel"), (16, "hm")]
    assert all(r.a_shots == 0 and r.b_shots == r.shots for r in rows)
    hm16 = rows[-1]
    hm = [2 * b * 60.0 / (b + 60.0) for b in (76.0, 77.0)]
    assert hm16.b_values == pytest.approx(hm)
    assert hm16.a_values == pytest.approx([2 * 70 * 74 / 144] * 2)


def test_parse_side(board):
    records = RecordStore(board / "records").records()
    assert parse_side("coop", records) == Side("coop", "default")
    assert parse_side("kgcoop/default", records) == Side("kgcoop", "default")
    with pytest.raises(ConfigError, match="no records of method 'vpt'; methods with records: coop, kgcoop"):
        parse_side("vpt", records)
    with pytest.raises(ConfigError, match="no records of coop/csc; variants of coop: default"):
        parse_side("coop/csc", records)
    with pytest.raises(ConfigError, match="is not METHOD or METHOD/VARIANT"):
        parse_side("coop/", records)
    with pytest.raises(ConfigError, match="both coop/default"):
        compare_records(records, Side("coop", "default"), Side("coop", "default"))


def test_cli_text_and_json(board, capsys):
    assert main(["compare", "coop", "kgcoop", "--output", str(board)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("A = coop/default, B = kgcoop/default; B - A paired by seed")
    assert "few_shot  ViT-B-16  dtd  shots 16" in out
    blocks = out.split("\n\n")
    dtd = next(b for b in blocks if "  dtd  " in b)
    assert "+2.00" in dtd and " yes " in dtd and "1: +2.00, 2: +2.50, 3: +1.50, 4: +2.20, 5: +1.80" in dtd
    eurosat = next(b for b in blocks if "  eurosat  " in b)
    assert "+0.10" in eurosat and " no " in eurosat
    pets = next(b for b in blocks if "  oxford_pets  " in b)
    assert "n/a" in pets and "1: +5.00" in pets
    assert "food101" not in out

    assert main(["compare", "coop", "kgcoop", "--output", str(board / "records"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["a"] == "coop/default" and report["b"] == "kgcoop/default" and report["alpha"] == 0.05
    dtd = next(r for r in report["rows"] if r["dataset"] == "dtd")
    assert dtd["significant"] is True and dtd["seeds"] == [1, 2, 3, 4, 5]
    assert dtd["differences"] == pytest.approx(CONSISTENT)
    pets = next(r for r in report["rows"] if r["dataset"] == "oxford_pets")
    assert pets["p_value"] is None and pets["significant"] is None


def test_cli_errors(board, capsys):
    assert main(["compare", "coop", "nope", "--output", str(board)]) == 2
    assert "no records of method 'nope'" in capsys.readouterr().err
    assert main(["compare", "coop", "kgcoop", "--output", str(board), "--metric", "dice"]) == 2
    assert "share no runs with metric 'dice'" in capsys.readouterr().err
    assert main(["compare", "coop", "kgcoop", "--output", str(board / "absent")]) == 2


def test_committed_records(capsys):
    records = RecordStore(LEADERBOARD / "records").records()
    with pytest.raises(ConfigError, match=r"method 'coop' has several variants \(coop_m4, gram-init, "
                                          r"mvlpt-source-init\) and no default; name one as coop/VARIANT"):
        parse_side("coop", records)
    a, b = Side("coop", "coop_m4"), Side("kgcoop", "default")
    rows = compare_records(records, a, b)
    keys = [(r.protocol, r.eval_set) for r in rows]
    assert keys == [
        ("base_to_novel", "base"), ("base_to_novel", "novel"), ("base_to_novel", "hm"),
        ("domain_generalization", "test"), ("domain_generalization", "starter_rendered_digits"),
        ("domain_generalization", "avg"), ("few_shot", "test"),
    ]
    groups = {(g.protocol, g.method, g.variant): g for g in aggregate(records)}
    for row in rows:
        assert row.seeds == (1, 2, 3)
        if row.eval_set in ("hm", "avg"):
            continue
        for side, mean in ((a, row.a_mean), (b, row.b_mean)):  # the leaderboard's means over seeds
            assert mean == pytest.approx(groups[(row.protocol, side.method, side.variant)].get(row.eval_set).mean)
        assert row.mean_difference == pytest.approx(row.b_mean - row.a_mean)
        assert 0 <= row.p_value <= 1 and row.significant is (row.p_value < 0.05)

    seg = compare_records(records, Side("seg_coop", "default"), Side("seg_vpt", "default"))
    assert [(r.eval_set, r.metric) for r in seg] == [("test", "dice")]
    seg_iou = compare_records(records, Side("seg_coop", "default"), Side("seg_vpt", "default"), metric="iou")
    assert [(r.eval_set, r.metric) for r in seg_iou] == [("test", "iou")]
    assert not math.isclose(seg[0].a_mean, seg_iou[0].a_mean)

    assert main(["compare", "coop/coop_m4", "coop/gram-init"]) == 0  # default --output: the committed board
    out = capsys.readouterr().out
    assert "domain_generalization" in out and "few_shot" in out
