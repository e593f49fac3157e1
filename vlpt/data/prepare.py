"""``vlpt data prepare NAME --root DIR``: download a dataset and lay it out as its loader expects.

Where torchvision has a downloader, the dataset is downloaded into ``<root>/.downloads/<name>/``
(torchvision's layout), then moved into CoOp's layout under ``<root>`` and the download folder is
removed. The two steps are separate functions, so the rearranging runs (and is tested) on any
folder in torchvision's layout. Datasets without a working downloader (ImageNet and its variants,
UCF101, StanfordCars, PACS) get the exact manual steps instead. The starter datasets are generated.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from vlpt.data.catalog import CatalogEntry, catalog
from vlpt.data.datasets.starter import STARTER, generate_starter_dataset
from vlpt.errors import ConfigError, DatasetError

PREPARABLE = tuple(sorted([*catalog(), *STARTER]))
DOWNLOADS = ".downloads"

# name -> torchvision.datasets class whose download=True fetches the whole dataset
TORCHVISION = {
    "caltech101": "Caltech101", "oxford_pets": "OxfordIIITPet", "oxford_flowers": "Flowers102",
    "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "dtd": "DTD", "eurosat": "EuroSAT",
    "sun397": "SUN397", "cifar10": "CIFAR10",
}


def _move(src: Path, dst: Path) -> str:
    """Move ``src`` to ``dst`` (kept as is when ``dst`` exists); a missing ``src`` is a DatasetError."""
    if dst.exists():
        return f"kept existing {dst}"
    if not src.exists():
        raise DatasetError(f"expected {src} in the downloaded files (torchvision's layout); it is missing")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    return f"moved {src} -> {dst}"


def _arrange_caltech101(staging: Path, target: Path) -> list[str]:
    return [_move(staging / "caltech101" / "101_ObjectCategories", target / "101_ObjectCategories")]


def _arrange_oxford_pets(staging: Path, target: Path) -> list[str]:
    base = staging / "oxford-iiit-pet"
    return [_move(base / "images", target / "images"), _move(base / "annotations", target / "annotations")]


def _arrange_oxford_flowers(staging: Path, target: Path) -> list[str]:
    from torchvision.datasets import Flowers102

    base = staging / "flowers-102"
    done = [_move(base / "jpg", target / "jpg"), _move(base / "imagelabels.mat", target / "imagelabels.mat")]
    names = target / "cat_to_name.json"
    if not names.exists():
        cat_to_name = {str(i + 1): name.rstrip("?") for i, name in enumerate(Flowers102.classes)}
        names.write_text(json.dumps(cat_to_name, indent=1))
        done.append(f"wrote {names} (class names from torchvision)")
    return done


def _arrange_food101(staging: Path, target: Path) -> list[str]:
    base = staging / "food-101"
    return [_move(base / part, target / part) for part in ("images", "meta")]


def _arrange_fgvc_aircraft(staging: Path, target: Path) -> list[str]:
    data = staging / "fgvc-aircraft-2013b" / "data"
    if not data.is_dir():
        raise DatasetError(f"expected {data} in the downloaded files (torchvision's layout); it is missing")
    return [_move(p, target / p.name) for p in sorted(data.iterdir())]


def _arrange_dtd(staging: Path, target: Path) -> list[str]:
    base = staging / "dtd" / "dtd"
    return [_move(base / part, target / part) for part in ("images", "labels")]


def _arrange_eurosat(staging: Path, target: Path) -> list[str]:
    return [_move(staging / "eurosat" / "2750", target / "2750")]


def _arrange_sun397(staging: Path, target: Path) -> list[str]:
    return [_move(staging / "SUN397", target / "SUN397")]


def _arrange_cifar10(staging: Path, target: Path) -> list[str]:
    """Write CIFAR-10's pickled batches as PNG files ``{train,test}/<class>/<index>.png``."""
    batches = staging / "cifar-10-batches-py"
    meta = batches / "batches.meta"
    if not meta.is_file():
        raise DatasetError(f"expected {meta} in the downloaded files (torchvision's layout); it is missing")
    with open(meta, "rb") as f:
        classes = pickle.load(f, encoding="latin1")["label_names"]
    done = []
    for part, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        out = target / part
        if out.exists():
            done.append(f"kept existing {out}")
            continue
        tmp = target / f".{part}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        index = 0
        for name in files:
            with open(batches / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for image, label in zip(images, batch["labels"]):
                path = tmp / classes[label] / f"{index:05d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
                index += 1
        tmp.rename(out)
        done.append(f"wrote {index} images to {out}")
    return done


ARRANGERS: dict[str, Callable[[Path, Path], list[str]]] = {
    "caltech101": _arrange_caltech101, "oxford_pets": _arrange_oxford_pets,
    "oxford_flowers": _arrange_oxford_flowers, "food101": _arrange_food101,
    "fgvc_aircraft": _arrange_fgvc_aircraft, "dtd": _arrange_dtd, "eurosat": _arrange_eurosat,
    "sun397": _arrange_sun397, "cifar10": _arrange_cifar10,
}


def download(name: str, staging: Path) -> None:
    """Download ``name`` with torchvision into ``staging`` (torchvision's own layout)."""
    import torchvision.datasets as tvd

    entry = catalog()[name]
    staging.mkdir(parents=True, exist_ok=True)
    try:
        getattr(tvd, TORCHVISION[name])(str(staging), download=True)
    except Exception as exc:  # network, checksum or archive errors all mean: do it by hand
        raise DatasetError(
            f"downloading {entry.title} with torchvision.datasets.{TORCHVISION[name]} failed: {exc}\n"
            f"Download it by hand from {', '.join(entry.sources)} and lay it out as datasets/README.md shows."
        ) from exc


def arrange(name: str, staging: Path, root: Path) -> list[str]:
    """Move a torchvision-layout download in ``staging`` into CoOp's layout under ``root``."""
    entry = catalog()[name]
    return ARRANGERS[name](Path(staging), Path(root) / entry.folder)


def _split_file_note(entry: CatalogEntry, root: Path) -> str:
    if not entry.split_file or (root / entry.folder / entry.split_file).is_file():
        return ""
    return (f"Optional, for CoOp's published splits (comparable with papers): download {entry.split_file} from "
            f"{entry.split_source} into {root / entry.folder}/. Without it vlpt builds a seeded split itself.")


def prepare_dataset(name: str, root: str | Path, download_files: bool = True) -> str:
    """Prepare classification dataset ``name`` under ``root``; returns what was done, or the manual steps.
    (``vlpt data prepare`` also takes the segmentation sets: :func:`vlpt.cli.prepare_dataset`.)

    ``download_files=False`` only rearranges an existing download in ``<root>/.downloads/<name>/``.
    """
    if name not in PREPARABLE:
        raise ConfigError(f"unknown dataset {name!r} for `vlpt data prepare`; valid: {', '.join(PREPARABLE)} "
                          f"(segmentation sets: vlpt.seg.datasets.prepare_seg_dataset)")
    root = Path(root)
    if name in STARTER:
        return f"{name} generated in {generate_starter_dataset(name, root)}"
    entry = catalog()[name]
    if name not in ARRANGERS:
        steps = entry.manual.replace("<root>", str(root)).rstrip()
        return f"{entry.title} cannot be downloaded automatically. Manual steps:\n{steps}"
    target = root / entry.folder
    parts = ["train", "test"] if entry.loader == "image_folder" else [entry.image_dir]
    if all((target / part).is_dir() for part in parts):
        note = _split_file_note(entry, root)
        return f"{entry.title} is already in place in {target}; nothing to do." + (f"\n{note}" if note else "")
    staging = root / DOWNLOADS / name
    if download_files:
        download(name, staging)
    lines = arrange(name, staging, root)
    shutil.rmtree(staging, ignore_errors=True)
    note = _split_file_note(entry, root)
    return "\n".join([f"{entry.title} prepared in {root / entry.folder}:", *(f"  {line}" for line in lines)]
                     + ([note] if note else []))
