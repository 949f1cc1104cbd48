"""Logit mode: read each passage's score from the probabilities of the score tokens.

Instead of letting a (small) model write text and parsing it, we force the answer's JSON
skeleton ``{"[1]": `` ... and, at each score slot, read the next-token distribution over the
digit tokens. A slot's score is the expected value sum_s s * P(s) over s = 0..10. "10" is two
digit tokens in tokenizers that split digits (SmolLM2, Llama 3, Qwen): P(10) = P("1") *
P("0" | "1") and P(1) = P("1") * (1 - P("0" | "1")). The argmax score is then written into the
skeleton so later slots see a well-formed object, like they would when generating.

All slots of a group cost one prompt forward plus a few tokens per slot, thanks to the KV
cache, and nothing can fail to parse. This needs raw logits, so it needs an hf backend
(``llm.model`` and ``llm.tokenizer``): an OpenAI-compatible server such as ``transformers
serve`` returns no logprobs.
"""

from __future__ import annotations

import threading
from typing import Any

from paperlab.rerank.errors import RerankConfigError

_LOCK = threading.Lock()  # one forward at a time: the model object is shared across tasks


def require_hf(llm: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of an hf-backed LLM, or a clear error naming the fix."""
    model, tok = getattr(llm, "model", None), getattr(llm, "tokenizer", None)
    if model is None or tok is None or isinstance(model, str):
        raise RerankConfigError(
            "logit mode needs an hf backend with .model and .tokenizer (OpenAI-compatible servers "
            "such as `transformers serve` return no logprobs); use --llm smollm2 or hf:DIR, or --mode generate")
    return model, tok


def _digit_ids(tok: Any) -> list[int]:
    ids = []
    for d in range(10):
        enc = tok.encode(str(d), add_special_tokens=False)
        if len(enc) != 1:
            raise RerankConfigError(
                f"logit mode needs single-token digits; this tokenizer splits {d!r} into {enc}; use --mode generate")
        ids.append(enc[0])
    return ids


class LogitScorer:
    """Expected 0-10 scores for the numbered passages of one prompt, from an hf model."""

    def __init__(self, llm: Any) -> None:
        self.model, self.tok = require_hf(llm)
        self.digits = _digit_ids(self.tok)
        self.n_prompt_tokens = 0
        self.n_forced_tokens = 0

    def _encode(self, text: str) -> Any:
        import torch

        return torch.tensor([self.tok.encode(text, add_special_tokens=False)], dtype=torch.long)

    def _forward(self, ids: Any, past: Any) -> tuple[Any, Any]:
        out = self.model(input_ids=ids, past_key_values=past, use_cache=True)
        self.n_forced_tokens += int(ids.shape[1])
        return out.logits[0, -1].float().softmax(-1), out.past_key_values

    def score(self, messages: list[dict[str, str]], n: int) -> list[float]:
        """Expected scores for passages 1..n of the rendered chat ``messages``."""
        import torch

        prompt = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with _LOCK, torch.inference_mode():
            ids = self._encode(prompt + '{"[1]": ')
            self.n_prompt_tokens += int(ids.shape[1])
            probs, past = self._forward(ids, None)
            self.n_forced_tokens -= int(ids.shape[1])
            out: list[float] = []
            for k in range(1, n + 1):
                p = probs[self.digits]
                mass = float(p.sum()) or 1.0
                p = (p / mass).tolist()
                # P("0" | "1"): one extra token, then roll the cache back
                probs1, past = self._forward(self._encode("1"), past)
                q = float(probs1[self.digits[0]])
                past.crop(-1)  # transformers 5: a negative value drops that many tokens
                dist = list(p) + [0.0]
                dist[10] = p[1] * q
                dist[1] = p[1] * (1 - q)
                out.append(sum(s * w for s, w in enumerate(dist)))
                if k < n:
                    best = max(range(11), key=lambda s: dist[s])
                    probs, past = self._forward(self._encode(f'{best}, "[{k + 1}]": '), past)
        return out
