"""The plan room: what a constellation is and how it may change.

``constellation`` (tasks, edges, validation, run semantics), ``conditions`` (safe edge
expressions) and ``edits`` (all-or-nothing edit batches and their inverses). Imports nothing
from the other galaxy rooms: every other room reads plans through it.
"""
