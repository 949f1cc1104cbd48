"""Simulated device tools for the demo and the NebulaBench-style scenarios.

Each is a small deterministic function with a realistic delay (``asyncio.sleep``) standing in
for an app on a phone, a laptop or a server. Devices expose them through ``python_allow``.
``fail_first=True`` injects a fault: the first call in a device process fails, later calls
succeed (so a retry or a replan recovers).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

_CALLS: dict[str, int] = {}


async def _work(name: str, seconds: float, fail_first: bool) -> None:
    await asyncio.sleep(seconds)
    if fail_first:
        # Only calls that ask for a fault are counted, so earlier clean calls of the same
        # tool in this process do not use the fault up.
        _CALLS[name] = _CALLS.get(name, 0) + 1
        if _CALLS[name] == 1:
            raise RuntimeError(f"{name}: injected fault on first call")


def _digest(*parts: Any) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


async def capture(subject: str = "scene", seconds: float = 0.2, fail_first: bool = False) -> dict[str, Any]:
    """Take a photo (phone camera): returns an image id and its size."""
    await _work("capture", seconds, fail_first)
    return {"image": f"img-{_digest(subject) % 10000}", "width": 4032, "height": 3024, "subject": subject}


async def enhance(image: dict[str, Any] | None = None, seconds: float = 0.3, fail_first: bool = False) -> dict[str, Any]:
    """Enhance an image (GPU server): returns it with a sharpness score."""
    await _work("enhance", seconds, fail_first)
    img = dict(image or {})
    img["sharpness"] = 0.9
    return img


async def fetch(source: str = "news", n: int = 3, seconds: float = 0.2, fail_first: bool = False) -> dict[str, Any]:
    """Fetch n documents from a source (laptop browser)."""
    await _work("fetch", seconds, fail_first)
    return {"source": source, "docs": [f"{source} document {i} about item {_digest(source, i) % 97}" for i in range(n)]}


async def count_words(docs: dict[str, Any] | list[str] | None = None, seconds: float = 0.1,
                      fail_first: bool = False) -> dict[str, Any]:
    """Count words in documents (any CPU)."""
    await _work("count_words", seconds, fail_first)
    items = docs.get("docs", []) if isinstance(docs, dict) else (docs or [])
    return {"words": sum(len(d.split()) for d in items), "docs": len(items)}


async def query_db(table: str = "sales", seconds: float = 0.25, fail_first: bool = False) -> dict[str, Any]:
    """Query a database (server): returns rows."""
    await _work("query_db", seconds, fail_first)
    return {"table": table, "rows": [{"id": i, "value": (_digest(table, i) % 100)} for i in range(5)]}


async def aggregate(seconds: float = 0.1, fail_first: bool = False, **parts: Any) -> dict[str, Any]:
    """Join upstream results (any CPU): counts and sums what came in."""
    await _work("aggregate", seconds, fail_first)
    total = 0
    for p in parts.values():
        if isinstance(p, dict):
            total += int(p.get("words", 0)) + sum(int(r.get("value", 0)) for r in p.get("rows", []))
    return {"parts": sorted(parts), "n": len(parts), "total": total}


async def write_report(seconds: float = 0.2, fail_first: bool = False, **parts: Any) -> dict[str, Any]:
    """Write a report document (laptop office app) from upstream parts."""
    await _work("write_report", seconds, fail_first)
    return {"pages": max(1, len(parts)), "sections": sorted(parts), "ok": True}


async def notify(message: str = "done", seconds: float = 0.05, fail_first: bool = False, **_: Any) -> dict[str, Any]:
    """Send a notification (phone/watch)."""
    await _work("notify", seconds, fail_first)
    return {"sent": True, "message": message}


async def measure(sensor: str = "heart_rate", seconds: float = 0.15, fail_first: bool = False) -> dict[str, Any]:
    """Read a sensor (watch/phone)."""
    await _work("measure", seconds, fail_first)
    return {"sensor": sensor, "value": 60 + _digest(sensor) % 40}


TOOLS = ["capture", "enhance", "fetch", "count_words", "query_db", "aggregate", "write_report",
         "notify", "measure"]


def allow(names: list[str]) -> dict[str, str]:
    """A python_allow mapping for these tool names."""
    return {n: f"paperlab.galaxy.device.tools:{n}" for n in names}
