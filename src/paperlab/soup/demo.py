"""The soup part of ``paperlab demo`` (filled in with the zoo run)."""

from __future__ import annotations

from paperlab.demokit import DemoContext
from paperlab.report import Section


def run(ctx: DemoContext) -> Section:
    """Run the SoCE demo and return its report section."""
    from paperlab.soup.demo_run import run_demo

    return run_demo(ctx)
