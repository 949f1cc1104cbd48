"""Loading a sharded release keeps one copy of the weights: peak RSS at most 1.2x their size.

Runs the benchmark (bench/instella/load_memory.py) on the ``small`` preset (416 MB in float32,
100 MB shards): each way of loading runs in a fresh interpreter that reads every weight once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_SRC

pytestmark = pytest.mark.slow  # writes 416 MB and loads it three times in fresh interpreters

BENCH = Path(__file__).resolve().parents[2] / "bench" / "instella" / "load_memory.py"


def test_sharded_release_loads_in_at_most_1_2x_its_weights(tmp_path: Path) -> None:
    out = tmp_path / "load_memory.json"
    env = {**os.environ, "PYTHONPATH": REPO_SRC, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--kinds", "instella,instella-lowmem,instella-bf16",
         "--check", "1.2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=560,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"instella", "instella-lowmem", "instella-bf16"}
    for kind, r in results.items():
        assert r["peak_over_weights"] <= 1.2, (kind, r)
    assert results["instella-bf16"]["weights"] * 2 == results["instella"]["weights"]  # a bf16 release
