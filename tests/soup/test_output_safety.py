"""Output safety: a full disk, a writer that fails twice, SIGTERM/SIGINT, --force, bad numbers.

Every test here must end (pytest-timeout), whatever the merge does: a hang is a failure.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paperlab.soup.config import MergeSpec
from paperlab.soup.errors import SoupError
from paperlab.soup.merge import merge
from paperlab.soup.writer import ShardedWriter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, make_llama_fn: Callable[..., Path]) -> list[Path]:
    root = tmp_path_factory.mktemp("safety")
    return [make_llama_fn(root / "a", 1), make_llama_fn(root / "b", 2)]


def spec(paths: list[Path], **kw: object) -> MergeSpec:
    return MergeSpec(models=[{"model": str(p), "weight": 0.5} for p in paths], **kw)  # type: ignore[misc]


def cli(*args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    pp = [str(REPO / "src")] if extra_path is None else [str(extra_path), str(REPO / "src")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pp)}
    return subprocess.run([sys.executable, "-m", "paperlab", "soup", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def one_error_line(r) -> str:  # type: ignore[no-untyped-def]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_full_tmpfs_ends_in_one_line_and_leaves_nothing(pair: list[Path], tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        line = one_error_line(cli("merge", "-m", str(pair[0]), "-w", "1", "-m", str(pair[1]), "-w", "1",
                                  str(disk / "out")))
        assert "no space left" in line and "free space or choose another output directory" in line
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.timeout(120)
def test_writer_that_fails_again_while_closing_never_hangs(pair: list[Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ShardedWriter, "write", full)
    monkeypatch.setattr(ShardedWriter, "abort", full)  # closing a file on a full disk fails too
    with pytest.raises(SoupError, match="no space left"):
        merge(spec(pair, chunk_elements=100), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


SLOW_WRITER = '''
import time
from paperlab.soup import writer

_write = writer.ShardedWriter.write


def _slow(self, name, data):
    time.sleep(0.02)
    return _write(self, name, data)


writer.ShardedWriter.write = _slow
'''


def start_slow_merge(pair: list[Path], tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real ``paperlab soup merge`` on a slow disk, started and seen to be writing."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_WRITER)  # a slow disk, so there is time to interrupt
    cfg = tmp_path / "m.yml"
    cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {pair[0]}\n    parameters: {{weight: 1}}\n"
                   f"  - model: {pair[1]}\n    parameters: {{weight: 1}}\npaperlab: {{chunk_elements: 200}}\n")
    outdir = tmp_path / "outs"
    outdir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow), str(REPO / "src")])}
    proc = subprocess.Popen([sys.executable, "-m", "paperlab", "soup", "merge", str(cfg), str(outdir / "out")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not any(p.name.startswith(".out.partial-") for p in outdir.iterdir()):
        assert proc.poll() is None, "the merge ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the merge
    return proc, outdir


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_exit_128_plus_signal_with_one_line_and_leave_nothing(pair: list[Path], tmp_path: Path,
                                                                     sig: signal.Signals) -> None:
    proc, outdir = start_slow_merge(pair, tmp_path)
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + int(sig), err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "merge stopped by SIG" in lines[0], err
    assert list(outdir.iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_run_leaves_a_partial_that_the_next_run_removes(pair: list[Path], tmp_path: Path) -> None:
    proc, outdir = start_slow_merge(pair, tmp_path)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate(timeout=60)
    assert [p.name for p in outdir.iterdir()][0].startswith(".out.partial-")
    result = merge(spec(pair), outdir / "out")
    assert [p.name for p in outdir.iterdir()] == ["out"]
    assert any("partial output of an earlier run that was killed" in n for n in result.notes)


def test_stale_partials_are_removed_and_unknown_ones_named(pair: list[Path], tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".out.partial-{int(gone.stdout)}-abc123"
    alive = tmp_path / f".out.partial-{os.getpid()}-def456"  # a run still going (this process)
    old = tmp_path / ".out.partial-xyz789"  # no pid in the name: nobody can tell
    for d in (dead, alive, old):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    result = merge(spec(pair), tmp_path / "out")
    assert not dead.exists() and alive.exists() and old.exists()
    assert any(str(dead) in n and "killed" in n for n in result.notes)
    assert any(str(old) in n and "remove it if no merge is running" in n for n in result.notes)


@pytest.mark.parametrize("mask,dir_mode,file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)])
def test_outputs_follow_the_umask(pair: list[Path], tmp_path: Path, mask: int, dir_mode: int, file_mode: int) -> None:
    old = os.umask(mask)
    try:
        merge(spec(pair), tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == dir_mode
    for f in (tmp_path / "out").iterdir():
        assert f.stat().st_mode & 0o777 == file_mode, f.name


def test_force_replaces_only_an_earlier_paperlab_output(pair: list[Path], tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SoupError, match="replaces only an earlier paperlab merge output"):
        merge(spec(pair), mine, force=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(SoupError, match="is \\(or holds\\) the input model"):
        merge(spec(pair), pair[0], force=True)
    with pytest.raises(SoupError, match="is \\(or holds\\) the input model"):
        merge(spec(pair), pair[0].parent, force=True)
    assert (pair[0] / "model.safetensors").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    merge(spec(pair), empty, force=True)
    first = (empty / "model.safetensors").stat().st_mtime_ns
    merge(spec(pair), empty, force=True)  # our own output: replaced
    assert (empty / "model.safetensors").stat().st_mtime_ns >= first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("flags,match", [
    (["--method", "ties", "--density", "0"], "density"),
    (["--method", "ties", "--density", "1.5"], "density"),
    (["--method", "task_arithmetic", "--lambda", "nan"], "lambda must be a finite number"),
    (["--method", "breadcrumbs", "--gamma", "-1"], "gamma"),
    (["--method", "slerp", "--t", "inf"], "parameters.t must be a finite number"),
])
def test_bad_numbers_from_flags_are_one_line(pair: list[Path], tmp_path: Path, flags: list[str], match: str,
                                             soup_cli) -> None:  # type: ignore[no-untyped-def]
    args = ["merge", "-m", str(pair[0]), "-w", "1", "-m", str(pair[1]), "-w", "1", "--base", str(pair[0]), *flags,
            str(tmp_path / "out")]
    line = one_error_line(soup_cli(*args))
    assert match in line
    assert not (tmp_path / "out").exists()


def test_nan_weight_flag_is_one_line(pair: list[Path], tmp_path: Path, soup_cli) -> None:  # type: ignore[no-untyped-def]
    line = one_error_line(soup_cli("merge", "-m", str(pair[0]), "-w", "nan", "-m", str(pair[1]), "-w", "1",
                              str(tmp_path / "out")))
    assert "weight must be a finite number" in line
