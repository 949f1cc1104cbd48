"""One training loop for every system that trains: one process, or torchrun with DDP or FSDP2.

    from paperlab.train import FnTask, OptimSpec, Schedule, TrainSpec, distributed, run_training

    with distributed(parallel=None, device="auto") as ctx:       # torchrun or a plain process
        wrapped, result = run_training(model, FnTask(batch, loss), spec, ctx, state_dir=out / ".state")

A task gives this rank's batch for (step, global sample indices) and the batch's summed loss;
the loop does sharding, gradient reduction, clipping, the schedule, resumable sharded state
(torch.distributed.checkpoint) and progress on rank 0. Systems import this package; it
imports none of them. Launching: docs/training.md.

Names are imported on first use, so that ``paperlab.train.options`` (typer option types for
the command lines) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names for type checkers; at run time they load on first use
    from paperlab.train.dist import (
        BACKENDS,
        PARALLEL_MODES,
        DistContext,
        check_launch,
        distributed,
        init_distributed,
        is_main_process,
        launch_ranks,
        shutdown,
        single_process,
    )
    from paperlab.train.estimate import MemoryEstimate, estimate_memory
    from paperlab.train.loop import (
        FnTask,
        LossParts,
        TrainResult,
        TrainSpec,
        TrainTask,
        local_rows,
        run_training,
    )
    from paperlab.train.optim import OptimSpec, Schedule, make_optimizer, no_decay_for_vectors
    from paperlab.train.parallel import Wrapped, full_state_dict, whole_weights, wrap_model
    from paperlab.train.seeds import RowDropout, row_seeds, sample_generator, sample_seed

_WHERE = {
    "BACKENDS": "dist", "PARALLEL_MODES": "dist", "DistContext": "dist", "check_launch": "dist",
    "distributed": "dist", "init_distributed": "dist", "is_main_process": "dist", "launch_ranks": "dist",
    "shutdown": "dist", "single_process": "dist",
    "FnTask": "loop", "LossParts": "loop", "TrainResult": "loop", "TrainSpec": "loop", "TrainTask": "loop",
    "local_rows": "loop", "run_training": "loop",
    "OptimSpec": "optim", "Schedule": "optim", "make_optimizer": "optim", "no_decay_for_vectors": "optim",
    "Wrapped": "parallel", "full_state_dict": "parallel", "whole_weights": "parallel", "wrap_model": "parallel",
    "RowDropout": "seeds", "row_seeds": "seeds", "sample_generator": "seeds", "sample_seed": "seeds",
    "MemoryEstimate": "estimate", "estimate_memory": "estimate",
}

__all__ = [
    "BACKENDS",
    "PARALLEL_MODES",
    "DistContext",
    "FnTask",
    "LossParts",
    "MemoryEstimate",
    "OptimSpec",
    "RowDropout",
    "Schedule",
    "TrainResult",
    "TrainSpec",
    "TrainTask",
    "Wrapped",
    "check_launch",
    "distributed",
    "estimate_memory",
    "full_state_dict",
    "init_distributed",
    "is_main_process",
    "launch_ranks",
    "local_rows",
    "make_optimizer",
    "no_decay_for_vectors",
    "row_seeds",
    "run_training",
    "sample_generator",
    "sample_seed",
    "shutdown",
    "single_process",
    "whole_weights",
    "wrap_model",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'paperlab.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"paperlab.train.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
