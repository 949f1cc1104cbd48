"""Helpers for galaxy tests: real orchestrator/device processes on 127.0.0.1, scaled waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from paperlab.galaxy.device.local import LocalDevice, free_port, spawn_device
from paperlab.galaxy.orchestrator.journal import Journal

SRC = Path(__file__).resolve().parents[2] / "src"
TOKEN = "test-token-123"


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``cond`` until true; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")


class Galaxy:
    """An orchestrator process plus device processes, all cleaned up at the end."""

    token = TOKEN
    wait_for = staticmethod(wait_for)

    def __init__(self, tmp: Path, tscale: float) -> None:
        self.tmp = tmp
        self.tscale = tscale
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/aip"
        self.journal_path = tmp / "journal.sqlite"
        self.orch: subprocess.Popen[bytes] | None = None
        self.devices: dict[str, LocalDevice] = {}
        self.orch_logs: list[Path] = []

    def start_orchestrator(self, *args: str, device_timeout: float = 2.0,
                           unplaceable_timeout: float = 3.0) -> subprocess.Popen[bytes]:
        log = self.tmp / f"orch{len(self.orch_logs)}.log"
        self.orch_logs.append(log)
        env = {**os.environ, "GALAXY_TOKEN": TOKEN,
               "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(log, "wb") as fh:
            self.orch = subprocess.Popen(
                [sys.executable, "-m", "paperlab", "galaxy", "run", *args, "--port", str(self.port),
                 "--journal", str(self.journal_path), "--no-live",
                 "--device-timeout", str(device_timeout * self.tscale),
                 "--unplaceable-timeout", str(unplaceable_timeout * self.tscale)],
                stdout=fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        wait_for(lambda: "listening" in log.read_text() or self.orch.poll() is not None,
                 30 * self.tscale, "the orchestrator to listen")
        assert self.orch.poll() is None, log.read_text()
        return self.orch

    def device(self, device_id: str, caps: list[str], **kw: object) -> LocalDevice:
        d = spawn_device(self.tmp, device_id, self.url, kw.pop("token", TOKEN), caps,  # type: ignore[arg-type]
                         heartbeat=0.3 * self.tscale, **kw)  # type: ignore[arg-type]
        self.devices[device_id] = d
        return d

    def events(self, run_id: str) -> list[dict]:
        if not self.journal_path.exists():
            return []
        j = Journal(self.journal_path)
        try:
            return list(j.events(run_id))
        finally:
            j.close()

    def wait_event(self, run_id: str, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
        found: list[dict] = []

        def check() -> bool:
            found[:] = [e for e in self.events(run_id) if pred(e)]
            return bool(found)

        wait_for(check, timeout * self.tscale, what, interval=0.1)
        return found[0]

    def wait_orchestrator(self, timeout: float) -> int:
        assert self.orch is not None
        try:
            return self.orch.wait(timeout * self.tscale)
        except subprocess.TimeoutExpired:
            raise AssertionError("orchestrator did not finish:\n" + self.orch_logs[-1].read_text()) from None

    def orch_output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.orch_logs)

    def close(self) -> None:
        for d in self.devices.values():
            d.stop(5 * self.tscale)
        if self.orch is not None and self.orch.poll() is None:
            self.orch.send_signal(signal.SIGTERM)
            try:
                self.orch.wait(10 * self.tscale)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.orch.kill()
                self.orch.wait()


@pytest.fixture
def until(tscale: float) -> Callable[..., Awaitable[None]]:
    """``await until(cond, what, timeout=10)``: poll ``cond`` in the event loop; fail naming
    ``what`` after ``timeout`` seconds (scaled by PAPERLAB_TEST_TIMEOUT_SCALE)."""
    async def wait(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout * tscale
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout * tscale:.1f}s waiting for {what}")
            await asyncio.sleep(0.02)

    return wait


@pytest.fixture
def galaxy(tmp_path: Path, tscale: float) -> Iterator[Galaxy]:
    g = Galaxy(tmp_path, tscale)
    try:
        yield g
    finally:
        g.close()
