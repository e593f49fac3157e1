"""The segmentation catalog (``vlpt/configs/datasets/segmentation/<name>.yaml``) and ``load_seg_dataset``.

A catalog file is data: the dataset's folder, layout, classes, mask naming and ignored values,
sources and preparation steps. Layouts:

* ``mask_folders``: ``<image_dir>/<id>.<image ext>`` beside ``<mask_dir>/<id><mask_suffix><mask_ext>``;
* ``camvid``: SegNet's ``train/ val/ test/`` images and ``trainannot/ valannot/ testannot/`` label maps;
* ``voc``: PASCAL VOC 2012's ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/Segmentation/``
  lists (test = val.txt, val = a seeded 10% of train.txt);
* ``starter``: generated on first use (``vlpt.seg.starter``), then read as ``mask_folders``;
* ``cases``: files anywhere under the folder, matched by ``image_pattern`` and ``mask_pattern``, paths
  relative to the folder in which ``{id}`` stands for the case's id and ``*`` for any name part, e.g.
  ``{id}/{id}_Dermoscopic_Image/{id}.bmp`` with ``{id}/{id}_lesion/{id}_lesion.bmp`` (per-case folders).

A suite may define its own segmentation datasets (``datasets:`` with a ``layout``; ``add_user_seg_dataset``).

A ``mask_folders`` dataset is split by the JSON file its entry names (``split``:
``{"train"|"val"|"test": [id, ...]}``) or, without one, 80/10/10 over its sorted ids with a fixed
seed: the same on every call and machine, independent of run seeds.
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Literal

from vlpt.config import build_dataclass, load_yaml
from vlpt.data.fewshot import split_rng
from vlpt.data.samples import list_images
from vlpt.errors import ConfigError, DatasetError
from vlpt.paths import CONFIG_DIR, default_data_root
from vlpt.seg.data import IGNORE_INDEX, SegSample, SegSplits
from vlpt.seg.starter import generate_seg_shapes

SEG_CATALOG_DIR = CONFIG_DIR / "datasets" / "segmentation"
SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # seed of the splits vlpt cuts itself; never a run's seed
HOLD_OUT = 0.1  # fraction of the ids in each of val and test when vlpt cuts the split


@dataclass
class SegCatalogEntry:
    """One segmentation dataset's catalog file."""

    name: str
    title: str
    layout: Literal["mask_folders", "camvid", "voc", "starter", "cases"]
    folder: str          # relative to the data root
    classes: list[str]   # binary: the one foreground class; multi-class: labels 0..C-1
    binary: bool
    templates: list[str] = field(default_factory=lambda: ["{}"])
    image_dir: str = "images"
    mask_dir: str = "masks"
    mask_suffix: str = ""  # the mask of <id> is <mask_dir>/<id><mask_suffix><mask_ext>
    mask_ext: str = ".png"
    ignore_values: list[int] = field(default_factory=list)  # mask values read as the ignore index
    split: str | None = None  # JSON split file in the dataset folder; None: vlpt's seeded split
    #: layout cases: where an image and its mask are, relative to the folder ({id}: the case's id, *: any part)
    image_pattern: str | None = None
    mask_pattern: str | None = None
    sources: list[str] = field(default_factory=list)
    description: str = ""
    manual: str = ""  # preparation steps, shown when the folder is missing

    def __post_init__(self):
        if self.binary and len(self.classes) != 1:
            raise ValueError(f"a binary dataset has exactly one class, got {self.classes!r}")
        if not self.binary and len(self.classes) < 2:
            raise ValueError(f"a multi-class dataset needs at least 2 classes, got {self.classes!r}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"'classes' repeats a name: {self.classes!r}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("'templates' must be a non-empty list of strings containing '{}'")
        if self.binary and self.ignore_values:
            raise ValueError("'ignore_values' applies to multi-class label maps only")
        bad = [v for v in self.ignore_values if not len(self.classes) <= v <= 255]
        if bad:
            raise ValueError(f"'ignore_values' {bad} must lie in {len(self.classes)}..255, above every class label")
        if self.image_dir == self.mask_dir:
            raise ValueError(f"'image_dir' and 'mask_dir' must be different folders, both are {self.image_dir!r}")
        if not self.mask_ext.startswith("."):
            raise ValueError(f"'mask_ext' must start with '.', got {self.mask_ext!r}")
        if self.layout == "cases":
            if not all(p and "{id}" in p for p in (self.image_pattern, self.mask_pattern)):
                raise ValueError("layout cases needs 'image_pattern' and 'mask_pattern', each holding {id}, e.g. "
                                 "'{id}/image.bmp' and '{id}/mask.bmp'")
            for pattern in (self.image_pattern, self.mask_pattern):
                parts = PurePosixPath(pattern.replace("\\", "/")).parts
                if pattern.startswith(("/", "\\")) or ".." in parts or any("**" in p for p in parts):
                    raise ValueError(f"pattern {pattern!r} must be relative to the dataset folder, without '..' "
                                     f"or '**'")
            if normal_pattern(self.image_pattern) == normal_pattern(self.mask_pattern):
                raise ValueError("'image_pattern' and 'mask_pattern' are the same pattern")


def read_seg_entry(path: Path) -> SegCatalogEntry:
    entry = build_dataclass(SegCatalogEntry, load_yaml(path), str(path))
    if entry.name != path.stem:
        raise ConfigError(f"{path}: name {entry.name!r} must equal the file name {path.stem!r}")
    return entry


@lru_cache(maxsize=None)
def shipped_seg_catalog() -> dict[str, SegCatalogEntry]:
    """The segmentation catalog files shipped with vlpt, by name."""
    return {path.stem: read_seg_entry(path) for path in sorted(SEG_CATALOG_DIR.glob("*.yaml"))}


#: segmentation datasets suites of this process defined (``datasets:`` entries with a ``layout``)
_USER_SEG_ENTRIES: dict[str, SegCatalogEntry] = {}


def seg_catalog() -> dict[str, SegCatalogEntry]:
    """Every segmentation catalog entry by name: vlpt's and the suites' own."""
    return {**shipped_seg_catalog(), **_USER_SEG_ENTRIES}


def add_user_seg_dataset(name: str, values: dict, where: str, base: Path) -> SegCatalogEntry:
    """Define segmentation dataset ``name`` for this process from a suite's ``datasets:`` mapping (a catalog
    mapping with a ``layout``; ``folder`` relative to ``base``, the suite's folder, or absolute; ``title``
    defaults to the name)."""
    from vlpt.data.catalog import keep_definition, user_dataset, user_definition

    values = user_definition(name, values, where, base)
    if name in shipped_seg_catalog():
        raise ConfigError(f"{where}: dataset name {name!r} is one of vlpt's; give yours another name")
    if user_dataset(name) is not None:
        raise ConfigError(f"{where}: dataset {name!r} is defined as a classification dataset earlier in this process")
    entry = build_dataclass(SegCatalogEntry, values, where)
    keep_definition(_USER_SEG_ENTRIES, entry, where)
    return entry


def user_seg_dataset(name: str) -> SegCatalogEntry | None:
    """The definition of a segmentation dataset a suite defined, or None for vlpt's own."""
    return _USER_SEG_ENTRIES.get(name)


def forget_user_seg_datasets() -> None:
    """Drop every segmentation dataset suites defined in this process."""
    _USER_SEG_ENTRIES.clear()


def seg_dataset_names() -> list[str]:
    return sorted(seg_catalog())


def is_seg_dataset(name: str) -> bool:
    return name in seg_catalog()


def load_seg_dataset(name: str, root: str | Path | None = None) -> SegSplits:
    """Load a catalogued segmentation dataset from ``root`` (default ``$VLPT_DATA`` or ``./data``)."""
    if not is_seg_dataset(name):
        raise ConfigError(f"unknown segmentation dataset {name!r}; valid names: {', '.join(seg_dataset_names())}")
    return load_seg_entry(seg_catalog()[name], Path(root) if root is not None else default_data_root())


def load_seg_entry(entry: SegCatalogEntry, root: Path) -> SegSplits:
    """The splits of the dataset ``entry`` describes, read from ``root / entry.folder``."""
    folder = (Path(root) / entry.folder).absolute()
    if entry.layout == "starter":
        generate_seg_shapes(folder)
    elif not folder.is_dir():
        raise DatasetError(f"{entry.title}: dataset folder {folder} does not exist. To prepare it "
                           f"(see 'Segmentation datasets' in datasets/README.md):\n{entry.manual.strip()}")
    parts = LAYOUTS[entry.layout](entry, folder)
    return SegSplits(entry.name, list(entry.classes), parts["train"], parts["val"], parts["test"], entry.binary,
                     list(entry.templates), IGNORE_INDEX, list(entry.ignore_values))


def prepare_seg_dataset(name: str, root: Path) -> str:
    """``vlpt data prepare`` for a segmentation set: the starter is generated, the others' steps printed."""
    entry = seg_catalog()[name]
    folder = (Path(root) / entry.folder).absolute()
    if entry.layout == "starter":
        return f"{name} generated in {generate_seg_shapes(folder)}"
    state = "is present" if folder.is_dir() else "does not exist yet"
    return (f"{entry.title} is prepared by hand ({folder} {state}); steps (see 'Segmentation datasets' in "
            f"datasets/README.md):\n{entry.manual.strip()}")


def pair_files(image_dir: Path, mask_dir: Path, mask_suffix: str = "", mask_ext: str = ".png") -> dict[str, SegSample]:
    """Image/mask pairs by id, sorted: ``image_dir/<id>.<image ext>`` with ``mask_dir/<id><suffix><ext>``.

    A missing folder, an image without its mask, a mask without its image or two images with one id
    raise DatasetError naming the file.
    """
    for path in (image_dir, mask_dir):
        if not path.is_dir():
            raise DatasetError(f"folder {path} does not exist")
    images: dict[str, Path] = {}
    for path in list_images(image_dir):
        if path.stem in images:
            raise DatasetError(f"images {images[path.stem]} and {path} have the same id {path.stem!r}")
        images[path.stem] = path
    tail = mask_suffix + mask_ext
    with os.scandir(mask_dir) as it:
        masks = {e.name[:-len(tail)]: Path(e.path) for e in it
                 if e.name.endswith(tail) and len(e.name) > len(tail) and not e.name.startswith(".")}
    if not images and not masks:
        raise DatasetError(f"no images in {image_dir} and no masks (*{tail}) in {mask_dir}")
    unmasked = sorted(set(images) - set(masks))
    if unmasked:
        first = unmasked[0]
        raise DatasetError(f"{len(unmasked)} image(s) in {image_dir} have no mask; image {images[first]} "
                           f"needs the mask {mask_dir / (first + tail)}")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        first = orphans[0]
        raise DatasetError(f"{len(orphans)} mask(s) in {mask_dir} have no image; mask {masks[first]} needs an "
                           f"image {image_dir / first}.<jpg|png|...>")
    return {i: SegSample(str(images[i]), str(masks[i])) for i in sorted(images)}


def seeded_parts(ids: list[str], sizes: list[int], stream: str) -> list[list[str]]:
    """``ids`` cut at random (seed ``SPLIT_SEED``, stream ``stream``) into parts of ``sizes`` and the
    rest (last), each sorted: the same parts for the same ids, in any order, on every call."""
    ids = sorted(ids)
    order = split_rng(SPLIT_SEED, stream).permutation(len(ids))
    parts, start = [], 0
    for size in [*sizes, len(ids) - sum(sizes)]:
        parts.append(sorted(ids[i] for i in order[start:start + size]))
        start += size
    return parts


def _held_out(count: int) -> int:
    return max(1, round(count * HOLD_OUT))


def read_split_file(path: Path, ids: set[str]) -> dict[str, list[str]]:
    """A split file ``{"train"|"val"|"test": [id, ...]}``, checked: disjoint parts of known ``ids``."""
    if not path.is_file():
        raise DatasetError(f"split file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"split file {path} cannot be read as JSON: {exc}") from exc
    if not (isinstance(data, dict) and set(SPLITS) <= set(data)
            and all(isinstance(data[s], list) and all(isinstance(i, str) for i in data[s]) for s in SPLITS)):
        raise DatasetError(f"split file {path} must map 'train', 'val' and 'test' to lists of image ids")
    seen: dict[str, str] = {}
    for split in SPLITS:
        for i in data[split]:
            if i not in ids:
                raise DatasetError(f"split file {path}: {split} lists {i!r}, which has no image/mask pair")
            if i in seen:
                raise DatasetError(f"split file {path}: {i!r} is listed in both {seen[i]} and {split}")
            seen[i] = split
    return {split: data[split] for split in SPLITS}


def normal_pattern(pattern: str) -> str:
    """A case pattern with ``/`` separators and no leading ``./``."""
    return PurePosixPath(pattern.replace("\\", "/")).as_posix()


def pattern_files(folder: Path, pattern: str, skip: set[Path] = frozenset()) -> dict[str, Path]:
    """The files under ``folder`` whose relative path matches ``pattern`` (``{id}``: the id, the same wherever it
    appears; ``*``: any part of one name), by id, leaving out hidden files and those in ``skip``; two files of
    one id raise DatasetError."""
    regex, wildcard, named = "", "", False
    for piece in re.split(r"(\{id\}|\*)", normal_pattern(pattern)):
        if piece in ("{id}", "*"):
            regex += ("(?P=id)" if named else "(?P<id>[^/]+)") if piece == "{id}" else "[^/]*"
            named = named or piece == "{id}"
            wildcard += "" if wildcard.endswith("*") else "*"  # one glob star per run of wildcards
        else:
            regex += re.escape(piece)
            wildcard += glob.escape(piece)
    compiled = re.compile(regex)
    found: dict[str, Path] = {}
    for path in sorted(folder.glob(wildcard)):
        relative = path.relative_to(folder).as_posix()
        match = compiled.fullmatch(relative)
        if match is None or path in skip or any(p.startswith(".") for p in relative.split("/")) \
                or not path.is_file():
            continue
        key = match.group("id")
        if key in found:
            raise DatasetError(f"{found[key]} and {path} both match {pattern!r} with id {key!r}")
        found[key] = path
    return found


def pair_patterns(folder: Path, image_pattern: str, mask_pattern: str) -> dict[str, SegSample]:
    """Image/mask pairs by id, sorted, from the files matching the two patterns (``pattern_files``); an image
    without its mask or a mask without its image raises DatasetError naming it."""
    if not folder.is_dir():
        raise DatasetError(f"folder {folder} does not exist")
    masks = pattern_files(folder, mask_pattern)
    images = pattern_files(folder, image_pattern, skip=set(masks.values()))  # images/{id}.png beside {id}_mask.png
    if not images:
        raise DatasetError(f"no file under {folder} matches image_pattern {image_pattern!r}")
    for have, lack, what, pattern in ((images, masks, "image", mask_pattern), (masks, images, "mask", image_pattern)):
        alone = sorted(set(have) - set(lack))
        if alone:
            raise DatasetError(f"{len(alone)} {what}(s) under {folder} have no counterpart: {have[alone[0]]} needs "
                               f"{folder / pattern.replace('{id}', alone[0])}")
    return {i: SegSample(str(images[i]), str(masks[i])) for i in sorted(images)}


def _cases(entry: SegCatalogEntry, folder: Path) -> dict[str, list[SegSample]]:
    return _split_pairs(entry, folder, pair_patterns(folder, entry.image_pattern, entry.mask_pattern))


def _mask_folders(entry: SegCatalogEntry, folder: Path) -> dict[str, list[SegSample]]:
    pairs = pair_files(folder / entry.image_dir, folder / entry.mask_dir, entry.mask_suffix, entry.mask_ext)
    return _split_pairs(entry, folder, pairs)


def _split_pairs(entry: SegCatalogEntry, folder: Path, pairs: dict[str, SegSample]) -> dict[str, list[SegSample]]:
    """The pairs split by the entry's split file, else by vlpt's seeded 80/10/10 split."""
    if entry.split is not None:
        ids = read_split_file(folder / entry.split, set(pairs))
    else:
        if len(pairs) < 3:
            raise DatasetError(f"{entry.title}: {folder} holds {len(pairs)} image/mask pair(s); "
                               f"a train/val/test split needs at least 3")
        held = _held_out(len(pairs))
        val, test, train = seeded_parts(list(pairs), [held, held], f"seg-split:{entry.name}")
        ids = {"train": train, "val": val, "test": test}
    return {split: [pairs[i] for i in ids[split]] for split in SPLITS}


def _camvid(entry: SegCatalogEntry, folder: Path) -> dict[str, list[SegSample]]:
    return {split: list(pair_files(folder / split, folder / f"{split}annot").values()) for split in SPLITS}


def _voc(entry: SegCatalogEntry, folder: Path) -> dict[str, list[SegSample]]:
    image_dir, mask_dir = folder / entry.image_dir, folder / entry.mask_dir
    for path in (image_dir, mask_dir):
        if not path.is_dir():
            raise DatasetError(f"{entry.title}: folder {path} does not exist")
    present = {path: set(os.listdir(path)) for path in (image_dir, mask_dir)}
    lists = {}
    for part in ("train", "val"):
        path = folder / "ImageSets" / "Segmentation" / f"{part}.txt"
        if not path.is_file():
            raise DatasetError(f"{entry.title}: list {path} does not exist")
        lists[part] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        missing = [f"{d / i}{ext}" for i in lists[part] for d, ext in ((image_dir, ".jpg"), (mask_dir, entry.mask_ext))
                   if f"{i}{ext}" not in present[d]]
        if missing:
            raise DatasetError(f"{entry.title}: {path} lists {len(missing)} file(s) that do not exist; "
                               f"first missing: {missing[0]}")
    val, train = seeded_parts(lists["train"], [_held_out(len(lists["train"]))], f"seg-split:{entry.name}")
    ids = {"train": train, "val": val, "test": sorted(lists["val"])}
    return {split: [SegSample(str(image_dir / f"{i}.jpg"), str(mask_dir / f"{i}{entry.mask_ext}")) for i in ids[split]]
            for split in SPLITS}


LAYOUTS = {"mask_folders": _mask_folders, "camvid": _camvid, "voc": _voc, "starter": _mask_folders, "cases": _cases}
