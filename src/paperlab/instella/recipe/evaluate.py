"""What the report measures after each stage (all on held-out data, greedy, no sampling)."""

from __future__ import annotations

from typing import Any

import torch

from paperlab.instella.recipe.data import Problem, raw_math
from paperlab.instella.recipe.losses import masked_lm_loss, sequence_logprobs


@torch.no_grad()
def heldout_text_loss(model: Any, ids: torch.Tensor, seq_len: int, windows: int) -> float:
    """Mean next-token loss over ``windows`` evenly spaced windows of held-out stage-1 text."""
    device = next(model.parameters()).device
    span = max(1, ids.numel() - seq_len - 1)
    starts = [int(i * span / windows) for i in range(windows)]
    x = torch.stack([ids[s : s + seq_len] for s in starts]).to(device)  # (W, T)
    logits = model(x, use_cache=False).logits
    return float(masked_lm_loss(logits, x, torch.ones_like(x)))


def encode_pair(tok: Any, prompt: str, response: str, seq_len: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response and a mask that keeps the response tokens only.

    Too long a pair keeps its *last* ``seq_len`` tokens: the response's end (where GSM8K states
    its answer, and where a DPO pair differs) always survives; the question's start may not.
    """
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"]
    ids = (p + r)[-seq_len:]
    mask = ([0] * len(p) + [1] * len(r))[-seq_len:]
    return ids, mask


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (ids, mask) rows: causal attention never lets a real token see the padding."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, m) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(m)] = torch.tensor(m)
    return ids, mask


def chat_prompt(tok: Any, question: str) -> str:
    """``question`` as a user turn in the instruct chat template, ready for the reply."""
    return str(tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True))


@torch.no_grad()
def heldout_math_loss(model: Any, tok: Any, problems: list[Problem], seq_len: int) -> float:
    """Loss on GSM8K test solutions given their question, in the stage-2 text format."""
    rows = [encode_pair(tok, f"Question: {p.question}\nAnswer: ", p.solution, seq_len) for p in problems]
    return _mean_masked_loss(model, tok, rows)


@torch.no_grad()
def heldout_chat_loss(model: Any, tok: Any, problems: list[Problem], seq_len: int) -> float:
    """Loss on the reply tokens of held-out problems in the chat format SFT trains on (the
    solution and the closing ``<|endoftext|>``): what a later stage may cost a chat model."""
    rows = [encode_pair(tok, chat_prompt(tok, p.question), p.solution + tok.eos_token, seq_len) for p in problems]
    return _mean_masked_loss(model, tok, rows)


def _mean_masked_loss(model: Any, tok: Any, rows: list[tuple[list[int], list[int]]]) -> float:
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    for i in range(0, len(rows), 16):
        ids, mask = pad_batch(rows[i : i + 16], tok.pad_token_id)
        logits = model(ids.to(device), use_cache=False).logits
        n = float(mask[:, 1:].sum())
        total += float(masked_lm_loss(logits, ids.to(device), mask.to(device))) * n
        count += n
    return total / max(count, 1.0)


@torch.no_grad()
def gsm8k_exact_match(model: Any, tok: Any, problems: list[Problem], *, chat: bool, max_new_tokens: int) -> float:
    """Share of problems whose greedy answer after ``####`` equals the reference number."""
    if not problems:
        return float("nan")
    right = exact_match_outcomes(model, tok, problems, chat=chat, max_new_tokens=max_new_tokens)
    return sum(right) / len(problems)


@torch.no_grad()
def exact_match_outcomes(model: Any, tok: Any, problems: list[Problem], *, chat: bool,
                         max_new_tokens: int) -> list[int]:
    """1 for each problem whose greedy answer after ``####`` equals the reference number, else 0."""
    device = next(model.parameters()).device
    if chat:
        prompts = [chat_prompt(tok, p.question) for p in problems]
    else:
        prompts = [raw_math(Problem(p.question, "")).rstrip() + " " for p in problems]
    from transformers.utils import logging as hf_logging

    # Answers may run past the short training context (RoPE has no hard limit); transformers
    # warns about that on every call, which is noise here.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    tok.padding_side = "left"
    right: list[int] = []
    for i in range(0, len(prompts), 16):
        enc = tok(prompts[i : i + 16], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for p, row in zip(problems[i : i + 16], out[:, enc["input_ids"].shape[1] :], strict=True):
            right.append(answer_reward(tok.decode(row, skip_special_tokens=True), p.answer))
    tok.padding_side = "right"
    hf_logging.set_verbosity(verbosity)
    return right


@torch.no_grad()
def chat_reply(model: Any, tok: Any, question: str, *, max_new_tokens: int) -> str:
    """The greedy reply to one user message (to read whether a checkpoint still chats)."""
    device = next(model.parameters()).device
    enc = tok(chat_prompt(tok, question), return_tensors="pt", add_special_tokens=False).to(device)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    hf_logging.set_verbosity(verbosity)
    return str(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))


def answer_reward(text: str, reference: str) -> int:
    """The exact-answer reward: 1 when the first number after ``####`` in ``text`` is ``reference``."""
    m = _first_answer(text)
    return int(m is not None and m == reference)


def _first_answer(text: str) -> str | None:
    idx = text.find("####")
    if idx < 0:
        return None
    rest = text[idx + 4 :].strip().split()
    return rest[0].replace(",", "").rstrip(".") if rest else None


@torch.no_grad()
def preference_stats(
    model: Any, ref: Any | None, tok: Any, pairs: list[tuple[str, str, str]], seq_len: int, beta: float
) -> tuple[float, float]:
    """(accuracy, mean margin) of the length-normalised implicit reward on held-out pairs.

    With a reference model the reward is beta * (log pi - log ref) / length (DPO's); without
    one it is beta * log pi / length (the model's own normalised preference).
    """
    device = next(model.parameters()).device

    def norm_logps(m: Any, responses: list[str]) -> torch.Tensor:
        rows = [encode_pair(tok, prompt, r, seq_len) for (prompt, _, _), r in zip(pairs, responses, strict=True)]
        ids, mask = pad_batch(rows, tok.pad_token_id)
        s, n = sequence_logprobs(m(ids.to(device), use_cache=False).logits, ids.to(device), mask.to(device))
        return s / n.clamp(min=1)

    chosen = norm_logps(model, [c for _, c, _ in pairs])
    rejected = norm_logps(model, [r for _, _, r in pairs])
    if ref is not None:
        chosen = chosen - norm_logps(ref, [c for _, c, _ in pairs])
        rejected = rejected - norm_logps(ref, [r for _, _, r in pairs])
    margin = beta * (chosen - rejected)
    return float((margin > 0).float().mean()), float(margin.mean())
