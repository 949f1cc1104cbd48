"""A ParaRL run on the tiny preset raises the scorer reward on the prompts it trains on."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from paperlab.paradiff.bench import conditions
from paperlab.paradiff.rl import prompt_reward, rl_preset, rl_train, train_prompts
from paperlab.paradiff.scorer import ensure_scorer
from paperlab.paradiff.train import bench_examples

pytestmark = pytest.mark.slow  # trains the tiny preset (minutes) and 16 RL updates


def test_rl_raises_the_scorer_reward_on_its_training_prompts(trained: Any) -> None:
    """The tiny RL preset: 4 fixed training prompts, all 4 in each of 16 updates, G = 4, trajectory reward.

    The reward is the scorer's (last step) on exactly those prompts, 16 rollouts each with the same
    fixed seeds before and after. Measured rise on the tiny model (prefix attention, trained on one
    thread, so every machine of this kind trains these weights), RL seeds 0-5 (each seed its own 4
    prompts): +0.083, +0.128, +0.015, -0.010, +0.065, +0.056 (mean +0.056); with the advantages'
    sign flipped it fell (-0.208, -0.127, -0.143, seeds 0-2, an earlier model). On an unchanged
    model, other rollout seeds move the measurement by a standard deviation of 0.01-0.02 (8
    rollouts). Seed 0, the preset's, runs here (+0.083); the margin (+0.03) leaves room for that
    noise. docs/paradiff.md reports every seed.
    """
    cfg = rl_preset("tiny")
    assert (cfg.train_prompts, cfg.prompts, cfg.mode, cfg.seed) == (4, 4, "trajectory", 0)
    scorer, _ = ensure_scorer(cfg.scorer, trained.vq)
    held = {e.key for e in bench_examples(trained.cfg)}
    cond = conditions(trained, train_prompts(cfg, held))
    # one torch thread (conftest): two threads sum floats in a load-dependent order
    before = prompt_reward(trained.model, scorer, cond, trained.cfg.sample, rollouts=16)
    policy, state = rl_train(copy.deepcopy(trained.model), scorer, cond, trained.cfg.sample, cfg)
    after = prompt_reward(policy, scorer, cond, trained.cfg.sample, rollouts=16)
    assert state.update == cfg.updates and state.history[-1]["kl"] > 0  # it moved away from the start
    assert after - before >= 0.03, (before, after)
    # the starting model was not touched (the run trained a copy)
    assert prompt_reward(trained.model, scorer, cond, trained.cfg.sample, rollouts=16) == before
