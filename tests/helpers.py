"""What many test modules share: readiness waits, the hang bound, a measured step, and the one
import scanner (docs/testing.md, "No test paces itself on the wall clock").

- :func:`wait_for` / :func:`wait_for_async` poll a predicate until it holds and hand back its
  value. Their timeout (:data:`HANG` unless told) only bounds a hung run: a test waits for a
  state, never for a time, so a loaded machine makes it slower and not red.
- :func:`measured_step` times a small fixed CPU job right now, for tests whose subject is wall
  time (real processes with epochs, a disappearing-message timer) to size those periods from
  how fast this machine is at the moment instead of from a constant.
- :func:`scan_imports` reads what a module imports without importing it (``ast``).

Test modules import this as ``helpers`` (``tests/conftest.py`` puts this folder on the path:
``--import-mode=importlib`` does not).
"""

from __future__ import annotations

import ast
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import trio

T = TypeVar("T")

#: Wall seconds after which a wait gives up: a bound on a hung run only, never the thing a test
#: measures (a loaded machine's steps may take many times an idle one's).
HANG = 600.0

#: Iterations of :func:`_fixed_job`: about 0.2 s on an idle core of the project's 2-core
#: machine (a third of a node interpreter's start with its imports).
STEP_ITERATIONS = 2_000_000


def _last(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 1000 else text[:1000] + "..."


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                          f"last value: {_last(last)}")


def wait_for(
    predicate: Callable[[], T],
    *,
    what: str,
    timeout: float = HANG,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and
    return that. Exceptions of the types in ``ignore`` count as "not yet" (a daemon between two
    states). After ``timeout`` wall seconds (a hang guard) it raises :class:`AssertionError`
    naming ``what`` and the last value (or exception) seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], Any],
    *,
    what: str,
    timeout: float = HANG,
    interval: float = 0.3,
    ignore: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], Awaitable[object]] | None = None,
) -> Any:
    """:func:`wait_for` in an event loop: ``predicate`` may return a value or an awaitable of
    one; between tries it awaits ``sleep(interval)`` (``trio.sleep`` unless told, e.g. a
    Textual pilot's ``pause``). The deadline is on the wall clock (``time.monotonic``), so it
    bounds a hang under a MockClock as well."""
    nap = trio.sleep if sleep is None else sleep
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        await nap(interval)


def _fixed_job(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def measured_step(repeats: int = 3) -> float:
    """Wall seconds this machine takes right now for a small fixed CPU job (the slowest of
    ``repeats`` runs; about 0.2 s on an idle core). On a loaded machine every step of a test
    (a process start, a hop, an upload) stretches by about the same factor, so a test sizes
    its epochs and timers as multiples of this, with a floor for an idle machine and a cap."""
    worst = 0.0
    for _ in range(repeats):
        began = time.perf_counter()
        _fixed_job(STEP_ITERATIONS)
        worst = max(worst, time.perf_counter() - began)
    return worst


# -- the import scanner -------------------------------------------------------------------------


@dataclass(frozen=True)
class Uses:
    """What one module imports (dotted names, absolute imports) and whether it calls the
    builtin ``open``."""

    modules: frozenset[str]
    calls_open: bool
    members: frozenset[str] = frozenset()
    """``package.name`` for each ``from package import name`` (a name may be a module)."""

    @property
    def roots(self) -> set[str]:
        return {name.split(".")[0] for name in self.modules}


@cache
def scan_imports(path: Path) -> Uses:
    """Read ``path`` with ``ast`` (nothing is imported or run) for its imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    members: set[str] = set()
    calls_open = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            members.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "open"
        ):
            calls_open = True
    return Uses(frozenset(names), calls_open, frozenset(members))
