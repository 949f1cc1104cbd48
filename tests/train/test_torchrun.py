"""Real torchrun launches of the shared loop on the CPU: 2 processes give the losses of 1, DDP and
FSDP alike, and a run resumes on another number of processes and in another mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from paperlab.testing import run_torchrun

TOY = Path(__file__).with_name("toy_run.py")
sys.path.insert(0, str(TOY.parent))
from toy_run import main as toy_main  # noqa: E402


def toy(out: Path, steps: int, *, nproc: int = 0, parallel: str | None = None, stop_after: int | None = None,
        tscale: float = 1.0) -> dict:  # type: ignore[type-arg]
    """Run the toy job in this process (nproc 0: a plain run) or under torchrun."""
    args = [str(out), str(steps), *(["--parallel", parallel] if parallel else []),
            *(["--stop-after", str(stop_after)] if stop_after else [])]
    if nproc:
        proc = run_torchrun([str(TOY), *args], nproc, timeout=180 * tscale)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        import torch

        threads = torch.get_num_threads()
        try:
            toy_main(args)
        finally:
            torch.set_num_threads(threads)
    return json.loads((out / "result.json").read_text())


def rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))


def test_fsdp_on_two_processes_gives_the_losses_of_one_and_resumes_on_one(tmp_path: Path, tscale: float) -> None:
    one = toy(tmp_path / "one", 12, tscale=tscale)
    assert (one["world_size"], one["parallel"]) == (1, "none")
    # FSDP on two processes, stopped after 7 steps (state saved), then finished by ONE process
    part = toy(tmp_path / "mixed", 12, nproc=2, parallel="fsdp", stop_after=7, tscale=tscale)
    assert len(part["losses"]) == 7 and (part["parallel"], part["world_size"]) == ("fsdp", 2)
    assert rel(one["losses"][:7], part["losses"]) < 1e-5
    assert (tmp_path / "mixed" / "state" / "latest.json").is_file()
    rest = toy(tmp_path / "mixed", 12, tscale=tscale)
    assert rest["resumed_from"] == 7 and rest["world_size"] == 1
    assert rel(one["losses"], rest["losses"]) < 1e-5
    assert abs(one["checksum"] - rest["checksum"]) < 1e-4 * abs(one["checksum"])
    assert not (tmp_path / "mixed" / "state").exists()  # a finished run leaves no state behind


@pytest.mark.slow
def test_ddp_gives_the_losses_of_one_and_one_process_resumes_on_two(tmp_path: Path, tscale: float) -> None:
    one = toy(tmp_path / "one", 12, tscale=tscale)
    ddp = toy(tmp_path / "ddp", 12, nproc=2, parallel="ddp", tscale=tscale)
    assert (ddp["world_size"], ddp["parallel"]) == (2, "ddp")
    assert rel(one["losses"], ddp["losses"]) < 1e-5
    assert abs(one["checksum"] - ddp["checksum"]) < 1e-4 * abs(one["checksum"])
    for mode in ("ddp", "fsdp"):
        out = tmp_path / mode
        toy(out, 12, stop_after=5, tscale=tscale)
        rest = toy(out, 12, nproc=2, parallel=mode, tscale=tscale)
        assert rest["resumed_from"] == 5 and rest["world_size"] == 2 and rest["parallel"] == mode
        assert rel(one["losses"], rest["losses"]) < 1e-5
