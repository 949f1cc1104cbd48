"""Edits of a live run, and their undo and redo, all through one validated path.

Every change to a run's DAG is an edit batch validated as a whole by
:func:`paperlab.galaxy.plan.edits.apply_batch` against the run as it is now, and journaled as
one ``edit`` event carrying its inverse (:func:`~paperlab.galaxy.plan.edits.inverse_batch`).
Undo applies the newest edit's inverse, redo the newest undone edit's inverse, as ordinary
batches: so an undo is refused, the DAG unchanged, when a task it would touch has started
since (one line saying which). The stacks live in the run's fold
(:attr:`~paperlab.galaxy.orchestrator.runstate.Run.undo_stack`), so a resumed run can undo
edits made before the crash.
"""

from __future__ import annotations

from paperlab.galaxy.errors import EditError
from paperlab.galaxy.orchestrator.book import RunBook
from paperlab.galaxy.orchestrator.events import Edited, EditRejected
from paperlab.galaxy.orchestrator.runstate import Run
from paperlab.galaxy.orchestrator.waker import Waker
from paperlab.galaxy.plan.edits import EditBatch, apply_batch, inverse_batch, parse_batch

__all__ = ["EditHistory"]


class EditHistory:
    """Applies edits, undos and redos to the runs of one orchestrator."""

    def __init__(self, book: RunBook, wake: Waker) -> None:
        self.book, self.wake = book, wake

    def apply(self, run: Run, batch: EditBatch, action: str = "edit") -> tuple[bool, str]:
        """Validate and apply ``batch`` atomically. Returns (accepted, reason)."""
        try:
            prepared = apply_batch(run.constellation, batch)  # validated once, here
        except EditError as exc:
            reason = str(exc) if action == "edit" else f"cannot {action}: {exc}"
            self.book.audit(run.run_id, EditRejected(reason=reason, action=action))
            return False, reason
        inverse = inverse_batch(run.constellation, prepared, reason=f"{'redo' if action == 'undo' else 'undo'}"
                                                                    f" of: {batch.reason}".strip())
        self.book.record(run, Edited(batch=batch.model_dump(mode="json"), action=action, prepared=prepared,
                                     inverse=inverse.model_dump(mode="json") if inverse is not None else None))
        self.wake.set()
        return True, "applied" if action == "edit" else f"{action} applied"

    def undo(self, run: Run) -> tuple[bool, str]:
        """Undo the run's newest edit (or redo). Returns (accepted, reason)."""
        return self._step(run, run.undo_stack, "undo")

    def redo(self, run: Run) -> tuple[bool, str]:
        """Redo the run's newest undone edit. Returns (accepted, reason)."""
        return self._step(run, run.redo_stack, "redo")

    def _step(self, run: Run, stack: list[tuple[dict, dict | None]], action: str) -> tuple[bool, str]:
        if not stack:
            return False, f"nothing to {action} in run {run.run_id}"
        inverse = stack[-1][1]
        if inverse is None:
            return False, f"cannot {action}: the newest edit changed nothing that can be reverted"
        return self.apply(run, parse_batch(inverse), action)
