"""Hierarchical reservations: a region hands cells blocks of a pool; a cell sub-leases inside them.

Theory of operation
-------------------
A *pool* is a divisible resource a region accounts for — a share of a feedstock body in kg,
hours of a dock's time — with a fixed ``capacity``. The region's :class:`ReservationAuthority`
grants cells *blocks*: ``amount`` units of a pool until ``expires_at``. A block is a lease on
part of a pool and follows the lease rules of spec §6.4 to the letter: a fencing token that only
grows per pool, renewal with the same token and a later ``expires_at``, release, and its units
stay committed until ``expires_at + max_drift`` by the region's clock unless released. The
region never commits more than the pool holds: the sum of the blocks it counts is at most the
capacity at every instant.

A cell's :class:`CellReservations` holds its blocks like a lease holder (usable until
``expires_at - max_drift`` by its own clock, renewed ``renew_lead_ms`` early) and *sub-leases*
units to its members. A sub-lease fits in one block: the sub-leases of a block never add up to
more than its amount (a sub-lease counts until its ``expires_at + max_drift`` unless released),
and a sub-lease expires no later than its block's usable end, so by every clock within the
drift bound it ends before the region could hand those units to anyone else. The invariant
checker's "sub-leases stay within their block" states exactly this.

**Conservative mode** (DESIGN "Fleet shape"). A cell that has heard nothing from its region for
``silence_ms`` (its clock) enters CONSERVATIVE: it still sub-leases inside the blocks it holds,
but asks the region for nothing new (a request that does not fit is refused, not forwarded).
The first message from the region returns it to NORMAL, and pending demand is asked for again.
A cell with nothing to ask renews its blocks early after ``probe_ms`` of silence, so the
region's answer keeps it in touch.
The mode moves only through :data:`MODE_TRANSITIONS`.

Messages here are value classes with a :class:`Header` (issuer, sequence, issued_at), judged by
a :class:`ReplayGuard` like every lease message; their wire form belongs to protocol version 2.
"""

from __future__ import annotations

import enum
import heapq
from typing import Final

import attrs

from ..messages.header import Header
from .freshness import DEFAULT_WINDOW, Freshness, FreshnessWindow, ReplayGuard

__all__ = [
    "DRAFT_WIRE",
    "MODE_TRANSITIONS",
    "BlockGrant",
    "BlockRelease",
    "BlockRenew",
    "BlockRequest",
    "CellReservations",
    "Mode",
    "ModeChanged",
    "ModeInput",
    "ReservationAuthority",
    "ReservationConfig",
    "Send",
    "SubLease",
    "SubLeaseRefusal",
    "SubLeaseRefused",
    "diagram",
]


# --- messages (protocol version 2) ---------------------------------------------------------


@attrs.frozen(slots=True)
class BlockRequest:
    """A cell asks for ``amount`` units of ``pool`` for ``term_ms``."""

    header: Header
    pool: str
    amount: int
    term_ms: int


@attrs.frozen(slots=True)
class BlockGrant:
    """The region reserves ``amount`` units of ``pool`` for ``cell`` until ``expires_at``."""

    header: Header
    pool: str
    block: str  # "<pool>#<token>": names the block in renewals and releases
    cell: int
    amount: int
    fencing_token: int
    expires_at: int


@attrs.frozen(slots=True)
class BlockRenew:
    header: Header
    pool: str
    block: str
    fencing_token: int
    term_ms: int


@attrs.frozen(slots=True)
class BlockRelease:
    header: Header
    pool: str
    block: str
    fencing_token: int


Message = BlockRequest | BlockGrant | BlockRenew | BlockRelease

#: Draft wire form (spec/v2/reservations.md, reservations.cddl): type code and body keys, for
#: the codec to take up when version 2 is released.
DRAFT_WIRE: Final[dict[type, tuple[int, tuple[tuple[int, str], ...]]]] = {
    BlockRequest: (16, ((8, "pool"), (9, "amount"), (10, "term_ms"))),
    BlockGrant: (
        17,
        (
            (8, "pool"),
            (9, "block"),
            (10, "cell"),
            (11, "amount"),
            (12, "fencing_token"),
            (13, "expires_at"),
        ),
    ),
    BlockRenew: (18, ((8, "pool"), (9, "block"), (10, "fencing_token"), (11, "term_ms"))),
    BlockRelease: (19, ((8, "pool"), (9, "block"), (10, "fencing_token"))),
}


@attrs.frozen(slots=True)
class Send:
    message: Message
    to: int


@attrs.frozen(slots=True)
class SubLease:
    """``amount`` units of ``block`` for ``holder`` until ``expires_at`` (the cell's clock)."""

    id: int
    block: str
    pool: str
    holder: int
    amount: int
    expires_at: int


class SubLeaseRefusal(enum.Enum):
    WAITING = "waiting"  # nothing fits yet: the region was asked for more
    CONSERVATIVE = "conservative"  # nothing fits, and we ask the region for nothing new


@attrs.frozen(slots=True)
class SubLeaseRefused:
    holder: int
    pool: str
    amount: int
    reason: SubLeaseRefusal


class Mode(enum.Enum):
    NORMAL = "normal"
    CONSERVATIVE = "conservative"


class ModeInput(enum.Enum):
    SILENCE = "silence"  # nothing from the region for silence_ms
    CONTACT = "contact"  # a message from the region


MODE_TRANSITIONS: Final[dict[Mode, dict[ModeInput, Mode]]] = {
    Mode.NORMAL: {ModeInput.SILENCE: Mode.CONSERVATIVE, ModeInput.CONTACT: Mode.NORMAL},
    Mode.CONSERVATIVE: {ModeInput.CONTACT: Mode.NORMAL, ModeInput.SILENCE: Mode.CONSERVATIVE},
}


def diagram() -> str:
    """The mode table as a Mermaid state diagram (the table is the source of truth)."""
    lines = ["stateDiagram-v2", "    [*] --> normal"]
    for mode, moves in MODE_TRANSITIONS.items():
        for what, target in moves.items():
            lines.append(f"    {mode.value} --> {target.value}: {what.value}")
    return "\n".join(lines)


@attrs.frozen(slots=True)
class ModeChanged:
    mode: Mode
    since: int


@attrs.frozen(slots=True)
class ReservationConfig:
    max_drift_ms: int
    max_term_ms: int
    renew_lead_ms: int = 0
    retry_ms: int = 60_000
    silence_ms: int = 86_400_000
    # Renew early when nothing was heard for this long: the answer is the contact that keeps a
    # cell out of conservative mode (0: half of silence_ms).
    probe_ms: int = 0
    freshness: FreshnessWindow = DEFAULT_WINDOW


# --- the region ------------------------------------------------------------------------------


class _Block:
    __slots__ = ("amount", "cell", "expires_at", "lapsed", "pool", "token")

    def __init__(self, pool: str, cell: int, amount: int, token: int, expires_at: int) -> None:
        self.pool, self.cell, self.amount, self.token = pool, cell, amount, token
        self.expires_at = expires_at
        self.lapsed = False


class ReservationAuthority:
    """The region's side: blocks of pools, never more than a pool holds (spec §6.4 rules)."""

    def __init__(self, node: int, pools: dict[str, int], config: ReservationConfig) -> None:
        self.node = node
        self.capacity = dict(pools)
        self.config = config
        self.sequence = 0
        self.replay = ReplayGuard(config.freshness)
        self._blocks: dict[str, _Block] = {}
        self._tokens: dict[str, int] = {}
        self._deadlines: list[tuple[int, str, int]] = []

    def committed(self, pool: str) -> int:
        """Units of ``pool`` counted as reserved now (lapsed blocks count until they drain)."""
        return sum(b.amount for b in self._blocks.values() if b.pool == pool)

    def blocks(self) -> dict[str, tuple[int, int, int]]:
        """block → (cell, amount, expires_at) of every block counted."""
        return {k: (b.cell, b.amount, b.expires_at) for k, b in self._blocks.items()}

    def receive(self, message: Message, now: int) -> list[Send]:
        actions = self.tick(now)
        h = message.header
        purpose = message.pool
        if (
            self.replay.check(h.issuer, purpose, h.sequence, h.issued_at, now)
            is not Freshness.FRESH
        ):
            return actions
        if isinstance(message, BlockRequest):
            pool = message.pool
            if pool not in self.capacity or message.amount <= 0:
                return actions
            if self.committed(pool) + message.amount > self.capacity[pool]:
                return actions  # not enough left: the cell asks again later
            self.replay.acted(h.issuer, purpose, h.sequence, h.issued_at)
            token = self._tokens[pool] = self._tokens.get(pool, 0) + 1
            expires_at = now + min(message.term_ms, self.config.max_term_ms)
            block = _Block(pool, h.issuer, message.amount, token, expires_at)
            name = f"{pool}#{token}"
            self._blocks[name] = block
            heapq.heappush(self._deadlines, (expires_at, name, token))
            actions.append(Send(self._grant(name, block, now), h.issuer))
        elif isinstance(message, BlockRenew):
            b = self._blocks.get(message.block)
            if b is None or b.lapsed or b.cell != h.issuer or b.token != message.fencing_token:
                return actions
            self.replay.acted(h.issuer, purpose, h.sequence, h.issued_at)
            expires_at = now + min(message.term_ms, self.config.max_term_ms)
            if expires_at > b.expires_at:
                b.expires_at = expires_at
                heapq.heappush(self._deadlines, (expires_at, message.block, b.token))
            actions.append(Send(self._grant(message.block, b, now), h.issuer))
        elif isinstance(message, BlockRelease):
            b = self._blocks.get(message.block)
            if b is None or b.cell != h.issuer or b.token != message.fencing_token:
                return actions
            self.replay.acted(h.issuer, purpose, h.sequence, h.issued_at)
            del self._blocks[message.block]
        return actions

    def tick(self, now: int) -> list[Send]:
        drift = self.config.max_drift_ms
        while self._deadlines and self._deadlines[0][0] <= now:
            when, name, token = heapq.heappop(self._deadlines)
            b = self._blocks.get(name)
            if b is None or b.token != token:
                continue
            if not b.lapsed and when == b.expires_at:
                b.lapsed = True  # no renewal from here; the units stay counted a while
                heapq.heappush(self._deadlines, (b.expires_at + drift, name, token))
            elif b.lapsed and when == b.expires_at + drift:
                del self._blocks[name]
        return []

    def _grant(self, name: str, b: _Block, now: int) -> BlockGrant:
        self.sequence += 1
        return BlockGrant(
            header=Header(self.node, now, self.sequence),
            pool=b.pool,
            block=name,
            cell=b.cell,
            amount=b.amount,
            fencing_token=b.token,
            expires_at=b.expires_at,
        )


# --- the cell --------------------------------------------------------------------------------


class _Held:
    __slots__ = ("amount", "expires_at", "next_renew", "pool", "token", "usable_until")

    def __init__(self, grant: BlockGrant, usable_until: int) -> None:
        self.pool, self.amount, self.token = grant.pool, grant.amount, grant.fencing_token
        self.expires_at, self.usable_until = grant.expires_at, usable_until
        self.next_renew = 0


CellAction = Send | SubLease | SubLeaseRefused | ModeChanged


class CellReservations:
    """A cell's blocks and the sub-leases it grants inside them."""

    def __init__(self, node: int, region: int, config: ReservationConfig, now: int) -> None:
        self.node, self.region, self.config = node, region, config
        self.sequence = 0
        self.replay = ReplayGuard(config.freshness)
        self.mode = Mode.NORMAL
        self.last_heard = now
        self._blocks: dict[str, _Held] = {}
        self._subs: dict[int, tuple[SubLease, int]] = {}  # id → (sub-lease, counted until)
        self._next_sub = 0
        self._asked: dict[str, int] = {}  # pool → units asked for and not yet granted

    # --- inspection -------------------------------------------------------------------

    def blocks(self) -> dict[str, tuple[int, int]]:
        """block → (amount, usable_until) of the blocks we may sub-lease in."""
        return {k: (b.amount, b.usable_until) for k, b in self._blocks.items()}

    def in_use(self, block: str, now: int) -> int:
        return sum(s.amount for s, until in self._subs.values() if s.block == block and until > now)

    # --- inputs -----------------------------------------------------------------------

    def receive(self, message: Message, now: int) -> list[CellAction]:
        actions: list[CellAction] = []
        h = message.header
        if h.issuer != self.region:
            return actions
        fresh = self.replay.check(h.issuer, message.pool, h.sequence, h.issued_at, now)
        if fresh is not Freshness.FRESH:
            return actions
        self.last_heard = max(self.last_heard, now)
        self._set_mode(ModeInput.CONTACT, now, actions)
        if isinstance(message, BlockGrant) and message.cell == self.node:
            self.replay.acted(h.issuer, message.pool, h.sequence, h.issued_at)
            usable_until = message.expires_at - self.config.max_drift_ms
            held = self._blocks.get(message.block)
            if held is not None and held.token == message.fencing_token:
                held.expires_at = max(held.expires_at, message.expires_at)
                held.usable_until = max(held.usable_until, usable_until)
            elif held is None and usable_until > now:
                self._blocks[message.block] = _Held(message, usable_until)
                asked = self._asked.get(message.pool, 0)
                self._asked[message.pool] = max(0, asked - message.amount)
        actions.extend(self.tick(now))
        return actions

    def sublease(
        self, holder: int, pool: str, amount: int, term_ms: int, now: int
    ) -> list[CellAction]:
        """Grant ``holder`` ``amount`` units of ``pool`` inside a block, or say why not."""
        actions = self.tick(now)
        for name, b in sorted(self._blocks.items(), key=lambda kv: kv[1].usable_until):
            if b.pool != pool or b.usable_until <= now:
                continue
            if self.in_use(name, now) + amount > b.amount:
                continue
            self._next_sub += 1
            expires_at = min(now + term_ms, b.usable_until)  # inside the block, by every clock
            sub = SubLease(self._next_sub, name, pool, holder, amount, expires_at)
            self._subs[sub.id] = (sub, expires_at + self.config.max_drift_ms)
            actions.append(sub)
            return actions
        if self.mode is Mode.CONSERVATIVE:
            actions.append(SubLeaseRefused(holder, pool, amount, SubLeaseRefusal.CONSERVATIVE))
            return actions
        if self._asked.get(pool, 0) < amount:
            self._asked[pool] = self._asked.get(pool, 0) + amount
            request = BlockRequest(self._header(now), pool, amount, self.config.max_term_ms)
            actions.append(Send(request, self.region))
        actions.append(SubLeaseRefused(holder, pool, amount, SubLeaseRefusal.WAITING))
        return actions

    def end_sublease(self, sub_id: int) -> None:
        """The member released its sub-lease: its units are free at once."""
        self._subs.pop(sub_id, None)

    def tick(self, now: int) -> list[CellAction]:
        actions: list[CellAction] = []
        if now - self.last_heard >= self.config.silence_ms:
            self._set_mode(ModeInput.SILENCE, now, actions)
        for sub_id in [i for i, (_, until) in self._subs.items() if until <= now]:
            del self._subs[sub_id]
        probe = self.config.probe_ms or self.config.silence_ms // 2
        for name in list(self._blocks):
            b = self._blocks[name]
            if now >= b.usable_until:
                del self._blocks[name]
                continue
            due = (
                now >= b.usable_until - self.config.renew_lead_ms or now - self.last_heard >= probe
            )
            if due and now >= b.next_renew:
                b.next_renew = now + self.config.retry_ms
                renew = BlockRenew(
                    self._header(now), b.pool, name, b.token, self.config.max_term_ms
                )
                actions.append(Send(renew, self.region))
        return actions

    def _set_mode(self, what: ModeInput, now: int, actions: list[CellAction]) -> None:
        mode = MODE_TRANSITIONS[self.mode][what]
        if mode is not self.mode:
            self.mode = mode
            actions.append(ModeChanged(mode, now))
            if mode is Mode.NORMAL:
                self._asked.clear()  # ask again for what is still wanted

    def _header(self, now: int) -> Header:
        self.sequence += 1
        return Header(self.node, now, self.sequence)
