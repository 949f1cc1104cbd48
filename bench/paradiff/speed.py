"""Benchmark: steps/s of the three samplers, and what batching buys, in one run.

For each sampler it times whole decodes of batch 1 and batch 32 (the same prompts), and
reports model calls/s, seconds per generated sample, and the per-step cost ratio of batch 32
to batch 1 (goal: <= 8x on CPU; 32x would mean no batching gain at all).

    PYTHONPATH=src nice python bench/paradiff/speed.py --preset tiny --json bench/paradiff/results-tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from paperlab.io import atomic_write_text
from paperlab.paradiff.bench import conditions
from paperlab.paradiff.config import get_preset
from paperlab.paradiff.sample import SAMPLERS, sample
from paperlab.paradiff.train import bench_examples, ensure_model, set_threads


def _time(model, cond, name, cfg, repeats: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Best-of-``repeats`` seconds for one decode of ``cond`` (best: least disturbed by other load)."""
    best = float("inf")
    steps = 0
    for r in range(repeats):
        t0 = time.perf_counter()
        res = sample(model, cond, name, cfg, seed=r)
        best = min(best, time.perf_counter() - t0)
        steps = res.steps
    return best, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--big", type=int, default=32, help="the large batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: the shared load rule)")
    ap.add_argument("--chunk", type=int, default=None, help="override sample.chunk (0: whole batch per call)")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        threads = args.threads
    else:
        threads = set_threads()
    cfg = get_preset(args.preset)
    if args.chunk is not None:
        cfg = cfg.with_overrides(**{"sample.chunk": args.chunk})
    trained = ensure_model(cfg)
    cond = conditions(trained, bench_examples(cfg, args.big))
    sample(trained.model, cond[:2], "parallel", cfg.sample)  # warm-up
    rows = {}
    for name in SAMPLERS:
        t1, steps = _time(trained.model, cond[:1], name, cfg.sample, args.repeats)
        tb, _ = _time(trained.model, cond, name, cfg.sample, args.repeats)
        rows[name] = {
            "model_calls_per_sample": steps,
            "batch1_steps_per_s": round(steps / t1, 2),
            f"batch{args.big}_steps_per_s": round(steps / tb, 2),
            "batch1_s_per_sample": round(t1, 4),
            f"batch{args.big}_s_per_sample": round(tb / args.big, 4),
            "per_step_cost_ratio": round(tb / t1, 2),
        }
    par = rows["parallel"]["batch1_s_per_sample"]
    for r in rows.values():
        r["s_per_sample_vs_parallel"] = round(r["batch1_s_per_sample"] / par, 2)
    table = Table(title=f"paradiff samplers, {args.preset} preset, {threads} torch thread(s), "
                        f"load avg {os.getloadavg()[0]:.1f}")
    for col in ("sampler", "calls/sample", "steps/s b1", f"steps/s b{args.big}", "s/sample b1",
                f"s/sample b{args.big}", f"b{args.big}/b1 per step", "s/sample vs parallel"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, str(r["model_calls_per_sample"]), str(r["batch1_steps_per_s"]),
                      str(r[f"batch{args.big}_steps_per_s"]), str(r["batch1_s_per_sample"]),
                      str(r[f"batch{args.big}_s_per_sample"]), str(r["per_step_cost_ratio"]),
                      str(r["s_per_sample_vs_parallel"]))
    Console().print(table)
    if args.json:
        payload = {"preset": args.preset, "threads": threads, "load_avg_1m": round(os.getloadavg()[0], 2),
                   "torch": torch.__version__, "machine": platform.machine(), "samplers": rows,
                   "sample_config": cfg.sample.model_dump()}
        atomic_write_text(args.json, json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
