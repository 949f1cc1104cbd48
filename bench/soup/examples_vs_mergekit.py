"""mergekit's published example configs, run verbatim by ``paperlab soup merge`` and compared
with mergekit on the same inputs.

    PYTHONPATH=src python bench/soup/examples_vs_mergekit.py --mergekit PATH/mergekit-yaml \
        --examples PATH/TO/mergekit/examples [--json out.json]

The examples name Hugging Face models (``psmathur/orca_mini_v3_13b``, ...). For each id a tiny
random Llama (40 layers, hidden 16: the layer ranges of the examples fit) is laid out in a
temporary Hugging Face cache, which ``paperlab soup merge`` reads with the YAML unchanged
(offline). mergekit cannot resolve ids offline, so it gets a copy of the YAML with each id
replaced by the model's local directory. Both outputs are compared element by element; each
example runs in our default float32 arithmetic and with ``--compute-dtype yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))

from vs_mergekit import exact_row, load  # noqa: E402

SHA = "0" * 40


def model_ids(text: str) -> list[str]:
    return sorted(set(re.findall(r"model:\s*([^\s#]+)", text)))


def tiny(out: Path, seed: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=40, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=32, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.to(torch.bfloat16).save_pretrained(out)
    return out


def cache(hub: Path, repo: str, src: Path) -> None:
    snap = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / SHA
    snap.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, snap)
    refs = snap.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(SHA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit", required=True)
    ap.add_argument("--examples", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=HERE / "examples_vs_mergekit_results.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soup-examples-"))
    hub = root / "hub"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    mk_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "HF_HUB_CACHE")}
    results: dict = {}
    local: dict[str, Path] = {}
    try:
        for example in sorted(args.examples.glob("*.yml")):
            text = example.read_text()
            for i, mid in enumerate(model_ids(text)):
                if mid not in local:
                    local[mid] = tiny(root / "local" / f"m{len(local)}", 100 + len(local) + i)
                    cache(hub, mid, local[mid])
            ours_cfg = root / example.name
            shutil.copyfile(example, ours_cfg)  # verbatim
            mk_text = text
            for mid, path in local.items():
                mk_text = re.sub(rf"(model:\s*){re.escape(mid)}(?=\s|$)", rf"\g<1>{path}", mk_text)
            mk_cfg = root / f"mk-{example.name}"
            mk_cfg.write_text(mk_text)
            mk_out = root / f"mk-{example.stem}"
            r = subprocess.run([args.mergekit, str(mk_cfg), str(mk_out), "--no-copy-tokenizer", "--no-write-model-card",
                                "-j", "1"], env=mk_env, capture_output=True, text=True)
            if r.returncode:
                results[example.name] = {"mergekit_error": (r.stderr.strip().splitlines() or ["?"])[-1]}
                print(f"{example.name:28} mergekit failed: {results[example.name]['mergekit_error']}")
                continue
            for mode, extra in (("float32", []), ("yaml", ["--compute-dtype", "yaml"])):
                out = root / f"ours-{example.stem}-{mode}"
                r = subprocess.run([sys.executable, "-m", "paperlab", "soup", "merge", str(ours_cfg), str(out), "--quiet",
                                    "-j", "1", *extra], env=env, capture_output=True, text=True)
                key = f"{example.name}/{mode}"
                if r.returncode:
                    results[key] = {"error": r.stderr.strip().splitlines()[-1]}
                    print(f"{key:36} ERROR {results[key]['error']}")
                    continue
                row = exact_row(load(out), load(mk_out))
                results[key] = row
                print(f"{key:36} {100 * row['identical']:8.4f}% identical, max {row['max_ulp']} ulp, {row['tensors']} tensors"
                      f"{' NAMES DIFFER' if row['names_differ'] else ''}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
