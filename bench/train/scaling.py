"""Benchmark: does the shared training loop scale past one process on this machine?

Tokens/s of the Instella ``small`` preset's pretraining step (30.9M parameters, global batch 8 x
128 tokens) on 2 processes x 1 thread (torchrun, DDP) against 1 process x 1 thread, interleaved
in the same run (goal >= 1.6x on a 2-core machine), and the peak resident memory per rank of
FSDP against DDP on 2 processes. Each round runs every side once; the ratio is the median over
rounds of each round's ratio.

    python bench/train/scaling.py [--rounds 3] [--steps 24] [--warmup 4] [--batch 32 --micro-batch 8]
        [--weak] [--sides one,ddp,fsdp] [--out docs/training/scaling.json]

``--batch`` sets the global batch in sequences (default: the preset's 8) and ``--micro-batch``
the sequences per forward on a rank (gradient accumulation: DDP reduces gradients once per
step, after the last micro-batch). ``--weak`` keeps the batch per process instead of the global
batch: 2 processes then step on twice the 1-process global batch (weak scaling, the usual DDP
throughput figure; the default is strong scaling). Writes docs/training/scaling.json (the file
docs/training.md cites) unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "scaling_worker.py"


def run_side(nproc: int, parallel: str | None, steps: int, warmup: int, extra: list[str]) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        args = [str(WORKER), str(out), "--steps", str(steps), "--warmup", str(warmup), *extra]
        if nproc == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   *args, "--parallel", parallel or "ddp"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--batch", type=int, default=None, help="global batch in sequences (default: the preset's)")
    ap.add_argument("--micro-batch", type=int, default=None, help="sequences per forward on a rank")
    ap.add_argument("--weak", action="store_true", help="2 processes get twice the global batch")
    ap.add_argument("--sides", default="one,ddp,fsdp", help="which sides to run (one is always run)")
    ap.add_argument("--out", type=Path, default=HERE.parents[1] / "docs" / "training" / "scaling.json")
    a = ap.parse_args()
    if a.weak and not a.batch:
        raise SystemExit("--weak needs --batch (the 1-process global batch)")
    micro = ["--micro-batch", str(a.micro_batch)] if a.micro_batch else []
    extra = [*(["--batch", str(a.batch)] if a.batch else []), *micro]
    extra2 = [*(["--batch", str(a.batch * (2 if a.weak else 1))] if a.batch else []), *micro]
    sides = set(a.sides.split(",")) | {"one"}
    from rich.console import Console
    from rich.table import Table

    rounds = []
    for r in range(a.rounds):
        one = run_side(1, None, a.steps, a.warmup, extra)
        ddp = run_side(2, "ddp", a.steps, a.warmup, extra2)
        fsdp = run_side(2, "fsdp", a.steps, a.warmup, extra2) if "fsdp" in sides else ddp
        rounds.append({"one": one, "ddp": ddp, "fsdp": fsdp, "load1": os.getloadavg()[0]})
        Console(stderr=True).print(f"round {r + 1}: 1 proc {one['tokens_per_s']:.0f} tok/s, 2 procs DDP "
                                   f"{ddp['tokens_per_s']:.0f} ({ddp['tokens_per_s'] / one['tokens_per_s']:.2f}x), "
                                   f"FSDP {fsdp['tokens_per_s']:.0f}; load {rounds[-1]['load1']:.1f}")
    ratio = statistics.median(x["ddp"]["tokens_per_s"] / x["one"]["tokens_per_s"] for x in rounds)
    ratio_fsdp = statistics.median(x["fsdp"]["tokens_per_s"] / x["one"]["tokens_per_s"] for x in rounds)
    mib = 1024**2
    peak_ddp = statistics.median(max(x["ddp"]["peak_rss_per_rank"]) for x in rounds) / mib
    peak_fsdp = statistics.median(max(x["fsdp"]["peak_rss_per_rank"]) for x in rounds) / mib
    peak_one = statistics.median(x["one"]["peak_rss_per_rank"][0] for x in rounds) / mib
    how = (f"global batch {a.batch or 8}{' per process' if a.weak else ''}"
           f"{f', micro-batch {a.micro_batch}' if a.micro_batch else ''}")
    t = Table(title=f"Instella small pretraining ({rounds[0]['one']['parameters']:,} parameters, {how}), "
                    f"median of {a.rounds} rounds")
    for h in ("side", "tokens/s", "vs 1 process", "peak RSS per rank (MiB)"):
        t.add_column(h, no_wrap=True)
    med = {k: statistics.median(x[k]["tokens_per_s"] for x in rounds) for k in ("one", "ddp", "fsdp")}
    t.add_row("1 process x 1 thread", f"{med['one']:.0f}", "1.00", f"{peak_one:.0f}")
    t.add_row("2 processes x 1 thread, DDP", f"{med['ddp']:.0f}", f"{ratio:.2f} (goal >= 1.6)", f"{peak_ddp:.0f}")
    if "fsdp" in sides:
        t.add_row("2 processes x 1 thread, FSDP", f"{med['fsdp']:.0f}", f"{ratio_fsdp:.2f}", f"{peak_fsdp:.0f}")
    Console(width=120).print(t)
    if "fsdp" in sides:
        print(f"FSDP / DDP peak RSS per rank: {peak_fsdp / peak_ddp:.2f}x")
    if "fsdp" not in sides:  # nothing of FSDP was measured: nothing of it is written
        for x in rounds:
            del x["fsdp"]
        ratio_fsdp, peak_fsdp = None, None  # type: ignore[assignment]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "batch": a.batch, "micro_batch": a.micro_batch, "weak": a.weak, "fsdp_run": "fsdp" in sides,
        "rounds": rounds, "ddp_over_one": ratio, "fsdp_over_one": ratio_fsdp,
        "peak_rss_mib": {"one": peak_one, "ddp": peak_ddp, "fsdp": peak_fsdp},
        "cpu_count": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
