"""The recipe's losses on hand-computed cases, SFT masking, and recipe config errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from paperlab.instella.errors import InstellaConfigError
from paperlab.instella.recipe.config import check_stage_inputs, load_recipe_config
from paperlab.instella.recipe.losses import (
    length_normalised_dpo_loss,
    masked_lm_loss,
    sequence_logprobs,
)


def test_masked_lm_loss_by_hand() -> None:
    # vocabulary of 2; logits chosen so the probabilities are easy: p(1) = e/(1+e) at t=0.
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]])
    ids = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[0, 1, 1]])
    # targets: t=0 predicts ids[1]=1 -> -log(e/(1+e)); t=1 predicts ids[2]=0 -> -log(e^2/(1+e^2))
    want = (-math.log(math.e / (1 + math.e)) - math.log(math.e**2 / (1 + math.e**2))) / 2
    assert masked_lm_loss(logits, ids, mask).item() == pytest.approx(want, rel=1e-6)
    only_last = torch.tensor([[0, 0, 1]])
    assert masked_lm_loss(logits, ids, only_last).item() == pytest.approx(-math.log(math.e**2 / (1 + math.e**2)))


def test_masked_positions_get_no_gradient() -> None:
    """SFT: the loss on assistant tokens only; prompt positions' logits receive zero gradient."""
    logits = torch.randn(1, 6, 11, requires_grad=True)
    ids = torch.randint(0, 11, (1, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]])  # tokens 3..5 are the assistant's
    masked_lm_loss(logits, ids, mask).backward()
    assert logits.grad is not None
    # position t predicts token t+1: positions 0 and 1 predict prompt tokens 1 and 2
    assert torch.all(logits.grad[0, :2] == 0)
    assert torch.all(logits.grad[0, 2:5].abs().sum(-1) > 0)
    assert torch.all(logits.grad[0, 5] == 0)  # the last position predicts nothing


def test_length_normalised_dpo_by_hand() -> None:
    pc, pr = torch.tensor([-10.0]), torch.tensor([-12.0])  # policy log-prob sums
    rc, rr = torch.tensor([-11.0]), torch.tensor([-11.0])  # reference
    lc, lr = torch.tensor([4.0]), torch.tensor([8.0])  # response lengths
    loss, margin = length_normalised_dpo_loss(pc, pr, rc, rr, lc, lr, beta=5.0)
    m = 5.0 * ((-10 + 11) / 4 - (-12 + 11) / 8)  # 5 * (0.25 + 0.125) = 1.875
    assert margin.item() == pytest.approx(m)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-m)))
    # without the length normalisation the margin would be 5 * (1 + 1) = 10: it matters
    assert margin.item() != pytest.approx(10.0)


def test_sequence_logprobs_sums_and_lengths() -> None:
    logits = torch.zeros(2, 4, 5)  # uniform: every token has log-prob -log 5
    ids = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0]])
    s, n = sequence_logprobs(logits, ids, mask)
    assert n.tolist() == [3.0, 1.0]
    assert s.tolist() == pytest.approx([-3 * math.log(5), -math.log(5)])


@pytest.mark.parametrize("overrides, fragment", [
    ({"sft": {"steps": 5, "lr": 2.0}}, "sft.lr"),
    ({"dpo_beta": 0}, "dpo_beta"),
    ({"stages": ["sft", "pretrain"]}, "order"),
    ({"stages": ["pretrain", "bogus"]}, "stages"),
])
def test_bad_recipe_config_is_one_line(overrides: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InstellaConfigError) as exc:
        load_recipe_config(preset="tiny", overrides=overrides)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_stage_needing_a_checkpoint_refuses_without_one(tmp_path: Path) -> None:
    cfg = load_recipe_config(preset="tiny", overrides={"stages": ["sft", "dpo"]})
    with pytest.raises(InstellaConfigError, match="needs a checkpoint"):
        check_stage_inputs(cfg, None)
    check_stage_inputs(cfg, tmp_path)  # fine with --from


def test_bad_corpus_and_yaml(tmp_path: Path) -> None:
    from paperlab.instella.recipe.data import stage1_text

    with pytest.raises(InstellaConfigError, match="does not exist"):
        stage1_text(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InstellaConfigError, match="0 characters"):
        stage1_text(str(tmp_path / "empty.txt"))
    (tmp_path / "r.yaml").write_text("preset: tiny\npretrain: {steps: 0, lr: 0.001}\n")
    with pytest.raises(InstellaConfigError, match="pretrain.steps"):
        load_recipe_config(tmp_path / "r.yaml")
