"""How an orchestrator process uses Python's cyclic garbage collector.

A long-lived orchestrator keeps its last ``keep_finished`` runs in memory: about 16 objects
the collector tracks per task (79,000 for a 5000-task run; 2.5 million for 32 of them). The
orchestrator's own objects form no reference cycles (measured: a collection after a
5000-task run, with the dashboard on, finds none), so they are freed by reference counting,
and every scan of them by the collector is wasted time. With the collector's default policy
those scans came as pauses of the scheduler's loop: the middle generation (the survivors of
the last several runs) took 200-340 ms, and a full collection 260 ms, in about one 5000-task
run in seven.

So, while an orchestrator runs:

- the youngest generation is collected every 50,000 allocations instead of 700 (the scans
  of young objects were a quarter of the orchestrator's CPU on the no-op benchmark);
- when a run finishes, every object alive is *frozen* (:func:`gc.freeze`): moved out of the
  generations the collector scans. A frozen object is still freed by reference counting
  when it is no longer used, as the runs dropped beyond ``keep_finished`` are;
- what reference counting cannot free (cycles that some other code in the process made
  before a freeze) is bounded: once the process's resident memory has doubled since the
  last full collection (and is past ``FLOOR``), everything is unfrozen and collected in full
  ``idle_after`` seconds after a run finished if no run is active then (a full scan of 32
  large runs takes about a second, which should not stall a run's scheduling), else after a
  later run; and at once, busy or not, once it has grown fourfold.

Memory, not the frozen set's size, says when: :func:`gc.get_freeze_count` walks the whole
frozen list, and called at every finished run it grew a 1000-task run's CPU from 0.15 to
0.4 s as 32 runs piled up (measured).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["OrchestratorGC"]

YOUNG_THRESHOLD = 50_000
FLOOR = 256 * 2**20  # bytes resident before a full collection is ever due (small heaps: none)


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak; 0 when unknown."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource  # not on Windows

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)  # macOS: bytes; else KiB
    except (ImportError, OSError):
        return 0


class OrchestratorGC:
    """The collector's policy for one orchestrator: :meth:`start`, :meth:`run_finished` at each
    finished run, :meth:`stop` to restore the process's own policy. ``idle`` says whether the
    orchestrator has no active run; ``size`` measures the process's memory in bytes."""

    def __init__(self, idle: Callable[[], bool], idle_after: float = 1.0,
                 size: Callable[[], int] = resident_bytes) -> None:
        self.idle = idle
        self.idle_after = idle_after
        self.size = size
        self._before: tuple[int, ...] | None = None
        self._pending: asyncio.TimerHandle | None = None
        self.baseline = 0  # bytes resident after the last full collection
        self.full_collections = 0

    def start(self) -> None:
        self._before = gc.get_threshold()
        gc.set_threshold(max(self._before[0], YOUNG_THRESHOLD), max(self._before[1], 20), self._before[2])

    def run_finished(self) -> None:
        """Freeze what is alive now; collect in full as the module docstring says."""
        size = self.size()
        # The process manages its collector itself, or its memory cannot be measured (so a
        # leak could not be bounded): the collector's own generations, as they are.
        if not gc.isenabled() or not size:
            return
        gc.freeze()  # O(1): the generations' lists are spliced onto the frozen one
        grown = size / max(self.baseline, FLOOR)
        if grown > 4:
            self._collect()
        elif grown > 2 and self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.idle_after, self._when_idle)

    def _when_idle(self) -> None:
        self._pending = None
        if self.idle():
            self._collect()
        # Busy: the next finished run asks again.

    def _collect(self) -> None:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.baseline = self.size()
        self.full_collections += 1

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        gc.unfreeze()  # back into the oldest generation: the process's next full scan sees them
        if self._before is not None:
            gc.set_threshold(*self._before)
            self._before = None
