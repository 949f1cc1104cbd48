"""``paperlab soup ...``: merge checkpoints, analyse score tables, run SoCE end to end.

Heavy imports (torch, transformers) happen inside the commands, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paperlab.soup.cli_merge import merge

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command()(merge)


@app.command()
def analyze(
    scores: Annotated[Path, typer.Argument(help="Score table: CSV or JSON, wide or long, or the BFCL CSV.")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Candidate name or glob (repeat).")] = None,
    category: Annotated[list[str] | None, typer.Option("--category", "-c", help="Category name or glob (repeat).")] = None,
    tau: Annotated[float, typer.Option(help="A category enters L when |rho| < tau with another.")] = 0.5,
    layout: Annotated[str, typer.Option(help="auto, wide, long or bfcl.")] = "auto",
    missing: Annotated[str, typer.Option(help="Missing scores: drop-models, drop-categories or error.")] = "drop-models",
    exclude_model: Annotated[list[str] | None, typer.Option("--exclude-model", help="Model name or glob to leave out (repeat).")] = None,
    exclude_category: Annotated[list[str] | None, typer.Option("--exclude-category", help="Category or glob to leave out (repeat).")] = None,
    lower_is_better: Annotated[str, typer.Option("--lower-is-better", help="BFCL v4 lower-is-better columns: exclude or flip.")] = "exclude",
    heatmap: Annotated[Path | None, typer.Option(help="Write the correlation heatmap PNG here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the selection as JSON here.")] = None,
    expert_floor: Annotated[float | None, typer.Option("--expert-floor", help="Lowest mean over all categories an "
                                                       "expert may have (leaves degenerate specialists out).")] = None,
) -> None:
    """SoCE steps 1-2 only: correlations, the low-correlation set L, and one expert per category."""
    import json
    import sys

    from rich.console import Console
    from rich.table import Table

    from paperlab.io.atomic import atomic_write_text
    from paperlab.soup.scores import load_scores
    from paperlab.soup.select import plot_heatmap, select_experts

    table = load_scores(scores, layout=layout, lower_is_better=lower_is_better).select(
        model, category, exclude_models=exclude_model or (), exclude_categories=exclude_category or (), missing=missing
    )
    sel = select_experts(table, tau, floor=expert_floor)
    err = Console(stderr=True, soft_wrap=True)
    for note in [*table.notes, *sel.notices]:
        err.print(f"note: {note}", markup=False, highlight=False)
    # A pipe or file gets the whole table, not one cut to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=100_000)
    t = Table(title=f"Pearson correlation over {len(sel.models)} models (* = in L, tau = {tau})")
    t.add_column("category")
    short = [f"c{i + 1}" for i in range(len(sel.categories))]
    for s in short:
        t.add_column(s, justify="right")
    for i, c in enumerate(sel.categories):
        mark = "* " if c in sel.low_corr else "  "
        t.add_row(f"{mark}{short[i]} {c}", *[f"{v:.2f}" for v in sel.corr[i]])
    console.print(t)
    for line in sel.reasons:
        console.print(line)
    if heatmap is not None:
        plot_heatmap(sel, heatmap)
        console.print(f"heatmap: {heatmap}")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(sel.to_dict(), indent=2) + "\n")


@app.command()
def soce(
    config: Annotated[Path, typer.Argument(help="SoCE YAML config (see docs/soup.md).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
) -> None:
    """Run SoCE end to end: scores, experts, weight search, baselines, and the souped checkpoint."""
    from collections.abc import Callable

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from paperlab.soup.soce import load_soce_config, run_soce
    from paperlab.threads import set_threads

    cfg = load_soce_config(config)
    cfg.force = cfg.force or force
    set_threads(cfg.threads)
    console = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:

        def progress(label: str, total: int | None) -> Callable[[], None]:
            task = bar.add_task(label, total=total)
            return lambda: bar.advance(task)

        result = run_soce(cfg, progress=progress)
    out = Console()
    headers, rows = result.table()
    t = Table(title=f"SoCE (tau = {cfg.tau}; experts: {', '.join(Path(e).name for e in result.selection.experts)})")
    for h in headers:
        t.add_column(h, justify="left" if h in ("method", "weights") else "right")
    for row in rows:
        t.add_row(*[str(c) for c in row])
    out.print(t)
    for note in result.notes:
        out.print(note)
    out.print(f"wrote {result.out_dir} (model/, soce.yaml, heatmap.png, table.md) in {result.seconds:.0f} s")
