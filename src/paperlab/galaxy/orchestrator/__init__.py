"""The orchestrator room: the one authoritative state of every run, and the devices' side of it.

``core`` (the :class:`~paperlab.galaxy.orchestrator.core.Orchestrator`), ``devicelink`` (registration, liveness, reconciliation), ``events``,
``runstate`` (the fold), ``journal``, ``scheduling``, ``placement``, ``failures``,
``gcpolicy`` and ``waker``. Imports the plan and protocol rooms; knows nothing of servers,
dashboards or planners (they attach through hooks).
"""
