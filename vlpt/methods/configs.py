"""Method configs by name: ``configs/methods/<name>.yaml`` (a method and its parameters) plus overrides,
resolved into the method's class and its typed, validated config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlpt.config import build_dataclass, load_yaml
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.paths import CONFIG_DIR
from vlpt.registry import METHODS

METHOD_CONFIG_DIR = CONFIG_DIR / "methods"


@dataclass
class ResolvedMethod:
    """A method class with its validated config and the identity pieces that name it."""

    cls: type[PromptMethod]
    config: MethodConfig
    variant: str


def load_method_config(name: str, overrides: dict[str, Any], where: str) -> ResolvedMethod:
    """Resolve ``configs/methods/<name>.yaml`` plus overrides into a method class and typed config."""
    known = sorted(p.stem for p in METHOD_CONFIG_DIR.glob("*.yaml"))
    if name not in known:  # also keeps names such as "../x" from reaching outside the folder
        raise ConfigError(f"{where}: unknown method config {name!r}; available: {', '.join(known)}")
    path = METHOD_CONFIG_DIR / f"{name}.yaml"
    data = load_yaml(path)
    for key in data:
        if key not in ("method", "params"):
            raise ConfigError(f"{path}: unknown key {key!r}; allowed keys: method, params")
    cls = METHODS.get(data.get("method", name))
    params = {**(data.get("params") or {}), **overrides}
    config = build_dataclass(cls.Config, params, f"{where} (method {name}, config {path.name})")
    return ResolvedMethod(cls, config, "default" if name == cls.name else name)
