"""The recipe's losses, written from the papers.

- causal LM loss with a mask: mean next-token cross-entropy over the positions a mask keeps
  (SFT keeps the assistant tokens only);
- length-normalised DPO (Tulu 3 / Instella): each response's log-prob sum is divided by its
  length before the usual DPO logistic loss, with beta 5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _targets(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) next-token targets: position t predicts ids[:, t+1]; -100 where nothing is learnt.

    Shifting the targets instead of slicing the logits keeps the (B, T, V) logits contiguous, so
    the loss makes no copy of them (10% of a tiny model's training step, measured).
    """
    t = torch.full_like(ids, -100)
    t[:, :-1] = torch.where(mask[:, 1:].bool(), ids[:, 1:], -100)
    return t


def token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) negative log-likelihood of each masked next token (0 elsewhere), float32."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.reshape(-1, V).float(), _targets(ids, mask).reshape(-1), reduction="none")
    return nll.view(B, T)


def masked_lm_sum(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The summed next-token cross-entropy over the masked targets, and how many there are
    (what the training loop averages over the whole global batch; see paperlab.train)."""
    B, T, V = logits.shape
    targets = _targets(ids, mask).reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, V).float(), targets, reduction="sum")
    return total, int((targets != -100).sum())


def masked_lm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``ids[:, t+1]`` from position t, where ``mask[:, t+1]``.

    Args:
        logits: (B, T, V) model outputs.
        ids: (B, T) the token ids.
        mask: (B, T) 1 where the token is a training target (0: prompt, padding).
    """
    total, count = masked_lm_sum(logits, ids, mask)
    return total / max(count, 1)


def sequence_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of log p(target) over masked targets, and the number of those targets.

    Returns:
        (B,) log-prob sums and (B,) response lengths in tokens.
    """
    return -token_nll(logits, ids, mask).sum(-1), mask[:, 1:].to(torch.float32).sum(-1)


def length_normalised_dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    len_chosen: torch.Tensor, len_rejected: torch.Tensor, beta: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Length-normalised DPO: -log sigmoid(beta * ((pc - rc)/|c| - (pr - rr)/|r|)).

    All arguments are (B,) log-prob sums (policy / reference, chosen / rejected) and response
    lengths. Returns the mean loss and the (B,) reward margins beta * (...).
    """
    chosen = (policy_chosen - ref_chosen) / len_chosen
    rejected = (policy_rejected - ref_rejected) / len_rejected
    margin = beta * (chosen - rejected)
    return -F.logsigmoid(margin).mean(), margin
