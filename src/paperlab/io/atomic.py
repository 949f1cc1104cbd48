"""Atomic outputs: a crash never leaves a half-written file or directory that looks complete.

Files are written to a temporary sibling and renamed over the target (``os.replace`` is atomic
on POSIX within one filesystem). Directories are built in a temporary sibling directory and
renamed into place at the end; an existing target is only replaced when the caller says so.
Outputs get the permissions the umask gives (``mkstemp``/``mkdtemp`` alone would make them
private). A temporary directory is named ``.NAME.partial-PID-XXXX``: a process killed before it
could clean up (SIGKILL, power loss) leaves it behind, and the next run for the same target
removes it once that process is gone (:func:`sweep_partials`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from paperlab.errors import PaperlabError

log = logging.getLogger(__name__)


def _umask() -> int:
    # Linux reports it without changing it; elsewhere the only way to read it is to set it (and
    # set it straight back), which another thread creating a file at that instant would see.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def sweep_partials(path: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """Remove the temporary directories that killed runs left for ``path``.

    Returns:
        (removed, kept): partial directories removed because the process that made them is
        gone, and ones of an unknown owner (no pid in the name) left in place for the user.
    """
    target = Path(path).absolute()
    removed: list[Path] = []
    kept: list[Path] = []
    if not target.parent.is_dir():
        return removed, kept
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.partial-(?:(\d+)-)?[^/]*$")
    for p in target.parent.iterdir():
        m = pattern.match(p.name)
        if not m or not p.is_dir():
            continue
        if m.group(1) is None:
            kept.append(p)
        elif not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.warning("removed %s, the partial output of a run that was killed", p)
    return removed, kept


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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
    sweep_partials(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
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
