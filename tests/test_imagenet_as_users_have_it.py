"""ImageNet as users have it: only the evaluation split, and no classnames.txt (CLIP's names from open_clip, two of
which repeat)."""
from __future__ import annotations

import warnings

import pytest
import yaml
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from PIL import Image

from vlpt.data import load_dataset
from vlpt.data.consistency import DatasetWarning
from vlpt.errors import DatasetError
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.protocols import get_protocol

REPEATED = {"missile": [657, 744], "sunglasses": [836, 837]}


@pytest.fixture(scope="module")
def imagenet_val_only(tmp_path_factory):
    """``imagenet/images/val/<wnid>/`` for 1,000 made-up wnids, one tiny image each: no train, no classnames.txt."""
    root = tmp_path_factory.mktemp("data")
    for i in range(1000):
        folder = root / "imagenet" / "images" / "val" / f"n{i:08d}"
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (i % 256, (7 * i) % 256, (13 * i) % 256)).save(folder / "0.png")
    return root


def test_it_loads_test_only_with_clips_class_names_and_one_warning(imagenet_val_only):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset("imagenet", imagenet_val_only)
    repeated = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(repeated) == 1 and "'missile' at labels 657, 744" in str(repeated[0].message)
    assert "'sunglasses' at labels 836, 837" in str(repeated[0].message)
    assert splits.classnames == list(IMAGENET_CLASSNAMES)
    assert not splits.train and not splits.val and len(splits.test) == 1000
    assert splits.test[0].path.endswith("n00000000/0.png") and splits.test[0].classname == IMAGENET_CLASSNAMES[0]


def test_training_on_it_is_refused_by_name(imagenet_val_only):
    splits = load_dataset("imagenet", imagenet_val_only)
    with pytest.raises(DatasetError, match="dataset imagenet has no training images"):
        get_protocol("few_shot").data(splits, 16, 1)


def test_a_test_time_run_needs_only_the_evaluation_split_and_records_the_repeated_names(imagenet_val_only, tmp_path):
    suite = {"name": "imagenet-tta", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
             "data_root": str(imagenet_val_only), "output": str(tmp_path / "out"),
             "experiments": [{"protocol": "test_time", "dataset": "imagenet", "shots": [16], "seeds": [1],
                              "eval_limit": 20, "methods": ["zeroshot"]}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    harness = Harness(load_suite(path), progress=False)
    harness.run_all()
    (record,) = harness.store.records()
    assert record.metrics["test"]["n"] == 20
    assert record.config["repeated_class_names"]["imagenet"] == REPEATED


def test_imagenet_v2_needs_no_imagenet_copy(tmp_path):
    """ImageNet-V2's folders are class indices: CLIP's names from open_clip label them without ImageNet."""
    image_dir = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    for label in (0, 657, 999):
        (image_dir / str(label)).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(image_dir / str(label) / "a.jpeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)  # repeated names, as for ImageNet
        splits = load_dataset("imagenet_v2", tmp_path)
    assert len(splits.classnames) == 1000 and len(splits.test) == 3
    assert {(s.label, s.classname) for s in splits.test} == {(0, IMAGENET_CLASSNAMES[0]), (657, "missile"),
                                                            (999, IMAGENET_CLASSNAMES[999])}
