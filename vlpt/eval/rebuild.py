"""Rebuilding an output folder's leaderboard from its records, safely while other shards still write records
(used by the harness when a suite ends, and by ``vlpt bench --slurm`` after its shard jobs).
"""
from __future__ import annotations

from pathlib import Path

from vlpt.paths import LEADERBOARD_DIR
from vlpt.results import write_leaderboard


def _records_state(directory: Path) -> frozenset:
    """Names, sizes and modification times of the record files in ``directory``."""
    state = set()
    for path in directory.glob("*.json") if directory.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:  # removed while listing
            continue
        state.add((path.name, stat.st_size, stat.st_mtime_ns))
    return frozenset(state)


def links_curves(output: Path) -> bool:
    """Whether ``output``'s web page links its runs' training curves: not the checkout's published
    ``leaderboard/``, whose logs are not committed."""
    return Path(output).resolve() != LEADERBOARD_DIR.resolve()


def rebuild_leaderboard(output: str | Path) -> list[Path]:
    """Rebuild ``output``'s leaderboard from its records until no record appeared during the rebuild.

    Shards call this as they end. A shard writes its records before it rebuilds, so a rebuild that
    saw the same records before and after writing has read every record of every shard that ended
    before it; the last shard to write therefore writes the complete leaderboard, without locks.
    """
    output = Path(output)
    records = output / "records"
    while True:
        before = _records_state(records)
        paths = write_leaderboard(records, output, link_curves=links_curves(output))
        if _records_state(records) == before:
            return paths


__all__ = ["rebuild_leaderboard"]
