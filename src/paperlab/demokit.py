"""The contract between ``paperlab demo`` and each system's demo, below every system.

A system's ``demo`` module exposes ``run(ctx: DemoContext) -> Section``: it writes its files under
``ctx.work_dir`` and returns text, tables and figures. Systems import this module, never the
``paperlab.demo`` runner, so the runner can import them without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from paperlab.report import Figure, Section, Table

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DemoContext", "Figure", "Section", "Table"]


@dataclass
class DemoContext:
    """What a system's demo gets: a scratch directory for its files and the console."""

    work_dir: Path
    console: Console
