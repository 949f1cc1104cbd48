"""The long-context and math stages under `torchrun --nproc_per_node 2`, DDP and FSDP2: the
per-step losses of one process, each rank training its share of the global batch.

Runs the benchmark (bench/instella/recipe_processes.py), which trains a tiny instruct model that
solves some of its (easy) problems, so that GRPO's rewards differ within groups, then each new
stage on 1 and on 2 processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_SRC

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a model, then 6 recipe runs, 4 under torchrun

BENCH = Path(__file__).resolve().parents[2] / "bench" / "instella" / "recipe_processes.py"


def test_new_stages_on_two_processes_give_the_losses_of_one(tmp_path: Path, tscale: float) -> None:
    out = tmp_path / "processes.json"
    env = {**os.environ, "PYTHONPATH": REPO_SRC}
    proc = subprocess.run([sys.executable, str(BENCH), "--out", str(out), "--check", "1e-3",
                           "--timeout", str(900 * tscale)], env=env, capture_output=True, text=True,
                          timeout=3600 * tscale, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["stages"]
    assert set(rows) == {"long/phase-1", "long/phase-2", "long_sft", "long_dpo", "math_sft1", "math_sft2", "grpo"}
    for key, r in rows.items():
        assert r["ddp"] < 1e-3 and r["fsdp"] < 1e-3, (key, r)
    for mode in ("ddp", "fsdp"):  # the check means something only if some groups had a signal
        assert max(rows["grpo"][f"{mode}_groups_with_signal"]) > 0
        assert all(abs(x) > 0 for x in rows["grpo"][f"{mode}_losses"][1:])
