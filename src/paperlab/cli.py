"""The root ``paperlab`` command: mounts each built system's sub-app and turns user errors
into one line on stderr with exit code 2."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated

import typer

from paperlab.errors import PaperlabError
from paperlab.systems import SYSTEMS

_DEBUG = False


def _epilog() -> str:
    lines = ["Systems:"]
    for s in SYSTEMS:
        state = "" if s.available else "  [not available yet]"
        lines.append(f"  {s.name:<9} {s.title}: {s.summary}{state}")
    return "\n\n".join(["\n".join(lines[:1]), *lines[1:]])


app = typer.Typer(
    name="paperlab",
    help="Working implementations of seven November-2025 research systems.",
    epilog=_epilog(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    global _DEBUG
    _DEBUG = debug
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Some libraries (bm25s) set their own loggers to DEBUG; the handler's level keeps their
    # chatter off the user's terminal unless --debug asks for it.
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)


@app.command()
def demo(
    only: Annotated[
        str | None, typer.Option("--only", help="Run one system's demo (e.g. soup, rerank).")
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Report directory.")] = "paperlab-report",
) -> None:
    """Run every built system's demo on embedded defaults and write an HTML report."""
    from paperlab.demo import run_demo

    run_demo(only=only, out_dir=out)


def _mount_systems() -> None:
    from paperlab.llm.cli import app as llm_app

    app.add_typer(llm_app, name="llm", help="Shared model access: generate or score with any backend.")
    for s in SYSTEMS:
        if not s.available:
            continue
        module = importlib.import_module(f"{s.package}.cli")
        app.add_typer(module.app, name=s.name, help=f"{s.title}: {s.summary}.")


_mount_systems()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, mapping PaperlabError to one stderr line and exit code 2.

    typer/click handle their own usage errors (exit 2 with a usage line); anything a user can
    cause inside a command is a PaperlabError, shown as one line unless ``--debug`` is given.
    """
    try:
        app(args=argv)
    except PaperlabError as exc:
        if _DEBUG:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
