"""Benchmark: steps/s of the three samplers, what batching buys, and what the condition cache buys.

For each sampler it decodes batch 1 and batch 32 (the same prompts) in paired rounds: each round
decodes both three times, interleaved, and keeps each side's fastest, so a change of load on a
shared machine hits both sides of a round alike. It reports the median of the rounds' per-step cost
ratios batch 32 / batch 1 (goal: <= 8x on CPU; 32x would mean no batching gain at all), the
ratio of the medians, the ratio against batch 1 on whichever of one thread and the chosen count
is faster for it (on 2 cores one thread often is, at batch 1), steps/s and seconds per
generated sample; and, as the peer, the same decodes by the published architecture: the same
weights in a full-attention model (no mask, nothing cached, every step over the whole
sequence), whose per-sample time over the cached model's is the cache's speed-up. (Its
samples differ, since its attention differs; its arithmetic is what the published code does.
``reuse_condition=False`` on the prefix model would be a slower peer: masked attention costs
more than unmasked.)

    PYTHONPATH=src nice python bench/paradiff/speed.py --preset tiny --threads 2 --json bench/paradiff/results/speed-tiny.json
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
from paperlab.paradiff.model import ParaDiffModel
from paperlab.paradiff.sampler import SAMPLERS, sample
from paperlab.paradiff.train import bench_examples, ensure_model, set_threads


def _decode_s(model, cond, name, cfg, seed: int, reuse: bool, tries: int = 1) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Best-of-``tries`` seconds for one decode of ``cond``, and the model calls it made."""
    best, steps = float("inf"), 0
    for r in range(tries):
        t0 = time.perf_counter()
        res = sample(model, cond, name, cfg, seed=seed + r, reuse_condition=reuse)
        best = min(best, time.perf_counter() - t0)
        steps = res.steps
    return best, steps


def _rounds(model, cond, name, cfg, rounds: int, reuse: bool, tries: int = 3) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Paired rounds. A round decodes batch 1 and batch N ``tries`` times each, interleaved
    (1, N, 1, N, ...), and keeps each side's fastest: the same estimator on both sides (best
    of three for batch 1 against one batch-N decode inflated the ratio whenever the machine
    was noisy), and a swing of load within a round hits both. Batch 1 is also timed on one
    thread, which beats two at this size on some machines."""
    threads = torch.get_num_threads()
    b1s, b1_one, bns, ratios, ratios_best = [], [], [], [], []
    steps = 0
    for r in range(rounds):
        t1 = tb = float("inf")
        for k in range(tries):
            one, steps = _decode_s(model, cond[:1], name, cfg, 10 * r + k, reuse)
            big_s, _ = _decode_s(model, cond, name, cfg, 10 * r + k, reuse)
            t1, tb = min(t1, one), min(tb, big_s)
        torch.set_num_threads(1)
        t1_one, _ = _decode_s(model, cond[:1], name, cfg, 10 * r, reuse, tries=tries)
        torch.set_num_threads(threads)
        b1s.append(t1)
        b1_one.append(t1_one)
        bns.append(tb)
        ratios.append(tb / t1)
        ratios_best.append(tb / min(t1, t1_one))
    b1, bn = statistics.median(b1s), statistics.median(bns)
    return {"steps": steps, "b1_s": b1, "b1_one_thread_s": statistics.median(b1_one), "bn_s": bn,
            "ratio_paired_median": statistics.median(ratios), "ratio_of_medians": bn / b1,
            "ratio_vs_best_b1_paired_median": statistics.median(ratios_best), "ratios": [round(x, 2) for x in ratios]}


def thread_scaling(threads: int) -> float:
    """Speed-up of ``threads`` threads over one on a batch-32-sized matmul (1088 x 128 @ 128 x
    512), best of five: how well this machine's cores ran in parallel around the rounds. On
    the shared 2-vCPU VM of these runs it measured 1.55-2.31 from one minute to the next;
    batch 32 leans on both threads, batch 1 (about as fast on one) hardly does."""
    a, w = torch.randn(1088, 128), torch.randn(128, 512)

    def best(n: int) -> float:
        torch.set_num_threads(n)
        for _ in range(20):
            a @ w
        t = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(100):
                a @ w
            t = min(t, time.perf_counter() - t0)
        return t

    one, many = best(1), best(threads)
    torch.set_num_threads(threads)
    return one / many


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--big", type=int, default=32, help="the large batch")
    ap.add_argument("--rounds", type=int, default=7, help="paired batch-1 / batch-N rounds per sampler")
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
    published = ParaDiffModel(cfg.model.model_copy(update={"attention": "full"}), trained.layout).eval()
    published.load_state_dict(trained.model.state_dict())
    big = args.big
    rows = {}
    scaling = [thread_scaling(threads)]
    for name in SAMPLERS:
        cached = _rounds(trained.model, cond, name, cfg.sample, args.rounds, True)
        plain = _rounds(published, cond, name, cfg.sample, max(1, args.rounds // 2), False)
        steps = cached["steps"]
        rows[name] = {
            "model_calls_per_sample": steps,
            "batch1_steps_per_s": round(steps / cached["b1_s"], 2),
            f"batch{big}_steps_per_s": round(steps / cached["bn_s"], 2),
            "batch1_s_per_sample": round(cached["b1_s"], 4),
            f"batch{big}_s_per_sample": round(cached["bn_s"] / big, 4),
            "per_step_cost_ratio": round(cached["ratio_paired_median"], 2),
            "per_step_cost_ratio_of_medians": round(cached["ratio_of_medians"], 2),
            "per_round_ratios": cached["ratios"],
            "batch1_one_thread_s_per_sample": round(cached["b1_one_thread_s"], 4),
            "per_step_cost_ratio_vs_best_batch1": round(cached["ratio_vs_best_b1_paired_median"], 2),
            "published_batch1_s_per_sample": round(plain["b1_s"], 4),
            f"published_batch{big}_s_per_sample": round(plain["bn_s"] / big, 4),
            "published_per_step_cost_ratio": round(plain["ratio_paired_median"], 2),
            f"cache_speedup_batch{big}": round(plain["bn_s"] / cached["bn_s"], 2),
            "cache_speedup_batch1": round(plain["b1_s"] / cached["b1_s"], 2),
        }
    scaling.append(thread_scaling(threads))
    par = rows["parallel"]["batch1_s_per_sample"]
    for r in rows.values():
        r["s_per_sample_vs_parallel"] = round(r["batch1_s_per_sample"] / par, 2)
    table = Table(title=f"paradiff samplers, {args.preset} preset, {threads} torch thread(s), "
                        f"load avg {os.getloadavg()[0]:.1f}")
    cols = ("sampler", "calls/sample", "steps/s b1", f"steps/s b{big}", "s/sample b1", f"s/sample b{big}",
            f"b{big}/b1 per step (paired median)", f"b{big}/b1, b1 on its faster thread count", f"published (full attention) b{big}/b1",
            f"cache speed-up b{big}", "cache speed-up b1")
    for col in cols:
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, str(r["model_calls_per_sample"]), str(r["batch1_steps_per_s"]),
                      str(r[f"batch{big}_steps_per_s"]), str(r["batch1_s_per_sample"]),
                      str(r[f"batch{big}_s_per_sample"]), str(r["per_step_cost_ratio"]),
                      str(r["per_step_cost_ratio_vs_best_batch1"]), str(r["published_per_step_cost_ratio"]), str(r[f"cache_speedup_batch{big}"]),
                      str(r["cache_speedup_batch1"]))
    Console().print(table)
    print(f"{threads}-thread speed-up of a batch-32-sized matmul, before / after: {scaling[0]:.2f} / {scaling[1]:.2f}")
    if args.json:
        payload = {"preset": args.preset, "threads": threads, "rounds": args.rounds,
                   "load_avg_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__,
                   "machine": platform.machine(),
                   "thread_scaling_before_after": [round(x, 2) for x in scaling], "samplers": rows, "sample_config": cfg.sample.model_dump()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
