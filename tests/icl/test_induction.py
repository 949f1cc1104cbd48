"""The induction probe: a model that copies scores the second copy far below the first; a model
that cannot copy scores both at chance; bad alphabets and lengths fail with one clear line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from paperlab.cli import app
from paperlab.errors import ICLError
from paperlab.icl.dnamodel import DNAModelConfig, build_model, build_tokenizer
from paperlab.icl.induction import alphabet_token_ids, induction_probe, result_rows
from paperlab.icl.scoring import as_llm
from paperlab.llm import LLM
from paperlab.llm.types import NextTokens, TokenDist


class MatchCopier(torch.nn.Module):
    """An explicit induction mechanism: find the latest earlier occurrence of the last ``k``
    tokens and predict the token that followed it; with no match, uniform logits."""

    def __init__(self, k: int = 8, vocab: int = 8) -> None:
        super().__init__()
        self.k, self.vocab = k, vocab
        self.config = SimpleNamespace(max_position_embeddings=4096)

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        for i in range(b):
            row = input_ids[i].tolist()
            for p in range(self.k - 1, t):
                key = row[p - self.k + 1 : p + 1]
                for j in range(p - 1, self.k - 2, -1):
                    if row[j - self.k + 1 : j + 1] == key:
                        logits[i, p, row[j + 1]] = 10.0
                        break
        return SimpleNamespace(logits=logits)


class CopierLLM(LLM):
    """:class:`MatchCopier` behind the LLM door, reading ``next_tokens`` from its logits (the
    probe reaches every model through the door; a plain module has no KV cache to serve it)."""

    def __init__(self) -> None:
        super().__init__("copier")
        self.copier, self.tok = MatchCopier(), build_tokenizer()

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.tok(text, add_special_tokens=False)["input_ids"]]

    @property
    def context_length(self) -> int | None:
        return 4096

    async def _anext_tokens(self, prompts: list[Any], candidates: list[str], prefills: list[str],
                            forced: list[str]) -> list[NextTokens]:
        cand = [self.tokenize(c)[0] for c in candidates]
        out = []
        for p, pre, f in zip(prompts, prefills, forced, strict=True):
            ids = self.tokenize(p + pre + f)
            logp = torch.log_softmax(self.copier(torch.tensor([ids])).logits[0], -1)
            out.append(NextTokens(dists=[TokenDist([float(row[c]) for c in cand], None, float(row.max()))
                                         for row in logp], prompt_tokens=len(ids), new_tokens=len(ids)))
        return out

    async def _agenerate_batch(self, prompts: Any, params: Any) -> Any:
        raise NotImplementedError

    async def _ascore(self, prompt: Any, continuations: Any) -> Any:
        raise NotImplementedError


def test_a_copier_scores_the_second_copy_near_zero_and_the_first_at_chance() -> None:
    res = induction_probe(CopierLLM(), "ACGT", length=64, n_sequences=8, seed=1)
    assert res.chance_nats == pytest.approx(math.log(4))
    # random first copy: chance rarely beaten (only by spurious 8-mer repeats inside it)
    assert res.first_nats > 0.9 * math.log(4)
    assert res.second_nats < 0.3 and res.second_accuracy > 0.9
    assert res.gain_nats > 1.0
    # the copier needs 8 symbols of match: the first offsets of the copy are still uncertain
    bands = res.second_nats_by_band
    assert list(bands) == ["1-3", "4-15", "16-63"]
    assert bands["1-3"] > bands["16-63"]


def test_a_model_that_cannot_copy_scores_both_copies_alike() -> None:
    cfg = DNAModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, context=128)
    res = induction_probe(as_llm(build_model(cfg), build_tokenizer()), "ACGT", length=64, n_sequences=8)
    # an untrained model is near uniform over the bases, on both copies
    assert abs(res.first_nats - math.log(4)) < 0.05
    assert abs(res.gain_nats) < 0.02
    head, rows = result_rows([res])
    assert len(rows) == 1 and len(rows[0]) == len(head)


def test_alphabet_and_length_errors() -> None:
    model = build_model(DNAModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, context=64))
    llm = as_llm(model, build_tokenizer())
    assert alphabet_token_ids(llm, "ACGT") == [0, 1, 2, 3]
    with pytest.raises(ICLError, match="share one token"):
        alphabet_token_ids(llm, "ABX")  # B and X are both read as the unknown token N
    with pytest.raises(ICLError, match="two distinct"):
        alphabet_token_ids(llm, "AA")
    with pytest.raises(ICLError, match="--length 32"):
        induction_probe(llm, length=40)


def test_cli_induction_writes_json(tmp_path: Path, copy_model: Any) -> None:
    _, _, path = copy_model
    out = tmp_path / "ind.json"
    res = CliRunner().invoke(app, ["icl", "induction", "--model", f"dna:{path}", "--length", "32",
                                   "--sequences", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())
    assert row["model"] == f"dna:{path}" and row["alphabet"] == "ACGT" and row["length"] == 32
    assert row["gain_nats"] == pytest.approx(row["first_nats"] - row["second_nats"])
    bad = CliRunner().invoke(app, ["icl", "induction", "--model", f"dna:{path}", "--alphabet", "XY"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ICLError)
