"""One live service per (state dir, host): an exclusive ``flock`` taken before restart recovery.

Recovery fails the jobs this host was running and re-queues the queued ones, which is right only
if no other live service on this host uses the same state dir: a second ``serve`` started by
mistake would otherwise fail the first one's running jobs and claim its queue. Replicas on other
hosts (pods sharing a ReadWriteMany state volume) have their own lock file: they tell their jobs
apart by host name and heartbeats, see ``store.py``.

The lock is held by an open file descriptor, so it goes away with the process, however it ends.
Within one process the lock is re-entrant (the CLI takes it before building the app, whose
start-up takes it again).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from pathlib import Path


class StateDirBusy(RuntimeError):
    """Another live process on this host owns the state dir."""


_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, users)
_guard = threading.Lock()


def lock_path(state_dir: Path, owner: str | None = None) -> Path:
    return Path(state_dir) / f"serve-{owner or socket.gethostname()}.lock"


def acquire(state_dir: Path, owner: str | None = None) -> Path:
    """Take the lock (or raise ``StateDirBusy`` naming the pid that holds it); returns its path."""
    path = lock_path(state_dir, owner)
    key = str(path.resolve())
    with _guard:
        if key in _held:
            fd, users = _held[key]
            _held[key] = (fd, users + 1)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(f"state dir {Path(state_dir)} is in use by pid {holder} on this host "
                               f"(lock {path.name}); stop that service or use another --state-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = (fd, 1)
    return path


def release(state_dir: Path, owner: str | None = None) -> None:
    path = lock_path(state_dir, owner)
    key = str(path.resolve())
    with _guard:
        if key not in _held:
            return
        fd, users = _held[key]
        if users > 1:
            _held[key] = (fd, users - 1)
            return
        del _held[key]
        os.close(fd)  # closing the descriptor releases the flock
