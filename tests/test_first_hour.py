"""A researcher's first hour, driven through the `vlpt` command as a user would: a one-line run on a folder of
their own images, training curves, predictions with the trained prompt, overrides and the messages of mistakes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.slow  # starts vlpt processes

STARTER = "vlpt-starter-vit@vlpt-starter"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def vlpt(*args, cwd=None, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vlpt.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def colour_folder(root: Path, parts=("train", "test"), per_class=(4, 2)) -> Path:
    """A small dataset of the user's: ``train/`` and ``test/`` class folders of coloured JPEG images."""
    for part, count in zip(parts, per_class):
        for name, rgb in COLOURS.items():
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                shade = tuple(max(0, min(255, c + 9 * i - 15)) for c in rgb)
                Image.new("RGB", (40, 40), shade).save(folder / f"{name}_{i}.jpg")
    return root


@pytest.fixture(scope="module")
def coop_run(tmp_path_factory):
    """`vlpt run coop_m4 FOLDER` on the starter backbone, 2 shots, 1 seed, 3 epochs."""
    tmp = tmp_path_factory.mktemp("first_hour")
    folder = colour_folder(tmp / "colours")
    out = tmp / "out"
    result = vlpt("run", "coop_m4", folder, "--backbone", STARTER, "--shots", 2, "--seeds", 1,
                  "--param", "epochs=3", "--output", out, env_extra={"VLPT_CACHE": str(tmp / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    records = list((out / "records").glob("*.json"))
    return folder, out, records, result


def test_a_one_line_run_on_a_folder_of_ones_own_images(coop_run):
    folder, out, records, result = coop_run
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["identity"]["method"] == "coop" and record["identity"]["dataset"] == "colours"
    assert record["config"]["data"]["classes"] == 3 and record["config"]["data"]["n_train"] == 6
    suite = yaml.safe_load((out / "suite.yaml").read_text())  # written beside the records, to run again
    assert suite["datasets"]["colours"] == {"loader": "image_folder", "folder": str(folder.resolve())}
    assert suite["experiments"][0]["methods"] == [{"config": "coop_m4", "params": {"epochs": 3}}]
    again = vlpt("bench", "--suite", out / "suite.yaml", "--dry-run")
    assert again.returncode == 0 and "0 to do" in again.stdout, again.stdout + again.stderr
    assert (out / "LEADERBOARD.md").is_file()


def test_training_curves_are_written_and_linked_from_the_site(coop_run):
    _, out, records, _ = coop_run
    run_id = records[0].stem
    with open(out / "logs" / run_id / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["train_loss"]) for row in rows if row.get("train_loss")]
    assert len(losses) >= 3  # a step logged each step of 3 epochs
    result = vlpt("leaderboard", "--output", out, "--html")
    assert result.returncode == 0, result.stderr
    assert f'href="logs/{run_id}/version_0/metrics.csv"' in (out / "index.html").read_text()


def test_predict_classifies_a_folder_with_the_trained_prompt(coop_run, tmp_path):
    folder, out, records, _ = coop_run
    checkpoint = out / "checkpoints" / f"{records[0].stem}.pt"
    result = vlpt("predict", checkpoint, folder / "test")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "image\tclass\tprobability" and len(lines) == 1 + 6
    for line in lines[1:]:
        path, name, probability = line.split("\t")
        assert Path(path).is_file() and name in COLOURS and 0.0 < float(probability) <= 1.0
    written = vlpt("predict", checkpoint, folder / "test" / "red" / "red_0.jpg", "--output", tmp_path / "p.csv")
    assert written.returncode == 0 and (tmp_path / "p.csv").read_text().startswith("image,class,probability\n")


def test_the_tensorboard_logger_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    folder = colour_folder(tmp_path / "colours")
    out = tmp_path / "out"
    result = vlpt("run", "coop_m4", folder, "--backbone", STARTER, "--shots", 1, "--seeds", 1, "--param",
                  "epochs=2", "--set", "trainer.logger=tensorboard", "--output", out,
                  env_extra={"VLPT_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    (run_id,) = [p.stem for p in (out / "records").glob("*.json")]
    assert list((out / "logs" / run_id / "version_0").glob("events.out.tfevents.*"))


def test_an_override_with_a_misspelt_key_is_named_with_the_likely_one(tmp_path):
    result = vlpt("bench", "--dry-run", "--output", tmp_path, "--set", "experiments.0.parms.epochs=5")
    assert result.returncode == 2
    assert "unknown key(s) 'parms' (did you mean 'params'?)" in result.stderr
    result = vlpt("bench", "--dry-run", "--output", tmp_path, "--set", "experiments.0.params.epochs=5")
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_misspelt_method_or_dataset_suggests_the_closest_names(tmp_path):
    result = vlpt("run", "copo", "dtd", "--backbone", STARTER, "--output", tmp_path / "a", "--dry-run")
    assert result.returncode == 2 and "unknown method config 'copo' (did you mean 'coop'" in result.stderr
    result = vlpt("run", "coop", "dtdd", "--backbone", STARTER, "--output", tmp_path / "b", "--dry-run")
    assert result.returncode == 2 and "(did you mean 'dtd'?)" in result.stderr


def test_a_missing_dataset_prints_the_prepare_command(tmp_path):
    result = vlpt("run", "coop", "dtd", "--backbone", STARTER, "--output", tmp_path / "a", "--data-root",
                  tmp_path / "empty", "--dry-run")
    assert result.returncode == 2 and "vlpt data prepare dtd --root" in result.stderr


def test_data_check_reports_what_a_folder_holds_and_its_problems(tmp_path):
    folder = colour_folder(tmp_path / "colours")
    result = vlpt("data", "check", folder)
    assert result.returncode == 0, result.stderr
    assert "dataset colours: 3 classes: blue, green, red" in result.stdout
    assert "train: 9 images, 3-3 per class" in result.stdout and "val: 3 images, 1-1 per class" in result.stdout
    assert "test: 6 images, 2-2 per class" in result.stdout  # val: a seeded fifth of train, as image_folder does
    (folder / "test" / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    result = vlpt("data", "check", folder, "--open-images")
    assert result.returncode == 1 and "broken.jpg" in result.stdout


def test_a_suite_may_define_its_datasets_next_to_it(tmp_path):
    colour_folder(tmp_path / "images" / "colours", parts=("all",), per_class=(10,))
    (tmp_path / "colours.yaml").write_text(yaml.safe_dump(
        {"loader": "coop", "folder": "images/colours/all", "fallback": "folders", "templates": ["a {} image."],
         "num_classes": 4}))
    suite = {"name": "mine", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
             "output": "out", "datasets": {"colours": "colours.yaml"},
             "experiments": [{"protocol": "few_shot", "dataset": "colours", "shots": [2], "seeds": [1],
                              "methods": ["zeroshot"]}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    result = vlpt("bench", "--suite", tmp_path / "suite.yaml", cwd=tmp_path,  # output: relative to where one runs
                  env_extra={"VLPT_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dataset colours has 3 classes but" in result.stderr  # the declared count differs: one line, on it goes
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "records").glob("*.json")]
    assert record["identity"]["dataset"] == "colours" and record["metrics"]["test"]["n"] == 9  # 30% of 10 per class


def test_keys_at_the_wrong_level_say_where_they_belong(tmp_path):
    base = {"name": "s", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
            "experiments": [{"protocol": "few_shot", "dataset": "starter_shapes", "methods": ["coop"]}]}
    for extra, expected in [({"shots": [1]}, "`shots` is an experiment's key"),
                            ({"precision": "bf16-mixed"}, "`precision` is a trainer setting")]:
        (tmp_path / "s.yaml").write_text(yaml.safe_dump({**base, **extra}))
        result = vlpt("bench", "--suite", tmp_path / "s.yaml", "--dry-run")
        assert result.returncode == 2 and expected in result.stderr, result.stderr
    wrong = {**base, "experiments": [{**base["experiments"][0], "epochs": 3}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(wrong))
    result = vlpt("bench", "--suite", tmp_path / "s.yaml", "--dry-run")
    assert result.returncode == 2 and "`epochs` is a method setting: write it under the experiment's `params:`" \
        in result.stderr


def skin_lesion_cases(root: Path, cases: int = 10) -> Path:
    """A PH2-like set: per-case folders holding a BMP image and an RGB (white on black) BMP lesion mask."""
    for i in range(cases):
        case = f"IMD{i:03d}"
        image = Image.new("RGB", (48, 48), (200, 160, 140))
        mask = Image.new("RGB", (48, 48), (0, 0, 0))
        for x in range(10 + i, 30 + i):
            for y in range(12, 34):
                image.putpixel((x, y), (90, 50, 40))
                mask.putpixel((x, y), (255, 255, 255))
        (root / case / f"{case}_Dermoscopic_Image").mkdir(parents=True)
        (root / case / f"{case}_lesion").mkdir(parents=True)
        image.save(root / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp")
        mask.save(root / case / f"{case}_lesion" / f"{case}_lesion.bmp")
    return root


def test_a_segmentation_set_in_per_case_folders_with_rgb_bmp_masks(tmp_path):
    skin_lesion_cases(tmp_path / "lesions")
    lesions = {"layout": "cases", "folder": "lesions", "classes": ["skin lesion"], "binary": True,
               "image_pattern": "{id}/{id}_Dermoscopic_Image/{id}.bmp", "mask_pattern": "{id}/{id}_lesion/{id}_lesion.bmp"}
    suite = {"name": "lesions", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
             "output": str(tmp_path / "out"), "datasets": {"lesions": lesions},
             "experiments": [{"protocol": "segmentation", "dataset": "lesions", "shots": [8], "seeds": [1],
                              "params": {"epochs": 1, "batch_size": 4, "train_decoder": True},
                              "methods": ["seg_coop"]}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    check = vlpt("data", "check", "lesions", "--suite", tmp_path / "suite.yaml", "--open-images")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "dataset lesions: segmentation, binary: skin lesion" in check.stdout and "train: 8 image/mask pairs" \
        in check.stdout
    result = vlpt("bench", "--suite", tmp_path / "suite.yaml", env_extra={"VLPT_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "records").glob("*.json")]
    assert record["identity"]["dataset"] == "lesions" and record["metrics"]["test"]["n"] == 1
    assert record["config"]["data"]["definitions"]["lesions"]["image_pattern"] == lesions["image_pattern"]
    images = sorted((tmp_path / "lesions").glob("*/*_Dermoscopic_Image/*.bmp"))[:3]
    checkpoint = tmp_path / "out" / "checkpoints" / f"{record['run_id']}.pt"
    predicted = vlpt("predict", checkpoint, *images, "--output", tmp_path / "masks")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    for image in images:
        with Image.open(tmp_path / "masks" / f"{image.stem}.png") as mask:
            assert mask.size == (48, 48) and mask.mode == "L" and set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
    (tmp_path / "lesions" / "IMD003" / "IMD003_lesion" / "IMD003_lesion.bmp").unlink()
    missing = vlpt("data", "check", "lesions", "--suite", tmp_path / "suite.yaml")
    assert missing.returncode == 2 and "IMD003.bmp needs" in missing.stderr and "IMD003_lesion.bmp" in missing.stderr


def test_a_method_config_file_of_ones_own_runs_from_its_relative_path(tmp_path):
    colour_folder(tmp_path / "colours")
    (tmp_path / "mine.yaml").write_text("method: coop\nparams: {n_ctx: 4, ctx_init: a photo of a, epochs: 2}\n")
    result = vlpt("run", "mine.yaml", "colours", "--backbone", STARTER, "--shots", 1, "--seeds", 1, "--output",
                  tmp_path / "out", cwd=tmp_path, env_extra={"VLPT_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "records").glob("*.json")]
    assert record["identity"]["method"] == "coop" and record["identity"]["variant"] == "mine"
    definition = record["config"]["data"]["definitions"]["colours"]  # what changes results, not where it lies
    assert definition["loader"] == "image_folder" and "folder" not in definition


def test_a_catalogued_datasets_folder_is_checked_as_that_dataset(tmp_path):
    colour_folder(tmp_path / "data" / "cifar10")  # cifar10's catalog layout: train/ and test/ class folders
    result = vlpt("data", "check", tmp_path / "data" / "cifar10")
    assert result.returncode == 0, result.stderr
    assert "dataset cifar10: 3 classes" in result.stdout and "declares num_classes: 10" in result.stderr
