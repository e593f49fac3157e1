"""Published numbers (the data file ``published.yaml`` beside this module) matched to leaderboard rows.

The file maps each method name to the figures its paper (or another method's paper) reports. A row's
published figure for an evaluation set is one whose protocol, backbone (the open_clip model name: the
part of the row's ``MODEL@PRETRAINED`` before ``@``), dataset, shots, evaluation set and metric all
equal the row's, and whose variant, if it names one, is the row's. A figure averaged over datasets
matches only the row averaging exactly those datasets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from typing import Protocol

import yaml

from vlpt.errors import ConfigError

PUBLISHED_FILE = "published.yaml"


@dataclass(frozen=True)
class PublishedResult:
    """One published figure: where it applies, its value (in %), and the paper that reports it.

    ``dataset`` is one dataset name, or a tuple of names for an average over those datasets.
    ``variant`` None matches every variant of the method; a name matches that variant only.
    ``unverified`` marks figures recalled rather than read from the paper.
    """

    protocol: str
    backbone: str
    dataset: str | tuple[str, ...]
    shots: int
    eval_set: str
    metric: str
    value: float
    reference: str
    variant: str | None = None
    unverified: bool = False

    def __post_init__(self) -> None:
        for name in ("protocol", "backbone", "eval_set", "metric", "reference"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.dataset, list):
            object.__setattr__(self, "dataset", tuple(self.dataset))
        names = self.dataset if isinstance(self.dataset, tuple) else (self.dataset,)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"dataset must be a dataset name or a list of names, got {self.dataset!r}")
        if not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0:
            raise ValueError(f"shots must be an integer >= 0, got {self.shots!r}")
        if (not isinstance(self.value, (int, float)) or isinstance(self.value, bool) or not math.isfinite(self.value)
                or not 0 <= self.value <= 100):
            raise ValueError(f"value must be a percentage in [0, 100], got {self.value!r}")
        if self.variant is not None and not (isinstance(self.variant, str) and self.variant):
            raise ValueError(f"variant must be a non-empty string or absent, got {self.variant!r}")
        if not isinstance(self.unverified, bool):
            raise ValueError(f"unverified must be true or false, got {self.unverified!r}")

    @property
    def is_average(self) -> bool:
        """True for a figure averaged over several datasets."""
        return isinstance(self.dataset, tuple)


_KEYS = tuple(f.name for f in fields(PublishedResult))
_REQUIRED = tuple(f.name for f in fields(PublishedResult) if f.name not in ("variant", "unverified"))


def parse_published(data: object, file: str) -> dict[str, tuple[PublishedResult, ...]]:
    """Method -> its figures, from the parsed ``published.yaml`` (``file`` names it in errors)."""
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        raise ConfigError(f"{file}: expected a mapping with a 'methods' mapping (method -> list of figures)")
    unknown = set(data) - {"methods", "papers", "dataset_sets", "selection"}
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))} "
                          "(keys: methods, selection, papers, dataset_sets)")
    published = {}
    for method, entries in data["methods"].items():
        if not isinstance(entries, list):
            raise ConfigError(f"{file}: method {method}: expected a list of figures, got {entries!r}")
        results = []
        for i, entry in enumerate(entries):
            where = f"{file}: method {method}, figure {i + 1}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a mapping, got {entry!r}")
            for key in entry:
                if key not in _KEYS:
                    raise ConfigError(f"{where}: unknown key {key!r} (keys: {', '.join(_KEYS)})")
            for key in _REQUIRED:
                if key not in entry:
                    raise ConfigError(f"{where}: key {key!r} is missing")
            try:
                results.append(PublishedResult(**entry))
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        published[str(method)] = tuple(results)
    return published


#: how a paper may have chosen the hyperparameters behind its figures
PAPER_RULES = ("fixed", "validation", "test")


@dataclass(frozen=True)
class PaperSelection:
    """How a method's paper chose its hyperparameters: ``rule`` (fixed for all datasets, at most per dataset
    without looking at data; validation: searched on a validation split; test: searched on the test set), a
    ``note`` on the details, and ``unverified`` where recalled rather than read from the paper or its code."""

    rule: str
    note: str = ""
    unverified: bool = False


def parse_selection(data: object, file: str) -> dict[str, PaperSelection]:
    """Method -> its paper's selection rule, from the parsed ``published.yaml``'s ``selection`` mapping."""
    entries = data.get("selection", {}) if isinstance(data, dict) else {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{file}: selection: expected a mapping (method -> {{rule, note, unverified}})")
    found = {}
    for method, entry in entries.items():
        where = f"{file}: selection of {method}"
        if not isinstance(entry, dict) or set(entry) - {"rule", "note", "unverified"}:
            raise ConfigError(f"{where}: expected a mapping with keys rule, note, unverified; got {entry!r}")
        if entry.get("rule") not in PAPER_RULES:
            raise ConfigError(f"{where}: rule must be one of {', '.join(PAPER_RULES)}, got {entry.get('rule')!r}")
        if not isinstance(entry.get("note", ""), str) or not isinstance(entry.get("unverified", False), bool):
            raise ConfigError(f"{where}: note must be text and unverified true or false, got {entry!r}")
        found[str(method)] = PaperSelection(**entry)
    return found


@lru_cache(maxsize=None)
def _published_data() -> tuple[dict, str]:
    text = resources.files("vlpt.results").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text), f"vlpt/results/{PUBLISHED_FILE}"


@lru_cache(maxsize=None)
def paper_selections() -> dict[str, PaperSelection]:
    """Every method's paper selection rule, from the shipped ``published.yaml``."""
    return parse_selection(*_published_data())


def paper_selection(method: str) -> PaperSelection | None:
    """How ``method``'s paper chose its hyperparameters (None where the file does not say)."""
    return paper_selections().get(method)


@lru_cache(maxsize=None)
def published_figures() -> dict[str, tuple[PublishedResult, ...]]:
    """Every method's published figures, read once from the shipped ``published.yaml``."""
    return parse_published(*_published_data())


def method_published(method: str) -> tuple[PublishedResult, ...]:
    """The figures published for ``method`` (none for a method the file does not name)."""
    return published_figures().get(method, ())


def model_name(backbone: str) -> str:
    """The open_clip model name of a record's backbone, ``ViT-B-16@openai`` -> ``ViT-B-16``."""
    return backbone.split("@", 1)[0]


class Row(Protocol):
    """What :func:`paper_results` reads of a leaderboard row (a :class:`vlpt.results.leaderboard.Group`)."""

    protocol: str
    backbone: str
    dataset: str
    method: str
    variant: str
    shots: int
    over: tuple[str, ...]


def paper_results(group: Row) -> dict[tuple[str, str], PublishedResult]:
    """(eval_set, metric) -> the published figure matching the row ``group`` exactly."""
    dataset = frozenset(group.over) if group.over else group.dataset
    found = {}
    for result in method_published(group.method):
        result_dataset = frozenset(result.dataset) if result.is_average else result.dataset
        if (result.protocol == group.protocol and result.backbone == model_name(group.backbone)
                and result_dataset == dataset and result.shots == group.shots
                and result.variant in (None, group.variant)):
            found.setdefault((result.eval_set, result.metric), result)
    return found


def format_value(result: PublishedResult) -> str:
    """The figure with two decimals, as the leaderboard prints its own means."""
    return f"{result.value:.2f}"


__all__ = ["PAPER_RULES", "PaperSelection", "PublishedResult", "paper_selection", "paper_selections", "parse_selection", "Row", "format_value", "method_published", "model_name", "paper_results",
           "parse_published", "published_figures"]
