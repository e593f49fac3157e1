"""The data records every loader produces: one ``Sample`` per image, ``DatasetSplits`` per dataset."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Sample:
    """One labelled image: an absolute path, its label in the dataset's class list, its class name.

    ``domain`` is the domain of a multi-domain dataset; ``corruption`` ("gaussian_noise:3") is the
    common corruption applied when the image is loaded (``vlpt.data.corruptions``), None for none.
    ``key`` is the image's path within the data root ("caltech101/images/x.jpg"; ``load_dataset`` sets
    it): random draws per image (training crops, test-time views, corruptions) are seeded by
    ``seed_key``, so results do not depend on where the data lies or how its root is spelled.
    """

    path: str
    label: int
    classname: str
    domain: str | None = None
    corruption: str | None = None
    key: str | None = None

    @property
    def seed_key(self) -> str:
        """What per-image random draws are seeded by: ``key``, or the path for a sample built without one."""
        return self.path if self.key is None else self.key


@dataclass
class DatasetSplits:
    """A dataset's class list and its train/val/test samples.

    ``templates[0]`` is the dataset's own zero-shot template (CoOp's), ``{}`` standing for the
    class name. Class names keep their underscores; prompt code turns ``_`` into a space.
    """

    name: str
    classnames: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])

    def keyed(self, root: str | Path) -> DatasetSplits:
        """These splits with every sample's ``key`` set to its path relative to ``root`` (samples outside
        ``root`` keep their absolute path as key)."""
        base = os.path.abspath(root)

        def key(path: str) -> str:
            full = os.path.abspath(path)
            inside = os.path.commonpath([base, full]) == base
            return Path(os.path.relpath(full, base)).as_posix() if inside else full

        def keyed(samples: list[Sample]) -> list[Sample]:
            return [replace(s, key=key(s.path)) for s in samples]

        return replace(self, train=keyed(self.train), val=keyed(self.val), test=keyed(self.test))

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def __repr__(self) -> str:
        return (f"DatasetSplits({self.name!r}, {self.num_classes} classes, train={len(self.train)}, "
                f"val={len(self.val)}, test={len(self.test)})")


def _image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_image(path: Path) -> bool:
    return _image_name(path.name) and path.is_file()


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (one directory scan, no stat per file)."""
    with os.scandir(folder) as it:
        return sorted(Path(e.path) for e in it if _image_name(e.name) and e.is_file())


def class_folders(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
