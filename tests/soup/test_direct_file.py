"""The merge output's file: written around the page cache in aligned blocks, and byte for byte
what was given, whatever the piece sizes, the file system, or a refusal of O_DIRECT."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from paperlab.soup import direct_file
from paperlab.soup.direct_file import AppendFile

REPO = Path(__file__).resolve().parents[2]


def pieces(seed: int, total: int) -> list[bytes]:
    """Random bytes cut at random places, with pieces of 0 bytes, 1 byte and over one stage."""
    rng = random.Random(seed)
    data = rng.randbytes(total)
    cuts = sorted({0, total, *(c for c in (1, 2, 4095, 4097) if c < total),
                   *(rng.randrange(total) for _ in range(40 if total else 0))})
    out = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    return [*out[:3], b"", *out[3:]]


def write_all(path: Path, parts: list[bytes], **kw: bool) -> AppendFile:
    f = AppendFile(path, **kw)
    for p in parts:
        f.write(memoryview(p))
    f.close()
    return f


@pytest.mark.parametrize("total", [0, 1, 4096, 4097, direct_file._STAGE, 2 * direct_file._STAGE + 12345])
def test_bytes_and_length_are_exactly_what_was_written(tmp_path: Path, total: int) -> None:
    parts = pieces(total, total)
    f = write_all(tmp_path / "a.bin", parts)
    assert (tmp_path / "a.bin").read_bytes() == b"".join(parts)
    assert f.size == total


def test_buffered_and_direct_files_are_the_same(tmp_path: Path) -> None:
    parts = pieces(7, 3 * 10**6)
    write_all(tmp_path / "d.bin", parts)
    write_all(tmp_path / "b.bin", parts, direct=False)
    assert (tmp_path / "d.bin").read_bytes() == (tmp_path / "b.bin").read_bytes() == b"".join(parts)


def test_tmpfs_output(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm (tmpfs) here")
    path = shm / f"paperlab-direct-{os.getpid()}.bin"
    try:
        parts = pieces(3, 100_000)
        write_all(path, parts)
        assert path.read_bytes() == b"".join(parts)
    finally:
        path.unlink(missing_ok=True)


def test_file_system_that_refuses_o_direct_gets_buffered_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not getattr(os, "O_DIRECT", 0):
        pytest.skip("no O_DIRECT on this platform")
    real_open = os.open

    def refusing(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(direct_file.os, "open", refusing)
    parts = pieces(11, 50_000)
    f = write_all(tmp_path / "a.bin", parts)
    assert not f.direct
    assert (tmp_path / "a.bin").read_bytes() == b"".join(parts)


def test_device_that_refuses_a_direct_write_midway_gets_the_rest_buffered(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = []

    def picky(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 2 and fcntl_direct(fd):
            raise OSError(errno.EINVAL, "Invalid argument")  # as for a block larger than 4 KiB
        return real_write(fd, data)

    monkeypatch.setattr(direct_file.os, "write", picky)
    parts = pieces(5, 2 * direct_file._STAGE + 999)
    f = write_all(tmp_path / "a.bin", parts)
    assert (tmp_path / "a.bin").read_bytes() == b"".join(parts)
    assert not f.direct and len(calls) >= 3


def fcntl_direct(fd: int) -> bool:
    import fcntl

    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


def test_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_all(tmp_path / "a.bin", [b"x" * 5000])
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640


FILE_LIMIT = """
import errno, resource, signal, sys
from pathlib import Path
from paperlab.soup.direct_file import AppendFile
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
f = AppendFile(Path(sys.argv[1]))
f.write(b"y" * 30_000)
try:
    f.close()
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def test_a_file_size_limit_is_an_error_not_a_hang(tmp_path: Path) -> None:
    # A real short write: the kernel cuts the padded last block at the limit (not a multiple of
    # 4 KiB), the rest goes buffered, and the next write fails.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-c", FILE_LIMIT, str(tmp_path / "a.bin")], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "EFBIG"
    assert (tmp_path / "a.bin").read_bytes() == b"y" * 10_000
