"""generate(schema=...): the hf backend holds replies to a JSON schema (llguidance); the openai
backend sends response_format and falls back to plain generation when a server refuses it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from paperlab.errors import LLMError
from paperlab.llm import load_llm


def score_schema(n: int) -> dict[str, Any]:
    keys = [f"[{i}]" for i in range(1, n + 1)]
    return {"type": "object", "additionalProperties": False, "required": keys,
            "properties": {k: {"type": "integer", "minimum": 0, "maximum": 10} for k in keys}}


PLAN = {"type": "object", "additionalProperties": False, "required": ["name", "tags", "done"],
        "properties": {"name": {"type": "string", "maxLength": 12},
                       "tags": {"type": "array", "items": {"enum": ["red", "green"]}, "maxItems": 2},
                       "done": {"type": "boolean"}}}


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return load_llm(f"hf:{smollm2_path}", batch_size=4)


@pytest.mark.slow
def test_schema_constrained_replies_always_parse(llm) -> None:
    prompts: list[Any] = [
        [{"role": "user", "content": "Score passages [1] 'Paris is in France' [2] 'Cats purr' "
                                     "[3] 'Lyon' for the query 'French cities', 0-10, as JSON."}],
        [{"role": "user", "content": "Write a poem about the sea."}],  # the schema still wins
        "Once upon a time",
        "{{{{ ]]] not json at all",
    ]
    outs = llm.generate_batch(prompts, max_tokens=40, schema=score_schema(3))
    for g in outs:
        obj = json.loads(g.text)
        assert list(obj) == ["[1]", "[2]", "[3]"] and all(0 <= v <= 10 for v in obj.values())
        assert g.finish_reason == "stop"  # the object closed and generation ended there
    g = llm.generate("A shopping list as JSON:", max_tokens=60, schema=PLAN, temperature=0.8, seed=3)
    obj = json.loads(g.text)
    assert set(obj) == {"name", "tags", "done"} and isinstance(obj["done"], bool)
    assert len(obj["name"]) <= 12 and set(obj["tags"]) <= {"red", "green"}
    # Without a schema the same model writes prose for the scoring prompt.
    with pytest.raises(json.JSONDecodeError):
        json.loads(llm.generate(prompts[1], max_tokens=20).text)


@pytest.mark.slow
def test_bad_schema_is_a_clear_error(llm) -> None:
    with pytest.raises(LLMError, match="JSON schema"):
        llm.generate("x", max_tokens=4, schema={"type": "no-such-type"})
    with pytest.raises(LLMError, match="dict"):
        llm.generate("x", max_tokens=4, schema="{}")  # type: ignore[arg-type]


class FormatServer:
    """The far side: an OpenAI-style server that honours response_format (like vLLM) or, with
    ``refuse=True``, answers 400 to any request carrying a schema (like servers that predate it)."""

    def __init__(self, refuse: bool) -> None:
        self.bodies: list[dict[str, Any]] = []
        srv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                srv.bodies.append(body)
                if refuse and {"response_format", "structured_outputs", "guided_json"} & set(body):
                    status, text = 400, json.dumps({"error": "unknown field: response_format"})
                else:
                    content = '{"[1]": 7}' if "response_format" in body else 'Sure! {"[1]": 7}'
                    status, text = 200, json.dumps({
                        "choices": [{"message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 4}})
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.spec = f"openai:http://127.0.0.1:{self.server.server_address[1]}/v1#m"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


CHAT: Any = [{"role": "user", "content": "score"}]


def test_openai_sends_response_format_with_the_schema() -> None:
    srv = FormatServer(refuse=False)
    try:
        llm = load_llm(srv.spec, max_retries=0)
        assert json.loads(llm.generate(CHAT, max_tokens=8, schema=score_schema(1)).text) == {"[1]": 7}
        rf = srv.bodies[0]["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == score_schema(1)
        assert llm.schema_supported is True
        llm.generate(CHAT, max_tokens=8)
        assert "response_format" not in srv.bodies[1]  # no schema, no field
    finally:
        srv.close()


def test_openai_falls_back_when_the_server_refuses_response_format() -> None:
    srv = FormatServer(refuse=True)
    try:
        llm = load_llm(srv.spec, max_retries=0)
        g = llm.generate(CHAT, max_tokens=8, schema=score_schema(1))
        assert g.text == 'Sure! {"[1]": 7}'  # plain generation: the caller parses
        assert llm.schema_supported is False
        assert ["response_format" in b for b in srv.bodies] == [True, True, False, False, False]
        assert "structured_outputs" in srv.bodies[2] and "guided_json" in srv.bodies[3]
        llm.generate(CHAT, max_tokens=8, schema=score_schema(1))
        assert len(srv.bodies) == 6 and set(srv.bodies[5]) == set(srv.bodies[4])  # not asked again
    finally:
        srv.close()


@pytest.mark.slow
def test_transformers_serve_takes_the_field(served_smollm2) -> None:
    remote = load_llm(served_smollm2.spec, timeout=600)
    g = remote.generate(CHAT, max_tokens=6, schema=score_schema(1))
    assert g.completion_tokens > 0 and remote.schema_supported is True  # accepted (and ignored)
