"""``create_method``: one way to build a method, for the suite loader, GRAM and users' scripts.

A method config is named by
* a shipped config, ``vlpt/configs/methods/<name>.yaml`` (``coop``, ``coop_m4``, ...),
* a registered method name (``vlpt.registry.method_names``: classification and segmentation methods, and
  those that other packages declare in the ``vlpt.methods`` entry point group), or
* a path to a YAML file (``*.yaml`` / ``*.yml``; relative to ``relative_to``, else the current folder).

A config file holds ``method:`` and ``params:``: only the parameters where the variant differs from the
method's config dataclass, which is the one source of defaults. A shipped config wins over the registered
method of the same name (the ``coop`` config sets CoOp's ImageNet epochs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vlpt.config import build_dataclass, did_you_mean, load_yaml
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.paths import METHOD_CONFIG_DIR
from vlpt.registry import method_class, method_names

CONFIG_KEYS = ("method", "params")
CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass
class ResolvedMethod:
    """A method class with its validated config and the variant that names it in run identities."""

    cls: type[PromptMethod]
    config: MethodConfig
    variant: str


def shipped_config_names() -> list[str]:
    """The configs in ``vlpt/configs/methods``."""
    return sorted(p.stem for p in METHOD_CONFIG_DIR.glob("*.yaml"))


def method_config_names() -> list[str]:
    """Every name ``create_method`` takes: shipped configs and registered methods."""
    return sorted({*shipped_config_names(), *method_names()})


def _config_file(name_or_path: str | Path, relative_to: Path | None, where: str) -> tuple[str, Path | None]:
    """The config's name and its file (None: a registered method's dataclass defaults)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(CONFIG_SUFFIXES):
        if "\0" in text:
            raise ConfigError(f"{where}: method config {text!r} is not a file path (it holds a NUL character)")
        path = Path(text).expanduser()
        path = (relative_to / path if relative_to is not None else path).resolve()
        if not path.is_file():
            raise ConfigError(f"{where}: method config file {text} does not exist ({path})")
        if path.parent == METHOD_CONFIG_DIR:
            return path.stem, path  # a shipped config named by its path is that config
        return str(path), path
    if text in shipped_config_names():  # a name, never a path: "../x" does not reach outside the folder
        return text, METHOD_CONFIG_DIR / f"{text}.yaml"
    if text in method_names():
        return text, None
    names = method_config_names()
    raise ConfigError(f"{where}: unknown method config {text!r}{did_you_mean([text], names)}; available: "
                      f"{', '.join(names)} (or a path to a .yaml file)")


def resolve_method(name_or_path: str | Path, overrides: dict[str, Any] | None = None, where: str = "create_method",
                   relative_to: Path | None = None) -> ResolvedMethod:
    """The method class and typed config of ``name_or_path`` with ``overrides`` on top of its params."""
    name, path = _config_file(name_or_path, relative_to, where)
    users = path is not None and path.parent != METHOD_CONFIG_DIR  # a file of the user's, not a shipped config
    try:
        data = load_yaml(path) if path is not None else {"method": name}
        unknown = [key for key in data if key not in CONFIG_KEYS]
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(CONFIG_KEYS)}")
        if users and "method" not in data:
            raise ConfigError(f"{path}: a method config file needs `method:` (one of {', '.join(method_names())})")
        method, params = data.get("method", name), data.get("params") or {}
        if not isinstance(method, str) or not isinstance(params, dict):
            raise ConfigError(f"{path}: `method` must be a name and `params` a mapping")
        if method not in method_names():
            names = method_names()
            raise ConfigError(f"{path}: unknown method {method!r}{did_you_mean([method], names)}; valid names: "
                              f"{', '.join(names)}")
        cls = method_class(method)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    params = {**params, **(overrides or {})}
    label = f"method {cls.name}, config {path}" if users else \
        f"method {name}, config {path.name if path is not None else 'defaults'}"
    config = build_dataclass(cls.Config, params, f"{where} ({label})")
    # a user's file is named by its file, never by the method's default variant
    variant = path.stem if users else "default" if name == cls.name else name
    return ResolvedMethod(cls, config, variant)


def create_method(name_or_path: str | Path, backbone, classnames: Sequence[str], templates: Sequence[str],
                  **overrides: Any) -> PromptMethod:
    """Build a method for ``classnames`` on ``backbone`` (a ``ClipBackbone``, or a VLSM for segmentation
    methods) from a config name or file, with ``overrides`` of its params."""
    resolved = resolve_method(name_or_path, overrides)
    return resolved.cls(backbone, classnames, templates, resolved.config)
