"""Benchmark: the long-context and math stages on 2 processes (DDP, FSDP2) against 1 process.

Trains a tiny instruct model (operands up to 3, so that GRPO's groups hold replies with different
rewards), then runs ``--stage long,long_sft,long_dpo`` and ``--stage math_sft1,math_sft2,grpo``
from it as one process and as ``torchrun --standalone --nproc_per_node 2 -m paperlab instella
recipe ... --parallel ddp|fsdp``, and writes, per stage and mode, the largest relative
difference of a step's loss from one process, with GRPO's share of groups with a signal.
``--check 1e-3`` exits 1 when a difference is above it, a run fails, or GRPO had no signal.

    python bench/instella/recipe_processes.py --out docs/instella/recipe-processes.json [--check 1e-3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paperlab.testing import run_torchrun

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
FAMILIES = ("long,long_sft,long_dpo", "math_sft1,math_sft2,grpo")


def _stages(out: Path) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in json.loads((out / "report.json").read_text())["stages"].items() if "train" in v}


def _recipe(args: list[str], env: dict[str, str], timeout: float) -> None:
    proc = subprocess.run([sys.executable, "-m", "paperlab", "instella", "recipe", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"recipe {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def measure(work: Path, timeout: float) -> dict[str, dict[str, Any]]:
    """{stage: {"steps", "ddp", "fsdp", ...}}: the largest relative loss difference per mode."""
    cfg = work / "r.yaml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "PAPERLAB_CACHE": str(work / "cache"), "OMP_NUM_THREADS": "1"}
    _recipe([str(cfg), "--out", str(work / "base"), "--stage", "pretrain,stage2,soup,sft,dpo", "--threads", "1"],
            env, timeout)
    src = str(work / "base" / "dpo" / "checkpoint")
    rows: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        args = [str(cfg), "--stage", family, "--from", src, "--threads", "1"]
        _recipe([*args, "--out", str(work / f"one-{family}")], env, timeout)
        one = _stages(work / f"one-{family}")
        for key, st in one.items():
            rows[key] = {"steps": len(st["train"]["losses"])}
        for mode in ("ddp", "fsdp"):
            out = work / f"{mode}-{family}"
            two = run_torchrun(["-m", "paperlab", "instella", "recipe", *args, "--parallel", mode, "--out", str(out)],
                               2, timeout=timeout, env={"PAPERLAB_CACHE": env["PAPERLAB_CACHE"]})
            if two.returncode != 0:
                raise SystemExit(f"torchrun {mode} {family} failed:\n{two.stderr[-2000:]}")
            b = _stages(out)
            if b.keys() != one.keys():
                raise SystemExit(f"{mode} {family}: stages {sorted(b)} vs {sorted(one)}")
            for key, st in b.items():
                t = st["train"]
                if (t["world_size"], t["parallel"]) != (2, mode):
                    raise SystemExit(f"{mode} {key}: ran as {t['world_size']} x {t['parallel']}")
                a = one[key]["train"]["losses"]
                rows[key][mode] = max(abs(x - y) / max(abs(x), 1e-3) for x, y in zip(a, t["losses"], strict=True))
                if key == "grpo":
                    rows[key][f"{mode}_groups_with_signal"] = t["stats"]["groups_with_signal"]
                    rows[key][f"{mode}_losses"] = t["losses"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--check", type=float, default=None, help="exit 1 above this relative difference")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per recipe run")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recipe-processes-") as tmp:
        rows = measure(Path(tmp), args.timeout)
    result = {"command": "python bench/instella/recipe_processes.py --out " + str(args.out),
              "config": CONFIG, "seconds": round(time.perf_counter() - t0, 1),
              "load_average": os.getloadavg(), "stages": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'stage':<14}{'steps':>6}{'ddp':>10}{'fsdp':>10}")
    for key, r in rows.items():
        print(f"{key:<14}{r['steps']:>6}{r['ddp']:>10.1e}{r['fsdp']:>10.1e}")
    if args.check is not None:
        worst = max(max(r["ddp"], r["fsdp"]) for r in rows.values())
        g = rows["grpo"]
        signal = min(max(g[f"{m}_groups_with_signal"]) for m in ("ddp", "fsdp"))
        moved = all(abs(x) > 0 for m in ("ddp", "fsdp") for x in g[f"{m}_losses"][1:])
        if worst >= args.check or signal <= 0 or not moved:
            print(f"check failed: largest difference {worst:.1e} (limit {args.check:g}), "
                  f"largest share of GRPO groups with a signal {signal}", file=sys.stderr)
            raise SystemExit(1)


if __name__ == "__main__":
    main()
