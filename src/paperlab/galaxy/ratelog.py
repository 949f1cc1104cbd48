"""Log lines at a bounded rate: one line per key per interval, then how many were suppressed.

A hostile or broken peer can make the same event happen thousands of times a second (refused
handshakes, forged results, a device agent retrying a dead address); the log must say so
without becoming the flood. Shared by every room (it imports nothing of galaxy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Wraps a logger: ``warning(key, msg, *args)`` logs at most once per ``interval``
    seconds per ``key``; the next line that gets through says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 5.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.interval, self.max_keys, self.clock = logger, interval, max_keys, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: Any) -> bool:
        """Log unless ``key`` logged within ``interval``; True if the line was written."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if len(self._last) >= self.max_keys and key not in self._last:  # bounded memory
            self._last.clear()
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        if n:
            msg += " (%d similar lines suppressed in the last %.0fs)"
            args = (*args, n, self.interval)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, key, msg, *args)
