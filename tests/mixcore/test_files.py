"""Atomic replacement and owner-only checks shared by keys, configs, filters and stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mixcore.files import exposure, write_atomic


def test_write_atomic_replaces_whole_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"old contents, longer than the new ones")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    write_atomic(path, b"public", mode=0o644, durable=False)
    assert path.read_bytes() == b"public"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "replay.bloom"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["replay.bloom"]


def test_a_missing_folder_is_an_error_not_a_stray_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "absent" / "x", b"data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o601])
def test_exposure_names_the_mode_and_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    os.chmod(path, mode)
    message = exposure(path, path.stat(), "key file")
    assert message is not None
    assert f"mode {mode:04o}" in message and f"chmod 600 {path}" in message
    os.chmod(path, 0o600)
    assert exposure(path, path.stat(), "key file") is None
