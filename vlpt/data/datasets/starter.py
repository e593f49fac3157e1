"""The starter datasets: generated images (see ``vlpt.starter.synthetic``) written as PNG files.

* ``starter_digits``: scikit-learn's 8x8 digits; test = the fifth held out of pretraining.
* ``starter_rendered_digits``: rendered digits, never seen in pretraining (domain shift, few-shot).
* ``starter_shapes``: 24 colour-shape classes, 6 of them never captioned in pretraining.

Each is generated on first use into ``<root>/starter/<name>/{train,val,test}/<class>/*.png``
(written to a temporary folder and renamed, so an interrupted generation leaves nothing half-done),
with ``classnames.txt`` fixing the label order.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from vlpt.data.samples import DatasetSplits, Sample, list_images
from vlpt.errors import DatasetError
from vlpt.registry import register_dataset
from vlpt.results.store import writer_temp_path
from vlpt.starter import synthetic
from vlpt.starter.pretrain import DIGIT_CAPTIONS, SHAPE_CAPTIONS, is_pretraining_digit

SPLITS = ("train", "val", "test")


def _digits8_split(split: str) -> Iterable[synthetic.SyntheticImage]:
    _, labels = synthetic.load_digits8()
    if split == "test":
        keep = [i for i in range(len(labels)) if not is_pretraining_digit(i)]
    else:  # val: every fifth of the rest; train: the others
        keep = [i for i in range(len(labels)) if is_pretraining_digit(i) and ((i % 5 == 1) == (split == "val"))]
    return synthetic.digits8(np.array(keep))


def _seeded(make: Callable[[int, int], Iterable[synthetic.SyntheticImage]], counts: dict[str, int], base_seed: int):
    return lambda split: make(counts[split], base_seed + SPLITS.index(split))


STARTER = {
    "starter_digits": (synthetic.DIGIT_NAMES, DIGIT_CAPTIONS[0], _digits8_split),
    "starter_rendered_digits": (
        synthetic.DIGIT_NAMES, DIGIT_CAPTIONS[0],
        _seeded(synthetic.rendered_digits, {"train": 40, "val": 10, "test": 100}, base_seed=11),
    ),
    "starter_shapes": (
        [c.replace(" ", "_") for c in synthetic.SHAPE_CLASSES], SHAPE_CAPTIONS[0],
        _seeded(synthetic.shapes, {"train": 30, "val": 8, "test": 40}, base_seed=21),
    ),
}


def starter_folder(name: str, root: Path) -> Path:
    return Path(root) / "starter" / name


def generate_starter_dataset(name: str, root: Path) -> Path:
    """Write the dataset's images under ``root`` unless they are there already; returns its folder."""
    folder = starter_folder(name, root)
    if (folder / "classnames.txt").is_file():
        return folder
    classnames, _, images_of = STARTER[name]
    tmp = writer_temp_path(folder)
    for split in SPLITS:
        counters: dict[str, int] = {}
        for item in images_of(split):
            classname = item.classname.replace(" ", "_")
            index = counters[classname] = counters.get(classname, -1) + 1
            target = tmp / split / classname / f"{index:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            item.image.save(target)
    (tmp / "classnames.txt").write_text("\n".join(classnames) + "\n")
    try:
        tmp.rename(folder)
    except OSError:  # another process (a parallel shard) finished the same dataset first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "classnames.txt").is_file():
            raise
    return folder


def load_starter(name: str, root: Path) -> DatasetSplits:
    """Generate if needed, then list the starter dataset's files."""
    folder = generate_starter_dataset(name, root)
    classnames = (folder / "classnames.txt").read_text().split()
    _, template, _ = STARTER[name]
    splits = {}
    for split in SPLITS:
        samples = []
        for label, classname in enumerate(classnames):
            class_dir = folder / split / classname
            if not class_dir.is_dir():
                raise DatasetError(f"starter dataset folder {class_dir} is missing; delete {folder} to regenerate it")
            samples += [Sample(str(p), label, classname) for p in list_images(class_dir)]
        splits[split] = samples
    return DatasetSplits(name, classnames, splits["train"], splits["val"], splits["test"], [template])


for _name in STARTER:
    register_dataset(_name)(lambda root, _n=_name: load_starter(_n, root))
