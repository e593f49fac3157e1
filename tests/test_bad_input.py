"""Bad data fails before any long work starts, with one error naming what is wrong.

Config-level bad input (unknown keys, wrong types, unknown methods, datasets and protocols) is covered
in test_harness.py and, with generated configs, in test_suite_properties.py; these tests cover what only
the data can tell: class names that do not match, classes left empty by sampling, images that do not
decode. Each builds a small CIFAR-10-layout folder of real PNG files and runs a real suite on it.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from vlpt.cli import main
from vlpt.data.consistency import DatasetWarning, check_splits
from vlpt.data.samples import DatasetSplits, Sample
from vlpt.errors import DatasetError
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((8, 8, 3), value, dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def image_folders(root, per_class: int = 2) -> None:
    """``root/cifar10/{train,val,test}/<class>/*.png``, ``per_class`` images per class and split."""
    for split in ("train", "val", "test"):
        for label, name in enumerate(CLASSES):
            for i in range(per_class):
                write_png(root / "cifar10" / split / name / f"{i}.png", 20 * label + i)


def suite_file(tmp_path, shots=(2,), methods=("coop",)) -> str:
    suite = {
        "name": "bad-input", "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
        "data_root": str(tmp_path / "data"), "output": str(tmp_path / "out"),
        "experiments": [{"protocol": "few_shot", "dataset": "cifar10", "shots": list(shots), "seeds": [1],
                         "params": {"epochs": 1}, "methods": list(methods)}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def fails_up_front(tmp_path, monkeypatch, message: str, **suite) -> DatasetError:
    """Run the suite; the harness must raise ``message`` before building the backbone or running anything."""
    harness = Harness(load_suite(suite_file(tmp_path, **suite)), progress=False)
    monkeypatch.setattr(harness, "execute", lambda run: pytest.fail(f"{run.identity.run_id} ran despite bad data"))
    with pytest.raises(DatasetError, match=message) as info:
        harness.run_all()
    assert harness._backbone is None, "the backbone was built before the data was checked"
    assert not (tmp_path / "out" / "records").exists()
    return info.value


def test_good_data_passes_the_check_and_runs(tmp_path, capsys):
    image_folders(tmp_path / "data")
    harness = Harness(load_suite(suite_file(tmp_path, methods=("zeroshot", "coop"))), progress=False)
    harness.run_all()
    assert "checked the data of 2 run(s): 60 image files" in capsys.readouterr().out  # train, val, test: 10 x 2 each
    assert len(list((tmp_path / "out" / "records").glob("*.json"))) == 2


def test_an_undecodable_training_image_is_named_before_training(tmp_path, monkeypatch):
    image_folders(tmp_path / "data")
    bad = tmp_path / "data" / "cifar10" / "train" / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated: the header survives, the pixels do not
    error = fails_up_front(tmp_path, monkeypatch, re.escape(f"image file {bad} cannot be decoded"))
    assert "coop, few_shot, cifar10, 2 shots, seed 1" in str(error)


def test_an_undecodable_test_image_is_named_before_training(tmp_path, monkeypatch):
    image_folders(tmp_path / "data")
    bad = tmp_path / "data" / "cifar10" / "test" / "frog" / "0.png"
    bad.write_bytes(b"not an image at all")
    fails_up_front(tmp_path, monkeypatch, re.escape(f"image file {bad} cannot be decoded"))


def test_a_truncated_test_jpeg_is_named_before_training(tmp_path, monkeypatch):
    image_folders(tmp_path / "data")
    bad = tmp_path / "data" / "cifar10" / "test" / "deer" / "0.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header intact, half of the scan data lost
    fails_up_front(tmp_path, monkeypatch, re.escape(f"image file {bad} cannot be decoded"))


def test_a_class_left_empty_by_sampling_is_named_before_training(tmp_path, monkeypatch):
    image_folders(tmp_path / "data")
    for path in (tmp_path / "data" / "cifar10" / "train" / "ship").iterdir():
        path.unlink()  # the class exists (val, test) but has no training image to sample
    fails_up_front(tmp_path, monkeypatch, "cifar10: 1 class\\(es\\) have no training image: 'ship'")


def test_a_test_class_that_is_not_a_training_class_is_named_before_training(tmp_path, monkeypatch):
    image_folders(tmp_path / "data")
    write_png(tmp_path / "data" / "cifar10" / "test" / "zebra" / "0.png", 7)
    fails_up_front(tmp_path, monkeypatch, "class folder .*zebra has no counterpart in .*train")


def test_the_cli_reports_bad_data_in_one_line_and_dry_run_checks_it(tmp_path, capsys):
    image_folders(tmp_path / "data")
    bad = tmp_path / "data" / "cifar10" / "val" / "cat" / "0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["bench", "--suite", suite_file(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlpt: error: run ") and f"image file {bad} cannot be decoded" in err
    assert "Traceback" not in err


def test_sample_class_names_must_match_the_class_list():
    def splits(test):
        train = [Sample("/a.png", 0, "cat"), Sample("/b.png", 1, "dog")]
        return DatasetSplits("pets", ["cat", "dog"], train, [], test)

    check_splits(splits([Sample("/c.png", 1, "dog")]))
    with pytest.raises(DatasetError, match="dataset pets, test split: image /c.png is labelled 1 with class name "
                                           "'wolf', but class 1 of the dataset is 'dog'"):
        check_splits(splits([Sample("/c.png", 1, "wolf")]))
    with pytest.raises(DatasetError, match="image /c.png has label 2; labels must be 0..1"):
        check_splits(splits([Sample("/c.png", 2, "dog")]))
    # a repeated name (CLIP's ImageNet list has two) loads, with one warning naming the labels
    with pytest.warns(DatasetWarning, match=r"class names repeat \('cat' at labels 0, 2\); their prompts are "
                                            r"identical"):
        check_splits(DatasetSplits("pets", ["cat", "dog", "cat"], [], [], []))


def test_a_split_file_whose_class_names_disagree_fails_when_loaded(tmp_path):
    from vlpt.data import load_dataset

    folder = tmp_path / "dtd"
    for i, name in enumerate(["banded", "dotted"]):
        write_png(folder / "images" / name / "0.png", 10 * i)
    rows = [["banded/0.png", 0, "banded"], ["dotted/0.png", 0, "dotted"]]
    (folder / "split_zhou_DescribableTextures.json").write_text(
        json.dumps({"train": rows, "val": rows, "test": rows}))
    with pytest.raises(DatasetError, match="label 0 has several class names"):
        load_dataset("dtd", tmp_path)


def test_a_dataset_with_fewer_classes_than_its_catalog_declares_is_flagged(tmp_path):
    from vlpt.data import load_dataset

    image_folders(tmp_path)
    for path in (tmp_path / "cifar10").glob("*/truck"):
        for image in path.iterdir():
            image.unlink()
        path.rmdir()
    with pytest.warns(DatasetWarning, match="cifar10 has 9 classes but its catalog file .*cifar10.yaml.* declares "
                                            "num_classes: 10"):
        assert len(load_dataset("cifar10", tmp_path).classnames) == 9
