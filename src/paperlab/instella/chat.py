"""Chat with an Instella checkpoint: a multi-turn session that streams, and replies in batch.

A session keeps the conversation and renders all of it with the tokenizer's chat template on
every turn (the released instruct format, see tokenizer.py), so each reply sees the whole
history. Batch replies read a JSONL file of requests, one JSON object a line:

    {"prompt": "What is 2+2?"}                                   # one user message
    {"id": "q7", "system": "Be brief.", "prompt": "..."}          # optional id and system message
    {"messages": [{"role": "user", "content": "..."}, ...]}       # a whole conversation

and write one JSON object a line, in the same order: ``id`` (the line number when not given),
``reply``, ``prompt_tokens``, ``completion_tokens``, ``finish_reason`` ("stop" or "length").
The whole file is checked before the model is loaded; the replies are written atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from paperlab.instella.errors import InstellaConfigError

if TYPE_CHECKING:
    from paperlab.llm.types import Message, Prompt

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatRequest:
    """One line of a batch file: an id and the conversation to answer."""

    id: Any
    messages: list[dict[str, str]]


def _messages_of(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    has_prompt, has_messages = "prompt" in row, "messages" in row
    if has_prompt == has_messages:
        raise InstellaConfigError(f"{where}: give exactly one of 'prompt' (a string) or 'messages' (a list)")
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise InstellaConfigError(f"{where}: 'system' must be a string")
    if has_prompt:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise InstellaConfigError(f"{where}: 'prompt' must be a non-empty string")
        msgs = [{"role": "user", "content": row["prompt"]}]
    else:
        msgs = row["messages"]
        ok = isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in msgs
        )
        if not ok:
            raise InstellaConfigError(
                f"{where}: 'messages' must be a non-empty list of {{'role': system|user|assistant, "
                "'content': string}}"
            )
        if msgs[-1]["role"] != "user":
            raise InstellaConfigError(f"{where}: the last message must be the user's (the reply answers it)")
        msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
    return ([{"role": "system", "content": system}] if system else []) + msgs


def read_chat_file(path: str | Path) -> list[ChatRequest]:
    """Parse and check a JSONL file of chat requests (see the module docstring).

    Raises:
        InstellaConfigError: missing or unreadable file, a line that is not a JSON object or
            not a request, no request at all.
    """
    p = Path(path)
    if not p.is_file():
        raise InstellaConfigError(f"chat file {p} does not exist; give a JSONL file of prompts")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InstellaConfigError(f"cannot read {p} as UTF-8 text ({exc})") from None
    out: list[ChatRequest] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InstellaConfigError(
                f"{where} is not JSON ({exc.msg}); the chat file is JSONL: one JSON object a line, "
                'e.g. {"prompt": "What is 2+2?"}'
            ) from None
        if not isinstance(row, dict):
            raise InstellaConfigError(f"{where} is not a JSON object; write one object a line")
        out.append(ChatRequest(row.get("id", n), _messages_of(row, where)))
    if not out:
        raise InstellaConfigError(f"chat file {p} holds no requests; write one JSON object a line")
    return out


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class ChatSession:
    """A conversation with one model: :meth:`send` a user turn, get (and stream) the reply."""

    model: Any
    tokenizer: Any
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def send(self, text: str, stream: Callable[[str], None] | None = None) -> Reply:
        """Add a user turn, generate the reply (``stream`` gets it piece by piece), keep both."""
        import torch
        from transformers import TextStreamer

        tok = self.tokenizer
        history = [*self.messages, {"role": "user", "content": text}]
        prompt = tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        streamer = None
        if stream is not None:
            emit = stream

            class _Pieces(TextStreamer):
                def on_finalized_text(self, piece: str, stream_end: bool = False) -> None:
                    if piece:
                        emit(piece)

            streamer = _Pieces(tok, skip_prompt=True, skip_special_tokens=True)
        sample = self.temperature > 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **ids, max_new_tokens=self.max_new_tokens, do_sample=sample,
                temperature=self.temperature if sample else None, top_p=self.top_p if sample else None,
                top_k=None, streamer=streamer, pad_token_id=tok.pad_token_id,
                eos_token_id=self.model.config.eos_token_id,
            )
        new = out[0, ids["input_ids"].shape[1]:]
        reply = tok.decode(new, skip_special_tokens=True)
        self.messages = [*history, {"role": "assistant", "content": reply}]
        return Reply(reply, int(ids["input_ids"].shape[1]), int(new.numel()), time.perf_counter() - t0)


def batch_replies(
    model: Any, tokenizer: Any, requests: list[ChatRequest], *, batch_size: int = 8,
    max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = 0,
) -> list[dict[str, Any]]:
    """One reply per request, in order, generated in left-padded batches by paperlab.llm's
    local backend (rows sorted by length, each cut at the end-of-text token)."""
    from paperlab.llm.hf_backend import HFLocalLLM
    from paperlab.llm.types import GenerationParams

    tokenizer.padding_side = "left"  # generation continues from every row's right edge
    llm = HFLocalLLM.from_model("instella", model, tokenizer, batch_size=batch_size)
    params = GenerationParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
    prompts: list[Prompt] = [cast("list[Message]", r.messages) for r in requests]
    gens = llm.generate_batch_sync(prompts, params)
    return [{"id": r.id, "reply": g.text, "prompt_tokens": g.prompt_tokens,
             "completion_tokens": g.completion_tokens, "finish_reason": g.finish_reason}
            for r, g in zip(requests, gens, strict=True)]
