"""Instella-Math's pieces: self-checking traces, the exact-answer reward, GRPO's sampler,
advantages and loss, and the exact-match intervals."""

from __future__ import annotations

import math

import pytest
import torch

from paperlab.instella.recipe.data import Problem, synthetic_problems
from paperlab.instella.recipe.evaluate import answer_reward
from paperlab.instella.recipe.grpo import GumbelSampler, group_advantages, sample_group
from paperlab.instella.recipe.mathstages import paired_difference_ci, reasoning_trace, wilson_ci
from paperlab.train import sample_generator

from .conftest import randomized_model, tiny_config


def test_reasoning_trace_checks_each_calculation_that_holds() -> None:
    p = Problem("q", "Ava has 3 + 5 = 8 apples.\nAfter giving away 2, 8 - 2 = 6.\n#### 6")
    assert reasoning_trace(p) == ("Ava has 3 + 5 = 8 apples.\nCheck: 8 - 5 = 3.\n"
                                  "After giving away 2, 8 - 2 = 6.\nCheck: 6 + 2 = 8.\n#### 6")
    boxes = Problem("q", "The boxes hold 4 * 7 = 28 pens.\nShe pays $12 / 3 = $4 each.\n#### 28")
    assert "Check: 28 / 7 = 4." in reasoning_trace(boxes) and "Check: 4 * 3 = 12." in reasoning_trace(boxes)
    wrong = Problem("q", "So 16 - 3 - 4 = 9 eggs.\n#### 9")  # no single a op b = c holds: no check
    assert reasoning_trace(wrong) == wrong.solution
    for q in synthetic_problems(50, 3, high=9):  # the answer line is kept as it was
        assert reasoning_trace(q).splitlines()[-1] == q.solution.splitlines()[-1]
        assert reasoning_trace(q).count("Check:") == 2


def test_exact_answer_reward() -> None:
    assert answer_reward("so 3 + 4 = 7.\n#### 7", "7") == 1
    assert answer_reward("#### 1,234.", "1234") == 1
    assert answer_reward("#### 8", "7") == 0
    assert answer_reward("7", "7") == 0  # no "####": no answer
    assert answer_reward("#### 7 then #### 8", "7") == 1  # the first answer counts


def test_gumbel_sampling_draws_from_the_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    want = torch.softmax(logits[0] / 0.7, -1)
    gen = sample_generator(0, 1)
    sampler = GumbelSampler([gen], temperature=0.7)
    counts = torch.zeros(4)
    n = 4000
    for _ in range(n):
        counts[int(sampler(torch.zeros(1, 1), logits).argmax())] += 1
    assert torch.allclose(counts / n, want, atol=4 * math.sqrt(0.25 / n))


def test_a_reply_depends_only_on_its_own_generator() -> None:
    model = randomized_model(tiny_config(vocab_size=50))
    prompt = [5, 6, 7, 8]
    group = sample_group(model, prompt, [sample_generator(9, j) for j in range(4)], max_new_tokens=6,
                         temperature=1.0, eos_id=0, pad_id=1)
    alone = sample_group(model, prompt, [sample_generator(9, 2)], max_new_tokens=6, temperature=1.0, eos_id=0,
                         pad_id=1)
    assert group[2] == alone[0]
    assert len({tuple(r) for r in group}) > 1  # the replies of a group differ
    assert all(len(r) <= 6 and (0 not in r or r[-1] == 0) for r in group)  # cut after the first EOS


def test_group_advantages_by_hand() -> None:
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    # mean 0.25, std with Bessel's correction (VERL's) sqrt(0.75 / 3) = 0.5: (1 - .25)/.5, (0 - .25)/.5
    assert adv[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)
    assert adv[1].tolist() == [0.0] * 4  # one reward for the whole group: no signal


def test_exact_match_intervals() -> None:
    low, high = wilson_ci(33, 200)
    assert low < 33 / 200 < high and (low, high) == pytest.approx((0.120, 0.223), abs=1e-3)
    before = [0] * 150 + [1] * 50
    after = [1] * 30 + [0] * 120 + [1] * 50  # 30 more right
    lo, hi = paired_difference_ci(before, after)
    assert 0 < lo < 0.15 < hi
    assert paired_difference_ci(before, before) == (0.0, 0.0)


def test_grpo_loss_raises_the_rewarded_reply_and_lowers_the_other() -> None:
    """One gradient step on GRPO's loss for a group of two replies (rewards 1 and 0): the right
    reply becomes more likely and the wrong one less; with equal rewards there is no gradient."""
    import copy
    from types import SimpleNamespace

    from paperlab.instella.recipe.config import GRPOSettings
    from paperlab.instella.recipe.grpo import GRPOTask, Rollouts
    from paperlab.instella.recipe.losses import token_nll

    model = randomized_model(tiny_config()).train()
    task = GRPOTask.__new__(GRPOTask)  # the loss needs only the device, the settings and the reference
    task.r = SimpleNamespace(device=torch.device("cpu"))  # type: ignore[assignment]
    task.s = GRPOSettings(steps=1, lr=1e-3, group=2, temperature=0.7)
    task.ref = copy.deepcopy(model).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 10, 11, 12]])  # one prompt (5, 6), two replies
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 1, 1]])

    def logp(m: torch.nn.Module) -> torch.Tensor:
        return -token_nll(m(ids, use_cache=False).logits / 0.7, ids, mask).sum(-1)

    def step(rewards: list[float]) -> torch.Tensor:
        m = copy.deepcopy(model)
        parts = task.loss(m, Rollouts(ids, mask, group_advantages(torch.tensor([rewards])).view(-1)))
        (parts.total / parts.count).backward()
        with torch.no_grad():  # one plain gradient step
            for p in m.parameters():
                if p.grad is not None:
                    p -= 1e-2 * p.grad
        return logp(m).detach() - logp(model).detach()

    moved = step([1.0, 0.0])
    assert moved[0] > 0 > moved[1], moved
    assert step([1.0, 1.0]).abs().max() == 0  # no signal in the group, and KL is flat at the start
