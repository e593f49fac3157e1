"""Datasets a suite defines itself: one definition per name in a process, and refusals that name the problem."""
from __future__ import annotations

import pytest
import torch

from vlpt.data.catalog import add_user_dataset, user_dataset
from vlpt.errors import ConfigError
from vlpt.eval.predict import load_trained_method
from vlpt.eval.suite import define_dataset, forget_defined_datasets


@pytest.fixture(autouse=True)
def fresh_definitions():
    forget_defined_datasets()
    yield
    forget_defined_datasets()


def test_a_name_keeps_one_definition_per_process(tmp_path):
    add_user_dataset("mine", {"folder": "a"}, "suite.yaml: datasets: mine", tmp_path)
    add_user_dataset("mine", {"folder": "a"}, "again.yaml: datasets: mine", tmp_path)  # the same: fine
    assert user_dataset("mine").folder == str((tmp_path / "a").resolve())
    with pytest.raises(ConfigError, match="dataset 'mine' was defined otherwise earlier in this process"):
        add_user_dataset("mine", {"folder": "b"}, "other.yaml: datasets: mine", tmp_path)
    with pytest.raises(ConfigError, match="defined as a classification dataset earlier"):
        define_dataset("mine", {"layout": "cases", "folder": "c", "classes": ["x"], "binary": True,
                                "image_pattern": "{id}.png", "mask_pattern": "{id}_m.png"}, "s.yaml", tmp_path)
    forget_defined_datasets()
    add_user_dataset("mine", {"folder": "b"}, "other.yaml: datasets: mine", tmp_path)


@pytest.mark.parametrize("name, values, message", [
    ("dtd", {"folder": "x"}, "dataset name 'dtd' is one of vlpt's"),
    ("a@b", {"folder": "x"}, "cannot hold '@'"),
    ("a+b", {"folder": "x"}, "cannot hold '@', '~', ':' or '\\+'"),
    ("isic", {"folder": "x"}, "'isic' is a segmentation dataset's"),
    ("mine", {"loader": "image_folder"}, "a dataset needs `folder:`"),
    ("mine", {"folder": "x", "loader": "zip"}, "unknown loader 'zip'"),
    ("mine", {"folder": "x", "name": "yours"}, "name 'yours' differs from the dataset's key 'mine'"),
])
def test_bad_definitions_are_named(tmp_path, name, values, message):
    with pytest.raises(ConfigError, match=message):
        define_dataset(name, values, "suite.yaml: datasets", tmp_path)


def test_predict_refuses_a_test_time_method(tmp_path):
    path = tmp_path / "tpt.pt"
    torch.save({"method": "tpt", "backbone": "vlpt-starter-vit@vlpt-starter", "classnames": ["a"], "config": {},
                "state_dict": {}}, path)
    with pytest.raises(ConfigError, match="test-time method tpt, which adapts to each test image"):
        load_trained_method(path)


def test_case_patterns_pair_files_in_per_case_and_shared_folders(tmp_path):
    from PIL import Image

    from vlpt.seg.datasets import pair_patterns

    for case in ("001", "002"):
        Image.new("L", (4, 4)).save(tmp_path / f"{case}.png")
        Image.new("L", (4, 4)).save(tmp_path / f"{case}_mask.png")
    (tmp_path / "._001.png").write_bytes(b"macOS metadata")  # hidden: never a case
    pairs = pair_patterns(tmp_path, "./{id}.png", "{id}_mask.png")  # images beside their masks
    assert sorted(pairs) == ["001", "002"] and pairs["001"].mask.endswith("001_mask.png")
    assert sorted(pair_patterns(tmp_path, "{id}*.png", "{id}_mask.png")) == ["001", "002"]  # no '**' glob
    (tmp_path / "002_mask.png").unlink()
    with pytest.raises(Exception, match="002.png needs .*002_mask.png"):
        pair_patterns(tmp_path, "{id}.png", "{id}_mask.png")


@pytest.mark.parametrize("pattern, message", [("../{id}.png", "without '..'"), ("**/{id}.png", "'\\*\\*'"),
                                              ("/abs/{id}.png", "relative")])
def test_bad_case_patterns_are_refused(tmp_path, pattern, message):
    with pytest.raises(ConfigError, match=message):
        define_dataset("cases", {"layout": "cases", "folder": "x", "classes": ["x"], "binary": True,
                                 "image_pattern": pattern, "mask_pattern": "{id}_m.png"}, "s.yaml", tmp_path)


def test_a_catalogued_datasets_folder_is_that_dataset_wherever_its_data_root_is(tmp_path):
    from vlpt.eval.one_line import dataset_argument

    (tmp_path / "data" / "caltech-101").mkdir(parents=True)  # caltech101's catalog folder
    (tmp_path / "mine").mkdir()
    found = dataset_argument(str(tmp_path / "data" / "caltech-101"))
    assert (found.name, found.data_root, found.definition) == ("caltech101", tmp_path / "data", None)
    mine = dataset_argument(str(tmp_path / "mine"))
    assert mine.name == "mine" and mine.definition["loader"] == "coop"
    assert dataset_argument("pacs@photo").name == "pacs@photo"


def test_masks_never_overwrite_the_images_they_come_from(tmp_path):
    from vlpt.eval.predict import predict_masks

    image = tmp_path / "scan.png"
    image.write_bytes(b"")
    with pytest.raises(ConfigError, match="would overwrite an input image"):
        predict_masks(None, [image], tmp_path)
