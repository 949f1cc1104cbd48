"""``openai:<base_url>#<model>``: any OpenAI-compatible HTTP server.

Works with vLLM, ``transformers serve``, llama.cpp's server, Ollama and OpenAI itself. Every
request has a timeout; connection errors, timeouts, 429 and 5xx are retried a bounded number
of times with exponential backoff and jitter, so a dead or hanging server turns into one
:class:`LLMConnectionError` within a known time:
``(max_retries + 1) * timeout + sum of backoffs``.

``generate(schema=...)`` sends ``response_format`` {"type": "json_schema", ...}; a server that
refuses it (HTTP 400/422/501) gets the request again without it, and no schema from then on,
and the caller parses the reply. ``transformers serve`` accepts the field but ignores it (it
logs "Ignoring unsupported fields").

``score`` uses the legacy completions endpoint with ``echo`` and ``logprobs`` (prompt
log-probabilities), which vLLM and OpenAI's legacy models return. ``transformers serve``
accepts but ignores those fields; we then raise a clear error instead of inventing numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import weakref
from typing import Any

import httpx

from paperlab.errors import LLMConnectionError, LLMError, LLMResponseError
from paperlab.llm.base import LLM
from paperlab.llm.types import Generation, GenerationParams, Prompt, ScoredContinuation

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
#: what a server that does not know response_format answers (bad request, unprocessable, not implemented)
_REFUSED_FORMAT = {400, 422, 501}


class RefusedError(LLMResponseError):
    """The server answered with a 4xx status that retrying will not change."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _response_format(schema_json: str) -> dict[str, Any]:
    """The OpenAI structured-output request field (vLLM, SGLang, llama.cpp and OpenAI take it)."""
    return {"type": "json_schema",
            "json_schema": {"name": "reply", "schema": json.loads(schema_json), "strict": True}}


class OpenAICompatibleLLM(LLM):
    """A model served over the OpenAI HTTP API.

    Args:
        spec: the spec string, for messages.
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name the server expects.
        timeout: seconds allowed for one HTTP request.
        max_retries: retries after the first attempt for transient failures.
        backoff: the first backoff in seconds; doubles each retry (with jitter).
        api_key_env: the environment variable holding the API key (may be unset for local servers).
        max_concurrency: requests in flight at once in the batch forms.
    """

    def __init__(
        self,
        spec: str,
        base_url: str,
        model: str,
        *,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
    ) -> None:
        super().__init__(spec, max_concurrency=max_concurrency)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        #: whether the server honours response_format: None until a schema call tells
        self.schema_supported: bool | None = None
        key = os.environ.get(api_key_env, "")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        # httpx.AsyncClient is tied to the event loop it was first used on: keep one per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    # -- transport ----------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                headers=self._headers,
                limits=httpx.Limits(max_connections=self.max_concurrency),
            )
            self._clients[loop] = client
        return client

    async def _release_loop_resources(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        await self._release_loop_resources()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with bounded retries; returns the decoded JSON object."""
        url = f"{self.base_url}{path}"
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                log.debug("retrying %s in %.2fs after: %s", url, delay, last)
                await asyncio.sleep(delay)
            try:
                resp = await self._client().post(url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g}s"
                continue
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if resp.status_code in _RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                hint = " (check the API key in $OPENAI_API_KEY)" if resp.status_code in (401, 403) else ""
                raise RefusedError(
                    f"{url} refused the request with HTTP {resp.status_code}{hint}: {resp.text[:300]}",
                    resp.status_code,
                )
            try:
                data = resp.json()
            except (json.JSONDecodeError, UnicodeDecodeError):  # JSON must be UTF-8 (RFC 8259)
                raise LLMResponseError(
                    f"{url} answered HTTP {resp.status_code} with non-JSON or non-UTF-8: {resp.text[:200]!r}"
                ) from None
            if not isinstance(data, dict):
                raise LLMResponseError(f"{url} answered with JSON that is not an object: {str(data)[:200]}")
            return data
        raise LLMConnectionError(
            f"could not get an answer from {url} after {attempts} attempts ({last}); "
            "check that the server is running and the spec's URL (openai:<base_url>#<model>)"
        )

    # -- generation ---------------------------------------------------------------------
    async def _agenerate_one(self, prompt: Prompt, params: GenerationParams) -> Generation:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens,
                                "temperature": params.temperature}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        chat = not isinstance(prompt, str)
        path = "/chat/completions" if chat else "/completions"
        body["messages" if chat else "prompt"] = prompt
        if params.schema is not None and self.schema_supported is not False:
            try:
                data = await self._post(path, {**body, "response_format": _response_format(params.schema)})
                self.schema_supported = True
            except RefusedError as e:
                if self.schema_supported or e.status not in _REFUSED_FORMAT:
                    raise
                # The server does not take response_format (400/422/501): generate plainly from
                # now on; the caller parses and repairs the reply as it would without a schema.
                log.warning("%s refused response_format (%s); generating without it", self.base_url, e)
                self.schema_supported = False
                data = await self._post(path, body)
        else:
            data = await self._post(path, body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
            usage = data.get("usage") or {}
            return Generation(
                text=_strip_stops(text, params.stop),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                finish_reason=str(choice.get("finish_reason") or "stop"),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LLMResponseError(
                f"{self.base_url} returned a reply without the expected fields ({exc}): {str(data)[:200]}"
            ) from None

    async def _agenerate_batch(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(p: Prompt) -> Generation:
            async with sem:
                return await self._agenerate_one(p, params)

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    # -- scoring ------------------------------------------------------------------------
    async def _ascore(self, prompt: Prompt, continuations: list[str]) -> list[ScoredContinuation]:
        if not isinstance(prompt, str):
            raise LLMError(
                "score over HTTP needs a raw text prompt (the server's chat template is not visible); "
                "render the messages to text first or use an hf: backend"
            )
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(cont: str) -> ScoredContinuation:
            async with sem:
                body = {"model": self.model, "prompt": prompt + cont, "max_tokens": 1,
                        "temperature": 0.0, "echo": True, "logprobs": 1}
                data = await self._post("/completions", body)
            return ScoredContinuation(cont, *_continuation_logprobs(data, len(prompt), self.base_url))

        return list(await asyncio.gather(*(one(c) for c in continuations)))


def _strip_stops(text: str, stops: tuple[str, ...]) -> str:
    """Cut at the first stop string: some servers include it, OpenAI's API does not."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def _continuation_logprobs(data: dict[str, Any], prompt_chars: int, where: str) -> tuple[float, list[float]]:
    """Pick the continuation's token log-probabilities out of an echoed completion.

    A token belongs to the continuation when it starts at or after the prompt's last character,
    the same rule the hf backend uses, so the two agree on where the boundary falls.
    """
    try:
        lp = data["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        lp = None
    if not lp or not lp.get("token_logprobs") or not lp.get("text_offset"):
        raise LLMResponseError(
            f"{where} returned no prompt log-probabilities (it ignores echo/logprobs, as "
            "`transformers serve` does); score with an hf: backend or a server that supports them (vLLM)"
        )
    try:
        pairs = [(int(o), v) for o, v in zip(lp["text_offset"], lp["token_logprobs"], strict=True)]
        # The echo covers prompt + continuation; the one generated token comes last: drop it.
        picked = [float(v) for o, v in pairs if o >= prompt_chars][:-1]
    except (TypeError, ValueError) as exc:
        raise LLMResponseError(f"{where} returned malformed logprobs ({exc})") from None
    if not picked:
        raise LLMResponseError(f"{where} returned no log-probabilities for the continuation")
    return sum(picked), picked
