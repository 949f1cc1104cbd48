"""A stand-in for the far side of the HTTP boundary: an OpenAI-style /v1/completions endpoint
that returns prompt log-probabilities (``echo`` + ``logprobs``), the way vLLM does.

`transformers serve` ignores ``echo``/``logprobs``, so the score-agreement test needs a server
that implements them. This one computes them with plain transformers (no paperlab code), so the
test compares paperlab's openai client against an independent computation.

Usage: python logprob_server.py MODEL_DIR PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR, PORT = sys.argv[1], int(sys.argv[2])
tok = AutoTokenizer.from_pretrained(MODEL_DIR)
model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


def completion(body: dict) -> dict:
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


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # health probe
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = json.dumps(completion(body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
