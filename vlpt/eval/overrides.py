"""Command-line overrides of a suite's values: ``--set experiments.0.params.epochs=5``.

A key is a dotted path into the suite file (mapping keys, list indices); the value is read as YAML (``5``,
``0.01``, ``[1, 2]``, ``null``, ``none``). A missing mapping key is added; a method entry written as a bare
name becomes ``{config: NAME}`` when a key below it is set. What the path leads to is validated with the rest of
the suite, so a misspelt setting is named there; a path that cannot be followed is named here.
"""
from __future__ import annotations

import copy
import re

import yaml

from vlpt.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], object]:
    """``KEY.PATH=VALUE`` as (path parts, YAML value); ConfigError when it is not of that form."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not part for part in parts):
        raise ConfigError(f"--set {text!r} must be KEY=VALUE with a dotted KEY, e.g. experiments.0.params.epochs=5")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.problem})") from exc
    return parts, parsed


def apply_overrides(raw: dict, overrides: list[str], where: str) -> dict:
    """A copy of the suite mapping ``raw`` (read from ``where``) with every override applied in order."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a suite file must be a mapping to take --set overrides")
    result = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node, trail = result, []
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", part) or not -len(node) <= int(part) < len(node):
                    raise ConfigError(f"--set {text!r}: {'.'.join(trail) or 'the suite'} is a list of {len(node)} "
                                      f"entries; {part!r} is not an index of it (0..{len(node) - 1})")
                key = int(part)
                if not last and isinstance(node[key], str) and trail and trail[-1] == "methods":
                    node[key] = {"config": node[key]}  # a bare method name gains keys
            elif isinstance(node, dict):
                key = part
                if not last and key not in node:
                    node[key] = {}
            else:
                raise ConfigError(f"--set {text!r}: {'.'.join(trail)} is the value {node!r}, which has no "
                                  f"{part!r} inside it")
            if last:
                node[key] = value
            else:
                node = node[key]
                trail.append(part)
    return result
