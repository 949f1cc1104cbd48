"""The openai backend against servers that are down, hang, fail, or answer nonsense.

The servers here are the far side of the boundary, scripted in-process; the client under
test is the real one.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paperlab.errors import LLMConnectionError, LLMResponseError
from paperlab.llm import load_llm
from paperlab.testing import free_port

OK_CHAT = {"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


class Scripted:
    """An HTTP server that answers each request with the next scripted (status, body)."""

    def __init__(self, replies: list[tuple[int, str]]) -> None:
        self.replies = list(replies)
        self.hits = 0
        script = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                i = min(script.hits, len(script.replies) - 1)
                script.hits += 1
                status, body = script.replies[i]
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def spec(self) -> str:
        return f"openai:http://127.0.0.1:{self.port}/v1#m"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    made: list[Scripted] = []

    def make(replies: list[tuple[int, str]]) -> Scripted:
        s = Scripted(replies)
        made.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in made:
        s.close()


def test_server_down_gives_a_clear_error_after_bounded_retries():
    llm = load_llm(f"openai:http://127.0.0.1:{free_port()}/v1#m", timeout=1, max_retries=2, backoff=0.01)
    with pytest.raises(LLMConnectionError, match=r"after 3 attempts .*server is running"):
        llm.generate("hi", max_tokens=4)


def test_hanging_server_times_out_each_attempt_and_stops(tscale):
    # Accepts connections and never answers: every attempt must end by its own timeout.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(lsock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        llm = load_llm(f"openai:http://127.0.0.1:{lsock.getsockname()[1]}/v1#m",
                       timeout=0.5 * tscale, max_retries=1, backoff=0.01)
        with pytest.raises(LLMConnectionError, match=r"after 2 attempts \(no answer within"):
            llm.generate("hi", max_tokens=4)
        assert len(accepted) == 2  # exactly one connection per attempt: the retry bound holds
    finally:
        stop.set()
        t.join()
        for c in accepted:
            c.close()
        lsock.close()


def test_transient_5xx_and_429_are_retried_then_succeed(scripted):
    s = scripted([(503, "busy"), (429, "slow down"), (200, json.dumps(OK_CHAT))])
    llm = load_llm(s.spec, timeout=5, max_retries=3, backoff=0.01)
    g = llm.generate([{"role": "user", "content": "hi"}], max_tokens=4)
    assert g.text == "hello" and s.hits == 3


def test_persistent_5xx_ends_in_a_connection_error_with_the_status(scripted):
    s = scripted([(500, "boom")])
    llm = load_llm(s.spec, timeout=5, max_retries=2, backoff=0.01)
    with pytest.raises(LLMConnectionError, match="HTTP 500"):
        llm.generate("hi", max_tokens=4)
    assert s.hits == 3


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, "<html>not json</html>", "non-JSON"),
        (200, "[1, 2]", "not an object"),
        (200, json.dumps({"choices": []}), "without the expected fields"),
        (200, json.dumps({"choices": [{"message": {"content": None}}]}), "without the expected fields"),
        (401, "no key", "OPENAI_API_KEY"),
        (400, "bad request", "HTTP 400"),
    ],
)
def test_malformed_or_refused_replies_give_a_clear_error(scripted, status, body, message):
    s = scripted([(status, body)])
    llm = load_llm(s.spec, timeout=5, max_retries=2, backoff=0.01)
    with pytest.raises(LLMResponseError, match=message):
        llm.generate([{"role": "user", "content": "hi"}], max_tokens=4)
    assert s.hits == 1  # a malformed answer is not a transient failure: no retry


def test_malformed_logprobs_are_refused(scripted):
    bad = {"choices": [{"text": "x", "logprobs": {"token_logprobs": [None, "x"], "text_offset": [0, 5]}}]}
    s = scripted([(200, json.dumps(bad))])
    llm = load_llm(s.spec, timeout=5, max_retries=0)
    with pytest.raises(LLMResponseError, match="malformed logprobs"):
        llm.score("hello", [" world"])
