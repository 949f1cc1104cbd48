"""The protocol room: the wire contract and who may speak it.

``aip`` (AIP messages and the per-connection Session), ``auth`` (credentials) and ``tls``. Imports only the plan room; both the device and
the orchestrator side build on it.
"""
