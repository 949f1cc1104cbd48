"""Freed tensors kept for the next tensor of the same size and dtype."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Spares:
    """Freed tensors kept for the next tensor of the same size and dtype.

    A merge ranks the same few tensor shapes over and over (one per projection of every layer),
    two models at a time. Each fresh block of a MiB or more is mapped from the system and every
    page of it faults on first touch, and two threads faulting while the other maps and unmaps
    contend in the kernel: on 3 x 0.25B bf16 TIES that was a third of the wall time. Only
    blocks up to ``limit`` entries are kept, so what is held stays far below a large tensor's
    own working set; :meth:`clear` drops them all before one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free: dict[tuple[int, str], list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        import torch

        with self._lock:
            free = self._free.get((n, str(dtype)))
            if free:
                return free.pop()
        return torch.empty(n, dtype=dtype)

    def give(self, t: torch.Tensor) -> None:
        if t.numel() <= self.limit and t.is_contiguous() and t.storage_offset() == 0:
            with self._lock:
                self._free.setdefault((t.numel(), str(t.dtype)), []).append(t)

    def clear(self) -> None:
        """Drop every kept tensor, and have the C heap hand its free memory back to the system:
        a method that keeps freed blocks of up to 16 MiB in the heap (breadcrumbs) otherwise
        carries tens to hundreds of MB of them into a large tensor's working set."""
        with self._lock:
            self._free.clear()
        _trim_heap()


def _trim_heap() -> None:
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError, TypeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


SPARES = Spares(limit=1 << 23)
