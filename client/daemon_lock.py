"""One daemon per data directory: an OS lock (``flock``, :mod:`mixcore.lockfile`) on
``DIR/daemon.lock``, held for the daemon's lifetime.

Two daemons on one directory took turns on ``api.sock`` and pulled the same mailbox (each one
acknowledging, and so deleting, what the other had not stored). The lock is taken before the
store, the transport database or the socket is touched.
"""

from __future__ import annotations

from pathlib import Path

from client.errors import ClientError
from mixcore.lockfile import FileLock, LockHeld

LOCK_NAME = "daemon.lock"


class DaemonRunning(ClientError):
    """Another daemon holds this directory's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"PID {pid}" if pid else "another process"
        super().__init__(
            f"a daemon is already running on {data_dir} ({who}); use it, or stop it first"
        )
        self.pid = pid


def acquire(data_dir: Path) -> FileLock:
    try:
        return FileLock.acquire(data_dir / LOCK_NAME)
    except LockHeld as held:
        raise DaemonRunning(data_dir, held.pid) from None
