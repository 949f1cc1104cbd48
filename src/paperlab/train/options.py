"""The training flags every training command shares, as typer option types."""

from __future__ import annotations

from typing import Annotated

import typer

ParallelOpt = Annotated[str | None, typer.Option(
    "--parallel", help="none, ddp or fsdp (FSDP2). Default: ddp under torchrun, none in one process.")]
BackendOpt = Annotated[str, typer.Option(
    "--backend", help="Process-group backend: auto (gloo on the CPU, NCCL on CUDA), gloo or nccl.")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Build the model on the meta device, print memory per rank, train nothing.")]
NprocOpt = Annotated[int | None, typer.Option(
    "--nproc", min=1, help="Processes --dry-run assumes (default: WORLD_SIZE under torchrun, else 1).")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="torch threads per process (default: the cores shared among this node's ranks).")]
