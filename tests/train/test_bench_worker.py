"""The scaling benchmark's worker still runs against the recipe's current API (one process, two steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "bench" / "train" / "scaling_worker.py"


@pytest.mark.slow
def test_scaling_worker_trains_two_steps(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(WORKER), str(out), "--steps", "2", "--warmup", "1"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert (r["world_size"], r["steps_timed"], len(r["losses"])) == (1, 1, 2)
    assert r["parameters"] == 30_873_856 and r["tokens_per_s"] > 0
