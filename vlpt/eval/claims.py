"""Claims: which process does a piece of work when several `vlpt bench` processes share one output folder.

A process claims a run (or a GRAM initialisation) by holding an exclusive ``fcntl.flock`` on
``<output>/claims/<name>.lock`` while it does the work. The kernel drops the lock when the holder
closes the file or ends in any way, SIGKILL included, so a claim is never stale and no process has
to guess whether another is still alive. The lock files stay behind and are harmless: an unlocked
file claims nothing. The holder writes its process id and host into the file, for messages only.

Locks are taken on separate open files, so two claims of one name conflict even inside one process;
a ``ClaimFolder`` refuses to claim a name it already holds instead of waiting for itself. flock
works between processes of one machine on any local file system; on a shared file system (NFS)
Linux maps it to POSIX record locks, which work across machines where the server supports them.
A forked child (a DataLoader worker) would share the lock and keep it after its parent releases it,
so children close their copies of every held claim file as they start.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

#: file descriptors of the claims this process holds (closed in forked children)
_HELD_FDS: set[int] = set()


def _close_claims_in_child() -> None:
    """In a forked child: close its copies of the parent's claim files, so the parent's release frees them."""
    for fd in _HELD_FDS:
        with contextlib.suppress(OSError):  # already closed in this child
            os.close(fd)
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_claims_in_child)


class Claim:
    """An exclusive lock on one claim file, held until ``release`` (or the end of a ``with`` block)."""

    def __init__(self, folder: "ClaimFolder", name: str, fd: int):
        self.folder, self.name, self._fd = folder, name, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (closing the file drops it); a second call does nothing."""
        if self._fd is None:
            return
        self.folder._held.discard(self.name)
        fd, self._fd = self._fd, None
        _HELD_FDS.discard(fd)
        os.close(fd)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ClaimFolder:
    """Claim files ``<folder>/<name>.lock`` (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._held: set[str] = set()

    def path_for(self, name: str) -> Path:
        return self.folder / f"{name}.lock"

    def try_claim(self, name: str) -> Claim | None:
        """Claim ``name`` if no other process holds it; None when one does."""
        return self._lock(name, blocking=False)

    def claim(self, name: str) -> Claim:
        """Claim ``name``, waiting for the process that holds it to release it (or to end)."""
        return self._lock(name, blocking=True)

    def holder(self, name: str) -> str:
        """Who holds (or last held) the claim, as its holder wrote it: "pid PID on HOST", or "" if unknown."""
        try:
            return self.path_for(name).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return ""

    def _lock(self, name: str, blocking: bool) -> Claim | None:
        if name in self._held:
            raise RuntimeError(f"this process already holds the claim {self.path_for(name)}")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path_for(name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if not blocking and exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        except BaseException:  # interrupted while waiting
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._held.add(name)
        _HELD_FDS.add(fd)
        return Claim(self, name, fd)


__all__ = ["Claim", "ClaimFolder"]
