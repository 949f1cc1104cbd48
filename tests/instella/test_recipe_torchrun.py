"""The long-context and math stages under `torchrun --nproc_per_node 2`, DDP and FSDP2: the
per-step losses of one process, each rank training its share of the global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paperlab.testing import run_torchrun

# trains a tiny instruct model that solves some of its (easy) problems, so that GRPO's rewards
# differ within groups; then each new stage on 1 and on 2 processes
pytestmark = pytest.mark.slow

CONFIG = """\
gsm8k: synthetic
synthetic_max: 3
save_every: 100
pretrain: {steps: 60, lr: 4.0e-3, warmup: 6, batch: 16}
stage2: {steps: 4, lr: 1.0e-3, batch: 8}
sft: {steps: 200, lr: 3.0e-3, warmup: 10, batch: 16}
dpo: {steps: 4, lr: 1.0e-4, batch: 4, warmup_ratio: 0.1}
long_phases: [{factor: 2, steps: 4, lr: 2.0e-4, batch: 4, warmup_ratio: 0.1},
              {factor: 4, steps: 2, lr: 2.0e-4, batch: 4, warmup_ratio: 0.1}]
long_sft: {steps: 3, lr: 2.0e-4, batch: 4}
long_dpo: {steps: 3, lr: 1.0e-4, batch: 4, warmup_ratio: 0.1}
math_sft1: {steps: 4, lr: 1.0e-3, batch: 8}
math_sft2: {steps: 3, lr: 1.0e-3, batch: 4}
math_sft2_factor: 2
grpo: {steps: 3, lr: 1.0e-3, batch: 4, group: 8, max_new_tokens: 48, temperature: 0.7}
eval: {heldout_windows: 4, gsm8k_problems: 2, max_new_tokens: 4, pairs: 4, math_problems: 8, math_new_tokens: 48}
"""


def _losses(out: Path) -> dict[str, list[float]]:
    stages = json.loads((out / "report.json").read_text())["stages"]
    return {k: v["train"]["losses"] for k, v in stages.items() if "train" in v}


def test_new_stages_on_two_processes_give_the_losses_of_one(tmp_path: Path, tscale: float) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "PAPERLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    base = tmp_path / "base"
    made = subprocess.run([sys.executable, "-m", "paperlab", "instella", "recipe", str(cfg), "--out", str(base),
                           "--stage", "pretrain,stage2,soup,sft,dpo", "--threads", "1"], capture_output=True,
                          text=True, env=env, timeout=900 * tscale, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr[-2000:]
    src = str(base / "dpo" / "checkpoint")
    for stages in ("long,long_sft,long_dpo", "math_sft1,math_sft2,grpo"):
        args = ["instella", "recipe", str(cfg), "--stage", stages, "--from", src, "--threads", "1"]
        one = subprocess.run([sys.executable, "-m", "paperlab", *args, "--out", str(tmp_path / f"one-{stages}")],
                             capture_output=True, text=True, env=env, timeout=900 * tscale, stdin=subprocess.DEVNULL)
        assert one.returncode == 0, one.stderr[-2000:]
        a = _losses(tmp_path / f"one-{stages}")
        assert len(a) == 3 + (stages.startswith("long"))
        for mode in ("ddp", "fsdp"):
            out = tmp_path / f"{mode}-{stages}"
            two = run_torchrun(["-m", "paperlab", *args, "--parallel", mode, "--out", str(out)], 2,
                               timeout=900 * tscale, env={"PAPERLAB_CACHE": env["PAPERLAB_CACHE"]})
            assert two.returncode == 0, two.stderr[-2000:]
            b = _losses(out)
            report = json.loads((out / "report.json").read_text())["stages"]
            assert a.keys() == b.keys()
            assert all(v["train"]["world_size"] == 2 and v["train"]["parallel"] == mode for v in report.values())
            for key in a:
                rel = max(abs(x - y) / max(abs(x), 1e-3) for x, y in zip(a[key], b[key], strict=True))
                assert rel < 1e-3, (mode, key, a[key], b[key])
            if "grpo" in report:  # the check means something only if some groups had a signal
                assert max(report["grpo"]["train"]["stats"]["groups_with_signal"]) > 0
                assert all(abs(x) > 0 for x in b["grpo"][1:])
