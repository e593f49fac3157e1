"""`vlpt data prepare`: rearranging torchvision-layout downloads (faked in tmp_path) and manual steps."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlpt.data import load_dataset
from vlpt.data.prepare import ARRANGERS, DOWNLOADS, PREPARABLE, prepare_dataset
from vlpt.errors import ConfigError, DatasetError


def write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def class_tree(folder: Path, classes, n: int = 4) -> None:
    for c in classes:
        for i in range(n):
            write_image(folder / c / f"{i}.jpg", i)


def fake_download(name: str, staging: Path) -> None:
    """The folders torchvision's downloader leaves for ``name`` (a few images each)."""
    if name == "caltech101":
        class_tree(staging / "caltech101" / "101_ObjectCategories", ["BACKGROUND_Google", "Faces", "ant"])
    elif name == "eurosat":
        class_tree(staging / "eurosat" / "2750", ["AnnualCrop", "SeaLake"])
    elif name == "dtd":
        class_tree(staging / "dtd" / "dtd" / "images", ["banded", "woven"])
        (staging / "dtd" / "dtd" / "labels").mkdir()
    elif name == "food101":
        class_tree(staging / "food-101" / "images", ["apple_pie", "ramen"])
        (staging / "food-101" / "meta").mkdir()
    elif name == "sun397":
        class_tree(staging / "SUN397", ["a/abbey", "b/beach"])
    elif name == "fgvc_aircraft":
        data = staging / "fgvc-aircraft-2013b" / "data"
        for i in range(4):
            write_image(data / "images" / f"{100 + i}.jpg", i)
        (data / "variants.txt").write_text("707-320\nA300B4\n")
        for split, ids in (("train", (100, 101)), ("val", (102,)), ("test", (103,))):
            (data / f"images_variant_{split}.txt").write_text("".join(f"{i} {'707-320' if i % 2 == 0 else 'A300B4'}\n"
                                                                      for i in ids))
    elif name == "oxford_pets":
        base = staging / "oxford-iiit-pet"
        names = [f"Bengal_{i}" for i in range(1, 7)] + [f"pug_{i}" for i in range(1, 7)]
        for i, n in enumerate(names):
            write_image(base / "images" / f"{n}.jpg", i)
        rows = [f"{n} {1 if n.startswith('Bengal') else 2} 1 1" for n in names]
        (base / "annotations").mkdir()
        (base / "annotations" / "trainval.txt").write_text("\n".join(rows[:5] + rows[6:11]))
        (base / "annotations" / "test.txt").write_text("\n".join([rows[5], rows[11]]))
    elif name == "oxford_flowers":
        from scipy.io import savemat

        base = staging / "flowers-102"
        for i in range(10):
            write_image(base / "jpg" / f"image_{i + 1:05d}.jpg", i)
        labels = np.array([[1] * 5 + [2] * 5])
        savemat(base / "imagelabels.mat", {"labels": labels})
    elif name == "cifar10":
        base = staging / "cifar-10-batches-py"
        base.mkdir(parents=True)
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        with open(base / "batches.meta", "wb") as f:
            pickle.dump({"label_names": classes}, f)
        rng = np.random.default_rng(0)
        for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            with open(base / file, "wb") as f:
                pickle.dump({"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}, f)


@pytest.mark.parametrize("name", sorted(ARRANGERS))
def test_prepare_rearranges_torchvision_layout(tmp_path, name):
    fake_download(name, tmp_path / DOWNLOADS / name)
    message = prepare_dataset(name, tmp_path, download_files=False)
    assert "prepared" in message
    assert not (tmp_path / DOWNLOADS / name).exists()
    ds = load_dataset(name, tmp_path)
    assert ds.num_classes >= 2 and ds.test
    assert all(Path(s.path).is_file() for s in ds.train + ds.val + ds.test)
    assert "nothing to do" in prepare_dataset(name, tmp_path, download_files=False)


def test_prepared_class_names(tmp_path):
    for name in ("caltech101", "oxford_flowers", "cifar10"):
        fake_download(name, tmp_path / DOWNLOADS / name)
        prepare_dataset(name, tmp_path, download_files=False)
    assert load_dataset("caltech101", tmp_path).classnames == ["face", "ant"]
    flowers = load_dataset("oxford_flowers", tmp_path).classnames  # all 102 names, from torchvision's list
    assert len(flowers) == 102 and flowers[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    assert "pink-yellow dahlia" in flowers  # torchvision's "pink-yellow dahlia?" as CoOp spells it
    cifar = load_dataset("cifar10", tmp_path)
    assert len(cifar.classnames) == 10 and len(cifar.train) + len(cifar.val) == 100 and len(cifar.test) == 20


def test_prepare_names_missing_download_part(tmp_path):
    (tmp_path / DOWNLOADS / "eurosat" / "eurosat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="2750"):
        prepare_dataset("eurosat", tmp_path, download_files=False)


@pytest.mark.parametrize("name, expected", [
    ("imagenet", ["image-net.org", "imagenet/images/train", "classnames.txt"]),
    ("imagenet_a", ["imagenet-a.tar", "imagenet-adversarial/imagenet-a"]),
    ("imagenet_r", ["imagenet-r.tar", "imagenet-rendition/imagenet-r"]),
    ("imagenet_v2", ["imagenetv2-matched-frequency", "imagenetv2/imagenetv2-matched-frequency-format-val"]),
    ("imagenet_sketch", ["ImageNet-Sketch", "imagenet-sketch/images"]),
    ("ucf101", ["UCF-101-midframes", "split_zhou_UCF101.json", "drive.google.com"]),
    ("stanford_cars", ["stanford_cars/cars_train", "split_zhou_StanfordCars.json"]),
    ("pacs", ["drive.google.com", "kfold", "pacs/{art_painting,cartoon,photo,sketch}"]),
])
def test_manual_steps(tmp_path, name, expected):
    message = prepare_dataset(name, tmp_path)
    assert "Manual steps" in message and str(tmp_path) in message
    for text in expected:
        assert text in message


def test_prepare_unknown_name(tmp_path):
    assert {"caltech101", "imagenet", "pacs", "cifar10"} <= set(PREPARABLE)
    with pytest.raises(ConfigError, match="caltech101"):
        prepare_dataset("caltech256", tmp_path)
