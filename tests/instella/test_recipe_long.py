"""Long-context data as AMD packs it: document boundaries, document masking, the RoPE law."""

from __future__ import annotations

import pytest
import torch

from paperlab.instella.recipe.packing import (
    DocumentStream,
    PackedRow,
    long_rope_theta,
    pack_documents,
    packed_lm_sum,
    packed_token_nll,
)

from .conftest import randomized_model, tiny_config


def test_rope_law_goes_through_both_of_amds_phases() -> None:
    # instella-3b-long-pretrain-phase1.yaml: 64K (16 x 4K) with 514,640; phase2: 256K (64x) with 3,691,950
    assert long_rope_theta(10_000, 16) == pytest.approx(514_640, rel=1e-9)
    assert long_rope_theta(10_000, 64) == pytest.approx(3_691_950, rel=2e-6)
    assert long_rope_theta(10_000, 4) == pytest.approx(71_738, abs=1)  # the tiny preset's phase 1


def _docs(*lengths: int, start: int = 2) -> list[tuple[list[int], list[int]]]:
    out, t = [], start
    for n in lengths:
        out.append((list(range(t, t + n - 1)) + [0], [1] * n))  # each ends with EOS (id 0)
        t += n
    return out


def test_rows_are_cut_at_document_boundaries() -> None:
    stream = DocumentStream(_docs(5, 3, 8))  # ends at 5, 8, 16
    assert stream.row(0, 16).doc_lens == (5, 3, 8)
    assert stream.row(3, 10).doc_lens == (2, 3, 5)  # the end of doc 1, doc 2, the start of doc 3
    assert stream.row(5, 3).doc_lens == (3,)
    assert stream.row(9, 4).doc_lens == (4,)  # inside one document
    row = stream.row(3, 10)
    assert row.ids.tolist() == stream.ids[3:13].tolist() and sum(row.doc_lens) == 10
    with pytest.raises(ValueError):
        stream.row(10, 7)


def test_packing_whole_documents_cuts_the_last_one() -> None:
    row = pack_documents([([5, 6, 0], [0, 1, 1]), ([7, 8, 9, 0], [0, 0, 1, 1]), ([3, 0], [1, 1])], 6)
    assert row.doc_lens == (3, 3)
    assert row.ids.tolist() == [5, 6, 0, 7, 8, 9] and row.mask.tolist() == [0, 1, 1, 0, 0, 1]


def _row(a: list[int], b: list[int]) -> PackedRow:
    ids = torch.tensor(a + b)
    return PackedRow(ids, torch.ones_like(ids), (len(a), len(b)))


def test_attention_does_not_cross_document_boundaries() -> None:
    model = randomized_model(tiny_config())
    doc_b = [11, 12, 13, 14, 15, 16, 0]
    with torch.no_grad():
        nll, tgt = packed_token_nll(model, [_row([3, 4, 5, 6, 0], doc_b)], pad_id=1)
        other, _ = packed_token_nll(model, [_row([40, 41, 42, 43, 0], doc_b)], pad_id=1)
        alone, _ = packed_token_nll(model, [PackedRow(torch.tensor(doc_b), torch.ones(7, dtype=torch.long), (7,))],
                                    pad_id=1)
        # without document masking the second document's losses depend on the first one
        plain = lambda a: torch.nn.functional.cross_entropy(  # noqa: E731
            model(torch.tensor([a + doc_b]), use_cache=False).logits[0, 5:-1], torch.tensor(doc_b[1:]),
            reduction="none")
        unmasked, unmasked_other = plain([3, 4, 5, 6, 0]), plain([40, 41, 42, 43, 0])
    assert torch.allclose(nll[0, 5:], other[0, 5:], atol=1e-6)  # document 2 never sees document 1
    assert torch.allclose(nll[0, 5:], alone[0], atol=1e-5)  # as if it were alone, positions from 0
    assert not torch.allclose(unmasked, unmasked_other, atol=1e-3)  # the check can fail
    # targets: inside each document only; the EOS that ends document 1 predicts nothing
    assert tgt[0].tolist() == [True] * 4 + [False] + [True] * 6 + [False]


def test_packed_loss_counts_every_in_document_target_once() -> None:
    model = randomized_model(tiny_config())
    rows = [_row([3, 4, 5, 0], [6, 7, 8, 9, 0]), PackedRow(torch.arange(2, 11), torch.ones(9, dtype=torch.long), (9,))]
    total, count = packed_lm_sum(model, rows, pad_id=1)
    assert count == (4 - 1) + (5 - 1) + (9 - 1)
    total.backward()  # one forward and one backward over the rows (what DDP expects)
    assert model.lm_head.weight.grad is not None
