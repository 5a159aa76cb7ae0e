"""The ready file a running role writes for its launcher (``mixcore/ready.py``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mixcore.ready import READY_NAME, clear_ready, read_ready, ready_path, write_ready


def test_written_whole_private_and_removed(tmp_path: Path) -> None:
    path = ready_path(tmp_path)
    assert path == tmp_path / READY_NAME
    assert read_ready(path) is None  # not started yet
    write_ready(path, {"name": "mix1", "port": 4000})
    assert read_ready(path) == {"status": "serving", "name": "mix1", "port": 4000,
                                "pid": os.getpid()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [READY_NAME]  # no temporary file left
    clear_ready(path)
    clear_ready(path)  # twice is fine
    assert read_ready(path) is None


def test_a_torn_or_foreign_file_reads_as_not_ready(tmp_path: Path) -> None:
    path = ready_path(tmp_path)
    path.write_text('{"status": "serv')
    assert read_ready(path) is None
    path.write_text("[1, 2]")
    assert read_ready(path) is None
