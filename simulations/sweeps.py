"""Running a sweep's points in parallel: a local process pool, or a Dask distributed cluster.

Every point is one ``SimConfig`` whose seeds come from its own ``seed`` field, so where a point
runs changes nothing in its numbers: serial, a process pool and a Dask cluster give identical
results (``tests/simulations/test_sweeps.py``). A point travels as the scenario's name and a
plain dict of parameters, and comes back as the scenario's JSON object and its curve.

Dask (``distributed``) rather than Ray: a sweep is a handful of independent, CPU-bound tasks of
seconds to minutes, which is exactly ``Client.map``; Dask's scheduler is pure Python, installs
from PyPI with no native server, and starts in-process for tests (``LocalCluster``). Ray brings
a C++ runtime and an object store that a few dozen tasks do not need (docs/decisions.md).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from mixcore.errors import MixnetError
from simulations.config import SimConfig
from simulations.scenarios import HIDDEN, SCENARIOS, Outcome

Point = tuple[str, dict[str, Any]]


def run_point(point: Point) -> Outcome:
    """Run one sweep point (top-level, so a process pool or a Dask worker can call it)."""
    name, params = point
    return {**SCENARIOS, **HIDDEN}[name](SimConfig(**params))


def run_points(points: list[Point], *, jobs: int | None = None, client: Any = None,
               progress: Callable[[], None] | None = None) -> list[Outcome]:
    """The points' outcomes, in order. ``client``: a Dask client (``connect``); otherwise
    ``jobs`` local processes (default: one per CPU, at most one per point; 1: in this process)."""
    if client is not None:
        return _on_dask(points, client, progress)
    workers = min(jobs or os.cpu_count() or 1, len(points))
    if workers <= 1:
        out = []
        for p in points:
            out.append(run_point(p))
            if progress:
                progress()
        return out
    results: dict[int, Outcome] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_point, p): i for i, p in enumerate(points)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            if progress:
                progress()
    return [results[i] for i in range(len(points))]


#: Seconds to reach a Dask scheduler before giving up with a one-line error.
CONNECT_TIMEOUT = 10.0


def connect(address: str | None) -> Any:
    """A Dask client for ``address`` (None: no cluster), or a one-line error."""
    if not address:
        return None
    # Imported here: distributed is only needed when a cluster is named.
    from distributed import Client  # noqa: PLC0415

    try:
        # distributed publishes types, but Client.__init__ is not annotated.
        return Client(  # type: ignore[no-untyped-call]
            address, set_as_default=False, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise MixnetError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def _on_dask(points: list[Point], client: Any,
             progress: Callable[[], None] | None) -> list[Outcome]:
    futures = client.map(run_point, points, pure=False)
    out = []
    for fut in futures:
        out.append(fut.result())
        if progress:
            progress()
    return out


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar figures of a result as ``metric.stat`` columns (lists and nested lists skipped)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, bool | int | float | str) or value is None:
            out[name] = value
    return out


def write_table(path: Path | str, param: str, rows: Iterable[dict[str, Any]]) -> int:
    """A tidy CSV: one row per sweep value, one column per parameter and figure."""
    flat = [{"param": param, **flatten(r)} for r in rows]
    columns: list[str] = []
    for row in flat:
        for key in row:
            if key not in columns:
                columns.append(key)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in flat:
            writer.writerow(row)
    return len(flat)
