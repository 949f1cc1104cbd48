"""Benchmark: peak memory of loading a sharded checkpoint, Instella vs Llama of the same shape.

Writes the ``small`` preset (float32, ~416 MB) as safetensors shards of ``--shard`` size, for
paperlab's Instella and for transformers' LlamaForCausalLM, then loads each in a fresh
interpreter, the ways a user would: paperlab's ``load_model``, ``AutoModelForCausalLM``,
``AutoModelForCausalLM`` with ``low_cpu_mem_usage=True, device_map="auto"``, a bfloat16
release (the same weights stored in bfloat16, as AMD ships them) loaded as stored, and the
float32 checkpoint cast to bfloat16 while loading. The peak resident set (VmHWM, reset through
/proc/self/clear_refs after the imports) minus the resident set before loading is compared
with the size of the loaded weights: goal <= 1.2x. Since transformers may leave the tensors
mapped lazily from the files, the child then reads every weight once (as a forward pass would)
and the peak is taken after that. ``--check 1.2`` exits 1 when an Instella load that keeps the
stored dtype is above it (a cast on load holds the stored file's pages beside the cast copy).

    python bench/instella/load_memory.py [--preset small] [--shard 100MB] [--kinds a,b] [--check 1.2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import gc, json, sys, torch
import paperlab.instella
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from paperlab.instella.checkpoint import load_model

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
gc.collect()
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset VmHWM to the current RSS
kind, path = sys.argv[1], sys.argv[2]
if kind == "instella":
    model = load_model(path, device="cpu")
elif kind == "instella-auto":
    model = AutoModelForCausalLM.from_pretrained(path)
elif kind == "instella-lowmem":
    model = AutoModelForCausalLM.from_pretrained(path, low_cpu_mem_usage=True, device_map="auto")
elif kind == "instella-bf16":
    model = load_model(path, device="cpu")
elif kind == "instella-f32-as-bf16":
    model = load_model(path, device="cpu", dtype="bfloat16")
elif kind == "llama-bf16":
    model = LlamaForCausalLM.from_pretrained(path, dtype="auto")
else:
    model = LlamaForCausalLM.from_pretrained(path)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
loaded_peak, loaded = status("VmHWM:"), status("VmRSS:")
# Weights may still be lazily mapped from the files: read every byte once, as a forward pass
# would, so that the peak counts them.
with torch.no_grad():
    for p in model.parameters():
        p.sum()  # in its own dtype: an up-cast copy of the largest matrix would count as loading memory
print(json.dumps({"before": before, "loaded_peak": loaded_peak, "loaded": loaded,
                  "peak": status("VmHWM:"), "after": status("VmRSS:"), "weights": weights}))
"""


KINDS = ("instella", "instella-auto", "instella-lowmem", "instella-bf16", "instella-f32-as-bf16", "llama",
         "llama-bf16")
CAST_ON_LOAD = ("instella-f32-as-bf16",)


def measure(kind: str, path: Path) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(path)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"loading {kind} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["peak_over_weights"] = (r["peak"] - r["before"]) / r["weights"]
    r["kept_over_weights"] = (r["after"] - r["before"]) / r["weights"]
    return dict(r)


def main() -> None:
    import torch
    from transformers import LlamaForCausalLM

    from paperlab.instella.checkpoint import save_checkpoint

    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import llama_twin

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--shard", default="100MB")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "load_memory.json")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}")
    ap.add_argument("--check", type=float, default=None,
                    help="exit 1 when an Instella load peaks above this multiple of its weights")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"unknown kind {unknown[0]!r}; choose from {', '.join(KINDS)}")

    with tempfile.TemporaryDirectory() as tmp:
        inst, llama = llama_twin(args.preset)
        inst_dir, llama_dir = Path(tmp) / "instella", Path(tmp) / "llama"
        save_checkpoint(inst, inst_dir, max_shard_size=args.shard)
        bf16_dir = Path(tmp) / "instella-bf16"
        if "instella-bf16" in kinds:
            save_checkpoint(inst.to(torch.bfloat16), bf16_dir, max_shard_size=args.shard)  # type: ignore[arg-type]
        assert isinstance(llama, LlamaForCausalLM)
        if "llama" in kinds:
            llama.save_pretrained(llama_dir, max_shard_size=args.shard)
        llama_bf16_dir = Path(tmp) / "llama-bf16"
        if "llama-bf16" in kinds:
            llama.to(torch.bfloat16).save_pretrained(llama_bf16_dir, max_shard_size=args.shard)  # type: ignore[arg-type]
        shards = len(list(inst_dir.glob("*.safetensors")))
        del inst, llama
        dirs = {"llama": llama_dir, "instella-bf16": bf16_dir, "llama-bf16": llama_bf16_dir}
        results = {k: measure(k, dirs.get(k, inst_dir)) for k in kinds}
    for k, r in results.items():
        print(f"{k:16s} weights {r['weights'] / 2**20:7.1f} MiB  peak +{(r['peak'] - r['before']) / 2**20:7.1f} "
              f"MiB ({r['peak_over_weights']:.2f}x)  kept +{(r['after'] - r['before']) / 2**20:7.1f} MiB "
              f"({r['kept_over_weights']:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"preset": args.preset, "shard": args.shard, "shards": shards,
                                    "torch": torch.__version__, "results": results}, indent=2))
    print(f"wrote {args.out}")
    over = [k for k, r in results.items() if not k.startswith("llama") and k not in CAST_ON_LOAD and args.check
            and r["peak_over_weights"] > args.check]
    if over:
        raise SystemExit(f"{', '.join(over)}: peak above {args.check}x the weights")


if __name__ == "__main__":
    main()
