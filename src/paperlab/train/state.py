"""Resumable training state: every rank writes its own shard with torch.distributed.checkpoint.

Layout of a state directory::

    step-00000050/         one DCP checkpoint (model + optimiser), written by all ranks
        .metadata  __0_0.distcp  __1_0.distcp ...
        trainer.json       step, losses so far, the run's fingerprint, the world size
    latest.json            which step directory is complete

A checkpoint is written into a hidden ``.step-N.partial`` folder and renamed when every rank has
finished, then ``latest.json`` is replaced atomically: a run killed while saving resumes from
the previous complete step. DCP stores each tensor with its global shape, so a run resumes on
any number of processes and in either parallel mode.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from paperlab.errors import TrainError
from paperlab.io import atomic_write_text
from paperlab.train.dist import DistContext
from paperlab.train.parallel import Wrapped

LATEST = "latest.json"


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def read_latest(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint under ``root`` and its trainer.json, or None."""
    marker = root / LATEST
    if not marker.is_file():
        return None
    try:
        step_dir = root / json.loads(marker.read_text())["dir"]
        meta = json.loads((step_dir / "trainer.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise TrainError(f"training state in {root} is unreadable ({exc}); remove {root} to start the "
                         "stage over") from None
    return step_dir, meta


def check_fingerprint(root: Path, meta: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """Refuse to resume from a state written by another model or training config.

    Raises:
        TrainError: one line naming the first field that differs.
    """
    saved = meta.get("fingerprint", {})
    if saved == fingerprint:
        return
    keys = sorted(set(saved) | set(fingerprint))
    diff = next(k for k in keys if saved.get(k) != fingerprint.get(k))
    raise TrainError(f"the training state in {root} was written by a run with another {diff!r} "
                     f"({saved.get(diff)!r}, now {fingerprint.get(diff)!r}); resume with the same settings, "
                     f"or move {root} away to start over")


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every save and load without a process group that it assumes one process:
    exactly what a plain run is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _states(w: Wrapped, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(w.module, opt)
    return {"model": model_sd, "optim": optim_sd}


def save_state(root: Path, step: int, w: Wrapped, opt: torch.optim.Optimizer, meta: dict[str, Any],
               ctx: DistContext, keep: int = 1) -> Path:
    """Write step ``step``'s state (a collective: every rank calls it) and mark it latest."""
    import torch.distributed.checkpoint as dcp

    final = _step_dir(root, step)
    tmp = root / f".{final.name}.partial"
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ctx.barrier()
    with _quiet_single_process():
        dcp.save(_states(w, opt), checkpoint_id=str(tmp))
    ctx.barrier()
    if ctx.is_main:
        atomic_write_text(tmp / "trainer.json", json.dumps({**meta, "step": step, "world_size": ctx.world_size}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(root / LATEST, json.dumps({"dir": final.name, "step": step}))
        old = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    ctx.barrier()
    return final


def load_state(step_dir: Path, w: Wrapped, opt: torch.optim.Optimizer) -> None:
    """Load a checkpoint written by :func:`save_state` into the model and optimiser (a collective),
    resharding to this run's world size and parallel mode."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    states = _states(w, opt)
    try:
        with _quiet_single_process():
            dcp.load(states, checkpoint_id=str(step_dir))
    except Exception as exc:  # DCP raises several types for a state of another shape
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainError(f"cannot load the training state in {step_dir} into this model ({first[:200]}); "
                         f"move {step_dir.parent} away to start over") from None
    set_state_dict(w.module, opt, model_state_dict=states["model"], optim_state_dict=states["optim"])


def clear_state(root: Path, ctx: DistContext) -> None:
    """Remove a finished stage's state (rank 0), after every rank is done with it."""
    ctx.barrier()
    if ctx.is_main:
        shutil.rmtree(root, ignore_errors=True)
    ctx.barrier()
