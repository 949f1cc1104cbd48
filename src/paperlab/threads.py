"""How many torch threads a CPU training or scoring loop should use (shared by the systems).

At most 2, and 1 when the 1-minute load average already fills the cores: on a busy 2-core
machine two spinning torch threads ran several times slower than one (measured 2.7x for a
paradiff step, 5-10x for the ICL DNA model, 18x for a tiny Instella step).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def cpu_threads() -> int:
    """The thread count to use now (see the module docstring)."""
    cores = os.cpu_count() or 1
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores - 0.5:
        return 1
    return max(1, min(2, cores))


def set_threads() -> int:
    """Set torch's intra-op thread count to :func:`cpu_threads` and return it."""
    import torch

    n = cpu_threads()
    torch.set_num_threads(n)
    return n


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread, then restore the count.

    For training whose weights are cached and measured: with one thread the float reductions
    happen in one order, so every machine of a kind trains the same weights whatever its load
    (with two, the tiny paradiff model came out different from run to run).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
