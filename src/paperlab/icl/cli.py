"""``paperlab icl``: run shot sweeps, train the DNA model, plot results.

Heavy imports (torch, transformers, matplotlib) happen inside the commands so that
``import paperlab`` and ``paperlab --help`` stay fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from paperlab.console import out_console
from paperlab.errors import ICLError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Genomic in-context-learning probes on 8-bit string functions.")
console = Console(stderr=True)
ALL_SHOTS = "1,2,4,8,16,32,64,128"


def _print_table(title: str, headers: list[str], rows: list[list[object]]) -> None:
    t = Table(title=title)
    for h in headers:
        t.add_column(h)
    for r in rows:
        t.add_row(*[str(c) for c in r])
    out_console().print(t)


@app.command()
def run(
    model: Annotated[str, typer.Option(help="dna, dna:tiny, dna:<dir>, or a paperlab.llm spec "
                                            "(smollm2, hf:<dir>, openai:<url>#<model>).")] = "smollm2",
    encoding: Annotated[str | None, typer.Option(help="nucleotide, digit or alphabet:SYMBOLS "
                                                      "(default: nucleotide for dna*, else digit).")] = None,
    shots: Annotated[str, typer.Option(help="Comma-separated shot counts.")] = ALL_SHOTS,
    functions: Annotated[int, typer.Option(help="How many functions of the seeded suite (max useful 100+).")] = 100,
    prompts: Annotated[int, typer.Option(help="Prompt sets (independent draws of examples and "
                                              "mapping) per function; each costs one k_max-shot pass.")] = 1,
    queries: Annotated[int, typer.Option(help="Queries per prompt set: prompts that share its examples "
                                              "and mapping, scored on its cached prefix.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the suite and the prompt draws.")] = 0,
    scorer: Annotated[str, typer.Option(help="cached (KV-cache reuse), api (llm.generate/score), naive.")] = "cached",
    context: Annotated[int | None, typer.Option(help="Context length in tokens (default: the model's).")] = None,
    out: Annotated[Path, typer.Option(help="Results CSV.")] = Path("icl-results.csv"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing results file.")] = False,
) -> None:
    """Score a model on k-shot prompts of the task suite and write a results CSV."""
    from rich.progress import Progress

    from paperlab.icl.analysis import fit_table, summary_table
    from paperlab.icl.encodings import get_encoding
    from paperlab.icl.models import load_model
    from paperlab.icl.prompts import parse_shots
    from paperlab.icl.sweep import run_sweep, write_csv
    from paperlab.icl.tasks import generate_functions
    from paperlab.threads import set_threads

    if out.exists() and not force:
        raise ICLError(f"{out} exists; pass --force to overwrite it or choose another --out")
    shot_list = parse_shots(shots)
    scheme = get_encoding(encoding or ("nucleotide" if model.startswith("dna") else "digit"))
    suite = generate_functions(functions, seed=seed)
    set_threads()
    with console.status(f"loading {model}"):
        loaded = load_model(model)
    sc = loaded.scorer(scorer, context=context)
    t0 = time.perf_counter()
    with Progress(console=console) as bar:
        task = bar.add_task(f"{model} {scheme.name}", total=len(suite) * prompts)
        rows = run_sweep(sc, suite, scheme, shot_list, model_name=model, n_prompts=prompts,
                         n_queries=queries, seed=seed,
                         on_progress=lambda done, total: bar.update(task, completed=done))
    write_csv(rows, out)
    _print_table("exact match vs shots", *summary_table(rows))
    _print_table("log2(k) fits", *fit_table(rows))
    console.print(f"wrote {len(rows)} rows to {out}; scoring took {time.perf_counter() - t0:.0f} s")


@app.command("train-dna")
def train_dna_cmd(
    preset: Annotated[str, typer.Option(help="default, tiny, long (context 1280, three DNA "
                                            "packages) or large (2.9 M parameters, same data).")] = "default",
    steps: Annotated[int | None, typer.Option(help="Override the preset's training steps.")] = None,
    out: Annotated[Path | None, typer.Option(help="Model directory (default: the cache, keyed on the config).")] = None,
    retrain: Annotated[bool, typer.Option(help="Train even if a cached model exists.")] = False,
    time_budget: Annotated[float | None, typer.Option(
        help="Stop training after this many seconds (the LR schedule follows the budget); needs --out.")] = None,
    init_from: Annotated[Path | None, typer.Option(
        help="Continue from the weights of a model trained with the same preset; needs --out.")] = None,
) -> None:
    """Train the character-level DNA model on real genomes and report held-out loss."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from paperlab.icl.dnamodel import cached_model_dir, preset_config
    from paperlab.icl.markov import bits
    from paperlab.icl.train import ensure_dna_model, train_dna
    from paperlab.threads import set_threads

    set_threads()
    if (time_budget is not None or init_from is not None) and out is None:
        raise ICLError("--time-budget and --init-from train a model its config does not describe; "
                       "give it an --out directory")
    if time_budget is not None and time_budget <= 0:
        raise ICLError(f"--time-budget must be positive seconds, got {time_budget}")
    cfg = preset_config(preset, steps=steps)
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, console=console) as bar:
        task = bar.add_task("training", total=cfg.steps, loss=float("nan"))

        def on_step(step: int, loss: float) -> None:
            bar.update(task, completed=step + 1, loss=loss)

        if out is None:
            report = ensure_dna_model(cfg, on_step=on_step, retrain=retrain)
        else:
            report = train_dna(cfg, out, on_step=on_step, time_budget_s=time_budget, init_from=init_from)
    if report.cached:
        console.print(f"using the cached model at {report.path} (--retrain to train again)")
    rows: list[list[object]] = [["DNA transformer", f"{report.heldout_nats:.4f}", f"{bits(report.heldout_nats):.4f}"]]
    rows += [[f"Markov order {k}", f"{v:.4f}", f"{bits(v):.4f}"] for k, v in report.markov_nats.items()]
    _print_table("held-out per-base loss (reference species of each DNA package)",
                 ["model", "nats/base", "bits/base"], rows)
    console.print(f"model: {report.path or cached_model_dir(cfg)} (trained in {report.seconds:.0f} s)")


@app.command()
def induction(
    model: Annotated[list[str], typer.Option(help="Model spec(s), as for `run`; repeat the option for several.")],
    alphabet: Annotated[str | None, typer.Option(help="nucleotide (ACGT), digit (0-9) or the symbols themselves "
                                                      "(default: nucleotide for dna*, else digit).")] = None,
    length: Annotated[int, typer.Option(help="Symbols per random sequence (fed twice).")] = 128,
    sequences: Annotated[int, typer.Option(help="Random sequences to average over.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the random sequences.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
) -> None:
    """Induction probe: NLL on the second copy of a repeated random sequence vs the first."""
    import json

    from paperlab.icl.induction import ALPHABETS, induction_probe, result_rows
    from paperlab.icl.models import load_model
    from paperlab.io.atomic import atomic_write_text
    from paperlab.threads import set_threads

    set_threads()
    results = []
    for spec in model:
        name = alphabet or ("nucleotide" if spec.startswith("dna") else "digit")
        symbols = ALPHABETS.get(name, name)
        with console.status(f"loading {spec}"):
            loaded = load_model(spec)
        results.append(induction_probe(loaded.llm, symbols, length=length,
                                       n_sequences=sequences, seed=seed, name=spec))
    _print_table("induction probe (NLL in nats/symbol, softmax over the alphabet)", *result_rows(results))
    if json_out:
        atomic_write_text(json_out, json.dumps([r.as_dict() for r in results], indent=2))


@app.command()
def plot(
    results: Annotated[list[Path], typer.Argument(help="One or more results CSVs from `icl run`.")],
    out_dir: Annotated[Path, typer.Option(help="Where to write the PNGs and the markdown tables.")] = Path("icl-plots"),
    metric: Annotated[str, typer.Option(help="Metric of the per-family plot.")] = "constrained",
) -> None:
    """Plot accuracy-vs-shots curves and per-family panels; print and save the tables."""
    from paperlab.icl.analysis import (
        family_table,
        fit_table,
        markdown_table,
        plot_curves,
        plot_families,
        summary_table,
    )
    from paperlab.icl.sweep import read_csv
    from paperlab.io.atomic import atomic_write_text

    rows = [r for p in results for r in read_csv(p)]
    curves = plot_curves(rows, out_dir / "icl-curves.png")
    fams = plot_families(rows, out_dir / "icl-families.png", metric=metric)
    tables = [("exact match vs shots", summary_table(rows)), ("log2(k) fits", fit_table(rows)),
              (f"per family ({metric})", family_table(rows, metric))]
    md = []
    for title, (h, r) in tables:
        _print_table(title, h, r)
        md.append(f"### {title}\n\n{markdown_table(h, r)}\n")
    atomic_write_text(out_dir / "icl-tables.md", "\n".join(md))
    console.print(f"wrote {curves}, {fams} and {out_dir / 'icl-tables.md'}")
