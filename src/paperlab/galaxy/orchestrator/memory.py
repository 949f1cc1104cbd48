"""How many finished runs an orchestrator keeps in memory: by count and by estimated size.

A long-lived orchestrator keeps its newest finished runs for quick reads (status, the
dashboard); older ones stay in the journal and are replayed on demand. Counting runs alone
lets one huge run (or runs with large results) hold gigabytes, so a run's size is estimated
when it finishes and the oldest runs are dropped while there are more than ``keep_finished``
of them or their sizes add up past ``keep_mb`` MiB.

The estimate (measured with tracemalloc on this code, Python 3.11): about 5.2 KB per task for
the task, its events' effects and its timeline entry, plus about 1.2 bytes per byte of a
result's JSON and 0.5 KB of objects per result. Measured 5.1-5.2 KB per no-result task for
1000- and 5000-task runs, 7.7 KB per task with 2 KB results; tests/galaxy/test_memory.py checks
the estimate against tracemalloc within a factor of 2.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping

from paperlab.galaxy.orchestrator.runstate import Run

__all__ = ["estimate_bytes", "forget_old_runs"]

TASK_BYTES = 5200
RESULT_OVERHEAD = 500
RESULT_FACTOR = 1.2


def estimate_bytes(run: Run) -> int:
    """The estimated memory a finished run holds (computed once, then kept on the run)."""
    if run.footprint is None:
        total = TASK_BYTES * len(run.constellation.tasks)
        for t in run.constellation.tasks.values():
            if t.result is not None:
                try:
                    total += RESULT_OVERHEAD + int(RESULT_FACTOR * len(json.dumps(t.result)))
                except (TypeError, ValueError):
                    total += RESULT_OVERHEAD
        run.footprint = total
    return run.footprint


def forget_old_runs(runs: MutableMapping[str, Run], keep_finished: int, keep_mb: float) -> list[str]:
    """Drop the oldest finished runs (``runs`` is in start order) beyond ``keep_finished`` or
    past ``keep_mb`` MiB in all; returns the ids dropped. Active runs are never dropped."""
    finished = [rid for rid, r in runs.items() if r.finished is not None]
    sizes = {rid: estimate_bytes(runs[rid]) for rid in finished}
    budget = keep_mb * 2**20
    total = sum(sizes.values())
    dropped: list[str] = []
    for rid in finished:
        if len(finished) - len(dropped) <= keep_finished and total <= budget:
            break
        total -= sizes[rid]
        del runs[rid]
        dropped.append(rid)
    return dropped
