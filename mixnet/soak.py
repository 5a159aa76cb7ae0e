"""The soak rule: does a process's memory, descriptor count or database grow without bound?

``mixnet testnet --soak`` samples every process once a minute while the traffic is steady and
hands the numbers to :class:`Soak`; this module decides. The rule is sans-IO (times and values
in, a verdict out) so that it is tested on made-up series; :func:`read_usage` is the one reader
of ``/proc`` and file sizes, kept apart from it.

The rule, per series (one process, one resource):

1. Drop the warm-up: samples before ``warmup_s`` (caches fill, the WAL reaches its checkpoint
   size, the first epochs' keys arrive; a step there is not a leak).
2. Fit a least-squares line to the *second half* of what is left. A leak is a trend that is
   still there late in the run; a plateau reached in the first half is not one.
3. Project the slope over ``horizon_s`` (an hour by default) and fail if the projected growth
   exceeds both ``relative`` times the series' level (the median of that half) and the
   resource's absolute floor (:data:`FLOORS`: a few file descriptors or a few MiB of growth an
   hour say nothing about a 30-minute run), *and* the slope is ``significance`` standard errors
   above 0 (descriptor counts swing by a handful as links and HTTP requests come and go; over a
   dozen samples such a swing can look like a steep line that the fit's own residuals show is
   noise).

A series with fewer than ``min_points`` samples in that half is reported, not judged: the run
was too short to tell. Noise averages out in the fit; a flat noisy series has a slope near 0.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024

#: Growth per ``horizon_s`` that is never called a leak, by resource kind (the part of the
#: resource's name before ``:``).
FLOORS: dict[str, float] = {"rss_bytes": 16 * MIB, "fds": 16.0, "db_bytes": 4 * MIB}

#: File names whose sizes are sampled: SQLite databases and their write-ahead logs.
DB_SUFFIXES = (".db", ".sqlite3", ".sqlite", ".db-wal", ".sqlite3-wal", ".sqlite-wal")


@dataclass(frozen=True, slots=True)
class Rule:
    warmup_s: float
    horizon_s: float = 3600.0
    relative: float = 0.5
    """Growth over ``horizon_s`` allowed, as a share of the level."""
    min_points: int = 4
    significance: float = 3.0
    """How many standard errors of the fitted slope it must stand above 0 to count."""
    floors: Mapping[str, float] = field(default_factory=lambda: dict(FLOORS))

    def floor(self, resource: str) -> float:
        return self.floors.get(resource.split(":", 1)[0], 0.0)


@dataclass(frozen=True, slots=True)
class SeriesVerdict:
    process: str
    resource: str
    start: float
    end: float
    level: float
    slope_per_h: float | None
    limit_per_h: float | None
    points: int
    ok: bool
    judged: bool

    def text(self) -> str:
        if not self.judged:
            return (f"{self.process} {self.resource}: {self.points} samples after the warm-up's "
                    "second half, too few to judge")
        state = "ok" if self.ok else "GROWS WITHOUT BOUND"
        return (f"{self.process} {self.resource}: {state}: {_fmt(self.resource, self.start)} -> "
                f"{_fmt(self.resource, self.end)}, trend {_fmt(self.resource, self.slope_per_h)}"
                f"/h (limit {_fmt(self.resource, self.limit_per_h)}/h)")

    def to_dict(self) -> dict[str, object]:
        return {"process": self.process, "resource": self.resource, "start": self.start,
                "end": self.end, "level": self.level, "slope_per_h": self.slope_per_h,
                "limit_per_h": self.limit_per_h, "points": self.points, "ok": self.ok,
                "judged": self.judged}


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    series: tuple[SeriesVerdict, ...]

    @property
    def failures(self) -> tuple[SeriesVerdict, ...]:
        return tuple(s for s in self.series if not s.ok)

    def text(self) -> str:
        if self.ok:
            judged = sum(s.judged for s in self.series)
            return f"soak OK: {judged} of {len(self.series)} series judged, none grows"
        return "soak FAILED: " + "; ".join(s.text() for s in self.failures)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``value`` over ``t`` (per second); 0 for a single instant."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def slope_error(points: list[tuple[float, float]], fitted: float) -> float:
    """Standard error of the least-squares slope (0 for a perfect line or < 3 points)."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if n < 3 or var == 0:
        return 0.0
    residuals = sum((v - mean_v - fitted * (t - mean_t)) ** 2 for t, v in points)
    return float(math.sqrt(residuals / (n - 2) / var))


def judge(process: str, resource: str, points: list[tuple[float, float]],
          rule: Rule) -> SeriesVerdict:
    """One series against the rule (see the module's docstring); ``t`` counts from the start."""
    if not points:
        raise ValueError("a series needs at least one sample")
    points = sorted(points)
    after = [p for p in points if p[0] >= rule.warmup_s]
    late = after[len(after) // 2:]
    start, end = points[0][1], points[-1][1]
    if len(late) < rule.min_points:
        return SeriesVerdict(process, resource, start, end, end, None, None, len(late),
                             ok=True, judged=False)
    level = statistics.median(v for _, v in late)
    fitted = slope(late)
    per_h = fitted * 3600.0
    limit = max(rule.relative * level, rule.floor(resource)) * 3600.0 / rule.horizon_s
    significant = fitted > rule.significance * slope_error(late, fitted)
    return SeriesVerdict(process, resource, start, end, level, per_h, limit, len(late),
                         ok=not (per_h > limit and significant), judged=True)


class Soak:
    """Samples in (``add``), a verdict out (``verdict``). A resource that appears late (a WAL
    created mid-run) is a series from its first sample."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.series: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def add(self, t: float, process: str, values: Mapping[str, float]) -> None:
        for resource, value in values.items():
            if not value >= 0:  # negative or NaN: a broken reader, not a sample
                raise ValueError(f"{process} {resource}: bad sample {value!r}")
            self.series.setdefault((process, resource), []).append((t, float(value)))

    def verdict(self) -> Verdict:
        judged = tuple(judge(p, r, pts, self.rule) for (p, r), pts in sorted(self.series.items()))
        return Verdict(all(s.ok for s in judged), judged)


def _fmt(resource: str, value: float | None) -> str:
    if value is None:
        return "-"
    if resource.startswith(("rss_bytes", "db_bytes")):
        return f"{value / MIB:.1f} MiB"
    return f"{value:.1f}"


# -- the reader (I/O): /proc and file sizes, nothing else ------------------------------------


def children(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """Direct child processes of ``pid`` (hop workers), by their parent field in /proc."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def read_usage(pid: int, data_dirs: Iterable[Path] = (), proc: Path = Path("/proc"),
               ) -> dict[str, float]:
    """RSS (VmRSS), open descriptors and the size of each database file under ``data_dirs``
    (named ``db_bytes:FILE``). Raises ``ProcessLookupError`` when ``pid`` is gone."""
    base = proc / str(pid)
    try:
        status = (base / "status").read_text()
        fds = len(os.listdir(base / "fd"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                if line.startswith("VmRSS:")), 0)
    usage: dict[str, float] = {"rss_bytes": float(rss), "fds": float(fds)}
    for root in data_dirs:
        for path in sorted(root.rglob("*")):
            if path.name.endswith(DB_SUFFIXES) and path.is_file():
                usage[f"db_bytes:{path.relative_to(root)}"] = float(path.stat().st_size)
    return usage


def sample_network(processes: Iterable[tuple[str, int, Path]]) -> dict[str, dict[str, float]]:
    """Usage of each ``(name, pid, data_dir)`` and of its child processes (``NAME/workerK``,
    by PID order); a process that is gone is left out of this sample."""
    out: dict[str, dict[str, float]] = {}
    for name, pid, data_dir in processes:
        try:
            out[name] = read_usage(pid, [data_dir])
            for k, child in enumerate(children(pid), start=1):
                out[f"{name}/worker{k}"] = read_usage(child)
        except ProcessLookupError:
            continue
    return out


def brief(usage: Mapping[str, dict[str, float]]) -> str:
    """One line for a sample: ``NAME RSS/FDS/DB`` per process, DB the sum of its files."""
    parts = []
    for name, values in usage.items():
        db = sum(v for k, v in values.items() if k.startswith("db_bytes"))
        parts.append(f"{name} {values['rss_bytes'] / MIB:.0f}M/{values['fds']:.0f}fd"
                     f"/{db / MIB:.1f}M")
    return ", ".join(parts)
