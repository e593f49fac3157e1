"""A folder of run records, one ``<run_id>.json`` file per run, written atomically.

Writers write to a private temporary name (:func:`writer_temp_path`: ``.<name>.<pid>.<random>.tmp``)
and rename it into place, so a killed writer leaves at most such a file, which no reader takes for a
record; ``remove_stale_temp_files`` removes the ones whose writer is gone.
"""
from __future__ import annotations

import json
import contextlib
import os
import re
import time
import uuid
import warnings
from pathlib import Path

from vlpt.errors import ConfigError
from vlpt.results.record import RunIdentity, RunRecord

#: a temporary file whose writer process is not running here is removed once this old (seconds): a
#: writer on another machine sharing the folder has a process id unknown here, but finishes in far less
DEAD_WRITER_GRACE_S = 60.0
#: a temporary file this old is removed whoever wrote it (a write takes seconds at most)
STALE_TEMP_AGE_S = 3600.0
_TEMP_NAME = re.compile(r"^\..+\.tmp$")
_WRITER_PID = re.compile(r"\.(\d+)\.[0-9a-f]{8}\.tmp$")


def writer_temp_path(path: Path) -> Path:
    """A name beside ``path`` that no other writer uses (process id and a random part): write there, then
    rename over ``path``, so readers and concurrent writers never see a partial file or folder."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


class RecordWarning(UserWarning):
    """A file in a records folder could not be read as a run record and was skipped."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The text goes to a temporary file of this writer in the same folder (``writer_temp_path``), is
    flushed and fsynced, then renamed over ``path`` with ``os.replace``; the temporary file is removed
    on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = writer_temp_path(path)
    try:
        with open(tmp_name, "x", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
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


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(folder: str | Path, now: float | None = None) -> list[Path]:
    """Remove the temporary files (``.<name>...tmp``) that killed writers left in ``folder``: those whose
    writer process is not running on this machine and that are older than ``DEAD_WRITER_GRACE_S``, and
    any older than ``STALE_TEMP_AGE_S``. Returns the removed paths."""
    folder = Path(folder)
    now = time.time() if now is None else now
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not _TEMP_NAME.match(path.name):
            continue
        try:
            stat = path.stat()
        except OSError:  # renamed into place meanwhile
            continue
        age = now - stat.st_mtime
        writer = _WRITER_PID.search(path.name)
        dead = writer is not None and not _process_running(int(writer.group(1)))
        if not path.is_file() or not (age > STALE_TEMP_AGE_S or (dead and age > DEAD_WRITER_GRACE_S)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


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

    def set_aside(self, path: str | Path) -> Path:
        """Rename an unreadable record file to ``<name>.corrupt`` (``.corrupt-2``, ... if taken), out of the
        records' way but kept; returns the new path."""
        path = Path(path)
        aside, number = path.with_name(f"{path.name}.corrupt"), 1
        while aside.exists():
            number += 1
            aside = path.with_name(f"{path.name}.corrupt-{number}")
        os.rename(path, aside)
        return aside

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


__all__ = ["RecordStore", "RecordWarning", "atomic_write_text", "remove_stale_temp_files"]
