"""``paperlab paradiff``: train the tiny joint model, decode prompts, watch trajectories, benchmark.

Heavy imports (torch, numpy, matplotlib) happen inside the commands, so ``paperlab --help``
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from paperlab.console import out_console
from paperlab.train.options import BackendOpt, DryRunOpt, NprocOpt, ParallelOpt, ThreadsOpt

if TYPE_CHECKING:
    from paperlab.paradiff.config import ParadiffConfig
    from paperlab.paradiff.train import Trained
    from paperlab.train import DistContext

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="MMaDA-Parallel: joint text+image masked diffusion on a thinking-aware shapes task.")
console = Console(stderr=True)

Preset = Annotated[str, typer.Option(help="tiny (minutes to train on a CPU), small (about 45 min on one core), "
                                          "gpu (CUDA), or test (plumbing only).")]
Checkpoint = Annotated[Path | None, typer.Option(help="A directory written by `train --out` (default: the cache).")]
Sampler = Annotated[str, typer.Option(help="parallel, sequential (think then draw) or image-only.")]
Steps = Annotated[int | None, typer.Option(help="Override sample.steps (parallel joint steps).")]
Guidance = Annotated[float | None, typer.Option(help="Override sample.guidance (image term of CFG; release 4).")]
TextGuidance = Annotated[float | None, typer.Option(help="Override sample.text_guidance (text term of CFG; "
                                                        "release 0, off).")]
Schedule = Annotated[str | None, typer.Option(help="Override sample.schedule, the image mask schedule: cosine "
                                                  "(release), linear or pow2.")]
Attention = Annotated[str | None, typer.Option(help="Override model.attention: full (release) or prefix (the "
                                                    "fast option: the condition is computed once per decode; "
                                                    "its own cached model).")]


def _config(preset: str, steps: int | None = None, guidance: float | None = None, *,
            text_guidance: float | None = None, schedule: str | None = None,
            attention: str | None = None) -> ParadiffConfig:
    """The preset with the command's overrides, validated (one line on a bad value)."""
    from paperlab.paradiff.config import get_preset

    cfg = get_preset(preset)
    over = {k: v for k, v in {"sample.steps": steps, "sample.guidance": guidance,
                              "sample.text_guidance": text_guidance, "sample.schedule": schedule,
                              "model.attention": attention}.items() if v is not None}
    return cfg.with_overrides(**over) if over else cfg


def _trained(cfg: ParadiffConfig, checkpoint: Path | None = None, retrain: bool = False,
             ctx: DistContext | None = None, threads: int | None = None) -> Trained:
    """The preset's model from ``checkpoint`` or the cache, trained first when missing.

    Threads are sized here, at the command's edge: training on ``cfg.train.threads`` (one, so
    every machine trains the same weights), then decoding on ``threads`` (default: the cores).
    """
    from rich.progress import BarColumn, Progress, TextColumn

    from paperlab.paradiff.train import ensure_model, load_trained
    from paperlab.threads import set_threads

    if checkpoint is not None:
        set_threads(threads)
        return load_trained(cfg, checkpoint)
    set_threads(threads or cfg.train.threads)
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.3f}"))
    with Progress(*cols, console=console, transient=True, disable=ctx is not None and not ctx.is_main) as bar:
        vq_bar = bar.add_task("VQ tokenizer", total=cfg.vq.steps, loss=float("nan"), visible=False)

        def on_step(stage: str, step: int, loss: float) -> None:  # the model's steps draw their own bar
            if stage == "vq":
                bar.update(vq_bar, completed=step + 1, loss=loss, visible=True)

        trained = ensure_model(cfg, retrain=retrain, on_step=on_step, ctx=ctx, console=console)
    set_threads(threads)
    return trained


@app.command()
def train(
    preset: Preset = "tiny",
    retrain: Annotated[bool, typer.Option(help="Train again even if the cache has this config.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also export the VQ and model, and train.json, here.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Override train.steps (the schedule follows).")] = None,
    attention: Attention = None,
    parallel: ParallelOpt = None,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    dry_run: DryRunOpt = False,
    nproc: NprocOpt = None,
) -> None:
    """Train (or load from the cache) the VQ tokenizer and the joint model of a preset.

    One process, or every rank of `torchrun --nproc_per_node N -m paperlab paradiff train ...`
    (DDP by default, --parallel fsdp for FSDP2); see docs/training.md. OUT/train.json holds the
    loss of every step and the world size.
    """
    from paperlab.train import check_launch, distributed

    cfg = _config(preset, attention=attention)
    if steps is not None:
        cfg = cfg.with_overrides(**{"train.steps": steps})
    if dry_run:
        _train_dry_run(cfg, parallel, nproc)
        return
    check_launch(parallel, backend)
    import json

    from paperlab.io import atomic_write_text
    from paperlab.paradiff.train import export_trained
    from paperlab.paradiff.vq import roundtrip_accuracy

    if cfg.device.startswith("cuda"):
        _trained_cuda_check(cfg)
    with distributed(parallel, cfg.device, backend) as ctx:
        trained = _trained(cfg, retrain=retrain, ctx=ctx, threads=threads)
        if not ctx.is_main:
            return
        state = "loaded from the cache" if trained.cached else f"trained in {trained.seconds:.0f} s"
        rt = trained.vq_roundtrip if trained.vq_roundtrip >= 0 else roundtrip_accuracy(trained.vq)
        console.print(f"{cfg.name} model {state}: {trained.path}")
        console.print(f"VQ round trip: {rt:.3f} of 512 random scenes read back exactly by the detector")
        if out is not None:
            export_trained(trained, out)
            record = {"preset": cfg.name, "model": str(trained.path), "cached": trained.cached,
                      **(trained.train or {})}
            atomic_write_text(out / "train.json", json.dumps(record, indent=2))
            console.print(f"exported to {out} (train.json: {len(record.get('losses', []))} step losses)")


def _trained_cuda_check(cfg: ParadiffConfig) -> None:
    import torch

    from paperlab.paradiff.errors import ParadiffConfigError

    if not torch.cuda.is_available():
        raise ParadiffConfigError(f"preset {cfg.name!r} needs CUDA, which this machine lacks; use --preset tiny "
                                  "or small (or --dry-run to see its memory per rank)")


def _launch_shape(parallel: str | None, nproc: int | None) -> tuple[int, str]:
    """(processes, parallel mode) a dry run assumes: --nproc, else torchrun's WORLD_SIZE, else 1."""
    from paperlab.train import launch_ranks

    ranks = launch_ranks()
    world = nproc or (ranks[1] if ranks else 1)
    return world, parallel or ("ddp" if world > 1 or ranks else "none")


def _print_estimate(title: str, est: Any, caption: str | None = None) -> None:
    from rich.table import Table

    title = f"{title}: {est.parameters:,} parameters, {est.world_size} process(es), {est.parallel}"
    t = Table(title=title, caption=caption, min_width=len(title))  # the title on one line
    t.add_column("per rank", no_wrap=True)
    t.add_column("GiB", no_wrap=True)
    for k, v in est.rows():
        t.add_row(k, v)
    out_console().print(t)


def _train_dry_run(cfg: ParadiffConfig, parallel: str | None, nproc: int | None) -> None:
    """Print the transformer's size and memory per rank for the launch (nothing is trained)."""
    from paperlab.paradiff.plan import train_memory

    world, mode = _launch_shape(parallel, nproc)
    _print_estimate(f"paradiff {cfg.name} dry run", train_memory(cfg, world_size=world, parallel=mode))


def _rl_dry_run(cfg: ParadiffConfig, rl: Any, parallel: str | None, nproc: int | None) -> None:
    """Print ParaRL's memory per rank for the launch (policy, reference, rollouts' sequences)."""
    from paperlab.paradiff.plan import rl_memory

    world, mode = _launch_shape(parallel, nproc)
    _print_estimate(f"ParaRL {cfg.name} dry run", rl_memory(cfg, rl, world_size=world, parallel=mode),
                    caption="gathered includes the frozen reference model, whole on every rank")


@app.command("sample")
def sample_cmd(
    prompt: Annotated[str, typer.Option(help="The instruction, in the task's words (see `vocab`).")],
    image: Annotated[Path | None, typer.Option(help="Input image for an edit: a 32x32 RGB PNG.")] = None,
    sampler: Sampler = "parallel",
    out: Annotated[Path, typer.Option(help="Output image (PNG).")] = Path("paradiff-output.png"),
    scale: Annotated[int, typer.Option(min=1, max=32, help="Enlarge the PNG (nearest pixel).")] = 1,
    seed: int = 0,
    preset: Preset = "tiny",
    checkpoint: Checkpoint = None,
    steps: Steps = None,
    guidance: Guidance = None,
    text_guidance: TextGuidance = None,
    schedule: Schedule = None,
    attention: Attention = None,
) -> None:
    """Decode one prompt: print the reasoning text, write the image, say whether they agree."""
    from paperlab.paradiff.images import load_image, save_png
    from paperlab.paradiff.pipeline import decode_prompt
    from paperlab.paradiff.task import check_prompt

    cfg = _config(preset, steps, guidance, text_guidance=text_guidance, schedule=schedule, attention=attention)
    check_prompt(prompt)  # fail on a bad prompt before any training
    arr = load_image(image) if image is not None else None
    trained = _trained(cfg, checkpoint)
    res = decode_prompt(trained, prompt, arr, sampler=sampler, seed=seed)
    save_png(res.image, out, scale)
    det = " ; ".join(" ".join(o.words()) for o in res.detection.scene) or "(nothing)"
    typer.echo(f"text:  {res.text or '(no reasoning: image-only)'}")
    typer.echo(f"image: {det}  (detector confidence {res.detection.confidence:.2f}) -> {out}")
    if res.words:
        typer.echo(f"text and image agree: {'yes' if res.aligned else 'no'}")


@app.command()
def trajectory(
    prompt: Annotated[str, typer.Option(help="The instruction, in the task's words.")],
    image: Annotated[Path | None, typer.Option(help="Input image for an edit: a 32x32 RGB PNG.")] = None,
    sampler: Sampler = "parallel",
    out: Annotated[Path, typer.Option(help="trajectory.gif (animated) or trajectory.png (strip).")] = Path("trajectory.gif"),
    every: Annotated[int, typer.Option(min=1, help="Keep every k-th step (the last is always kept).")] = 1,
    seed: int = 0,
    preset: Preset = "tiny",
    checkpoint: Checkpoint = None,
    steps: Steps = None,
    guidance: Guidance = None,
    text_guidance: TextGuidance = None,
    schedule: Schedule = None,
    attention: Attention = None,
) -> None:
    """Decode one prompt and write every step's partial text and image as a GIF or strip PNG."""
    from paperlab.paradiff.errors import ParadiffConfigError
    from paperlab.paradiff.images import load_image
    from paperlab.paradiff.pipeline import decode_prompt, write_trajectory
    from paperlab.paradiff.task import check_prompt

    if out.suffix.lower() not in (".gif", ".png"):
        raise ParadiffConfigError(f"--out {out} must end in .gif (animation) or .png (strip)")
    cfg = _config(preset, steps, guidance, text_guidance=text_guidance, schedule=schedule, attention=attention)
    check_prompt(prompt)
    arr = load_image(image) if image is not None else None
    trained = _trained(cfg, checkpoint)
    res = decode_prompt(trained, prompt, arr, sampler=sampler, seed=seed, record=True)
    write_trajectory(trained, res, out, every)
    typer.echo(f"text: {res.text or '(none)'}; {res.result.steps} steps -> {out}")


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Directory for bench.json and bench.png.")],
    preset: Preset = "tiny",
    n_prompts: Annotated[int | None, typer.Option(min=3, help="Held-out prompts (default 300; 2/3 edits).")] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Prompts per model call.")] = None,
    seed: int = 0,
    seeds: Annotated[int, typer.Option(min=1, help="Sampling seeds for parallel vs think-then-draw (per seed and "
                                                   "pooled, McNemar's exact test).")] = 4,
    checkpoint: Checkpoint = None,
    steps: Steps = None,
    guidance: Guidance = None,
    text_guidance: TextGuidance = None,
    schedule: Schedule = None,
    attention: Attention = None,
) -> None:
    """Run the three samplers on the held-out prompts and score them (JSON + PNG)."""
    from rich.progress import Progress
    from rich.table import Table

    from paperlab.paradiff.bench import AXES, run_bench, write_bench

    cfg = _config(preset, steps, guidance, text_guidance=text_guidance, schedule=schedule, attention=attention)
    trained = _trained(cfg, checkpoint)
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        result = run_bench(trained, n_prompts, seed=seed, batch=batch, seeds=seeds, on_progress=progress)
    js, png = write_bench(result, out)
    t = Table(title=f"paradiff bench: {result['n_prompts']} held-out prompts, {result['preset']} preset")
    t.add_column("axis")
    for name in result["samplers"]:
        t.add_column(name)
    for a in AXES:
        cells = []
        for name, row in result["samplers"].items():
            v = row[a]
            cells.append("n/a" if v is None else f"{v:.3f} [{result['ci95'][name][a][0]:.2f}, {result['ci95'][name][a][1]:.2f}]")
        t.add_row(a, *cells)
    out_console().print(t)
    held = result["over_seeds"]
    for k, r in held["per_seed"].items():
        d = r["difference"]
        console.print(f"sampling seed {k}: output alignment parallel {r['parallel']:.3f} vs think-then-draw "
                      f"{r['sequential']:.3f}, difference {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
                      f"McNemar exact p {r['mcnemar']['p']:.3g}")
    p, d = held["pooled"], held["pooled"]["difference"]
    console.print(f"pooled over {held['seeds']} seeds: {p['parallel']:.3f} vs {p['sequential']:.3f}, difference "
                  f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], McNemar exact p {p['mcnemar']['p']:.3g}")
    console.print(f"wrote {js} and {png}")


@app.command()
def render(
    scene: Annotated[str, typer.Option(help="Scene text, e.g. 'big red circle b2 ; small blue square c3'.")],
    out: Annotated[Path, typer.Option(help="PNG to write (32x32 RGB, usable as --image).")],
) -> None:
    """Render a scene written in the reasoning grammar as an input image."""
    from paperlab.paradiff.errors import PromptError
    from paperlab.paradiff.images import save_png
    from paperlab.paradiff.scene import render as render_scene
    from paperlab.paradiff.task import GrammarError, parse_text

    try:
        parsed = parse_text(scene.replace(";", " ; ").split())
    except GrammarError as exc:
        raise PromptError(f"scene {scene!r} does not parse ({exc}); write 'size colour shape cell ; ...' "
                          "in reading order, e.g. 'big red circle b2 ; small blue square c3'") from None
    save_png(render_scene(parsed), out)
    typer.echo(f"wrote {out}")


@app.command()
def vocab() -> None:
    """List the words prompts may use."""
    from paperlab.paradiff.task import SPECIALS, WORDS

    typer.echo(" ".join(w for w in WORDS if w not in SPECIALS))


@app.command()
def rl(
    out: Annotated[Path | None, typer.Option(help="Directory for rl.json, rl.png and each arm's resumable state.")]
    = None,
    preset: Preset = "tiny",
    updates: Annotated[int | None, typer.Option(min=1, help="RL updates per arm (preset: tiny 16).")] = None,
    group: Annotated[int | None, typer.Option(help="G: trajectories per prompt, at least 2 (preset: 4).")] = None,
    train_prompts: Annotated[int | None, typer.Option(min=1, help="Size of the fixed training prompt set.")] = None,
    prompts: Annotated[int | None, typer.Option(min=1, help="Training prompts per update.")] = None,
    beta: Annotated[float | None, typer.Option(min=0, help="KL penalty weight (default 0.02).")] = None,
    clip: Annotated[float | None, typer.Option(help="PPO clip range (default 0.2).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (preset: 1e-4 for tiny and small).")] = None,
    rollout: Annotated[str | None, typer.Option(help="eval: rollouts decoded as the benchmark decodes (the "
                                                     "default); explore: words and codes at temperature 1, no "
                                                     "guidance.")] = None,
    advantage: Annotated[str | None, typer.Option(help="std: GRPO's group-normalised advantages (default); mean: "
                                                       "centred only (Dr. GRPO).")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="RL seeds 0..N-1, each training both arms.")] = 3,
    eval_prompts: Annotated[int, typer.Option(min=3, help="Held-out benchmark prompts to score each arm on.")] = 300,
    eval_every: Annotated[int, typer.Option(min=0, help="Also score them every N updates (0: at the end only).")] = 0,
    checkpoint: Checkpoint = None,
    attention: Attention = None,
    parallel: ParallelOpt = None,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    dry_run: DryRunOpt = False,
    nproc: NprocOpt = None,
) -> None:
    """ParaRL: no RL vs final-step reward vs trajectory reward, on the same held-out prompts.

    One process, or every rank of `torchrun --nproc_per_node N -m paperlab paradiff rl ...`: each
    rank samples and trains on its share of every update's prompts (docs/training.md).
    """
    from pydantic import ValidationError
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from paperlab.errors import config_error
    from paperlab.paradiff.errors import ParadiffConfigError
    from paperlab.paradiff.rl import RLConfig, check_device, rl_preset
    from paperlab.paradiff.rl_bench import ARMS, run_rl

    over = {k: v for k, v in {"updates": updates, "group": group, "train_prompts": train_prompts, "rollout": rollout,
                              "advantage": advantage,
                              "prompts": prompts, "beta": beta, "clip": clip, "lr": lr}.items() if v is not None}
    try:
        cfg = RLConfig.model_validate({**rl_preset(preset).model_dump(), **over})
    except ValidationError as exc:
        raise config_error(exc, "rl config", ParadiffConfigError) from None
    if dry_run:
        _rl_dry_run(_config(preset), cfg, parallel, nproc)
        return
    if out is None:
        raise ParadiffConfigError("paradiff rl needs --out DIR (rl.json, rl.png and each arm's state go there)")
    check_device(cfg)  # before any training: a gpu preset on a CPU machine is one line, exit 2
    model_cfg = _config(preset, attention=attention)
    from paperlab.train import check_launch, distributed

    check_launch(parallel, backend)
    with distributed(parallel, cfg.device, backend) as ctx:
        trained = _trained(model_cfg, checkpoint, ctx=ctx, threads=threads)
        cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("reward {task.fields[reward]:.3f}  kl {task.fields[kl]:.4f}"), TimeElapsedColumn())
        with Progress(*cols, console=console, transient=True, disable=not ctx.is_main) as bar:
            tasks = {a: bar.add_task(f"ParaRL {a}", total=cfg.updates, reward=float("nan"), kl=0.0) for a in ARMS[1:]}

            def on_update(arm: str, rec: dict[str, float]) -> None:
                bar.update(tasks[arm], completed=rec["update"], reward=rec["final_reward"], kl=rec["kl"])

            result = run_rl(trained, out, cfg, seeds=range(seeds), eval_prompts=eval_prompts,
                            eval_every=eval_every, on_update=on_update, ctx=ctx)
        if not ctx.is_main:
            return
    from rich.table import Table

    from paperlab.paradiff.bench import AXES

    t = Table(title=f"ParaRL on {result['n_prompts']} held-out prompts (parallel sampler), pooled over RL seeds "
                    f"{', '.join(map(str, result['seeds']))}")
    t.add_column("axis")
    for arm in ARMS:
        t.add_column(arm)
    for a in AXES:
        t.add_row(a, *[f"{result[arm][a]:.3f} [{result['ci95'][arm][a][0]:.2f}, {result['ci95'][arm][a][1]:.2f}]"
                       if result[arm][a] is not None else "n/a" for arm in ARMS])
    out_console().print(t)
    for pair, axes in result["paired"].items():
        d = axes["output_alignment"]
        console.print(f"output alignment, {pair.replace('_', ' ')}: {d['mean']:+.3f} "
                      f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    for s, rec in result["per_seed"].items():
        tr = rec["train_reward"]
        console.print(f"seed {s}: scorer reward on its RL training prompts (same seeded rollouts), before -> after: "
                      + "; ".join(f"{a} {tr[a]['before']:.3f} -> {tr[a]['after']:.3f}" for a in ARMS[1:]))
    console.print(f"scorer retrieval top-1 on held-out pairs: {result['scorer']['retrieval_top1']:.3f} "
                  f"(half masked: {result['scorer']['retrieval_top1_half_masked']:.3f}); wrote {out / 'rl.json'}")
