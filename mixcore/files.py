"""Files every role writes or guards the same way: atomic replacement and owner-only checks.

Keys, configs, replay filters and statistics files are all replaced whole: a reader (or a restart
after a crash) sees the old file or the new one, never a torn one, and a failed write leaves no
temporary file behind. Private files (keys, the client's store) are refused when other users may
read them, as OpenSSH does, with the command that fixes it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` (temp file in the same folder, then rename).

    The file never exists with looser permissions than ``mode`` (mkstemp creates it 0600).
    ``durable`` fsyncs before the rename, for files that must survive a power cut (keys, replay
    filters, configs); statistics rewritten every second skip it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exposure(path: Path, st: os.stat_result, what: str) -> str | None:
    """Why ``path`` must not be used if group or others have any access to it, else None."""
    if not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    return (
        f"{what} {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o});"
        f" refusing to use it. Fix: chmod 600 {path}"
    )


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) as 0700, and tighten it if it exists looser."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
        path.chmod(0o700)
    return path


#: Files SQLite keeps beside a database in WAL mode; they hold recent pages in the clear.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists with mode 0600 (created so, never looser for an instant).

    For a SQLite database call it before connecting: SQLite gives its ``-wal`` and ``-shm``
    files the database file's mode, so they are 0600 too. Side files left looser by an older
    version are tightened here as well.
    """
    path = Path(path)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.chmod(0o600)
    return path
