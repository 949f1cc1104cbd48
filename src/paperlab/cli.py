"""The root ``paperlab`` command: mounts each built system's sub-app and turns user errors
into one line on stderr with exit code 2.

Sub-apps are mounted lazily: ``paperlab --help`` lists the systems from ``paperlab.systems``
(plain data) and a system's ``cli`` module, with its numpy/pydantic/torch imports, is loaded
only when one of its commands runs. That keeps ``paperlab --help`` near typer's own start-up.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Annotated, Any

import typer

# typer vendors its own click (typer._click) since 0.29; a TyperGroup subclass must use its types.
from typer import _click as click
from typer.core import TyperGroup

from paperlab.errors import PaperlabError
from paperlab.systems import SYSTEMS

_DEBUG = False

# name -> (module holding a typer ``app``, one-line help). The shared llm layer is mounted
# like a system; systems come from paperlab.systems so the two lists never drift.
_LLM_HELP = "Shared model access: generate or score with any backend."


def _lazy_commands() -> dict[str, tuple[str, str]]:
    commands = {s.name: (f"{s.package}.cli", f"{s.title}: {s.summary}")
                for s in SYSTEMS if s.available}
    commands["llm"] = ("paperlab.llm.cli", _LLM_HELP)
    return commands


class LazyGroup(TyperGroup):
    """A click group whose system sub-commands are imported on first use, not at start-up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        eager = super().list_commands(ctx)
        return eager + [n for n in _lazy_commands() if n not in eager]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        eager = super().get_command(ctx, cmd_name)
        if eager is not None:
            return eager
        entry = _lazy_commands().get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command = typer.main.get_command(module.app)
        command.help = command.help or entry[1]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import the sub-apps: short help comes from the static table.
        lazy = _lazy_commands()
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            if name in lazy:
                rows.append((name, lazy[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=80)))
        # Systems not built yet are listed too, so the help shows all seven.
        rows += [(s.name, f"{s.title}: {s.summary} [not available yet]")
                 for s in SYSTEMS if not s.available]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="paperlab",
    cls=LazyGroup,
    help="Working implementations of seven November-2025 research systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # rich help rendering would need every sub-command's metadata; plain click help is enough
    # for the root and keeps the lazy listing lazy.
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    global _DEBUG
    _DEBUG = debug
    level = logging.DEBUG if debug else logging.WARNING
    if not _main_rank() and not debug:
        level = logging.ERROR  # under torchrun rank 0 alone reports
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


def _main_rank() -> bool:
    """True in a plain process and on rank 0 of a torchrun launch (read from its environment,
    without importing torch)."""
    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, mapping PaperlabError to one stderr line and exit code 2.

    typer/click handle their own usage errors (exit 2 with a usage line); anything a user can
    cause inside a command is a PaperlabError, shown as one line unless ``--debug`` is given.
    """
    try:
        return app(args=argv)
    except PaperlabError as exc:
        if _DEBUG:
            raise
        if _main_rank():  # every rank of a launch fails alike: one line, from rank 0
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
