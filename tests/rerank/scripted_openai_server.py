"""A tiny OpenAI-compatible chat server for the outage tests: it scores every numbered passage
"[k] doc N" with N % 11, and exits abruptly (os._exit, like a crash) when request number
``--die-at`` arrives. Usage: python scripted_openai_server.py PORT DIE_AT"""

from __future__ import annotations

import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DIE_AT = int(sys.argv[1]), int(sys.argv[2])
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
        items = re.findall(r"^\[(\d+)\] doc (\d+)", user, flags=re.M)
        text = "{" + ", ".join(f'"[{i}]": {int(n) % 11}' for i, n in items) + "}"
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": text},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": 9}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
