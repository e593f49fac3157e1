"""Merging external run records into a leaderboard's records folder.

Every source is validated first (:mod:`vlpt.results.validate`); invalid records are refused with
their problems. A valid record is copied byte for byte, atomically, to
``<output>/records/<run_id>.json``; a run already there with the same content is skipped, one
with different content is a conflict and left as it is. The leaderboard is then rebuilt from
the records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from vlpt.results.publish import write_leaderboard
from vlpt.results.store import atomic_write_text
from vlpt.results.validate import Problem, ValidRecord, validate_records


@dataclass
class MergeReport:
    """What a merge did: files copied, runs already present, runs given twice with the same content,
    conflicts, refused records."""

    copied: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    repeated: list[Path] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    leaderboard: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was refused and nothing conflicted."""
        return not self.problems and not self.conflicts


def _existing(path: Path) -> object:
    """The parsed content of a record already in the destination (None when unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def merge_records(sources: Iterable[str | Path], output: str | Path,
                  methods: Iterable[str] | None = None, link_curves: bool = True) -> MergeReport:
    """Merge the valid records of ``sources`` (records folders, output folders or record files)
    into ``output/records`` and rebuild ``output``'s leaderboard (its page linking training curves with
    ``link_curves``); ``methods``, when given, are the method names a record may name
    (:func:`vlpt.results.validate.check_record`)."""
    output = Path(output)
    destination = output / "records"
    report = MergeReport()
    planned: dict[str, ValidRecord] = {}  # run id -> record to copy
    for source in sources:
        validation = validate_records(source, methods)
        report.problems += validation.problems
        for valid in validation.valid:
            run_id = valid.record.run_id
            target = destination / f"{run_id}.json"
            earlier = planned.get(run_id)
            if earlier is not None:
                if earlier.data == valid.data:
                    report.repeated.append(valid.path)
                else:
                    report.conflicts.append(f"{valid.path}: run {run_id} is also in {earlier.path} with other "
                                            "content; not merged")
                continue
            if target.exists():
                if _existing(target) == valid.data:
                    report.unchanged.append(target)
                else:
                    report.conflicts.append(f"{valid.path}: run {run_id} is already in {target} with other "
                                            "content; not merged (remove one of them to choose)")
                continue
            planned[run_id] = valid
    for run_id, valid in planned.items():
        report.copied.append(atomic_write_text(destination / f"{run_id}.json", valid.text))
    destination.mkdir(parents=True, exist_ok=True)
    report.leaderboard = write_leaderboard(destination, output, link_curves=link_curves)
    return report


__all__ = ["MergeReport", "merge_records"]
