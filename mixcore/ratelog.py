"""One log line per kind of refusal, at most once per interval: refusals are counted, not logged.

A server that refuses or aborts a request under attack must not write a line (let alone a
traceback) per request: the log would grow at the attacker's rate and name who was refused
when, which is metadata. :class:`RateLimitedLog` writes the first occurrence of each ``kind``,
then at most one line per ``interval`` seconds saying how many were suppressed. Time is
injected, so tests run on any clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Kind:
    last: float
    suppressed: int = 0


class RateLimitedLog:
    """Log ``message`` for ``kind`` at most once per ``interval`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        now: Callable[[], float] = time.monotonic,
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.now = now
        self.level = level
        self._kinds: dict[str, _Kind] = {}

    def __call__(self, kind: str, message: str) -> bool:
        """Log now if ``kind`` was quiet for ``interval``; True when a line was written."""
        t = self.now()
        state = self._kinds.get(kind)
        if state is not None and t - state.last < self.interval:
            state.suppressed += 1
            return False
        suppressed = state.suppressed if state is not None else 0
        self._kinds[kind] = _Kind(last=t)
        if suppressed:
            message = f"{message} ({suppressed} more like it in the last {self.interval:.0f} s)"
        self.logger.log(self.level, "%s", message)
        return True
