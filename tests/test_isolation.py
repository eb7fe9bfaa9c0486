"""Isolation orders at the boundary: only a region coordinator's signed, fresh, authorised order
severs a cell or region; its bundles are refused; lifting restores (real Ed25519 and trust store)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.coordination.isolation import (
    ORDER_AAD,
    IsolationBoundary,
    IsolationOrder,
    Lifted,
    NotAuthorised,
    OrderAction,
    OrderInvalid,
    ReclaimReservations,
    RevokeLeases,
    Severed,
    StaleOrder,
    Target,
    issue_order,
)
from fleetwire.protocol.cose import sign1
from fleetwire.protocol.envelope import IssuerMismatch
from fleetwire.protocol.errors import FleetwireError, LocalProtocolError, SignatureInvalid
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import Scope
from fleetwire.protocol.trust import (
    KeyRevoked,
    Role,
    TrustStore,
    WrongRole,
    issue_credential,
    issue_revocations,
)
from hypothesis import given
from hypothesis import strategies as st

DAY = 86_400_000
NOW = 20 * DAY
ROOT = SigningKey.from_seed(b"\x01" * 32)
REGION1 = SigningKey.from_seed(b"\x31" * 32)  # region coordinator of region 1, node 801
REGION2 = SigningKey.from_seed(b"\x32" * 32)  # region coordinator of region 2, node 802
WORKER = SigningKey.from_seed(b"\x10" * 32)  # a plain node, 7
CELLS = {10: 1, 11: 1, 20: 2, 21: 2}


def trust() -> TrustStore:
    store = TrustStore([ROOT.public])
    for serial, (key, node, roles, region) in enumerate(
        [
            (REGION1, 801, [Role.NODE, Role.REGION_COORDINATOR], 1),
            (REGION2, 802, [Role.REGION_COORDINATOR], 2),
            (WORKER, 7, [Role.NODE], None),
        ],
        start=1,
    ):
        store.add_credential(
            issue_credential(
                ROOT, node=node, public_key=key.public, roles=roles, not_before=DAY,
                not_after=90 * DAY, serial=serial, region=region,
            ),
            NOW,
        )  # fmt: skip
    return store


def boundary(store: TrustStore | None = None) -> IsolationBoundary:
    b = IsolationBoundary(store or trust(), CELLS, max_age_ms=3_600_000, max_drift_ms=60_000)
    for cell in CELLS:
        for i in range(5):
            b.place(cell * 100 + i, cell)
    return b


def order(
    action: OrderAction = OrderAction.SEVER,
    scope: Scope = Scope.CELL,
    target: int = 11,
    *,
    issuer: int = 801,
    at: int = NOW,
    sequence: int = 1,
    key: SigningKey = REGION1,
) -> bytes:
    return issue_order(
        IsolationOrder(issuer, at, sequence, action, Target(scope, target), "suspect"), key
    )


def test_a_sever_refuses_the_cell_and_lifting_restores_it() -> None:
    b = boundary()
    assert all(b.admits(n) for n in (1100, 1000, 2000))
    actions = b.order(order(), NOW + 5)
    target = Target(Scope.CELL, 11)
    assert [type(a) for a in actions] == [Severed, RevokeLeases, ReclaimReservations]
    assert all(getattr(a, "target", None) == target for a in actions)
    assert not b.admits(1100) and not b.admits(1104)
    assert b.admits(1000) and b.admits(2000) and b.admits(99_999)  # the rest is undisturbed
    assert b.order(order(sequence=2), NOW + 6) == []  # severed already: nothing more
    (lifted,) = b.order(order(OrderAction.LIFT, sequence=3), NOW + 7)
    assert isinstance(lifted, Lifted) and b.admits(1100) and b.severed() == set()
    assert b.order(order(OrderAction.LIFT, sequence=4), NOW + 8) == []


def test_a_region_severs_another_region_with_all_its_cells() -> None:
    b = boundary()
    b.order(order(scope=Scope.REGION, target=2), NOW)
    assert not b.admits(2000) and not b.admits(2104) and b.admits(1000) and b.admits(1100)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: order(key=WORKER, issuer=7), WrongRole),  # a plain node may not order
        (lambda: order(key=REGION2, issuer=802), NotAuthorised),  # cell 11 is in region 1
        (lambda: order(scope=Scope.REGION, target=1), NotAuthorised),  # its own region
        (lambda: order(issuer=802), IssuerMismatch),  # signed by 801, claims 802
        (lambda: order(at=NOW - 3_600_001), StaleOrder),
        (lambda: order(at=NOW + 60_001), StaleOrder),
        # The same payload signed as a plain message (no order AAD) does not verify as an order.
        (
            lambda: sign1(
                IsolationOrder(801, NOW, 1, OrderAction.SEVER, Target(Scope.CELL, 11)).to_payload(),
                REGION1,
            ),
            SignatureInvalid,
        ),
        (lambda: sign1(cbor.encode({1: 801}), REGION1, external_aad=ORDER_AAD), OrderInvalid),
        (lambda: order()[:-1] + bytes([order()[-1] ^ 1]), SignatureInvalid),
    ],
)
def test_orders_without_authority_freshness_or_signature_are_refused(
    make: Any, error: type[Exception]
) -> None:
    b = boundary()
    with pytest.raises(error):
        b.order(make(), NOW)
    assert b.severed() == set() and b.admits(1100)


REGION3 = SigningKey.from_seed(b"\x33" * 32)  # region coordinator of region 3, node 803


def test_only_the_region_that_severed_may_lift() -> None:
    store = trust()
    store.add_credential(
        issue_credential(
            ROOT, node=803, public_key=REGION3.public, roles=[Role.REGION_COORDINATOR],
            not_before=DAY, not_after=90 * DAY, serial=9, region=3,
        ),
        NOW,
    )  # fmt: skip
    b = boundary(store)
    b.order(order(scope=Scope.REGION, target=2), NOW)
    lift = order(OrderAction.LIFT, Scope.REGION, 2, issuer=803, key=REGION3, sequence=1)
    with pytest.raises(NotAuthorised, match="severed by region 1, not 3"):
        b.order(lift, NOW + 1)
    assert not b.admits(2000)
    # The refused lift did not use up region 3's sequence number; region 1 lifts.
    assert b.order(order(OrderAction.LIFT, Scope.REGION, 2, sequence=2), NOW + 2)
    assert b.admits(2000)
    again = order(OrderAction.SEVER, Scope.REGION, 2, issuer=803, key=REGION3, sequence=1)
    assert b.order(again, NOW + 3) and not b.admits(2000)


def test_a_replayed_sever_cannot_undo_a_later_lift() -> None:
    b = boundary()
    sever = order(sequence=5)
    b.order(sever, NOW)
    b.order(order(OrderAction.LIFT, sequence=6), NOW + 1)
    with pytest.raises(StaleOrder, match="not above 6"):
        b.order(sever, NOW + 2)
    assert b.admits(1100)


def test_a_revoked_coordinator_can_no_longer_order() -> None:
    store = trust()
    store.apply_revocations(
        issue_revocations(ROOT, serial=1, issued_at=NOW, kids=[REGION1.kid]), NOW
    )
    with pytest.raises(KeyRevoked):
        boundary(store).order(order(), NOW)


def test_orders_are_built_only_for_cells_and_regions() -> None:
    with pytest.raises(LocalProtocolError):
        Target(Scope.NODE, 7)
    with pytest.raises(LocalProtocolError, match="reason"):
        issue_order(
            IsolationOrder(801, NOW, 1, OrderAction.SEVER, Target(Scope.CELL, 1), ""), REGION1
        )


@pytest.mark.parametrize(
    "payload",
    [
        {1: 801, 2: NOW, 3: 1, 4: 0, 5: 0, 6: 11},  # scope node
        {1: 801, 2: NOW, 3: 1, 4: 2, 5: 1, 6: 11},  # unknown action
        {1: 801, 2: NOW, 3: 1, 4: 0, 5: 1},  # no target
        {1: 801, 2: NOW, 3: 1, 4: 0, 5: 1, 6: "11"},
        {1: 801, 2: NOW, 3: 1, 4: 0, 5: 1, 6: 11, 7: ""},
        {1: 801, 2: NOW, 3: 1, 4: 0, 5: 1, 6: 11, 8: 0},
        [1, 2],
    ],
)
def test_malformed_orders_are_refused_with_their_code(payload: Any) -> None:
    with pytest.raises(OrderInvalid) as info:
        boundary().order(sign1(cbor.encode(payload), REGION1, external_aad=ORDER_AAD), NOW)
    assert info.value.code == "isolation-order-invalid"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_typed_refusals(data: bytes) -> None:
    with pytest.raises(FleetwireError):
        boundary().order(data, NOW)
    with pytest.raises(FleetwireError):
        boundary().order(sign1(data, REGION1, external_aad=ORDER_AAD), NOW)


def test_payload_round_trip() -> None:
    o = IsolationOrder(801, NOW, 9, OrderAction.LIFT, Target(Scope.REGION, 2), "all clear")
    assert IsolationOrder.from_payload(o.to_payload()) == o


def test_a_region_is_cut_off_within_one_cycle_at_every_gateway_and_lifting_restores() -> None:
    """Sans-IO rehearsal of the fleet scenario: region 1's three gateways get the order after
    different light delays; traffic from region 2 flows every minute throughout."""
    cycle = 4 * 3_600_000  # the shortest auction cycle the seeds name
    delays = {"g1": 2_000, "g2": 45_000, "g3": 600_000}
    gateways = {name: boundary() for name in delays}
    issued = NOW
    sever = order(scope=Scope.REGION, target=2, at=issued, sequence=10)
    lift = order(OrderAction.LIFT, Scope.REGION, 2, at=issued + 2 * cycle, sequence=11)
    accepted: dict[str, list[int]] = {name: [] for name in delays}
    for t in range(issued - 600_000, issued + 3 * cycle, 60_000):
        for name, gateway in gateways.items():
            for when, signed in ((issued, sever), (issued + 2 * cycle, lift)):
                if when + delays[name] <= t < when + delays[name] + 60_000:
                    gateway.order(signed, t)
            if gateway.admits(2003):  # a bundle from a node of cell 20, region 2
                accepted[name].append(t)
            assert gateway.admits(1003)  # region 1's own traffic is never disturbed
    for name, times in accepted.items():
        last_before_lift = max(t for t in times if t < issued + 2 * cycle)
        assert last_before_lift - issued < delays[name] + 60_000 <= cycle
        assert not [t for t in times if issued + delays[name] + 60_000 <= t < issued + 2 * cycle]
        assert any(t >= issued + 2 * cycle + delays[name] + 60_000 for t in times)  # restored


def test_a_node_placed_in_a_region_but_no_cell_is_refused_while_the_region_is_severed() -> None:
    b = boundary()
    b.place_in_region(2, 2)  # region 2's coordinator: in the region, in none of its cells
    assert b.admits(2)
    b.order(order(scope=Scope.REGION, target=2), NOW)
    assert not b.admits(2) and b.admits(1) and b.admits(99_999)


def test_the_agents_admission_refuses_a_source_its_boundary_does_not_admit() -> None:
    from fleetwire.protocol.agent.admission import Admitted, Refusal, admit
    from fleetwire.protocol.agent.bundling import FCP_SERVICE, TRUST_SERVICE, message_bundle
    from fleetwire.protocol.envelope import seal
    from fleetwire.protocol.messages import ExceptionReport, Header
    from fleetwire.protocol.replay import ReplayGuard

    store = trust()
    b = boundary(store)
    b.place(7, 11)  # the worker, in cell 11 of region 1

    def deliver(sequence: int) -> Admitted | Refusal:
        report = ExceptionReport(Header(7, NOW, sequence), 1, 2, Scope.NODE, 7)
        bundle = message_bundle(
            seal(report, WORKER).envelope, source=7, destination=9, created_at=NOW,
            sequence=sequence, lifetime_ms=60_000,
        )  # fmt: skip
        verdict = admit(
            bundle, NOW, service=FCP_SERVICE, trust_service=TRUST_SERVICE, trust=store,
            guard=ReplayGuard(), boundary=b.admits,
        )  # fmt: skip
        assert not isinstance(verdict, bytes)
        return verdict  # type: ignore[return-value]

    assert isinstance(deliver(1), Admitted)
    b.order(order(), NOW)  # cell 11 severed
    refused = deliver(2)
    assert isinstance(refused, Refusal) and refused.code == "source-isolated"
    b.order(order(OrderAction.LIFT, sequence=2), NOW)
    assert isinstance(deliver(3), Admitted)


def test_an_order_from_a_verified_envelope_gets_the_same_checks() -> None:
    """faults.md §4 on the version-2 message: the node verified the envelope; the boundary
    still checks the signer's role now, that it is the order's issuer, and its authority."""
    b = boundary()
    sever = IsolationOrder(801, NOW, 1, OrderAction.SEVER, Target(Scope.CELL, 11), "suspect")
    order_id = ContentId.of(b"the signed message")
    with pytest.raises(WrongRole):  # a plain node's key
        b.order_message(sever, WORKER.kid, order_id, NOW)
    with pytest.raises(IssuerMismatch):  # region 2's key, claiming to be 801
        b.order_message(sever, REGION2.kid, order_id, NOW)
    foreign = attrs.evolve(sever, issuer=802)  # region 2 severing a cell of region 1
    with pytest.raises(NotAuthorised):
        b.order_message(foreign, REGION2.kid, order_id, NOW)
    assert b.severed() == set()
    severed, *_ = b.order_message(sever, REGION1.kid, order_id, NOW + 5)
    assert isinstance(severed, Severed) and severed.order_id == order_id
    assert not b.admits(1100) and b.admits(2000)
