"""Instella-Long's stages: the long-context phases, then SFT and DPO so the model still chats.

AMD (branch ``instella-long``) continues Instella-3B-Instruct at 64K tokens with rope_theta
514,640 (5,000 steps of 4M tokens), then at 256K with 3,691,950 (2,500 steps of 8M tokens),
both at lr 2e-5 with 10% warm-up, documents packed into long rows with document masking; then
an SFT at 256K on 60% long documents and 40% packed chat (250 steps, lr 4e-5), then DPO as for
the instruct model. Here each phase runs at ``factor`` x the short context with the RoPE base
from :func:`.packing.long_rope_theta`, on rows cut from a stream of long corpus documents and
short math documents (``long_math_fraction`` of the tokens), document-masked.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from paperlab.instella.recipe import data as D
from paperlab.instella.recipe.evaluate import heldout_text_loss
from paperlab.instella.recipe.instruct import dpo_stage
from paperlab.instella.recipe.packing import (
    DocumentStream,
    PackedRow,
    long_rope_theta,
    pack_documents,
    packed_lm_sum,
    split_text_documents,
)
from paperlab.train import LossParts, sample_generator

if TYPE_CHECKING:
    from paperlab.instella.recipe.config import LongPhase
    from paperlab.instella.recipe.stages import Recipe


def long_stream(r: Recipe, longest: int) -> DocumentStream:
    """The long stages' documents: the corpus cut into documents of book-like lengths (half the
    short context to twice the longest phase's), and math problems in the stage-2 text form as
    ``long_math_fraction`` of the tokens, shuffled, each ending with ``<|endoftext|>``."""
    eos = r.tok.eos_token_id
    seed = r.cfg.seed + 3
    texts = split_text_documents(r.text_ids, max(2, r.cfg.model.seq_len // 2), 2 * longest, seed)
    docs = [t + [eos] for t in texts]
    corpus_tokens = sum(len(d) for d in docs)
    f = r.cfg.long_math_fraction
    want = int(corpus_tokens * f / (1 - f)) if f < 1 else corpus_tokens
    math_docs = [r.encode(D.raw_math(p)).tolist() + [eos] for p in r.math_train]
    math_tokens, i = 0, 0
    while math_tokens < want:  # the problems in turn (again if the corpus asks for more)
        docs.append(math_docs[i % len(math_docs)])
        math_tokens += len(docs[-1])
        i += 1
    random.Random(seed).shuffle(docs)
    return DocumentStream([(d, [1] * len(d)) for d in docs])


def _check_fits(r: Recipe, stream: DocumentStream, T: int) -> None:
    from paperlab.instella.errors import InstellaConfigError

    if len(stream) <= T + 1 or r.held_ids.numel() <= T + 1:
        raise InstellaConfigError(
            f"the long context of {T} tokens does not fit the corpus ({len(stream)} training and "
            f"{r.held_ids.numel()} held-out tokens); give a longer --corpus or smaller long_phases factors")


def packed_loss(r: Recipe) -> Any:
    """The task loss of packed rows: next-token loss with attention kept inside each document."""

    def loss(model: Any, rows: list[PackedRow]) -> LossParts:
        total, count = packed_lm_sum(model, rows, r.tok.pad_token_id)
        return LossParts(total, count, tokens=sum(int(row.ids.numel()) for row in rows))

    return loss


def stage_long(r: Recipe) -> None:
    """The long-context phases, each from the one before (the first from the instruct model)."""
    from paperlab.instella.configuration import InstellaConfig

    phases = r.cfg.long_phases
    src = r.input_for("long")
    base_theta = float(InstellaConfig.from_pretrained(src).rope_base)  # the short-context model's base
    stream = long_stream(r, r.cfg.model.seq_len * phases[-1].factor)
    _check_fits(r, stream, r.cfg.model.seq_len * phases[-1].factor)
    for n, phase in enumerate(phases, 1):
        key = f"long/phase-{n}"
        if not r.done(key):
            _long_phase(r, key, phase, src, base_theta, stream, seed=r.cfg.seed + 30 + n)
        src = r.ckpt(key)


def _long_phase(r: Recipe, key: str, phase: LongPhase, src: Path, base_theta: float, stream: DocumentStream,
                seed: int) -> None:
    model = r.load(src)
    T = r.cfg.model.seq_len * phase.factor
    theta = phase.rope_theta or long_rope_theta(base_theta, phase.factor)
    model.config.set_rope_theta(theta)
    model.config.max_position_embeddings = T

    def batch(step: int, rows: range) -> list[PackedRow]:
        return [stream.row(r.pick(seed, step, i, len(stream) - T), T) for i in rows]

    windows = max(2, r.cfg.eval.heldout_windows // phase.factor)
    before = heldout_text_loss(model, r.held_ids, T, windows) if r.ctx.is_main else float("nan")
    # one packed row per forward: its documents are padded to its longest one, not the batch's
    w, stats = r.train_stage(key, "long", model, phase, batch, packed_loss(r), micro_batch=1)
    docs = [len(row.doc_lens) for row in batch(0, range(64))]

    def extra(m: Any) -> dict[str, Any]:
        return {"from": str(src), "context": T, "rope_theta": theta, "rope_theta_base": base_theta,
                "documents_per_row": sum(docs) / len(docs), "heldout_loss_text_long_before": before,
                "heldout_loss_text_long_after": heldout_text_loss(m, r.held_ids, T, windows)}

    r.finish(key, w, stats, chat=True, extra=extra)


def stage_long_sft(r: Recipe) -> None:
    """SFT at the longest context: rows of long documents, and rows of chat examples packed side
    by side (``long_sft_chat_fraction`` of each batch), the loss on the replies, document-masked."""
    if r.done("long_sft"):
        return
    src = r.input_for("long_sft")
    model = r.load(src)  # keeps the last phase's RoPE base and context
    T = int(model.config.max_position_embeddings)
    s = r.cfg.long_sft
    stream = long_stream(r, T)
    _check_fits(r, stream, T)
    chats = r.chat_examples(r.math_train, T)
    n_text = s.batch - int(round(s.batch * r.cfg.long_sft_chat_fraction))
    seed = r.cfg.seed + 40

    def batch(step: int, rows: range) -> list[PackedRow]:
        out = []
        for i in rows:
            if i < n_text:
                out.append(stream.row(r.pick(seed, step, i, len(stream) - T), T))
                continue
            g = sample_generator(seed, step, i)
            picked: list[tuple[list[int], list[int]]] = []
            filled = 0
            while filled < T:  # whole chats until the row is full (the last one cut)
                ex = chats[int(torch.randint(0, len(chats), (1,), generator=g))]
                picked.append(ex)
                filled += len(ex[0])
            out.append(pack_documents(picked, T))
        return out

    w, stats = r.train_stage("long_sft", "long_sft", model, s, batch, packed_loss(r), micro_batch=1)
    r.finish("long_sft", w, stats, chat=True, extra={"from": str(src), "context": T})


def stage_long_dpo(r: Recipe) -> None:
    """DPO after the long SFT, as for the instruct model (AMD: the same settings)."""
    if r.done("long_dpo"):
        return
    dpo_stage(r, "long_dpo", r.input_for("long_dpo"), r.cfg.long_dpo)
