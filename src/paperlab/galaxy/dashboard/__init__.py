"""The dashboard room: the live page under ``/ui``.

``relay`` (the orchestrator side: viewers, ticks, the renderer process), ``render`` (the
renderer process: SVG, page state, diffs). Imports the orchestrator
and protocol rooms.
"""
