"""Long-context data as AMD packs it: documents end to end in long rows, attention kept inside
each document (document masking), and the RoPE base for a longer context.

AMD's long stages (branch ``instella-long``) fill each row with whole or cut documents, record
their lengths (``generate_doc_lengths: true``) and run flash-attention's variable-length kernel
over them, so a token attends only to earlier tokens of its own document; the first token of
each document gets no loss (nothing of its document precedes it). Positions run over the whole
row, but RoPE makes attention depend only on the distance between two tokens, so a document
attended alone with positions from 0 gives the same outputs. That is what :func:`packed_token_nll`
does: it cuts each row at its document boundaries, runs the pieces as the rows of one batch
(right-padded, through the model's ordinary forward) and puts the losses back in row order.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from paperlab.instella.recipe.losses import token_nll

# AMD's long phases: 64K tokens with rope_theta 514,640, then 256K with 3,691,950, from a model
# trained at 4,096 with 10,000. Both points lie on theta = 10,000 x m^k for the context
# multiplier m (16, 64) with one exponent k = 1.42137 (the two points agree to 3e-7), so
# the law carries AMD's choice to other multipliers: 4x gives 71,738, 16x gives 514,640.
AMD_LONG_EXPONENT = math.log(514_640 / 10_000) / math.log(16)


def long_rope_theta(base_theta: float, factor: float) -> float:
    """The RoPE base for ``factor`` x the training context: ``base_theta * factor ** 1.42137``."""
    return base_theta * factor**AMD_LONG_EXPONENT


@dataclass(frozen=True)
class PackedRow:
    """One training row: token ids, a loss mask (1 = a target) and its document lengths."""

    ids: torch.Tensor  # (T,)
    mask: torch.Tensor  # (T,)
    doc_lens: tuple[int, ...]  # sum == T


class DocumentStream:
    """Documents (ids and loss masks) laid end to end; rows are windows of it, cut at document
    boundaries as AMD's collator cuts them. Every document ends with the EOS token."""

    def __init__(self, docs: list[tuple[list[int], list[int]]]) -> None:
        if not docs:
            raise ValueError("a document stream needs at least one document")
        self.ids = torch.tensor([t for d, _ in docs for t in d], dtype=torch.long)
        self.mask = torch.tensor([m for _, ms in docs for m in ms], dtype=torch.long)
        self.ends: list[int] = []  # exclusive end of each document in the stream
        total = 0
        for d, _ in docs:
            total += len(d)
            self.ends.append(total)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def row(self, start: int, T: int) -> PackedRow:
        """The ``T`` tokens from ``start``, with the lengths of the documents (or their parts) inside."""
        stop = start + T
        if start < 0 or stop > len(self):
            raise ValueError(f"window [{start}, {stop}) is outside a stream of {len(self)} tokens")
        cuts = [start]
        i = bisect.bisect_right(self.ends, start)
        while i < len(self.ends) and self.ends[i] < stop:
            cuts.append(self.ends[i])
            i += 1
        cuts.append(stop)
        lens = tuple(b - a for a, b in zip(cuts, cuts[1:], strict=False) if b > a)
        return PackedRow(self.ids[start:stop], self.mask[start:stop], lens)


def pack_documents(docs: list[tuple[list[int], list[int]]], T: int) -> PackedRow:
    """Whole documents side by side in one row of at most ``T`` tokens (the last one cut), as
    AMD's packed chat sets (``ultrachat-200k-packed`` ...) hold them."""
    ids: list[int] = []
    mask: list[int] = []
    lens: list[int] = []
    for d, m in docs:
        room = T - len(ids)
        if room <= 0:
            break
        ids += d[:room]
        mask += m[:room]
        lens.append(min(len(d), room))
    return PackedRow(torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long), tuple(lens))


def split_text_documents(ids: torch.Tensor, low: int, high: int, seed: int) -> list[list[int]]:
    """Cut a token stream into documents of log-uniform lengths in [low, high] (a corpus without
    document boundaries, such as one play, read as many documents of book-like lengths)."""
    rng = random.Random(seed)
    out, pos, n = [], 0, int(ids.numel())
    while pos < n:
        length = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        out.append(ids[pos : pos + length].tolist())
        pos += length
    return out


def packed_token_nll(model: Any, rows: list[PackedRow], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token losses of packed rows under document masking.

    Args:
        model: a causal LM called as ``model(ids, attention_mask=..., use_cache=False)``.
        rows: packed rows (their lengths may differ).
        pad_id: the padding token id.

    Returns:
        (R, T) losses in row order (0 where there is no target) and the (R, T) target mask:
        position t of a document predicts its token t + 1, where the loss mask keeps that token;
        the last position of a document predicts nothing (the next document is not its future).
    """
    device = next(model.parameters()).device
    pieces: list[tuple[int, int, int]] = []  # (row, start, length)
    for r, row in enumerate(rows):
        start = 0
        for n in row.doc_lens:
            if n >= 2:  # a one-token document (or cut) predicts nothing
                pieces.append((r, start, n))
            start += n
    T = max(int(row.ids.numel()) for row in rows)
    nll_rows = torch.zeros(len(rows), T, device=device)
    tgt_rows = torch.zeros(len(rows), T, dtype=torch.bool, device=device)
    if not pieces:
        return nll_rows, tgt_rows
    width = max(n for _, _, n in pieces)
    ids = torch.full((len(pieces), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pieces), width), dtype=torch.long)
    att = torch.zeros((len(pieces), width), dtype=torch.long)
    for j, (r, s, n) in enumerate(pieces):
        ids[j, :n] = rows[r].ids[s : s + n]
        mask[j, :n] = rows[r].mask[s : s + n]
        att[j, :n] = 1
    ids, mask, att = ids.to(device), mask.to(device), att.to(device)
    logits = model(ids, attention_mask=att, use_cache=False).logits  # (P, W, V)
    nll = token_nll(logits, ids, mask)  # (P, W); position t carries the loss of token t + 1
    has_target = torch.zeros_like(mask, dtype=torch.bool)
    has_target[:, :-1] = mask[:, 1:].bool()
    for j, (r, s, n) in enumerate(pieces):
        nll_rows[r, s : s + n] = nll[j, :n]
        tgt_rows[r, s : s + n] = has_target[j, :n]
    return nll_rows, tgt_rows


def packed_lm_sum(model: Any, rows: list[PackedRow], pad_id: int) -> tuple[torch.Tensor, int]:
    """The summed loss of packed rows under document masking, and the number of targets."""
    nll, targets = packed_token_nll(model, rows, pad_id)
    return nll.sum(), int(targets.sum())
