"""ParaRL's pieces on hand-computed cases, and resuming, on a small random model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from paperlab.paradiff.config import ModelConfig, SampleConfig
from paperlab.paradiff.model import Layout, ParaDiffModel
from paperlab.paradiff.rl import RLConfig, clipped_objective, group_advantages, kl_k3, rl_train
from paperlab.paradiff.scorer import Scorer, ScorerConfig
from paperlab.paradiff.tokens import condition_tokens


def test_group_advantages_by_hand() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2], [3.0, 1.0, 2.0, 2.0]])
    a = group_advantages(r)
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)  # mean .5, std .5
    assert torch.equal(a[1], torch.zeros(4))  # no spread, no signal
    s = (0.5) ** 0.5  # population std of (3, 1, 2, 2)
    assert torch.allclose(a[2], torch.tensor([1 / s, -1 / s, 0.0, 0.0]), atol=1e-5)
    m = group_advantages(r, kind="mean")  # Dr. GRPO: centred only
    assert torch.allclose(m, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4, [1.0, -1.0, 0.0, 0.0]]), atol=1e-6)


def test_clipped_objective_by_hand() -> None:
    lp_old = torch.zeros(4)
    lp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.5]))
    adv = torch.tensor([1.0, 1.0, -2.0, -2.0])
    obj = clipped_objective(lp, lp_old, adv, clip=0.2)
    # rho 1.5, A>0: min(1.5, 1.2) = 1.2 | rho .5, A>0: min(.5, .8) = .5
    # rho 1.1, A<0: min(-2.2, -2.2) = -2.2 | rho .5, A<0: min(-1.0, -1.6) = -1.6
    assert torch.allclose(obj, torch.tensor([1.2, 0.5, -2.2, -1.6]), atol=1e-5)


def test_kl_is_zero_for_equal_policies_and_positive_otherwise() -> None:
    lp = torch.log(torch.tensor([0.3, 0.9]))
    assert torch.equal(kl_k3(lp, lp), torch.zeros(2))
    assert (kl_k3(lp, lp + 0.1) > 0).all()


@pytest.fixture(scope="module")
def small() -> tuple[ParaDiffModel, Scorer, torch.Tensor]:
    torch.manual_seed(0)
    lay = Layout(n_image=16, codebook=64)
    model = ParaDiffModel(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64), lay).eval()
    scorer = Scorer(ScorerConfig(d_model=16, dim=8), 16, 64).eval()
    cond = condition_tokens(lay, [["draw", "a", "big", "red", "circle", "at", "b2"]] * 3, [None] * 3)
    return model, scorer, cond


def test_first_update_starts_at_zero_kl_and_resumes(small: tuple[ParaDiffModel, Scorer, torch.Tensor],
                                                    tmp_path: Path) -> None:
    model, scorer, cond = small
    scfg = SampleConfig(steps=4)
    cfg = RLConfig(group=2, prompts=2, updates=3, epochs=1, loss_steps=2)
    # one epoch per batch: the first update's KL is measured before any change, so it is exactly 0
    _, state = rl_train(copy.deepcopy(model), scorer, cond, scfg, cfg, state_dir=tmp_path, stop_after=1)
    assert state.update == 1 and state.history[0]["kl"] == 0.0
    # a new call picks up at update 2 from the saved state
    seen: list[int] = []
    _, state = rl_train(copy.deepcopy(model), scorer, cond, scfg, cfg, state_dir=tmp_path,
                        on_update=lambda r: seen.append(int(r["update"])))
    assert seen == [2, 3] and [h["update"] for h in state.history] == [1, 2, 3]


@pytest.mark.parametrize("rollout", ["eval", "explore"])
def test_rollout_log_probs_are_those_the_sampler_drew_from(small: tuple[ParaDiffModel, Scorer, torch.Tensor],
                                                           rollout: str) -> None:
    """Rollouts decode as the benchmark does (``eval``: greedy words, codes from the guided image
    logits) or explore (temperature 1, no guidance); the objective's log-probs of the committed
    tokens are taken under the distribution each token was drawn from."""
    from paperlab.paradiff.rl import _state, _token_logp, rollout_config
    from paperlab.paradiff.sampler import sample
    from paperlab.paradiff.tokens import drop_condition

    model, _, cond = small
    scfg = SampleConfig(steps=6, image_steps=4, guidance=4.0)
    roll = rollout_config(scfg, rollout)
    assert (roll == scfg) == (rollout == "eval")
    traj = sample(model, cond, "parallel", roll, seed=3, record=True).trajectory
    assert traj is not None
    k = 4  # a joint step (image updates at steps 1, 2, 4, 5): words and codes committed
    x, new_t, new_i = _state(model, cond, traj, k)
    assert new_t.any() and new_i.any()
    lp, who = _token_logp(model, x, traj, k, new_t, new_i, roll)
    with torch.no_grad():
        tc, ic = model.output_logits(x)
        if rollout == "eval":
            _, iu = model.output_logits(drop_condition(model.layout, x))
            ic = ic + 4.0 * (ic - iu)
        lt = tc.log_softmax(-1).gather(-1, traj.texts[k][..., None])[..., 0][new_t]
        li = ic.log_softmax(-1).gather(-1, traj.images[k].clamp(min=0)[..., None])[..., 0][new_i]
    assert torch.allclose(lp, torch.cat([lt, li]), atol=1e-4)
    assert who.tolist() == sorted(who[: int(new_t.sum())].tolist()) + sorted(who[int(new_t.sum()):].tolist())


@pytest.mark.slow
def test_scorer_learns_to_match_text_and_image(trained: object) -> None:
    """A short contrastive run retrieves the right image for a text far above chance.

    Measured: 0.50 top-1 among 64 held-out pairs after 300 steps (chance 0.016; 120 steps were
    still at chance).
    """
    from paperlab.paradiff.scorer import retrieval_accuracy, train_scorer

    vq = trained.vq  # type: ignore[attr-defined]
    sc = train_scorer(ScorerConfig(steps=300, batch=32), vq)
    assert retrieval_accuracy(sc, vq, n=64) >= 0.25


def test_mcnemar_exact_and_bootstrap_intervals_by_hand() -> None:
    """McNemar's exact p from the discordant pairs (scipy's binomial test), and intervals that
    contain the mean and shrink to a point when nothing varies."""
    import numpy as np
    from scipy.stats import binomtest

    from paperlab.paradiff.stats import bootstrap_ci, mcnemar_exact, two_level_ci

    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, np.nan])
    b = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 0.0])
    t = mcnemar_exact(a, b)
    assert (t["a_only"], t["b_only"]) == (5, 1)  # the NaN pair does not count
    assert t["p"] == pytest.approx(binomtest(5, 6, 0.5).pvalue, abs=1e-6) == pytest.approx(14 / 64, abs=1e-6)
    assert mcnemar_exact(np.ones(4), np.ones(4))["p"] == 1.0
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 10, size=(500, 10))
    lo, hi = bootstrap_ci(a - b, idx)
    assert lo < np.nanmean(a - b) < hi and lo > -1 and hi < 1
    same = np.tile(np.array([1.0, 0.0]), (3, 1))  # every seed alike: seeds add no spread
    seed_idx = rng.integers(0, 3, size=(500, 3))
    lo2, hi2 = two_level_ci(same, seed_idx, rng.integers(0, 2, size=(500, 2)))
    assert lo2 == 0.0 and hi2 == 1.0
    assert two_level_ci(np.full((3, 4), 0.25), seed_idx, rng.integers(0, 4, size=(500, 4))) == [0.25, 0.25]
