"""Budgets a neighbour can make a node spend, shared by all its sessions.

Theory of operation
-------------------
One session alone is already bounded by its convergence layer (a TCPCLv4 session holds at most
its Transfer MRU in reassembly, its custody backlog at most ``max_custody_backlog`` bundles).
Forty sessions each holding an unfinished 15 MiB transfer are not: the bounds must be global.
A :class:`LinkBudget` is handed to every link a listener accepts and answers two questions:

* **may this session start?** — at most ``max_sessions`` established sessions that we accepted
  (our own dialled peers do not count: they are configured), and at most
  ``max_connections`` TCP connections still establishing (so half-open contacts cannot pile up
  behind the cap). Over the cap a session is ended with the layer's own code: TCPCLv4 SESS_TERM
  "Resource Exhaustion" (RFC 9174 §6.1), TCPCLv3 SHUTDOWN "Busy" (RFC 7242 §6.1); a connection
  over the establishing cap is closed at once.
* **may this session hold more received bytes?** — every link reports what it holds (bytes
  reassembled plus bundles waiting for custody); once the total passes ``max_receive_bytes``
  the link that pushed it over refuses the transfer it is reassembling (XFER_REFUSE
  "No Resources", §5.2.4) or, on a layer that cannot refuse one transfer, ends its session; and
  the link that pushed it over asks the budget to *relieve* it: the link holding the largest
  unfinished reassembly refuses that transfer (XFER_REFUSE "No Resources", §5.2.4) or, on a
  layer that cannot refuse one transfer, ends its session; while the bytes held are bundles
  waiting for custody, every link stops reading until custody gives bytes back (it always
  does: the store either takes a bundle or refuses it). Nothing already acknowledged is
  touched: refusing an unfinished transfer loses nothing the peer thinks we hold.

Each refusal is logged with the stable code ``budget-exceeded``.
"""

from __future__ import annotations

import logging
from typing import Protocol

import attrs
import trio

__all__ = ["BUDGET_EXCEEDED", "LinkBudget"]

log = logging.getLogger("fleetwire.link")

#: The stable code in log lines about refusals for budget.
BUDGET_EXCEEDED = "budget-exceeded"


class Holder(Protocol):
    """A link as the budget sees it."""

    @property
    def reassembling(self) -> int:
        """Bytes of unfinished incoming transfers this link could give back by refusing."""
        ...

    def shed(self) -> bool:
        """Give those bytes back (refuse the transfer, or end the session); False if not."""
        ...


@attrs.define(eq=False)
class LinkBudget:
    """Global caps across the sessions a node accepted (see the module docstring)."""

    max_sessions: int = 64
    max_receive_bytes: int = 256 * 1024 * 1024
    max_connections: int = 128
    sessions: int = 0
    connections: int = 0
    receive_bytes: int = 0
    #: The part of ``receive_bytes`` that is whole bundles waiting for custody.
    custody_bytes: int = 0
    holders: set[Holder] = attrs.field(factory=set)
    #: Refusals made for this budget (sessions and transfers), for tests and reports.
    refusals: int = 0
    _freed: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    @property
    def receive_over(self) -> bool:
        return self.receive_bytes > self.max_receive_bytes

    def admit_connection(self) -> bool:
        """A TCP connection arrived: True if it may try to establish a session."""
        if self.connections >= self.max_connections:
            self.refusals += 1
            log.warning(
                "code=%s connection refused: %d connections establishing (max_connections)",
                BUDGET_EXCEEDED, self.connections,
            )  # fmt: skip
            return False
        self.connections += 1
        return True

    def connection_done(self) -> None:
        self.connections -= 1

    def admit_session(self, who: str) -> bool:
        """A session came up: True if it may stay (the caller then owes ``session_done``)."""
        if self.sessions >= self.max_sessions:
            self.refusals += 1
            log.warning(
                "code=%s session from %s refused: %d sessions (max_sessions)",
                BUDGET_EXCEEDED, who or "?", self.sessions,
            )  # fmt: skip
            return False
        self.sessions += 1
        return True

    def session_done(self) -> None:
        self.sessions -= 1

    def hold(self, delta: int, custody_delta: int = 0) -> None:
        """A link holds ``delta`` more (or, negative, fewer) received bytes, of which
        ``custody_delta`` are bundles waiting for custody."""
        self.receive_bytes += delta
        self.custody_bytes += custody_delta
        if delta < 0:
            self._freed.unpark_all()

    def relieve(self) -> None:
        """Over budget: the holder with the largest unfinished reassembly gives it back."""
        for holder in sorted(self.holders, key=lambda h: h.reassembling, reverse=True):
            if not self.receive_over or not holder.reassembling:
                return
            if holder.shed():
                self.refusals += 1

    @property
    def must_wait(self) -> bool:
        """Readers pause: over budget, and custody will give bytes back."""
        return self.receive_over and self.custody_bytes > 0

    async def wait_room(self) -> None:
        """Return once readers need not pause any more (see :attr:`must_wait`)."""
        while self.must_wait:
            await self._freed.park()
