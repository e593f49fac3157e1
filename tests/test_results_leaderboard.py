"""The leaderboard: aggregation over seeds, HM and Avg, Markdown/CSV agreement, determinism."""
import csv
import io
import math
import re
import statistics
import warnings

import pytest

from vlpt.results.publish import write_leaderboard
from vlpt.results.record import RunIdentity, RunRecord
from vlpt.results.store import RecordStore, RecordWarning


def add(store, protocol, method, seed, metrics, dataset="dtd", shots=16, targets=(), backbone="ViT-B-16"):
    identity = RunIdentity(
        method=method, backbone=backbone, dataset=dataset, protocol=protocol,
        shots=shots, seed=seed, targets=targets,
    )
    store.write(RunRecord(identity=identity, metrics=metrics, config={}))


def few_shot(store, method, accuracies, **kw):
    for seed, acc in enumerate(accuracies, start=1):
        add(store, "few_shot", method, seed, {"test": {"accuracy": acc}}, **kw)


def base_to_novel(store, method, pairs, **kw):
    for seed, (base, novel) in enumerate(pairs, start=1):
        add(store, "base_to_novel", method, seed, {"base": {"accuracy": base}, "novel": {"accuracy": novel}}, **kw)


TARGETS = ("imagenet_v2", "imagenet_sketch")


def domain_generalization(store, method, rows):
    for seed, (source, v2, sketch) in enumerate(rows, start=1):
        metrics = {"test": {"accuracy": source}, "imagenet_v2": {"accuracy": v2}, "imagenet_sketch": {"accuracy": sketch}}
        add(store, "domain_generalization", method, seed, metrics, dataset="imagenet", targets=TARGETS)


@pytest.fixture
def board(tmp_path):
    """A leaderboard folder with records of three protocols; returns (records_dir, out_dir)."""
    out = tmp_path / "leaderboard"
    store = RecordStore(out / "records")
    few_shot(store, "coop", [80.0, 82.0, 84.0])
    few_shot(store, "cocoop", [70.5])
    few_shot(store, "coop", [60.0, 62.0], shots=1)
    base_to_novel(store, "coop", [(82.0, 60.0), (84.0, 64.0), (83.0, 65.0)])
    domain_generalization(store, "coop", [(71.0, 64.0, 47.0), (72.0, 65.0, 48.0), (73.0, 63.0, 46.0)])
    return out / "records", out


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def csv_row(rows, **match):
    found = [r for r in rows if all(r[k] == str(v) for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def table_rows(markdown, heading):
    """The data rows (lists of cells) of the table under the heading that contains ``heading``."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_writes_both_files_and_mean_std_over_seeds(board):
    records_dir, out = board
    paths = write_leaderboard(records_dir, out)
    assert paths == [out / "LEADERBOARD.md", out / "leaderboard.csv"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    rows = read_csv(out / "leaderboard.csv")
    coop = csv_row(rows, protocol="few_shot", method="coop", shots=16, eval_set="test", metric="accuracy")
    assert float(coop["mean"]) == pytest.approx(82.0)
    assert float(coop["std"]) == pytest.approx(2.0)  # sample std of 80, 82, 84
    assert coop["n_seeds"] == "3"
    assert float(coop["ci95"]) == pytest.approx(4.302653 * 2.0 / math.sqrt(3), abs=1e-5)  # t(0.975, 2) * s / sqrt(n)
    assert coop["paper"] == ""  # CoOp's published few-shot figures are averages over 11 datasets, not DTD alone
    single = csv_row(rows, protocol="few_shot", method="cocoop", eval_set="test")
    assert float(single["std"]) == 0.0 and single["n_seeds"] == "1" and single["ci95"] == ""

    md = (out / "LEADERBOARD.md").read_text()
    few = table_rows(md, "(`few_shot`)")
    # sorted by backbone, dataset, shots, then method
    assert [(r["Shots"], r["Method"]) for r in few] == [("1", "coop"), ("16", "cocoop"), ("16", "coop")]
    assert {"Method": "coop", "Shots": "16", "Accuracy (mean ± std)": "82.00 ± 2.00", "Seeds": "3"}.items() <= few[2].items()
    one_shot = few[0]
    assert one_shot["Shots"] == "1" and one_shot["Accuracy (mean ± std)"] == f"61.00 ± {math.sqrt(2):.2f}"


def test_hm_is_computed_from_the_means(board):
    records_dir, out = board
    write_leaderboard(records_dir, out)
    base, novel = 83.0, 63.0  # means of (82, 84, 83) and (60, 64, 65)
    hm = 2 * base * novel / (base + novel)
    per_seed_hm = statistics.fmean(2 * b * n / (b + n) for b, n in [(82, 60), (84, 64), (83, 65)])
    assert round(hm, 2) != round(per_seed_hm, 2)  # the test data tells the two apart

    rows = read_csv(out / "leaderboard.csv")
    hm_row = csv_row(rows, protocol="base_to_novel", eval_set="hm")
    assert float(hm_row["mean"]) == pytest.approx(hm) and hm_row["std"] == ""
    md = (out / "LEADERBOARD.md").read_text()
    (row,) = table_rows(md, "(`base_to_novel`)")
    assert row["Base"] == "83.00 ± 1.00" and row["Novel"] == f"63.00 ± {statistics.stdev([60, 64, 65]):.2f}"
    assert row["HM"] == f"{hm:.2f}"
    assert "computed from the mean base" in md


def test_transfer_table_has_source_target_and_avg_columns(board):
    records_dir, out = board
    write_leaderboard(records_dir, out)
    md = (out / "LEADERBOARD.md").read_text()
    (row,) = table_rows(md, "(`domain_generalization`)")
    assert list(row)[5:10] == ["Source", "imagenet_v2", "imagenet_sketch", "Avg", "Seeds"]
    assert row["Source"] == "72.00 ± 1.00"
    assert row["imagenet_v2"] == "64.00 ± 1.00" and row["imagenet_sketch"] == "47.00 ± 1.00"
    assert row["Avg"] == "55.50"
    avg = csv_row(read_csv(out / "leaderboard.csv"), protocol="domain_generalization", eval_set="avg")
    assert float(avg["mean"]) == pytest.approx(55.5) and avg["targets"] == "imagenet_v2;imagenet_sketch"


def test_one_table_per_protocol_in_fixed_order(board):
    records_dir, out = board
    write_leaderboard(records_dir, out)
    md = (out / "LEADERBOARD.md").read_text()
    headings = re.findall(r"^## .*\(`(\w+)`\)$", md, flags=re.M)
    assert headings == ["few_shot", "base_to_novel", "domain_generalization"]
    assert len(re.findall(r"^\|---\|", md, flags=re.M)) == 3
    assert md.startswith("# vlpt leaderboard\n")
    assert "from 12 records in `records`" in md


def test_csv_and_markdown_agree(board):
    records_dir, out = board
    write_leaderboard(records_dir, out)
    md = (out / "LEADERBOARD.md").read_text()
    rows = read_csv(out / "leaderboard.csv")
    columns = {"few_shot": {"test": "Accuracy (mean ± std)"}, "base_to_novel": {"base": "Base", "novel": "Novel", "hm": "HM"},
               "domain_generalization": {"test": "Source", "imagenet_v2": "imagenet_v2", "imagenet_sketch": "imagenet_sketch", "avg": "Avg"}}
    checked = 0
    for protocol, by_set in columns.items():
        for md_row in table_rows(md, f"(`{protocol}`)"):
            for eval_set, column in by_set.items():
                r = csv_row(rows, protocol=protocol, method=md_row["Method"], shots=md_row["Shots"],
                            dataset=md_row["Dataset"], eval_set=eval_set, metric="accuracy")
                expected = f"{float(r['mean']):.2f}" + ("" if r["std"] == "" else f" ± {float(r['std']):.2f}")
                assert md_row[column] == expected
                checked += 1
    assert checked == len(rows) == 3 + 3 + 4


def test_rebuilding_gives_identical_bytes(board, tmp_path):
    records_dir, out = board
    first = [p.read_bytes() for p in write_leaderboard(records_dir, out)]
    second = [p.read_bytes() for p in write_leaderboard(records_dir, out)]
    assert first == second
    # independent of the working directory and of the order files were written in
    copy = RecordStore(tmp_path / "copy" / "records")
    for record in reversed(RecordStore(records_dir).records()):
        copy.write(record)
    third = [p.read_bytes() for p in write_leaderboard(tmp_path / "copy" / "records", tmp_path / "copy")]
    assert third == first


def test_empty_records_dir_gives_a_valid_leaderboard(tmp_path):
    (tmp_path / "records").mkdir()
    md_path, csv_path = write_leaderboard(tmp_path / "records", tmp_path)
    md = md_path.read_text()
    assert md.startswith("# vlpt leaderboard\n")
    assert "from 0 records in `records`" in md and "No run records found" in md and "|" not in md
    assert csv_path.read_text().splitlines() == [
        "protocol,backbone,dataset,method,variant,shots,targets,eval_set,metric,mean,std,n_seeds,ci95,paper,settings,"
            "train_ms_per_image,test_ms_per_image,peak_memory_mb,selection,paper_selection"
    ]


def test_corrupt_record_does_not_stop_the_leaderboard(board):
    records_dir, out = board
    (records_dir / "broken.json").write_text("{not json")
    with pytest.warns(RecordWarning, match="broken.json"):
        write_leaderboard(records_dir, out)
    assert "from 12 records" in (out / "LEADERBOARD.md").read_text()


def test_unknown_protocol_gets_a_generic_table(tmp_path):
    store = RecordStore(tmp_path / "records")
    for seed, dice in enumerate([80.0, 90.0], start=1):
        add(store, "detection", "coop", seed, {"test": {"dice": dice, "iou": dice - 10}}, dataset="kvasir")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_leaderboard(tmp_path / "records", tmp_path)
    (row,) = table_rows((tmp_path / "LEADERBOARD.md").read_text(), "(`detection`)")
    assert row["test dice"] == f"85.00 ± {statistics.stdev([80, 90]):.2f}" and row["Seeds"] == "2"


def test_rows_trained_on_a_number_of_stored_views_name_the_setting(tmp_path):
    """The feature cache's faster ``train_views: N`` (not a new crop each epoch) shows in the CSV, the Markdown
    notes and the page; the default (``per_epoch``), runs without the cache and deterministic augmentation do not."""
    from vlpt.results.site import render_site
    from vlpt.results.leaderboard import aggregate

    store = RecordStore(tmp_path / "records")
    views = {"coop": [8, 8, 8], "kgcoop": ["per_epoch", "per_epoch", "per_epoch"], "cocoop": [None, None, None],
             "linear_probe": [1, 1, 1], "maple": ["per_epoch", 8, 8]}
    augment = {"linear_probe": "none"}
    for method, values in views.items():
        for seed, value in enumerate(values, start=1):
            identity = RunIdentity(method=method, backbone="ViT-B-16", dataset="dtd", protocol="few_shot", shots=16,
                                   seed=seed)
            config = {"data": {"train_augment": augment.get(method, "crop_flip")}}
            if value is not None:
                config["feature_cache"] = {"train_views": value}
            store.write(RunRecord(identity=identity, metrics={"test": {"accuracy": 50.0 + seed}}, config=config))
    write_leaderboard(tmp_path / "records", tmp_path)
    rows = {r["method"]: r["settings"] for r in csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text()))}
    assert rows == {"coop": "train_views=8", "kgcoop": "", "cocoop": "", "linear_probe": "",
                    "maple": "train_views=8 (2 of 3 records)"}
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert ("Rows run with non-default settings (faster, not the reference computation): coop (default) on dtd, "
            "16 shots: train_views=8; maple (default) on dtd, 16 shots: train_views=8 (2 of 3 records).") in markdown
    page = render_site(aggregate(store.records()), 15, "records")
    assert page.count('<span class="setting"') == 2 and ">train_views=8</span>" in page
