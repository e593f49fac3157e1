"""A folder of run records, one ``<run_id>.json`` file per run, written atomically."""
from __future__ import annotations

import json
import contextlib
import os
import tempfile
import warnings
from pathlib import Path

from vlpt.errors import ConfigError
from vlpt.results.record import RunIdentity, RunRecord


class RecordWarning(UserWarning):
    """A file in a records folder could not be read as a run record and was skipped."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The text goes to a temporary file in the same folder, is flushed and fsynced,
    then renamed over ``path`` with ``os.replace``; the temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable where the platform allows opening folders (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a folder
            os.fsync(fd)
    finally:
        os.close(fd)


class RecordStore:
    """Run records stored flat as ``<directory>/<run_id>.json``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path_for(self, identity: RunIdentity) -> Path:
        return self.directory / f"{identity.run_id}.json"

    def has(self, identity: RunIdentity) -> bool:
        """Whether a record file exists for this identity (the harness skips such runs)."""
        return self.path_for(identity).is_file()

    def write(self, record: RunRecord) -> Path:
        """Write (or replace) the record's file atomically; returns its path."""
        return atomic_write_text(self.path_for(record.identity), record.to_json())

    def read(self, path: str | Path) -> RunRecord:
        """Load one record file; unreadable or invalid content raises ConfigError naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"run record {path} cannot be read as JSON: {exc}") from exc
        record = RunRecord.from_dict(data, source=path)
        if path.name != f"{record.run_id}.json":
            raise ConfigError(
                f"run record {path}: file name does not match its run_id {record.run_id!r} "
                f"(expected {record.run_id}.json)"
            )
        return record

    def get(self, identity: RunIdentity) -> RunRecord | None:
        """The stored record of ``identity``, or None when there is none."""
        path = self.path_for(identity)
        return self.read(path) if path.is_file() else None

    def records(self) -> list[RunRecord]:
        """All valid records, sorted by identity; unreadable files are skipped with a RecordWarning."""
        found = []
        paths = sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []
        for path in paths:
            try:
                found.append(self.read(path))
            except ConfigError as exc:
                warnings.warn(f"skipped: {exc}", RecordWarning, stacklevel=2)
        return sorted(found, key=_sort_key)


def _sort_key(record: RunRecord):
    i = record.identity
    return (i.protocol, i.backbone, i.dataset, i.shots, i.method, i.variant, i.targets, i.seed, record.run_id)


__all__ = ["RecordStore", "RecordWarning", "atomic_write_text"]
