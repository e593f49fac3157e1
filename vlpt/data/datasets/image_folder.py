"""Image-folder datasets: ``<path>/train/<class>/*``, ``<path>/test/<class>/*``, optional ``<path>/val/<class>/*``.

Class names are the sorted train folder names. Without a val folder, a seeded val set
(``val_fraction`` of each class) is carved out of train, disjoint from what stays in train.
Registered as ``image_folder`` (option ``path``, relative to the data root) and once per catalog
file with ``loader: image_folder`` (``cifar10``).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from vlpt.data.catalog import ENTRY_LOADERS, CatalogEntry, entries, prepare_hint
from vlpt.data.fewshot import split_per_class, split_rng
from vlpt.data.samples import DatasetSplits, Sample, class_folders, list_images
from vlpt.errors import DatasetError
from vlpt.registry import register_dataset


def _samples(part_dir: Path, classnames: list[str]) -> list[Sample]:
    label = {name: i for i, name in enumerate(classnames)}
    samples = []
    for folder in class_folders(part_dir):
        if folder.name not in label:
            raise DatasetError(f"class folder {folder} has no counterpart in {part_dir.parent / 'train'}")
        samples.extend(Sample(str(p), label[folder.name], folder.name) for p in list_images(folder))
    return samples


def read_image_folder(name: str, folder: Path, templates: list[str], val_fraction: float = 0.2,
                      split_seed: int = 1, hint: str = "") -> DatasetSplits:
    folder = folder.absolute()
    for part in ("train", "test"):
        if not (folder / part).is_dir():
            raise DatasetError(f"{name}: folder {folder / part} does not exist{'; ' + hint if hint else ''}")
    classnames = [p.name for p in class_folders(folder / "train")]
    if not classnames:
        raise DatasetError(f"{name}: no class folders in {folder / 'train'}")
    train = _samples(folder / "train", classnames)
    test = _samples(folder / "test", classnames)
    if (folder / "val").is_dir():
        val = _samples(folder / "val", classnames)
    else:
        val, train = split_per_class(train, [val_fraction], split_rng(split_seed, f"split:{name}"))
    return DatasetSplits(name, classnames, train, val, test, list(templates))


@register_dataset("image_folder")
def image_folder(root: Path, path: str, val_fraction: float = 0.2, split_seed: int = 1,
                 template: str = "a photo of a {}.") -> DatasetSplits:
    """Any ``train/ [val/] test/`` class-folder dataset at ``root / path``; its name is ``path``."""
    return read_image_folder(path, Path(root) / path, [template], val_fraction, split_seed)


def _load_entry(entry: CatalogEntry, root: Path, val_fraction: float = 0.2, split_seed: int = 1) -> DatasetSplits:
    return read_image_folder(entry.name, Path(root) / entry.folder, entry.templates, val_fraction, split_seed,
                             prepare_hint(entry.name, root))


ENTRY_LOADERS["image_folder"] = _load_entry
for _entry in entries("image_folder"):
    register_dataset(_entry.name)(partial(_load_entry, _entry))
