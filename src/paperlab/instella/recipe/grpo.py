"""GRPO with an exact-answer reward, as a task of paperlab's one training loop.

Why the shared loop (paperlab.train) and not TRL's ``GRPOTrainer``: every other stage of the
recipe runs on it, so GRPO gets the same launch (one process or ``torchrun``, DDP or FSDP2),
the same resumable sharded state and the same per-sample randomness; TRL would bring its own
trainer, accelerate launch and a heavy new dependency for one stage.

AMD ran GRPO on VERL (Instella-Math's ``verl/scripts/run_grpo_multi_nodes.sh``): 128 prompts x
16 replies per step, lr 1e-6 constant, KL loss 0.001 with the ``low_var_kl`` (k3) estimate,
token-mean loss, VERL's AdamW (0.9, 0.999, weight decay 0.01) and clip 1.0; those settings are
kept here (:mod:`.train`), except that each step is one update (AMD: four mini-batches of 32
prompts). One optimiser step per batch of rollouts (on-policy):

    for each of the step's prompts: sample G replies; reward r_i = 1 if the number after
    "####" equals the reference answer, else 0; advantage A_i = (r_i - mean) / (std + 1e-6)
    over the group of G (std with Bessel's correction, as VERL's estimator);
    loss = mean over every reply token of the step (all ranks) of
           -A_i * pi(t) / sg(pi(t)) + beta * KL_k3(pi || pi_start)

The ratio to the sampling policy is 1 in value (so PPO's clip never acts) but carries the
policy gradient A_i * grad log pi(t). Rollouts are drawn by Gumbel-max sampling with one seeded
generator per reply, from (run seed, step, prompt slot, reply): a reply does not depend on which
process draws it or on what else is in its batch. A group is sampled as one batch of G copies of
its prompt, so its arithmetic is the same in one process and in N.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from paperlab.instella.recipe.evaluate import answer_reward, chat_prompt
from paperlab.instella.recipe.losses import token_nll
from paperlab.instella.recipe.mathstages import (
    exact_match_scores,
    exact_match_summary,
    paired_difference_ci,
)
from paperlab.train import LossParts, Wrapped, sample_generator, whole_weights

if TYPE_CHECKING:
    from paperlab.instella.recipe.config import GRPOSettings
    from paperlab.instella.recipe.stages import Recipe


class GumbelSampler:
    """A logits processor that turns greedy decoding into sampling at ``temperature``: it adds
    Gumbel noise drawn from each row's own generator (argmax of logits/T + Gumbel is a draw from
    softmax(logits/T))."""

    def __init__(self, generators: list[torch.Generator], temperature: float) -> None:
        self.generators, self.temperature = generators, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        V = scores.shape[-1]
        u = torch.stack([torch.rand(V, generator=g) for g in self.generators]).to(scores.device)  # (G, V)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-10)))
        return scores.float() / self.temperature + gumbel


@torch.no_grad()
def sample_group(model: Any, prompt: list[int], generators: list[torch.Generator], *, max_new_tokens: int,
                 temperature: float, eos_id: int, pad_id: int) -> list[list[int]]:
    """One reply per generator to the same prompt (token ids up to the first EOS, which is kept)."""
    from transformers import LogitsProcessorList
    from transformers.utils import logging as hf_logging

    device = next(model.parameters()).device
    ids = torch.tensor([prompt] * len(generators), dtype=torch.long, device=device)
    sampler = GumbelSampler(generators, temperature)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # replies may run past the training context: not an error here
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         logits_processor=LogitsProcessorList([sampler]), pad_token_id=pad_id,
                         eos_token_id=eos_id)
    hf_logging.set_verbosity(verbosity)
    replies = []
    for row in out[:, len(prompt) :].tolist():
        replies.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return replies


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(P, G) rewards -> advantages normalised within each group: (r - mean) / (std + eps), the
    standard deviation with Bessel's correction, as VERL's GRPO estimator computes it."""
    return (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, unbiased=True, keepdim=True) + eps)


@dataclass
class Rollouts:
    """One step's replies on this rank: prompt + reply rows, the reply mask and advantages."""

    ids: torch.Tensor  # (R, L) right-padded
    mask: torch.Tensor  # (R, L) 1 on reply tokens
    adv: torch.Tensor  # (R,)
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)


class GRPOTask:
    """GRPO on the training problems: a step's global batch is ``settings.batch`` prompt slots."""

    def __init__(self, r: Recipe, settings: GRPOSettings, reference: Any) -> None:
        self.r, self.s, self.ref = r, settings, reference
        self.prompts = [r.encode(chat_prompt(r.tok, p.question)).tolist() for p in r.math_train]
        self.w: Wrapped | None = None
        self.sampler_copy: Any = None
        self.synced_step = -1

    def bind(self, w: Wrapped) -> None:
        self.w = w
        if w.mode == "fsdp":  # generate calls methods FSDP does not hook: sample from a whole copy
            self.sampler_copy = copy.deepcopy(self.ref)

    @torch.no_grad()
    def batch(self, step: int, rows: range) -> Rollouts:
        r, s = self.r, self.s
        assert self.w is not None, "the training loop binds the task first"
        if self.sampler_copy is None:
            policy = self.w.module
        else:  # gather the shards once per step, not once per micro-batch (a collective: every rank)
            if self.synced_step != step:
                whole_weights(self.w, self.sampler_copy)
                self.synced_step = step
            policy = self.sampler_copy
        policy.eval()
        seqs, masks, rewards = [], [], []
        for slot in rows:
            k = r.pick(r.cfg.seed + 50, step, slot, len(self.prompts))
            prompt, answer = self.prompts[k], r.math_train[k].answer
            gens = [sample_generator(r.cfg.seed + 60, step, slot, j) for j in range(s.group)]
            replies = sample_group(policy, prompt, gens, max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, eos_id=r.tok.eos_token_id, pad_id=r.tok.pad_token_id)
            for reply in replies:
                seqs.append(prompt + reply)
                masks.append([0] * len(prompt) + [1] * len(reply))
                rewards.append(float(answer_reward(r.tok.decode(reply, skip_special_tokens=True), answer)))
        self.w.module.train()
        width = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), width), r.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (x, m) in enumerate(zip(seqs, masks, strict=True)):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(m)] = torch.tensor(m)
        rew = torch.tensor(rewards).view(len(rows), s.group)
        spread = (rew.std(-1, unbiased=False) > 0).float()
        return Rollouts(ids, mask, group_advantages(rew).view(-1), stats={
            "reward": (float(rew.sum()), float(rew.numel())),
            "groups_with_signal": (float(spread.sum()), float(len(rows))),
            "reply_tokens": (float(mask.sum()), float(rew.numel()))})

    def loss(self, model: torch.nn.Module, b: Rollouts) -> LossParts:
        dev = self.r.device
        ids, mask, adv = b.ids.to(dev), b.mask.to(dev), b.adv.to(dev)
        # log-probs under the sampling distribution softmax(logits / T), for the policy and the
        # reference alike (the gradient is that of the policy the replies were drawn from)
        t = self.s.temperature
        lp = -token_nll(model(ids, use_cache=False).logits / t, ids, mask)  # (R, L): log pi of token t + 1
        with torch.no_grad():
            lp_ref = -token_nll(self.ref(ids, use_cache=False).logits / t, ids, mask)
        targets = torch.zeros_like(mask, dtype=torch.bool)
        targets[:, :-1] = mask[:, 1:].bool()
        ratio = (lp - lp.detach()).exp()  # 1 in value; its gradient is grad log pi
        d = lp_ref - lp
        kl = d.exp() - d - 1  # k3 estimate of KL(pi || pi_start), >= 0
        per_token = -ratio * adv[:, None] + self.s.kl_beta * kl
        n = int(targets.sum())
        return LossParts(per_token[targets].sum(), n, tokens=int(ids.numel()),
                         stats={**b.stats, "kl": (float(kl[targets].detach().sum()), float(n))})


def stage_grpo(r: Recipe) -> None:
    """GRPO from the math SFT model; held-out exact match before and after, paired."""
    if r.done("grpo"):
        return
    src = r.input_for("grpo")
    ref = r.load(src).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    before = exact_match_scores(r, ref) if r.ctx.is_main else []
    task = GRPOTask(r, r.cfg.grpo, ref)
    # one prompt's group per forward (micro-batches): the memory of G replies, not of the whole step's
    w, stats = r.train_stage("grpo", "grpo", r.load(src), r.cfg.grpo, None, None, task=task, micro_batch=1)

    def extra(m: Any) -> dict[str, Any]:
        after = exact_match_scores(r, m)
        diff = (sum(after) - sum(before)) / len(after)
        return {"from": str(src), "math_before": exact_match_summary(before), "math": exact_match_summary(after),
                "exact_match_gain": diff, "exact_match_gain_ci95": paired_difference_ci(before, after, r.cfg.seed),
                "group": r.cfg.grpo.group, "kl_beta": r.cfg.grpo.kl_beta}

    r.finish("grpo", w, stats, chat=True, extra=extra)
