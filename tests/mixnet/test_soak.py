"""The soak rule on made-up series (a leak fails; noise, a warm-up step and a plateau pass) and
its reader on this test's own process."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mixnet.soak import MIB, Rule, Soak, judge, read_usage, sample_network, slope

MINUTE = 60.0
RULE = Rule(warmup_s=6 * MINUTE)  # a 30-minute run: 20% warm-up


def minutes(values: list[float]) -> list[tuple[float, float]]:
    return [(i * MINUTE, v) for i, v in enumerate(values)]


def test_slope_of_a_line_is_its_gradient() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(5, 7)]) == 0.0


def test_a_leaking_rss_fails_and_names_the_process_and_resource() -> None:
    soak = Soak(RULE)
    rng = random.Random(1)
    for i in range(31):  # 60 MiB growing 1 MiB a minute, with noise
        soak.add(i * MINUTE, "mix1-1", {"rss_bytes": (60 + i + rng.uniform(-2, 2)) * MIB})
        soak.add(i * MINUTE, "mix1-2", {"rss_bytes": (60 + rng.uniform(-2, 2)) * MIB})
    verdict = soak.verdict()
    assert not verdict.ok
    assert [(f.process, f.resource) for f in verdict.failures] == [("mix1-1", "rss_bytes")]
    assert "mix1-1 rss_bytes: GROWS WITHOUT BOUND" in verdict.text()
    assert "mix1-2" not in verdict.text()


def test_a_flat_noisy_series_passes() -> None:
    rng = random.Random(2)
    for seed in range(20):
        rng.seed(seed)
        points = minutes([80 * MIB + rng.gauss(0, 3 * MIB) for _ in range(31)])
        assert judge("p", "rss_bytes", points, RULE).ok, seed


def test_a_warm_up_step_then_a_plateau_passes() -> None:
    # RSS jumps from 40 to 90 MiB in the first minutes (caches, keys), then stays.
    values = [40.0, 60.0, 85.0, 90.0, 90.0, 91.0] + [90.0 + (i % 3) * 0.5 for i in range(25)]
    verdict = judge("provider1", "rss_bytes", minutes([v * MIB for v in values]), RULE)
    assert verdict.judged and verdict.ok
    assert verdict.start == 40 * MIB


def test_a_wal_that_reaches_its_checkpoint_size_in_the_first_half_passes() -> None:
    values = [min(i * 0.5, 4.0) * MIB for i in range(31)]  # grows to 4 MiB by minute 8
    assert judge("provider1", "db_bytes:mailbox.db-wal", minutes(values), RULE).ok


def test_a_growing_database_fails_but_a_few_kib_an_hour_does_not() -> None:
    growing = minutes([(1 + i * 0.2) * MIB for i in range(31)])  # 12 MiB an hour
    assert not judge("authority1", "db_bytes:directory.db", growing, RULE).ok
    creeping = minutes([1 * MIB + i * 4096 for i in range(31)])  # 240 KiB an hour
    assert judge("authority1", "db_bytes:directory.db", creeping, RULE).ok


def test_one_more_descriptor_now_and_then_is_no_leak_but_one_a_minute_is() -> None:
    assert judge("c", "fds", minutes([20 + (i > 20) for i in range(31)]), RULE).ok
    assert not judge("c", "fds", minutes([20 + i for i in range(31)]), RULE).ok


def test_descriptors_swinging_with_connections_are_noise_not_a_trend() -> None:
    # 20-30 descriptors at random: the late half's fitted slope may be steep, never significant.
    rng = random.Random(3)
    for _ in range(50):
        series = minutes([float(rng.randint(20, 30)) for _ in range(31)])
        assert judge("auth1", "fds", series, RULE).ok
    # The same swing on top of one more descriptor a minute is a leak.
    leak = minutes([float(rng.randint(20, 30) + i) for i in range(31)])
    assert not judge("auth1", "fds", leak, RULE).ok


def test_a_short_run_is_reported_not_judged() -> None:
    verdict = judge("m", "rss_bytes", minutes([1 * MIB, 50 * MIB, 100 * MIB]), RULE)
    assert verdict.ok and not verdict.judged
    assert "too few to judge" in verdict.text()


def test_bad_samples_are_refused() -> None:
    soak = Soak(RULE)
    with pytest.raises(ValueError, match="bad sample"):
        soak.add(0, "m", {"rss_bytes": -1})
    with pytest.raises(ValueError, match="bad sample"):
        soak.add(0, "m", {"fds": float("nan")})
    with pytest.raises(ValueError, match="at least one"):
        judge("m", "fds", [], RULE)


def test_the_reader_sees_this_process_its_descriptors_and_databases(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "store.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("INSERT INTO t VALUES (?)", (os.urandom(50_000),))
    db.commit()
    (tmp_path / "notes.txt").write_text("not a database")
    before = read_usage(os.getpid(), [tmp_path])
    extra = [open(tmp_path / "notes.txt") for _ in range(5)]  # noqa: SIM115
    try:
        after = read_usage(os.getpid(), [tmp_path])
    finally:
        for f in extra:
            f.close()
        db.close()
    assert after["fds"] == before["fds"] + 5
    assert before["rss_bytes"] > MIB
    assert before["db_bytes:store.db-wal"] > 50_000
    assert "db_bytes:store.db" in before
    assert not any("notes" in k for k in before)


def test_sampling_a_network_names_children_and_skips_the_dead(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('up', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "up\n"
        usage = sample_network([("node", parent.pid, tmp_path), ("gone", dead.pid, tmp_path)])
    finally:
        for pid in [int(p) for p in _children_of(parent.pid)]:
            os.kill(pid, 9)
        parent.kill()
        parent.wait()
    assert sorted(usage) == ["node", "node/worker1"]
    assert usage["node/worker1"]["rss_bytes"] > 0


def _children_of(pid: int) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(entry.name)
    return out
