"""``paperlab instella``: inspect, generate with, create and convert Instella checkpoints.

Heavy imports (torch, transformers) happen inside the commands so that ``paperlab --help``
stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from paperlab.console import out_console
from paperlab.train.options import BackendOpt, DryRunOpt, NprocOpt, ParallelOpt, ThreadsOpt

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Instella: a native Hugging Face model for AMD's fully open 3B LMs.")
err = Console(stderr=True)

DirArg = Annotated[Path, typer.Argument(help="An Instella checkpoint directory.")]
DtypeOpt = Annotated[str | None, typer.Option(
    help="float32, bfloat16 or float16 (default: the dtype the weights are stored in).")]
PickleOpt = Annotated[bool, typer.Option(
    "--allow-pickle", help="Accept pytorch_model.bin weights (unpickling can run code).")]
ForceOpt = Annotated[bool, typer.Option(help="Replace OUT if it exists.")]


@app.command()
def info(path: DirArg, allow_pickle: PickleOpt = False) -> None:
    """Config, parameter count and memory estimate per dtype of a checkpoint."""
    from paperlab.instella.checkpoint import check_checkpoint, parse_config
    from paperlab.instella.info import BYTES, human_bytes, model_size

    checked = check_checkpoint(path, allow_pickle=allow_pickle)
    cfg = parse_config(checked.config, checked.path / "config.json")
    size = model_size(cfg)
    t = Table(title=f"Instella checkpoint {checked.path}")
    t.add_column("setting")
    t.add_column("value")
    rows = [
        ("layers x hidden", f"{cfg.num_hidden_layers} x {cfg.hidden_size}"),
        ("heads / kv heads / head dim", f"{cfg.num_attention_heads} / {cfg.num_key_value_heads} / {cfg.head_dim}"),
        ("MLP (SwiGLU) width", str(cfg.intermediate_size)),
        ("vocabulary rows", str(cfg.vocab_size)),
        ("max positions", str(cfg.max_position_embeddings)),
        ("rope", f"{cfg.rope_type}, theta {cfg.rope_base:g}"
                 + (f", factor {cfg.rope_factor:g}" if cfg.rope_type != "default" else "")),
        ("parameters", f"{size.parameters:,}"),
        ("weight files", f"{len(checked.weight_files)} ({'safetensors' if checked.safetensors else 'pickle'})"),
        ("layout", "remote code (auto_map); `convert` makes it native" if checked.remote_code else "native"),
    ]
    for k in BYTES:
        kv4k = size.kv_bytes_per_token[k] * cfg.max_position_embeddings
        rows.append((f"memory {k}", f"weights {human_bytes(size.weight_bytes[k])} + KV cache "
                                    f"{human_bytes(kv4k)} per sequence of {cfg.max_position_embeddings}"))
    for k, v in rows:
        t.add_row(k, v)
    out_console().print(t)


@app.command()
def generate(
    path: DirArg,
    prompt: Annotated[str, typer.Argument(help="The user message (or raw text with --raw).")],
    raw: Annotated[bool, typer.Option(help="Feed PROMPT as raw text, without the chat template.")] = False,
    system: Annotated[str | None, typer.Option(help="A system message (chat mode).")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    dtype: DtypeOpt = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present).")] = None,
    rope_theta: Annotated[float | None, typer.Option(
        help="Override the RoPE base at load time (long context).")] = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Generate from a checkpoint, streaming tokens to the terminal."""
    import torch
    from transformers import TextStreamer

    from paperlab.instella.checkpoint import check_checkpoint, load_model, load_tokenizer_for
    from paperlab.threads import set_threads

    check_checkpoint(path, allow_pickle=allow_pickle)
    tok = load_tokenizer_for(path)  # before the weights: a tokenizer that does not fit stops here
    set_threads()  # this command's edge: the model runs in process
    model = load_model(path, dtype=dtype, device=device, rope_theta=rope_theta, allow_pickle=allow_pickle)
    if raw:
        text = prompt
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    torch.manual_seed(seed)
    streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    sample = temperature > 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=sample,
            temperature=temperature if sample else None, top_p=top_p if sample else None,
            top_k=None, streamer=streamer, pad_token_id=tok.pad_token_id,
            eos_token_id=model.config.eos_token_id,
        )
    n = out.shape[1] - ids["input_ids"].shape[1]
    dt = time.perf_counter() - t0
    err.print(f"[dim]{n} tokens in {dt:.2f} s ({n / dt:.1f} tokens/s)[/dim]")


@app.command()
def chat(
    path: DirArg,
    system: Annotated[str | None, typer.Option(help="A system message for every conversation.")] = None,
    input_file: Annotated[Path | None, typer.Option(
        "--input", help="Batch mode: a JSONL file of prompts (one JSON object a line).")] = None,
    output_file: Annotated[Path | None, typer.Option(
        "--output", help="Batch mode: the JSONL file of replies to write.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch mode: prompts per forward batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per reply at most.")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Interactive chat only.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    dtype: DtypeOpt = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default: cuda when present).")] = None,
    rope_theta: Annotated[float | None, typer.Option(
        help="Override the RoPE base at load time (long context).")] = None,
    allow_pickle: PickleOpt = False,
    force: Annotated[bool, typer.Option(help="Replace --output if it exists.")] = False,
) -> None:
    """Chat with a checkpoint (multi-turn, streamed; /reset, /exit), or reply to a JSONL file in batch."""
    import torch

    from paperlab.instella.chat import ChatSession, batch_replies, read_chat_file
    from paperlab.instella.checkpoint import check_checkpoint, load_model, load_tokenizer_for
    from paperlab.instella.errors import InstellaConfigError
    from paperlab.threads import set_threads

    # Everything a user can get wrong is checked before the weights are read.
    if (input_file is None) != (output_file is None):
        raise InstellaConfigError("batch mode needs both --input PROMPTS.jsonl and --output REPLIES.jsonl")
    requests = read_chat_file(input_file) if input_file is not None else None
    if output_file is not None and output_file.exists() and not force:
        raise InstellaConfigError(f"{output_file} already exists; choose another path or pass --force")
    if requests is not None and top_p != 1.0:
        raise InstellaConfigError("--top-p applies to the interactive chat; batch replies take --temperature and --seed")
    check_checkpoint(path, allow_pickle=allow_pickle)
    tok = load_tokenizer_for(path)
    set_threads()  # this command's edge: the model runs in process
    model = load_model(path, dtype=dtype, device=device, rope_theta=rope_theta, allow_pickle=allow_pickle)
    torch.manual_seed(seed)
    if requests is not None:
        import json

        from paperlab.io.atomic import atomic_write_text

        if system:
            requests = [r if r.messages[0]["role"] == "system" else
                        type(r)(r.id, [{"role": "system", "content": system}, *r.messages]) for r in requests]
        t0 = time.perf_counter()
        rows = batch_replies(model, tok, requests, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed)
        assert output_file is not None
        atomic_write_text(output_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        n = sum(r["completion_tokens"] for r in rows)
        err.print(f"wrote {len(rows)} replies to {output_file} ({n} tokens in {time.perf_counter() - t0:.1f} s)")
        return
    session = ChatSession(model, tok, system=system, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=top_p)
    err.print("[dim]Chat with the checkpoint: /reset forgets the conversation, /exit (or Ctrl-D) ends.[/dim]")
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):
            break
        if text.strip() in ("/exit", "/quit"):
            break
        if text.strip() == "/reset":
            session.reset()
            err.print("[dim]conversation reset[/dim]")
            continue
        if not text.strip():
            continue
        print("instella> ", end="", flush=True)
        reply = session.send(text, stream=lambda piece: print(piece, end="", flush=True))
        print(flush=True)
        err.print(f"[dim]{reply.completion_tokens} tokens in {reply.seconds:.2f} s[/dim]")


@app.command()
def init(
    out: Annotated[Path, typer.Argument(help="Directory to write.")],
    preset: Annotated[str, typer.Option(help="tiny, small or 3b.")] = "tiny",
    seed: Annotated[int, typer.Option()] = 0,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 2GB.")] = "2GB",
    force: ForceOpt = False,
) -> None:
    """Write a randomly initialised checkpoint in the released layout, with the real tokenizer."""
    from paperlab.instella.checkpoint import init_checkpoint

    path = init_checkpoint(preset, out, seed=seed, dtype=dtype, max_shard_size=max_shard_size, force=force)
    err.print(f"wrote {preset} checkpoint to {path}")


@app.command()
def convert(
    path: DirArg,
    out: Annotated[Path, typer.Argument(help="Directory for the native checkpoint.")],
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 2GB.")] = "2GB",
    allow_pickle: PickleOpt = False,
    force: ForceOpt = False,
) -> None:
    """Rewrite a remote-code checkpoint as a native one (no auto_map, re-sharded safetensors)."""
    from paperlab.instella.checkpoint import convert_checkpoint

    dst = convert_checkpoint(path, out, max_shard_size=max_shard_size, allow_pickle=allow_pickle, force=force)
    err.print(f"wrote native checkpoint to {dst}")


STAGES_HELP = "pretrain, stage2, soup, sft, dpo, long (comma-separated; default: all in order)"


@app.command()
def recipe(
    config: Annotated[Path | None, typer.Argument(help="A recipe YAML (fields of RecipeConfig).")] = None,
    preset: Annotated[str | None, typer.Option(help="tiny (~2 min CPU), small (tens of minutes), gpu.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (resumed if it exists).")] = Path("instella-recipe"),
    stage: Annotated[str | None, typer.Option(help=f"Stages to run: {STAGES_HELP}.")] = None,
    from_dir: Annotated[Path | None, typer.Option("--from", help="Start from this checkpoint directory.")] = None,
    corpus: Annotated[str | None, typer.Option(help="Stage-1 text file, or 'pydoc'.")] = None,
    gsm8k: Annotated[str | None, typer.Option(help="GSM8K dir, 'auto' or 'synthetic'.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    parallel: ParallelOpt = None,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    dry_run: DryRunOpt = False,
    nproc: NprocOpt = None,
) -> None:
    """Run the Instella recipe: pretrain -> 3-seed stage 2 -> soup -> SFT -> DPO -> long.

    One process, or every rank of `torchrun --nproc_per_node N -m paperlab instella recipe ...`
    (DDP by default, --parallel fsdp for FSDP2); see docs/training.md.
    """
    from paperlab.instella.recipe.config import load_recipe_config
    from paperlab.threads import set_threads
    from paperlab.train import check_launch, distributed, is_main_process

    overrides: dict[str, object] = {}
    if stage:
        overrides["stages"] = [s.strip() for s in stage.split(",") if s.strip()]
    for key, value in (("corpus", corpus), ("gsm8k", gsm8k), ("device", device)):
        if value is not None:
            overrides[key] = value
    cfg = load_recipe_config(config, preset=preset, overrides=overrides)
    if dry_run:
        _recipe_dry_run(cfg, parallel, nproc)
        return
    check_launch(parallel, backend)
    from paperlab.instella.recipe.stages import run_recipe

    set_threads(threads or cfg.threads)
    t0 = time.perf_counter()
    with distributed(parallel, cfg.device, backend) as ctx:
        report = run_recipe(cfg, out, from_dir=from_dir, console=err, ctx=ctx)
    if not is_main_process():
        return
    rows = report.get("stages", {})
    t = Table(title=f"Instella recipe ({cfg.preset}) in {time.perf_counter() - t0:.0f} s -> {out}")
    for h in ("stage", "text loss", "GSM8K loss", "GSM8K EM", "pref. acc", "margin", "tok/s"):
        t.add_column(h)
    for name, r in rows.items():
        tps = r.get("train", {}).get("tokens_per_s")
        t.add_row(name, f"{r['heldout_loss_text']:.3f}", f"{r['heldout_loss_gsm8k']:.3f}",
                  f"{r['gsm8k_exact_match']:.2f}", f"{r['preference_accuracy']:.2f}",
                  f"{r['reward_margin']:.3f}", f"{tps:.0f}" if tps else "-")
    out_console().print(t)


def _recipe_dry_run(cfg: Any, parallel: str | None, nproc: int | None) -> None:
    """Print the recipe model's size and memory per rank for each stage (nothing trained)."""
    from paperlab.instella.recipe.plan import recipe_memory
    from paperlab.train import launch_ranks

    ranks = launch_ranks()
    world = nproc or (ranks[1] if ranks else 1)
    mode = parallel or ("ddp" if world > 1 or ranks else "none")
    rows = recipe_memory(cfg, world_size=world, parallel=mode)
    first = next(iter(rows.values()))
    t = Table(title=f"Instella recipe ({cfg.preset}) dry run: {first.parameters:,} parameters, "
                    f"{world} process(es), {mode}; GiB per rank")
    for h in ("stage", *(k for k, _ in first.rows())):
        t.add_column(h, no_wrap=True)
    for stage, est in rows.items():
        t.add_row(stage, *[v for _, v in est.rows()])
    out_console().print(t)
