"""Dataset loaders on small folders of real PNG/JPEG files written into tmp_path."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlpt.data import ImageDataset, Sample, load_dataset
from vlpt.protocols import build_data
from vlpt.errors import ConfigError, DatasetError


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def class_tree(folder: Path, counts: dict[str, int], ext: str = ".jpg") -> None:
    for c, n in counts.items():
        for i in range(n):
            write_image(folder / c / f"img_{i:03d}{ext}", seed=i)


def all_paths(ds):
    return [s.path for s in ds.train + ds.val + ds.test]


# ----------------------------------------------------------------- CoOp layout, split file
def caltech_with_split(root: Path) -> Path:
    images = root / "caltech-101" / "101_ObjectCategories"
    class_tree(images, {"Faces": 3, "airplanes": 3, "ant": 3})
    split = {part: [[f"{folder}/img_{i:03d}.jpg", label, name] for label, (folder, name)
                    in enumerate([("Faces", "face"), ("airplanes", "airplane"), ("ant", "ant")])]
             for part, i in (("train", 0), ("val", 1), ("test", 2))}
    path = root / "caltech-101" / "split_zhou_Caltech101.json"
    path.write_text(json.dumps(split))
    return path


def test_split_file_is_read(tmp_path):
    caltech_with_split(tmp_path)
    ds = load_dataset("caltech101", tmp_path)
    assert ds.classnames == ["face", "airplane", "ant"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3, 3, 3)
    assert ds.templates == ["a photo of a {}."]
    assert all(Path(p).is_file() for p in all_paths(ds))


def test_missing_image_in_split_file(tmp_path):
    split = caltech_with_split(tmp_path)
    (tmp_path / "caltech-101" / "101_ObjectCategories" / "ant" / "img_002.jpg").unlink()
    (tmp_path / "caltech-101" / "101_ObjectCategories" / "ant" / "img_001.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("caltech101", tmp_path)
    assert str(split) in str(err.value) and "2 image(s)" in str(err.value) and "ant/img_00" in str(err.value)


def test_inconsistent_class_name_in_split_file(tmp_path):
    split = caltech_with_split(tmp_path)
    data = json.loads(split.read_text())
    data["test"][1][2] = "aeroplane"
    split.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as err:
        load_dataset("caltech101", tmp_path)
    assert str(split) in str(err.value) and "label 1" in str(err.value) and "'aeroplane'" in str(err.value)


def test_labels_must_be_contiguous(tmp_path):
    split = caltech_with_split(tmp_path)
    data = json.loads(split.read_text())
    for part in data.values():
        part[2][1] = 5
    split.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="labels must be 0..2"):
        load_dataset("caltech101", tmp_path)


def test_missing_image_folder_points_at_prepare(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("oxford_pets", tmp_path)
    assert str(tmp_path / "oxford_pets" / "images") in str(err.value)
    assert "vlpt data prepare oxford_pets" in str(err.value)


def test_split_file_alone_with_check_images_off(tmp_path):
    split = caltech_with_split(tmp_path / "elsewhere")
    ds = load_dataset("dtd", tmp_path, split_file=str(split), check_images=False)
    assert ds.classnames == ["face", "airplane", "ant"] and ds.templates == ["{} texture."]
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("dtd", tmp_path, split_file=str(tmp_path / "nope.json"), check_images=False)


def test_required_split_file(tmp_path):
    class_tree(tmp_path / "stanford_cars" / "cars_train", {"x": 1})
    with pytest.raises(DatasetError, match="split_zhou_StanfordCars.json"):
        load_dataset("stanford_cars", tmp_path)


# ------------------------------------------------------- CoOp layout, split built from folders
def test_caltech_from_folders_applies_class_name_rules(tmp_path):
    images = tmp_path / "caltech-101" / "101_ObjectCategories"
    class_tree(images, {"BACKGROUND_Google": 4, "Faces": 10, "Faces_easy": 4, "Leopards": 10, "airplanes": 10,
                        "ant": 10})
    ds = load_dataset("caltech101", tmp_path)
    assert ds.classnames == ["face", "leopard", "airplane", "ant"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (20, 8, 12)  # 50/20/30 per class
    paths = all_paths(ds)
    assert len(set(paths)) == len(paths) == 40
    assert all(ds.classnames[s.label] == s.classname for s in ds.train + ds.val + ds.test)
    again = load_dataset("caltech101", tmp_path)
    assert [s.path for s in again.train] == [s.path for s in ds.train]
    other = load_dataset("caltech101", tmp_path, split_seed=2)
    assert [s.path for s in other.train] != [s.path for s in ds.train]


def test_eurosat_readable_names(tmp_path):
    class_tree(tmp_path / "eurosat" / "2750", {"AnnualCrop": 2, "Forest": 2, "SeaLake": 2, "Highway": 2})
    ds = load_dataset("eurosat", tmp_path)
    assert ds.classnames == ["Annual Crop Land", "Forest", "Highway or Road", "Sea or Lake"]
    assert ds.templates == ["a centered satellite photo of {}."]


def test_ucf101_camel_case_to_words(tmp_path):
    class_tree(tmp_path / "ucf101" / "UCF-101-midframes", {"ApplyEyeMakeup": 2, "Hammering": 2, "HammerThrow": 2,
                                                           "YoYo": 2, "Skijet": 2, "Jump_Rope": 2})
    ds = load_dataset("ucf101", tmp_path)
    # words joined by "_" as in CoOp's split file; order as UCF101's classInd.txt (case-insensitive)
    assert ds.classnames == ["Apply_Eye_Makeup", "Hammering", "Hammer_Throw", "Jump_Rope", "Skijet", "Yo_Yo"]


def test_sun397_nested_class_folders(tmp_path):
    image_dir = tmp_path / "sun397" / "SUN397"
    class_tree(image_dir, {"a/abbey": 2, "o/outhouse/outdoor": 2, "b/beach": 2})
    ds = load_dataset("sun397", tmp_path)
    assert ds.classnames == ["abbey", "beach", "outdoor outhouse"]


def test_aircraft_variant_lists(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    for i in range(6):
        write_image(folder / "images" / f"{1000 + i}.jpg", i)
    (folder / "variants.txt").write_text("707-320\nA300B4\n")
    (folder / "images_variant_train.txt").write_text("1000 707-320\n1001 A300B4\n")
    (folder / "images_variant_val.txt").write_text("1002 707-320\n1003 A300B4\n")
    (folder / "images_variant_test.txt").write_text("1004 707-320\n1005 A300B4\n")
    ds = load_dataset("fgvc_aircraft", tmp_path)
    assert ds.classnames == ["707-320", "A300B4"] and [s.label for s in ds.test] == [0, 1]
    (folder / "images" / "1005.jpg").unlink()
    with pytest.raises(DatasetError, match="1005.jpg"):
        load_dataset("fgvc_aircraft", tmp_path)


def test_pets_annotations_fallback(tmp_path):
    folder = tmp_path / "oxford_pets"
    names = [f"Abyssinian_{i}" for i in range(1, 6)] + [f"american_bulldog_{i}" for i in range(1, 6)]
    for i, name in enumerate(names):
        write_image(folder / "images" / f"{name}.jpg", i)
    (folder / "annotations").mkdir()
    lines = [f"{n} {1 if n.startswith('Aby') else 2} 1 1" for n in names]
    (folder / "annotations" / "trainval.txt").write_text("\n".join(lines[:4] + lines[5:9]))
    (folder / "annotations" / "test.txt").write_text("\n".join([lines[4], lines[9]]))
    ds = load_dataset("oxford_pets", tmp_path)
    assert ds.classnames == ["abyssinian", "american_bulldog"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 2)


def test_flowers_labels_fallback(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "oxford_flowers"
    for i in range(10):
        write_image(folder / "jpg" / f"image_{i + 1:05d}.jpg", i)
    savemat(folder / "imagelabels.mat", {"labels": np.array([[1] * 5 + [2] * 5])})
    (folder / "cat_to_name.json").write_text(json.dumps({"1": "pink primrose", "2": "globe thistle"}))
    ds = load_dataset("oxford_flowers", tmp_path)
    assert ds.classnames == ["pink primrose", "globe thistle"]
    assert len(all_paths(ds)) == 10 and len(ds.test) == 4


# ------------------------------------------------------------------- ImageNet and its variants
def imagenet_tree(root: Path, wnids=("n01", "n02", "n03", "n04")) -> None:
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_text("".join(f"{w} class {w}\n" for w in wnids))
    for split, n in (("train", 12), ("val", 3)):
        class_tree(root / "imagenet" / "images" / split, {w: n for w in wnids}, ".JPEG")


def test_imagenet(tmp_path):
    imagenet_tree(tmp_path)
    ds = load_dataset("imagenet", tmp_path)
    assert ds.classnames == ["class n01", "class n02", "class n03", "class n04"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (8, 40, 12)
    assert all("/images/val/" in s.path for s in ds.test)
    assert not {s.path for s in ds.train} & {s.path for s in ds.val}


def test_imagenet_a_holds_only_its_classes(tmp_path):
    imagenet_tree(tmp_path)
    class_tree(tmp_path / "imagenet-adversarial" / "imagenet-a", {"n02": 2, "n04": 3})
    ds = load_dataset("imagenet_a", tmp_path)
    assert ds.classnames == ["class n02", "class n04"]
    assert ds.train == [] and ds.val == [] and [s.label for s in ds.test] == [0, 0, 1, 1, 1]
    # domain generalization from ImageNet evaluates it with those classes only
    data = build_data("domain_generalization", load_dataset("imagenet", tmp_path), 1, 1, [ds])
    assert data.eval_sets[1].name == "imagenet_a" and data.eval_sets[1].classnames == ["class n02", "class n04"]


def test_imagenet_v2_index_folders(tmp_path):
    imagenet_tree(tmp_path)
    class_tree(tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val", {"0": 1, "3": 2})
    ds = load_dataset("imagenet_v2", tmp_path)
    assert len(ds.classnames) == 4 and [s.label for s in ds.test] == [0, 3, 3]
    class_tree(tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val", {"7": 1})
    with pytest.raises(DatasetError, match="not ImageNet"):
        load_dataset("imagenet_v2", tmp_path)


# ------------------------------------------------------------------------ image folder, DomainBed
def test_image_folder_carves_disjoint_val(tmp_path):
    class_tree(tmp_path / "mine" / "train", {"cat": 10, "dog": 10}, ".png")
    class_tree(tmp_path / "mine" / "test", {"cat": 2, "dog": 2}, ".png")
    ds = load_dataset("image_folder", tmp_path, path="mine")
    assert ds.name == "mine" and ds.classnames == ["cat", "dog"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 4)
    assert not {s.path for s in ds.train} & {s.path for s in ds.val}
    class_tree(tmp_path / "mine" / "val", {"cat": 1, "dog": 1}, ".png")
    ds = load_dataset("image_folder", tmp_path, path="mine")
    assert (len(ds.train), len(ds.val)) == (20, 2)


def test_cifar10_registered_as_image_folder(tmp_path):
    class_tree(tmp_path / "cifar10" / "train", {"airplane": 5, "cat": 5})
    class_tree(tmp_path / "cifar10" / "test", {"airplane": 1, "cat": 1})
    ds = load_dataset("cifar10", tmp_path)
    assert ds.name == "cifar10" and ds.classnames == ["airplane", "cat"] and len(ds.val) == 2
    with pytest.raises(DatasetError, match="vlpt data prepare cifar10"):
        load_dataset("cifar10", tmp_path / "empty")


def pacs_tree(root: Path) -> None:
    for domain in ("photo", "sketch"):
        class_tree(root / "pacs" / domain, {"dog": 10, "horse": 10, "person": 10})


def test_domainbed_domain_split(tmp_path):
    pacs_tree(tmp_path)
    ds = load_dataset("pacs@photo", tmp_path)
    assert ds.name == "pacs@photo" and ds.classnames == ["dog", "horse", "person"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 6)
    assert len(set(all_paths(ds))) == 30 and all(s.domain == "photo" for s in ds.test)
    sketch = load_dataset("pacs@sketch", tmp_path)
    assert sketch.classnames == ds.classnames
    assert [s.path for s in load_dataset("pacs@photo", tmp_path).train] == [s.path for s in ds.train]
    data = build_data("domain_generalization", ds, 2, 1, [sketch])
    assert [e.name for e in data.eval_sets] == ["test", "pacs@sketch"]


def test_domainbed_errors(tmp_path):
    pacs_tree(tmp_path)
    with pytest.raises(ConfigError, match="art_painting, cartoon, photo, sketch"):
        load_dataset("pacs@painting", tmp_path)
    with pytest.raises(ConfigError, match="needs a domain"):
        load_dataset("pacs", tmp_path)
    with pytest.raises(DatasetError, match="cartoon"):
        load_dataset("pacs@cartoon", tmp_path)


def test_domain_generalization_class_mismatch(tmp_path):
    pacs_tree(tmp_path)
    class_tree(tmp_path / "eurosat" / "2750", {"Forest": 2, "River": 2})
    with pytest.raises(DatasetError, match="'Forest', 'River'"):
        build_data("domain_generalization", load_dataset("pacs@photo", tmp_path), 1, 1,
                       [load_dataset("eurosat", tmp_path)])


def test_unknown_dataset_and_options(tmp_path):
    with pytest.raises(ConfigError, match="caltech101"):
        load_dataset("caltech102", tmp_path)
    with pytest.raises(ConfigError, match="unknown option"):
        load_dataset("caltech101", tmp_path, shots=3)
    with pytest.raises(ConfigError, match="no domains"):
        load_dataset("caltech101@photo", tmp_path)
    with pytest.raises(ConfigError, match="needs option.*path"):
        load_dataset("image_folder", tmp_path)


# -------------------------------------------------------------------------------- ImageDataset
def test_image_dataset_reads_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((6, 5), dtype=np.uint8)).save(gray)
    image, label = ImageDataset([Sample(str(gray), 3, "x")])[0]
    assert image.mode == "RGB" and image.size == (5, 6) and label == 3
    tensor, _ = ImageDataset([Sample(str(gray), 3, "x")], lambda im: np.asarray(im).shape)[0]
    assert tensor == (6, 5, 3)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing"])
def test_image_dataset_bad_file_names_path(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "garbage":
        path.write_bytes(b"this is not an image")
    elif kind == "truncated":
        big = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(big).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        ImageDataset([Sample(str(path), 0, "x")])[0]


# ---------------------------------------------------------------------------------- catalog
def test_catalog_templates_and_registration():
    from vlpt.data.catalog import catalog
    from vlpt.registry import DATASETS

    coop = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
            "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
            "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "cifar10", "pacs"]
    assert set(coop) <= set(DATASETS.names()) and "image_folder" in DATASETS.names()
    templates = {name: entry.templates[0] for name, entry in catalog().items()}
    assert templates["oxford_pets"] == "a photo of a {}, a type of pet."
    assert templates["oxford_flowers"] == "a photo of a {}, a type of flower."
    assert templates["fgvc_aircraft"] == "a photo of a {}, a type of aircraft."
    assert templates["dtd"] == "{} texture."
    assert templates["eurosat"] == "a centered satellite photo of {}."
    assert templates["food101"] == "a photo of {}, a type of food."
    assert templates["ucf101"] == "a photo of a person doing {}."
    for name in ("imagenet", "caltech101", "stanford_cars", "sun397", "imagenet_a", "cifar10"):
        assert templates[name] == "a photo of a {}."


def test_catalog_file_errors(tmp_path):
    from vlpt.data.catalog import read_entry

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntitle: Bad\nloader: coop\nfolder: bad\ntemplates: ['{}']\ncolour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        read_entry(bad)
    bad.write_text("name: bad\ntitle: Bad\nloader: zip\nfolder: bad\ntemplates: ['{}']\n")
    with pytest.raises(ConfigError, match="unknown loader 'zip'"):
        read_entry(bad)
