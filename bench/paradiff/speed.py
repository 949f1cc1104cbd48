"""Benchmark: decoding speed of the two attentions, full (the release's) and prefix (the fast option).

Both trained models of a preset (``model.attention`` full and prefix, each its own cache entry,
trained on first use) decode the same held-out prompts with the same sample config, at batch 1
and at batch ``--big``, for each sampler. A round times the four decodes (full b1, prefix b1,
full bN, prefix bN) ``--tries`` times each, interleaved, and keeps each one's fastest, so a change
of load on a shared machine hits both attentions alike; the reported figures are medians over
rounds of seconds per generated sample and of the per-round ratio full / prefix (the prefix
model's speed-up), and of batch N's per-step cost over batch 1's (N would mean no gain from
batching). Quality of the two models: ``paperlab paradiff bench --attention full|prefix``.

    PYTHONPATH=src nice python bench/paradiff/speed.py --preset tiny --threads 1 --json docs/paradiff/speed-tiny-1thread.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from paperlab.io import atomic_write_text
from paperlab.paradiff.bench import conditions
from paperlab.paradiff.config import get_preset
from paperlab.paradiff.sampler import SAMPLERS, sample
from paperlab.paradiff.train import bench_examples, ensure_model
from paperlab.threads import set_threads

ATTENTIONS = ("full", "prefix")


def _decode_s(model, cond, name, cfg, seed: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    sample(model, cond, name, cfg, seed=seed)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--big", type=int, default=32, help="the large batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tries", type=int, default=3, help="decodes per side and round (the fastest counts)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: the machine's rule)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    base = get_preset(args.preset)
    set_threads(base.train.threads)  # a model not yet cached trains on one thread, as the CLI trains it
    models = {att: ensure_model(base.with_overrides(**{"model.attention": att})).model for att in ATTENTIONS}
    threads = set_threads(args.threads or None)
    sc = base.sample
    cond = conditions(ensure_model(base), bench_examples(base, args.big))
    for m in models.values():
        sample(m, cond[:2], "parallel", sc)  # warm-up
    rows = {}
    for name in SAMPLERS:
        per: dict[str, list[float]] = {f"{a} b{b}": [] for a in ATTENTIONS for b in (1, args.big)}
        for r in range(args.rounds):
            best = {k: float("inf") for k in per}
            for t in range(args.tries):
                for b in (1, args.big):
                    for att in ATTENTIONS:
                        key = f"{att} b{b}"
                        best[key] = min(best[key], _decode_s(models[att], cond[:b], name, sc, 10 * r + t))
            for k, v in best.items():
                per[k].append(v)
        row: dict[str, object] = {}
        for b in (1, args.big):
            full, pre = per[f"full b{b}"], per[f"prefix b{b}"]
            row[f"full_b{b}_s_per_sample"] = round(statistics.median(full) / b, 5)
            row[f"prefix_b{b}_s_per_sample"] = round(statistics.median(pre) / b, 5)
            ratios = [f / p for f, p in zip(full, pre, strict=True)]
            row[f"prefix_speedup_b{b}"] = round(statistics.median(ratios), 2)
            row[f"prefix_speedup_b{b}_per_round"] = [round(x, 2) for x in ratios]
        for att in ATTENTIONS:
            big, one = per[f"{att} b{args.big}"], per[f"{att} b1"]
            row[f"{att}_b{args.big}_over_b1_per_step_cost"] = round(statistics.median(
                [x / y for x, y in zip(big, one, strict=True)]), 2)
        rows[name] = row
    table = Table(title=f"paradiff decoding, {args.preset} preset, {threads} torch thread(s), "
                        f"load avg {os.getloadavg()[0]:.1f}: full (release) vs prefix (fast option)")
    for col in ("sampler", "s/sample b1 full / prefix", "prefix speed-up b1", f"s/sample b{args.big} full / prefix",
                f"prefix speed-up b{args.big}", f"b{args.big}/b1 per step full / prefix"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, f"{r['full_b1_s_per_sample']} / {r['prefix_b1_s_per_sample']}", str(r["prefix_speedup_b1"]),
                      f"{r[f'full_b{args.big}_s_per_sample']} / {r[f'prefix_b{args.big}_s_per_sample']}",
                      str(r[f"prefix_speedup_b{args.big}"]),
                      f"{r[f'full_b{args.big}_over_b1_per_step_cost']} / {r[f'prefix_b{args.big}_over_b1_per_step_cost']}")
    Console(width=160).print(table)
    if args.json:
        payload = {"preset": args.preset, "threads": threads, "rounds": args.rounds, "tries": args.tries,
                   "load_avg_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__,
                   "machine": platform.machine(), "samplers": rows, "sample_config": sc.model_dump()}
        atomic_write_text(args.json, json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
