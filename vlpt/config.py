"""YAML loading and typed validation of config dictionaries into dataclasses."""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from vlpt.errors import ConfigError


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, found {type(data).__name__}")
    return data


def closest_names(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """The names most like ``name`` (a typo's likely intent), best first; empty when none is close."""
    return difflib.get_close_matches(name, list(names), n=n, cutoff=0.6)


def did_you_mean(unknown: Iterable[str], names: Iterable[str]) -> str:
    """`` (did you mean 'epochs'?)`` for the first of ``unknown`` with a close name among ``names``, else ``""``."""
    names = list(names)
    for name in unknown:
        close = closest_names(str(name), names)
        if close:
            return f" (did you mean {' or '.join(map(repr, close))}?)"
    return ""


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a (simple) type annotation."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_matches(v, inner) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, dict) and all(
            _matches(k, key_type) and _matches(v, value_type) for k, v in value.items()
        )
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def build_dataclass(cls: type, values: dict, where: str):
    """Build ``cls`` from ``values``; unknown keys and wrong types raise ConfigError naming ``where``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, found {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    not_text = [key for key in values if not isinstance(key, str)]
    if not_text:
        raise ConfigError(f"{where}: key {not_text[0]!r} of type {type(not_text[0]).__name__} is not a name; "
                          f"allowed keys: {', '.join(sorted(fields))}")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}{did_you_mean(unknown, fields)}; "
            f"allowed keys: {', '.join(sorted(fields))}"
        )
    missing = [name for name, f in fields.items() if f.init and name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise ConfigError(
                f"{where}: key {key!r} has value {_short(value)} of type {type(value).__name__}, "
                f"expected {_type_name(hints[key])}"
            )
    converted = {}
    for key, value in values.items():
        try:
            converted[key] = float(value) if hints[key] is float else value
        except OverflowError:
            raise ConfigError(f"{where}: key {key!r} has value {_short(value)}, too large for a float") from None
    try:
        return cls(**converted)
    except (ValueError, ConfigError) as exc:  # a dataclass's own value checks (__post_init__)
        raise ConfigError(f"{where}: {exc}") from exc


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _type_name(annotation: Any) -> str:
    """What a value of ``annotation`` looks like, in words: ``'per_epoch' or int``, ``'cosine' or 'squared'``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
