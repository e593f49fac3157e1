"""Name -> object registries for methods and datasets.

Each registered object lives in its own module and registers itself with a
decorator (as timm models do); looking up an unknown name raises an error that
lists every valid name. Methods have one registry per task: ``METHODS`` (classification, ``vlpt/methods``,
``register_method``) and ``SEG_METHODS`` (segmentation, ``vlpt/seg/methods``, ``register_seg_method``);
their names form one namespace (configs, suites and records name a method without its task), which
``method_names`` and ``method_class`` serve. Other packages add methods through the ``vlpt.methods`` entry
point group: each entry names a module that registers its method with either decorator when imported, e.g.
in its pyproject.toml ``[project.entry-points."vlpt.methods"] mymethod = "mypkg.mymethod"``. They are
imported when a name is asked for that vlpt lacks, or when the names are listed.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from typing import Callable, Generic, TypeVar

from vlpt.config import did_you_mean
from vlpt.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects filled by the ``register`` decorator."""

    def __init__(self, kind: str, package: str, entry_point_group: str | None = None):
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._imported = False
        self._loaded_entry_points: set[str] = set()

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def define(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name``, replacing an earlier definition (a dataset a suite defines)."""
        self._import_all()
        self._items[name] = obj

    def undefine(self, name: str) -> None:
        """Remove what ``define`` registered as ``name``."""
        self._items.pop(name, None)

    def _import_all(self) -> None:
        """Import every module of the package so that its decorators run."""
        if self._imported:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{info.name}")
        self._imported = True

    def _load_entry_points(self, name: str | None = None) -> None:
        """Import the modules other packages declare in the entry point group (those named ``name``, or all)."""
        if self.entry_point_group is None:
            return
        for entry in importlib.metadata.entry_points(group=self.entry_point_group):
            if (name is not None and entry.name != name) or entry.value in self._loaded_entry_points:
                continue
            try:
                entry.load()
            except Exception as exc:  # noqa: BLE001  (any import error of another package, named)
                package = entry.dist.name if entry.dist is not None else "unknown package"
                raise ConfigError(f"{self.kind} {entry.name!r} of {package} (entry point {entry.value!r} in group "
                                  f"{self.entry_point_group}) failed to load: {type(exc).__name__}: {exc}") from exc
            self._loaded_entry_points.add(entry.value)

    def get(self, name: str) -> T:
        self._import_all()
        if name not in self._items:
            self._load_entry_points(name)
        if name not in self._items:
            names = self.names()
            raise ConfigError(f"unknown {self.kind} {name!r}{did_you_mean([name], names)}; valid names: "
                              f"{', '.join(names)}")
        return self._items[name]

    def names(self) -> list[str]:
        self._import_all()
        self._load_entry_points()
        return sorted(self._items)


METHODS: Registry = Registry("method", "vlpt.methods", entry_point_group="vlpt.methods")
SEG_METHODS: Registry = Registry("segmentation method", "vlpt.seg.methods", entry_point_group="vlpt.methods")
#: the method registry of each task (a method class's ``task``)
METHOD_REGISTRIES: dict[str, Registry] = {"classification": METHODS, "segmentation": SEG_METHODS}
DATASETS: Registry = Registry("dataset", "vlpt.data.datasets")

register_dataset = DATASETS.register


def _method_decorator(task: str, name: str):
    def decorator(cls):
        if cls.task != task:
            raise ConfigError(f"{cls.__name__} is a {cls.task} method; register it with "
                              f"{'register_method' if cls.task == 'classification' else 'register_seg_method'}")
        cls.name = name
        return METHOD_REGISTRIES[task].register(name)(cls)

    return decorator


def register_method(name: str):
    """Register a classification PromptMethod subclass under ``name`` (also stored as its ``name`` attribute)."""
    return _method_decorator("classification", name)


def register_seg_method(name: str):
    """Register a ``SegPromptMethod`` subclass under ``name`` (also stored as its ``name`` attribute)."""
    return _method_decorator("segmentation", name)


def method_names() -> list[str]:
    """The names of every method, of all tasks (a name registered for two tasks raises ConfigError)."""
    names = [name for registry in METHOD_REGISTRIES.values() for name in registry.names()]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"method(s) {', '.join(twice)} registered for more than one task")
    return sorted(names)


def method_class(name: str):
    """The method class registered as ``name`` in any task's registry."""
    for registry in METHOD_REGISTRIES.values():
        if name in registry.names():
            return registry.get(name)
    names = method_names()
    raise ConfigError(f"unknown method {name!r}{did_you_mean([name], names)}; valid names: {', '.join(names)}")
