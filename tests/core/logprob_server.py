"""A stand-in for the far side of the HTTP boundary: an OpenAI-style server that returns
log-probabilities the way vLLM documents them, computed with plain transformers (no paperlab
code), so tests compare paperlab's openai client against an independent computation.

- ``/v1/completions`` with ``echo`` + ``logprobs``: prompt log-probabilities (what ``score``
  reads; `transformers serve` ignores these fields);
- ``/v1/completions`` with ``logprobs: k`` (no echo): the top-k log-probabilities of the one
  generated token, ``logprobs.top_logprobs[0] = {token: logprob}``;
- ``/v1/chat/completions`` with ``logprobs: true, top_logprobs: k``:
  ``logprobs.content[0].top_logprobs = [{"token", "logprob", "bytes"}]``, and
  ``continue_final_message: true, add_generation_prompt: false`` to continue a final assistant
  message (the model's chat template through transformers, as vLLM renders it);
- ``"stream": true``: server-sent events, one chunk holding the token (``delta`` in chat) and
  its log-probabilities, then a usage chunk when ``stream_options.include_usage`` asks, then
  ``data: [DONE]``;
- more than 20 top log-probabilities is refused with 400, a model it does not serve with 404
  (vLLM's defaults), and ``GET /v1/models`` lists the one it serves.

Usage: python logprob_server.py MODEL_DIR PORT [SERVED_NAME]
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR, PORT = sys.argv[1], int(sys.argv[2])
SERVED = sys.argv[3] if len(sys.argv) > 3 else None  # None: any model name is taken
MAX_LOGPROBS = 20
torch.set_num_threads(1)  # one request at a time per thread; no oversubscription of the test box
tok = AutoTokenizer.from_pretrained(MODEL_DIR)
model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


def last_logprobs(text: str) -> tuple[torch.Tensor, int]:
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1), int(ids.shape[1])


def top(logp: torch.Tensor, k: int) -> list[tuple[str, float]]:
    vals, idx = logp.topk(k)
    return [(tok.decode([int(i)]), float(v)) for v, i in zip(vals, idx, strict=True)]


def echo_completion(body: dict[str, Any]) -> dict[str, Any]:
    text = body["prompt"]
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0, :, 0].tolist()
    with torch.inference_mode():
        logits = model(**enc).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    ids = enc["input_ids"][0].tolist()
    lps: list[float | None] = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    nxt = int(logp[-1].argmax())  # the one generated token (max_tokens=1)
    tokens = [tok.decode([i]) for i in ids] + [tok.decode([nxt])]
    return {
        "object": "text_completion",
        "choices": [{
            "index": 0,
            "text": text + tokens[-1],
            "finish_reason": "length",
            "logprobs": {
                "tokens": tokens,
                "token_logprobs": lps + [float(logp[-1, nxt])],
                "text_offset": offsets + [len(text)],
            },
        }],
        "usage": {"prompt_tokens": len(ids), "completion_tokens": 1},
    }


def top_completion(body: dict[str, Any]) -> dict[str, Any]:
    logp, n = last_logprobs(body["prompt"])
    best = top(logp, int(body["logprobs"]))
    return {"object": "text_completion",
            "choices": [{"index": 0, "text": best[0][0], "finish_reason": "length",
                         "logprobs": {"tokens": [best[0][0]], "token_logprobs": [best[0][1]],
                                      "top_logprobs": [dict(reversed(best))],  # dicts are unordered
                                      "text_offset": [len(body["prompt"])]}}],
            "usage": {"prompt_tokens": n, "completion_tokens": 1}}


def chat(body: dict[str, Any]) -> dict[str, Any]:
    cont = bool(body.get("continue_final_message"))
    text = tok.apply_chat_template(body["messages"], tokenize=False, continue_final_message=cont,
                                   add_generation_prompt=bool(body.get("add_generation_prompt", True)))
    logp, n = last_logprobs(text)
    best = top(logp, int(body.get("top_logprobs") or 1))
    entry: dict[str, Any] = {"token": best[0][0], "logprob": best[0][1],
                             "bytes": list(best[0][0].encode()),
                             "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                              for t, v in best]}
    return {"object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": best[0][0]},
                         "finish_reason": "length",
                         "logprobs": {"content": [entry]} if body.get("logprobs") else None}],
            "usage": {"prompt_tokens": n, "completion_tokens": 1}}


def error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "BadRequestError", "code": status}}


def answer(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if SERVED is not None and body.get("model") != SERVED:
        return error(404, f"The model `{body.get('model')}` does not exist.")
    k = body.get("top_logprobs") if path.endswith("/chat/completions") else body.get("logprobs")
    if isinstance(k, int) and not isinstance(k, bool) and k > MAX_LOGPROBS:
        return error(400, f"Requested sample logprobs of {k}, which is greater than max allowed: {MAX_LOGPROBS}")
    if path.endswith("/chat/completions"):
        return 200, chat(body)
    if body.get("echo"):
        return 200, echo_completion(body)
    return 200, top_completion(body)


def stream_events(body: dict[str, Any], reply: dict[str, Any]) -> bytes:
    """``reply`` as the chunks vLLM streams for a one-token answer."""
    choice = dict(reply["choices"][0])
    if "message" in choice:
        choice["delta"] = choice.pop("message")
    kind = reply["object"] + ".chunk" if reply["object"] == "chat.completion" else reply["object"]
    chunks = [{"object": kind, "choices": [choice]}]
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({"object": kind, "choices": [], "usage": reply["usage"]})
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # health probe and the model list
        self._send(200, {"object": "list", "data": [{"id": SERVED or MODEL_DIR, "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, reply = answer(self.path, body)
        if status != 200 or not body.get("stream"):
            self._send(status, reply)
            return
        data = stream_events(body, reply)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
