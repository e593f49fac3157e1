"""The segmentation table: Dice and IoU of the source test set and of each target, over seeds."""
import csv
import io
import re
import statistics

from vlpt.results.publish import write_leaderboard
from vlpt.results.record import DICE, IOU, RunIdentity, RunRecord
from vlpt.results.store import RecordStore

CLIPSEG = "clipseg:CIDAS/clipseg-rd64-refined"


def add(store, method, shots, seed, metrics, targets=("cvc_clinicdb",), backbone=CLIPSEG):
    identity = RunIdentity(
        method=method, backbone=backbone, dataset="kvasir_seg", protocol="segmentation",
        shots=shots, seed=seed, targets=targets,
    )
    store.write(RunRecord(identity=identity, metrics=metrics, config={}))


def seg(dice, iou, n=100):
    return {DICE: dice, IOU: iou, "n": n}


def build(tmp_path):
    store = RecordStore(tmp_path / "records")
    for seed, (dice, iou, t_dice, t_iou) in enumerate([(80.0, 70.0, 60.0, 50.0), (84.0, 72.0, 64.0, 51.0)], start=1):
        add(store, "coop", 16, seed, {"test": seg(dice, iou), "cvc_clinicdb": seg(t_dice, t_iou, n=60)})
    add(store, "zero_shot", 0, 1, {"test": seg(40.0, 30.0)}, targets=())
    few_shot = RunIdentity(method="coop", backbone="ViT-B-16", dataset="dtd", protocol="few_shot", shots=16, seed=1)
    store.write(RunRecord(identity=few_shot, metrics={"test": {"accuracy": 60.0}}, config={}))
    write_leaderboard(tmp_path / "records", tmp_path)
    return (tmp_path / "LEADERBOARD.md").read_text(), (tmp_path / "leaderboard.csv").read_text()


def section(markdown):
    return markdown.split("## Segmentation (`segmentation`)", 1)[1].split("\n## ", 1)[0]


def test_markdown_table_has_source_and_target_dice_and_iou(tmp_path):
    markdown, _ = build(tmp_path)
    assert re.findall(r"^## .*\(`(\w+)`\)$", markdown, flags=re.M) == ["few_shot", "segmentation"]
    lines = [line for line in section(markdown).splitlines() if line.startswith("|")]
    assert lines[0] == (
        "| Model | Dataset | Method | Variant | Train images | Dice | IoU "
        "| cvc_clinicdb Dice | cvc_clinicdb IoU | Seeds | Train ms / img | Test ms / img | Peak MiB | Selection |"
    )
    std = f"{statistics.stdev([70.0, 72.0]):.2f}"
    assert lines[2:] == [
        f"| {CLIPSEG} | kvasir_seg | zero_shot | default | 0 | 40.00 ± 0.00 | 30.00 ± 0.00 | – | – | 1 | – | – | – | – |",
        f"| {CLIPSEG} | kvasir_seg | coop | default | 16 | 82.00 ± 2.83 | 71.00 ± {std} "
        f"| 62.00 ± 2.83 | 50.50 ± 0.71 | 2 | – | – | – | – (paper: fixed) |",
    ]
    assert (
        "Dice: per-image Dice averaged over images; IoU: dataset-level IoU of the foreground (binary) or "
        "averaged over classes (multi-class), in %. Train images: K training images (0: nothing trained)." in section(markdown)
    )


def test_csv_has_dice_and_iou_rows_source_first(tmp_path):
    _, text = build(tmp_path)
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["protocol"] == "segmentation" and r["method"] == "coop"]
    assert [(r["eval_set"], r["metric"]) for r in rows] == [
        ("test", "dice"), ("test", "iou"), ("test", "n"),
        ("cvc_clinicdb", "dice"), ("cvc_clinicdb", "iou"), ("cvc_clinicdb", "n"),
    ]
    target_iou = rows[4]
    assert (target_iou["backbone"], target_iou["shots"], target_iou["targets"]) == (CLIPSEG, "16", "cvc_clinicdb")
    assert (target_iou["mean"], target_iou["std"], target_iou["n_seeds"]) == (
        "50.500000", f"{statistics.stdev([50.0, 51.0]):.6f}", "2"
    )


def test_target_columns_follow_the_rows_and_each_records_target_order(tmp_path):
    store = RecordStore(tmp_path / "records")
    add(store, "coop", 4, 1, {"test": seg(80, 70), "etis": seg(1, 2), "cvc_clinicdb": seg(3, 4)},
        targets=("etis", "cvc_clinicdb"))
    add(store, "coop", 4, 1, {"test": seg(75, 65), "cvc_colondb": seg(5, 6)},
        targets=("cvc_colondb",), backbone="vlpt-starter-vit@vlpt-starter+decoder")
    write_leaderboard(tmp_path / "records", tmp_path)
    lines = [line for line in section((tmp_path / "LEADERBOARD.md").read_text()).splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[5:-4] == [
        "Dice", "IoU", "etis Dice", "etis IoU", "cvc_clinicdb Dice", "cvc_clinicdb IoU",
        "cvc_colondb Dice", "cvc_colondb IoU", "Seeds",
    ]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    clipseg = next(r for r in rows if r["Model"] == CLIPSEG)
    assert clipseg["etis IoU"] == "2.00 ± 0.00" and clipseg["cvc_colondb Dice"] == "–"
    csv_sets = [r["eval_set"] for r in csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text()))
                if r["backbone"] == CLIPSEG and r["metric"] == "dice"]
    assert csv_sets == ["test", "etis", "cvc_clinicdb"]
