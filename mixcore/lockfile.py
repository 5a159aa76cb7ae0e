"""An exclusive, process-lifetime lock on a file (``flock``): one daemon per client directory,
one launcher per testnet directory.

The kernel drops the lock when the holder exits however it exits (SIGKILL included), so a stale
file never blocks a restart; the PID written inside is only there to name the holder in the
error a second process prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mixcore.errors import MixnetError


class LockHeld(MixnetError):
    """Another process holds the lock; ``pid`` names it when it could be read."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"{path} is held by {who}")
        self.path = path
        self.pid = pid


class FileLock:
    """A held lock; :meth:`release` (or the process's exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> FileLock:
        """Take the lock now or raise :class:`LockHeld` (never waits)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockHeld(path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
