"""The paradiff part of ``paperlab demo``: the tiny model on one editing prompt (its trajectory
strip) and a reduced benchmark of the three samplers."""

from __future__ import annotations

import time

from paperlab.demokit import DemoContext
from paperlab.report import Figure, Section, Table

DEMO_PROMPTS = 60  # the full benchmark (300 prompts) is `paperlab paradiff bench`


def run(ctx: DemoContext) -> Section:
    """Train or load the tiny model, decode one edit with the parallel sampler, and bench the samplers."""
    from paperlab.paradiff.bench import AXES, run_bench, write_bench
    from paperlab.paradiff.config import get_preset
    from paperlab.paradiff.images import save_png
    from paperlab.paradiff.pipeline import decode_prompt, write_trajectory
    from paperlab.paradiff.scene import render
    from paperlab.paradiff.task import scene_text
    from paperlab.paradiff.train import bench_examples, ensure_model
    from paperlab.threads import set_threads

    cfg = get_preset("tiny")
    t0 = time.perf_counter()
    set_threads(cfg.train.threads)  # training on one thread: the same weights on every machine
    with ctx.console.status("paradiff: training or loading the tiny VQ + joint model"):
        trained = ensure_model(cfg)
    set_threads()
    t_train = time.perf_counter() - t0
    ex = next(e for e in bench_examples(cfg) if e.kind == "edit" and e.prompt[0] == "recolour")
    assert ex.input_scene is not None
    inp = render(ex.input_scene)
    out = decode_prompt(trained, " ".join(ex.prompt), inp, sampler="parallel", record=True)
    in_png = save_png(inp, ctx.work_dir / "paradiff-input.png", scale=4)
    strip = write_trajectory(trained, out, ctx.work_dir / "paradiff-trajectory.png", every=2)
    with ctx.console.status(f"paradiff: benchmarking three samplers on {DEMO_PROMPTS} held-out prompts"):
        result = run_bench(trained, DEMO_PROMPTS, seeds=1)  # the over-seeds check: `paperlab paradiff bench`
    _, bench_png = write_bench(result, ctx.work_dir / "paradiff-bench")
    rows: list[list[object]] = []
    for a in AXES:
        row: list[object] = [a]
        for name in result["samplers"]:
            v = result["samplers"][name][a]
            row.append("n/a" if v is None else f"{v:.3f} [{result['ci95'][name][a][0]:.2f}, {result['ci95'][name][a][1]:.2f}]")
        rows.append(row)
    state = "loaded from the cache" if trained.cached else f"trained here in {trained.seconds:.0f} s"
    paragraphs = [
        f"One bidirectional transformer denoises the reasoning text and the output image "
        f"({trained.vq.n_tokens} VQ codes) together: each step is one joint forward pass, so each "
        "modality sees the other's partial state.",
        f"The tiny preset ({state}; {t_train:.0f} s in this demo).",
        f"Edit: '{' '.join(ex.prompt)}' on the input {' '.join(scene_text(ex.input_scene))}. "
        f"Target: {' '.join(scene_text(ex.target))}. The model wrote: {out.text or '(nothing)'}; "
        f"text and image agree: {'yes' if out.aligned else 'no'}.",
        f"Reduced benchmark: {result['n_prompts']} held-out prompts ({result['n_edit']} edits); the "
        "300-prompt run and its discussion are in docs/paradiff.md.",
    ]
    return Section(
        system="paradiff",
        title="MMaDA-Parallel: parallel text+image masked diffusion",
        paragraphs=paragraphs,
        tables=[Table("samplers side by side (mean [95% bootstrap CI])", ["axis", *result["samplers"]], rows)],
        figures=[Figure(in_png, "the edit's input image"),
                 Figure(strip, "parallel decoding of the edit, every 2nd step: image and text form together"),
                 Figure(bench_png, "benchmark axes and per-step alignment of the model's full guess")],
    )
