"""The fencing guard: the resource's own defence against a holder that acts too late (spec §6.4).

Theory of operation
-------------------
Leases keep holders apart only while every holder keeps to its clock rule. A holder that
decides to act while its grant is valid and is then paused (a stalled process, an operation
queued in an actuator) can reach the resource after its lease ended and another holder took
over. Every operation therefore carries the holder's fencing token, and whatever guards the
resource — an actuator controller, a store — remembers the highest token it has admitted and
refuses any operation with a lower one (spec §6.4 "Fencing"). Tokens only grow per resource, so
once the newer holder has acted, nothing from an older grant gets through again.

What fencing cannot do: a late operation that reaches the resource *before* the newer holder's
first one is admitted (nothing newer has been seen yet). Only the clock rule of §6.4 protects
that instant; the guard is the second line, not the first.

The guard is a few integers per resource and never reads a clock.
"""

from __future__ import annotations

__all__ = ["FencingGuard"]


class FencingGuard:
    """Admits operations on resources in non-decreasing fencing-token order."""

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: dict[str, int] = {}

    def admit(self, resource: str, token: int) -> bool:
        """Whether an operation on ``resource`` with ``token`` may run; remembers the token.

        Equal tokens are admitted: one grant (and its renewals) carries one token for all the
        operations its holder performs.
        """
        if token < self._highest.get(resource, -1):
            return False
        self._highest[resource] = token
        return True

    def highest(self, resource: str) -> int | None:
        """The highest token admitted for ``resource``, or None if none was."""
        return self._highest.get(resource)
