"""How many torch threads an in-process model uses: decided once, at the command-line edge.

Every command that runs a model in process (training, scoring, reranking, merging) calls
:func:`set_threads` once before the work, with the user's ``--threads`` if given. Library code
never changes the thread count: a library call inherits what its caller chose.

The default: the cores shared evenly among the processes of a torchrun launch on this node
(``LOCAL_WORLD_SIZE``), and 1 when the 1-minute load average already fills the cores (on a busy
2-core machine two spinning torch threads ran several times slower than one: measured 2.7x for
a paradiff step, 5-10x for the ICL DNA model, 18x for a tiny Instella step).
"""

from __future__ import annotations

import os

from paperlab.errors import ConfigError


def cpu_threads(requested: int | None = None) -> int:
    """The thread count to use: ``requested``, else the default above."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads {requested} must be at least 1")
        return requested
    cores = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores - 0.5:
        return 1
    return max(1, cores // local)


def set_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count once for this process (see :func:`cpu_threads`)."""
    import torch

    n = cpu_threads(requested)
    torch.set_num_threads(n)
    return n
