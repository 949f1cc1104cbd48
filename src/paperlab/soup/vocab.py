"""``tokenizer:`` (and ``tokenizer_source:``): the output vocabulary and every model's embedding
rows mapped onto it, as mergekit 0.1.5 builds them.

The output tokenizer is the base model's (``source: base``; the base is ``base_model``, else the
first model), a model's (``source: REF``), or the union (``source: union``): the base's
vocabulary, then every other model's tokens it lacks, in the order the models are listed
(mergekit's order is its set order, which varies between runs for three or more models; ours
is fixed), added as tokens of the base tokenizer; then ``tokens:`` not yet in it. A model's
tokens at or beyond its ``vocab_size`` (padding rows) are left out, as mergekit does.

Each vocabulary tensor (embeddings and LM head, rows = vocabulary) of every model is then
re-indexed to the output vocabulary: a row the model has is its own; a token it lacks gets a
default row, which is, in order, the row named in ``tokens:``; the only model's row when one
model has it; the base's when the base has it; else the mean of the rows of the models that
have it (a token nobody has gets zeros). ``force: true`` uses the ``tokens:`` row for every
model. With ``pad_to_multiple_of`` the output rows are padded with the mean row. The merge
method then combines the re-indexed tensors; the output config's ``vocab_size`` follows.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperlab.soup.config import TokenizerSpec
from paperlab.soup.errors import CheckpointError, MergeConfigError

log = logging.getLogger(__name__)

VOCAB_SUFFIXES = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_in.weight", "embed_out.weight",
                  "word_embeddings.weight")


def vocab_rows(config: dict[str, Any]) -> int | None:
    v = config.get("vocab_size")
    if v is None and isinstance(config.get("text_config"), dict):
        v = config["text_config"].get("vocab_size")
    return int(v) if isinstance(v, int) else None


def is_vocab_tensor(name: str, shape: tuple[int, ...], rows: int | None) -> bool:
    """A tensor indexed by token on its first axis (embeddings, LM head)."""
    return name.endswith(VOCAB_SUFFIXES) and len(shape) == 2 and (rows is None or shape[0] == rows)


def _load(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001  (transformers raises many kinds; one line names the model)
        raise CheckpointError(f"cannot load the tokenizer of {path} ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                              "the tokenizer block needs every model's tokenizer") from None


def _stripped(tok: Any, rows: int | None, path: Path) -> Any:
    """The tokenizer without tokens whose ids are at or past the model's rows (mergekit's rule)."""
    import tokenizers

    if rows is None:
        return tok
    unused = {t for t, i in tok.get_vocab().items() if i >= rows}
    if not unused:
        return tok
    if not tok.is_fast:
        raise CheckpointError(f"{path}: its tokenizer has ids past vocab_size and is not a fast tokenizer; "
                              "it cannot be used to build the output vocabulary")
    data = json.loads(tok._tokenizer.to_str())
    if data["model"]["type"] != "BPE":
        raise CheckpointError(f"{path}: its {data['model']['type']} tokenizer has ids past vocab_size; only BPE "
                              "tokenizers can be trimmed to the model's rows")
    data["added_tokens"] = [e for e in data["added_tokens"] if e["id"] < rows]
    for t in unused:
        data["model"]["vocab"].pop(t, None)

    def keep(m: Any) -> bool:
        parts = m.split(" ") if isinstance(m, str) else list(m)
        return not any(p in unused for p in parts)

    data["model"]["merges"] = [m for m in data["model"]["merges"] if keep(m)]
    tok._tokenizer = tokenizers.Tokenizer.from_str(json.dumps(data))
    return tok


def _union(base_tok: Any, base_vocab: dict[str, int], toks: list[tuple[Any, dict[str, int], int | None]]) -> Any:
    from transformers import AutoTokenizer

    added: dict[str, Any] = {}
    plain: dict[str, None] = {}
    for tok, vocab, rows in toks:
        limit = rows if rows is not None else tok.vocab_size
        decoder = tok.added_tokens_decoder
        added_text = {info.content for info in decoder.values()}
        for t, i in vocab.items():
            if i < limit and t not in added_text:
                plain.setdefault(t)
        for i, info in decoder.items():
            if i < limit:
                added.setdefault(info.content, info)
    new = [t for t in plain if t not in added and t not in base_vocab]
    if not new and all(info.content in base_vocab for info in added.values()):
        return base_tok  # nothing to add: the union is the base tokenizer
    with tempfile.TemporaryDirectory() as d:  # a copy: the base tokenizer object stays as it was
        base_tok.save_pretrained(d)
        out = AutoTokenizer.from_pretrained(d)
    if new:
        out.add_tokens(new)
    for info in added.values():
        out.add_tokens(info)
    return out


@dataclass
class VocabPlan:
    """The output tokenizer and, per model (reader index), output id -> that model's row (-1: none)."""

    tokenizer: Any
    vocab: dict[str, int]
    rows: int  # output rows (padded)
    perms: dict[int, list[int]]
    base: int | None  # reader index of the base model among the vocabulary's models
    tokens: dict[str, Any] = field(default_factory=dict)
    source_rows: dict[int, int] = field(default_factory=dict)  # reader -> its own vocabulary rows

    @property
    def identity(self) -> bool:
        """Every model's rows already are the output's: tensors stream through unchanged."""
        return (not self.tokens and all(n == self.rows for n in self.source_rows.values())
                and all(p == list(range(self.rows)) for p in self.perms.values()))


def build_vocab(spec: TokenizerSpec, models: dict[int, tuple[Path, dict[str, Any], str]], base: int | None,
                source_dir: Path | None, locate_token_model: Any) -> VocabPlan:
    """Build the output vocabulary (see the module docstring).

    Args:
        spec: the tokenizer block.
        models: reader index -> (directory, config, reference) of every model whose tensors merge.
        base: reader index of the base model (None: the first model is the base, as mergekit's).
        source_dir: the directory of ``source: REF`` when the source is a model.
        locate_token_model: reference -> reader index (for ``tokens:`` sources).

    Raises:
        CheckpointError / MergeConfigError: a tokenizer that cannot be loaded, or a token source
            that names a model not in the merge.
    """
    order = list(models)
    base_idx = base if base is not None else order[0]
    toks = {i: _load(models[i][0]) for i in order}
    rows = {i: vocab_rows(models[i][1]) for i in order}
    toks[base_idx] = _stripped(toks[base_idx], rows[base_idx], models[base_idx][0])
    vocabs = {i: toks[i].get_vocab() for i in order}  # get_vocab builds a fresh dict each call
    if spec.source == "base":
        out = toks[base_idx]
    elif spec.source == "union":
        out = _union(toks[base_idx], vocabs[base_idx], [(toks[i], vocabs[i], rows[i]) for i in
                                                         [base_idx, *[j for j in order if j != base_idx]]])
    else:
        assert source_dir is not None
        out = _load(source_dir)
    extra = [t for t in (spec.tokens or {}) if t not in out.get_vocab()]
    if extra:
        out.add_tokens(extra)
    vocab = out.get_vocab()
    n = len(vocab)
    padded = n if not spec.pad_to_multiple_of or n % spec.pad_to_multiple_of == 0 else \
        (n // spec.pad_to_multiple_of + 1) * spec.pad_to_multiple_of
    perms: dict[int, list[int]] = {}
    for i in order:
        mv = vocabs[i]
        limit = rows[i] if rows[i] is not None else len(mv)
        p = [-1] * n
        for t, new in vocab.items():
            old = mv.get(t)
            if old is not None and old < limit:
                p[new] = old
        perms[i] = p
    tokens: dict[str, Any] = {}
    for t, cfg in (spec.tokens or {}).items():
        src = cfg.source
        if isinstance(src, str):
            src = {"kind": "model", "model": locate_token_model(src)}
        elif isinstance(src, dict) and src.get("kind") == "model_token":
            idx = locate_token_model(str(src["model"]))
            tid = src.get("token_id")
            if tid is None:
                tid = vocabs[idx].get(src["token"])
                if tid is None:
                    raise MergeConfigError(f"tokens.{t}: token {src['token']!r} is not in {models[idx][2]}'s vocabulary")
            src = {"kind": "model_token", "model": idx, "token_id": int(tid)}
        tokens[t] = {"source": src, "force": cfg.force}
    return VocabPlan(out, vocab, padded, perms, base if base is not None else None, tokens,
                     {i: r for i, r in rows.items() if r is not None})


def reindex(plan: VocabPlan, tensors: dict[int, Any]) -> dict[int, Any]:
    """Every model's vocabulary tensor (rows = tokens) re-indexed to the output vocabulary.

    Args:
        tensors: reader index -> its 2-D tensor, already in the compute dtype.
    """
    import torch

    models = list(tensors)
    first = tensors[models[0]]
    dtype = first.dtype
    for t in tensors.values():
        dtype = torch.promote_types(dtype, t.dtype)
    dim, device = first.shape[1], first.device
    vocab, perms, cfgs = plan.vocab, plan.perms, plan.tokens
    n = len(vocab)
    defaults: dict[int, Any] = {}
    for tok, tid in vocab.items():
        cfg = cfgs.get(tok)
        have = [m for m in models if perms[m][tid] >= 0]
        if not (cfg and cfg["force"]) and len(have) == len(models):
            continue
        src = cfg["source"] if cfg else None
        if src is None:
            if len(have) == 1:
                src = {"kind": "model", "model": have[0]}
            elif not have:
                log.warning("token %r is in no model's vocabulary: its row is zero", tok)
                src = {"kind": "zero"}
            elif plan.base is not None and plan.base in models and perms[plan.base][tid] >= 0:
                src = {"kind": "model", "model": plan.base}
        if src is None:  # the mean of the rows of the models that have it, in their order
            row = torch.zeros(dim, dtype=dtype, device=device)
            for m in have:
                row = row + tensors[m][perms[m][tid]]
            defaults[tid] = row / len(have)
        elif src["kind"] == "zero":
            defaults[tid] = torch.zeros(dim, dtype=dtype, device=device)
        elif src["kind"] == "model_token":
            m = src["model"]
            if not 0 <= src["token_id"] < tensors[m].shape[0]:
                raise MergeConfigError(f"tokens.{tok}: token id {src['token_id']} is outside the model's "
                                       f"{tensors[m].shape[0]} rows")
            defaults[tid] = tensors[m][src["token_id"]]
        else:
            m = src["model"]
            if perms[m][tid] < 0:
                raise MergeConfigError(f"tokens.{tok}: the model named as its source does not have it; "
                                       "name a model that does, or use {kind: zero}")
            defaults[tid] = tensors[m][perms[m][tid]]
    forced = {vocab[t] for t, c in cfgs.items() if c["force"] and t in vocab}
    out: dict[int, Any] = {}
    for m in models:
        p = perms[m]
        new = torch.zeros((plan.rows, dim), dtype=dtype, device=device)
        own = [tid for tid in range(n) if p[tid] >= 0 and tid not in forced]
        if own:
            idx = torch.tensor(own, device=device)
            new[idx] = tensors[m][torch.tensor([p[t] for t in own], device=device)].to(dtype)
        owned = set(own)
        for tid, row in defaults.items():
            if tid not in owned:
                new[tid] = row
        if plan.rows > n:
            new[n:] = new[:n].mean(dim=0)
        out[m] = new
    return out

