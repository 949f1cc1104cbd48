"""Consoles for command output: tables that a pipe or a file receives whole.

rich draws for an 80-column terminal when output is not a terminal and cuts wide cells to
"smol…"; a user piping a table into a file or `less` wants every character. Commands print
tables through :func:`out_console` (stdout) and notices through :func:`err_console` (stderr).
"""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 10_000  # no real table is wider; rich pads nothing past a table's own width


def out_console() -> Console:
    """stdout: the terminal's width on a terminal, unlimited in a pipe or file."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)


def err_console() -> Console:
    """stderr, the same way (progress and notes)."""
    return Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)
