"""``paperlab demo``: run each built system's demo on embedded defaults and write one report.

A system's ``demo`` module exposes ``run(ctx: DemoContext) -> Section``. It writes its figures
under ``ctx.work_dir`` and returns text, tables and figures; this module times it, collects the
sections, and renders ``index.html``. A demo that fails is reported as failed (with its error)
and the others still run; the command then exits non-zero.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import tempfile
import time
import traceback
from pathlib import Path

from rich.console import Console

from paperlab.demokit import DemoContext
from paperlab.errors import PaperlabError
from paperlab.report import Section, write_report
from paperlab.systems import SYSTEMS, get_system

log = logging.getLogger(__name__)


def _quiet_library_progress_bars() -> None:
    """The demos draw rich progress bars; transformers' own tqdm bars would interleave with them."""
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def run_demo(only: str | None = None, out_dir: str | Path = "paperlab-report") -> Path:
    """Run the demos and write the report.

    Args:
        only: run just this system's demo (others are left out of the report).
        out_dir: the report directory; replaced atomically.

    Returns:
        The path of the report's ``index.html``.

    Raises:
        PaperlabError: ``only`` names an unknown or unbuilt system, or a demo failed.
    """
    systems = [get_system(only)] if only else list(SYSTEMS)  # an unknown name fails before any import
    if only and not systems[0].available:
        raise PaperlabError(f"system {only!r} is not available yet; run `paperlab demo` to see all")
    console = Console(stderr=True)
    _quiet_library_progress_bars()
    sections: list[Section] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="paperlab-demo-") as scratch:
        for s in systems:
            if not s.available:
                sections.append(Section(system=s.name, title=s.title, status="not available yet"))
                continue
            console.rule(f"[bold]{s.title}")
            ctx = DemoContext(work_dir=Path(scratch) / s.name, console=console)
            ctx.work_dir.mkdir(parents=True)
            start = time.perf_counter()
            try:
                section = importlib.import_module(f"{s.package}.demo").run(ctx)
                section.status = "ok"
            except Exception as exc:  # one system's failure must not hide the others' results
                log.debug("demo %s failed", s.name, exc_info=True)
                message = str(exc) if isinstance(exc, PaperlabError) else traceback.format_exc(limit=3)
                section = Section(system=s.name, title=s.title, status="failed", paragraphs=[message])
                failed.append(s.name)
                console.print(f"[red]{s.name} demo failed:[/red] {exc}")
            section.seconds = time.perf_counter() - start
            sections.append(section)
        index = write_report(sections, Path(out_dir))
    built = [s.name for s in systems if s.available]
    missing = [s.name for s in systems if not s.available]
    console.print(f"ran demos: {', '.join(built) or 'none'}")
    if missing:
        console.print(f"not available yet: {', '.join(missing)}")
    print(f"report: {index.resolve()}")
    if failed:
        raise PaperlabError(f"demo failed for: {', '.join(failed)}; see {index}")
    return index
