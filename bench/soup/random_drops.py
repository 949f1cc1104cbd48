"""DARE's and DELLA's drop of one tensor: the whole-tensor drop (``sparsify.bernoulli`` /
``sparsify.della_magprune``: one float32 dropped copy, DELLA's ranks from torch's stable argsort
of the rows) against the mask-and-factor drop the merge uses (``random_drops.random_drop``), in
the same run, on one thread as the CLI runs, with a check that both give the same values.

    PYTHONPATH=src python bench/soup/random_drops.py [--rows 4096 --cols 1024 --repeats 3 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from paperlab.soup.methods import MethodParams, rng_for, sparsify
from paperlab.soup.methods.random_drops import random_drop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.rows * args.cols
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(n, generator=g) * 0.02).to(torch.bfloat16)
    x = (base.float() + torch.randn(n, generator=g) * 0.002).to(torch.bfloat16)
    p = MethodParams((1.0,), {}, {}, (args.rows, args.cols), "bench", 0, "float32")
    rows = []
    for keep in ("random", "della"):
        for rep in range(args.repeats):
            t = time.perf_counter()
            delta = x.float() - base.float()
            if keep == "random":
                whole = sparsify.bernoulli(delta, 0.5, rng_for(p, 0), True)
            else:
                whole = sparsify.della_magprune(delta, p.shape, 0.5, 0.15, rng_for(p, 0), True)
            t_whole = time.perf_counter() - t
            del delta
            t = time.perf_counter()
            mask, factor = random_drop(x, base, torch.float32, keep, 0.5, rng_for(p, 0), rescale=True,
                                       rows=args.rows, epsilon=0.15)
            t_mask = time.perf_counter() - t
            kept = (x.float() - base.float()).mul_(mask.to(torch.float32))
            same = torch.equal(kept if factor is None else kept.mul_(factor), whole)
            row = {"drop": keep, "repeat": rep, "whole_s": round(t_whole, 3), "mask_s": round(t_mask, 3),
                   "ratio": round(t_mask / t_whole, 3), "same_values": same}
            rows.append(row)
            print(f"{keep:6s} whole {t_whole:6.3f} s  mask+factor {t_mask:6.3f} s  ratio {t_mask / t_whole:.2f}x"
                  f"  same values: {same}")
            if not same:
                raise SystemExit("the two drops differ")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "cols": args.cols, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
