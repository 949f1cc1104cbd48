"""A tiny OpenAI-compatible chat server for the outage tests: it scores every numbered passage
"[k] doc N" with N % 11, and exits abruptly (os._exit, like a crash) when request number
``--die-at`` arrives. Usage: python scripted_openai_server.py PORT DIE_AT [MODE [DELAY_S]]

MODE: ``score`` (default), ``garbage`` (replies carry no score at all), ``zeros`` (every
passage scored 0) or ``latin1`` (the reply body is JSON encoded as Latin-1, not UTF-8). DELAY_S: seconds to wait before answering.
Every request's user message is appended to $SCRIPTED_LOG when it is set."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DIE_AT = int(sys.argv[1]), int(sys.argv[2])
MODE = sys.argv[3] if len(sys.argv) > 3 else "score"
DELAY = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
LOG = os.environ.get("SCRIPTED_LOG")
COUNT = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status":"ok"}')

    def do_POST(self) -> None:
        global COUNT
        COUNT += 1
        if COUNT >= DIE_AT:
            os._exit(1)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        if LOG:
            with open(LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(user) + "\n")
        time.sleep(DELAY)
        items = re.findall(r"^\[(\d+)\] doc (\d+)", user, flags=re.M)
        text = "{" + ", ".join(f'"[{i}]": {int(n) % 11}' for i, n in items) + "}"
        if MODE == "zeros":
            text = "{" + ", ".join(f'"[{i}]": 0' for i, _ in items) + "}"
        elif MODE == "garbage":
            text = "I cannot judge these passages."
        elif MODE == "latin1":
            text = "Caf\u00e9 " + text
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": text},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": 9}},
                         ensure_ascii=False).encode("latin-1" if MODE == "latin1" else "utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
