"""``openai:<base_url>#<model>``: any OpenAI-compatible HTTP server.

Works with vLLM, SGLang, llama.cpp's servers, ``transformers serve``, Ollama and OpenAI itself.
Every request has a timeout; connection errors, timeouts, 429 and 5xx are retried a bounded
number of times with exponential backoff and jitter, so a dead or hanging server turns into one
:class:`LLMConnectionError` within a known time:
``(max_retries + 1) * timeout + sum of backoffs``. A request the server refused as invalid
(any other 4xx) is never sent again; a 404 naming a model the server does not serve says which
models it does serve.

``generate(schema=...)`` speaks each server's form of JSON-schema output
(:mod:`paperlab.llm.http_forms`): the first request with a schema tries the forms in turn, each
once and without retries, and the one the server accepts is kept for every later request; a
server that takes none gets plain requests and the caller parses. ``transformers serve``
accepts OpenAI's form and ignores it (it logs "Ignoring unsupported fields").

``next_tokens`` reads ``top_logprobs`` of a one-token reply: chat prompts go to
``/chat/completions`` with the prefill as a final assistant message that the server continues
(``continue_final_message``, as vLLM and SGLang take it; llama-server continues a final
assistant message by default); raw prompts, and chat prompts when ``chat_template`` names a
local model whose template paperlab renders, go to ``/completions``. Only the ``top_logprobs``
most likely tokens come back: a candidate outside them reads as log-probability -inf. These
one-token requests are streamed: the numbers are the same, and llama-cpp-python's server then
normalises only the generated position's logits instead of every position of the context
(0.14 s instead of 0.4-0.56 s a request on an 800-token prompt here). A server that streams no
log-probabilities is asked once more unstreamed, and that is remembered. Usage comes in the
stream where the server sends it (``stream_options.include_usage``); otherwise a prompt
rendered here is counted with the same tokenizer.

``score`` uses the legacy completions endpoint with ``echo`` and ``logprobs`` (prompt
log-probabilities), which vLLM and OpenAI's legacy models return. ``transformers serve``
accepts but ignores those fields; we then raise a clear error instead of inventing numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import weakref
from typing import Any

import httpx

from paperlab.errors import LLMConnectionError, LLMError, LLMRefusedError, LLMResponseError
from paperlab.llm.base import LLM
from paperlab.llm.http_forms import (
    SCHEMA_FORMS,
    first_top_logprobs,
    merge_stream,
    prompt_tokens,
    schema_fields,
)
from paperlab.llm.types import (
    Generation,
    GenerationParams,
    NextTokens,
    Prompt,
    ScoredContinuation,
    TokenDist,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
#: what a server answers to a schema form it does not take: bad request, not found (a field
#: routed nowhere), unsupported media, unprocessable, internal error (llama-cpp-python's answer
#: to OpenAI's json_schema), not implemented
_REFUSED_FORM = frozenset({400, 404, 415, 422, 500, 501})


RefusedError = LLMRefusedError  # the name this module used first

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
        top_logprobs: how many most likely tokens ``next_tokens`` asks for per position (vLLM
            and OpenAI allow at most 20 unless the server is started with more).
        chat_template: render chat prompts of ``next_tokens`` here with this model's chat
            template and send them to ``/completions`` (for servers that do not continue a final
            assistant message, such as llama-cpp-python's): ``smollm2``, a transformers model
            or tokenizer directory, or a ``.gguf`` file. None: the server renders them.
    """

    supports_top_logprobs = True

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
        top_logprobs: int = 20,
        chat_template: str | None = None,
    ) -> None:
        super().__init__(spec, max_concurrency=max_concurrency)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        if int(top_logprobs) < 1:
            raise LLMError(f"top_logprobs must be at least 1, got {top_logprobs}")
        self.top_logprobs = int(top_logprobs)
        #: the JSON-schema form the server accepted (see http_forms.SCHEMA_FORMS), "none" when
        #: it took none, None until a schema call tells
        self.schema_form: str | None = None
        self.chat_template = chat_template
        self._renderer: Any = None  # the tokenizer whose chat template renders, loaded on first use
        #: whether next-token requests are streamed (see the module docstring); None until the
        #: first one tells
        self.stream_logprobs: bool | None = None
        key = os.environ.get(api_key_env, "")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        # httpx.AsyncClient is tied to the event loop it was first used on: keep one per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def schema_supported(self) -> bool | None:
        """Whether the server takes some JSON-schema form: None until a schema call tells."""
        return None if self.schema_form is None else self.schema_form != "none"

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

    async def _post(self, path: str, body: dict[str, Any],
                    no_retry: frozenset[int] = frozenset()) -> dict[str, Any]:
        """POST JSON with bounded retries; returns the decoded JSON object.

        ``no_retry``: statuses that end the request at once as a refusal (a probe of a form the
        server may not take must not be sent again).
        """
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
            if resp.status_code in _RETRY_STATUS and resp.status_code not in no_retry:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                if resp.status_code in (400, 404):
                    await self._check_model(resp.text)
                hint = " (check the API key in $OPENAI_API_KEY)" if resp.status_code in (401, 403) else ""
                raise RefusedError(
                    f"{url} refused the request with HTTP {resp.status_code}{hint}: {resp.text[:300]}",
                    resp.status_code,
                )
            if resp.headers.get("content-type", "").startswith("text/event-stream"):
                return merge_stream(resp.text)
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

    async def _check_model(self, refusal: str) -> None:
        """After a 400/404 that mentions a model: raise naming the models the server serves
        when ours is not among them (vLLM answers 404 "The model `x` does not exist")."""
        if "model" not in refusal.lower():
            return
        try:
            resp = await self._client().get(f"{self.base_url}/models")
            served = [str(m["id"]) for m in resp.json()["data"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return
        if served and self.model not in served:
            shown = ", ".join(served[:5]) + (" ..." if len(served) > 5 else "")
            raise LLMRefusedError(
                f"{self.base_url} does not serve model {self.model!r}; it serves: {shown}; "
                f"write openai:{self.base_url}#{served[0]}", 404)

    # -- generation ---------------------------------------------------------------------
    async def _post_with_schema(self, path: str, body: dict[str, Any], schema_json: str) -> dict[str, Any]:
        """The request with the server's JSON-schema form, found on the first call and kept."""
        if self.schema_form not in (None, "none"):
            return await self._post(path, {**body, **schema_fields(str(self.schema_form), schema_json)})
        refusals = []
        for form in SCHEMA_FORMS:
            try:
                data = await self._post(path, {**body, **schema_fields(form, schema_json)},
                                        no_retry=_REFUSED_FORM)
            except RefusedError as e:
                if e.status not in _REFUSED_FORM:
                    raise
                refusals.append(f"{form}: HTTP {e.status}")
                continue
            if refusals:
                log.info("%s takes the %s schema form (refused %s)", self.base_url, form, ", ".join(refusals))
            self.schema_form = form
            return data
        data = await self._post(path, body)  # the server is up: it takes no schema form
        log.warning("%s takes no JSON-schema form (%s); generating without one, the caller parses",
                    self.base_url, "; ".join(refusals))
        self.schema_form = "none"
        return data

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
        if params.schema is not None and self.schema_form != "none":
            data = await self._post_with_schema(path, body, params.schema)
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

    # -- next-token distributions from top_logprobs ---------------------------------------
    def _render(self, messages: list[Any]) -> str:
        """Chat messages as text through the ``chat_template`` model's template."""
        if self._renderer is None:
            from paperlab.llm.chat_render import load_renderer

            self._renderer = load_renderer(str(self.chat_template))
        return str(self._renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    async def _one_dist(self, prompt: Prompt, text: str, candidates: list[str]) -> tuple[TokenDist, int, int]:
        """The distribution after ``prompt`` + ``text`` (a prefill), read at the candidates."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": 1, "temperature": 0.0}
        if isinstance(prompt, str) or self.chat_template is not None:
            rendered = prompt if isinstance(prompt, str) else self._render(prompt)
            path = "/completions"
            body.update(prompt=rendered + text, logprobs=self.top_logprobs)
        else:
            path = "/chat/completions"
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
            if text:  # the reply begins with the prefill: the server continues it
                body.update(messages=[*prompt, {"role": "assistant", "content": text}],
                            continue_final_message=True, add_generation_prompt=False)
            else:
                body["messages"] = prompt
        probe = self.stream_logprobs is None
        stream = self.stream_logprobs is not False
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        try:
            data = await self._post(path, body)
        except RefusedError as e:
            raise LLMResponseError(
                f"{e}; if it refused top_logprobs={self.top_logprobs}, lower it (option top_logprobs) "
                "or start the server with a higher limit (vLLM: --max-logprobs)") from None
        try:
            top = first_top_logprobs(data, f"{self.base_url}{path}")
        except LLMResponseError:
            if not (probe and stream):
                raise
            self.stream_logprobs = False  # none when streamed: ask unstreamed from now on
            return await self._one_dist(prompt, text, candidates)
        if probe:
            self.stream_logprobs = stream
        hits = [c for c in candidates if c in top]
        if not hits:
            seen = ", ".join(repr(t) for t in list(top)[:5])
            hint = ("" if path == "/completions" else
                    "; the server may not continue a final assistant message (continue_final_message): "
                    "name the model's chat template (chat_template option, --chat-template) so paperlab "
                    "renders the prompt and uses /completions")
            raise LLMResponseError(
                f"{self.base_url}{path} returned log-probabilities for other tokens ({seen}) than "
                f"the candidates ({', '.join(repr(c) for c in candidates[:5])}, ...){hint}")
        best = max(top, key=lambda t: top[t])
        dist = TokenDist([top.get(c, -math.inf) for c in candidates],
                         candidates.index(best) if best in candidates else None, top[best])
        n, cached = prompt_tokens(data)
        if not n and path == "/completions" and self._renderer is not None:
            # no usage in the stream (llama-cpp-python): count the rendered text with the same tokenizer
            n = len(self._renderer(body["prompt"], add_special_tokens=False)["input_ids"])
        return dist, n, n - cached

    async def _anext_tokens(self, prompts: list[Prompt], candidates: list[str], prefills: list[str],
                            forced: list[str]) -> list[NextTokens]:
        for f in forced:
            if f and f not in candidates:
                raise LLMError(f"over HTTP a forced text must be one token, one of the candidates; "
                               f"got {f!r}")
        sem = asyncio.Semaphore(self.max_concurrency)

        async def row(prompt: Prompt, prefill: str, f: str) -> NextTokens:
            async with sem:
                # one after the other, so a server's prefix cache serves the second
                dists, n, new = [], 0, 0
                for text in [prefill] + ([prefill + f] if f else []):
                    d, n_i, new_i = await self._one_dist(prompt, text, candidates)
                    dists.append(d)
                    n = n or n_i
                    new += new_i
                return NextTokens(dists, n, new)

        return list(await asyncio.gather(*(row(p, pre, f) for p, pre, f in
                                           zip(prompts, prefills, forced, strict=True))))

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
