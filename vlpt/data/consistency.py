"""Checks that a loaded dataset is what its catalog file and its own class list say it is.

Every loader returns a :class:`DatasetSplits`; ``check_splits`` is applied to all of them by
``load_dataset``, so a split whose samples disagree with the class list (a label out of range, a sample
whose class name is not the class name of its label) or a dataset with another number of classes than
its catalog file declares fails when it is loaded, naming the dataset, the split, the file and what was
expected, instead of training on silently mislabelled data. A dataset with another number of classes
than its catalog file declares (a partial download, a subset made on purpose) is loaded with a
:class:`DatasetWarning`: its numbers are not comparable with published ones. So is a class list that repeats a
name (CLIP's ImageNet class names do): those classes share one prompt.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from vlpt.data.samples import DatasetSplits
from vlpt.errors import DatasetError


class DatasetWarning(UserWarning):
    """A dataset loaded, but differs from its catalog file (so results are not comparable with papers)."""


def repeated_class_names(names: list[str]) -> dict[str, list[int]]:
    """The class names given to more than one label, with their labels (CLIP's ImageNet list repeats "missile"
    and "sunglasses")."""
    labels: dict[str, list[int]] = {}
    for label, name in enumerate(names):
        labels.setdefault(name, []).append(label)
    return {name: found for name, found in labels.items() if len(found) > 1}


def check_splits(splits: DatasetSplits, expected_classes: int | None = None, catalog_file: Path | None = None) -> None:
    """Raise DatasetError when the class list is empty, or when a sample's label or class name does not match
    the class list; warn when a class name repeats or the class count differs from the catalog's
    ``num_classes``."""
    names = splits.classnames
    if not names:
        raise DatasetError(f"dataset {splits.name}: the class list is empty")
    repeated = repeated_class_names(names)
    if repeated:
        listed = "; ".join(f"{name!r} at labels {', '.join(map(str, labels))}" for name, labels in repeated.items())
        warnings.warn(f"dataset {splits.name}: class names repeat ({listed}); their prompts are identical and "
                      f"vlpt's methods look classes up by name, so they score those classes alike and predict the "
                      f"first label of each (records list them)", DatasetWarning, stacklevel=3)
    for split, samples in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        for sample in samples:
            if not 0 <= sample.label < len(names):
                raise DatasetError(f"dataset {splits.name}, {split} split: image {sample.path} has label "
                                   f"{sample.label}; labels must be 0..{len(names) - 1} ({len(names)} classes)")
            if sample.classname != names[sample.label]:
                raise DatasetError(f"dataset {splits.name}, {split} split: image {sample.path} is labelled "
                                   f"{sample.label} with class name {sample.classname!r}, but class {sample.label} "
                                   f"of the dataset is {names[sample.label]!r}")
    if expected_classes is not None and len(names) != expected_classes:
        where = f"its catalog file ({catalog_file})" if catalog_file else "the suite's definition of it"
        warnings.warn(f"dataset {splits.name} has {len(names)} classes but {where} declares "
                      f"num_classes: {expected_classes}; its results are not comparable with published ones. "
                      f"Is the dataset folder complete?", DatasetWarning, stacklevel=3)
