"""Replay filter: detects repeats, survives save and load, refuses a corrupt file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mixnode.replay import ReplayFilter, ReplayFilterError


def test_repeat_is_detected() -> None:
    f = ReplayFilter(1000)
    tag = os.urandom(16)
    assert f.check_and_add(tag)
    assert not f.check_and_add(tag)
    assert f.check_and_add(os.urandom(16))
    assert f.inserted == 2


def test_false_positive_rate_is_near_the_configured_rate() -> None:
    f = ReplayFilter(20_000, fp_rate=0.01)
    for _ in range(20_000):
        f.check_and_add(os.urandom(16))
    false_positives = sum(os.urandom(16) in f for _ in range(20_000))
    assert false_positives < 20_000 * 0.03  # 1% configured; 3x margin for chance


def test_save_and_load_keep_every_tag(tmp_path: Path) -> None:
    f = ReplayFilter(5000)
    tags = [os.urandom(16) for _ in range(1000)]
    for tag in tags:
        f.check_and_add(tag)
    f.save(tmp_path / "replay.bin")
    loaded = ReplayFilter.load(tmp_path / "replay.bin")
    assert loaded.inserted == 1000
    assert not any(loaded.check_and_add(tag) for tag in tags)
    assert loaded.check_and_add(os.urandom(16))


def test_missing_or_corrupt_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayFilterError):
        ReplayFilter.load(tmp_path / "missing.bin")
    f = ReplayFilter(5000)
    f.save(tmp_path / "replay.bin")
    data = (tmp_path / "replay.bin").read_bytes()
    (tmp_path / "truncated.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReplayFilterError):
        ReplayFilter.load(tmp_path / "truncated.bin")
    (tmp_path / "garbage.bin").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ReplayFilterError):
        ReplayFilter.load(tmp_path / "garbage.bin")


def test_journal_survives_a_kill_between_saves(tmp_path: Path) -> None:
    path = tmp_path / "replay-3.bloom"
    first = ReplayFilter.open(path, 5000, 1e-6)
    saved = [os.urandom(16) for _ in range(50)]
    for tag in saved:
        first.check_and_add(tag)
    first.save(path)
    assert ReplayFilter.journal_path(path).stat().st_size == 0  # a save empties the journal
    unsaved = [os.urandom(16) for _ in range(50)]
    for tag in unsaved:
        first.check_and_add(tag)
    # No save, no close: as if SIGKILLed here. A new process opens the same files.
    second = ReplayFilter.open(path, 5000, 1e-6)
    assert not any(second.check_and_add(tag) for tag in saved + unsaved)
    assert second.inserted == 100
    first.close()
    second.close()


def test_journal_with_a_torn_last_tag_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "replay.bloom"
    f = ReplayFilter.open(path, 5000, 1e-6)
    tag = os.urandom(16)
    f.check_and_add(tag)
    f.close()
    with open(ReplayFilter.journal_path(path), "ab") as journal:
        journal.write(b"\x01\x02\x03")  # a write cut short
    again = ReplayFilter.open(path, 5000, 1e-6)
    assert tag in again
    again.close()
