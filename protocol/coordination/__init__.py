"""Coordination: the sans-IO machines that decide who may do what (DESIGN.md, spec §6).

Each module is one machine or one rule and imports nothing from its siblings but what it
names; events come in with ``now``, actions go out, and nothing here reads a clock or does I/O.
Import the machines from their modules (``coordination.lease_authority`` and so on).
"""
