"""Where a training run stands: one process, or one rank of a ``torchrun`` launch.

paperlab never starts worker processes itself. Under ``torchrun`` (one node or many, through
its rendezvous) every process finds its rank in the environment that torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) and joins the process group here: gloo on the CPU, NCCL on
CUDA. Run as a plain command, the same code is a world of one with no process group at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch

from paperlab.errors import TrainError

Parallel = Literal["none", "ddp", "fsdp"]
Backend = Literal["auto", "gloo", "nccl"]
PARALLEL_MODES: tuple[str, ...] = ("none", "ddp", "fsdp")
BACKENDS: tuple[str, ...] = ("auto", "gloo", "nccl")

log = logging.getLogger(__name__)

LAUNCH_HINT = "torchrun --standalone --nproc_per_node N -m paperlab"


def launch_ranks() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) set by torchrun, or None for a plain process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    except ValueError:
        raise TrainError("RANK / WORLD_SIZE / LOCAL_RANK are not integers; launch with torchrun, "
                         "which sets them") from None


def is_main_process() -> bool:
    """True in a plain process and on rank 0 of a launch (readable before any process group)."""
    ranks = launch_ranks()
    return ranks is None or ranks[0] == 0


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    parallel: str  # none | ddp | fsdp
    backend: str | None  # gloo | nccl | None (one process, no group)
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def grouped(self) -> bool:
        """A process group exists (torchrun), even a group of one."""
        return self.backend is not None

    def barrier(self) -> None:
        if self.grouped:
            torch.distributed.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (and return it); a no-op in one process."""
        if self.grouped and self.world_size > 1:
            # gloo reduces CPU tensors, NCCL CUDA ones: move there and back when needed
            dev = self.device if self.backend == "nccl" else torch.device("cpu")
            moved = t.to(dev)
            torch.distributed.all_reduce(moved)
            if moved is not t:
                t.copy_(moved)
        return t

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (for small picklable values: a decision, a path)."""
        if not self.grouped or self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def single_process(device: str = "cpu") -> DistContext:
    """The context of a plain process (no torchrun)."""
    return DistContext(0, 1, 0, "none", None, resolve_device(device, 0))


def per_rank(count: int, world_size: int, what: str) -> int:
    """``count`` divided over ``world_size`` processes (``what`` names the count in the error).

    Raises:
        TrainError: the world size does not divide ``count``.
    """
    if count % world_size:
        raise TrainError(f"{what} of {count} does not split evenly over {world_size} processes; use a "
                         f"multiple of {world_size}, or another number of processes")
    return count // world_size


def resolve_device(device: str, local_rank: int) -> torch.device:
    """"auto" -> CUDA when present, else the CPU; "cuda" on a machine without it is one line."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise TrainError(f"unknown device {device!r}; use auto, cpu or cuda")
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    return torch.device(device if ":" in device else f"cuda:{local_rank}")


def check_launch(parallel: str | None, backend: str = "auto") -> None:
    """Refuse a parallel mode or backend that cannot work in this launch, before any heavy work.

    Raises:
        TrainError: an unknown mode or backend, ``ddp``/``fsdp`` outside torchrun, or ``none`` on
            several processes.
    """
    if parallel is not None and parallel not in PARALLEL_MODES:
        raise TrainError(f"unknown --parallel {parallel!r}; choose one of: {', '.join(PARALLEL_MODES)}")
    if backend not in BACKENDS:
        raise TrainError(f"unknown --backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    ranks = launch_ranks()
    if ranks is None and parallel in ("ddp", "fsdp"):
        raise TrainError(f"--parallel {parallel} runs one process per rank under torchrun: "
                         f"{LAUNCH_HINT} <command> ... --parallel {parallel}")
    if ranks is not None and parallel == "none" and ranks[1] > 1:
        raise TrainError(f"--parallel none cannot train on {ranks[1]} processes; use ddp or fsdp")


def init_distributed(parallel: str | None = None, device: str = "auto", backend: str = "auto",
                     timeout_minutes: float | None = None) -> DistContext:
    """Join torchrun's process group (or stay a single process) and pick the device.

    Args:
        parallel: none, ddp or fsdp; default ddp under torchrun, none otherwise.
        device: auto, cpu or cuda (each rank takes ``cuda:LOCAL_RANK``).
        backend: auto (gloo on the CPU, NCCL on CUDA), gloo or nccl.
        timeout_minutes: how long a collective waits for the slowest rank (rank 0 evaluates
            and writes checkpoints while the others wait); default PAPERLAB_DIST_TIMEOUT_MIN or 60.

    Raises:
        TrainError: see :func:`check_launch`; NCCL asked for on the CPU; CUDA asked for but absent.
    """
    check_launch(parallel, backend)
    ranks = launch_ranks()
    if ranks is None:
        return single_process(device)
    rank, world, local = ranks
    dev = resolve_device(device, local)
    if backend == "nccl" and dev.type != "cuda":
        raise TrainError("the NCCL backend needs CUDA devices and this run is on the CPU; "
                         "use --backend gloo (or auto)")
    chosen = backend if backend != "auto" else ("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        minutes = timeout_minutes or float(os.environ.get("PAPERLAB_DIST_TIMEOUT_MIN", "60"))
        torch.distributed.init_process_group(chosen, timeout=timedelta(minutes=minutes))
    return DistContext(rank, world, local, parallel or "ddp", chosen, dev)


def shutdown(ctx: DistContext, *, clean: bool = True) -> None:
    """Leave the process group. ``clean``: wait for every rank first (a rank that leaves while
    another is still inside a collective aborts it)."""
    if ctx.grouped and torch.distributed.is_initialized():
        if clean:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@contextmanager
def distributed(parallel: str | None = None, device: str = "auto",
                backend: str = "auto") -> Iterator[DistContext]:
    """:func:`init_distributed` for the block, then :func:`shutdown`.

    On an error the group is torn down without waiting: torchrun stops the other ranks.
    """
    ctx = init_distributed(parallel, device, backend)
    ok = False
    try:
        yield ctx
        ok = True
    finally:
        shutdown(ctx, clean=ok)
