"""The icl part of ``paperlab demo``: a DNA model (trained tiny here, or the cached default) and
the packaged SmolLM2 on a reduced shot sweep, with curves, fits and the held-out DNA loss."""

from __future__ import annotations

import logging
import time

from paperlab.demokit import DemoContext
from paperlab.report import Figure, Section, Table

log = logging.getLogger(__name__)

DEMO_SHOTS = [1, 2, 4, 8, 16]
DNA_FUNCTIONS = 32  # the primitives
LM_FUNCTIONS = 8


def run(ctx: DemoContext) -> Section:
    """Train or load a DNA model, sweep it and SmolLM2, and report curves and fits."""
    from paperlab.icl.analysis import (
        curves_caption,
        families_caption,
        family_table,
        fit_table,
        plot_curves,
        plot_families,
        summary_table,
    )
    from paperlab.icl.dnamodel import PRESETS, cached_model_dir
    from paperlab.icl.encodings import get_encoding
    from paperlab.icl.markov import bits
    from paperlab.icl.models import load_model
    from paperlab.icl.sweep import run_sweep, write_csv
    from paperlab.icl.tasks import generate_functions
    from paperlab.icl.train import ensure_dna_model
    from paperlab.threads import set_threads

    set_threads()
    t0 = time.perf_counter()
    preset = "default" if (cached_model_dir(PRESETS["default"]) / "config.json").is_file() else "tiny"
    with ctx.console.status(f"DNA model ({preset} preset): training or loading from cache"):
        report = ensure_dna_model(PRESETS[preset])
    spec = "dna" if preset == "default" else "dna:tiny"
    t_train = time.perf_counter() - t0

    rows = []
    dna = load_model(spec)
    with ctx.console.status("sweeping the DNA model (nucleotide encoding)"):
        rows += run_sweep(dna.scorer(), generate_functions(DNA_FUNCTIONS), get_encoding("nucleotide"),
                          DEMO_SHOTS, model_name=spec, n_prompts=1, n_queries=4)
    with ctx.console.status("loading SmolLM2 and sweeping it (digit encoding)"):
        lm = load_model("smollm2")
        rows += run_sweep(lm.scorer(), generate_functions(LM_FUNCTIONS, seed=1), get_encoding("digit"),
                          DEMO_SHOTS, model_name="smollm2", n_prompts=1, n_queries=4)
    write_csv(rows, ctx.work_dir / "icl-demo-results.csv")
    curves = plot_curves(rows, ctx.work_dir / "icl-curves.png", title="demo: exact match vs shots")
    fams = plot_families(rows, ctx.work_dir / "icl-families.png")

    k_best, best = report.best_markov
    loss_rows: list[list[object]] = [[f"DNA transformer ({preset})", round(report.heldout_nats, 4),
                                      round(bits(report.heldout_nats), 4)]]
    loss_rows += [[f"Markov order {k}", round(v, 4), round(bits(v), 4)] for k, v in report.markov_nats.items()]
    state = "loaded from cache" if report.cached else f"trained here in {report.seconds:.0f} s"
    paragraphs = [
        "Hidden functions on 8-bit strings are shown as k input -> output examples; the model must "
        "produce the output for a new query (exact match of all 8 symbols). The DNA model sees 0/1 as "
        "two random bases with a third base as separator; SmolLM2 sees two random digits.",
        f"DNA model: the {preset} preset ({state}; {t_train:.0f} s in this demo). Held-out loss "
        f"{report.heldout_nats:.4f} nats/base vs {best:.4f} for the best k-mer baseline (order {k_best}).",
        f"Reduced sweep: {DNA_FUNCTIONS} primitives on the DNA model, {LM_FUNCTIONS} functions on SmolLM2, "
        f"shots {DEMO_SHOTS}, 1 prompt set x 4 queries each. The full sweep and its discussion are in "
        "docs/icl.md.",
    ]
    return Section(
        system="icl",
        title="Genomic in-context learning probes",
        paragraphs=paragraphs,
        tables=[Table("held-out per-base loss", ["model", "nats/base", "bits/base"], loss_rows),
                Table("exact match vs shots (cluster-bootstrap 95% CI over functions)", *summary_table(rows)),
                Table("fit of accuracy against log2(k)", *fit_table(rows)),
                Table("per family (constrained exact match)", *family_table(rows))],
        figures=[Figure(curves, curves_caption()), Figure(fams, families_caption())],
    )
