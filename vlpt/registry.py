"""Name -> object registries for methods and datasets.

Each registered object lives in its own module and registers itself with a
decorator (as timm models do); looking up an unknown name raises an error that
lists every valid name. Other packages add methods through the ``vlpt.methods`` entry point group: each
entry names a module that registers its method with ``register_method`` when imported, e.g. in its
pyproject.toml ``[project.entry-points."vlpt.methods"] mymethod = "mypkg.mymethod"``. They are imported
when a name is asked for that vlpt lacks, or when the names are listed.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from typing import Callable, Generic, TypeVar

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
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        self._import_all()
        self._load_entry_points()
        return sorted(self._items)


METHODS: Registry = Registry("method", "vlpt.methods", entry_point_group="vlpt.methods")
DATASETS: Registry = Registry("dataset", "vlpt.data.datasets")

register_dataset = DATASETS.register


def register_method(name: str):
    """Register a PromptMethod subclass under ``name`` (also stored as its ``name`` attribute)."""

    def decorator(cls):
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator
