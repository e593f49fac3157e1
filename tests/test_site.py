"""The leaderboard web page: one table per protocol, 95% CIs, the paper column, provenance, plots, determinism,
self-containedness, and its place beside LEADERBOARD.md and leaderboard.csv."""
import math
import re
import shutil
from html.parser import HTMLParser

import pytest

from checkout import LEADERBOARD
from vlpt.cli import main
from vlpt.errors import ConfigError
from vlpt.results.leaderboard import aggregate, dataset_averages
from vlpt.results.publish import write_leaderboard
from vlpt.results.paper import PublishedResult, method_published, paper_results, parse_published, published_figures
from vlpt.results.plots import Point, Series, bar_chart, line_chart, nice_ticks, scatter_chart
from vlpt.results.provenance import config_hash, provenance
from vlpt.results.record import RunIdentity, RunRecord
from vlpt.results.site import render_site
from vlpt.results.store import RecordStore

T_975 = {1: 12.706204736174698, 2: 4.302652729911275}  # Student t quantiles from a table, by degrees of freedom
VERSIONS = {"python": "3.11.7", "torch": "2.15.0"}
#: the 11 datasets of CoOp's benchmark, over which the papers' base-to-novel and few-shot averages are taken
COOP_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")


def record(protocol, method, seed, metrics, dataset="dtd", shots=16, targets=(), backbone="ViT-B-16@openai",
           variant="default", commit="a" * 40, config=None):
    identity = RunIdentity(method=method, variant=variant, backbone=backbone, dataset=dataset, protocol=protocol,
                           shots=shots, seed=seed, targets=targets)
    return RunRecord(identity=identity, metrics=metrics, config=config if config is not None else {"lr": 0.002},
                     library_versions=dict(VERSIONS), git_commit=commit, git_dirty=False)


def mixed_records():
    """Records of four protocols: few-shot at two shot counts, base-to-novel, test-time and segmentation."""
    out = []
    for seed, acc in enumerate([80.0, 82.0, 84.0], start=1):
        out.append(record("few_shot", "coop", seed, {"test": {"accuracy": acc}}))
    out.append(record("few_shot", "coop", 1, {"test": {"accuracy": 60.0}}, shots=1))
    out += [record("few_shot", "cocoop", seed, {"test": {"accuracy": a}}) for seed, a in [(1, 70.0), (2, 72.0)]]
    out.append(record("few_shot", "zeroshot", 1, {"test": {"accuracy": 50.0}}, shots=0))
    for seed, (base, novel) in enumerate([(82.0, 60.0), (84.0, 64.0)], start=1):
        out.append(record("base_to_novel", "coop", seed, {"base": {"accuracy": base}, "novel": {"accuracy": novel}},
                          dataset="caltech101"))
    out.append(record("base_to_novel", "zeroshot", 1, {"base": {"accuracy": 70.0}, "novel": {"accuracy": 75.0}},
                      dataset="caltech101", shots=0))
    targets = ("imagenet_a",)
    out.append(record("test_time", "zeroshot", 1, {"test": {"accuracy": 60.0}, "imagenet_a": {"accuracy": 20.0}},
                      dataset="imagenet", shots=0, targets=targets))
    out.append(record("test_time", "tpt", 1, {"test": {"accuracy": 61.0, "adapt_ms_per_image": 40.0},
                                              "imagenet_a": {"accuracy": 23.5, "adapt_ms_per_image": 42.0}},
                      dataset="imagenet", shots=0, targets=targets))
    for seed, dice in [(1, 80.0), (2, 84.0)]:
        out.append(record("segmentation", "seg_coop", seed, {"test": {"dice": dice, "iou": dice - 10.0, "n": 50}},
                          dataset="kvasir_seg", shots=20, backbone="clipseg:tiny"))
    return out


def site_of(records, source="records"):
    return render_site(aggregate(records), len(records), source)


class Tables(HTMLParser):
    """Every <table class="board">: its header texts and rows (attributes and cell texts)."""

    def __init__(self, text):
        super().__init__()
        self.tables, self._table, self._row, self._cell = {}, None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "board" in attrs.get("class", "").split() and attrs.get("id"):
            self._table = self.tables.setdefault(attrs["id"], {"header": [], "rows": []})
        elif self._table is not None and tag == "tr":
            self._row = {"attrs": attrs, "cells": []}
        elif self._row is not None and tag in ("td", "th"):
            self._cell = []
        elif self._cell is not None and tag == "br":
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row["cells"] and not self._table["header"]:
                self._table["header"] = self._row["cells"]
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def rows_of(html, protocol):
    table = Tables(html).tables[f"table-{protocol}"]
    return [dict(zip(table["header"], row["cells"]), attrs=row["attrs"]) for row in table["rows"]]


# ---------------------------------------------------------------- structure


def test_one_table_per_protocol_in_leaderboard_order():
    html = site_of(mixed_records())
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert list(Tables(html).tables) == [
        "table-few_shot", "table-base_to_novel", "table-test_time", "table-segmentation"
    ]
    few = Tables(html).tables["table-few_shot"]
    assert few["header"] == ["Backbone", "Dataset", "Shots", "Method", "Accuracy (mean ± std)", "ECE %", "Paper", "Seeds",
                             "Train ms / img", "Test ms / img", "Peak MiB", "Selection", "Provenance"]
    assert Tables(html).tables["table-segmentation"]["header"][:6] == [
        "Model", "Dataset", "Train images", "Method", "Dice", "IoU"
    ]
    # filters: a text box and a select per backbone, dataset, shots and method, in every section
    for protocol in ("few_shot", "base_to_novel", "test_time", "segmentation"):
        section = html.split(f'<section class="protocol" id="{protocol}">', 1)[1].split("</section>", 1)[0]
        assert section.count('class="filter-text"') == 1
        assert re.findall(r'<select class="filter" name="(\w+)"', section) == ["backbone", "dataset", "shots", "method"]
    shots = re.search(r'<select class="filter" name="shots"[^>]*>(.*?)</select>', html).group(1)
    assert re.findall(r'<option value="(\d+)">', shots) == ["0", "1", "16"]


def test_rows_carry_filter_attributes_and_sort_keys():
    rows = rows_of(site_of(mixed_records()), "few_shot")
    assert [(r["Shots"], r["Method"]) for r in rows] == [("0", "zeroshot"), ("1", "coop"), ("16", "cocoop"),
                                                         ("16", "coop")]
    attrs = rows[3]["attrs"]
    assert (attrs["data-backbone"], attrs["data-dataset"], attrs["data-shots"], attrs["data-method"]) == (
        "ViT-B-16@openai", "dtd", "16", "coop"
    )
    html = site_of(mixed_records())
    assert 'data-sort="82.000000"' in html  # numeric sort key: the mean, unrounded


def test_each_protocol_gets_its_plot_with_marks():
    html = site_of(mixed_records())
    svgs = re.findall(r"<svg class=\"chart\".*?</svg>", html, flags=re.S)
    titles = [re.search(r"<title>(.*?)</title>", svg).group(1) for svg in svgs]
    assert titles == [
        "Accuracy vs shots, dtd (ViT-B-16@openai)",
        "Base vs novel accuracy, caltech101 (ViT-B-16@openai)",
        "Test-time adaptation: gain over zeroshot, imagenet (ViT-B-16@openai)",
        "Dice per segmentation set (clipseg:tiny)",
    ]
    accuracy, scatter, gain, dice = svgs
    assert accuracy.count('class="mark point"') == 4 and accuracy.count('class="mark line"') == 1  # coop: 1 and 16
    assert accuracy.count('class="mark level"') == 1  # zero-shot drawn as a level
    assert scatter.count('class="mark point"') == 2 and 'class="iso"' in scatter
    assert gain.count('class="mark bar"') == 2 and ">+1.00<" in gain and ">+3.50<" in gain  # tpt minus zero-shot
    assert dice.count('class="mark bar"') == 1 and ">82.0<" in dice


def test_dice_plot_has_a_group_per_dataset_and_the_average():
    records = [record("segmentation", method, 1, {"test": {"dice": dice, "iou": 50.0}}, dataset=dataset, shots=20,
                      backbone="clipseg:tiny")
               for method, dataset, dice in [("seg_coop", "kvasir_seg", 80.0), ("seg_coop", "isic", 70.0),
                                             ("seg_vpt", "kvasir_seg", 60.0), ("seg_vpt", "isic", 50.0)]]
    (svg,) = re.findall(r"<svg class=\"chart\".*?</svg>", site_of(records), flags=re.S)
    ticks = re.findall(r'<text class="tick" [^>]*text-anchor="middle">([^<]*)</text>', svg)
    assert ticks == ["isic", "kvasir_seg", "average"]
    assert svg.count('class="mark bar"') == 6  # 2 methods x (2 datasets + their average)
    assert ">75.0<" in svg and ">55.0<" in svg  # the averages
    assert re.findall(r"<g class=\"legend\">.*?</g>", svg, flags=re.S)[0].count("<text") == 2  # one entry each


def test_legend_tells_apart_one_method_at_two_shot_counts():
    records = [record("base_to_novel", "coop", 1, {"base": {"accuracy": b}, "novel": {"accuracy": n}},
                      dataset="caltech101", shots=shots) for shots, b, n in [(4, 70.0, 60.0), (16, 80.0, 65.0)]]
    (svg,) = re.findall(r"<svg class=\"chart\".*?</svg>", site_of(records), flags=re.S)
    assert ">coop, 4 shots<" in svg and ">coop, 16 shots<" in svg


# ---------------------------------------------------------------- confidence intervals


def test_confidence_interval_is_the_student_t_interval_over_seeds():
    html = site_of(mixed_records())
    rows = {(r["Shots"], r["Method"]): r for r in rows_of(html, "few_shot")}
    half = T_975[2] * 2.0 / math.sqrt(3)  # 80, 82, 84: std 2
    assert rows[("16", "coop")]["Accuracy (mean ± std)"] == f"82.00 ± 2.00 [{82 - half:.2f}, {82 + half:.2f}]"
    half = T_975[1] * math.sqrt(2) / math.sqrt(2)  # 70, 72: std sqrt(2)
    assert rows[("16", "cocoop")]["Accuracy (mean ± std)"] == f"71.00 ± 1.41 [{71 - half:.2f}, {71 + half:.2f}]"
    assert rows[("1", "coop")]["Accuracy (mean ± std)"] == "60.00 ± 0.00 –"  # one seed: no interval
    (b2n_coop,) = [r for r in rows_of(html, "base_to_novel") if r["Method"] == "coop"]
    assert b2n_coop["HM"] == f"{2 * 83 * 62 / 145:.2f}"  # derived from the means: no std, no interval


# ---------------------------------------------------------------- the paper column


def b2n_average(method, backbone, shots=16, datasets=COOP_DATASETS, variant="default"):
    return [record("base_to_novel", method, 1, {"base": {"accuracy": 70.0 + i}, "novel": {"accuracy": 60.0 + i}},
                   dataset=d, shots=shots, backbone=backbone, variant=variant) for i, d in enumerate(datasets)]


def test_paper_column_only_on_the_exact_backbone_protocol_datasets_and_shots():
    records = b2n_average("coop", "ViT-B-16@openai") + b2n_average("coop", "RN50@openai")
    records += b2n_average("coop", "ViT-B-16@openai", shots=4)
    records += b2n_average("coop", "ViT-B-16@laion2b", datasets=COOP_DATASETS[:10])
    rows = rows_of(site_of(records), "base_to_novel")
    averages = {(r["Backbone"], r["Shots"]): r for r in rows if r["attrs"]["data-dataset"] == "average"}
    assert set(averages) == {("ViT-B-16@openai", "16"), ("RN50@openai", "16"), ("ViT-B-16@openai", "4"),
                             ("ViT-B-16@laion2b", "16")}
    matched = averages[("ViT-B-16@openai", "16")]
    assert matched["Dataset"] == "average of 11 datasets"
    assert matched["Paper"] == "Base 82.69[1] · Novel 63.22[1] · HM 71.66[1]"
    zeroshot = rows_of(site_of(b2n_average("zeroshot", "ViT-B-16@openai", shots=0)), "base_to_novel")[-1]
    assert zeroshot["Paper"] == "Base 69.34[1] · Novel 74.22[1] · HM 71.70[1]"  # CLIP's row of the same table
    assert matched["Base"] == "75.00" and matched["Novel"] == "65.00"  # means over the datasets
    assert matched["HM"] == f"{2 * 75 * 65 / 140:.2f}"  # HM of the averages, as the papers report it
    for key in [("RN50@openai", "16"), ("ViT-B-16@openai", "4"), ("ViT-B-16@laion2b", "16")]:
        assert averages[key]["Paper"] == "–", key  # other backbone, other shots, other set of datasets
    assert all(r["Paper"] == "–" for r in rows if r["attrs"]["data-dataset"] != "average")  # per dataset: none


def test_paper_results_match_eval_set_variant_and_single_datasets():
    groups = aggregate([
        record("test_time", "tpt", 1, {"test": {"accuracy": 61.0}, "imagenet_a": {"accuracy": 27.0}},
               dataset="imagenet", shots=0, targets=("imagenet_a",), backbone="RN50@openai"),
        record("test_time", "tpt", 1, {"test": {"accuracy": 61.0}}, dataset="imagenet", shots=0,
               backbone="RN101@openai"),
        record("few_shot", "zeroshot", 1, {"test": {"accuracy": 88.0}}, dataset="oxford_pets", shots=0,
               variant="zeroshot_ensemble"),
        record("few_shot", "zeroshot", 1, {"test": {"accuracy": 85.0}}, dataset="oxford_pets", shots=0),
        record("base_to_novel", "kgcoop", 1, {"base": {"accuracy": 1.0}, "novel": {"accuracy": 1.0}},
               dataset="dtd"),
    ])
    found = {(g.backbone, g.method, g.variant): {k: r.value for k, r in paper_results(g).items()} for g in groups}
    assert found[("RN50@openai", "tpt", "default")] == {
        ("test", "accuracy"): 60.74, ("imagenet_a", "accuracy"): 26.67, ("imagenet_v2", "accuracy"): 54.70,
        ("imagenet_r", "accuracy"): 59.11, ("imagenet_sketch", "accuracy"): 35.09,
    }
    assert found[("RN101@openai", "tpt", "default")] == {}
    assert found[("ViT-B-16@openai", "zeroshot", "zeroshot_ensemble")] == {("test", "accuracy"): 88.9}
    assert found[("ViT-B-16@openai", "zeroshot", "default")] == {}  # published with CLIP's 80 templates only
    assert found[("ViT-B-16@openai", "kgcoop", "default")] == {}  # published as an 11-dataset average only


def test_published_figures_are_the_data_file_s_per_method():
    kgcoop, coop = method_published("kgcoop"), method_published("coop")
    assert kgcoop and all("KgCoOp" in r.reference for r in kgcoop)  # KgCoOp subclasses CoOp: nothing shared
    assert not set(kgcoop) & set(coop)
    assert all(r.unverified for r in method_published("difftpt"))
    assert method_published("no_such_method") == ()
    (b2n_base,) = [r for r in coop if r.protocol == "base_to_novel" and r.eval_set == "base"]
    assert b2n_base.dataset == COOP_DATASETS and b2n_base.is_average  # the YAML anchor's list, as a tuple
    with pytest.raises(ValueError, match="value must be a percentage"):
        PublishedResult("few_shot", "ViT-B-16", "dtd", 16, "test", "accuracy", 130.0, "Someone 2024")
    with pytest.raises(ValueError, match="dataset must be"):
        PublishedResult("few_shot", "ViT-B-16", (), 16, "test", "accuracy", 50.0, "Someone 2024")


def test_published_file_names_registered_methods_and_known_protocols():
    from vlpt.registry import method_names
    from vlpt.results.protocols import protocol_names

    figures = published_figures()
    assert set(figures) <= set(method_names()) and sum(map(len, figures.values())) == 140
    assert {r.protocol for results in figures.values() for r in results} <= set(protocol_names())


GOOD = {"protocol": "few_shot", "backbone": "ViT-B-16", "dataset": "dtd", "shots": 16, "eval_set": "test",
        "metric": "accuracy", "value": 50.0, "reference": "Someone 2024"}


@pytest.mark.parametrize("entry, message", [
    ({**GOOD, "value": 130.0}, r"method coop, figure 2: value must be a percentage in \[0, 100\], got 130\.0"),
    ({**GOOD, "shots": "16"}, r"method coop, figure 2: shots must be an integer >= 0, got '16'"),
    ({**GOOD, "dataset": []}, r"method coop, figure 2: dataset must be a dataset name or a list of names"),
    ({**GOOD, "varaint": "x"}, r"method coop, figure 2: unknown key 'varaint' \(keys: protocol, "),
    ({k: v for k, v in GOOD.items() if k != "reference"}, r"method coop, figure 2: key 'reference' is missing"),
    ({**GOOD, "unverified": "yes"}, r"method coop, figure 2: unverified must be true or false"),
    ("dtd", r"method coop, figure 2: expected a mapping, got 'dtd'"),
])
def test_a_bad_published_entry_names_the_file_method_and_key(entry, message):
    with pytest.raises(ConfigError, match=r"^published\.yaml: " + message):
        parse_published({"methods": {"zeroshot": [GOOD], "coop": [GOOD, entry]}}, "published.yaml")
    with pytest.raises(ConfigError, match=r"published\.yaml: unknown top-level key\(s\) figures"):
        parse_published({"methods": {}, "figures": []}, "published.yaml")


def test_unverified_figures_are_flagged_and_references_listed():
    records = [record("few_shot", "coop", 1, {"test": {"accuracy": 50.0 + i}}, dataset=d, shots=4)
               for i, d in enumerate(COOP_DATASETS)]
    html = site_of(records)
    (average,) = [r for r in rows_of(html, "few_shot") if r["attrs"]["data-dataset"] == "average"]
    assert average["Paper"] == "74.00?[2]"  # [1]: CoCoOp's table, the first reference of coop
    assert 'title="[unverified]: recalled, not read from the paper"' in html
    assert re.search(r'<li id="ref-1">Zhou et al\., Conditional Prompt Learning', html)


# ---------------------------------------------------------------- provenance


def test_config_hash_ignores_the_seed_only():
    config = {"lr": 0.002, "data": {"seed": 1, "n_train": 160}, "seed": 1}
    assert config_hash(config) == config_hash({**config, "seed": 2, "data": {"seed": 7, "n_train": 160}})
    assert config_hash(config) != config_hash({**config, "lr": 0.001})
    assert config_hash(config) != config_hash({**config, "data": {"seed": 1, "n_train": 161}})
    assert re.fullmatch(r"[0-9a-f]{12}", config_hash(config))


def test_provenance_shows_every_commit_and_config_when_records_differ():
    same = [record("few_shot", "coop", seed, {"test": {"accuracy": 80.0}}, config={"lr": 0.002, "seed": seed})
            for seed in (1, 2)]
    assert provenance(same).agrees and len(provenance(same).config_hashes) == 1
    differ = same + [record("few_shot", "coop", 3, {"test": {"accuracy": 80.0}}, commit="b" * 40,
                            config={"lr": 0.001})]
    prov = provenance(differ)
    assert not prov.agrees and prov.commits == ("a" * 40, "b" * 40) and len(prov.config_hashes) == 2
    (row,) = rows_of(site_of(differ), "few_shot")
    assert "aaaaaaaa +1" in row["Provenance"] and "≠" in row["Provenance"]
    assert "a" * 40 in row["Provenance"] and "b" * 40 in row["Provenance"]
    assert "torch 2.15.0" in row["Provenance"] and prov.run_ids[0] in row["Provenance"]


# ---------------------------------------------------------------- self-contained and deterministic


def test_page_is_self_contained():
    html = site_of(mixed_records())
    assert not re.search(r"https?://", html)
    for pattern in (r"\bsrc\s*=", r"<link\b", r"@import", r"url\(", r"\bfetch\(", r"XMLHttpRequest"):
        assert not re.search(pattern, html), pattern
    assert html.count("<style>") == 1 and html.count("<script>") == 1


def test_same_records_give_identical_bytes(tmp_path):
    records = mixed_records()
    for folder, ordered in (("a", records), ("b", list(reversed(records)))):
        store = RecordStore(tmp_path / folder / "records")
        for r in ordered:
            store.write(r)
        write_leaderboard(tmp_path / folder / "records", tmp_path / folder, html=True)
    first = (tmp_path / "a" / "index.html").read_bytes()
    assert first == (tmp_path / "b" / "index.html").read_bytes()
    write_leaderboard(tmp_path / "a" / "records", tmp_path / "a", html=True)
    assert (tmp_path / "a" / "index.html").read_bytes() == first


# ---------------------------------------------------------------- beside the Markdown and the CSV


def test_site_is_written_on_request_and_then_kept_in_sync(tmp_path):
    store = RecordStore(tmp_path / "records")
    for r in mixed_records()[:3]:
        store.write(r)
    assert [p.name for p in write_leaderboard(tmp_path / "records", tmp_path)] == ["LEADERBOARD.md", "leaderboard.csv"]
    assert not (tmp_path / "index.html").exists()
    paths = write_leaderboard(tmp_path / "records", tmp_path, html=True)
    assert [p.name for p in paths] == ["LEADERBOARD.md", "leaderboard.csv", "index.html"]
    assert "from 3 records" in (tmp_path / "index.html").read_text()
    store.write(mixed_records()[3])
    write_leaderboard(tmp_path / "records", tmp_path)  # a later rebuild without html=True (vlpt bench, merge)
    page = (tmp_path / "index.html").read_text()
    assert "from 4 records" in page and "from 4 records" in (tmp_path / "LEADERBOARD.md").read_text()


def test_a_page_vlpt_did_not_write_is_never_replaced(tmp_path):
    store = RecordStore(tmp_path / "records")
    store.write(mixed_records()[0])
    (tmp_path / "index.html").write_text("<html>my own page</html>")
    write_leaderboard(tmp_path / "records", tmp_path)
    assert (tmp_path / "index.html").read_text() == "<html>my own page</html>"
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "index.html")) + ".*not written by vlpt"):
        write_leaderboard(tmp_path / "records", tmp_path, html=True)
    assert (tmp_path / "index.html").read_text() == "<html>my own page</html>"


def test_cli_leaderboard_html(tmp_path, capsys):
    store = RecordStore(tmp_path / "records")
    for r in mixed_records():
        store.write(r)
    assert main(["leaderboard", "--output", str(tmp_path), "--html"]) == 0
    assert str(tmp_path / "index.html") in capsys.readouterr().out
    assert (tmp_path / "index.html").read_text() == site_of(RecordStore(tmp_path / "records").records())


def test_committed_leaderboard_files_equal_a_rebuild(tmp_path):
    """LEADERBOARD.md, leaderboard.csv and index.html in leaderboard/ are what its records give today."""
    shutil.copytree(LEADERBOARD / "records", tmp_path / "records")
    write_leaderboard(tmp_path / "records", tmp_path, html=True)
    for name in ("LEADERBOARD.md", "leaderboard.csv", "index.html"):
        assert (tmp_path / name).read_text() == (LEADERBOARD / name).read_text(), name


# ---------------------------------------------------------------- averages and charts


def test_dataset_averages_need_two_datasets_and_shared_sets():
    records = [record("few_shot", "coop", 1, {"test": {"accuracy": 70.0}}, dataset="dtd"),
               record("few_shot", "coop", 1, {"test": {"accuracy": 80.0}}, dataset="eurosat"),
               record("few_shot", "cocoop", 1, {"test": {"accuracy": 80.0}}, dataset="eurosat")]
    (average,) = dataset_averages(aggregate(records))
    assert (average.method, average.over, average.get("test").mean, average.get("test").std) == (
        "coop", ("dtd", "eurosat"), 75.0, None
    )
    assert len(average.records) == 2


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(22.6, 58.8) == [20, 30, 40, 50, 60]
    assert nice_ticks(-4.0, 1.83) == [-4, -2, 0, 2]
    ticks = nice_ticks(0.0, 0.37)
    assert ticks[0] <= 0.0 and ticks[-1] >= 0.37 and len(ticks) <= 7
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, math.inf)


def test_charts_have_titles_and_a_mark_per_value():
    series = [Series("a", "#000", (Point("1", 10.0, 1.0, "a: 10"), Point("16", 30.0))),
              Series("b", "#111", (Point("16", 20.0),))]
    svg = line_chart("Title & more", "desc", ["1", "16"], series, "shots", "accuracy")
    assert svg.startswith('<svg class="chart" role="img"') and "<title>Title &amp; more</title>" in svg
    assert svg.count('class="mark point"') == 3 and 'class="whisker"' in svg and "<title>a: 10</title>" in svg
    bars = bar_chart("t", "d", ["1", "16"], series, "set", "gain", signed=True)
    assert bars.count('class="mark bar"') == 3 and ">+10.00<" in bars and ">+20.00<" in bars
    scatter = scatter_chart("t", "d", [Series("a", "#000", (Point(60.0, 70.0, 1.0, "a", x_err=2.0),))], "base",
                            "novel", harmonic_means=True)
    assert scatter.count('class="mark point"') == 1 and scatter.count('class="whisker"') == 2


def test_averages_over_different_sets_of_datasets_get_plots_of_their_own():
    records = b2n_average("coop", "ViT-B-16@openai", datasets=("dtd", "eurosat", "ucf101"))
    records += b2n_average("kgcoop", "ViT-B-16@openai", datasets=("dtd", "eurosat"))
    html = site_of(records)
    titles = set(re.findall(r"Base vs novel accuracy · average of [^<]*", html))
    assert titles == {"Base vs novel accuracy · average of 3 datasets (dtd, eurosat, ucf101)",
                      "Base vs novel accuracy · average of 2 datasets (dtd, eurosat)"}
