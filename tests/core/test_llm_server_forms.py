"""The openai backend against the request and reply forms that differ between servers: top
log-probabilities (chat and completion forms), JSON-schema output (OpenAI's, llama.cpp's, vLLM's)
and a model the server does not serve. The servers are scripted in this process (the far side of
the boundary); the client under test is the real one."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from paperlab.errors import LLMConnectionError, LLMError, LLMResponseError
from paperlab.llm import load_llm

Reply = tuple[int, Any]  # a dict answers JSON, a str a server-sent-event stream


class Server:
    """Answers each POST with ``handler(path, body)``; records every request."""

    def __init__(self, handler: Callable[[str, dict[str, Any]], Reply], models: list[str]) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        srv = self

        class H(BaseHTTPRequestHandler):
            def _send(self, status: int, obj: Any) -> None:
                data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
                self.send_response(status)
                if isinstance(obj, str):  # a text reply is a server-sent-event stream
                    self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"data": [{"id": m} for m in models]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                srv.requests.append((self.path, body))
                self._send(*handler(self.path, body))

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def llm(self, model: str = "m", **kw: Any) -> Any:
        return load_llm(f"openai:{self.url}#{model}", max_retries=1, backoff=0.01, **kw)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(handler: Callable[[str, dict[str, Any]], Reply], models: tuple[str, ...] = ("m",)) -> Server:
        s = Server(handler, list(models))
        made.append(s)
        return s

    yield make
    for s in made:
        s.httpd.shutdown()
        s.httpd.server_close()


def chat_reply(top: dict[str, float]) -> dict[str, Any]:
    entries = [{"token": t, "logprob": v, "bytes": None} for t, v in top.items()]
    return {"choices": [{"message": {"role": "assistant", "content": entries[0]["token"]},
                         "finish_reason": "length", "logprobs": {"content": [
                             {"token": entries[0]["token"], "logprob": entries[0]["logprob"],
                              "top_logprobs": entries}]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 1,
                      "prompt_tokens_details": {"cached_tokens": 24}}}


def completion_reply(top: dict[str, float]) -> dict[str, Any]:
    first = next(iter(top))
    return {"choices": [{"text": first, "finish_reason": "length", "logprobs": {
        "tokens": [first], "token_logprobs": [top[first]], "top_logprobs": [top], "text_offset": [0]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1}}


MSGS: Any = [{"role": "user", "content": "score it"}]
SLOT = {"7": -0.2, "1": -1.9, " seven": -3.0, "0": -9999.0}  # vLLM writes -9999 for -inf
AFTER_1 = {",": -0.1, "0": -2.5}


def test_chat_top_logprobs_continue_the_prefill(serve: Callable[..., Server]) -> None:
    srv = serve(lambda path, b: (200, chat_reply(
        AFTER_1 if b["messages"][-1]["content"].endswith("1") else SLOT)))
    got = srv.llm().next_tokens([MSGS], ["0", "1", "7", "9"], prefill='{"[1]": ', forced="1")[0]
    first, after = got.dists
    assert first.logprobs[1:3] == [-1.9, -0.2] and first.logprobs[0] == first.logprobs[3] == -math.inf
    assert first.top == 2 and first.top_logprob == -0.2  # "7" is the most likely token
    assert after.logprobs[0] == -2.5 and after.top is None  # "," is no candidate
    assert got.prompt_tokens == 30 and got.new_tokens == 12  # 6 + 6 not served from the cache
    (p1, b1), (_, b2) = srv.requests
    assert p1 == "/v1/chat/completions" and b1["max_tokens"] == 1 and b1["top_logprobs"] == 20
    assert b1["logprobs"] is True and b1["continue_final_message"] is True
    assert b1["add_generation_prompt"] is False
    assert b1["messages"][-1] == {"role": "assistant", "content": '{"[1]": '}
    assert b2["messages"][-1]["content"] == '{"[1]": 1'


def test_completion_top_logprobs_for_raw_prompts(serve: Callable[..., Server]) -> None:
    srv = serve(lambda path, b: (200, completion_reply({"7": -0.3, "2": -1.5})))
    got = srv.llm(top_logprobs=5).next_tokens(["Score: "], ["2", "7"])[0]
    assert got.dists[0].logprobs == [-1.5, -0.3] and len(got.dists) == 1
    path, body = srv.requests[0]
    assert path == "/v1/completions" and body["prompt"] == "Score: " and body["logprobs"] == 5


def sse(*chunks: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_next_token_requests_are_streamed_and_read_from_the_chunks(serve: Callable[..., Server]) -> None:
    # as llama-cpp-python streams a completion: a chunk per token, a closing chunk, no usage
    done = {"choices": [{"text": "", "finish_reason": "length", "logprobs": None}]}
    plain = serve(lambda path, b: (200, sse({"choices": completion_reply({"7": -0.3, "2": -1.5})["choices"]}, done)))
    got = plain.llm().next_tokens(["Score: "], ["2", "7"])[0]
    assert got.dists[0].logprobs == [-1.5, -0.3] and got.prompt_tokens == 0
    body = plain.requests[0][1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # as vLLM streams a chat reply: the token in a delta, then usage when asked for
    reply = chat_reply(SLOT)
    reply["choices"][0]["delta"] = reply["choices"][0].pop("message")
    chat = serve(lambda path, b: (200, sse({"choices": reply["choices"]}, {"choices": [], "usage": reply["usage"]})))
    llm = chat.llm()
    got = llm.next_tokens([MSGS], ["1", "7"], prefill='{"[1]": ')[0]
    assert got.dists[0].logprobs == [-1.9, -0.2] and got.prompt_tokens == 30 and llm.stream_logprobs is True


def test_a_server_that_streams_no_logprobs_is_asked_unstreamed_once(serve: Callable[..., Server]) -> None:
    def handler(path: str, b: dict[str, Any]) -> Reply:
        if b.get("stream"):
            return 200, sse({"choices": [{"text": "7", "finish_reason": "length"}]})
        return 200, completion_reply({"7": -0.3, "2": -1.5})

    srv = serve(handler)
    llm = srv.llm()
    for _ in range(2):
        assert llm.next_tokens(["Score: "], ["2", "7"])[0].dists[0].logprobs == [-1.5, -0.3]
    assert [b.get("stream", False) for _, b in srv.requests] == [True, False, False]
    assert llm.stream_logprobs is False


def test_servers_without_logprobs_or_with_other_tokens_say_so(serve: Callable[..., Server]) -> None:
    plain = serve(lambda path, b: (200, {"choices": [{"message": {"content": "7"}}]}))
    with pytest.raises(LLMResponseError, match="no top log-probabilities"):
        plain.llm().next_tokens([MSGS], ["7"], prefill="{")
    # a server that ignored the prefill and started a fresh reply: no digit among its tokens
    fresh = serve(lambda path, b: (200, chat_reply({"Sure": -0.1, "{": -1.0})))
    with pytest.raises(LLMResponseError, match="other tokens .*'Sure'.*continue_final_message.*chat_template"):
        fresh.llm().next_tokens([MSGS], ["0", "1"], prefill='{"[1]": ')
    with pytest.raises(LLMError, match="forced text must be one token"):
        fresh.llm().next_tokens([MSGS], ["0", "1"], forced="10")


def test_refused_top_logprobs_and_unknown_model_are_one_line_each(serve: Callable[..., Server]) -> None:
    def vllm_like(path: str, b: dict[str, Any]) -> Reply:
        if b["model"] != "smol":
            return 404, {"error": {"message": f"The model `{b['model']}` does not exist."}}
        return 400, {"error": {"message": "Requested sample logprobs of 20, which is greater than max allowed: 5"}}

    srv = serve(vllm_like, models=("smol",))
    with pytest.raises(LLMResponseError, match="does not serve model 'smoll'; it serves: smol; write openai:"):
        srv.llm("smoll").generate(MSGS, max_tokens=2)
    with pytest.raises(LLMResponseError, match="HTTP 400.*lower it .*--max-logprobs"):
        srv.llm("smol").next_tokens([MSGS], ["1"])
    assert len(srv.requests) == 2  # neither refusal was sent again
    with pytest.raises(LLMError, match="top_logprobs must be at least 1"):
        srv.llm(top_logprobs=0)


SCHEMA = {"type": "object", "required": ["[1]", "[2]", "[10]"],
          "properties": {"[1]": {"type": "integer"}, "[2]": {"type": "integer"}, "[10]": {"type": "integer"}}}
OK = {"choices": [{"message": {"content": '{"[1]": 3}'}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 5, "completion_tokens": 4}}


def llama_cpp_python(path: str, b: dict[str, Any]) -> Reply:
    """llama-cpp-python's server: 500 for OpenAI's json_schema, takes json_object + schema."""
    rf = b.get("response_format")
    if rf and rf.get("type") != "json_object":
        return 500, {"error": {"message": "Internal Server Error"}}
    return 200, OK


def test_schema_form_is_found_once_and_kept(serve: Callable[..., Server]) -> None:
    srv = serve(llama_cpp_python)
    llm = srv.llm()
    for _ in range(3):
        assert llm.generate(MSGS, max_tokens=8, schema=SCHEMA).text == '{"[1]": 3}'
    assert llm.schema_form == "llama.cpp" and llm.schema_supported is True
    forms = [b.get("response_format", {}).get("type") for _, b in srv.requests]
    assert forms == ["json_schema", "json_object", "json_object", "json_object"]  # refused once, never retried
    sent = srv.requests[1][1]["response_format"]["schema"]
    assert list(sent["properties"]) == ["[1]", "[2]", "[10]"]  # the passages' order, not sorted


def test_vllm_form_and_a_server_that_takes_none(serve: Callable[..., Server]) -> None:
    vllm_native = serve(lambda path, b: (422, {"detail": "bad response_format"}) if "response_format" in b
                        else (200, OK))
    llm = vllm_native.llm()
    llm.generate(MSGS, max_tokens=8, schema=SCHEMA)
    assert llm.schema_form == "vllm" and vllm_native.requests[-1][1]["structured_outputs"] == {"json": SCHEMA}
    bare = serve(lambda path, b: (400, {"error": "unknown field"})
                 if {"response_format", "structured_outputs", "guided_json"} & set(b) else (200, OK))
    llm = bare.llm()
    assert llm.generate(MSGS, max_tokens=8, schema=SCHEMA).text == '{"[1]": 3}'
    assert llm.schema_form == "none" and len(bare.requests) == 5  # 4 forms once each, then plain
    llm.generate(MSGS, max_tokens=8, schema=SCHEMA)
    assert len(bare.requests) == 6 and set(bare.requests[-1][1]) == {"model", "max_tokens", "temperature", "messages"}


def test_a_failing_server_is_not_taken_for_one_without_schemas(serve: Callable[..., Server]) -> None:
    down = serve(lambda path, b: (500, {"error": "boom"}))
    llm = down.llm()
    with pytest.raises(LLMConnectionError, match="after 2 attempts"):
        llm.generate(MSGS, max_tokens=8, schema=SCHEMA)
    assert llm.schema_form is None  # still unknown: the plain request failed too
