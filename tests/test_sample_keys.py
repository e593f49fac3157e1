"""Per-image random draws (training crops, test-time views, corruptions) do not depend on where the data
lies or how its root is spelled: they are seeded by each sample's path within the data root."""
from __future__ import annotations

import shutil

import pytest
import torch

from vlpt.data.catalog import load_dataset
from vlpt.data.feature_cache import ViewDataset
from vlpt.data.samples import DatasetSplits, Sample
from vlpt.data.transforms import train_transform
from vlpt.tta.data import TestTimeViews as ViewsOfTestImages
from vlpt.tta.views import AugmentedViews

NAME = "starter_digits~gaussian_noise:3"
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """The same dataset under one root spelled absolutely, one spelled relatively, and one copy elsewhere."""
    base = tmp_path_factory.mktemp("keys")
    load_dataset(NAME, base / "data")  # writes the starter images
    shutil.copytree(base / "data", base / "elsewhere" / "data")
    return base


def _three_loads(roots, monkeypatch) -> list[DatasetSplits]:
    monkeypatch.chdir(roots)
    return [load_dataset(NAME, roots / "data"), load_dataset(NAME, "./data/../data"),
            load_dataset(NAME, roots / "elsewhere" / "data")]


def test_keys_are_paths_within_the_data_root(roots, monkeypatch):
    absolute, relative, moved = _three_loads(roots, monkeypatch)
    keys = [s.key for s in absolute.train]
    assert keys and all(not k.startswith("/") and k.startswith("starter/starter_digits/train/") for k in keys)
    assert [s.key for s in relative.train] == keys == [s.key for s in moved.train]
    assert [s.path for s in moved.train] != [s.path for s in absolute.train]


def test_crops_views_and_corruptions_are_the_same_wherever_the_data_lies(roots, monkeypatch):
    loads = _three_loads(roots, monkeypatch)
    crop = train_transform(32, MEAN, STD)
    crops = [ViewDataset(d.train[:3], crop, view=4, seed=2) for d in loads]
    for i in range(3):
        first = crops[0][i][0]
        assert all(torch.equal(first, other[i][0]) for other in crops[1:])
    views = [ViewsOfTestImages(d.test[:2], AugmentedViews(32, MEAN, STD, "augmix"), n_views=4, seed=1) for d in loads]
    for i in range(2):
        first = views[0][i][0]
        assert all(torch.equal(first, other[i][0]) for other in views[1:])


def test_a_sample_without_a_key_is_seeded_by_its_path():
    sample = Sample("/somewhere/x.png", 0, "x")
    assert sample.seed_key == "/somewhere/x.png"
    outside = DatasetSplits("toy", ["x"], [sample], [], []).keyed("/elsewhere")
    assert outside.train[0].key == "/somewhere/x.png"
    inside = DatasetSplits("toy", ["x"], [sample], [], []).keyed("/somewhere/")
    assert inside.train[0].key == "x.png"
