"""A cell in virtual time: region, active and standby coordinators, holders, resources, faults.

A small deterministic model for the lease tests (no Trio, no sockets: the machines are
sans-IO, so a loop of events in true time drives them). Every node has its own clock, an offset
from true time; every message is a real v1 lease message with its real content id; the network
loses, delays, duplicates and reorders (independent random delays), and partitions; the active
coordinator can crash and come back without its state. Every grant, use, release and clock
reading is written to a trace for the invariant checker.

Roles:
- region (node 100): a :class:`LeaseAuthority` without mandate for the one resource
  ``authority/cell`` — the authority lease; its fencing token is the cell authority's epoch.
- coordinators (nodes 1 and 2): each always wants the authority lease (a :class:`LeaseHolder`);
  the one that holds it acts as the cell's :class:`LeaseAuthority` until its usable end. The
  other waits in the region's queue: that is the standby, and it takes over when the active one
  falls silent (its authority lease lapses at the region and drains, then the queue moves).
- holders (nodes 10…): want a resource now and then, use it in back-to-back operations while
  :meth:`LeaseHolder.use` allows, release it after a while. Operations reach the resource after
  an optional pause and pass its :class:`FencingGuard` (unless the guard is switched off).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from fleetwire.protocol.coordination import invariants as inv
from fleetwire.protocol.coordination.fencing import FencingGuard
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.lease_authority import (
    AuthorityConfig,
    LeaseAuthority,
)
from fleetwire.protocol.coordination.lease_authority import Send as AuthoritySend
from fleetwire.protocol.coordination.lease_holder import (
    HolderConfig,
    HolderState,
    LeaseHolder,
    Notice,
    NoticeKind,
)
from fleetwire.protocol.coordination.lease_holder import Send as HolderSend
from fleetwire.protocol.messages import LeaseGrant, LeaseRelease, content_id

REGION = 100
COORDINATORS = (1, 2)
AUTHORITY = "authority/cell"
TICK = 20  # ms of true time between ticks of every node
OP_MS = 60  # one operation on a resource
MAX_DRIFT = 300  # ms: the fleet's bound on the difference between any two clocks


class Network:
    """Loss, delay, duplication (so reordering) and partitions, all seeded."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.loss = 0.0
        self.duplicate = 0.0
        self.delay = (5, 200)
        self.cut: set[frozenset[int]] = set()
        self.isolated: set[int] = set()

    def blocked(self, a: int, b: int) -> bool:
        return a in self.isolated or b in self.isolated or frozenset((a, b)) in self.cut

    def copies(self, a: int, b: int) -> list[int]:
        """Delays of the copies of one message from ``a`` to ``b`` that will arrive."""
        if self.blocked(a, b) or self.rng.random() < self.loss:
            return []
        n = 2 if self.rng.random() < self.duplicate else 1
        return [self.rng.randint(*self.delay) for _ in range(n)]


class Cell:
    """The whole cell and its trace."""

    def __init__(
        self,
        seed: int,
        holders: int = 4,
        resources: int = 2,
        offsets: dict[int, int] | None = None,
        fencing: bool = True,
        authority_term: int = 20_000,
        lease_term: int = 6_000,
    ) -> None:
        self.rng = random.Random(seed)
        self.trace: list[inv.Record] = []
        self.clocks: list[tuple[int, int, int]] = []
        self.granted_at: dict[tuple[int, str], int] = {}  # last grant notice, true time
        self._events: list[tuple[int, int, Callable[[], None]]] = []
        self._order = 0
        self.net = Network(random.Random(seed + 1))
        self.now = 1_000_000  # true time (clocks behind it stay positive)
        self.fencing = fencing
        self.lease_term = lease_term
        self.resources = [f"dock/{i}" for i in range(resources)]
        self.holders = list(range(10, 10 + holders))
        self.offsets = {n: 0 for n in (REGION, *COORDINATORS, *self.holders)}
        self.offsets.update(offsets or {})
        window = FreshnessWindow(max_age_ms=600_000, max_skew_ms=4 * MAX_DRIFT)
        self.auth_config = AuthorityConfig(
            max_drift_ms=MAX_DRIFT, max_term_ms=authority_term, min_term_ms=200, freshness=window
        )
        self.cell_config = AuthorityConfig(
            max_drift_ms=MAX_DRIFT, max_term_ms=lease_term, min_term_ms=200, freshness=window
        )
        # Renew early enough for a round trip of the slowest link (2 x 800 ms) and some retries.
        self.holder_config = HolderConfig(
            max_drift_ms=MAX_DRIFT,
            renew_lead_ms=2_500,
            retry_ms=300,
            min_use_ms=OP_MS,
            freshness=window,
        )
        self.coordinator_config = HolderConfig(
            max_drift_ms=MAX_DRIFT,
            renew_lead_ms=5_000,
            retry_ms=300,
            min_use_ms=OP_MS,
            freshness=window,
        )
        self.region = LeaseAuthority(REGION, self.auth_config, owns=lambda r: r == AUTHORITY)
        self.sequences: dict[int, int] = {}
        self.last_epoch: dict[int, int] = {}
        self.crashed: set[int] = set()
        self.coord_authority: dict[int, LeaseAuthority] = {}
        self.coord_holder: dict[int, LeaseHolder] = {}
        for c in COORDINATORS:
            self._boot(c)
        self.members = {h: LeaseHolder(h, COORDINATORS, self.holder_config) for h in self.holders}
        self.hold_ms: dict[tuple[int, str], int] = {}  # how long a holder keeps a grant
        self.hold_until: dict[tuple[int, str], int] = {}  # holder's clock, set on the grant
        self.busy_until: dict[int, int] = {}  # true time: the holder's operation in progress
        self.pause: dict[
            int, int
        ] = {}  # holder → ms its next operation takes to reach the resource
        self.frozen_until: dict[int, int] = {}  # holder → true time its process resumes
        self.guard = FencingGuard()

    # --- clocks and nodes ---------------------------------------------------------

    def local(self, node: int) -> int:
        return self.now + self.offsets[node]

    def _boot(self, c: int) -> None:
        """A coordinator (re)starts: durable sequence numbers and last epoch, nothing else."""
        seq = self.sequences.get(c, 0)
        self.coord_holder[c] = LeaseHolder(c, (REGION,), self.coordinator_config, sequence=seq)
        self.coord_authority[c] = LeaseAuthority(
            c,
            self.cell_config,
            owns=lambda r: r.startswith("dock/"),
            epoch=self.last_epoch.get(c, 0),
            mandate_until=0,
            sequence=seq + 1_000_000,
        )
        self._dispatch(c, self.coord_holder[c].want(AUTHORITY, 60_000, self.local(c)))

    def crash(self, c: int) -> None:
        self.sequences[c] = max(self.coord_holder[c].sequence, self.coord_authority[c].sequence)
        self.crashed.add(c)

    def restart(self, c: int) -> None:
        if c in self.crashed:
            self.crashed.discard(c)
            self._boot(c)

    def active(self) -> list[int]:
        return [
            c
            for c in COORDINATORS
            if c not in self.crashed and self.coord_authority[c].active(self.local(c))
        ]

    # --- the event loop -----------------------------------------------------------

    def _at(self, when: int, fn: Callable[[], None]) -> None:
        self._order += 1
        heapq.heappush(self._events, (when, self._order, fn))

    def run(self, duration: int) -> None:
        end = self.now + duration
        next_tick = self.now - self.now % TICK + TICK
        while True:
            upcoming = self._events[0][0] if self._events else end + 1
            when = min(upcoming, next_tick)
            if when > end:
                break
            self.now = when
            if upcoming <= next_tick:
                _, _, fn = heapq.heappop(self._events)
                fn()
            else:
                self._tick_all()
                next_tick += TICK
        self.now = end

    def _send(self, src: int, dst: int, message: Any) -> None:
        cid = content_id(message)
        for delay in self.net.copies(src, dst):
            self._at(self.now + delay, lambda m=message, c=cid: self._deliver(src, dst, m, c))

    def _deliver(self, src: int, dst: int, message: Any, cid: Any) -> None:
        if dst in self.crashed or self.net.blocked(src, dst):
            return
        if self.frozen_until.get(dst, 0) > self.now:  # a stalled process reads it on waking
            self._at(self.frozen_until[dst], lambda: self._deliver(src, dst, message, cid))
            return
        now = self.local(dst)
        if dst == REGION:
            self._dispatch(dst, self.region.receive(message, cid, now))
        elif dst in COORDINATORS:
            if src == REGION:
                self._dispatch(dst, self.coord_holder[dst].receive(message, cid, now))
            else:
                self._dispatch(dst, self.coord_authority[dst].receive(message, cid, now))
        else:
            self._dispatch(dst, self.members[dst].receive(message, cid, now))

    def _dispatch(self, node: int, actions: list[Any]) -> None:
        local = self.local(node)
        for action in actions:
            if isinstance(action, AuthoritySend | HolderSend):
                m = action.message
                if isinstance(m, LeaseGrant):
                    self.trace.append(
                        inv.Granted(
                            m.resource,
                            m.holder,
                            m.fencing_token,
                            m.expires_at,
                            node,
                            self.now,
                            local,
                        )
                    )
                elif isinstance(m, LeaseRelease):
                    self.trace.append(
                        inv.Released(m.resource, node, m.fencing_token, self.now, local)
                    )
                self._send(node, action.to, m)
            elif isinstance(action, Notice):
                self._notice(node, action)

    def _notice(self, node: int, notice: Notice) -> None:
        if node in COORDINATORS and notice.resource == AUTHORITY:
            if notice.kind in (NoticeKind.GRANTED, NoticeKind.RENEWED):
                authority = self.coord_authority[node]
                epoch = notice.fencing_token
                authority.assume(epoch, notice.usable_until, self.local(node))
                if authority.epoch == epoch and authority.active(self.local(node)):
                    self.last_epoch[node] = epoch
                else:
                    # An epoch whose grants this coordinator lost: let it run out, claim anew.
                    self._dispatch(
                        node, self.coord_holder[node].let_go(AUTHORITY, self.local(node))
                    )
            return
        key = (node, notice.resource)
        if notice.kind is NoticeKind.GRANTED:
            self.granted_at[key] = self.now
            if key in self.hold_ms and key not in self.hold_until:
                self.hold_until[key] = self.local(node) + self.hold_ms[key]

    def _tick_all(self) -> None:
        self.clocks.append((REGION, self.now, self.local(REGION)))
        self._dispatch(REGION, self.region.tick(self.local(REGION)))
        for c in COORDINATORS:
            if c in self.crashed:
                continue
            now = self.local(c)
            holder = self.coord_holder[c]
            self._dispatch(c, holder.tick(now))
            if holder.state(AUTHORITY) is HolderState.IDLE:
                self._dispatch(c, holder.want(AUTHORITY, 60_000, now))
            self._dispatch(c, self.coord_authority[c].tick(now))
        for h, member in self.members.items():
            if self.frozen_until.get(h, 0) > self.now:
                continue
            now = self.local(h)
            self._dispatch(h, member.tick(now))
            for resource in self.resources:
                key = (h, resource)
                if key in self.hold_until and now >= self.hold_until[key]:
                    del self.hold_until[key], self.hold_ms[key]
                    self._dispatch(h, member.release(resource, now))
                    continue
                self._operate(h, member, resource, now)

    def _operate(self, h: int, member: LeaseHolder, resource: str, now: int) -> None:
        if self.busy_until.get(h, -1) > self.now:
            return
        token = member.use(resource, now, OP_MS)
        if token is None:
            return
        self.busy_until[h] = self.now + OP_MS
        pause = self.pause.pop(h, 0)
        if pause:
            self.frozen_until[h] = self.now + pause
        start, local = self.now + pause, now
        self._at(start, lambda: self._execute(h, resource, token, start, local))

    def _execute(self, h: int, resource: str, token: int, start: int, local: int) -> None:
        if self.fencing and not self.guard.admit(resource, token):
            return
        self.trace.append(inv.Used(resource, h, token, start, start + OP_MS, local))

    # --- what the tests do --------------------------------------------------------

    def want(self, h: int, resource: str, hold_ms: int) -> None:
        member = self.members[h]
        if member.state(resource) is not HolderState.IDLE:
            return
        now = self.local(h)
        self.hold_ms[(h, resource)] = hold_ms
        self._dispatch(
            h, member.want(resource, self.lease_term, now, priority=self.rng.randint(0, 2))
        )

    def freeze(self, h: int, ms: int) -> None:
        """Holder ``h`` stalls for ``ms`` between deciding its next operation and performing it
        (a paused process): the operation reaches the resource ``ms`` late."""
        self.pause[h] = ms

    def revoke(self, resource: str) -> None:
        for c in self.active():
            self._dispatch(
                c, self.coord_authority[c].revoke(resource, self.local(c) + 500, self.local(c))
            )

    def heal(self) -> None:
        self.net.cut.clear()
        self.net.isolated.clear()
        self.net.loss = self.net.duplicate = 0.0
        self.net.delay = (5, 200)
        for c in list(self.crashed):
            self.restart(c)

    def check(self) -> inv.Report:
        return inv.check(self.trace, self.clocks)
