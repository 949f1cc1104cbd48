"""The plan room: what a constellation is and how it may change.

``task`` (a task's plan and run state), ``constellation`` (the DAG: validation, run semantics), ``conditions`` (safe edge
expressions) and ``edits`` (all-or-nothing edit batches and their inverses). Imports nothing
from the other galaxy rooms: every other room reads plans through it.
"""
