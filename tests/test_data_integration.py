"""Loaders on the real image data in ../shared/data (skipped when the folder is absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vlpt.data import ImageDataset, load_dataset
from vlpt.protocols import build_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent")]


@pytest.fixture(scope="module")
def caltech():
    return load_dataset("caltech101", SHARED)


def test_caltech101(caltech):
    assert caltech.num_classes == 100
    assert (len(caltech.train), len(caltech.val), len(caltech.test)) == (1600, 400, 2465)
    assert caltech.classnames[0] == "face" and "airplane" in caltech.classnames and "leopard" in caltech.classnames
    assert "BACKGROUND_Google" not in caltech.classnames
    image, label = ImageDataset(caltech.test[:1])[0]
    assert image.mode == "RGB" and label == caltech.test[0].label


def test_caltech101_protocols(caltech):
    few = build_data("few_shot", caltech, 16, 1)
    assert len(few.train) == 1600 and len(few.val) == 400
    four = build_data("few_shot", caltech, 4, 1)
    assert len(four.train) == 400 and len(four.val) == 400
    assert [s.path for s in build_data("few_shot", caltech, 4, 2).train] != [s.path for s in four.train]
    b2n = build_data("base_to_novel", caltech, 16, 1)
    assert len(b2n.classnames) == 50 and [len(e.classnames) for e in b2n.eval_sets] == [50, 50]
    assert sum(len(e.samples) for e in b2n.eval_sets) == 2465


def test_pacs_photo():
    ds = load_dataset("pacs@photo", SHARED)
    assert ds.classnames == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 560
    targets = [load_dataset(f"pacs@{d}", SHARED) for d in ("art_painting", "cartoon", "sketch")]
    data = build_data("domain_generalization", ds, 4, 1, targets)
    assert [e.name for e in data.eval_sets] == ["test", "pacs@art_painting", "pacs@cartoon", "pacs@sketch"]


def test_cifar10():
    ds = load_dataset("cifar10", SHARED)
    assert ds.num_classes == 10 and len(ds.test) == 10000 and len(ds.train) + len(ds.val) == 1000
    assert not {s.path for s in ds.train} & {s.path for s in ds.val}


@pytest.mark.parametrize("name, file, classes, test_size", [
    ("dtd", "split_zhou_DescribableTextures.json", 47, 1692),
    ("eurosat", "split_zhou_EuroSAT.json", 10, 8100),
    ("oxford_flowers", "split_zhou_OxfordFlowers.json", 102, 2463),
    ("oxford_pets", "split_zhou_OxfordPets.json", 37, 3669),
    ("stanford_cars", "split_zhou_StanfordCars.json", 196, 8041),
    ("ucf101", "split_zhou_UCF101.json", 101, 3783),
])
def test_split_files_parse(tmp_path, name, file, classes, test_size):
    ds = load_dataset(name, tmp_path, split_file=str(SHARED / "splits" / file), check_images=False)
    assert ds.num_classes == classes and len(ds.test) == test_size
    if name == "eurosat":
        assert ds.classnames[0] == "Annual Crop Land" and "Sea or Lake" in ds.classnames
    if name == "ucf101":
        assert ds.classnames[0] == "Apply_Eye_Makeup"
