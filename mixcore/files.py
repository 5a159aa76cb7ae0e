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
