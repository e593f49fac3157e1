"""Name -> object registries for methods and datasets.

Each registered object lives in its own module and registers itself with a
decorator (as timm models do); looking up an unknown name raises an error that
lists every valid name.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from vlpt.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects filled by the ``register`` decorator."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._imported = False

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

    def get(self, name: str) -> T:
        self._import_all()
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        self._import_all()
        return sorted(self._items)


METHODS: Registry = Registry("method", "vlpt.methods")
DATASETS: Registry = Registry("dataset", "vlpt.data.datasets")

register_dataset = DATASETS.register


def register_method(name: str):
    """Register a PromptMethod subclass under ``name`` (also stored as its ``name`` attribute)."""

    def decorator(cls):
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator
