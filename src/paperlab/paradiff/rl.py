"""ParaRL: GRPO on the parallel sampler with a consistency reward along the trajectory.

For each training prompt the parallel sampler draws G trajectories. By default it samples them
as the benchmark decodes (``rollout="eval"``: greedy words, codes drawn from the guided image
logits), and a token's probability is the one it was drawn from: the guided softmax for codes,
the plain softmax for words; ``rollout="explore"`` draws words and codes at temperature 1 with
no guidance. A trajectory's reward is the learned scorer's similarity of its partial text and
partial image, mean over a few intermediate steps (``trajectory`` mode, ParaRL) or at the last
step only (``final`` mode). Advantages are normalised within each group; the objective is PPO's
clipped ratio over the tokens committed at each denoising step, minus a KL penalty (the k3
estimator) to the frozen starting model.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from paperlab.paradiff.config import SampleConfig, _Strict
from paperlab.paradiff.errors import ParadiffConfigError
from paperlab.paradiff.model import MASK, ParaDiffModel
from paperlab.paradiff.sampler import Trajectory, _guide, sample
from paperlab.paradiff.scorer import Scorer, ScorerConfig
from paperlab.paradiff.task import Example, make_examples
from paperlab.paradiff.tokens import drop_condition
from paperlab.train import (
    DistContext,
    LossParts,
    OptimSpec,
    Schedule,
    TrainResult,
    TrainSpec,
    Wrapped,
    run_training,
    single_process,
    whole_weights,
)

__all__ = ["RLConfig", "RLState", "RLTask", "clipped_objective", "group_advantages", "RL_PRESETS", "check_device",
           "kl_k3", "prompt_reward", "rl_preset", "rl_train"]


class RLConfig(_Strict):
    mode: Literal["trajectory", "final"] = "trajectory"
    rollout: Literal["eval", "explore"] = Field(
        "eval", description="eval: rollouts decoded as the benchmark decodes (greedy words, guided codes); "
                            "explore: words and codes at temperature 1, no guidance")
    group: int = Field(4, ge=2, description="G: trajectories per prompt (GRPO compares them: at least 2)")
    advantage: Literal["std", "mean"] = Field(
        "std", description="std: (r - group mean) / group std, as GRPO; mean: r - group mean (Dr. GRPO), so a "
                           "group whose rewards barely differ weighs little")
    prompts: int = Field(4, ge=1, description="prompts per update")
    updates: int = Field(30, ge=1)
    epochs: int = Field(2, ge=1, description="gradient steps per batch of rollouts")
    scored: tuple[float, ...] = Field((0.25, 0.5, 0.75, 1.0), description="steps scored, as shares of the trajectory")
    loss_steps: int = Field(4, ge=1, description="denoising steps per trajectory in the objective")
    beta: float = Field(0.02, ge=0, description="KL penalty weight")
    clip: float = Field(0.2, gt=0, lt=1)
    lr: float = Field(3e-4, gt=0)
    train_prompts: int = Field(64, ge=1)
    seed: int = 0
    device: str = Field("cpu", description="where rollouts and updates run (the policy is moved there)")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="bfloat16: autocast on CUDA")
    scorer: ScorerConfig = ScorerConfig()


RL_PRESETS: dict[str, RLConfig] = {
    # Plumbing only: two prompts, two updates, a scorer fitted for a few steps (seconds).
    "test": RLConfig(train_prompts=2, prompts=2, group=2, updates=2, epochs=1, loss_steps=2,
                     scorer=ScorerConfig(d_model=16, dim=8, steps=20, batch=16)),
    # CPU, minutes: a fixed set of 4 training prompts, all of them in every update (GRPO over a
    # prompt set), so the reward on them can be measured before and after (tests, docs). lr 1e-4:
    # the trajectory reward on those prompts rose on 5 of 6 RL seeds (and held on the sixth);
    # at 3e-4 it fell on 2 of 6, with the KL to the start at 0.4-1.5 after 16 updates.
    "tiny": RLConfig(train_prompts=4, prompts=4, group=4, updates=16, lr=1e-4),
    # 64 training prompts, 4 per update. lr 1e-4: at 3e-4 one step of an update drove a committed
    # token's guided probability far below the start on every seed (k3 KL 1e3 to 1e14) and
    # held-out output alignment fell from 0.270 to 0.114 (final) and 0.094 (trajectory), against
    # 0.252 and 0.222 at 1e-4 (RL seeds 0-2, 300 prompts).
    "small": RLConfig(lr=1e-4),
    # For a CUDA machine (bf16 autocast); sized for one large GPU, never run in this repository's
    # CPU-only sessions: wider groups and batches, more scored steps and a longer run.
    "gpu": RLConfig(device="cuda", dtype="bfloat16", group=16, prompts=32, updates=400, epochs=2,
                    scored=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0), loss_steps=8, beta=0.02,
                    lr=1e-4, train_prompts=1024,
                    scorer=ScorerConfig(d_model=256, n_layers=2, n_heads=8, dim=128, steps=4000, batch=256)),
}


def rl_preset(name: str) -> RLConfig:
    """The RL config of a preset (test, tiny, small, gpu); one-line error for an unknown one."""
    if name not in RL_PRESETS:
        raise ParadiffConfigError(f"unknown RL preset {name!r}; choose one of: {', '.join(RL_PRESETS)}")
    return RL_PRESETS[name]


def check_device(cfg: RLConfig) -> torch.device:
    """The config's device, or a one-line error naming the fix when it is not on this machine."""
    try:
        dev = torch.device(cfg.device)
    except RuntimeError:
        raise ParadiffConfigError(f"unknown RL device {cfg.device!r}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParadiffConfigError(f"RL device {cfg.device!r} needs CUDA, which this machine lacks; "
                                  "use --preset tiny or small")
    if cfg.dtype == "bfloat16" and dev.type != "cuda":
        raise ParadiffConfigError("RL dtype bfloat16 is for CUDA; use float32 on the CPU")
    return dev


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, kind: str = "std") -> torch.Tensor:
    """(P, G) rewards -> advantages within each group of G: (r - mean) / (std + eps), or with
    ``kind="mean"`` r - mean (no division: small differences stay small)."""
    centred = rewards - rewards.mean(-1, keepdim=True)
    if kind == "mean":
        return centred
    return centred / (rewards.std(-1, unbiased=False, keepdim=True) + eps)


def clipped_objective(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """Per-token PPO objective (to maximise): min(rho A, clip(rho, 1-e, 1+e) A), rho = exp(logp - logp_old)."""
    ratio = (logp - logp_old).exp()
    return torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || ref) estimate exp(ref - p) - (ref - p) - 1 (>= 0, zero when equal)."""
    d = logp_ref - logp
    return d.exp() - d - 1


@dataclass
class Rollouts:
    cond: torch.Tensor  # (R, L) one row per trajectory
    traj: Trajectory
    rewards: torch.Tensor  # (R,)


def _state(model: ParaDiffModel, cond: torch.Tensor, traj: Trajectory, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sequence before step k, and the text/image positions committed at step k."""
    lay = model.layout
    x = cond.clone()
    if k == 0:
        prev_t = torch.full_like(traj.texts[0], MASK)
        prev_i = torch.full_like(traj.images[0], -1)
    else:
        prev_t, prev_i = traj.texts[k - 1], traj.images[k - 1]
    x[:, lay.text] = prev_t
    x[:, lay.out_image] = torch.where(prev_i < 0, MASK, prev_i + lay.n_words)
    new_t = (prev_t == MASK) & (traj.texts[k] != MASK)
    new_i = (prev_i < 0) & (traj.images[k] >= 0)
    return x, new_t, new_i


def _policy_logits(tl: torch.Tensor, il: torch.Tensor, ul: tuple[torch.Tensor, torch.Tensor] | None,
                   roll: SampleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The distributions rollouts drew from: guided (when ``ul``, the unconditional rows' text and
    image logits, is given) and divided by the temperatures that sampled (greedy words: the
    plain softmax)."""
    tl, il = tl.float(), il.float()  # ratios of bf16 log-probs would be too coarse
    if ul is not None:
        if roll.text_guidance > 0:
            tl = _guide(tl, ul[0].float(), roll.text_guidance)
        if roll.guidance > 0:
            il = _guide(il, ul[1].float(), roll.guidance)
    if roll.text_temperature > 0:
        tl = tl / roll.text_temperature
    if roll.temperature > 0:
        il = il / roll.temperature
    return tl, il


def _committed_logp(tl: torch.Tensor, il: torch.Tensor, traj: Trajectory, k: int, new_t: torch.Tensor,
                    new_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the policy's logits: log-probs of the tokens committed at step k (flat), and which
    trajectory each belongs to."""
    lt = tl.log_softmax(-1).gather(-1, traj.texts[k].clamp(min=0)[..., None])[..., 0]
    li = il.log_softmax(-1).gather(-1, traj.images[k].clamp(min=0)[..., None])[..., 0]
    rows = torch.arange(tl.shape[0], device=tl.device)
    lp = torch.cat([lt[new_t], li[new_i]])
    who = torch.cat([rows[:, None].expand_as(new_t)[new_t], rows[:, None].expand_as(new_i)[new_i]])
    return lp, who


def _guided(roll: SampleConfig) -> bool:
    return roll.guidance > 0 or roll.text_guidance > 0


def _step_inputs(model: ParaDiffModel, x: torch.Tensor, roll: SampleConfig) -> torch.Tensor:
    """The rows one step's log-probs need: ``x``, and its unconditional copy under guidance."""
    return torch.cat([x, drop_condition(model.layout, x)]) if _guided(roll) else x


def _split_logits(tl: torch.Tensor, il: torch.Tensor, rows: int,
                  roll: SampleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy logits of ``rows`` sequences from the logits of :func:`_step_inputs`' rows."""
    ul = (tl[rows:], il[rows:]) if _guided(roll) else None
    return _policy_logits(tl[:rows], il[:rows], ul, roll)


def _token_logp(model: ParaDiffModel, x: torch.Tensor, traj: Trajectory, k: int, new_t: torch.Tensor,
                new_i: torch.Tensor, roll: SampleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the tokens committed at step k (flat), and which trajectory each belongs to."""
    tl, il = model.output_logits(_step_inputs(model, x, roll))
    return _committed_logp(*_split_logits(tl, il, x.shape[0], roll), traj, k, new_t, new_i)


def _reward(scorer: Scorer, traj: Trajectory, cfg: RLConfig) -> torch.Tensor:
    n = len(traj)
    shares = cfg.scored if cfg.mode == "trajectory" else (1.0,)
    steps = sorted({max(0, min(n - 1, round(s * n) - 1)) for s in shares})
    return torch.stack([scorer.reward(traj.texts[k], traj.images[k]) for k in steps]).mean(0)


@dataclass
class RLState:
    """Where a run stands: the updates done and one record per update."""

    update: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def rollout_config(sample_cfg: SampleConfig, rollout: str = "eval") -> SampleConfig:
    """The sampler as a policy: as evaluated (``eval``), or words and codes drawn at temperature 1
    with no guidance and no confidence noise (``explore``)."""
    if rollout == "eval":
        return sample_cfg
    return sample_cfg.model_copy(update={"text_temperature": 1.0, "temperature": 1.0, "guidance": 0.0,
                                         "text_guidance": 0.0, "noise": 0.0})


@dataclass
class _Rollouts:
    """One update's rollouts of this rank's prompts, prepared for the update's epochs."""

    key: tuple[int, int, int]  # (update, first prompt slot, end)
    traj: Trajectory
    adv: torch.Tensor  # (R,) group-normalised advantages
    steps: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    stats: dict[str, tuple[float, float]]


class RLTask:
    """GRPO over the parallel sampler, as a task of the shared training loop (paperlab.train).

    One update is ``epochs`` optimiser steps over the same rollouts; its global batch is the
    update's ``prompts`` prompt slots, each with ``group`` trajectories. Rank r samples the
    trajectories of its own slots, with the row seeds they would get in one process (a row's
    draws depend only on its seed), so rollouts, rewards and advantages (within a group) do not
    depend on the number of processes.
    """

    def __init__(self, scorer: Scorer, conds: torch.Tensor, sample_cfg: SampleConfig, cfg: RLConfig,
                 reference: ParaDiffModel, device: torch.device) -> None:
        self.scorer, self.conds, self.cfg, self.ref, self.device = scorer, conds, cfg, reference, device
        self.roll_cfg = rollout_config(sample_cfg, cfg.rollout)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
        self.cache: _Rollouts | None = None
        self.w: Wrapped | None = None
        self.sampler_copy: ParaDiffModel | None = None

    def bind(self, w: Wrapped) -> None:
        self.w = w
        if w.mode == "fsdp":  # the sampler calls methods FSDP does not hook: it samples from a whole copy
            self.sampler_copy = copy.deepcopy(self.ref)

    @torch.no_grad()
    def batch(self, step: int, rows: range) -> _Rollouts:
        cfg = self.cfg
        update = step // cfg.epochs
        key = (update, rows.start, rows.stop)
        if self.cache is not None and self.cache.key == key:
            return self.cache
        assert self.w is not None, "RLTask.bind is called by the training loop"
        policy = whole_weights(self.w, self.sampler_copy) if self.sampler_copy is not None else self.w.module
        assert isinstance(policy, ParaDiffModel)
        policy.eval()
        g = cfg.group
        # GRPO iterates over a fixed prompt set: update u takes the next ``prompts`` of them in turn
        idx = [(update * cfg.prompts + j) % len(self.conds) for j in rows]
        cond = self.conds[idx].to(self.device).repeat_interleave(g, 0)  # (R, L), R = prompts * G
        # row seeds base + global row: bases far apart keep every update's rows on their own streams
        base = (cfg.seed * 100003 + update) << 16
        with self.autocast:
            res = sample(policy, cond, "parallel", self.roll_cfg, seed=base + rows.start * g, record=True)
        traj = res.trajectory
        assert traj is not None
        rewards = _reward(self.scorer, traj, cfg)  # (R,)
        final = self.scorer.reward(traj.texts[-1], traj.images[-1])
        adv = group_advantages(rewards.view(len(rows), g), kind=cfg.advantage).view(-1)
        # seeded per update, the same on every rank and on a resumed run
        rng = random.Random(cfg.seed * 1_000_003 + update)
        ks = sorted(rng.sample(range(len(traj)), min(cfg.loss_steps, len(traj))))
        prepared = []
        with self.autocast:
            for k in ks:
                x, new_t, new_i = _state(policy, cond, traj, k)
                lp_old, who = _token_logp(policy, x, traj, k, new_t, new_i, self.roll_cfg)
                lp_ref, _ = _token_logp(self.ref, x, traj, k, new_t, new_i, self.roll_cfg)
                prepared.append((k, x, new_t, new_i, lp_old, lp_ref, who))
        self.w.module.train()
        n = float(rewards.numel())
        self.cache = _Rollouts(key, traj, adv, prepared, {"reward": (float(rewards.sum()), n),
                                                          "final_reward": (float(final.sum()), n)})
        return self.cache

    def loss(self, model: torch.nn.Module, b: _Rollouts) -> LossParts:
        # every scored step's sequences (and their unconditional copies, under guidance) in one
        # forward pass (DDP and FSDP expect one per backward)
        r = b.steps[0][1].shape[0]
        xs = torch.cat([_step_inputs(self.ref, x, self.roll_cfg) for _, x, *_ in b.steps])
        tl_all, il_all = model(xs, outputs=True)
        per = xs.shape[0] // len(b.steps)
        objs, kls = [], []
        for j, (k, _, new_t, new_i, lp_old, lp_ref, who) in enumerate(b.steps):
            tl, il = _split_logits(tl_all[j * per:(j + 1) * per], il_all[j * per:(j + 1) * per], r, self.roll_cfg)
            lp, _ = _committed_logp(tl, il, b.traj, k, new_t, new_i)
            objs.append(clipped_objective(lp, lp_old, b.adv[who], self.cfg.clip))
            kls.append(kl_k3(lp, lp_ref))
        obj, kl = torch.cat(objs), torch.cat(kls)
        # the mean over committed tokens of -objective + beta KL, as a sum and its count
        total = (-obj + self.cfg.beta * kl).sum()
        return LossParts(total, obj.numel(), tokens=int(xs.numel()),
                         stats={**b.stats, "kl": (float(kl.detach().sum()), float(kl.numel()))})


def rl_spec(cfg: RLConfig) -> TrainSpec:
    """GRPO's optimiser steps: Adam at a constant rate, clipping at 1, a save after every update."""
    return TrainSpec(steps=cfg.updates * cfg.epochs, global_batch=cfg.prompts,
                     optim=OptimSpec(lr=cfg.lr, kind="adam", betas=(0.9, 0.999)), schedule=Schedule("constant"),
                     grad_clip=1.0, bf16=cfg.dtype == "bfloat16", save_every=cfg.epochs,
                     save_on_interrupt=False,  # an update's epochs share its rollouts: resume at an update
                     label=f"ParaRL {cfg.mode}")


def history_of(result: TrainResult, epochs: int) -> list[dict[str, float]]:
    """One record per update from the loop's per-step figures: the reward of its rollouts and
    the KL of its last epoch."""
    s, out = result.stats, []
    for u in range(len(result.losses) // epochs):
        first, last = u * epochs, u * epochs + epochs - 1
        out.append({"update": u + 1, "reward": round(s["reward"][first], 4),
                    "final_reward": round(s["final_reward"][first], 4), "kl": round(s["kl"][last], 5)})
    return out


def rl_train(policy: ParaDiffModel, scorer: Scorer, conds: torch.Tensor, sample_cfg: SampleConfig, cfg: RLConfig,
             *, reference: ParaDiffModel | None = None, state_dir: Path | None = None,
             on_update: Callable[[dict[str, float]], None] | None = None, stop_after: int | None = None,
             ctx: DistContext | None = None, console: Any = None) -> tuple[ParaDiffModel, RLState]:
    """Run GRPO updates on ``policy`` with the shared training loop, resuming from ``state_dir``.

    Args:
        policy: the starting model (trained in place; pass a copy to keep the original).
        scorer: the frozen reward model.
        conds: (P, L) condition sequences of the training prompts.
        sample_cfg: the sampler's schedule (made stochastic by :func:`rollout_config`).
        cfg: the RL config.
        reference: the frozen KL reference (default: a copy of ``policy`` as given; a run resumed
            from ``state_dir`` must pass the original starting model).
        state_dir: where progress is saved after each update (and resumed from); a finished run
            keeps its final state there, so calling again trains nothing.
        on_update: called on rank 0 with each update's record (reward, kl, ...).
        stop_after: stop after this many updates in this call (to test resuming).
        ctx: this process's place in a torchrun launch (default: one process on ``cfg.device``).

    Returns:
        The trained policy (whole, on every rank) and the run's :class:`RLState`.
    """
    dev = check_device(cfg)
    ctx = ctx or single_process(str(dev))
    scorer.to(ctx.device)
    ref = copy.deepcopy(reference if reference is not None else policy).to(ctx.device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    task = RLTask(scorer, conds, sample_cfg, cfg, ref, ctx.device)
    first_reward: dict[int, tuple[float, float]] = {}

    def step_done(step: int, loss: float, stats: dict[str, float]) -> None:
        update, epoch = divmod(step, cfg.epochs)
        if epoch == 0:  # the rollouts' rewards; the KL is the update's last epoch's
            first_reward[update] = (stats["reward"], stats["final_reward"])
        if on_update is not None and epoch == cfg.epochs - 1:
            reward, final = first_reward.pop(update, (float("nan"), float("nan")))
            on_update({"update": update + 1, "reward": round(reward, 4), "final_reward": round(final, 4),
                       "kl": round(stats["kl"], 5)})

    w, result = run_training(policy, task, rl_spec(cfg), ctx, state_dir=state_dir,
                             fingerprint={"rl": cfg.model_dump(mode="json")}, console=console,
                             on_step=step_done, stop_after=None if stop_after is None else stop_after * cfg.epochs,
                             keep_final=True)  # a finished arm reruns as a no-op (rl_bench resumes arms)
    history = history_of(result, cfg.epochs)
    trained = whole_weights(w, copy.deepcopy(ref)) if w.mode == "fsdp" else w.module
    assert isinstance(trained, ParaDiffModel)
    return trained.eval(), RLState(len(result.losses) // cfg.epochs, history)


@torch.no_grad()
def prompt_reward(policy: ParaDiffModel, scorer: Scorer, conds: torch.Tensor, sample_cfg: SampleConfig, *,
                  rollouts: int = 4, seed: int = 1 << 40, rollout: str = "eval",
                  scoring: RLConfig | None = None) -> float:
    """Mean scorer reward over ``rollouts`` seeded rollouts of each prompt: of the last step, or
    with ``scoring`` the reward that RL config trains on (its mode and scored steps).

    The seeds are fixed (and far from the training rollouts' streams), so calling this before and
    after RL on the training prompts measures what RL changed, not which samples were drawn.
    """
    policy.eval()
    dev = next(policy.parameters()).device
    scorer.to(dev)
    cond = conds.to(dev).repeat_interleave(rollouts, 0)
    res = sample(policy, cond, "parallel", rollout_config(sample_cfg, rollout), seed=seed, record=scoring is not None)
    if scoring is not None:
        assert res.trajectory is not None
        return float(_reward(scorer, res.trajectory, scoring).mean())
    return float(scorer.reward(res.text, res.image).mean())


def train_prompts(cfg: RLConfig, held_out: set[Any]) -> list[Example]:
    """The RL training prompts: fresh examples, never the benchmark's."""
    return make_examples(cfg.train_prompts, 777 + cfg.seed, exclude=held_out)
