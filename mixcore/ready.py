"""The ready file: how a running role tells whoever started it that it serves.

Every role's ``run`` (authority, mix node, provider, client daemon) writes ``ready.json`` in its
data directory once it serves, with what a launcher needs to know of it (its port, a client's
address, its PID); a clean stop removes it. A launcher (``mixnet.network``) removes a stale one
before it starts the process and waits for the file, instead of searching the process's
output for a word meant for people. The file is replaced whole (:func:`write_atomic`): a
reader sees no file or the complete one, never half of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixcore.files import write_atomic

READY_NAME = "ready.json"


def ready_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the role whose data directory is ``data_dir`` writes its ready file."""
    return Path(data_dir) / READY_NAME


def write_ready(path: str | os.PathLike[str], info: Mapping[str, Any]) -> None:
    """Say "serving": ``info`` (JSON-able) and this process's PID, written atomically."""
    data = {"status": "serving", **info, "pid": os.getpid()}
    write_atomic(path, (json.dumps(data) + "\n").encode(), durable=False)


def read_ready(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ready file's object, or None while there is none (not started, or stopped)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clear_ready(path: str | os.PathLike[str]) -> None:
    """Remove the ready file (before a start, so an old one cannot pass for this run's; and at
    a clean stop)."""
    Path(path).unlink(missing_ok=True)
