"""paperlab.interrupts.SignalWatch with real signals sent to this process."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from paperlab.interrupts import SignalWatch


class Boom(Exception):
    pass


def test_watch_sets_raises_and_restores() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    watch = SignalWatch(signal.SIGUSR1, raise_as=Boom).install()
    with pytest.raises(Boom, match="signal"):
        os.kill(os.getpid(), signal.SIGUSR1)
    assert watch.is_set()
    watch.restore()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_watch_calls_the_handler_it_replaced() -> None:
    seen: list[int] = []

    def earlier(signum: int, frame: Any) -> None:
        seen.append(signum)

    old = signal.signal(signal.SIGUSR1, earlier)
    try:
        watch = SignalWatch(signal.SIGUSR1).install()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert watch.is_set() and seen == [signal.SIGUSR1]
        watch.restore()
        assert signal.getsignal(signal.SIGUSR1) is earlier
    finally:
        signal.signal(signal.SIGUSR1, old)
