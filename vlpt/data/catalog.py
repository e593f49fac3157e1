"""The dataset catalog (``vlpt/configs/datasets/<name>.yaml``) and ``load_dataset``.

A catalog file is data, not code: the dataset's folder names, split file, templates,
class-name rules and ``family`` (``imagenet`` for ImageNet and its variants: methods whose reference
code treats those sets apart, such as TPT's views, read it through ``dataset_family``). The loaders
in ``vlpt/data/datasets/`` register one dataset per catalog file whose ``loader`` they implement.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

from vlpt.config import build_dataclass, load_yaml
from vlpt.data.consistency import check_splits
from vlpt.data.corruptions import catalog_name, split_corrupted_name
from vlpt.data.samples import DatasetSplits, Sample
from vlpt.errors import ConfigError
from vlpt.paths import CONFIG_DIR, default_data_root

CATALOG_DIR = CONFIG_DIR / "datasets"
LOADERS = ("coop", "imagenet", "imagenet_variant", "image_folder", "domainbed")


@dataclass
class ClassNameRules:
    """How folder names become class names (applied only when classes come from folders)."""

    ignore: list[str] = field(default_factory=list)       # folders that are not classes
    rename: dict[str, str] = field(default_factory=dict)  # folder -> class name
    camel_to_words: bool = False  # "ApplyEyeMakeup" -> "Apply_Eye_Makeup" (UCF101)
    nested: bool = False          # classes are leaf folders "a/abbey", "o/outhouse/outdoor" (SUN397)

    def name(self, folder: str) -> str:
        """The class name of a class folder (a relative posix path when ``nested``)."""
        if folder in self.rename:
            return self.rename[folder]
        if self.nested:  # SUN397: drop the initial-letter folder, put "indoor"/"outdoor" first
            return " ".join(folder.split("/")[1:][::-1])
        if self.camel_to_words and "_" not in folder and " " not in folder:
            return "_".join(re.findall(r"[A-Z][^A-Z]*|^[^A-Z]+", folder))
        return folder

    def sort_key(self, folder: str) -> str:
        """Label order of class folders; UCF101's classInd.txt order ignores case and underscores."""
        return folder.replace("_", "").lower() if self.camel_to_words else folder


@dataclass
class CatalogEntry:
    """One dataset's catalog file."""

    name: str
    title: str
    loader: str
    folder: str
    templates: list[str]
    image_dir: str = ""
    split_file: str | None = None
    fallback: str = "folders"  # coop layout without a split file: folders, aircraft_lists, pets_annotations,
    #                            flowers_labels or none
    classnames: ClassNameRules = field(default_factory=ClassNameRules)
    label_folders: str = "wnid"  # ImageNet variants: class folders named by wnid or by label index
    class_subset: bool = False   # ImageNet-A/-R: only the classes with a folder (200 of 1000)
    domains: list[str] = field(default_factory=list)
    num_classes: int | None = None
    test_size: int | None = None
    split_source: str = ""   # where CoOp's split file can be downloaded
    sources: list[str] = field(default_factory=list)  # where the images come from
    manual: str = ""
    description: str = ""
    #: "imagenet" for ImageNet and its variants (test sets of its classes), else empty
    family: str = ""


def read_entry(path: Path) -> CatalogEntry:
    entry = entry_from_values(load_yaml(path), str(path))
    if entry.name != path.stem:
        raise ConfigError(f"{path}: name {entry.name!r} must equal the file name {path.stem!r}")
    return entry


def entry_from_values(values: dict, where: str) -> CatalogEntry:
    """A catalog entry from the mapping of a catalog file (or a suite's ``datasets:`` entry) at ``where``."""
    values = dict(values)
    rules = values.pop("classnames", None) or {}
    if not isinstance(rules, dict):
        raise ConfigError(f"{where}: 'classnames' must be a mapping of class-name rules")
    entry = build_dataclass(CatalogEntry, values, where)
    entry.classnames = build_dataclass(ClassNameRules, rules, f"{where}: classnames")
    if entry.loader not in LOADERS:
        raise ConfigError(f"{where}: unknown loader {entry.loader!r}; valid: {', '.join(LOADERS)}")
    if not entry.templates or any("{}" not in t for t in entry.templates):
        raise ConfigError(f"{where}: 'templates' must be a non-empty list of strings containing '{{}}'")
    return entry


#: how each ``loader`` reads a catalog entry, ``(entry, root, **options) -> DatasetSplits`` (filled by the loader
#: modules of ``vlpt/data/datasets/``)
ENTRY_LOADERS: dict[str, Callable[..., DatasetSplits]] = {}
#: datasets a suite defines (``datasets:`` in the suite, ``vlpt run`` on a folder), beside the shipped catalog
_USER_ENTRIES: dict[str, CatalogEntry] = {}


@lru_cache(maxsize=None)
def shipped_catalog() -> dict[str, CatalogEntry]:
    """The catalog files shipped with vlpt, by name."""
    return {path.stem: read_entry(path) for path in sorted(CATALOG_DIR.glob("*.yaml"))}


def catalog() -> dict[str, CatalogEntry]:
    """Every catalog entry by name: vlpt's, and the datasets suites of this process defined."""
    return {**shipped_catalog(), **_USER_ENTRIES}


def add_user_dataset(name: str, values: dict, where: str, base: Path) -> CatalogEntry:
    """Define classification dataset ``name`` for this process from a catalog mapping (a suite's ``datasets:``
    entry) read at ``where``: its ``folder`` is relative to ``base`` (the folder of the file defining it) or
    absolute; ``title`` defaults to the name, ``loader`` to ``image_folder`` (``train/`` and ``test/`` class
    folders) and ``templates`` to CLIP's "a photo of a {}."."""
    from vlpt.registry import DATASETS

    values = user_definition(name, values, where, base)
    if name in DATASETS.names() and name not in _USER_ENTRIES:
        raise ConfigError(f"{where}: dataset name {name!r} is one of vlpt's; give yours another name")
    entry = entry_from_values({"loader": "image_folder", "templates": ["a photo of a {}."], **values}, where)
    keep_definition(_USER_ENTRIES, entry, where)
    DATASETS.define(name, partial(ENTRY_LOADERS[entry.loader], entry))
    return entry


def user_definition(name: str, values: dict, where: str, base: Path) -> dict:
    """A suite's definition of dataset ``name`` (classification or segmentation) checked and completed: its name
    (``check_user_dataset_name``), ``title`` defaulting to it, ``folder`` resolved against ``base``."""
    check_user_dataset_name(name, where)
    if values.get("name", name) != name:
        raise ConfigError(f"{where}: name {values['name']!r} differs from the dataset's key {name!r}")
    if "folder" not in values:
        raise ConfigError(f"{where}: a dataset needs `folder:` (relative to the suite's folder, or absolute)")
    folder = (base / Path(str(values["folder"])).expanduser()).resolve()
    return {"title": name, **values, "name": name, "folder": str(folder)}


def keep_definition(definitions: dict, entry, where: str) -> None:
    """Keep ``entry`` in ``definitions`` by its name, unless the name was defined otherwise earlier in this
    process (ConfigError: a harness would read one folder for both)."""
    earlier = definitions.get(entry.name)
    if earlier is not None and earlier != entry:
        raise ConfigError(f"{where}: dataset {entry.name!r} was defined otherwise earlier in this process (folder "
                          f"{earlier.folder}); give one of them another name")
    definitions[entry.name] = entry


def check_user_dataset_name(name: str, where: str) -> None:
    """ConfigError for a name a suite's own dataset cannot have: with ``@ ~ : +`` (domains, corruptions, multitask
    sets), or a name of vlpt's classification catalog (``vlpt.eval.suite.define_dataset`` checks the other
    task's names too)."""
    if any(c in name for c in "@~:+"):
        raise ConfigError(f"{where}: a dataset name cannot hold '@', '~', ':' or '+' (they select domains, "
                          f"corruptions and multitask sets), got {name!r}")
    if name in shipped_catalog():
        raise ConfigError(f"{where}: dataset name {name!r} is one of vlpt's; give yours another name")


def user_dataset(name: str) -> CatalogEntry | None:
    """The definition of a dataset a suite defined (``add_user_dataset``), or None for vlpt's own."""
    return _USER_ENTRIES.get(name)


def forget_user_datasets() -> None:
    """Drop every classification dataset suites defined in this process (``vlpt.eval.suite.forget_defined_datasets``:
    segmentation sets too)."""
    from vlpt.registry import DATASETS

    for name in list(_USER_ENTRIES):
        DATASETS.undefine(name)
    _USER_ENTRIES.clear()


def dataset_family(name: str) -> str:
    """The catalog ``family`` of a dataset name (``@domain`` and ``~corruption`` suffixes allowed); empty for
    a dataset without one or without a catalog file."""
    entry = catalog().get(catalog_name(name))
    return entry.family if entry is not None else ""


def entries(loader: str) -> list[CatalogEntry]:
    """vlpt's own catalog entries read by ``loader`` (what the loader modules register at import)."""
    return [entry for entry in shipped_catalog().values() if entry.loader == loader]


def prepare_hint(name: str, root: Path) -> str:
    if name in _USER_ENTRIES:
        return f"check the `folder:` of dataset {name!r} in your suite ({_USER_ENTRIES[name].folder})"
    return f"run `vlpt data prepare {name} --root {root}` (or see datasets/README.md)"


def load_dataset(name: str, root: str | Path | None = None, **options) -> DatasetSplits:
    """Load a registered dataset from ``root`` (default ``$VLPT_DATA`` or ``./data``).

    ``name@domain`` selects a domain of a multi-domain dataset ("pacs@photo"). A suffix
    ``~corruption:severity`` shifts every image by a common corruption when it is loaded
    ("cifar10~gaussian_noise:3", "pacs@sketch~contrast:5"; names and severities 1..5 in
    ``vlpt.data.corruptions``): the splits are the clean dataset's, named in full, each sample's
    ``corruption`` set. ``options`` are the loader's keyword options (for example ``split_file=`` and
    ``check_images=False`` to read class names from a CoOp split file alone, or ``path=`` for
    ``image_folder``).
    """
    from vlpt.registry import DATASETS

    name, corruption = split_corrupted_name(name)
    base, _, domain = name.partition("@")
    loader = DATASETS.get(base)
    params = inspect.signature(loader).parameters
    if domain:
        if "domain" not in params:
            raise ConfigError(f"dataset {base!r} has no domains; drop '@{domain}' from {name!r}")
        options["domain"] = domain
    allowed = [p for p in params if p != "root"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"dataset {base!r}: unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(allowed) or 'none'}")
    required = [p for p in allowed if params[p].default is inspect.Parameter.empty and p not in options]
    if required:
        raise ConfigError(f"dataset {base!r} needs option(s) {', '.join(required)}")
    root = Path(root) if root is not None else default_data_root()
    splits = loader(root, **options).keyed(root)
    entry = catalog().get(base)
    expected = entry.num_classes if entry is not None and not entry.class_subset else None
    check_splits(splits, expected, None if base in _USER_ENTRIES else CATALOG_DIR / f"{base}.yaml")
    return splits if corruption is None else _with_corruption(splits, corruption)


def _with_corruption(splits: DatasetSplits, corruption: str) -> DatasetSplits:
    """``splits`` named ``<name>~<corruption>``, every sample's ``corruption`` set; classes and templates kept."""
    def shifted(samples: list[Sample]) -> list[Sample]:
        return [replace(sample, corruption=corruption) for sample in samples]

    return replace(splits, name=f"{splits.name}~{corruption}", train=shifted(splits.train),
                   val=shifted(splits.val), test=shifted(splits.test))
