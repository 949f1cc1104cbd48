"""Side by side with mergekit: every deterministic method on the same tiny checkpoints, compared
element by element in ulps of the output dtype.

    PYTHONPATH=src python bench/soup/vs_mergekit.py --mergekit /path/to/venv/bin/mergekit-yaml [--json out.json]

mergekit lives in its own virtual environment (never in paperlab's); give its ``mergekit-yaml``.
The inputs are random 4-layer Llamas (hidden 64) written by transformers; both tools compute in
float32 (``dtype: float32``) and write ``out_dtype`` (bfloat16 and float32 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))


def make_llama(out: Path, seed: int, layers: int = 4, hidden: int = 64, dtype: str = "float32") -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    return out


def configs(m: list[Path], base: Path) -> dict[str, str]:
    a, b, c = m
    two = f"  - model: {a}\n    parameters: {{weight: 0.7}}\n  - model: {b}\n    parameters: {{weight: 0.3}}\n"
    three = (f"  - model: {a}\n    parameters: {{weight: 0.6, density: [0.9, 0.5, 0.2]}}\n"
             f"  - model: {b}\n    parameters: {{weight: 0.3, density: 0.5}}\n"
             f"  - model: {c}\n    parameters:\n      weight: [{{filter: mlp, value: 0.4}}, {{value: -0.2}}]\n"
             "      density: 0.7\n")
    head = "dtype: float32\nout_dtype: OUT\n"
    return {
        "linear": f"merge_method: linear\n{head}models:\n{two}",
        "task_arithmetic": f"merge_method: task_arithmetic\nbase_model: {base}\n{head}parameters: {{lambda: 0.8}}\nmodels:\n{three}",
        "ties": f"merge_method: ties\nbase_model: {base}\n{head}models:\n  - model: {base}\n{three}",
        "ties_no_normalize": f"merge_method: ties\nbase_model: {base}\n{head}parameters: {{normalize: false, int8_mask: true}}\nmodels:\n{three}",
        "breadcrumbs": f"merge_method: breadcrumbs\nbase_model: {base}\n{head}parameters: {{gamma: 0.05}}\nmodels:\n{three}",
        "breadcrumbs_ties": f"merge_method: breadcrumbs_ties\nbase_model: {base}\n{head}models:\n{three}",
        "slerp": (f"merge_method: slerp\nbase_model: {a}\n{head}slices:\n  - sources:\n      - model: {a}\n"
                  f"        layer_range: [0, 4]\n      - model: {b}\n        layer_range: [0, 4]\nparameters:\n  t:\n"
                  "    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - filter: mlp\n"
                  "      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\n"),
        "nuslerp": f"merge_method: nuslerp\n{head}models:\n{two}",
        "nuslerp_base": f"merge_method: nuslerp\nbase_model: {base}\n{head}models:\n{two}",
        "nuslerp_rows": f"merge_method: nuslerp\n{head}parameters: {{nuslerp_flatten: false}}\nmodels:\n{two}",
        "model_stock": f"merge_method: model_stock\nbase_model: {base}\n{head}models:\n  - model: {a}\n  - model: {b}\n  - model: {c}\n",
        "model_stock_rows": (f"merge_method: model_stock\nbase_model: {base}\n{head}parameters: {{filter_wise: true}}\n"
                             f"models:\n  - model: {a}\n  - model: {b}\n  - model: {c}\n"),
        "passthrough": (f"merge_method: passthrough\n{head}slices:\n  - sources:\n      - model: {a}\n        layer_range: [0, 3]\n"
                        f"  - sources:\n      - model: {b}\n        layer_range: [1, 4]\n"),
    }


def load(d: Path) -> dict:
    from safetensors.torch import load_file

    out: dict = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def ulps(a, b):  # noqa: ANN001, ANN201
    import torch

    if a.dtype == torch.float32:
        ia, ib = a.view(torch.int32).to(torch.int64), b.view(torch.int32).to(torch.int64)
        lo = -(2**31)
    else:
        ia, ib = a.view(torch.int16).to(torch.int64), b.view(torch.int16).to(torch.int64)
        lo = -(2**15)
    fa = torch.where(ia < 0, lo - ia, ia)
    fb = torch.where(ib < 0, lo - ib, ib)
    return (fa - fb).abs()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit", required=True, help="mergekit-yaml from mergekit's own venv")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "soup" / "vs_mergekit_results.json")
    ap.add_argument("--only", default="", help="comma-separated config names")
    ap.add_argument("--dtype", default="float32", help="the inputs' dtype (bfloat16 gives ties in magnitude)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soup-vs-mk-"))
    models = [make_llama(root / n, s, dtype=args.dtype) for n, s in (("a", 1), ("b", 2), ("c", 3))]
    base = make_llama(root / "base", 9, dtype=args.dtype)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    mk_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    results = {}
    only = set(args.only.split(",")) if args.only else None
    for out_dtype in ("float32", "bfloat16"):
        for name, text in configs(models, base).items():
            if only and name not in only:
                continue
            cfg = root / f"{name}-{out_dtype}.yml"
            cfg.write_text(text.replace("OUT", out_dtype))
            ours, mk = root / f"ours-{name}-{out_dtype}", root / f"mk-{name}-{out_dtype}"
            r1 = subprocess.run([sys.executable, "-m", "paperlab", "soup", "merge", str(cfg), str(ours)],
                                env=env, capture_output=True, text=True)
            r2 = subprocess.run([args.mergekit, str(cfg), str(mk), "--no-copy-tokenizer", "--no-write-model-card"],
                                env=mk_env, capture_output=True, text=True)
            if r1.returncode or r2.returncode:
                results[f"{name}/{out_dtype}"] = {"error": (r1.stderr or r2.stderr).strip().splitlines()[-1]}
                print(f"{name:18} {out_dtype:9} ERROR {results[f'{name}/{out_dtype}']['error']}")
                continue
            a, b = load(ours), load(mk)
            common = sorted(set(a) & set(b))
            total = within2 = 0
            worst = 0
            for k in common:
                u = ulps(a[k].contiguous(), b[k].to(a[k].dtype).contiguous())
                total += u.numel()
                within2 += int((u <= 2).sum())
                worst = max(worst, int(u.max()))
            row = {"tensors": len(common), "only_ours": sorted(set(a) - set(b)), "only_mergekit": sorted(set(b) - set(a)),
                   "elements": total, "within_2_ulp": within2 / max(total, 1), "max_ulp": worst}
            results[f"{name}/{out_dtype}"] = row
            print(f"{name:18} {out_dtype:9} {row['within_2_ulp'] * 100:9.4f}% within 2 ulp, max {worst} ulp, "
                  f"{len(common)} tensors{' NAMES DIFFER' if row['only_ours'] or row['only_mergekit'] else ''}")
    shutil.rmtree(root, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
