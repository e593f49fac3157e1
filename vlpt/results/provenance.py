"""Where a leaderboard row's numbers come from: git commits, config hashes and library versions of its records."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from vlpt.results.record import RunRecord

#: config keys left out of the config hash: the seed is part of the run's identity, not of its settings
_IGNORED_KEYS = frozenset({"seed"})


def _without_seed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_seed(v) for k, v in value.items() if k not in _IGNORED_KEYS}
    if isinstance(value, list):
        return [_without_seed(v) for v in value]
    return value


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of the sha256 of the resolved config's canonical JSON, every ``seed`` key left out
    (at any depth), so the seeds of one setting share a hash."""
    canonical = json.dumps(_without_seed(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Provenance:
    """The distinct commits, config hashes and library versions of a row's records, in seed order."""

    run_ids: tuple[str, ...]
    commits: tuple[str, ...]  # full hash, "+dirty" appended for uncommitted changes, "unknown" without git
    config_hashes: tuple[str, ...]
    versions: tuple[tuple[str, tuple[str, ...]], ...]  # (library, its distinct versions), by library name

    @property
    def agrees(self) -> bool:
        """True when every record has the same commit, config hash and library versions."""
        return len(self.commits) <= 1 and len(self.config_hashes) <= 1 and all(
            len(found) == 1 for _, found in self.versions
        )


def _distinct(values) -> tuple:
    return tuple(dict.fromkeys(values))


def provenance(records: list[RunRecord]) -> Provenance:
    """The provenance of the records of one row (ordered by seed, as ``aggregate`` keeps them)."""

    def commit(record: RunRecord) -> str:
        if record.git_commit is None:
            return "unknown"
        return record.git_commit + ("+dirty" if record.git_dirty else "")

    libraries = sorted({name for r in records for name in r.library_versions})
    return Provenance(
        run_ids=tuple(r.run_id for r in records),
        commits=_distinct(commit(r) for r in records),
        config_hashes=_distinct(config_hash(r.config) for r in records),
        versions=tuple(
            (name, _distinct(r.library_versions.get(name, "missing") for r in records)) for name in libraries
        ),
    )


__all__ = ["Provenance", "config_hash", "provenance"]
