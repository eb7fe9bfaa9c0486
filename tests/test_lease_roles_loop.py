"""The sans-IO lease roles in a plain loop (no Trio, no agent): the containment gate, revoking
one grant or every grant of a set of holders, and a start without replay marks.

The Trio node (``runtime/roles/lease.py``) and the simulator drive these same classes; here a
few lines of loop do what a driver does — seal each send with its writer's key (real
Ed25519), hand it to the addressee after a light time, tick each role at its deadline — so the
roles' own decisions are tested without either. Verifying envelopes is the agent's part and
out of scope here.
"""

from __future__ import annotations

import heapq
import itertools

from fleetwire.protocol.agent.handlers import Outgoing
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig
from fleetwire.protocol.coordination.lease_holder import HolderConfig, HolderState, NoticeKind
from fleetwire.protocol.coordination.lease_roles import (
    CellRole,
    LeaseRole,
    MemberRole,
    RegionRole,
    authority_resource,
)
from fleetwire.protocol.envelope import SignedMessage, seal
from fleetwire.protocol.messages import Header, LeaseClaim, LeaseGrant, LeaseRevoke

from .fleet import DAY, T0, node_key

REGION, CELL, M1, M2 = 1, 2, 10, 11
DRIFT = 500
WINDOW = FreshnessWindow(max_age_ms=DAY, max_skew_ms=DRIFT)
LIGHT_MS = 100


class Loop:
    """An embedder's loop in miniature: one heap of deliveries, the roles' deadlines."""

    def __init__(self, roles: dict[int, LeaseRole]) -> None:
        self.roles = roles
        self.now = T0
        self.sent: list[tuple[SignedMessage, int]] = []
        self._queue: list[tuple[int, int, int, SignedMessage]] = []
        self._order = itertools.count()
        self._sequence = dict.fromkeys(roles, 0)
        for node, role in roles.items():
            role.bind(lambda now, node=node: self._next_sequence(node, now))
        for node, role in roles.items():
            role.at(self.now)
            self.post(node, role.start(self.now))

    def _next_sequence(self, node: int, now: int) -> int:
        self._sequence[node] = max(self._sequence[node] + 1, now * 1024)
        return self._sequence[node]

    def post(self, node: int, sends: list[Outgoing]) -> None:
        for send in sends:
            signed = seal(send.message, node_key(node))
            self.sent.append((signed, send.to))
            heapq.heappush(self._queue, (self.now + LIGHT_MS, next(self._order), send.to, signed))

    def run(self, until: int) -> None:
        while True:
            due = [(d, n) for n, r in self.roles.items() if (d := r.deadline()) is not None]
            tick = min(due, default=None)
            arrival = self._queue[0][0] if self._queue else None
            if arrival is not None and arrival <= until and (tick is None or arrival <= tick[0]):
                self.now, _, to, signed = heapq.heappop(self._queue)
                role = self.roles[to]
                role.at(self.now)
                self.post(to, role.on_message(signed, self.now))
            elif tick is not None and tick[0] <= until:
                self.now = max(self.now, tick[0])
                role = self.roles[tick[1]]
                role.at(self.now)
                self.post(tick[1], role.on_tick(self.now))
            else:
                self.now = until
                return

    def act(self, node: int, sends: list[Outgoing]) -> None:
        self.post(node, sends)


def fleet(admits: set[int] | None = None) -> tuple[Loop, CellRole, MemberRole, MemberRole]:
    holder = HolderConfig(max_drift_ms=DRIFT, renew_lead_ms=5_000, retry_ms=2_000, freshness=WINDOW)
    cell = CellRole(
        CELL,
        cell=1,
        region=REGION,
        authority_config=AuthorityConfig(max_drift_ms=DRIFT, max_term_ms=20_000, freshness=WINDOW),
        holder_config=HolderConfig(
            max_drift_ms=DRIFT, renew_lead_ms=20_000, retry_ms=2_000, freshness=WINDOW
        ),
        authority_term_ms=60_000,
        last_epoch=0,
        admits=None if admits is None else admits.__contains__,
    )
    region = RegionRole(
        REGION, AuthorityConfig(max_drift_ms=DRIFT, max_term_ms=60_000, freshness=WINDOW)
    )
    m1, m2 = MemberRole(M1, (CELL,), holder), MemberRole(M2, (CELL,), holder)
    loop = Loop({REGION: region, CELL: cell, M1: m1, M2: m2})
    loop.run(T0 + 5_000)
    assert cell.active(loop.now)
    return loop, cell, m1, m2


def test_the_containment_gate_keeps_a_refused_node_from_the_resource() -> None:
    loop, cell, m1, m2 = fleet(admits={M1})
    loop.act(M2, m2.want("dock/1", 10_000, loop.now))
    loop.run(loop.now + 5_000)
    assert m2.use("dock/1", loop.now) is None and cell.authority.holder("dock/1") is None
    loop.act(M1, m1.want("dock/1", 10_000, loop.now))
    loop.run(loop.now + 5_000)
    assert m1.use("dock/1", loop.now) is not None
    assert [to for s, to in loop.sent if isinstance(s.message, LeaseGrant)].count(M2) == 0


def test_revoke_and_revoke_holders_withdraw_grants_and_the_holders_obey() -> None:
    loop, cell, m1, m2 = fleet()
    loop.act(M1, m1.want("dock/1", 10_000, loop.now))
    loop.act(M2, m2.want("dock/2", 10_000, loop.now))
    loop.run(loop.now + 5_000)
    assert m1.use("dock/1", loop.now) is not None and m2.use("dock/2", loop.now) is not None
    # One grant, by name; then every grant of the nodes a predicate names (an isolation).
    loop.act(CELL, cell.revoke("dock/1", loop.now, loop.now, reason="maintenance"))
    loop.act(CELL, cell.revoke_holders(lambda n: n == M2, loop.now, loop.now, reason="isolated"))
    revokes = [(s.message, to) for s, to in loop.sent if isinstance(s.message, LeaseRevoke)]
    assert [(m.resource, m.reason, to) for m, to in revokes] == [
        ("dock/1", "maintenance", M1),
        ("dock/2", "isolated", M2),
    ]
    loop.run(loop.now + 1_000)
    assert m1.use("dock/1", loop.now) is None and m2.use("dock/2", loop.now) is None
    assert {n.kind for m in (m1, m2) for n in m.notices} >= {NoticeKind.REVOKED}


def test_a_role_started_without_its_replay_marks_acts_on_nothing_issued_before() -> None:
    region = RegionRole(
        REGION, AuthorityConfig(max_drift_ms=DRIFT, max_term_ms=60_000, freshness=WINDOW)
    )
    loop = Loop({REGION: region})
    start = loop.now
    region.forget_before(start)

    def claim(issued_at: int, sequence: int) -> SignedMessage:
        header = Header(CELL, issued_at, sequence)
        return seal(LeaseClaim(header, authority_resource(1), 30_000), node_key(CELL))

    region.at(start)
    # Issued before the start, or within the skew after it: it may be from before a restart.
    assert region.on_message(claim(start - 1, 1), start) == []
    assert region.on_message(claim(start + DRIFT - 1, 2), start) == []
    (grant,) = region.on_message(claim(start + DRIFT, 3), start)
    assert isinstance(grant.message, LeaseGrant) and grant.to == CELL


def test_the_member_role_claims_again_after_a_revoke() -> None:
    loop, cell, m1, _ = fleet()
    loop.act(M1, m1.want("dock/1", 10_000, loop.now))
    loop.run(loop.now + 5_000)
    first = m1.use("dock/1", loop.now)
    loop.act(CELL, cell.revoke("dock/1", loop.now + 1_000, loop.now))
    loop.run(loop.now + 5_000)
    assert m1.use("dock/1", loop.now) is None
    loop.act(M1, m1.want("dock/1", 10_000, loop.now))
    loop.run(loop.now + 5_000)
    again = m1.use("dock/1", loop.now)
    assert first is not None and again is not None and again > first
    assert m1.holder.state("dock/1") in (HolderState.HOLDING, HolderState.RENEWING)
