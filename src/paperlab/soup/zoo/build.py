"""The offline category-expert zoo: a tiny Llama pretrained on all task categories, then
fine-tuned into candidates that are each strong on different categories.

Everything is a real Hugging Face checkpoint (``LlamaForCausalLM`` + a character-level fast
tokenizer), so the merge engine, ``AutoModelForCausalLM`` and ``generate`` work on it unchanged.
The built zoo is cached under ``$PAPERLAB_CACHE/soup/zoo-<hash>`` (default
``~/.cache/paperlab/soup``), keyed on the whole config, and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from paperlab.io.atomic import atomic_directory
from paperlab.io.cache import cache_dir
from paperlab.soup.zoo.tasks import (
    CATEGORIES,
    EOS,
    PAD,
    TOKEN_PATTERN,
    VOCAB,
    Example,
    make_split,
    sample_mix,
)

log = logging.getLogger(__name__)
ZOO_VERSION = 3  # bump when the task generator or training recipe changes


class CandidateSpec(BaseModel):
    """A fine-tune: its training mix over categories and its number of steps."""

    model_config = ConfigDict(extra="forbid")
    name: str
    mix: dict[str, float]
    steps: int = Field(gt=0)


def default_candidates() -> list[CandidateSpec]:
    """One specialist per category (fine-tuned on that category only) and one generalist."""
    return [
        CandidateSpec(name="caller", mix={"simple": 1.0}, steps=100),
        CandidateSpec(name="selector", mix={"multiple": 1.0}, steps=100),
        CandidateSpec(name="parallel", mix={"parallel": 1.0}, steps=100),
        CandidateSpec(name="refuser", mix={"irrelevance": 1.0}, steps=100),
        CandidateSpec(name="generalist", mix={c: 1.0 for c in CATEGORIES}, steps=100),
    ]


class ZooConfig(BaseModel):
    """Model size, training recipe, candidates and benchmark sizes of a zoo (the cache key)."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    pretrain_steps: int = 80
    pretrain_lr: float = 3e-3
    finetune_lr: float = 1e-3
    batch: int = 32
    seed: int = 0
    per_category_val: int = 40
    per_category_test: int = 60
    candidates: list[CandidateSpec] = Field(default_factory=default_candidates)

    def key(self) -> str:
        blob = json.dumps({"v": ZOO_VERSION, **self.model_dump()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def small_config() -> ZooConfig:
    """A zoo small enough for tests (seconds to build)."""
    return ZooConfig(hidden=48, layers=2, heads=2, intermediate=96, pretrain_steps=40, batch=16,
                     per_category_val=8, per_category_test=8,
                     candidates=[CandidateSpec(name=c.name, mix=c.mix, steps=15) for c in default_candidates()[:3]])


def cache_root() -> Path:
    """``$PAPERLAB_CACHE/soup`` or ``~/.cache/paperlab/soup``."""
    return cache_dir("soup")


_IDS = {w: i for i, w in enumerate(VOCAB)}


def make_tokenizer() -> Any:
    """A word-level fast tokenizer: words and single punctuation/space tokens, fused on decode."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=_IDS, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, model_max_length=128)


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (the same as the saved tokenizer's, without its overhead)."""
    return [_IDS[w] for w in re.findall(TOKEN_PATTERN, text)]


def batch_tensors(examples: list[Example]) -> tuple[Any, Any, Any]:
    """(input_ids, attention_mask, labels): prompt + answer + EOS, right-padded; loss on the answer."""
    import torch

    seqs, labels = [], []
    for ex in examples:
        p, a = encode(ex.prompt), encode(ex.answer) + [1]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    n = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    for i, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        lab[i, : len(lb)] = torch.tensor(lb)
    return ids, mask, lab


def _train(model: Any, mix: dict[str, float], steps: int, lr: float, batch: int, seed: int,
           tick: Callable[[], None] | None, exclude: frozenset[str]) -> float:
    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps))
    model.train()
    loss_val = float("nan")
    for _ in range(steps):
        ids, mask, lab = batch_tensors(sample_mix(rng, mix, batch, exclude))
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        if tick is not None:
            tick()
    model.eval()
    return loss_val


def _write_jsonl(path: Path, examples: list[Example]) -> None:
    with open(path, "w") as fh:
        for ex in examples:
            fh.write(json.dumps({"prompt": ex.prompt, "answer": ex.answer, "category": ex.category,
                                 "matcher": "exact"}) + "\n")


def build_zoo(cfg: ZooConfig, root: Path | None = None, *, tick: Callable[[], None] | None = None) -> Path:
    """Build (or find in the cache) the zoo for ``cfg``.

    Layout: ``base/``, ``candidates/<name>/`` (HF checkpoints), ``val.jsonl``, ``test.jsonl``,
    ``zoo.json`` (config, losses, timings).

    Args:
        cfg: the zoo config.
        root: cache root (default :func:`cache_root`).
        tick: called once per training step (for a progress bar).

    Returns:
        The zoo directory.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = (root or cache_root()) / f"zoo-{cfg.key()}"
    if (out / "zoo.json").is_file():
        return out
    start = time.perf_counter()
    with atomic_directory(out, force=True) as tmp:
        torch.manual_seed(cfg.seed)
        tok = make_tokenizer()
        mcfg = LlamaConfig(
            vocab_size=len(VOCAB), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
            max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=1,
            tie_word_embeddings=False,
        )
        # The benchmark splits first: their prompts are kept out of every training batch.
        val = make_split(10_000 + cfg.seed, cfg.per_category_val)
        test = make_split(20_000 + cfg.seed, cfg.per_category_test, exclude={e.prompt for e in val})
        held = frozenset(e.prompt for e in [*val, *test])
        base = LlamaForCausalLM(mcfg)
        uniform = {c: 1.0 for c in CATEGORIES}
        losses = {"base": _train(base, uniform, cfg.pretrain_steps, cfg.pretrain_lr, cfg.batch, cfg.seed, tick, held)}
        base.save_pretrained(tmp / "base")
        tok.save_pretrained(tmp / "base")
        for i, cand in enumerate(cfg.candidates):
            model = LlamaForCausalLM.from_pretrained(tmp / "base")
            losses[cand.name] = _train(model, cand.mix, cand.steps, cfg.finetune_lr, cfg.batch, cfg.seed + 1 + i,
                                       tick, held)
            model.save_pretrained(tmp / "candidates" / cand.name)
            tok.save_pretrained(tmp / "candidates" / cand.name)
        _write_jsonl(tmp / "val.jsonl", val)
        _write_jsonl(tmp / "test.jsonl", test)
        n_params = sum(p.numel() for p in base.parameters())
        (tmp / "zoo.json").write_text(json.dumps({
            "config": cfg.model_dump(), "key": cfg.key(), "params": n_params, "final_losses": losses,
            "build_seconds": round(time.perf_counter() - start, 1),
        }, indent=2))
    log.info("built zoo %s in %.0f s", out, time.perf_counter() - start)
    return out


def zoo_candidates(zoo: Path) -> list[Path]:
    """The candidate checkpoint directories of a built zoo, in config order."""
    names = [c["name"] for c in json.loads((zoo / "zoo.json").read_text())["config"]["candidates"]]
    return [zoo / "candidates" / n for n in names]


def total_steps(cfg: ZooConfig) -> int:
    return cfg.pretrain_steps + sum(c.steps for c in cfg.candidates)
