"""The device room: what runs on a device.

``agent`` (dials in, runs tasks, reconnects), ``executors`` (the device's own policy of what
it runs), ``tools`` (simulated apps for the demo and scenarios) and ``local`` (device-agent
processes on this machine). Imports the plan and protocol rooms, never the orchestrator.
"""
