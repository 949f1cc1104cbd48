"""Helpers to run a whole galaxy on one machine: device-agent processes and free ports.

Used by the demo, the benchmarks and the end-to-end tests. Devices are real
``python -m paperlab galaxy device`` processes talking to the orchestrator over 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from paperlab.testing import free_port

__all__ = ["LocalDevice", "free_port", "spawn_device"]


class LocalDevice:
    """A device-agent subprocess; ``kill()`` is a SIGKILL, ``stop()`` a SIGTERM."""

    def __init__(self, proc: subprocess.Popen[bytes], device_id: str, log_path: Path) -> None:
        self.proc = proc
        self.device_id = device_id
        self.log_path = log_path

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> None:
        """Send SIGTERM without waiting (call from an event loop, then ``await astop()``)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    async def astop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait without blocking the event loop (the orchestrator must keep
        answering the device's close handshake meanwhile)."""
        import asyncio

        self.terminate()
        return await asyncio.to_thread(self.stop, timeout)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def spawn_device(work_dir: Path, device_id: str, url: str, token: str, capabilities: list[str],
                 max_concurrency: int = 2, shell_allow: list[str] | None = None,
                 python_allow: dict[str, str] | None = None, heartbeat: float = 0.5,
                 extra_env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None) -> LocalDevice:
    """Start a device agent process with a config file written under ``work_dir``.

    ``token`` is the credential the device presents: its own device token (see
    :mod:`paperlab.galaxy.protocol.registry`) or the orchestrator's admin secret."""
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"device_id": device_id, "capabilities": capabilities, "max_concurrency": max_concurrency,
           "shell_allow": shell_allow or [], "python_allow": python_allow or {},
           "heartbeat_interval": heartbeat}
    cfg_path = work_dir / f"{device_id}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log_path = work_dir / f"{device_id}.log"
    env = {**os.environ, "GALAXY_TOKEN": token, **(extra_env or {})}
    src = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paperlab.galaxy", "device", "--config", str(cfg_path),
             "--connect", url, "--log-file", str(work_dir / f"{device_id}.agent.log"),
             *(extra_args or [])],
            stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    return LocalDevice(proc, device_id, log_path)
