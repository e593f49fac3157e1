"""Segmentation data: label-map reading, joint transforms, pairing errors, splits, catalog, starter, real data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlpt.errors import ConfigError, DatasetError
from vlpt.seg import starter
from vlpt.seg.data import IGNORE_INDEX, SegmentationDataset, SegSample, SegSplits, load_label_map, load_mask
from vlpt.seg.datasets import (SegCatalogEntry, is_seg_dataset, load_seg_dataset, load_seg_entry, read_seg_entry,
                               seg_catalog, seg_dataset_names)

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


def _save(array: np.ndarray, path: Path, palette: bool = False) -> str:
    """Write ``array`` as an image (a palette PNG when ``palette``) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette:
        image.putpalette([c for i in range(256) for c in (i * 7 % 256, i * 3 % 256, 255 - i)])
    image.save(path)
    return str(path)


def _toy_entry(**changes) -> SegCatalogEntry:
    values = dict(name="toy", title="Toy", layout="mask_folders", folder="toy", classes=["blob"], binary=True)
    return SegCatalogEntry(**{**values, **changes})


def _toy_dataset(folder: Path, ids, size=(12, 10)) -> None:
    """Images ``images/<id>.png`` with 0/255 masks ``masks/<id>.png``."""
    for k, i in enumerate(ids):
        _save(np.full((size[1], size[0], 3), 40 + k % 200, np.uint8), folder / "images" / f"{i}.png")
        mask = np.zeros((size[1], size[0]), np.uint8)
        mask[2:5, 3:7] = 255
        _save(mask, folder / "masks" / f"{i}.png")


# ---- alignment and resizing --------------------------------------------------------------------

def test_flip_moves_image_and_mask_together_and_nearest_keeps_labels(tmp_path):
    width, height, cut = 45, 27, 22  # not square, not a multiple of the output size
    image = np.empty((height, width, 3), np.uint8)
    image[:, :cut], image[:, cut:] = RED, BLUE
    image[20:, cut:] = GREEN
    mask = np.zeros((height, width), np.uint8)
    mask[:, :cut] = 1
    mask[20:, cut:] = 3  # labels {0, 1, 3}: interpolation would make 2s
    sample = SegSample(_save(image, tmp_path / "img.png"), _save(mask, tmp_path / "mask.png"))
    splits = SegSplits("toy", ["background", "red", "unused", "green"], [sample], [], [], binary=False)
    dataset = SegmentationDataset([sample], splits, 16, mean=[0.5] * 3, std=[0.25] * 3, augment="flip")
    flips = set()
    for seed in range(8):
        torch.manual_seed(seed)
        pixels, labels = dataset[0]
        assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.float32
        assert labels.shape == (16, 16) and labels.dtype == torch.int64
        reddish = (pixels[0] > pixels[1]) & (pixels[0] > pixels[2])
        assert torch.equal(reddish, labels == 1)
        assert set(labels.unique().tolist()) == {0, 1, 3}
        flips.add(bool(labels[0, 0] == 0))
    assert flips == {False, True}  # both outcomes happened, and both stayed aligned
    pixels, labels = SegmentationDataset([sample], splits, 16, [0.5] * 3, [0.25] * 3)[0]
    assert labels[0, 0] == 1 and labels[0, -1] == 0
    assert pixels[:, 0, 0].tolist() == pytest.approx([(c / 255 - 0.5) / 0.25 for c in RED], abs=0.05)


def test_flip_follows_torch_seed(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :3] = 1
    sample = SegSample(_save(image, tmp_path / "i.png"), _save(mask * 255, tmp_path / "m.png"))
    splits = SegSplits("toy", ["blob"], [sample], [], [], binary=True)
    dataset = SegmentationDataset([sample] * 10, splits, 8, [0.0] * 3, [1.0] * 3, augment="flip")

    def flips(seed):
        torch.manual_seed(seed)
        return [bool(dataset[i][1][0, 0] == 0) for i in range(10)]

    assert flips(3) == flips(3) and any(flips(3)) and not all(flips(3))


def test_dataset_rejects_bad_options(tmp_path):
    splits = SegSplits("toy", ["blob"], [], [], [], binary=True)
    with pytest.raises(ConfigError, match="crop"):
        SegmentationDataset([], splits, 16, [0.5] * 3, [0.5] * 3, augment="crop")
    with pytest.raises(ConfigError, match="image_size"):
        SegmentationDataset([], splits, 0, [0.5] * 3, [0.5] * 3)


# ---- reading masks ------------------------------------------------------------------------------

def test_binary_masks_read_as_zero_and_one(tmp_path):
    truth = np.zeros((24, 40), bool)
    truth[4:14, 6:20] = True
    truth[16:22, 28:36] = True
    rng = np.random.default_rng(0)
    noisy = np.where(truth, 255 - rng.integers(0, 60, truth.shape), rng.integers(0, 60, truth.shape)).astype(np.uint8)
    coloured = np.zeros((*truth.shape, 3), np.uint8)
    coloured[4:14, 6:20] = (255, 0, 0)   # neoplastic polyp, BKAI style
    coloured[16:22, 28:36] = (0, 255, 0)  # non-neoplastic polyp
    files = {
        "0_255.png": Image.fromarray(truth.astype(np.uint8) * 255),
        "0_1.png": Image.fromarray(truth.astype(np.uint8)),
        "one_bit.png": Image.fromarray(truth),
        "noisy.png": Image.fromarray(noisy),
        "rgb.png": Image.fromarray(coloured),
    }
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "jpeg.jpg", quality=90)
    for name, image in files.items():
        image.save(tmp_path / name)
    assert Image.open(tmp_path / "one_bit.png").mode == "1"
    for name in [*files, "jpeg.jpg"]:
        labels = load_label_map(str(tmp_path / name), binary=True, num_classes=1)
        assert labels.dtype == np.uint8, name
        np.testing.assert_array_equal(labels, truth.astype(np.uint8), err_msg=name)


def test_ignored_values_become_255_and_out_of_range_values_fail(tmp_path):
    camvid = np.arange(12, dtype=np.uint8).repeat(3).reshape(6, 6)  # 0..10 classes, 11 void
    labels = load_label_map(_save(camvid, tmp_path / "camvid.png"), False, 11, [11])
    np.testing.assert_array_equal(labels, np.where(camvid == 11, IGNORE_INDEX, camvid))

    voc = _save(np.array([[0, 15, 255], [15, 15, 0]], np.uint8), tmp_path / "voc.png", palette=True)
    assert Image.open(voc).mode == "P"
    np.testing.assert_array_equal(load_label_map(voc, False, 21, [255]), [[0, 15, 255], [15, 15, 0]])

    bad = camvid.copy()
    bad[0, 0] = 12
    path = _save(bad, tmp_path / "bad_label.png")
    with pytest.raises(DatasetError, match=re.escape(path) + ".*12"):
        load_label_map(path, False, 11, [11])
    rgb = _save(np.zeros((4, 4, 3), np.uint8), tmp_path / "colour_labels.png")
    with pytest.raises(DatasetError, match=re.escape(rgb)):
        load_label_map(rgb, False, 11, [11])


def test_undecodable_or_missing_mask_names_the_file(tmp_path):
    broken = tmp_path / "masks" / "a.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG not really")
    image = _save(np.zeros((6, 6, 3), np.uint8), tmp_path / "a.png")
    splits = SegSplits("toy", ["blob"], [], [], [], binary=True)
    dataset = SegmentationDataset([SegSample(image, str(broken))], splits, 8, [0.5] * 3, [0.5] * 3)
    with pytest.raises(DatasetError, match=re.escape(str(broken))):
        dataset[0]
    with pytest.raises(DatasetError, match="gone.png.*does not exist"):
        load_label_map(str(tmp_path / "gone.png"), True, 1)


def test_image_and_mask_of_different_sizes_name_both(tmp_path):
    image = _save(np.zeros((8, 10, 3), np.uint8), tmp_path / "wide.png")
    mask = _save(np.zeros((8, 8), np.uint8), tmp_path / "square_mask.png")
    splits = SegSplits("toy", ["blob"], [], [], [], binary=True)
    with pytest.raises(DatasetError, match=re.escape(image) + ".*10x8.*" + re.escape(mask) + ".*8x8"):
        SegmentationDataset([SegSample(image, mask)], splits, 8, [0.5] * 3, [0.5] * 3)[0]


def test_seg_splits_check_classes_and_ignore_index():
    with pytest.raises(ValueError, match="exactly one class"):
        SegSplits("toy", ["a", "b"], [], [], [], binary=True)
    with pytest.raises(ValueError, match="ignore_index"):
        SegSplits("toy", ["a", "b", "c"], [], [], [], binary=False, ignore_index=2)
    assert SegSplits("toy", ["a", "b", "c"], [], [], [], binary=False).num_classes == 3


# ---- pairing, splits, catalog -------------------------------------------------------------------

def test_unpaired_files_and_empty_folders_are_named(tmp_path):
    folder = tmp_path / "toy"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_seg_entry(_toy_entry(), tmp_path)
    _toy_dataset(folder, ["a", "b", "c"])
    _save(np.zeros((4, 4, 3), np.uint8), folder / "images" / "lonely.jpg")
    with pytest.raises(DatasetError, match=re.escape(str(folder / "images" / "lonely.jpg")) + ".*"
                       + re.escape(str(folder / "masks" / "lonely.png"))):
        load_seg_entry(_toy_entry(), tmp_path)
    (folder / "images" / "lonely.jpg").unlink()
    _save(np.zeros((4, 4), np.uint8), folder / "masks" / "orphan.png")
    with pytest.raises(DatasetError, match=re.escape(str(folder / "masks" / "orphan.png"))):
        load_seg_entry(_toy_entry(), tmp_path)


def test_mask_suffix_and_extension_pair_files(tmp_path):
    folder = tmp_path / "lesions"
    for i in ("ISIC_1", "ISIC_2", "ISIC_3"):
        _save(np.zeros((4, 4, 3), np.uint8), folder / "in" / f"{i}.jpg")
        _save(np.zeros((4, 4), np.uint8), folder / "gt" / f"{i}_segmentation.png")
    entry = _toy_entry(folder="lesions", image_dir="in", mask_dir="gt", mask_suffix="_segmentation")
    splits = load_seg_entry(entry, tmp_path)
    samples = splits.train + splits.val + splits.test
    assert sorted(Path(s.mask).name for s in samples) == [f"ISIC_{i}_segmentation.png" for i in (1, 2, 3)]
    assert all(Path(s.image).stem + "_segmentation" == Path(s.mask).stem for s in samples)


def test_seeded_split_is_deterministic_and_disjoint(tmp_path):
    ids = [f"img{i:02d}" for i in range(30)]
    _toy_dataset(tmp_path / "toy", ids)
    first, second = load_seg_entry(_toy_entry(), tmp_path), load_seg_entry(_toy_entry(), tmp_path)
    assert (first.train, first.val, first.test) == (second.train, second.val, second.test)
    parts = [{Path(s.image).stem for s in part} for part in (first.train, first.val, first.test)]
    assert [len(p) for p in parts] == [24, 3, 3]
    assert set.union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    # fixed seed, not a run's: the same ids in every process and on every machine
    assert (sorted(parts[1]), sorted(parts[2])) == (["img09", "img12", "img13"], ["img00", "img16", "img26"])


def test_split_file_is_read_and_checked(tmp_path):
    folder = tmp_path / "toy"
    _toy_dataset(folder, ["a", "b", "c", "d"])
    entry = _toy_entry(split="split.json")
    (folder / "split.json").write_text(json.dumps({"train": ["a", "b"], "val": ["c"], "test": ["d"]}))
    splits = load_seg_entry(entry, tmp_path)
    assert [Path(s.image).stem for s in splits.train] == ["a", "b"] and len(splits.test) == 1
    (folder / "split.json").write_text(json.dumps({"train": ["a", "zz"], "val": ["c"], "test": ["d"]}))
    with pytest.raises(DatasetError, match="split.json.*'zz'"):
        load_seg_entry(entry, tmp_path)
    (folder / "split.json").write_text(json.dumps({"train": ["a", "c"], "val": ["c"], "test": ["d"]}))
    with pytest.raises(DatasetError, match="'c' is listed in both train and val"):
        load_seg_entry(entry, tmp_path)


def test_unknown_name_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="kvasir_seg.*starter_seg_shapes"):
        load_seg_dataset("no_such_dataset", tmp_path)
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "kvasir-seg")) + ".*datasets/README.md"):
        load_seg_dataset("kvasir_seg", tmp_path)


def test_catalog_entries_are_complete(tmp_path):
    names = seg_dataset_names()
    assert {"kvasir_seg", "cvc_clinicdb", "bkai_polyp", "busi", "isic", "dfu", "chexlocalize", "camus",
            "camvid", "pascal_voc", "starter_seg_shapes"} <= set(names)
    assert is_seg_dataset("camvid") and not is_seg_dataset("cifar10")
    for entry in seg_catalog().values():
        assert entry.manual.strip(), entry.name
        assert entry.layout == "starter" or entry.sources, entry.name
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntitle: Bad\nlayout: mask_folders\nfolder: bad\nclasses: [a, b]\nbinary: true\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad)) + ".*exactly one class"):
        read_seg_entry(bad)
    bad.write_text("name: bad\ntitle: Bad\nlayout: tiles\nfolder: bad\nclasses: [a]\nbinary: true\n")
    with pytest.raises(ConfigError, match="layout"):
        read_seg_entry(bad)


def test_voc_layout(tmp_path):
    folder = tmp_path / "VOCdevkit" / "VOC2012"
    train, val = [f"2007_{i:06d}" for i in range(20)], [f"2008_{i:06d}" for i in range(5)]
    for i in train + val:
        _save(np.zeros((5, 6, 3), np.uint8), folder / "JPEGImages" / f"{i}.jpg")
        _save(np.array([[0, 15, 255]] * 5, np.uint8).repeat(2, axis=1), folder / "SegmentationClass" / f"{i}.png",
              palette=True)
    lists = folder / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(train) + "\n")
    (lists / "val.txt").write_text("\n".join(val) + "\n")
    splits = load_seg_dataset("pascal_voc", tmp_path)
    assert splits.num_classes == 21 and not splits.binary
    stems = {part: [Path(s.image).stem for s in getattr(splits, part)] for part in ("train", "val", "test")}
    assert stems["test"] == val and len(stems["val"]) == 2 and sorted(stems["train"] + stems["val"]) == train
    assert stems == {p: [Path(s.image).stem for s in getattr(load_seg_dataset("pascal_voc", tmp_path), p)]
                     for p in stems}
    np.testing.assert_array_equal(np.unique(load_mask(splits.test[0], splits)), [0, 15, IGNORE_INDEX])
    (folder / "JPEGImages" / f"{val[2]}.jpg").unlink()
    with pytest.raises(DatasetError, match=re.escape(str(folder / "JPEGImages" / f"{val[2]}.jpg"))):
        load_seg_dataset("pascal_voc", tmp_path)


# ---- the starter dataset ------------------------------------------------------------------------

def test_starter_shapes_generated_once_with_aligned_colour_masks(tmp_path, monkeypatch):
    splits = load_seg_dataset("starter_seg_shapes", tmp_path)
    assert splits.classnames == ["background", "red", "green", "blue", "yellow", "purple", "orange"]
    assert not splits.binary
    assert (len(splits.train), len(splits.val), len(splits.test)) == (240, 40, 200)
    assert splits.templates == ["a photo of a {} shape."]
    folder = tmp_path / "starter" / "starter_seg_shapes"
    assert [p.name for p in folder.parent.iterdir()] == ["starter_seg_shapes"]  # no temporary folder left
    seen = set()
    for sample in splits.train + splits.val + splits.test:
        labels = load_mask(sample, splits)
        image = np.asarray(Image.open(sample.image).convert("RGB"), dtype=np.int16)
        assert image.shape == (32, 32, 3) and labels.shape == (32, 32)
        assert labels.max() <= 6 and (labels > 0).any(), sample.mask
        seen |= set(np.unique(labels).tolist())
        spread = image.max(axis=2) - image.min(axis=2)  # 0 on the grey background
        assert np.mean(spread[labels > 0] > 40) > 0.9, sample.image
    assert seen == set(range(7))

    def fail(rng):
        raise AssertionError("regenerated")

    monkeypatch.setattr(starter, "shapes_scene", fail)
    again = load_seg_dataset("starter_seg_shapes", tmp_path)
    assert again.train == splits.train and again.test == splits.test


def test_starter_shapes_are_deterministic_and_never_half_written(tmp_path, monkeypatch):
    a = load_seg_dataset("starter_seg_shapes", tmp_path / "a")
    b = load_seg_dataset("starter_seg_shapes", tmp_path / "b")
    for x, y in zip(a.test[:20], b.test[:20]):
        assert Path(x.image).read_bytes() == Path(y.image).read_bytes()
        assert Path(x.mask).read_bytes() == Path(y.mask).read_bytes()
    calls = []
    real = starter.shapes_scene

    def interrupted(rng):
        calls.append(1)
        if len(calls) > 5:
            raise OSError("disk full")
        return real(rng)

    monkeypatch.setattr(starter, "shapes_scene", interrupted)
    with pytest.raises(OSError, match="disk full"):
        load_seg_dataset("starter_seg_shapes", tmp_path / "c")
    assert list((tmp_path / "c" / "starter").iterdir()) == []


# ---- real data (skipped when ../shared/data is absent) ---------------------------------------------

@pytest.mark.parametrize("name, folder, count",
                         [("kvasir_seg", "kvasir-seg", 998), ("cvc_clinicdb", "cvc-clinicdb", 609)])
def test_shared_polyp_datasets(shared_data, name, folder, count):
    splits = load_seg_dataset(name, shared_data)
    samples = splits.train + splits.val + splits.test
    assert splits.binary and splits.classnames == ["polyp"]
    assert len(samples) == count == len(list((shared_data / folder / "images").iterdir()))
    assert len({s.image for s in samples}) == count
    assert all(Path(s.image).stem == Path(s.mask).stem for s in samples)
    for sample in samples[::100]:
        labels = load_mask(sample, splits)
        assert set(np.unique(labels).tolist()) <= {0, 1} and labels.any()
    pixels, labels = SegmentationDataset(samples[:1], splits, 64, [0.5] * 3, [0.5] * 3)[0]
    assert pixels.shape == (3, 64, 64) and set(labels.unique().tolist()) <= {0, 1}


def test_shared_camvid(shared_data):
    splits = load_seg_dataset("camvid", shared_data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (367, 101, 233)
    assert splits.num_classes == 11 and splits.classnames[0] == "sky" and splits.classnames[10] == "bicyclist"
    assert all(Path(s.image).stem == Path(s.mask).stem for s in splits.train + splits.val + splits.test)
    values = set()
    for sample in splits.train[:10]:
        raw = np.asarray(Image.open(sample.mask))
        labels = load_mask(sample, splits)
        np.testing.assert_array_equal(labels == IGNORE_INDEX, raw == 11)
        values |= set(np.unique(labels).tolist())
    assert IGNORE_INDEX in values and 11 not in values and max(values - {IGNORE_INDEX}) <= 10


def test_data_prepare_generates_the_starter_and_prints_the_steps_of_the_others(tmp_path):
    from vlpt.cli import prepare_dataset

    assert "generated in" in prepare_dataset("starter_seg_shapes", tmp_path)
    assert (tmp_path / "starter" / "starter_seg_shapes" / "split.json").is_file()
    steps = prepare_dataset("busi", tmp_path)
    assert "prepared by hand" in steps and "_mask" in steps and str(tmp_path / "busi") in steps
