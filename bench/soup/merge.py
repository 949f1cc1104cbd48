"""Benchmark: paperlab's streaming merge vs mergekit vs the I/O floor, plus in-memory rebuilds.

    PYTHONPATH=src nice python bench/soup/merge.py [--params 0.47] [--rounds 3] [--json results.json]

What it does, in one run on one machine:
1. writes 4 random bf16 Llama-shaped checkpoints of about 0.5B parameters each (about 1 GB
   each) into a temporary directory (removed at the end);
2. the I/O floor: a process that reads every input byte once and writes one output of the
   same size as a merged model, alternating with our merge over ``--rounds`` pairs (each run
   after ``sync``); the pair with the median ratio is reported;
3. the same linear merge (weights 0.4/0.3/0.2/0.1) by ``paperlab soup merge`` and by
   ``mergekit-yaml`` (installed into a separate venv under ~/.cache/paperlab/soup, torch==2.13.0
   first so that pip never pulls a CUDA torch; or ``--mergekit PATH`` to an existing one), each
   in its own process: wall time and peak RSS (from wait4);
4. checks that our output equals mergekit's within 1 bf16 ulp, tensor by tensor;
4b. the same for a TIES merge (m0 as base, m1-m3 at density 0.5) and a slerp (m0 -> m1, t = 0.3):
   wall, peak RSS and the share of elements within 2 bf16 ulp of mergekit's;
5. the in-memory soup: load the 4 experts once, rebuild the soup into a live model, vs a disk merge.
Prints a table with the ratios and writes JSON. Never part of ``make test``.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

WEIGHTS = [0.4, 0.3, 0.2, 0.1]
VENV = Path(os.environ.get("PAPERLAB_CACHE", Path.home() / ".cache" / "paperlab")) / "soup" / "mergekit-venv"


def llama_config(params_b: float) -> dict:
    """A Llama config of about ``params_b`` billion parameters (hidden 1024, vocab 32000)."""
    hidden, inter, vocab = 1024, 4096, 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    layers = max(1, round((params_b * 1e9 - 2 * vocab * hidden) / per_layer))
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 16,
        "num_key_value_heads": 16, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    }


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    out = [("model.embed_tokens.weight", (v, h))]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        out += [(p + f"self_attn.{n}_proj.weight", (h, h)) for n in "qkvo"]
        out += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)), (p + "mlp.down_proj.weight", (h, i))]
    return out + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def write_random_checkpoint(out: Path, cfg: dict, seed: int) -> int:
    """Stream a random bf16 checkpoint to disk (tensor by tensor, with our writer)."""
    import torch

    from paperlab.soup.writer import OutTensor, ShardedWriter

    out.mkdir(parents=True)
    shapes = tensor_shapes(cfg)
    outs = [OutTensor(n, "bfloat16", s, 2 * int(torch.Size(s).numel())) for n, s in shapes]
    w = ShardedWriter(out, outs, 5 * 10**9)
    gen = torch.Generator().manual_seed(seed)
    for name, shape in shapes:
        t = torch.randn(shape, generator=gen, dtype=torch.float32).mul_(0.02).to(torch.bfloat16)
        w.write(name, memoryview(t.view(torch.uint8).numpy()).cast("B"))
    w.close()
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return sum(o.nbytes for o in outs)


FLOOR = r"""
import sys, os, mmap
paths, out, size = sys.argv[1:-2], sys.argv[-2], int(sys.argv[-1])
direct = os.environ.get("FLOOR_DIRECT") == "1"
buf = mmap.mmap(-1, 64 << 20); mv = memoryview(buf)  # page-aligned, as O_DIRECT wants
for p in paths:
    with open(p, "rb", buffering=0) as f:
        while f.readinto(mv):
            pass
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o644)
left = -(-size // 4096) * 4096 if direct else size
while left:
    left -= os.write(fd, mv[: min(left, len(mv))])
if direct:
    os.ftruncate(fd, size)
os.close(fd)
"""

# What a process pays before it can merge anything: the interpreter and torch's import.
IMPORT_TORCH = "import torch"


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` to completion; wall seconds and peak RSS (MB) of that child alone."""
    with tempfile.TemporaryFile() as errf:  # a file, not a pipe: progress bars could fill a pipe
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errf)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err[-3000:]}")
    out = {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}
    m = re.search(r"shard\(s\), ([0-9.]+) s", err)  # our CLI's own timing, without interpreter start-up
    if m:
        out["merge_phase_s"] = float(m.group(1))
    return out


def ensure_mergekit() -> Path:
    """A venv with mergekit; torch==2.13.0 (CPU) is installed first so pip never fetches CUDA."""
    exe = VENV / "bin" / "mergekit-yaml"
    if exe.exists():
        return exe
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "mergekit"], check=True)
    return exe


def compare_outputs(a_dir: Path, b_dir: Path, inputs: list[Path]) -> dict:
    """Compare two bf16 merge outputs tensor by tensor.

    An element counts as agreeing when the two are at most 1 bf16 ulp apart, or when both lie
    within float32 accumulation error of each other: |a - b| <= 2^-21 * sum_i |w_i x_i|. The
    second case is catastrophic cancellation (the exact sum is ~0 and each float32 computation
    returns rounding noise around 1e-10, many bf16 "ulps" apart near zero but equally right).
    """
    import torch
    from safetensors import safe_open

    def files(d: Path) -> dict[str, Path]:
        idx = d / "model.safetensors.index.json"
        if idx.exists():
            return {k: d / v for k, v in json.loads(idx.read_text())["weight_map"].items()}
        out = {}
        for f in d.glob("*.safetensors"):
            with safe_open(str(f), "pt") as fh:
                out.update({k: f for k in fh.keys()})  # noqa: SIM118
        return out

    fa, fb = files(a_dir), files(b_dir)
    fi = [files(p) for p in inputs]
    if set(fa) != set(fb):
        raise SystemExit(f"outputs differ in tensor names: {sorted(set(fa) ^ set(fb))[:5]}")

    def ordered(x: torch.Tensor) -> torch.Tensor:
        i = x.view(torch.int16).to(torch.int32)
        return torch.where(i < 0, -32768 - i, i)

    def get(f: Path, name: str) -> torch.Tensor:
        with safe_open(str(f), "pt") as h:
            return h.get_tensor(name)

    total = identical = within_ulp = agree = 0
    worst_non_cancelling = 0
    for name in fa:
        a, b = get(fa[name], name), get(fb[name], name)
        if a.dtype != torch.bfloat16 or b.dtype != torch.bfloat16:
            raise SystemExit(f"{name}: dtypes {a.dtype} vs {b.dtype}")
        scale = sum(get(f[name], name).float().abs() * w for f, w in zip(fi, WEIGHTS, strict=False))
        ulps = (ordered(a) - ordered(b)).abs()
        close = (a.float() - b.float()).abs() <= scale * 2.0**-21
        total += a.numel()
        identical += int((ulps == 0).sum())
        within_ulp += int((ulps <= 1).sum())
        agree += int(((ulps <= 1) | close).sum())
        rest = ulps[~close]
        if rest.numel():
            worst_non_cancelling = max(worst_non_cancelling, int(rest.max()))
    return {"elements": total, "identical": identical / total, "within_1_ulp": within_ulp / total,
            "agree": agree / total, "max_ulp_outside_cancellation": worst_non_cancelling, "tensors": len(fa)}


def _data_bytes(f: Path) -> int:
    """Tensor bytes of a safetensors file (its size less the header)."""
    import struct

    with open(f, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
    return f.stat().st_size - 8 - n


def ulp_agreement(a_dir: Path, b_dir: Path) -> dict:
    """Share of bf16 elements identical and within 2 ulp between two outputs, and the worst gap."""
    import torch
    from safetensors.torch import load_file

    def load(d: Path) -> dict:
        out: dict = {}
        for f in sorted(d.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    def ordered(x: torch.Tensor) -> torch.Tensor:
        i = x.view(torch.int16).to(torch.int32)
        return torch.where(i < 0, -32768 - i, i)

    a, b = load(a_dir), load(b_dir)
    total = same = within = worst = 0
    for k in a:
        u = (ordered(a[k]) - ordered(b[k].to(a[k].dtype))).abs()
        total += u.numel()
        same += int((u == 0).sum())
        within += int((u <= 2).sum())
        worst = max(worst, int(u.max()))
    return {"elements": total, "identical": same / total, "within_2_ulp": within / total, "max_ulp": worst}


def method_rows(root: Path, paths: list[Path], py: str, env: dict, mergekit: Path | None) -> dict:
    """TIES and slerp on the same checkpoints, ours vs mergekit, each in its own process."""
    head = "dtype: float32\nout_dtype: bfloat16\n"
    configs = {
        "ties": (f"merge_method: ties\nbase_model: {paths[0]}\n{head}models:\n" + "".join(
            f"  - model: {p}\n    parameters: {{weight: {w}, density: 0.5}}\n"
            for p, w in zip(paths[1:], (0.5, 0.3, 0.2), strict=True))),
        "slerp": (f"merge_method: slerp\nbase_model: {paths[0]}\n{head}parameters: {{t: 0.3}}\nmodels:\n"
                  f"  - model: {paths[0]}\n  - model: {paths[1]}\n"),
    }
    rows: dict = {}
    for name, text in configs.items():
        cfg = root / f"{name}.yml"
        cfg.write_text(text)
        row = {"ours": timed([py, "-m", "paperlab", "soup", "merge", str(cfg), str(root / f"ours-{name}")], env)}
        if mergekit is not None:
            row["mergekit"] = timed([str(mergekit), str(cfg), str(root / f"mk-{name}"), "--no-copy-tokenizer",
                                     "--no-write-model-card"], {**env, "PYTHONPATH": ""})
        rows[name] = row
    return rows


def in_memory_rebuild(paths: list[str], merged: str, repeats: int = 3) -> dict:
    """Load the experts once, then time rebuilding the soup into a live model; also time loading
    the disk-merged soup with transformers (the other half of evaluating a soup via disk)."""
    import torch
    from transformers import AutoModelForCausalLM

    from paperlab.soup.memory import ExpertBank

    # One intra-op thread, like the disk engine: on a shared 2-core machine two OpenMP threads
    # were up to 10x slower than one (each waits for the other whenever it is preempted).
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bank = ExpertBank([Path(p) for p in paths])
    load_s = time.perf_counter() - t0
    AutoModelForCausalLM.from_pretrained(paths[0], dtype=torch.bfloat16)  # warm imports and caches
    t0 = time.perf_counter()
    live = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.bfloat16)
    load_merged_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        bank.build_into(live, WEIGHTS)
        times.append(time.perf_counter() - t)
    return {"load_experts_s": load_s, "rebuild_s": min(times), "rebuild_all_s": times, "load_merged_s": load_merged_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, default=0.47, help="billions of parameters per model")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "soup" / "merge_results.json")
    ap.add_argument("--tmp", type=Path, default=None, help="where to put the ~5 GB of files")
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--mergekit", type=Path, default=None, help="an existing mergekit-yaml (its own venv)")
    ap.add_argument("--skip-rows", action="store_true", help="only the linear merge (no TIES, slerp)")
    ap.add_argument("--rounds", type=int, default=3, help="floor / ours pairs, alternating (the median ratio is kept)")
    ap.add_argument("--inputs", type=Path, default=None, help="reuse m0..m3 written by an earlier run here (kept)")
    ap.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # internal: one checkpoint
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        print(write_random_checkpoint(args.generate, llama_config(args.params), args.seed))
        return
    mergekit = None if args.skip_mergekit else (args.mergekit or ensure_mergekit())
    cfg = llama_config(args.params)
    root = args.inputs or Path(tempfile.mkdtemp(prefix="soup-bench-", dir=args.tmp))
    results: dict = {"config": {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")},
                     "models": 4, "weights": WEIGHTS, "cpu_count": os.cpu_count()}
    try:
        t = time.perf_counter()
        paths = [root / f"m{i}" for i in range(4)]
        size = 0
        for i, p in enumerate(paths):
            if args.inputs:
                size = _data_bytes(p / "model.safetensors")
                continue
            # In a child process: this parent must stay small, since a forked child's peak RSS
            # (as wait4 reports it) starts from the parent's.
            size = int(subprocess.run([sys.executable, __file__, "--params", str(args.params), "--generate", str(p),
                                       "--seed", str(i)], check=True, capture_output=True, text=True).stdout)
        results["model_bytes"] = size
        results["params"] = size // 2
        print(f"wrote 4 x {size / 1e9:.2f} GB ({size // 2 / 1e9:.3f}B params) in {time.perf_counter() - t:.0f} s")
        yaml_cfg = root / "merge.yml"
        # mergekit computes in `dtype`; float32 arithmetic with a bf16 output matches ours.
        yaml_cfg.write_text("merge_method: linear\ndtype: float32\nout_dtype: bfloat16\nmodels:\n" + "".join(
            f"  - model: {p}\n    parameters:\n      weight: {w}\n" for p, w in zip(paths, WEIGHTS, strict=False)))
        files = [str(p / "model.safetensors") for p in paths]
        py = sys.executable
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
        timed([py, "-c", FLOOR, *files, str(root / "floor.bin"), str(size)])  # warm the page cache
        (root / "floor.bin").unlink()

        def floor(direct: bool = False) -> dict:
            os.sync()  # no earlier run's dirty pages left to write back during this one
            got = timed([py, "-c", FLOOR, *files, str(root / "floor.bin"), str(size)],
                        {**os.environ, "FLOOR_DIRECT": "1" if direct else "0"})
            (root / "floor.bin").unlink()
            return got

        def ours() -> dict:
            shutil.rmtree(root / "ours", ignore_errors=True)
            os.sync()
            return timed([py, "-m", "paperlab", "soup", "merge", str(yaml_cfg), str(root / "ours")], env)

        # The kernel's share of the same I/O varies several-fold from run to run on a shared VM:
        # a buffered write is fast when the pages an earlier run freed are taken again, and slow
        # when fresh ones are (our merge writes with O_DIRECT, so a floor run right after ours is
        # one of the slow ones). So the floor is measured both ways, buffered and direct, every
        # round, the three runs in a rotating order, and the median ratio counts.
        pairs = []
        for r in range(args.rounds):
            runs = {"floor": floor, "floor_direct": lambda: floor(True), "ours": ours}
            order = list(runs)[r % 3:] + list(runs)[: r % 3]
            got = {k: runs[k]() for k in order}
            got["import_torch"] = timed([py, "-c", IMPORT_TORCH], env)
            a, direct, b = got["floor"], got["floor_direct"], got["ours"]
            pairs.append({**got, "order": order, "ratio": b["wall_s"] / a["wall_s"],
                          "ratio_direct": b["wall_s"] / direct["wall_s"]})
            print(f"round {r + 1} ({', '.join(order)}): floor {a['wall_s']:.2f} s, direct floor {direct['wall_s']:.2f} s, "
                  f"ours {b['wall_s']:.2f} s ({b.get('merge_phase_s', float('nan')):.2f} s merging), import torch "
                  f"{got['import_torch']['wall_s']:.2f} s: {pairs[-1]['ratio']:.2f}x, {pairs[-1]['ratio_direct']:.2f}x",
                  flush=True)
        mid = sorted(pairs, key=lambda x: x["ratio"])[len(pairs) // 2]
        results["floor"], results["ours"], results["rounds"] = mid["floor"], mid["ours"], pairs
        results["floor_direct"] = sorted(pairs, key=lambda x: x["ratio_direct"])[len(pairs) // 2]["floor_direct"]
        if mergekit is not None:
            results["mergekit"] = timed([str(mergekit), str(yaml_cfg), str(root / "mk"), "--no-copy-tokenizer",
                                         "--no-write-model-card"], {**env, "PYTHONPATH": ""})
        if not args.skip_rows:
            results["rows"] = method_rows(root, paths, py, env, mergekit)
        # Comparisons load tensors in this process, so they come after every timed child: a
        # child's peak RSS as wait4 reports it starts from this process's peak.
        if mergekit is not None:
            results["vs_mergekit"] = compare_outputs(root / "ours", root / "mk", paths)
            for name, row in results.get("rows", {}).items():
                row["vs_mergekit"] = ulp_agreement(root / f"ours-{name}", root / f"mk-{name}")
        results["in_memory"] = json.loads(subprocess.run(
            [sys.executable, "-c", f"import sys, json; sys.path.insert(0, {str(REPO / 'bench' / 'soup')!r}); "
             f"import merge as b; print(json.dumps(b.in_memory_rebuild({[str(p) for p in paths]!r}, "
             f"merged={str(root / 'ours')!r})))"],
            check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1])
    finally:
        if args.inputs:
            for d in root.iterdir():
                if d.name not in {f"m{i}" for i in range(4)}:
                    if d.is_dir():
                        shutil.rmtree(d, ignore_errors=True)
                    else:
                        d.unlink()
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(results)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


def report(r: dict) -> None:
    rows = [("I/O floor", r["floor"]), *([("I/O floor, O_DIRECT", r["floor_direct"])] if "floor_direct" in r else []),
            ("paperlab soup merge", r["ours"])]
    if "mergekit" in r:
        rows.append(("mergekit-yaml", r["mergekit"]))
    print(f"\nlinear merge of 4 x {r['params'] / 1e9:.2f}B-param bf16 checkpoints ({r['model_bytes'] / 1e9:.2f} GB each), "
          f"{r['cpu_count']} CPUs")
    print(f"{'':22} {'wall s':>8} {'peak RSS MB':>12}")
    for name, m in rows:
        print(f"{name:22} {m['wall_s']:8.2f} {m['peak_rss_mb']:12.0f}")
    if "merge_phase_s" in r["ours"]:
        print(f"(ours without interpreter and torch start-up: {r['ours']['merge_phase_s']:.2f} s)")
    ours, floor = r["ours"], r["floor"]
    ratios = ", ".join(f"{x['ratio']:.2f}" for x in r.get("rounds", []))
    print(f"\nours / floor wall: {ours['wall_s'] / floor['wall_s']:.2f}x, the median of rounds {ratios} (target < 1.0x)")
    if r.get("rounds") and "ratio_direct" in r["rounds"][0]:
        rd = sorted(x["ratio_direct"] for x in r["rounds"])
        imp = sorted(x["import_torch"]["wall_s"] for x in r["rounds"])
        print(f"ours / floor with direct writes: median {rd[len(rd) // 2]:.2f}x (rounds {', '.join(f'{x:.2f}' for x in rd)}); "
              f"`python -c 'import torch'` alone: median {imp[len(imp) // 2]:.2f} s")
    if "mergekit" in r:
        mk = r["mergekit"]
        print(f"ours / mergekit wall: {ours['wall_s'] / mk['wall_s']:.2f}x")
        print(f"ours / mergekit peak RSS: {ours['peak_rss_mb'] / mk['peak_rss_mb']:.2f}x (target <= 0.5x)")
        c = r["vs_mergekit"]
        print(f"vs mergekit over {c['elements']:,} elements: {100 * c['identical']:.3f}% bit-identical, "
              f"{100 * c['within_1_ulp']:.4f}% within 1 bf16 ulp, {100 * c['agree']:.4f}% within 1 ulp or float32 "
              f"cancellation noise; max ulp outside cancellation: {c['max_ulp_outside_cancellation']} (target <= 1)")
    for name, row in r.get("rows", {}).items():
        o = row["ours"]
        line = f"{name:6} ours {o['wall_s']:7.2f} s {o['peak_rss_mb']:7.0f} MB"
        if "mergekit" in row:
            m, c = row["mergekit"], row["vs_mergekit"]
            line += (f" | mergekit {m['wall_s']:7.2f} s {m['peak_rss_mb']:7.0f} MB | wall {o['wall_s'] / m['wall_s']:.2f}x, "
                     f"RSS {o['peak_rss_mb'] / m['peak_rss_mb']:.2f}x | {100 * c['within_2_ulp']:.4f}% within 2 bf16 ulp "
                     f"({100 * c['identical']:.3f}% identical, max {c['max_ulp']} ulp)")
        print(line)
    im = r["in_memory"]
    disk = ours.get("merge_phase_s", ours["wall_s"])
    print(f"in-memory: load 4 experts once {im['load_experts_s']:.2f} s; rebuild into a live model {im['rebuild_s']:.2f} s")
    print(f"  disk merge (CLI wall) / rebuild = {ours['wall_s'] / im['rebuild_s']:.1f}x; "
          f"(merge phase + load soup {im['load_merged_s']:.2f} s) / rebuild = {(disk + im['load_merged_s']) / im['rebuild_s']:.1f}x; "
          f"merge phase / rebuild = {disk / im['rebuild_s']:.1f}x (target >= 10x)")
    if "merge_phase_s" in ours:
        print(f"merge phase / floor wall: {ours['merge_phase_s'] / floor['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
