"""One guard for a signal whose exception Python swallows.

A KeyboardInterrupt (or any exception a signal handler raises) that lands inside a finaliser
or a weakref callback is printed as "Exception ignored" and dropped, so a long job would carry
on as if never interrupted. :class:`SignalWatch` is also an event that every watched signal
sets: the job checks it at its own safe points (a query boundary, before committing output).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["SignalWatch"]


class SignalWatch(threading.Event):
    """Set by each of ``signums`` while installed (main thread only; elsewhere it stays unset).

    Args:
        signums: the signals to watch.
        raise_as: the exception the handler raises; None calls the handler that was installed
            before (Python's own raises KeyboardInterrupt), or raises KeyboardInterrupt when that
            one is not callable.
    """

    def __init__(self, *signums: signal.Signals, raise_as: type[BaseException] | None = None) -> None:
        super().__init__()
        self.signums = signums
        self.raise_as = raise_as
        self.previous: dict[signal.Signals, Any] = {}

    def install(self) -> SignalWatch:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signums:
                self.previous[signum] = signal.signal(signum, self._handler)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.set()
        if self.raise_as is not None:
            raise self.raise_as(f"signal {signum}")
        previous = self.previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt
