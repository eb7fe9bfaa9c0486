"""The isolation scenario: a misbehaving region is severed at the other regions' boundaries.

Theory of operation
-------------------
"The ability to sacrifice a region to save the fleet" (the seeds). From :data:`MISBEHAVE_FROM`
for :data:`MISBEHAVE_FOR`, every cell coordinator of the last region floods the first region's
coordinator with severity-5 exception reports (:func:`flood`). Every region coordinator keeps an
:class:`~fleetwire.protocol.coordination.isolation.IsolationBoundary` (:class:`RegionGuard`):

- it counts reports arriving from each other region; past :data:`FLOOD_LIMIT` in a window of
  :data:`FLOOD_WINDOW_MS` it signs a *sever* order for that region (``issue_order``, the
  region coordinator's own key), applies it at its own boundary, and sends it to every other
  region coordinator, which verifies and applies it in turn (trusted key with the region
  coordinator role, authority over that region, fresh, a new sequence);
- while a region is severed, what arrives from its cells is refused at the boundary (counted,
  not acted on);
- once nothing from the severed region was refused for :data:`QUIET_MS`, the region that
  severed it signs a *lift* order, applies and sends it the same way.

**Message.** An isolation order travels as the version-2 message of spec/v2/faults.md §4
(type 15, :class:`fleetwire.protocol.messages.v2.IsolationOrder`), signed by the issuing
region coordinator (the fault roles' conversions, ``roles/fault_messages``); the regions tell
each other the versions they read, so each writes it at version 2 or more. A receiving
boundary takes it with ``IsolationBoundary.order_message``: the node verified the envelope,
the boundary checks the signer's role, its authority over the target, freshness and sequence.
The issuing boundary applies the same order, signed by its own key (``issue_order``).

**Where the boundary runs.** A node's admission has no isolation hook yet, so the demo applies
:meth:`RegionGuard.on_message` where the node hands a message to the application: the transport
still carries the flood (its bytes are in the figures), the coordination acts on none of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs
import trio
from fleetwire.protocol.coordination.isolation import (
    Action,
    IsolationBoundary,
    IsolationOrder,
    Lifted,
    OrderAction,
    Severed,
    Target,
    issue_order,
)
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.messages import ExceptionCode, ExceptionReport, Scope, v2
from fleetwire.protocol.messages.versions import NotExpressible

from ..roles.fault_messages import order_from_message, order_message
from .demo_results import Event

if TYPE_CHECKING:
    from .demo_behaviour import NodeBehaviour

MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
MISBEHAVE_FROM: Final = 2 * DAY
MISBEHAVE_FOR: Final = 12 * HOUR
FLOOD_EVERY_MS: Final = 10 * MINUTE
FLOOD_LIMIT: Final = 12
FLOOD_WINDOW_MS: Final = 6 * HOUR
QUIET_MS: Final = 12 * HOUR
#: Region coordinators' node numbers: region ``r`` is node ``REGION + r`` (as in ``demo``).
REGION: Final = 1


@attrs.define
class IsolationTally:
    flood_sent: int = 0
    refused_at_boundary: int = 0
    orders_issued: int = 0
    orders_received: int = 0  # version-2 isolation order messages that reached a boundary
    orders_applied: int = 0
    orders_refused: int = 0


class RegionGuard:
    """A region coordinator's boundary, flood detector and order issuer (module docstring)."""

    def __init__(self, behaviour: NodeBehaviour, region: int, tally: IsolationTally) -> None:
        scenario = behaviour.scenario
        self.behaviour = behaviour
        self.region = region  # the region's index (credentials name regions by index)
        self.tally = tally
        node = behaviour.node
        self.boundary = IsolationBoundary(
            node.config.trust,
            {c: c // scenario.cells for c in range(scenario.all_cells)},
            max_age_ms=behaviour.timing.ms(DAY),
            max_drift_ms=behaviour.timing.ms(MINUTE),
        )
        for c in range(scenario.all_cells):
            self.boundary.place(scenario.cell_coordinator(c), c)
        for member, c in scenario.members().items():
            self.boundary.place(member, c)
        self._seen: dict[int, deque[int]] = {}
        self._last_refused: dict[int, int] = {}  # region → run ms
        self._severed_by_us: set[int] = set()

    def _region_of(self, node: int) -> int | None:
        scenario = self.behaviour.scenario
        cell = scenario.cell_of_coordinator(node)
        if cell is None:
            cell = scenario.members().get(node)
        return None if cell is None else cell // scenario.cells

    async def on_message(self, signed: SignedMessage) -> bool:
        """Take an arriving message; False if the boundary refuses it."""
        message, b = signed.message, self.behaviour
        source = message.header.issuer
        if not self.boundary.admits(source):
            self.tally.refused_at_boundary += 1
            region = self._region_of(source)
            if region is not None:
                self._last_refused[region] = b.run_ms()
            return False
        if isinstance(message, v2.IsolationOrder):
            self.tally.orders_received += 1
            order = order_from_message(message)
            self._apply(
                lambda now: self.boundary.order_message(order, signed.kid, signed.content_id, now)
            )
            return True
        region = self._region_of(source)
        if isinstance(message, ExceptionReport) and region is not None and region != self.region:
            seen = self._seen.setdefault(region, deque())
            now = b.run_ms()
            seen.append(now)
            while seen and seen[0] < now - FLOOD_WINDOW_MS:
                seen.popleft()
            severed = Target(Scope.REGION, region) in self.boundary.severed()
            if len(seen) > FLOOD_LIMIT and not severed:
                await self._order(OrderAction.SEVER, region, f"flood: {len(seen)} reports in 6 h")
        return True

    async def watch(self) -> None:
        """Lift what this region severed once the severed region has been quiet long enough."""
        b = self.behaviour
        while True:
            await trio.sleep(b.timing.s(HOUR))
            for region in sorted(self._severed_by_us):
                quiet_since = self._last_refused.get(region, 0)
                if b.run_ms() - quiet_since >= QUIET_MS:
                    await self._order(OrderAction.LIFT, region, "quiet for 12 h")

    async def _order(self, action: OrderAction, region: int, reason: str) -> None:
        """Sign an order about ``region``, apply it here, send it to every other region."""
        b = self.behaviour
        header = b.header()  # one sequence for the order, here and on the wire
        order = IsolationOrder(
            b.number, header.issued_at, header.sequence, action, Target(Scope.REGION, region),
            reason,
        )  # fmt: skip
        data = issue_order(order, b.node.config.key)
        self.tally.orders_issued += 1
        if action is OrderAction.SEVER:
            self._severed_by_us.add(region)
            self._last_refused[region] = b.run_ms()  # quiet is counted from the sever
        else:
            self._severed_by_us.discard(region)
        self._apply(lambda now: self.boundary.order(data, now))
        for other in range(b.scenario.regions):
            if other not in (self.region, region):
                try:
                    await b.send(order_message(header, order), REGION + other)
                except NotExpressible:
                    continue  # counted by the sender; the region has not said it reads v2

    def _apply(self, apply: Callable[[int], list[Action]]) -> None:
        """Apply an order at this boundary (``apply(now)``); note what it changed."""
        b = self.behaviour
        try:
            actions = apply(b.now())
        except FleetwireError:
            self.tally.orders_refused += 1
            return
        self.tally.orders_applied += 1
        for action in actions:
            if isinstance(action, Severed | Lifted):
                kind = "isolation-severed" if isinstance(action, Severed) else "isolation-lifted"
                b.seen.events.append(
                    Event(b.run_ms(), kind, f"region {action.target.id} at region {self.region}")
                )


async def flood(b: NodeBehaviour, target: int, tally: IsolationTally) -> None:
    """A misbehaving cell coordinator: severity-5 reports at ``target`` every 10 minutes."""
    timing = b.timing
    await trio.sleep(timing.s(max(0, MISBEHAVE_FROM - b.run_ms())))
    until = b.run_ms() + MISBEHAVE_FOR
    while b.run_ms() < until:
        report = ExceptionReport(
            header=b.header(),
            code=ExceptionCode.OTHER,
            severity=5,
            scope=Scope.CELL,
            scope_id=b.number,
            detail="spurious",
        )
        tally.flood_sent += 1
        b.seen.exceptions_open += 1
        await b.send(report, target)
        await trio.sleep(timing.s(FLOOD_EVERY_MS))
