"""The orchestrator room: the one authoritative state of every run, and the devices' side of it.

``core`` (the :class:`~paperlab.galaxy.orchestrator.core.Orchestrator`), ``book`` (journal,
fold, listeners: the one way run state changes), ``devicelink`` (registration, liveness,
reconciliation), ``config``, ``events``, ``runstate`` (the fold), ``journal``, ``scheduling``,
``placement``, ``failures`` (deadlines: the one reader of a task's timeout), ``gcpolicy`` and
``waker``. The core and the device link share state through the book; neither imports the
other. Imports the plan and protocol rooms; knows nothing of servers,
dashboards or planners (they attach through hooks).
"""
