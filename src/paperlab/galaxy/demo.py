"""The galaxy part of ``paperlab demo`` (filled in below)."""
from __future__ import annotations

from paperlab.demo import DemoContext
from paperlab.report import Section


def run(ctx: DemoContext) -> Section:
    raise NotImplementedError
