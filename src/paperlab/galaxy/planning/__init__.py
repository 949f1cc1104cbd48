"""The planning room: turning requests into plans, and results into edits.

``planner`` (plan files and LLM planners) and ``replanner`` (rule-based edits after final
failures). Imports the plan and orchestrator rooms.
"""
