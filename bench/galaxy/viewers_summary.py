"""Pool the viewer rows of several throughput.py results files: every run's paired median and
spread, the load it ran at, and all pairs together.

Usage: python bench/galaxy/viewers_summary.py bench/galaxy/results-viewers-*.json bench/galaxy/results-throughput.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap


def ci(values: list[float]) -> tuple[float, float]:
    res = bootstrap((np.asarray(values),), np.median, confidence_level=0.95, n_resamples=5000,
                    rng=np.random.default_rng(0)).confidence_interval
    return float(res.low), float(res.high)


def main(paths: list[str]) -> None:
    pairs: list[float] = []
    cpu: list[float] = []
    print("| file | load (1 min) during the timed runs | paired median [95% CI] | ratio of medians | "
          "per-round range | orchestrator CPU, viewed / none (paired median) | frames drawn per viewed run |")
    print("|---|---|---|---|---|---|---|")
    for p in paths:
        r = json.loads(Path(p).read_text())
        none, viewed = r["galaxy_no_viewers_viewer_dag"], r["galaxy_3_viewers"]
        paired = r["ratio_viewers_paired"]
        loads = [x for pair in r["load_per_round"] for run in pair for x in run]
        c = [v / n for v, n in zip(viewed["orch_cpu_s"], none["orch_cpu_s"], strict=True) if n > 0]
        pairs += paired
        cpu += c
        lo, hi = r["ratio_viewers_paired_ci95"]
        print(f"| {Path(p).name} | {min(loads):.1f}-{max(loads):.1f} | {statistics.median(paired):.2f} [{lo:.2f}, {hi:.2f}] "
              f"| {r['ratio_viewers_over_none']:.2f} | {min(paired):.2f}-{max(paired):.2f} | {statistics.median(c):.2f} "
              f"| {min(viewed['renders'])}-{max(viewed['renders'])} |")
    lo, hi = ci(pairs)
    clo, chi = ci(cpu)
    print(f"\nall {len(pairs)} pairs: paired median {statistics.median(pairs):.3f} [{lo:.3f}, {hi:.3f}]; "
          f"orchestrator CPU viewed / none {statistics.median(cpu):.3f} [{clo:.3f}, {chi:.3f}]")


if __name__ == "__main__":
    main(sys.argv[1:])
