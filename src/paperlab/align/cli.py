"""``paperlab align``: score two feature files, fit the scaling law, run the video-text demo.

Kept light at import time: numpy, torch and the encoders load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from paperlab.console import err_console, out_console

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = out_console()  # results to stdout, whole when piped
err = err_console()


@app.command()
def score(
    a: Annotated[
        Path, typer.Argument(help="Features of side A: .npy (N, D) or (L, N, D), or .safetensors.")
    ],
    b: Annotated[Path, typer.Argument(help="Features of side B, same items in the same order.")],
    metric: Annotated[
        str, typer.Option(help="mutual_knn, cknna, cycle_knn, cka_linear, cka_rbf, svcca.")
    ] = "mutual_knn",
    k: Annotated[int, typer.Option(help="Neighbours for the k-NN metrics.")] = 10,
    variant: Annotated[
        str | None,
        typer.Option(
            help="Definition, for metrics published in several: cknna: double-centred (default), "
            "paper (row-centred, the paper's formula), platonic-rep (the authors' reference code); "
            "svcca: variance (default, keep --keep of the variance) or platonic-rep (z-scored, "
            "--dims fixed directions)."
        ),
    ] = None,
    keep: Annotated[
        float, typer.Option(help="svcca variance: fraction of variance kept per side.")
    ] = 0.99,
    dims: Annotated[
        int, typer.Option(help="svcca platonic-rep: singular directions kept per side.")
    ] = 10,
    key_a: Annotated[
        str | None, typer.Option(help="Tensor name in A's .safetensors (default: all, as layers).")
    ] = None,
    key_b: Annotated[
        str | None, typer.Option(help="Tensor name in B's .safetensors (default: all, as layers).")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="numpy, torch (CUDA when present) or auto.")
    ] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
) -> None:
    """Alignment between two feature sets; with several layers per side, the best layer pair."""
    import warnings

    from paperlab.align.layers import best_layer_pair
    from paperlab.align.metrics import (
        VARIANTS,
        DegenerateFeaturesWarning,
        check_variant,
        get_metric,
    )
    from paperlab.align.stacks import load_stack
    from paperlab.io.atomic import atomic_write_text
    from paperlab.threads import set_threads

    get_metric(metric)  # fail on a bad name before loading anything
    check_variant(metric, variant)
    set_threads()
    options: dict[str, object] = {}
    if variant is not None:
        options["variant"] = variant
    if metric == "svcca":
        options.update(keep=keep, dims=dims)
    names_a, layers_a = load_stack(a, key_a)
    names_b, layers_b = load_stack(b, key_b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateFeaturesWarning)
        res = best_layer_pair(layers_a, layers_b, metric, k=k, backend=backend, **options)
    notes = list(dict.fromkeys(
        str(w.message) for w in caught if issubclass(w.category, DegenerateFeaturesWarning)
    ))
    for note in notes:
        _warn(note)
    used = variant or (VARIANTS[metric][0] if metric in VARIANTS else None)
    out: dict[str, object] = {
        "metric": metric,
        "variant": used,
        "k": k,
        "n_items": int(layers_a[0].shape[0]),
        "score": res.best_score,
        "layer_a": names_a[res.best_a],
        "layer_b": names_b[res.best_b],
        "warnings": notes,
    }
    if metric == "svcca":
        out["keep" if used == "variance" else "dims"] = keep if used == "variance" else dims
    if len(layers_a) * len(layers_b) > 1:
        out["all_scores"] = res.scores.tolist()
        out["layers_a"], out["layers_b"] = names_a, names_b
    if metric == "mutual_knn":
        out["chance"] = k / (out["n_items"] - 1)  # type: ignore[operator]
    title = metric + (f" ({used})" if used else "")
    table = Table(title=f"{title} (k={k})" if metric in ("mutual_knn", "cknna", "cycle_knn") else title)
    for col in ("layer A", "layer B", "score", "items"):
        table.add_column(col)
    table.add_row(
        str(out["layer_a"]), str(out["layer_b"]), f"{res.best_score:.4f}", str(out["n_items"])
    )
    console.print(table)
    if "chance" in out:
        console.print(f"chance level (independent features): {out['chance']:.4f}")
    if json_out:
        atomic_write_text(json_out, json.dumps(out, indent=2))


def _warn(note: str) -> None:
    """One warning line on stderr (the note's own brackets are not rich markup)."""
    from rich.markup import escape

    err.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False)


@app.command()
def scaling(
    points: Annotated[
        Path, typer.Argument(help="CSV with header n_f,n_c,score[,sigma]: one grid point per row.")
    ],
    s_inf_max: Annotated[
        float | None, typer.Option(help="Upper bound on S_inf (1.0 for mutual k-NN).")
    ] = 1.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the fit as JSON here.")
    ] = None,
) -> None:
    """Fit score = S_inf - (C_f n_f^-alpha + C_c n_c^-beta) to measured grid points."""
    from paperlab.align.scaling import PARAM_NAMES, fit_scaling
    from paperlab.align.stacks import read_points
    from paperlab.io.atomic import atomic_write_text

    nf, nc, y, sigma = read_points(points)
    fit = fit_scaling(nf, nc, y, sigma=sigma, s_inf_max=s_inf_max)
    table = Table(title=f"scaling-law fit over {fit.n_points} points")
    table.add_column("parameter")
    table.add_column("value")
    table.add_column("± 1 s.e.")
    for name in PARAM_NAMES:
        side = fit.at_bounds.get(name)
        spread = f"at {side} bound" if side else f"{fit.stderr[name]:.4f}"
        table.add_row(name, f"{fit.params[name]:.4f}", spread)
    console.print(table)
    console.print(f"score = {fit.formula()}   R^2 = {fit.r2:.4f}   RMSE = {fit.rmse:.4g}")
    for note in fit.notes():
        _warn(note)
    if json_out:
        atomic_write_text(json_out, json.dumps(fit.to_dict(), indent=2))


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Output directory (results.json and PNG plots).")
    ] = Path("align-demo"),
    items: Annotated[int, typer.Option(help="Procedural clips (items).")] = 160,
    frames: Annotated[int, typer.Option(help="Frames rendered per clip (max n_f).")] = 8,
    captions: Annotated[int, typer.Option(help="Captions written per clip (max n_c).")] = 8,
    repeats: Annotated[int, typer.Option(help="Random subsets per grid cell.")] = 3,
    k: Annotated[int, typer.Option(help="Neighbours for mutual k-NN.")] = 10,
    size: Annotated[int, typer.Option(help="Frame size in pixels (square).")] = 128,
    seed: Annotated[int, typer.Option(help="Seed for clips, captions and subsets.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Re-encode even if features are cached.")
    ] = False,
) -> None:
    """Procedural video-text run: encode with the packaged models, grid, fit, control, plots."""
    import warnings

    from paperlab.align.demo import report_rows, write_outputs
    from paperlab.align.experiment import run_scaling
    from paperlab.align.metrics import DegenerateFeaturesWarning
    from paperlab.align.video import ClipSpec
    from paperlab.errors import AlignError
    from paperlab.io.atomic import atomic_directory
    from paperlab.threads import set_threads

    spec = ClipSpec(n_items=items, n_frames=frames, n_captions=captions, size=size, seed=seed)
    if out.exists() and not force:
        raise AlignError(f"{out} exists; pass --force to replace it or choose another --out")
    set_threads()
    with err.status("rendering, encoding and scoring clips"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateFeaturesWarning)
        run = run_scaling(spec, repeats=repeats, k=k, use_cache=not no_cache)
    n_degenerate = sum(issubclass(w.category, DegenerateFeaturesWarning) for w in caught)
    if n_degenerate:  # templated captions averaged over few captions coincide: one line, not one per subset
        _warn(f"{n_degenerate} of the grid's subsets had duplicate rows (captions that coincide); "
              "mutual k-NN counts them as index ties")
    for note in run.fit.notes():
        _warn(note)
    with atomic_directory(out, force=force, error=AlignError) as tmp:
        write_outputs(run, tmp)
    table = Table(title="scaling-law fit (mutual k-NN, video frames vs captions)")
    for col in ("quantity", "value"):
        table.add_column(col)
    for row in report_rows(run):
        table.add_row(*map(str, row))
    console.print(table)
    console.print(f"wrote {out}/results.json, {out}/surface.png, {out}/curves.png")
