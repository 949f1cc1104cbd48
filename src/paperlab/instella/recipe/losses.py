"""The recipe's losses, written from the papers.

- causal LM loss with a mask: mean next-token cross-entropy over the positions a mask keeps
  (SFT keeps the assistant tokens only);
- length-normalised DPO (Tulu 3 / Instella): each response's log-prob sum is divided by its
  length before the usual DPO logistic loss, with beta 5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_lm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``ids[:, t+1]`` from position t, where ``mask[:, t+1]``.

    Args:
        logits: (B, T, V) model outputs.
        ids: (B, T) the token ids.
        mask: (B, T) 1 where the token is a training target (0: prompt, padding).
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    target = ids[:, 1:]  # (B, T-1)
    nll = -logp.gather(-1, target[..., None])[..., 0]  # (B, T-1)
    keep = mask[:, 1:].to(nll.dtype)
    return (nll * keep).sum() / keep.sum().clamp(min=1.0)


def sequence_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of log p(target) over masked targets, and the number of those targets.

    Returns:
        (B,) log-prob sums and (B,) response lengths in tokens.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    keep = mask[:, 1:].to(tok.dtype)
    return (tok * keep).sum(-1), keep.sum(-1)


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
