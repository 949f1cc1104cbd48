"""The control room: everything that serves or drives an orchestrator.

``server`` (the AIP WebSocket endpoint), ``api`` (the control HTTP API), ``runtime`` (one way to start it all), ``service`` and ``ask``
(the CLI's long-running commands) and ``client`` (the CLI's API client). The top room: it may
import every other room; none imports it.
"""
