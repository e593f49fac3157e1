"""The 11 CoOp datasets and the 4 ImageNet variants, in CoOp's folder layout (see datasets/README.md).

One dataset is registered per catalog file whose ``loader`` is ``coop``, ``imagenet`` or
``imagenet_variant``; the catalog gives its folder, image folder, split file and class-name rules.

With the split file present (``split_zhou_<Dataset>.json``, CoOp's published splits) the splits are
read from it and checked: every label has one class name, labels are 0..n-1, every image exists.
Without it, the splits are built from the data themselves, seeded and deterministic:

* ``folders``: class folders under the image folder (class-name rules applied), each class cut into
  50% train / 20% val / 30% test as CoOp does (Caltech101, DTD, EuroSAT, Food101, SUN397, UCF101);
* ``aircraft_lists``: FGVC-Aircraft's own ``images_variant_{train,val,test}.txt`` (as CoOp);
* ``pets_annotations``: Oxford-IIIT Pet's ``annotations/{trainval,test}.txt``, trainval cut 80/20;
* ``flowers_labels``: ``imagelabels.mat`` + ``cat_to_name.json``, cut 50/20/30;
* ``none``: the split file is required (StanfordCars).
Such splits are not CoOp's published ones, so numbers from them are not comparable to papers.
"""
from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

from vlpt.data.catalog import ENTRY_LOADERS, CatalogEntry, entries, prepare_hint, shipped_catalog
from vlpt.data.fewshot import sample_few_shot, split_per_class, split_rng
from vlpt.data.samples import DatasetSplits, Sample, class_folders, is_image, list_images
from vlpt.errors import DatasetError
from vlpt.registry import register_dataset

SPLITS = ("train", "val", "test")


class _FileIndex:
    """Existence checks against cached directory listings (one listing per folder, not one stat per image)."""

    def __init__(self):
        self._listings: dict[str, set[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._listings:
            try:
                self._listings[folder] = set(os.listdir(folder))
            except OSError:
                self._listings[folder] = set()
        return name in self._listings[folder]


def read_split_file(split_path: Path, image_dir: Path, check_images: bool = True
                    ) -> tuple[list[str], dict[str, list[Sample]]]:
    """Read a CoOp split file ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``."""
    try:
        data = json.loads(split_path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"split file {split_path} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict) or set(SPLITS) - set(data):
        raise DatasetError(f"split file {split_path} must map 'train', 'val' and 'test' to lists of "
                           f"[relpath, label, classname]")
    names: dict[int, set[str]] = {}
    rows: dict[str, list[tuple[str, int, str]]] = {}
    for split in SPLITS:
        rows[split] = []
        for i, item in enumerate(data[split]):
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                    and isinstance(item[1], int) and isinstance(item[2], str)):
                raise DatasetError(f"split file {split_path}: {split}[{i}] = {item!r} is not [relpath, label, classname]")
            rows[split].append(tuple(item))
            names.setdefault(item[1], set()).add(item[2])
    for label, cnames in sorted(names.items()):
        if len(cnames) > 1:
            raise DatasetError(f"split file {split_path}: label {label} has several class names: "
                               f"{', '.join(map(repr, sorted(cnames)))}")
    if sorted(names) != list(range(len(names))):
        bad = sorted(set(names) ^ set(range(len(names))))
        raise DatasetError(f"split file {split_path}: labels must be 0..{len(names) - 1}; "
                           f"missing or out of range: {', '.join(map(str, bad[:10]))}")
    classnames = [names[label].pop() for label in range(len(names))]
    duplicates = sorted({c for c in classnames if classnames.count(c) > 1})
    if duplicates:
        raise DatasetError(f"split file {split_path}: class name(s) {', '.join(map(repr, duplicates))} "
                           f"belong to several labels")
    base = image_dir.absolute()
    splits = {split: [Sample(str(base / rel), label, cname) for rel, label, cname in rows[split]]
              for split in SPLITS}
    if check_images:
        check_exist(splits, f"split file {split_path}")
    return classnames, splits


def check_exist(splits: dict[str, list[Sample]], source: str) -> None:
    """DatasetError naming ``source``, the number of missing images and the first one."""
    index = _FileIndex()
    missing = [s.path for split in SPLITS for s in splits[split] if not index.exists(s.path)]
    if missing:
        raise DatasetError(f"{source} lists {len(missing)} image(s) that do not exist; first missing: {missing[0]}")


def _folder_samples(entry: CatalogEntry, image_dir: Path) -> tuple[list[str], list[Sample]]:
    """Samples of every class folder under ``image_dir`` (class-name rules applied)."""
    rules = entry.classnames
    if rules.nested:
        folders = sorted({p.parent.relative_to(image_dir).as_posix() for p in image_dir.rglob("*") if is_image(p)})
    else:
        folders = [p.name for p in class_folders(image_dir)]
    folders = sorted((f for f in folders if f not in rules.ignore), key=rules.sort_key)
    if not folders:
        raise DatasetError(f"{entry.title}: no class folders with images under {image_dir}")
    classnames = [rules.name(f) for f in folders]
    samples = [Sample(str(p), label, classnames[label])
               for label, f in enumerate(folders) for p in list_images(image_dir / f)]
    return classnames, samples


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _aircraft_lists(entry: CatalogEntry, folder: Path, image_dir: Path, rng) -> tuple[list[str], dict]:
    classnames = _read_lines(folder / "variants.txt")
    label = {name: i for i, name in enumerate(classnames)}
    splits = {}
    for split in SPLITS:
        splits[split] = []
        for line in _read_lines(folder / f"images_variant_{split}.txt"):
            image, _, variant = line.partition(" ")
            if variant not in label:
                raise DatasetError(f"{folder / f'images_variant_{split}.txt'}: variant {variant!r} of image "
                                   f"{image} is not in {folder / 'variants.txt'}")
            splits[split].append(Sample(str(image_dir / f"{image}.jpg"), label[variant], variant))
    return classnames, splits


def _pets_annotations(entry: CatalogEntry, folder: Path, image_dir: Path, rng) -> tuple[list[str], dict]:
    names: dict[int, str] = {}
    lists = {}
    for part in ("trainval", "test"):
        lists[part] = []
        for line in _read_lines(folder / "annotations" / f"{part}.txt"):
            image, class_id = line.split()[:2]
            label = int(class_id) - 1
            names[label] = image.rsplit("_", 1)[0].lower()
            lists[part].append((image, label))
    classnames = [names[i] for i in range(len(names))]
    samples = {part: [Sample(str(image_dir / f"{image}.jpg"), label, classnames[label]) for image, label in rows]
               for part, rows in lists.items()}
    train, val = split_per_class(samples["trainval"], [0.8], rng)
    return classnames, {"train": train, "val": val, "test": samples["test"]}


def _flowers_labels(entry: CatalogEntry, folder: Path, image_dir: Path, rng) -> tuple[list[str], dict]:
    from scipy.io import loadmat

    labels_path, names_path = folder / "imagelabels.mat", folder / "cat_to_name.json"
    for path in (labels_path, names_path):
        if not path.is_file():
            raise DatasetError(f"{path} does not exist; {prepare_hint(entry.name, folder.parent)}")
    labels = [int(x) - 1 for x in loadmat(labels_path)["labels"].ravel()]
    cat_to_name = json.loads(names_path.read_text())
    classnames = [cat_to_name[str(i + 1)] for i in range(len(cat_to_name))]
    samples = [Sample(str(image_dir / f"image_{i + 1:05d}.jpg"), label, classnames[label])
               for i, label in enumerate(labels)]
    train, val, test = split_per_class(samples, [0.5, 0.2], rng)
    return classnames, {"train": train, "val": val, "test": test}


def _folders(entry: CatalogEntry, folder: Path, image_dir: Path, rng) -> tuple[list[str], dict]:
    classnames, samples = _folder_samples(entry, image_dir)
    train, val, test = split_per_class(samples, [0.5, 0.2], rng)
    return classnames, {"train": train, "val": val, "test": test}


FALLBACKS = {"folders": _folders, "aircraft_lists": _aircraft_lists,
             "pets_annotations": _pets_annotations, "flowers_labels": _flowers_labels}


def load_coop(entry: CatalogEntry, root: Path, split_file: str | None = None, check_images: bool = True,
              split_seed: int = 1) -> DatasetSplits:
    """Load a CoOp-layout dataset.

    ``split_file`` overrides the catalog's split file (absolute, or relative to the dataset folder);
    ``check_images=False`` skips every check on the image files (to read a split file alone);
    ``split_seed`` seeds the split built when there is no split file.
    """
    folder = Path(root) / entry.folder
    image_dir = (folder / entry.image_dir).absolute()
    if split_file is not None:
        split_path = Path(split_file) if Path(split_file).is_absolute() else folder / split_file
        if not split_path.is_file():
            raise DatasetError(f"{entry.title}: split file {split_path} does not exist")
    else:
        split_path = folder / entry.split_file if entry.split_file else None
    if check_images and not image_dir.is_dir():
        raise DatasetError(f"{entry.title}: image folder {image_dir} does not exist; {prepare_hint(entry.name, root)}")
    if split_path is not None and split_path.is_file():
        classnames, splits = read_split_file(split_path, image_dir, check_images)
    elif entry.fallback in FALLBACKS:
        if not image_dir.is_dir():
            raise DatasetError(f"{entry.title}: image folder {image_dir} does not exist; "
                               f"{prepare_hint(entry.name, root)}")
        rng = split_rng(split_seed, f"split:{entry.name}")
        classnames, splits = FALLBACKS[entry.fallback](entry, folder, image_dir, rng)
        if check_images and entry.fallback != "folders":
            check_exist(splits, f"{entry.title} ({entry.fallback} under {folder})")
    else:
        raise DatasetError(f"{entry.title}: split file {split_path} does not exist and is required; download it "
                           f"from {entry.split_source or 'CoOp (see datasets/README.md)'}")
    return DatasetSplits(entry.name, classnames, splits["train"], splits["val"], splits["test"], list(entry.templates))


def read_imagenet_classnames(path: Path) -> list[tuple[str, str]]:
    """(wnid, class name) per line of a ``classnames.txt`` ("n01440764 tench")."""
    if not path.is_file():
        raise DatasetError(f"ImageNet class-name file {path} does not exist; it holds one 'wnid class name' per "
                           f"line (CLIP's names, see datasets/README.md)")
    pairs = []
    for i, line in enumerate(_read_lines(path)):
        wnid, _, name = line.partition(" ")
        if not name.strip():
            raise DatasetError(f"{path}, line {i + 1}: expected 'wnid class name', found {line!r}")
        pairs.append((wnid, name.strip()))
    return pairs


def _class_samples(folder: Path, label: int, classname: str) -> list[Sample]:
    return [Sample(str(p), label, classname) for p in list_images(folder)]


def imagenet_classes(folder: Path, image_dir: Path) -> list[tuple[str, str]]:
    """(wnid, class name) of ImageNet's 1,000 classes in label order: from ``classnames.txt``, else the sorted
    wnid folders of ``image_dir`` (``val``, else ``train``) named by open_clip's list of CLIP's class names."""
    listed = folder / "classnames.txt"
    if listed.is_file():
        return read_imagenet_classnames(listed)
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    for part in ("val", "train"):
        if (image_dir / part).is_dir():
            wnids = sorted(p.name for p in class_folders(image_dir / part))
            if len(wnids) != len(IMAGENET_CLASSNAMES):
                raise DatasetError(f"ImageNet: {listed} does not exist and {image_dir / part} holds {len(wnids)} "
                                   f"class folders, not {len(IMAGENET_CLASSNAMES)}: CLIP's class names cannot be "
                                   f"matched to them; add classnames.txt (see datasets/README.md)")
            return list(zip(wnids, IMAGENET_CLASSNAMES))
    return read_imagenet_classnames(listed)  # neither: the missing file is named


def load_imagenet(entry: CatalogEntry, root: Path, val_per_class: int = 10, split_seed: int = 1) -> DatasetSplits:
    """ImageNet: ``images/train/<wnid>/``, ``images/val/<wnid>/`` and ``classnames.txt``; test = the val folder.

    CoOp uses the val folder as both val and test; here val is carved from train instead
    (``val_per_class`` images per class, seeded), so that val never overlaps the test set. Without
    ``images/train`` the dataset is test-only (evaluation sets, test-time adaptation); without
    ``classnames.txt`` CLIP's class names come from open_clip, in the sorted wnid order of the folders.
    """
    folder = Path(root).absolute() / entry.folder
    classes = imagenet_classes(folder, folder / entry.image_dir)
    parts = {"train": []}
    for part in ("train", "val"):
        part_dir = folder / entry.image_dir / part
        if part == "train" and not part_dir.is_dir() and (folder / entry.image_dir / "val").is_dir():
            continue  # test-only
        if not part_dir.is_dir():
            raise DatasetError(f"{entry.title}: image folder {part_dir} does not exist; {prepare_hint(entry.name, root)}")
        missing = [wnid for wnid, _ in classes if not (part_dir / wnid).is_dir()]
        if missing:
            raise DatasetError(f"{entry.title}: {len(missing)} class folder(s) missing in {part_dir}, "
                               f"first: {missing[0]}")
        parts[part] = [s for label, (wnid, name) in enumerate(classes)
                       for s in _class_samples(part_dir / wnid, label, name)]
    val = sample_few_shot(parts["train"], val_per_class, split_rng(split_seed, f"split:{entry.name}")) \
        if parts["train"] else []
    held = {s.path for s in val}
    train = [s for s in parts["train"] if s.path not in held]
    return DatasetSplits(entry.name, [name for _, name in classes], train, val, parts["val"], list(entry.templates))


def load_imagenet_variant(entry: CatalogEntry, root: Path) -> DatasetSplits:
    """A test-only ImageNet variant (empty train and val).

    Class names come from ``classnames.txt`` in the variant's folder, else from ImageNet's (its file, or CLIP's
    names in its folders' wnid order); a variant with index-named folders (ImageNet-V2) takes CLIP's names unless
    ImageNet's ``classnames.txt`` is there.
    With ``class_subset`` (ImageNet-A, -R) the dataset holds only the classes that have a folder
    (200), with ImageNet's names, relabelled 0..199 in ImageNet's order.
    """
    root = Path(root).absolute()
    folder = root / entry.folder
    image_dir = folder / entry.image_dir
    if not image_dir.is_dir():
        raise DatasetError(f"{entry.title}: image folder {image_dir} does not exist; {prepare_hint(entry.name, root)}")
    own = folder / "classnames.txt"
    imagenet = shipped_catalog()["imagenet"]
    imagenet_folder = root / imagenet.folder
    if own.is_file():
        classes = read_imagenet_classnames(own)
    elif entry.label_folders == "index" and not (imagenet_folder / "classnames.txt").is_file():
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # folders 0..999: CLIP's names, in order

        classes = [(str(i), name) for i, name in enumerate(IMAGENET_CLASSNAMES)]
    else:
        classes = imagenet_classes(imagenet_folder, imagenet_folder / imagenet.image_dir)
    keys = [str(i) for i in range(len(classes))] if entry.label_folders == "index" else [w for w, _ in classes]
    present = {p.name for p in class_folders(image_dir)}
    unknown = sorted(present - set(keys))
    if unknown:
        raise DatasetError(f"{entry.title}: folder(s) {', '.join(unknown[:5])} in {image_dir} are not ImageNet "
                           f"classes ({len(unknown)} in all)")
    kept = [i for i, key in enumerate(keys) if key in present] if entry.class_subset else list(range(len(keys)))
    classnames = [classes[i][1] for i in kept]
    test = [s for label, i in enumerate(kept) if keys[i] in present
            for s in _class_samples(image_dir / keys[i], label, classnames[label])]
    return DatasetSplits(entry.name, classnames, [], [], test, list(entry.templates))


ENTRY_LOADERS.update(coop=load_coop, imagenet=load_imagenet, imagenet_variant=load_imagenet_variant)
for _entry in entries("coop"):
    register_dataset(_entry.name)(partial(load_coop, _entry))
for _entry in entries("imagenet"):
    register_dataset(_entry.name)(partial(load_imagenet, _entry))
for _entry in entries("imagenet_variant"):
    register_dataset(_entry.name)(partial(load_imagenet_variant, _entry))
