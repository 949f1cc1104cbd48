"""Atomic outputs: a crash never leaves a half-written file or directory that looks complete.

Files are written to a temporary sibling and renamed over the target (``os.replace`` is atomic
on POSIX within one filesystem). Directories are built in a temporary sibling directory and
renamed into place at the end; an existing target is only replaced when the caller says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from paperlab.errors import PaperlabError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], *, force: bool = False, error: type[PaperlabError] = PaperlabError
) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place on success.

    Args:
        path: the final directory.
        force: replace ``path`` if it exists. Without it an existing ``path`` is an error and
            is never touched.
        error: the exception class raised for a refused target (a system's own subclass).

    Yields:
        The temporary directory to fill.

    Raises:
        error: ``path`` exists and ``force`` is false, or it exists and is not a directory.
    """
    target = Path(path).absolute()
    if target.exists() and not force:
        raise error(f"output directory {target} already exists; choose another path or pass --force")
    if target.exists() and not target.is_dir():
        raise error(f"output path {target} exists and is not a directory; remove it or choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Swap in two renames so that the old directory survives until the new one is complete.
    old: Path | None = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
