"""Tables for docs/icl.md: each DNA model's training record beside its induction probe.

    PYTHONPATH=src python bench/icl/report_sizes.py --model NAME=MODEL_DIR ... \
        --induction NAME=induction.json ...

Prints markdown: one row per model (parameters, context, training bases and steps, wall time,
held-out loss against the best Markov order) and one per probed model (NLL of each copy, gain,
arg-max accuracy). Models without a training record (SmolLM2) appear in the probe table only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from paperlab.icl.dnamodel import read_meta


def _pairs(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        name, _, path = item.partition("=")
        out.append((name, Path(path).expanduser()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR")
    ap.add_argument("--induction", action="append", default=[], help="NAME=induction.json")
    args = ap.parse_args()

    print("| model | parameters | context | steps | training bases | train wall (s) | held-out nats/base | best Markov (order) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path in _pairs(args.model):
        m = read_meta(path)
        cfg = m["config"]
        steps = m.get("steps_total", m.get("steps_done", cfg["steps"]))
        bases = m.get("train_bases_total", m.get("train_bases", steps * cfg["batch_size"] * cfg["context"]))
        params = m.get("parameters")
        order, best = min(((int(k), v) for k, v in m["markov_nats_per_base"].items()), key=lambda t: t[1])
        print(f"| {name} | {params / 1e6:.2f} M | {cfg['context']} | {steps} | {bases / 1e6:.2f} M | "
              f"{m['train_seconds']:.0f} | {m['heldout_nats_per_base']:.4f} | {best:.4f} ({order}) |"
              if params else
              f"| {name} | - | {cfg['context']} | {steps} | {bases / 1e6:.2f} M | {m['train_seconds']:.0f} | "
              f"{m['heldout_nats_per_base']:.4f} | {best:.4f} ({order}) |")
    print()
    print("| model | alphabet | L | sequences | chance | 1st copy | 2nd copy | gain | acc. 1st | acc. 2nd | 2nd copy by offset |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, path in _pairs(args.induction):
        for r in json.loads(path.read_text()):
            bands = " ".join(f"{k}: {v:.2f}" for k, v in r["second_nats_by_band"].items())
            print(f"| {name} | {r['alphabet']} | {r['length']} | {r['n_sequences']} | {r['chance_nats']:.3f} | "
                  f"{r['first_nats']:.3f} | {r['second_nats']:.3f} | {r['gain_nats']:+.3f} | "
                  f"{r['first_accuracy']:.3f} | {r['second_accuracy']:.3f} | {bands} |")


if __name__ == "__main__":
    main()
