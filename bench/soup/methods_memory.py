"""Benchmark: peak RSS and wall time of every merge method, ours vs mergekit, in the same run.

    PYTHONPATH=src nice python bench/soup/methods_memory.py --mergekit PATH/mergekit-yaml \
        [--params 0.25] [--methods linear,ties,...] [--repeats 1] [--json out.json]

Writes 3 random bf16 Llama-shaped checkpoints (hidden 1024, vocab 32000, about ``--params``
billion parameters each) and runs each method once per repeat with ``paperlab soup merge`` and
with ``mergekit-yaml`` (its own venv, its default threads), each in its own process: peak RSS
from ``wait4`` and wall time; the load average before each pair is recorded. Both compute in
float32 and write bfloat16 (``dtype: float32, out_dtype: bfloat16``). Prints the ratios (ours /
mergekit) and writes JSON; rows of methods not run are kept from an existing ``--json`` of the
same size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))

from merge import _data_bytes, ensure_mergekit, timed  # noqa: E402

ALL = ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della",
       "della_linear", "sce", "ram", "ramplus_tl", "model_stock", "slerp", "nuslerp", "multislerp", "karcher",
       "nearswap", "arcee_fusion"]


def config(method: str, m: list[Path]) -> str:
    head = f"merge_method: {method}\ndtype: float32\nout_dtype: bfloat16\n"
    w3 = "".join(f"  - model: {p}\n    parameters: {{weight: {w}}}\n" for p, w in zip(m, (0.5, 0.3, 0.2), strict=True))
    base = f"base_model: {m[0]}\n"
    if method in ("linear", "multislerp"):
        return head + "models:\n" + w3
    if method == "karcher":
        return head + "models:\n" + "".join(f"  - model: {p}\n" for p in m)
    if method == "nuslerp":
        return head + "models:\n" + "".join(f"  - model: {p}\n    parameters: {{weight: 0.5}}\n" for p in m[1:])
    if method in ("slerp", "nearswap"):
        return head + base + f"parameters: {{t: {0.3 if method == 'slerp' else 0.01}}}\nmodels:\n  - model: {m[1]}\n"
    if method == "arcee_fusion":
        return head + base + f"models:\n  - model: {m[1]}\n"
    if method in ("sce", "ram", "ramplus_tl", "model_stock"):
        return head + base + "models:\n" + "".join(f"  - model: {p}\n" for p in m[1:])
    # task-vector methods: weight and density per model
    return head + base + "models:\n" + "".join(
        f"  - model: {p}\n    parameters: {{weight: 0.5, density: 0.5}}\n" for p in m[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit", type=Path, default=None)
    ap.add_argument("--params", type=float, default=0.25)
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "methods_memory_results.json")
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--inputs", type=Path, default=None, help="reuse m0..m2 written by an earlier run here (kept)")
    args = ap.parse_args()
    mergekit = args.mergekit or ensure_mergekit()
    root = args.inputs or Path(tempfile.mkdtemp(prefix="soup-methods-", dir=args.tmp))
    paths = [root / f"m{i}" for i in range(3)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    out: dict = {"params_b": args.params, "cpu_count": os.cpu_count(), "rows": {}}
    if args.json.is_file():  # rows of methods not run this time are kept (same model size only)
        old = json.loads(args.json.read_text())
        if old.get("params_b") == args.params:
            out["rows"] = old.get("rows", {})
    try:
        for i, p in enumerate(paths):
            if not (p / "config.json").is_file():
                subprocess.run([sys.executable, str(HERE / "merge.py"), "--params", str(args.params), "--generate", str(p),
                                "--seed", str(i)], check=True, capture_output=True, text=True)
        out["model_bytes"] = _data_bytes(paths[0] / "model.safetensors")
        for method in args.methods.split(","):
            cfg = root / f"{method}.yml"
            cfg.write_text(config(method, paths))
            runs = []
            for r in range(args.repeats):
                load = os.getloadavg()[0]
                ours = timed([sys.executable, "-m", "paperlab", "soup", "merge", str(cfg), str(root / "ours"), "--quiet"], env)
                shutil.rmtree(root / "ours", ignore_errors=True)
                mk = timed([str(mergekit), str(cfg), str(root / "mk"), "--no-copy-tokenizer", "--no-write-model-card"],
                           {**env, "PYTHONPATH": ""})
                shutil.rmtree(root / "mk", ignore_errors=True)
                row = {"ours": ours, "mergekit": mk, "load_before": load,
                       "rss_ratio": ours["peak_rss_mb"] / mk["peak_rss_mb"], "wall_ratio": ours["wall_s"] / mk["wall_s"]}
                runs.append(row)
                print(f"{method:16} run {r + 1}: ours {ours['wall_s']:7.1f} s {ours['peak_rss_mb']:6.0f} MB | mergekit "
                      f"{mk['wall_s']:7.1f} s {mk['peak_rss_mb']:6.0f} MB | wall {row['wall_ratio']:.2f}x RSS "
                      f"{row['rss_ratio']:.2f}x (load {load:.1f})", flush=True)
            out["rows"][method] = runs
            args.json.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        if not args.inputs:
            shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {args.json} ({time.strftime('%H:%M')})")


if __name__ == "__main__":
    main()
