"""A one-slot wake-up signal for the orchestrator's main loop."""

from __future__ import annotations

import asyncio

__all__ = ["Waker"]


class Waker:
    """Wakes the main loop early. (asyncio.wait_for around Event.wait can lose a
    cancellation on Python 3.11, which hung shutdown; a plain future with call_later cannot.)"""

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None
        self._pending = False

    def set(self) -> None:
        self._pending = True
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    async def wait(self, timeout: float) -> None:
        if self._pending:
            self._pending = False
            await asyncio.sleep(0)  # let the transport deliver more messages before a step
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._fut = fut

        def fire() -> None:
            if not fut.done():
                fut.set_result(None)

        handle = loop.call_later(timeout, fire)
        try:
            await fut
        finally:
            handle.cancel()
            self._fut = None
            self._pending = False
