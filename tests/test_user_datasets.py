"""Datasets a suite defines itself: one definition per name in a process, and refusals that name the problem."""
from __future__ import annotations

import pytest
import torch

from vlpt.data.catalog import add_user_dataset, forget_user_datasets, user_dataset
from vlpt.errors import ConfigError
from vlpt.eval.predict import load_trained_method


@pytest.fixture(autouse=True)
def fresh_definitions():
    forget_user_datasets()
    yield
    forget_user_datasets()


def test_a_name_keeps_one_definition_per_process(tmp_path):
    add_user_dataset("mine", {"folder": "a"}, "suite.yaml: datasets: mine", tmp_path)
    add_user_dataset("mine", {"folder": "a"}, "again.yaml: datasets: mine", tmp_path)  # the same: fine
    assert user_dataset("mine").folder == str((tmp_path / "a").resolve())
    with pytest.raises(ConfigError, match="dataset 'mine' was defined otherwise earlier in this process"):
        add_user_dataset("mine", {"folder": "b"}, "other.yaml: datasets: mine", tmp_path)
    forget_user_datasets()
    add_user_dataset("mine", {"folder": "b"}, "other.yaml: datasets: mine", tmp_path)


@pytest.mark.parametrize("name, values, message", [
    ("dtd", {"folder": "x"}, "dataset name 'dtd' is one of vlpt's"),
    ("a@b", {"folder": "x"}, "cannot hold '@'"),
    ("mine", {"loader": "image_folder"}, "a dataset needs `folder:`"),
    ("mine", {"folder": "x", "loader": "zip"}, "unknown loader 'zip'"),
    ("mine", {"folder": "x", "name": "yours"}, "name 'yours' differs from the dataset's key 'mine'"),
])
def test_bad_definitions_are_named(tmp_path, name, values, message):
    with pytest.raises(ConfigError, match=message):
        add_user_dataset(name, values, "suite.yaml: datasets", tmp_path)


def test_predict_refuses_a_test_time_method(tmp_path):
    path = tmp_path / "tpt.pt"
    torch.save({"method": "tpt", "backbone": "vlpt-starter-vit@vlpt-starter", "classnames": ["a"], "config": {},
                "state_dict": {}}, path)
    with pytest.raises(ConfigError, match="test-time method tpt, which adapts to each test image"):
        load_trained_method(path)
