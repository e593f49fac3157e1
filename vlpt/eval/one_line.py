"""``vlpt run METHOD DATASET``: the suite of a one-line run, written beside its records so it can be run again
with ``vlpt bench --suite OUTPUT/suite.yaml``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from vlpt.backbone.clip import parse_backbone_name
from vlpt.eval.overrides import apply_overrides, parse_override

#: the name of the suite file a one-line run writes in its output folder
SUITE_FILE = "suite.yaml"


def one_line_suite(method: str, dataset: str, *, protocol: str = "few_shot", shots: Sequence[int] = (16,),
                   seeds: Sequence[int] = (1, 2, 3), targets: Sequence[str] = (), backbone: str = "ViT-B-16@openai",
                   output: str | Path, data_root: str | Path | None = None, params: Sequence[str] = (),
                   overrides: Sequence[str] = ()) -> dict:
    """The suite mapping of one method on one dataset (a name, or a folder of the user's: ``folder_dataset``):
    ``params`` (``KEY=VALUE``) are the method's settings, ``overrides`` any suite value by its dotted path
    (``vlpt.eval.overrides``)."""
    model, pretrained, stated = parse_backbone_name(backbone)
    datasets = {}
    if Path(dataset).expanduser().is_dir():  # a folder of the user's own: defined in the suite
        datasets, dataset = folder_dataset(Path(dataset).expanduser())
    entry: dict = {"config": method}
    for text in params:
        parts, value = parse_override(text)
        entry.setdefault("params", {})[".".join(parts)] = value
    experiment = {"protocol": protocol, "dataset": dataset, "shots": list(shots), "seeds": list(seeds),
                  "methods": [entry if len(entry) > 1 else method]}
    if targets:
        experiment["targets"] = list(targets)
    suite = {"name": f"{method}-{dataset}".replace("/", "-"),
             "backbone": {"model": model, "pretrained": pretrained,
                          **({"quick_gelu": stated} if stated is not None else {})},
             "output": str(Path(output).resolve()),
             **({"data_root": str(Path(data_root).resolve())} if data_root else {}),
             **({"datasets": datasets} if datasets else {}),
             "experiments": [experiment]}
    return apply_overrides(suite, list(overrides), "vlpt run")


def folder_dataset(folder: Path) -> tuple[dict, str]:
    """A suite's ``datasets:`` entry for a folder of the user's (named after it): ``train/`` and ``test/`` class
    folders (``image_folder``), else class folders split 50/20/30 per class, seeded, as CoOp's datasets
    without a split file (``coop``)."""
    folder = folder.resolve()
    name = folder.name.replace(" ", "_")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        values = {"loader": "image_folder", "folder": str(folder)}
    else:
        values = {"loader": "coop", "folder": str(folder), "fallback": "folders"}
    return {name: values}, name


def write_suite(suite: dict, output: str | Path) -> Path:
    """Write ``suite`` as ``OUTPUT/suite.yaml`` and return its path."""
    from vlpt.results import atomic_write_text

    path = Path(output) / SUITE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "# written by `vlpt run`; run it again with `vlpt bench --suite " + str(path) + "`\n"
                      + yaml.safe_dump(suite, sort_keys=False))
    return path
