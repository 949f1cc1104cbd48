"""``paperlab soup ...``: merge checkpoints, analyse score tables, run SoCE end to end.

Heavy imports (torch, transformers) happen inside the commands, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paperlab.soup.errors import MergeConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def merge(
    args: Annotated[list[str], typer.Argument(help="CONFIG.yaml OUT_DIR, or just OUT_DIR with --model/--weight.")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="An input model directory (repeat).")] = None,
    weight: Annotated[list[float] | None, typer.Option("--weight", "-w", help="Its weight (repeat, in order).")] = None,
    method: Annotated[str, typer.Option(help="Merge method: linear, uniform, task_arithmetic, ties.")] = "linear",
    base: Annotated[str | None, typer.Option(help="Base model (task_arithmetic, ties).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Output dtype (default: the inputs').")] = None,
    normalize: Annotated[bool | None, typer.Option("--normalize/--no-normalize", help="Divide weights by their sum.")] = None,
    scale: Annotated[float, typer.Option("--lambda", help="Task-vector scale (task_arithmetic, ties).")] = 1.0,
    density: Annotated[float, typer.Option(help="TIES density (fraction of each task vector kept).")] = 1.0,
    source: Annotated[str | None, typer.Option(help="Model whose config/tokenizer files are copied.")] = None,
    shard_size: Annotated[str | None, typer.Option("--shard-size", help="Max shard size, e.g. 2GB.")] = None,
    check_finite: Annotated[bool, typer.Option("--check-finite", help="Refuse NaN/Inf in inputs.")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Accept pickle .bin checkpoints.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUT_DIR.")] = False,
) -> None:
    """Merge checkpoints, streaming tensor by tensor, into a sharded safetensors OUT_DIR."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from paperlab.soup.config import MergeSpec, load_merge_config, parse_size
    from paperlab.soup.merge import merge as run_merge

    if len(args) == 2:
        if model:
            raise MergeConfigError("give either CONFIG.yaml OUT_DIR or --model flags with OUT_DIR, not both")
        spec = load_merge_config(args[0])
    elif len(args) == 1:
        if not model:
            raise MergeConfigError("no models: give CONFIG.yaml OUT_DIR, or --model A --weight 0.5 ... OUT_DIR")
        weights: list[float | None] = list(weight) if weight else [None] * len(model)
        if len(weights) != len(model):
            raise MergeConfigError(f"got {len(weights)} --weight for {len(model)} --model; give one weight per model")
        spec = MergeSpec(
            method=method,
            models=[{"model": m, "weight": w} for m, w in zip(model, weights, strict=True)],  # type: ignore[misc]
            base_model=base,
            dtype=dtype,
            normalize=normalize,
            scale=scale,
            density=density,
            source=source,
            check_finite=check_finite,
            allow_pickle=allow_pickle,
        )
    else:
        raise MergeConfigError("usage: paperlab soup merge CONFIG.yaml OUT_DIR  (or --model ... OUT_DIR)")
    if shard_size is not None:
        spec.shard_size = parse_size(shard_size)
    spec.check_finite = spec.check_finite or check_finite
    spec.allow_pickle = spec.allow_pickle or allow_pickle
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("merging", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run_merge(spec, Path(args[-1]), force=force, progress=progress)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(
        f"wrote {result.out_dir}: {result.n_tensors} tensors, {result.out_bytes / 1e6:.1f} MB "
        f"in {result.shards} shard(s), {result.seconds:.1f} s"
    )
