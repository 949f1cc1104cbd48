"""The request and reply forms of OpenAI-compatible servers that differ between servers.

Two things are spelled differently by vLLM, SGLang, llama.cpp's servers and OpenAI:

- **JSON-schema output.** OpenAI's ``response_format`` ``{"type": "json_schema", ...}`` (also
  taken by vLLM, SGLang and llama.cpp's C++ ``llama-server``); llama.cpp's
  ``{"type": "json_object", "schema": ...}`` (the only form ``llama-cpp-python``'s server takes;
  it answers HTTP 500 to the first); vLLM's own ``structured_outputs: {"json": ...}`` and its
  older ``guided_json``. :data:`SCHEMA_FORMS` lists them in the order the backend tries them.
- **Next-token log-probabilities.** Chat replies carry
  ``logprobs.content[i].top_logprobs = [{"token", "logprob"}, ...]`` (OpenAI, vLLM, SGLang,
  llama.cpp); legacy completions carry ``logprobs.top_logprobs[i] = {token: logprob}``
  (vLLM, llama-cpp-python), and llama-server answers completions in the chat form.
  :func:`first_top_logprobs` reads either. Streamed (``"stream": true``), each chunk carries
  its token's log-probabilities in the same forms and usage comes last, only when asked for
  (``stream_options: {"include_usage": true}``: OpenAI, vLLM, SGLang; llama-cpp-python sends
  none): :func:`merge_stream` folds the chunks back into one reply.
"""

from __future__ import annotations

import json
import math
from typing import Any

from paperlab.errors import LLMResponseError

#: The JSON-schema forms, in the order they are tried; the first one a server accepts is kept.
SCHEMA_FORMS = ("openai", "llama.cpp", "vllm", "vllm-guided")

#: vLLM writes this for a log-probability of minus infinity (JSON has no infinity).
_VLLM_NEG_INF = -9999.0


def schema_fields(form: str, schema_json: str) -> dict[str, Any]:
    """The request fields that ask for a reply matching the JSON schema, in ``form``.

    The schema is decoded with its key order kept: a schema's ``properties`` order is the
    order most servers' grammars make the model write the keys in.
    """
    schema = json.loads(schema_json)
    if form == "openai":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "reply", "schema": schema, "strict": True}}}
    if form == "llama.cpp":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if form == "vllm":
        return {"structured_outputs": {"json": schema}}
    if form == "vllm-guided":
        return {"guided_json": schema}
    raise ValueError(f"unknown schema form {form!r}")


def first_top_logprobs(data: dict[str, Any], where: str) -> dict[str, float]:
    """token text -> log-probability at the first generated position of a reply.

    Raises:
        LLMResponseError: the reply holds no top log-probabilities (the server ignores
            ``logprobs``/``top_logprobs``, as ``transformers serve`` does) or malformed ones.
    """
    try:
        lp = data["choices"][0].get("logprobs")
    except (KeyError, IndexError, TypeError, AttributeError):
        lp = None
    entries: Any = None
    if isinstance(lp, dict):
        content = lp.get("content")
        if isinstance(content, list) and content:
            entries = content[0].get("top_logprobs") if isinstance(content[0], dict) else None
        elif isinstance(lp.get("top_logprobs"), list) and lp["top_logprobs"]:
            entries = lp["top_logprobs"][0]
    if not entries:
        raise LLMResponseError(
            f"{where} returned no top log-probabilities (it ignores logprobs/top_logprobs, as "
            "`transformers serve` does); use a server that returns them (vLLM, SGLang, llama.cpp)")
    out: dict[str, float] = {}
    try:
        pairs = (entries.items() if isinstance(entries, dict)
                 else ((e["token"], e["logprob"]) for e in entries))
        for token, value in pairs:
            v = float(value)
            v = -math.inf if v <= _VLLM_NEG_INF else v
            if str(token) not in out or v > out[str(token)]:  # two ids may decode alike: keep the likelier
                out[str(token)] = v
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LLMResponseError(f"{where} returned malformed top_logprobs ({exc})") from None
    return out


def merge_stream(text: str) -> dict[str, Any]:
    """A server-sent-event stream of completion chunks as one reply: the first choice that
    carries log-probabilities, and the last usage sent (an empty dict when none came)."""
    out: dict[str, Any] = {"choices": [{}], "usage": {}}
    have = False
    for line in text.splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        try:
            chunk = json.loads(line[5:])
        except json.JSONDecodeError:
            continue
        if not isinstance(chunk, dict):
            continue
        choices = chunk.get("choices")
        if not have and isinstance(choices, list) and choices and isinstance(choices[0], dict) \
                and choices[0].get("logprobs"):
            out["choices"] = [choices[0]]
            have = True
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
    return out


def prompt_tokens(data: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, prompt tokens the server reports served from its prefix cache)."""
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    try:
        return int(usage.get("prompt_tokens") or 0), int(details.get("cached_tokens") or 0)
    except (TypeError, ValueError):
        return 0, 0
