"""Side by side with mergekit: every method on the same tiny checkpoints, compared element by
element in ulps of the output dtype, in both of our compute modes.

    PYTHONPATH=src python bench/soup/vs_mergekit.py --mergekit /path/to/venv/bin/mergekit-yaml [--json out.json]

mergekit lives in its own virtual environment (never in paperlab's); give its ``mergekit-yaml``.
The inputs are random 4-layer Llamas (hidden 64) written by transformers. Three modes:

- ``float32``: both tools with ``dtype: float32`` (our default arithmetic), float32 and
  bfloat16 outputs: deterministic methods should agree to the bit;
- ``yaml-float16``: ``dtype: float16`` with our ``--compute-dtype yaml`` (mergekit's float16
  arithmetic): deterministic methods should agree to the bit;
- ``default-float16``: ``dtype: float16`` with our default float32 arithmetic: how far
  mergekit's float16 arithmetic is from float32 (the share of elements that differ).

Methods that draw random numbers (dare_*, della*) cannot agree draw by draw (mergekit uses
torch's global generator); for those the share of entries each tool leaves at the base value
and the mean |theta - base| are compared instead.
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

RANDOM = {"dare_linear", "dare_ties", "della", "della_linear"}


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
    plain3 = f"  - model: {a}\n  - model: {b}\n  - model: {c}\n"
    w3 = (f"  - model: {a}\n    parameters: {{weight: 0.5}}\n  - model: {b}\n    parameters: {{weight: 0.3}}\n"
          f"  - model: {c}\n    parameters: {{weight: 0.2}}\n")
    head = "dtype: DTYPE\nout_dtype: OUT\n"
    one = f"  - model: {a}\n"
    return {
        "linear": f"merge_method: linear\n{head}models:\n{two}",
        "task_arithmetic": f"merge_method: task_arithmetic\nbase_model: {base}\n{head}parameters: {{lambda: 0.8}}\nmodels:\n{three}",
        "ties": f"merge_method: ties\nbase_model: {base}\n{head}models:\n  - model: {base}\n{three}",
        "ties_no_normalize": f"merge_method: ties\nbase_model: {base}\n{head}parameters: {{normalize: false, int8_mask: true}}\nmodels:\n{three}",
        "breadcrumbs": f"merge_method: breadcrumbs\nbase_model: {base}\n{head}parameters: {{gamma: 0.05}}\nmodels:\n{three}",
        "breadcrumbs_ties": f"merge_method: breadcrumbs_ties\nbase_model: {base}\n{head}models:\n{three}",
        "dare_linear": f"merge_method: dare_linear\nbase_model: {base}\n{head}models:\n{three}",
        "dare_ties": f"merge_method: dare_ties\nbase_model: {base}\n{head}models:\n{three}",
        "della": f"merge_method: della\nbase_model: {base}\n{head}parameters: {{epsilon: 0.05}}\nmodels:\n{three}",
        "della_linear": f"merge_method: della_linear\nbase_model: {base}\n{head}parameters: {{epsilon: 0.05}}\nmodels:\n{three}",
        "slerp": (f"merge_method: slerp\nbase_model: {a}\n{head}slices:\n  - sources:\n      - model: {a}\n"
                  f"        layer_range: [0, 4]\n      - model: {b}\n        layer_range: [0, 4]\nparameters:\n  t:\n"
                  "    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - filter: mlp\n"
                  "      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\n"),
        "nuslerp": f"merge_method: nuslerp\n{head}models:\n{two}",
        "nuslerp_base": f"merge_method: nuslerp\nbase_model: {base}\n{head}models:\n{two}",
        "nuslerp_rows": f"merge_method: nuslerp\n{head}parameters: {{nuslerp_flatten: false}}\nmodels:\n{two}",
        "nuslerp_row_wise": f"merge_method: nuslerp\n{head}parameters: {{nuslerp_flatten: false, nuslerp_row_wise: true}}\nmodels:\n{two}",
        "model_stock": f"merge_method: model_stock\nbase_model: {base}\n{head}models:\n{plain3}",
        "model_stock_rows": f"merge_method: model_stock\nbase_model: {base}\n{head}parameters: {{filter_wise: true}}\nmodels:\n{plain3}",
        "passthrough": (f"merge_method: passthrough\n{head}slices:\n  - sources:\n      - model: {a}\n        layer_range: [0, 3]\n"
                        f"  - sources:\n      - model: {b}\n        layer_range: [1, 4]\n"),
        "sce": f"merge_method: sce\nbase_model: {base}\n{head}models:\n{plain3}",
        "sce_topk": f"merge_method: sce\nbase_model: {base}\n{head}parameters: {{select_topk: 0.5}}\nmodels:\n{plain3}",
        "multislerp": f"merge_method: multislerp\n{head}models:\n{w3}",
        "multislerp_base": f"merge_method: multislerp\nbase_model: {base}\n{head}models:\n{w3}",
        "karcher": f"merge_method: karcher\n{head}models:\n{plain3}",
        "karcher_base": f"merge_method: karcher\nbase_model: {base}\n{head}parameters: {{max_iter: 20, tol: 1e-6}}\nmodels:\n{plain3}",
        "nearswap": f"merge_method: nearswap\nbase_model: {base}\n{head}parameters: {{t: 0.05}}\nmodels:\n{one}",
        "arcee_fusion": f"merge_method: arcee_fusion\nbase_model: {base}\n{head}models:\n{one}",
        "ram": f"merge_method: ram\nbase_model: {base}\n{head}parameters: {{epsilon: 0.05}}\nmodels:\n{plain3}",
        "ramplus_tl": f"merge_method: ramplus_tl\nbase_model: {base}\n{head}parameters: {{epsilon: 0.05, r: 0.5, alpha: 0.3}}\nmodels:\n{plain3}",
    }


def load(d: Path) -> dict:
    from safetensors.torch import load_file

    out: dict = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def ulps(a, b):  # noqa: ANN001, ANN201
    import torch

    bits, lo = {torch.float32: (torch.int32, -(2**31))}.get(a.dtype, (torch.int16, -(2**15)))
    ia, ib = a.view(bits).to(torch.int64), b.view(bits).to(torch.int64)
    fa = torch.where(ia < 0, lo - ia, ia)
    fb = torch.where(ib < 0, lo - ib, ib)
    return (fa - fb).abs()


def exact_row(a: dict, b: dict) -> dict:
    common = sorted(set(a) & set(b))
    total = same = within2 = worst = 0
    for k in common:
        u = ulps(a[k].contiguous(), b[k].to(a[k].dtype).contiguous())
        total += u.numel()
        same += int((u == 0).sum())
        within2 += int((u <= 2).sum())
        worst = max(worst, int(u.max()))
    return {"tensors": len(common), "names_differ": sorted(set(a) ^ set(b)), "elements": total,
            "identical": same / max(total, 1), "within_2_ulp": within2 / max(total, 1), "max_ulp": worst}


def random_row(a: dict, b: dict, base: dict) -> dict:
    """Statistics both tools should share for a random drop: how many entries stay at the base
    value, and the mean distance from the base."""
    def stats(out: dict) -> tuple[float, float]:
        kept = dist = n = 0
        for k, v in out.items():
            if k in base and v.shape == base[k].shape:
                d = (v.float() - base[k].to(v.dtype).float()).abs()
                kept += int((d == 0).sum())
                dist += float(d.sum())
                n += d.numel()
        return kept / n, dist / n
    (ka, da), (kb, db) = stats(a), stats(b)
    return {"at_base_ours": ka, "at_base_mergekit": kb, "mean_abs_delta_ours": da, "mean_abs_delta_mergekit": db,
            "delta_ratio": da / db if db else float("nan")}


def run_pair(cfg: Path, ours: Path, mk: Path, mergekit: str, env: dict, extra: list[str]) -> str | None:
    mk_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    r1 = subprocess.run([sys.executable, "-m", "paperlab", "soup", "merge", str(cfg), str(ours), "--quiet", "-j", "1", *extra],
                        env=env, capture_output=True, text=True)
    # One torch thread for mergekit too (ours always runs one): full reductions (karcher's BLAS
    # dot products) split by thread, so the last bits depend on the thread count.
    r2 = subprocess.run([mergekit, str(cfg), str(mk), "--no-copy-tokenizer", "--no-write-model-card", "-j", "1"],
                        env=mk_env, capture_output=True, text=True)
    if r1.returncode or r2.returncode:
        return ("ours: " + r1.stderr.strip().splitlines()[-1] if r1.returncode
                else "mergekit: " + r2.stderr.strip().splitlines()[-1])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit", required=True, help="mergekit-yaml from mergekit's own venv")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "soup" / "vs_mergekit_results.json")
    ap.add_argument("--only", default="", help="comma-separated config names")
    ap.add_argument("--modes", default="float32,yaml-float16,default-float16")
    ap.add_argument("--dtype", default="float32", help="the inputs' dtype (bfloat16 gives ties in magnitude)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soup-vs-mk-"))
    models = [make_llama(root / n, s, dtype=args.dtype) for n, s in (("a", 1), ("b", 2), ("c", 3))]
    base = make_llama(root / "base", 9, dtype=args.dtype)
    base_state = load(base)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    results: dict = {"inputs_dtype": args.dtype}
    only = set(args.only.split(",")) if args.only else None
    modes = {"float32": ("float32", ("float32", "bfloat16"), []),
             "yaml-float16": ("float16", ("float16",), ["--compute-dtype", "yaml"]),
             "default-float16": ("float16", ("float16",), [])}
    for mode in args.modes.split(","):
        dtype, outs, extra = modes[mode]
        for out_dtype in outs:
            for name, text in configs(models, base).items():
                if only and name not in only:
                    continue
                key = f"{name}/{mode}/{out_dtype}"
                cfg = root / f"{name}-{mode}-{out_dtype}.yml"
                cfg.write_text(text.replace("DTYPE", dtype).replace("OUT", out_dtype))
                ours, mk = root / f"ours-{key.replace('/', '-')}", root / f"mk-{key.replace('/', '-')}"
                err = run_pair(cfg, ours, mk, args.mergekit, env, extra)
                if err:
                    results[key] = {"error": err}
                    print(f"{key:40} ERROR {err}")
                    continue
                a, b = load(ours), load(mk)
                if name in RANDOM:
                    row = random_row(a, b, base_state)
                    print(f"{key:40} random: at base {100 * row['at_base_ours']:.2f}% vs {100 * row['at_base_mergekit']:.2f}%,"
                          f" mean |delta| ratio {row['delta_ratio']:.4f}")
                else:
                    row = exact_row(a, b)
                    print(f"{key:40} {100 * row['identical']:9.4f}% identical, {100 * row['within_2_ulp']:9.4f}% within 2 ulp, "
                          f"max {row['max_ulp']} ulp, {row['tensors']} tensors{' NAMES DIFFER' if row['names_differ'] else ''}")
                results[key] = row
                args.json.write_text(json.dumps(results, indent=2) + "\n")  # a partial run keeps its rows
                shutil.rmtree(ours, ignore_errors=True)
                shutil.rmtree(mk, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
