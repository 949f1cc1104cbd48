"""The training commands as users launch them: one process and `torchrun --nproc_per_node 2`
give the same per-step losses; bad launches are one line; a stopped run resumes, and a resume
with another model config is refused without touching the saved state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paperlab.testing import run_torchrun

pytestmark = pytest.mark.slow  # each case trains a preset for tens of seconds, some under torchrun


def rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))


def paperlab(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paperlab", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env}, stdin=subprocess.DEVNULL)


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    return {"PAPERLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def test_instella_pretrain_on_two_processes_matches_one(tmp_path: Path, cache_env: dict[str, str],
                                                        tscale: float) -> None:
    args = ["instella", "recipe", "--preset", "tiny", "--stage", "pretrain", "--threads", "1"]
    one = paperlab([*args, "--out", str(tmp_path / "one")], cache_env, 600 * tscale)
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_torchrun(["-m", "paperlab", *args, "--out", str(tmp_path / "two")], 2, timeout=600 * tscale,
                       env=cache_env)
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "report.json").read_text())["stages"]["pretrain"]["train"]
    b = json.loads((tmp_path / "two" / "report.json").read_text())["stages"]["pretrain"]["train"]
    assert a["world_size"] == 1 and b["world_size"] == 2 and b["parallel"] == "ddp"
    assert len(b["losses"]) == 150 and all(isinstance(x, float) for x in b["losses"])
    assert rel(a["losses"], b["losses"]) < 1e-3
    assert b["losses"][-1] < b["losses"][0]
    assert two.stdout.count("Instella recipe") == 1  # rank 0 alone reports


def test_paradiff_train_ddp_and_fsdp_match_one_process(tmp_path: Path, cache_env: dict[str, str],
                                                       tscale: float) -> None:
    base = ["paradiff", "train", "--preset", "tiny", "--steps", "50", "--retrain"]
    one = paperlab([*base, "--out", str(tmp_path / "one")], cache_env, 600 * tscale)
    assert one.returncode == 0, one.stderr[-2000:]
    ref = json.loads((tmp_path / "one" / "train.json").read_text())
    assert ref["world_size"] == 1 and len(ref["losses"]) == 50
    for mode in ("ddp", "fsdp"):
        out = tmp_path / mode
        proc = run_torchrun(["-m", "paperlab", *base, "--out", str(out), "--parallel", mode], 2,
                            timeout=600 * tscale, env=cache_env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = json.loads((out / "train.json").read_text())
        assert got["world_size"] == 2 and got["parallel"] == mode
        assert rel(ref["losses"], got["losses"]) < 1e-3, mode
        assert (out / "model" / "weights.safetensors").is_file()


def _one_error_line(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("error: ")]


def test_bad_launches_are_one_line_and_write_nothing(tmp_path: Path, cache_env: dict[str, str],
                                                     tscale: float) -> None:
    # --parallel fsdp outside torchrun
    out = tmp_path / "a"
    proc = paperlab(["instella", "recipe", "--preset", "tiny", "--stage", "pretrain", "--parallel", "fsdp",
                     "--out", str(out)], cache_env, 120 * tscale)
    assert proc.returncode == 2 and _one_error_line(proc.stderr)[0].count("torchrun --standalone") == 1
    assert "Traceback" not in proc.stderr and not out.exists()
    # a global batch (16) that 3 processes cannot share: one line, from rank 0 only
    proc = run_torchrun(["-m", "paperlab", "instella", "recipe", "--preset", "tiny", "--stage", "pretrain",
                         "--out", str(out)], 3, timeout=300 * tscale, env=cache_env)
    lines = _one_error_line(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1 and "does not split evenly over 3 processes" in lines[0]
    assert not (out / "pretrain" / "checkpoint").exists()
    # NCCL asked for on the CPU
    proc = run_torchrun(["-m", "paperlab", "instella", "recipe", "--preset", "tiny", "--stage", "pretrain",
                         "--backend", "nccl", "--device", "cpu", "--out", str(tmp_path / "b")], 1,
                        timeout=120 * tscale, env=cache_env)
    lines = _one_error_line(proc.stderr)
    assert len(lines) == 1 and "NCCL backend needs CUDA" in lines[0] and "--backend gloo" in lines[0]
    assert not (tmp_path / "b").exists()


def test_a_stopped_recipe_resumes_and_another_config_is_refused(tmp_path: Path, cache_env: dict[str, str],
                                                                 tscale: float) -> None:
    """Ctrl-C mid-stage keeps the sharded state; the same command resumes from it; a command with
    another model shape is refused in one line and the state is left as it was."""
    cfg = tmp_path / "r.yaml"
    cfg.write_text("bpe_vocab: 320\ngsm8k: synthetic\nsave_every: 5\nstages: [pretrain]\n"
                   "model: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64,"
                   " seq_len: 48}\npretrain: {steps: 400, lr: 1.0e-3, warmup: 2, batch: 4}\n"
                   "eval: {heldout_windows: 2, gsm8k_problems: 1, max_new_tokens: 4, pairs: 2}\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "paperlab", "instella", "recipe", str(cfg), "--out", str(out), "--threads", "1"]
    # A shell without job control starts background jobs with SIGINT ignored, and Python then
    # keeps ignoring it: the child gets the default disposition, as a terminal's Ctrl-C would find.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **cache_env}, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    latest = out / "pretrain" / ".state" / "latest.json"
    deadline = time.monotonic() + 300 * tscale
    while not latest.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert latest.exists(), proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGINT)
    proc.wait(120 * tscale)
    saved = json.loads(latest.read_text())["step"]
    assert saved >= 5
    state_files = sorted(str(p.relative_to(out)) for p in (out / "pretrain" / ".state").rglob("*"))
    # another model shape: refused, nothing changed
    cfg2 = tmp_path / "r2.yaml"
    cfg2.write_text(cfg.read_text().replace("hidden_size: 32", "hidden_size: 48"))
    bad = subprocess.run([*cmd[:5], str(cfg2), *cmd[6:]], capture_output=True, text=True,
                         env={**os.environ, **cache_env}, timeout=300 * tscale)
    lines = _one_error_line(bad.stderr)
    assert bad.returncode == 2 and len(lines) == 1 and "another" in lines[0] and "move" in lines[0], bad.stderr
    assert sorted(str(p.relative_to(out)) for p in (out / "pretrain" / ".state").rglob("*")) == state_files
    # the same command resumes where it stopped and finishes
    again = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **cache_env},
                           timeout=600 * tscale)
    assert again.returncode == 0, again.stderr[-2000:]
    train = json.loads((out / "report.json").read_text())["stages"]["pretrain"]["train"]
    assert train["resumed_from"] == saved and len(train["losses"]) == 400
    assert not (out / "pretrain" / ".state").exists()
