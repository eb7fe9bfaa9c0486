"""Coordination: the behaviour behind the four intent families, as sans-IO machines (spec §6).

Each module holds one idea — the lease authority and holder, the fencing guard, reservations,
auctions, the invariant checker, the commitment tracker, the accounting ledger CRDT, exception
escalation, correlated-fault containment, digests, forensic pull and the isolation boundary —
as objects that take events with ``now`` and return actions. None of them reads a clock, opens
a socket or starts a thread; the runtime's roles drive them. Import the machines from their
modules (``coordination.lease_authority`` and so on).
"""
