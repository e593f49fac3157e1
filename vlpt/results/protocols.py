"""What records and the leaderboard know of each protocol, read from data files alone.

Every protocol is a module of ``vlpt.protocols`` (its data and evaluation) plus a facts file
``vlpt/configs/protocols/<name>.yaml`` (see ``few_shot.yaml`` for its keys): the evaluation sets a
record reports, its metrics, the rule on targets, the leaderboard's columns, notes and plot. This module
reads those files (and facts registered at run time by a protocol from another package), so validating
a record or building a leaderboard imports no model code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import yaml

from vlpt.errors import ConfigError

#: the facts files of the protocols shipped with vlpt (data inside the package; no import of vlpt.paths)
FACTS_DIR = Path(__file__).resolve().parent.parent / "configs" / "protocols"
TARGETS_STANDIN = "{targets}"
DATASETS_STANDIN = "{datasets}"
TARGET_STANDIN = "{target}"
#: derived statistics (their evaluation-set name): the harmonic mean of base and novel, the mean over targets
DERIVED = {"harmonic_mean": "hm", "target_mean": "avg"}


@dataclass(frozen=True)
class ColumnFacts:
    """One leaderboard column: its header, evaluation set and metric (``{target}`` expands per target)."""

    header: str
    set: str | None = None
    metric: str = "accuracy"
    digits: int = 2

    @property
    def per_target(self) -> bool:
        return self.set == TARGET_STANDIN


@dataclass(frozen=True)
class ProtocolFacts:
    """A protocol as records and leaderboards see it (the keys of its facts file)."""

    name: str
    title: str
    order: int
    task: str = "classification"
    datasets: str = "one"
    targets: str = "none"
    unseen_classes: str = "none"
    trains: bool = True
    eval_sets: tuple[str, ...] = ("test",)
    metrics: tuple[str, ...] = ("accuracy",)
    derived: str | None = None
    lead: tuple[str, ...] = ("test",)
    columns: tuple[ColumnFacts, ...] = ()
    notes: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=lambda: {"model": "Backbone", "shots": "Shots"})
    plot: str | None = None
    #: test-time protocols: how a method's state meets the test images (episodic: reset per image; online: carried
    #: over a stream); None for the others
    stream: str | None = None

    def expected_eval_sets(self, dataset: str, targets: Iterable[str]) -> list[str]:
        """The evaluation sets a run on ``dataset`` (tasks joined by "+") with ``targets`` reports."""
        expanded = {TARGETS_STANDIN: list(targets), DATASETS_STANDIN: dataset.split("+")}
        return [name for entry in self.eval_sets for name in expanded.get(entry, [entry])]

    def lead_sets(self, targets: Iterable[str]) -> list[str]:
        """The evaluation sets a table row shows first, in order."""
        return [name for entry in self.lead for name in (list(targets) if entry == TARGETS_STANDIN else [entry])]

    def table_columns(self, targets: list[str]) -> list[ColumnFacts]:
        """The columns for rows with ``targets``: each run of ``{target}`` columns repeated per target."""
        columns: list[ColumnFacts] = []
        i = 0
        while i < len(self.columns):
            run = []
            while i < len(self.columns) and self.columns[i].per_target:
                run.append(self.columns[i])
                i += 1
            if run:
                columns += [ColumnFacts(c.header.replace(TARGET_STANDIN, t), t, c.metric, c.digits)
                            for t in targets for c in run]
            else:
                columns.append(self.columns[i])
                i += 1
        return columns


#: the plots of the leaderboard page a protocol may name (``vlpt.results.site.PLOTS``, checked equal by a test)
PLOT_NAMES = ("accuracy_vs_shots", "base_vs_novel", "test_time_gain", "dice_per_set")
_CHOICES = {"task": ("classification", "segmentation"), "datasets": ("one", "several"),
            "targets": ("none", "optional", "required"), "unseen_classes": ("none", "subset", "any"),
            "derived": (None, *DERIVED), "plot": (None, *PLOT_NAMES), "stream": (None, "episodic", "online")}


def facts_from_dict(name: str, data: dict, where: str) -> ProtocolFacts:
    """Facts from a parsed facts file; ConfigError names ``where`` and the key for anything wrong."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of protocol facts, found {type(data).__name__}")
    known = set(ProtocolFacts.__dataclass_fields__) - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    for key in ("title", "order"):
        if key not in data:
            raise ConfigError(f"{where}: missing key {key!r}")
    for key, valid in _CHOICES.items():
        if key in data and data[key] not in valid:
            raise ConfigError(f"{where}: {key} is {data[key]!r}; expected one of {', '.join(map(str, valid))}")
    values = dict(data)
    try:
        values["columns"] = tuple(ColumnFacts(**c) for c in data.get("columns", ()))
    except TypeError as exc:
        raise ConfigError(f"{where}: columns: {exc}") from exc
    for key in ("eval_sets", "metrics", "lead", "notes"):
        if key in values:
            values[key] = tuple(values[key])
    if "headers" in values:
        values["headers"] = {"model": "Backbone", "shots": "Shots", **values["headers"]}
    return ProtocolFacts(name=name, **values)


_registered: dict[str, ProtocolFacts] = {}


def register_facts(facts: ProtocolFacts) -> None:
    """Make a protocol from outside vlpt known to records and leaderboards in this process."""
    shipped = _shipped()
    if facts.name in shipped and shipped[facts.name] != facts:
        raise ConfigError(f"protocol {facts.name!r} is one of vlpt's; pick another name")
    _registered[facts.name] = facts


@lru_cache(maxsize=1)
def _shipped() -> dict[str, ProtocolFacts]:
    found = {}
    for path in sorted(FACTS_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            found[path.stem] = facts_from_dict(path.stem, yaml.safe_load(handle), str(path))
    return found


def all_facts() -> dict[str, ProtocolFacts]:
    """Every known protocol's facts, in table order."""
    merged = {**_shipped(), **_registered}
    return dict(sorted(merged.items(), key=lambda item: (item[1].order, item[0])))


def protocol_names() -> tuple[str, ...]:
    """The protocols a record may name, in table order."""
    return tuple(all_facts())


def protocol_facts(name: str) -> ProtocolFacts:
    """The facts of protocol ``name``; ConfigError naming the valid ones for an unknown name."""
    facts = all_facts()
    if name not in facts:
        raise ConfigError(f"unknown protocol {name!r}; valid: {', '.join(facts)}")
    return facts[name]


def known_protocol(name: str) -> ProtocolFacts | None:
    """The facts of protocol ``name``, None for an unknown one."""
    return all_facts().get(name)


__all__ = ["ColumnFacts", "ProtocolFacts", "all_facts", "facts_from_dict", "known_protocol", "protocol_facts",
           "protocol_names", "register_facts"]
