"""Market allocation (protocol version 3): a region clears bids against asks once per cycle.

Theory of operation
-------------------
A region runs one :class:`AuctionRegion` over its *pools* (a feedstock body's share in kg, a
dock's slots). Bids and asks arrive during a cycle; at each cycle boundary (every
``cycle_ms`` of the region's clock: 4–8 h for feedstock, 24–48 h for logistics slots) every
pool is cleared by the rule below, and each winner is told with an award that is a lease on its
units for the next cycle: a fencing token that grows per pool, and an ``expires_at`` one
``max_drift`` before the next boundary, so that by every clock within the drift bound this
cycle's winners have stopped before the next cycle's start (spec §6.4, as for any lease).

**Clearing rule** (uniform price, all-or-nothing bids):

1. Supply: the region's own ``capacity`` of the pool, offered at ``reserve`` per unit, plus
   every ask (units offered by nodes, with their reserve price). Ordered by price, then arrival.
2. Demand: every bid, ordered by price per unit (highest first), then arrival (first first).
3. Walk the bids in order. A bid is *accepted* if its whole quantity can be met from the
   cheapest remaining supply priced at or below its own price; it takes those units. Otherwise it
   is *rejected* and the walk goes on (a smaller bid further down may still fit).
4. One price for all: the highest price among rejected bids (the best offer that went
   unserved), but never above the lowest accepted bid and never below the dearest unit of supply
   used. With unit bids this is the (k+1)-th price auction, where bidding one's true value is
   the best strategy.

Every accepted bid pays the uniform price per unit; every ask whose units were used is paid it.
The units awarded never exceed the supply: the sum of accepted quantities is at most the sum of
supply by construction, and each supply unit is taken once.

**Old nodes** (DESIGN "Versions and N-2"). A version-1 :class:`LeaseClaim` reaching the region
takes part as a fixed-price bid for one unit of the pool named by its ``resource``, priced
``claim_price(priority)``. A version-1 renew is a bid for the next cycle by the same rule. The
winner of such a bid is answered with a plain version-1 :class:`LeaseGrant`, so a node that knows
nothing of auctions holds the resource with a fencing token like any lease; a bid that loses
stands for the next cycles until ``claim_ttl_ms``. A v1 release frees nothing before the cycle
ends: the unit was awarded for the cycle and returns to supply at the next clearing.

No I/O, no clock: ``receive`` and ``tick`` take ``now`` (the region's clock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from ..ids import ContentId
from ..messages.header import Header
from ..messages.v1 import LeaseClaim, LeaseGrant, LeaseRenew
from .freshness import DEFAULT_WINDOW, Freshness, FreshnessWindow, ReplayGuard

__all__ = [
    "DRAFT_WIRE",
    "Ask",
    "AuctionConfig",
    "AuctionRegion",
    "Award",
    "Bid",
    "Cleared",
    "Send",
    "clear",
]


@attrs.frozen(slots=True)
class Bid:
    """``quantity`` units of ``pool`` for the next cycle, at up to ``price`` per unit."""

    header: Header
    pool: str
    quantity: int
    price: int


@attrs.frozen(slots=True)
class Ask:
    """``quantity`` units of ``pool`` offered for the next cycle, at no less than ``price``."""

    header: Header
    pool: str
    quantity: int
    price: int


@attrs.frozen(slots=True)
class Award:
    """The region's answer to a winning bid: a lease on ``quantity`` units until ``expires_at``."""

    header: Header
    pool: str
    bidder: int
    quantity: int
    price: int  # the uniform price per unit
    fencing_token: int
    expires_at: int


#: Draft wire form (spec/v3/market.md, market.cddl): type code and body keys, for the codec to
#: take up when version 3 is released.
DRAFT_WIRE: Final[dict[type, tuple[int, tuple[tuple[int, str], ...]]]] = {
    Bid: (24, ((8, "pool"), (9, "quantity"), (10, "price"))),
    Ask: (25, ((8, "pool"), (9, "quantity"), (10, "price"))),
    Award: (
        26,
        (
            (8, "pool"),
            (9, "bidder"),
            (10, "quantity"),
            (11, "price"),
            (12, "fencing_token"),
            (13, "expires_at"),
        ),
    ),
}


@attrs.frozen(slots=True)
class Offer:
    """One side of a pool's book, as :func:`clear` sees it."""

    party: int  # node id; the region itself for its own capacity
    quantity: int
    price: int
    arrival: int


@attrs.frozen(slots=True)
class Cleared:
    """The outcome of one pool in one cycle (what a report or a ledger records)."""

    pool: str
    cycle_end: int
    price: int | None  # None: nothing traded
    accepted: tuple[Offer, ...]
    rejected: tuple[Offer, ...]
    supply_used: tuple[tuple[int, int], ...]  # (party, units) taken from each ask


@attrs.frozen(slots=True)
class Send:
    message: Award | LeaseGrant
    to: int


@attrs.frozen(slots=True)
class AuctionConfig:
    cycle_ms: int
    max_drift_ms: int
    reserve: int = 0  # the region's price per unit of its own capacity
    claim_price: Callable[[int], int] = lambda priority: 100 * (priority + 1)
    claim_ttl_ms: int = 3 * 86_400_000
    freshness: FreshnessWindow = DEFAULT_WINDOW


def clear(
    bids: list[Offer], asks: list[Offer]
) -> tuple[int | None, list[Offer], list[Offer], list[tuple[int, int]]]:
    """The clearing rule of the theory of operation: (price, accepted, rejected, supply used)."""
    supply = [
        [a.price, a.arrival, a.party, a.quantity]
        for a in sorted(asks, key=lambda a: (a.price, a.arrival))
    ]
    accepted: list[Offer] = []
    rejected: list[Offer] = []
    used: dict[int, int] = {}
    dearest = None
    for bid in sorted(bids, key=lambda b: (-b.price, b.arrival)):
        fitting = [s for s in supply if s[0] <= bid.price and s[3] > 0]
        if sum(s[3] for s in fitting) < bid.quantity:
            rejected.append(bid)
            continue
        need = bid.quantity
        for s in fitting:
            take = min(need, s[3])
            s[3] -= take
            need -= take
            used[s[2]] = used.get(s[2], 0) + take
            dearest = s[0] if dearest is None else max(dearest, s[0])
            if need == 0:
                break
        accepted.append(bid)
    if not accepted:
        return None, accepted, rejected, []
    lowest_accepted = min(b.price for b in accepted)
    best_unserved = max((b.price for b in rejected), default=0)
    price = max(min(best_unserved, lowest_accepted), dearest or 0)
    return price, accepted, rejected, sorted(used.items())


class AuctionRegion:
    """A region that allocates its pools by auction each cycle, and serves v1 claims too."""

    def __init__(
        self, node: int, capacity: dict[str, int], config: AuctionConfig, now: int
    ) -> None:
        self.node = node
        self.capacity = dict(capacity)
        self.config = config
        self.sequence = 0
        self.replay = ReplayGuard(config.freshness)
        self.cycle_end = now - now % config.cycle_ms + config.cycle_ms
        self._arrivals = 0
        self._bids: dict[
            tuple[int, str], tuple[Offer, ContentId | None, int]
        ] = {}  # → (bid, v1 claim, received)
        self._asks: dict[tuple[int, str], Offer] = {}
        self._tokens: dict[str, int] = {}
        self.results: list[Cleared] = []

    def next_deadline(self) -> int:
        return self.cycle_end

    def receive(self, message: object, content_id: ContentId, now: int) -> list[Send]:
        actions = self.tick(now)
        if not isinstance(message, Bid | Ask | LeaseClaim | LeaseRenew):
            return actions
        h = message.header
        pool = message.pool if isinstance(message, Bid | Ask) else message.resource
        if pool not in self.capacity:
            return actions
        if self.replay.check(h.issuer, pool, h.sequence, h.issued_at, now) is not Freshness.FRESH:
            return actions
        self.replay.acted(h.issuer, pool, h.sequence, h.issued_at)
        key = (h.issuer, pool)
        standing = self._bids.get(key)
        place = self._asks.get(key) if isinstance(message, Ask) else standing and standing[0]
        if place is None:
            self._arrivals += 1
            arrival = self._arrivals
        else:
            arrival = place.arrival  # a retry keeps its place in the order
        if isinstance(message, Ask):
            self._asks[key] = Offer(h.issuer, message.quantity, message.price, arrival)
        elif isinstance(message, Bid):
            self._bids[key] = (Offer(h.issuer, message.quantity, message.price, arrival), None, now)
        elif isinstance(message, LeaseClaim):
            price = self.config.claim_price(message.priority)
            self._bids[key] = (Offer(h.issuer, 1, price, arrival), content_id, now)
        elif standing is None:  # a v1 renew: a bid for the next cycle, at the claim price
            # (the grant it names stands in for the claim the answer refers to)
            price = self.config.claim_price(0)
            self._bids[key] = (Offer(h.issuer, 1, price, arrival), message.grant, now)
        return actions

    def tick(self, now: int) -> list[Send]:
        actions: list[Send] = []
        while now >= self.cycle_end:
            self._clear_cycle(self.cycle_end, actions)
            self.cycle_end += self.config.cycle_ms
        return actions

    def _clear_cycle(self, at: int, actions: list[Send]) -> None:
        expires_at = at + self.config.cycle_ms - self.config.max_drift_ms
        ttl = self.config.claim_ttl_ms
        for pool, capacity in self.capacity.items():
            bids = [b for (_, p), (b, _, _) in self._bids.items() if p == pool]
            asks = [a for (_, p), a in self._asks.items() if p == pool]
            if capacity:
                asks.append(Offer(self.node, capacity, self.config.reserve, 0))
            price, accepted, rejected, used = clear(bids, asks)
            self.results.append(
                Cleared(pool, at, price, tuple(accepted), tuple(rejected), tuple(used))
            )
            for bid in accepted:
                _, claim, _ = self._bids.pop((bid.party, pool))
                token = self._tokens[pool] = self._tokens.get(pool, 0) + 1
                self.sequence += 1
                header = Header(self.node, at, self.sequence, (claim,) if claim is not None else ())
                message: Award | LeaseGrant
                if claim is not None:
                    message = LeaseGrant(
                        header, pool, bid.party, claim, token, expires_at - at, expires_at
                    )
                else:
                    message = Award(
                        header, pool, bid.party, bid.quantity, price or 0, token, expires_at
                    )
                actions.append(Send(message, bid.party))
            for key in [
                k
                for k, (b, c, received) in self._bids.items()
                if k[1] == pool and (c is None or at - received > ttl)
            ]:
                del self._bids[key]  # v3 bids are for one cycle; v1 claims stand until their ttl
            for key in [k for k in self._asks if k[1] == pool]:
                del self._asks[key]
