"""The induction probe: does a model copy from its context at all?

A random sequence ``r`` of ``length`` symbols, drawn uniformly from an alphabet of single-token
symbols, is fed twice: ``r r``. Nothing in the first copy is predictable (its loss is chance,
ln |alphabet|, for a model that has learned the symbol frequencies); every symbol of the second
copy is predictable by looking back one copy. The probe reports, per copy, the mean next-symbol
NLL with the softmax restricted to the alphabet (so chance is exactly ln |alphabet| whatever the
vocabulary), and the accuracy of the arg-max symbol:

    induction gain = NLL(first copy) - NLL(second copy)      (nats per symbol)

Both copies are scored on the same offsets 1..length-1 (offset 0 of the second copy cannot be
known to start a copy). A model with in-context copying (induction heads, Olsson et al. 2022)
drives the second copy far below the first; a model without it scores both alike. The second
copy is also reported per offset band, since copying gets easier once a longer match exists
(with 4 bases, one previous symbol matches a quarter of the first copy; a longer match is needed
to find the right place).

The probe reaches the model through :class:`paperlab.llm.LLM` (``next_tokens``), so any local
backend works: the DNA model trained here, the packaged SmolLM2, an ``hf:`` directory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from paperlab.errors import ICLError

if TYPE_CHECKING:
    from paperlab.llm import LLM

#: Named alphabets: DNA bases for the DNA model, digits for text models (one token each in
#: SmolLM2's tokenizer, which splits digits).
ALPHABETS: dict[str, str] = {"nucleotide": "ACGT", "digit": "0123456789"}
#: Offset bands of the second copy: [lo, hi) in symbols from the start of the copy.
BANDS: tuple[tuple[int, int], ...] = ((1, 4), (4, 16), (16, 64), (64, 1 << 30))


@dataclass(frozen=True)
class InductionResult:
    """Per-copy NLL (nats/symbol, alphabet-restricted softmax) and arg-max accuracy."""

    model: str
    alphabet: str
    length: int
    n_sequences: int
    chance_nats: float
    first_nats: float
    second_nats: float
    first_accuracy: float
    second_accuracy: float
    second_nats_by_band: dict[str, float]

    @property
    def gain_nats(self) -> float:
        """NLL(first copy) - NLL(second copy): how much the repeat helps."""
        return self.first_nats - self.second_nats

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"gain_nats": self.gain_nats}


def alphabet_token_ids(llm: LLM, symbols: str) -> list[int]:
    """The single token id of each symbol, checked in context (a run of symbols must tokenize
    to one token per symbol, or the probe's sequences would not be what it scores).

    Raises:
        ICLError: a symbol is not exactly one token, or symbols merge when concatenated.
    """
    if len(set(symbols)) != len(symbols) or len(symbols) < 2:
        raise ICLError(f"alphabet {symbols!r} needs at least two distinct symbols")
    ids = []
    for s in symbols:
        tok = llm.tokenize(s)
        if len(tok) != 1:
            raise ICLError(f"symbol {s!r} is {len(tok)} tokens for this tokenizer; the induction "
                           "probe needs one token per symbol (use --alphabet digit for text models)")
        ids.append(int(tok[0]))
    if len(set(ids)) != len(ids):  # e.g. unknown symbols all read as <unk>
        raise ICLError(f"some symbols of {symbols!r} share one token (unknown to this tokenizer); "
                       "choose symbols the model knows")
    probe = symbols * 3
    if len(llm.tokenize(probe)) != len(probe):
        raise ICLError(f"the tokenizer merges runs of {symbols!r} into multi-symbol tokens; "
                       "choose an alphabet it splits (--alphabet digit for text models)")
    return ids


def induction_probe(
    llm: LLM,
    symbols: str = "ACGT",
    *,
    length: int = 128,
    n_sequences: int = 64,
    seed: int = 0,
    batch_size: int = 8,
    name: str = "model",
) -> InductionResult:
    """Score ``n_sequences`` random sequences of ``length`` symbols, each fed twice.

    The model is reached through the LLM door: ``next_tokens`` teacher-forces each ``r r`` in
    one batched forward pass and reads the next-token log-probs at the alphabet's symbols,
    which are renormalised over the alphabet here.

    Raises:
        ICLError: a bad alphabet, a length below 8, or ``2 * length`` beyond the model's context.
        paperlab.errors.LLMError: the backend returns no next-token distributions (HTTP).
    """
    if length < 8 or n_sequences < 1:
        raise ICLError(f"the probe needs length >= 8 and at least one sequence, got {length}, {n_sequences}")
    ctx = llm.context_length
    if ctx is not None and 2 * length > ctx:
        raise ICLError(f"two copies of {length} symbols exceed the model's context of {ctx} "
                       f"tokens; use --length {ctx // 2} or less")
    alphabet_token_ids(llm, symbols)
    rng = np.random.default_rng(seed)
    seqs = rng.integers(0, len(symbols), size=(n_sequences, length))  # alphabet indices
    nll_rows, hit_rows = [], []
    for s in range(0, n_sequences, batch_size):
        pairs = np.concatenate([seqs[s : s + batch_size]] * 2, axis=1)  # (B, 2L) alphabet indices
        texts = ["".join(symbols[i] for i in row) for row in pairs]
        read = llm.next_tokens([t[0] for t in texts], list(symbols), forced=[t[1:] for t in texts])
        for row, nt in zip(pairs, read, strict=True):
            # dists[j] follows token j and predicts token j+1; the last one predicts past the end.
            lp = np.array([d.logprobs for d in nt.dists[:-1]], dtype=np.float64)  # (2L-1, |A|)
            lp -= np.logaddexp.reduce(lp, axis=1, keepdims=True)  # softmax over the alphabet only
            tgt = row[1:]
            nll_rows.append(-lp[np.arange(len(tgt)), tgt])
            hit_rows.append(lp.argmax(axis=1) == tgt)
    nll = np.stack(nll_rows)  # (N, 2L-1): column t predicts position t+1
    hit = np.stack(hit_rows)
    first = slice(0, length - 1)  # positions 1..L-1
    second = slice(length, 2 * length - 1)  # positions L+1..2L-1 (offsets 1..L-1 of the copy)
    bands = {}
    for lo, hi in BANDS:
        if lo >= length:
            break
        cols = slice(length + lo - 1, length + min(hi, length) - 1)
        bands[f"{lo}-{min(hi, length) - 1}"] = float(nll[:, cols].mean())
    return InductionResult(
        model=name, alphabet=symbols, length=length, n_sequences=n_sequences,
        chance_nats=math.log(len(symbols)),
        first_nats=float(nll[:, first].mean()), second_nats=float(nll[:, second].mean()),
        first_accuracy=float(hit[:, first].mean()), second_accuracy=float(hit[:, second].mean()),
        second_nats_by_band=bands,
    )


def result_rows(results: Sequence[InductionResult]) -> tuple[list[str], list[list[object]]]:
    """Header and rows of the probe's table (one row per model)."""
    head = ["model", "alphabet", "L", "n", "chance", "1st copy", "2nd copy", "gain",
            "acc. 1st", "acc. 2nd", "2nd copy by offset"]
    rows: list[list[object]] = [
        [r.model, r.alphabet, r.length, r.n_sequences, f"{r.chance_nats:.3f}", f"{r.first_nats:.3f}",
         f"{r.second_nats:.3f}", f"{r.gain_nats:+.3f}", f"{r.first_accuracy:.3f}",
         f"{r.second_accuracy:.3f}",
         " ".join(f"{k}:{v:.2f}" for k, v in r.second_nats_by_band.items())]
        for r in results
    ]
    return head, rows
