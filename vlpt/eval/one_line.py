"""``vlpt run METHOD DATASET``: the suite of a one-line run, written beside its records so it can be run again
with ``vlpt bench --suite OUTPUT/suite.yaml``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from vlpt.backbone.clip import parse_backbone_name
from vlpt.errors import ConfigError
from vlpt.eval.overrides import apply_overrides, parse_override
from vlpt.factory import CONFIG_SUFFIXES

#: the name of the suite file a one-line run writes in its output folder
SUITE_FILE = "suite.yaml"


@dataclass
class DatasetArgument:
    """What a command's DATASET argument names: a dataset (``name``), found under ``data_root`` when the
    argument was a catalogued dataset's folder, or defined by ``definition`` (a suite's ``datasets:`` entry) for
    a folder of the user's own."""

    name: str
    data_root: Path | None = None
    definition: dict | None = None


def dataset_argument(text: str) -> DatasetArgument:
    """A dataset name stays a name; a path (it holds a separator, or no dataset has that name) to a folder is a
    dataset of vlpt's catalog when it ends with that dataset's catalog ``folder`` (``data/caltech-101``: its data
    root is what comes before), else the user's own (``folder_dataset``)."""
    from vlpt.registry import DATASETS
    from vlpt.seg.datasets import is_seg_dataset

    path = Path(text).expanduser()
    known = text in DATASETS.names() or is_seg_dataset(text)
    if not path.is_dir() or (known and "/" not in text and "\\" not in text):
        return DatasetArgument(text)
    folder = path.resolve()
    for name, root in catalogued_folders(folder):
        return DatasetArgument(name, data_root=root)
    definition, name = folder_dataset(folder)
    return DatasetArgument(name, definition=definition)


def catalogued_folders(folder: Path) -> list[tuple[str, Path]]:
    """(dataset, data root) of vlpt's catalogued datasets whose catalog ``folder`` ``folder`` ends with."""
    from vlpt.data.catalog import shipped_catalog
    from vlpt.seg.datasets import shipped_seg_catalog

    found = []
    for entry in [*shipped_catalog().values(), *shipped_seg_catalog().values()]:
        parts = Path(entry.folder).parts
        if parts and folder.parts[-len(parts):] == parts:
            found.append((entry.name, Path(*folder.parts[:-len(parts)])))
    return found


def folder_dataset(folder: Path) -> tuple[dict, str]:
    """A suite's ``datasets:`` entry for a folder of the user's, named after it: ``train/`` and ``test/`` class
    folders (``image_folder``), else class folders split 50/20/30 per class, seeded, as CoOp's datasets
    without a split file (``coop``)."""
    name = folder.name.replace(" ", "_")
    if any(c in name for c in "@~:+"):
        raise ConfigError(f"folder {folder}: a dataset name cannot hold '@', '~', ':' or '+'; rename the folder")
    parts = {part for part in ("train", "val", "test") if (folder / part).is_dir()}
    if parts == {"train", "test"} or parts == {"train", "val", "test"}:
        return {"loader": "image_folder", "folder": str(folder)}, name
    if parts:
        raise ConfigError(f"folder {folder} has {', '.join(sorted(parts))}/ but not both train/ and test/: rename "
                          f"val/ to test/ (vlpt carves its own val from train) or add the missing folder")
    return {"loader": "coop", "folder": str(folder), "fallback": "folders"}, name


def one_line_suite(method: str, dataset: str, *, protocol: str = "few_shot", shots: Sequence[int] = (16,),
                   seeds: Sequence[int] = (1, 2, 3), targets: Sequence[str] = (), backbone: str = "ViT-B-16@openai",
                   output: str | Path, data_root: str | Path | None = None, params: Sequence[str] = (),
                   overrides: Sequence[str] = ()) -> dict:
    """The suite mapping of one method on one dataset (``dataset_argument``): ``params`` (``KEY=VALUE``) are the
    method's settings, ``overrides`` any suite value by its dotted path (``vlpt.eval.overrides``)."""
    model, pretrained, stated = parse_backbone_name(backbone)
    found = dataset_argument(dataset)
    if method.endswith(CONFIG_SUFFIXES):  # a config file of the user's: found from anywhere the suite is
        method = str(Path(method).expanduser().resolve())
    entry: dict = {"config": method}
    for text in params:
        parts, value = parse_override(text)
        entry.setdefault("params", {})[".".join(parts)] = value
    experiment = {"protocol": protocol, "dataset": found.name, "shots": list(shots), "seeds": list(seeds),
                  "methods": [entry if len(entry) > 1 else method]}
    if targets:
        experiment["targets"] = list(targets)
    root = data_root or found.data_root
    suite = {"name": f"{Path(method).stem}-{found.name}",
             "backbone": {"model": model, "pretrained": pretrained,
                          **({"quick_gelu": stated} if stated is not None else {})},
             "output": str(Path(output).resolve()),
             **({"data_root": str(Path(root).resolve())} if root else {}),
             **({"datasets": {found.name: found.definition}} if found.definition else {}),
             "experiments": [experiment]}
    return apply_overrides(suite, list(overrides), "vlpt run")


def write_suite(suite: dict, output: str | Path) -> Path:
    """Write ``suite`` as ``OUTPUT/suite.yaml`` and return its path."""
    from vlpt.results import atomic_write_text

    path = Path(output) / SUITE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "# written by `vlpt run`; run it again with `vlpt bench --suite " + str(path) + "`\n"
                      + yaml.safe_dump(suite, sort_keys=False))
    return path
