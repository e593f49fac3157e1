"""A benchmark's results file, ``benchmarks/results/NAME.json``: earlier entries kept, each new one replacing the
entry with its key."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def merge_results(path: Path, new: list[dict], key: Callable[[dict], tuple]) -> list[dict]:
    """The entries stored at ``path`` with every entry of ``new`` replacing the one of the same ``key``, sorted
    by key, written back (atomically) and returned."""
    from vlpt.results import atomic_write_text

    entries = json.loads(path.read_text()) if path.is_file() else []
    for entry in new:
        entries = [e for e in entries if key(e) != key(entry)] + [entry]
    entries.sort(key=key)
    atomic_write_text(path, json.dumps(entries, indent=2) + "\n")
    return entries
