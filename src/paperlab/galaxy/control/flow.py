"""Flow control per device connection: a token bucket for what comes in, a byte-bounded queue
for what goes out."""

from __future__ import annotations

import asyncio
import time

__all__ = ["RateLimit", "SendQueue"]


class RateLimit:
    """A token bucket: ``rate`` messages per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def charge(self, n: int) -> None:
        """Take ``n`` more tokens (the other messages of a BATCH): the budget counts messages,
        not frames. The bucket may go into debt; frames are dropped until it refills."""
        self.tokens -= n


class SendQueue:
    """Frames for one connection, in order, bounded in bytes: a frame counts from when it is
    queued until its send returned (so the writer's batch in flight counts too)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self.full = False
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def put(self, frame: str) -> bool:
        """Queue ``frame``; False (and nothing queued, now or later) once over the bound."""
        if self.full:
            return False
        self.bytes += len(frame)
        if self.bytes > self.limit:
            self.full = True
            return False
        self.queue.put_nowait(frame)
        return True

    def sent(self, frames: list[str]) -> None:
        self.bytes -= sum(map(len, frames))
        for _ in frames:
            self.queue.task_done()
