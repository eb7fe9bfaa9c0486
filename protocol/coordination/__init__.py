"""Coordination: the behaviour behind the four intent families, as sans-IO policies and machines.

Each module here holds one idea — the commitment tracker, the accounting ledger CRDT, exception
escalation, correlated-fault containment, digests, the isolation boundary, and the lease
authority and holder — as objects that take events with ``now`` and return actions. None of them
reads a clock, opens a socket or starts a thread; the runtime's roles drive them.
"""
