"""``paperlab soup merge``: a mergekit YAML or flags in, a merged checkpoint out.

The command takes mergekit-yaml's own flags too, so a mergekit command line works with
``paperlab soup merge`` in front: flags with a meaning here map onto the spec (``--cuda``,
``--out-shard-size``, ``--copy-tokenizer``, ``--allow-crimes``, ``--random-seed``,
``--transformers-cache``, ...), and the rest are accepted with one note saying why they change
nothing. Heavy imports happen inside the command.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from paperlab.soup.errors import MergeConfigError

# mergekit-yaml flags that change nothing here, and why (named in one note when given).
NO_EFFECT = {
    "lazy_unpickle": "reads are always lazy",
    "trust_remote_code": "no model code is run",
    "lora_merge_cache": "adapters are applied while reading, with nothing cached",
    "lora_merge_dtype": "adapters are applied in their own dtype, as peft does",
    "low_cpu_memory": "memory is bounded by the streaming pipeline",
    "read_to_gpu": "tensors move to --device piece by piece",
    "multi_gpu": "one device per merge",
    "clone_tensors": "every tensor is written once",
    "async_write": "writing always runs in its own thread",
    "write_threads": "writing always runs in its own thread",
    "num_threads": "the arithmetic runs on one torch thread by design",
}


def _flag_spec(model: list[str], weight: list[float] | None, method: str, base: str | None, params: dict[str, Any],
               fields: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from paperlab.errors import config_error
    from paperlab.soup.config import MergeSpec, ModelEntry

    weights: list[float | None] = list(weight) if weight else [None] * len(model)
    if len(weights) != len(model):
        raise MergeConfigError(f"got {len(weights)} --weight for {len(model)} --model; give one weight per model")
    try:
        return MergeSpec(method=method, base_model=base, parameters=params,
                         models=[ModelEntry(model=m, weight=w) for m, w in zip(model, weights, strict=True)], **fields)
    except ValidationError as exc:
        raise config_error(exc, "merge flags", MergeConfigError) from None


def merge(
    args: Annotated[list[str], typer.Argument(help="CONFIG.yaml OUT_DIR, or just OUT_DIR with --model/--weight.")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="An input model: a directory or Hub id (repeat).")] = None,
    weight: Annotated[list[float] | None, typer.Option("--weight", "-w", help="Its weight (repeat, in order).")] = None,
    method: Annotated[str, typer.Option(help="Merge method (see docs/soup.md): linear, ties, dare_ties, slerp, "
                                        "della, sce, multislerp, karcher, nearswap, arcee_fusion, ram, ...")] = "linear",
    base: Annotated[str | None, typer.Option(help="Base model (task-vector methods, slerp, model_stock, ...).")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", "--out-dtype", help="Output dtype (default: the YAML's, "
                                              "else the inputs').")] = None,
    compute_dtype: Annotated[str, typer.Option("--compute-dtype", help="float32 (more accurate), or yaml: the "
                                               "YAML's dtype, as mergekit computes (its bits).")] = "float32",
    normalize: Annotated[bool | None, typer.Option("--normalize/--no-normalize", help="Divide by the weight sum.")] = None,
    scale: Annotated[float | None, typer.Option("--lambda", help="Task-vector scale (task-vector methods).")] = None,
    density: Annotated[float | None, typer.Option(help="Fraction of each task vector kept, in (0, 1].")] = None,
    gamma: Annotated[float | None, typer.Option(help="breadcrumbs: fraction of largest entries dropped.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="della: spread of the keep probabilities.")] = None,
    t: Annotated[float | None, typer.Option("--t", help="slerp: 0 = the base model, 1 = the other; nearswap: t.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", "--random-seed", help="Seed of the random drops.")] = None,
    source: Annotated[str | None, typer.Option(help="Model whose config/tokenizer files are copied.")] = None,
    shard_size: Annotated[str | None, typer.Option("--shard-size", help="Max shard size, e.g. 2GB.")] = None,
    out_shard_size: Annotated[str | None, typer.Option("--out-shard-size", help="mergekit's: bytes, e.g. 5B.")] = None,
    device: Annotated[str | None, typer.Option(help="Where to compute: cpu, cuda, cuda:N.")] = None,
    cuda: Annotated[bool, typer.Option("--cuda", "--gpu-rich", help="Same as --device cuda.")] = False,
    copy_tokenizer: Annotated[bool, typer.Option("--copy-tokenizer/--no-copy-tokenizer", help="Copy the donor's tokenizer.")] = True,
    write_model_card: Annotated[bool, typer.Option("--write-model-card/--no-write-model-card", help="Write README.md.")] = True,
    allow_crimes: Annotated[bool, typer.Option("--allow-crimes", help="Merge models of different architectures.")] = False,
    transformers_cache: Annotated[str | None, typer.Option("--transformers-cache", help="Hugging Face cache for Hub ids.")] = None,
    check_finite: Annotated[bool, typer.Option("--check-finite", help="Refuse NaN/Inf in inputs.")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Accept pickle .bin checkpoints.")] = False,
    safe_serialization: Annotated[bool, typer.Option("--safe-serialization/--no-safe-serialization", hidden=True)] = True,
    unsafe_truncate_embeddings: Annotated[bool, typer.Option("--unsafe-truncate-embeddings", hidden=True)] = False,
    lazy_unpickle: Annotated[bool, typer.Option("--lazy-unpickle/--no-lazy-unpickle", hidden=True)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code/--no-trust-remote-code", hidden=True)] = False,
    lora_merge_cache: Annotated[str | None, typer.Option("--lora-merge-cache", hidden=True)] = None,
    lora_merge_dtype: Annotated[str | None, typer.Option("--lora-merge-dtype", hidden=True)] = None,
    low_cpu_memory: Annotated[bool, typer.Option("--low-cpu-memory/--no-low-cpu-memory", hidden=True)] = False,
    read_to_gpu: Annotated[bool, typer.Option("--read-to-gpu/--no-read-to-gpu", hidden=True)] = False,
    multi_gpu: Annotated[bool, typer.Option("--multi-gpu/--no-multi-gpu", hidden=True)] = False,
    clone_tensors: Annotated[bool, typer.Option("--clone-tensors/--no-clone-tensors", hidden=True)] = False,
    async_write: Annotated[bool, typer.Option("--async-write/--no-async-write", hidden=True)] = False,
    write_threads: Annotated[int | None, typer.Option("--write-threads", hidden=True)] = None,
    num_threads: Annotated[int | None, typer.Option("--num-threads", "-j", hidden=True)] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log lines (repeat).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUT_DIR.")] = False,
) -> None:
    """Merge checkpoints, streaming tensor by tensor, into a sharded safetensors OUT_DIR."""
    with _no_cycle_collector():
        from paperlab.soup.config import load_merge_config, parse_kmb, parse_size

        if not safe_serialization:
            raise MergeConfigError("--no-safe-serialization: paperlab writes safetensors only; drop the flag")
        if unsafe_truncate_embeddings:
            raise MergeConfigError("--unsafe-truncate-embeddings is not supported: it assumes identical token ids; "
                                   "give tokenizer: {source: base}, which maps embedding rows by token")
        if verbose:
            logging.getLogger("paperlab").setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
        fields: dict[str, Any] = {
            "out_dtype": dtype, "compute_dtype": compute_dtype, "seed": seed, "source": source,
            "device": "cuda" if cuda and device is None else device, "copy_tokenizer": None if copy_tokenizer else False,
            "allow_crimes": allow_crimes or None, "hf_cache": transformers_cache, "check_finite": check_finite or None,
            "allow_pickle": allow_pickle or None,
            "shard_size": parse_kmb(out_shard_size) if out_shard_size else parse_size(shard_size) if shard_size else None,
        }
        flags = {"normalize": normalize, "lambda": scale, "density": density, "gamma": gamma, "epsilon": epsilon, "t": t}
        params = {key: v for key, v in flags.items() if v is not None}
        if len(args) == 2:
            if model:
                raise MergeConfigError("give either CONFIG.yaml OUT_DIR or --model flags with OUT_DIR, not both")
            if params:
                raise MergeConfigError(f"with a CONFIG.yaml, set {', '.join(sorted(params))} in its parameters:, not as flags")
            spec = load_merge_config(args[0], **fields)
        elif len(args) == 1:
            if not model:
                raise MergeConfigError("no models: give CONFIG.yaml OUT_DIR, or --model A --weight 0.5 ... OUT_DIR")
            spec = _flag_spec(model, weight, method, base, params, {k: v for k, v in fields.items() if v is not None})
        else:
            raise MergeConfigError("usage: paperlab soup merge CONFIG.yaml OUT_DIR  (or --model ... OUT_DIR)")
        given = {"lazy_unpickle": lazy_unpickle, "trust_remote_code": trust_remote_code,
                 "lora_merge_cache": lora_merge_cache, "lora_merge_dtype": lora_merge_dtype,
                 "low_cpu_memory": low_cpu_memory, "read_to_gpu": read_to_gpu, "multi_gpu": multi_gpu,
                 "clone_tensors": clone_tensors, "async_write": async_write, "write_threads": write_threads,
                 "num_threads": num_threads}
        ignored = [f"--{k.replace('_', '-')} ({NO_EFFECT[k]})" for k, v in given.items() if v]
        _run(spec, Path(args[-1]), force=force, quiet=quiet, write_model_card=write_model_card, ignored=ignored)


@contextlib.contextmanager
def _no_cycle_collector() -> Iterator[None]:
    """Python's cycle collector off for one merge command: importing torch and the merge's
    threads allocate enough objects to start full collections, which were 0.2-0.5 s of a 4 s
    linear merge; the merge builds no reference cycles that need it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _run(spec: Any, out: Path, *, force: bool, quiet: bool, write_model_card: bool, ignored: list[str]) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from paperlab.soup.merge import Terminated
    from paperlab.soup.merge import merge as run_merge
    from paperlab.threads import set_threads

    # One torch thread for the merge's arithmetic: the second core is busy reading and writing,
    # and on a shared 2-core machine two intra-op threads mostly wait for each other (a TIES
    # tensor of 4M entries took 7.3 s with two threads and 2.0 s with one at a load average of
    # 10). One thread also fixes how full reductions are split, and so their last bits.
    set_threads(1)
    console = Console(stderr=True)
    try:
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeRemainingColumn(), console=console, transient=False, disable=quiet) as bar:
            task = bar.add_task("merging", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = run_merge(spec, out, force=force, progress=progress, write_model_card=write_model_card)
    except Terminated as exc:
        name = "SIGTERM" if exc.signum == 15 else "SIGINT" if exc.signum == 2 else f"signal {exc.signum}"
        print(f"error: merge stopped by {name}; nothing was written to {out}", file=sys.stderr)
        raise typer.Exit(128 + int(exc.signum)) from None
    if ignored:
        result.notes.append("accepted for mergekit compatibility, no effect here: " + "; ".join(ignored))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", markup=True, highlight=False, soft_wrap=True)
    console.print(
        f"wrote {result.out_dir}: {result.n_tensors} tensors, {result.out_bytes / 1e6:.1f} MB "
        f"in {result.shards} shard(s), {result.seconds:.1f} s"
    )
