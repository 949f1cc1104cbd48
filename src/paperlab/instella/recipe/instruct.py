"""Instella-3B-Instruct's stages: pretrain -> stage2 x seeds -> soup -> sft -> dpo.

Each is a function of the running :class:`~paperlab.instella.recipe.stages.Recipe`; the DPO
step is shared with the long-context model's DPO (:func:`dpo_stage`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from paperlab.instella.recipe.evaluate import encode_pair, pad_batch
from paperlab.instella.recipe.losses import length_normalised_dpo_loss, sequence_logprobs
from paperlab.train import LossParts

if TYPE_CHECKING:
    from paperlab.instella.recipe.config import StageSettings
    from paperlab.instella.recipe.stages import Batch, Recipe


def stage_pretrain(r: Recipe) -> None:
    """Stage 1: next-token loss on windows of the English corpus, from random weights."""
    if r.done("pretrain"):
        return
    s, T = r.cfg.pretrain, r.cfg.model.seq_len

    def batch(step: int, rows: range) -> Batch:
        ids = r.windows(r.text_ids, r.cfg.seed, step, rows, T)
        return {"ids": ids, "mask": torch.ones_like(ids)}

    w, stats = r.train_stage("pretrain", "pretrain", r.new_model(), s, batch, r.lm_loss)
    r.finish("pretrain", w, stats, chat=False)


def stage_stage2(r: Recipe) -> None:
    """Stage 2, once per seed from the same stage-1 checkpoint: math text mixed with stage-1 text."""
    base = r.ckpt("pretrain") if r.ckpt("pretrain").is_dir() else r.from_dir
    assert base is not None  # check_stage_inputs: stage2 follows pretrain or --from
    s, T = r.cfg.stage2, r.cfg.model.seq_len
    for seed in r.cfg.seeds:
        key = f"stage2/seed-{seed}"
        if r.done(key):
            continue
        # the last general_fraction of each global batch is stage-1 text, the rest math
        n_math = s.batch - int(round(s.batch * r.cfg.general_fraction))

        def batch(step: int, rows: range, seed: int = seed, n_math: int = n_math) -> Batch:
            ids = torch.stack([
                r.windows(r.math_ids if i < n_math else r.text_ids, seed, step, range(i, i + 1), T)[0]
                for i in rows])
            return {"ids": ids, "mask": torch.ones_like(ids)}

        torch.manual_seed(seed)
        w, stats = r.train_stage(key, "stage2", r.load(base), s, batch, r.lm_loss)
        r.finish(key, w, stats, chat=False, extra={"seed": seed})


def stage_soup(r: Recipe) -> None:
    """The uniform average of the stage-2 seeds, written by paperlab.soup's merge engine."""
    if r.done("soup"):
        return
    r.main_only(_make_soup, r)
    r.report = r.ctx.broadcast(r.report)


def _make_soup(r: Recipe) -> None:
    from paperlab.soup import MergeSpec, ModelEntry, merge_checkpoints

    t0 = time.perf_counter()
    seeds = [r.ckpt(f"stage2/seed-{s}") for s in r.cfg.seeds]
    spec = MergeSpec(method="linear", models=[ModelEntry(model=str(p), weight=1.0) for p in seeds])
    merge_checkpoints(spec, r.ckpt("soup"), force=True)
    metrics = r.evaluate(r.load(r.ckpt("soup")), chat=False)
    seed_rows = [r.report["stages"][f"stage2/seed-{s}"] for s in r.cfg.seeds]
    compare: dict[str, Any] = {}
    for k in ("heldout_loss_text", "heldout_loss_gsm8k"):
        vals = [row[k] for row in seed_rows]
        compare[k] = {"seeds": vals, "mean_of_seeds": sum(vals) / len(vals), "best_seed": min(vals),
                      "soup": metrics[k], "soup_below_mean": metrics[k] < sum(vals) / len(vals),
                      "soup_below_best": metrics[k] < min(vals)}
    r.report.setdefault("stages", {})["soup"] = {
        "checkpoint": str(r.ckpt("soup")), **metrics, "merge": "paperlab.soup linear, uniform weights",
        "seconds": time.perf_counter() - t0, "soup_vs_seeds": compare,
    }


def sft_stage(r: Recipe, key: str, src: Path, s: StageSettings, examples: list[tuple[list[int], list[int]]],
              stream: int, extra: Callable[[Any], dict[str, Any]] | None = None, model: Any = None) -> None:
    """Chat SFT: the loss on the assistant's tokens of ``examples`` (padded per batch).

    ``stream`` keeps each SFT stage's draws apart; ``extra(model)`` adds figures to its report;
    ``model``: the model to train, when it is not ``src`` as saved.
    """

    def batch(step: int, rows: range) -> Batch:
        picked = [examples[r.pick(r.cfg.seed + stream, step, i, len(examples))] for i in rows]
        ids, mask = pad_batch(picked, r.tok.pad_token_id)
        return {"ids": ids, "mask": mask}

    w, stats = r.train_stage(key, key, model if model is not None else r.load(src), s, batch, r.lm_loss)
    r.finish(key, w, stats, chat=True, extra=lambda m: {"from": str(src), **(extra(m) if extra else {})})


def stage_sft(r: Recipe) -> None:
    """Instruct SFT on the math problems in the chat format."""
    if r.done("sft"):
        return
    sft_stage(r, "sft", r.input_for("sft"), r.cfg.sft, r.chat_examples(r.math_train, r.cfg.model.seq_len), 1)


def dpo_stage(r: Recipe, key: str, src: Path, s: StageSettings) -> None:
    """Length-normalised DPO from ``src``, which is also the frozen reference. A pair is the right
    solution against the same one with its final answer changed."""
    T, beta = r.cfg.model.seq_len, r.cfg.dpo_beta
    ref = r.load(src).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    encoded = [(encode_pair(r.tok, pr, c, T), encode_pair(r.tok, pr, rej, T))
               for pr, c, rej in r.pairs(r.math_train, chat=True)]

    def batch(step: int, rows: range) -> Batch:
        # one sample is one (chosen, rejected) pair: chosen rows first, then rejected
        idx = [r.pick(r.cfg.seed + 2, step, i, len(encoded)) for i in rows]
        ids, mask = pad_batch([encoded[i][0] for i in idx] + [encoded[i][1] for i in idx], r.tok.pad_token_id)
        return {"ids": ids, "mask": mask}

    def loss(model: Any, b: Batch) -> LossParts:
        ids, mask = b["ids"].to(r.device), b["mask"].to(r.device)
        n = ids.shape[0] // 2
        lp, ln = sequence_logprobs(model(ids, use_cache=False).logits, ids, mask)
        with torch.no_grad():
            rp, _ = sequence_logprobs(ref(ids, use_cache=False).logits, ids, mask)
        mean, _ = length_normalised_dpo_loss(lp[:n], lp[n:], rp[:n], rp[n:], ln[:n], ln[n:], beta)
        return LossParts(mean * n, n, tokens=int(mask.sum()))  # summed over this rank's pairs

    w, stats = r.train_stage(key, key, r.load(src), s, batch, loss)
    r.finish(key, w, stats, chat=True, extra={"reference": str(src), "beta": beta}, ref=ref)


def stage_dpo(r: Recipe) -> None:
    if r.done("dpo"):
        return
    dpo_stage(r, "dpo", r.input_for("dpo"), r.cfg.dpo)
