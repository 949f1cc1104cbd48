"""Helpers for tests of paperlab and of code built on it: free ports, real local servers.

It lives in the package so that every system's tests (and users testing their own pipelines)
start real servers the same way; the Galaxy demo's local devices use ``free_port`` too. It
imports only the standard library.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``url`` answers (any HTTP status) or raise; fails fast if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server process exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a child process, killing it if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServedModel:
    """A real `transformers serve` process on 127.0.0.1 serving one local model directory."""

    def __init__(self, model_dir: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.model_dir = model_dir
        self.port = port
        self.proc = proc
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.model = str(model_dir)  # the server accepts the directory path as the model name
        self.spec = f"openai:{self.base_url}#{self.model}"


def start_transformers_serve(model_dir: Path, log_path: Path, startup_timeout: float) -> ServedModel:
    """Start ``transformers serve MODEL_DIR`` on a free port; return once /health answers."""
    exe = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, startup_timeout)
    except RuntimeError as exc:
        raise RuntimeError(f"transformers serve failed to start: {exc}; see {log_path}") from None
    return ServedModel(model_dir, port, proc)


def start_python_server(script: Path, args: list[str], port: int, log_path: Path,
                        startup_timeout: float, health_path: str = "/") -> subprocess.Popen[bytes]:
    """Run ``python SCRIPT ARGS...`` as a server process and wait for it to answer on ``port``."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), *args], stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}{health_path}", proc, startup_timeout)
    return proc


def run_torchrun(args: list[str], nproc: int, *, timeout: float, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node nproc ARGS`` as a real launch (gloo on the CPU).

    ``args`` start with a script path or ``-m module``. Output is captured; the caller checks the
    return code. Each rank runs on one torch thread.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env,
                          stdin=subprocess.DEVNULL)


def start_llama_cpp_server(gguf: Path, log_path: Path, startup_timeout: float, alias: str = "smollm2",
                           threads: int = 2, n_ctx: int = 4096, n_batch: int | None = None) -> ServedModel:
    """Start llama-cpp-python's OpenAI-compatible server on a GGUF file (a free port, 127.0.0.1).

    It needs ``llama-cpp-python[server]`` (``make llama-server`` builds and caches it). The
    server runs one sequence at a time and returns ``top_logprobs`` (``logits_all`` is on by
    default); it serves the model under ``alias``. ``n_batch`` sets how many prompt tokens one
    evaluation takes (``--n_batch`` and ``--n_ubatch``; the server's default is 512).
    """
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads)]
    if n_batch:
        cmd += ["--n_batch", str(n_batch), "--n_ubatch", str(n_batch)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc, startup_timeout)
    served = ServedModel(gguf, port, proc)
    served.model = alias
    served.spec = f"openai:{served.base_url}#{alias}"
    return served
