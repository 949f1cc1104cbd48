"""The one set of orchestrator defaults, shared by the Python API, the CLI and the services.

Kept free of imports so the CLI can show them in ``--help`` without loading the orchestrator.
"""

DEVICE_TIMEOUT = 5.0  # seconds without a message before a device is declared lost
UNPLACEABLE_TIMEOUT = 10.0  # seconds a ready task may wait for a capable device before failing
EVICT_AFTER = 600.0  # seconds a device may stay offline before its registry entry is dropped
TICK = 0.05  # seconds between periodic orchestrator steps when nothing wakes it earlier
MAX_INFO_BYTES = 16_384  # the largest DEVICE_INFO / REGISTER info a device may keep with us
KEEP_FINISHED = 32  # finished runs kept in memory (older ones are read back from the journal)
KEEP_MB = 512.0  # MiB of finished runs kept in memory (estimated), as well as KEEP_FINISHED
MAX_SEND_MB = 64  # MiB of frames queued for one device that stops reading before it is disconnected
REGISTER_TIMEOUT = 10.0  # seconds a new device connection has to send REGISTER (the dashboard: to log in)
MAX_VIEWERS = 8  # dashboard viewers at once (the page shows one run: the cap is per run on show)
