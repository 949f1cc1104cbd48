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
  before a freeze) is bounded: when the frozen set has grown to twice its size after the
  last full collection, it is unfrozen and collected in full, once.
"""

from __future__ import annotations

import gc

__all__ = ["OrchestratorGC"]

YOUNG_THRESHOLD = 50_000
FLOOR = 200_000  # objects frozen before the doubling rule applies (small heaps: no full scans)


class OrchestratorGC:
    """The collector's policy for one orchestrator: :meth:`start`, :meth:`run_finished` at each
    finished run, :meth:`stop` to restore the process's own policy."""

    def __init__(self) -> None:
        self._before: tuple[int, ...] | None = None
        self.baseline = 0  # objects frozen after the last full collection
        self.full_collections = 0

    def start(self) -> None:
        self._before = gc.get_threshold()
        gc.set_threshold(max(self._before[0], YOUNG_THRESHOLD), max(self._before[1], 20), self._before[2])

    def run_finished(self) -> None:
        """Freeze what is alive now; collect in full when the frozen set has doubled."""
        if not gc.isenabled():  # the process manages its collector itself
            return
        gc.freeze()  # O(1): the generations' lists are spliced onto the frozen one
        if gc.get_freeze_count() > 2 * max(self.baseline, FLOOR):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.baseline = gc.get_freeze_count()
            self.full_collections += 1

    def stop(self) -> None:
        gc.unfreeze()  # back into the oldest generation: the process's next full scan sees them
        if self._before is not None:
            gc.set_threshold(*self._before)
            self._before = None
