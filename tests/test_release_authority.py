"""Control authority: revocation orders (honoured however late), policy tables, the table."""

from __future__ import annotations

import heapq
import itertools

import attrs
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import LocalProtocolError, SignatureInvalid, UntrustedKey
from fleetwire.protocol.release.authority import (
    TRANSITIONS,
    AuthorityGranted,
    AuthorityTable,
    AuthorityWithdrawn,
    Mode,
)
from fleetwire.protocol.release.errors import (
    AuthorityRevoked,
    PolicyStale,
    ReleaseFormatError,
    ReleaseNotInstalled,
    ReleaseSignerNotAuthorised,
    StageOrderStale,
)
from fleetwire.protocol.release.manifest import Manifest, Version
from fleetwire.protocol.release.messages import stage_order, verify_rollout_stage
from fleetwire.protocol.release.orders import (
    PolicyTable,
    RevocationOrder,
    verify_policy,
    verify_revocation,
)
from fleetwire.protocol.release.rollout import GrantAuthority, InstallShadow, RollBack, RolloutPlan
from hypothesis import given
from hypothesis import strategies as st

from .fleet import DAY, T0, node_key
from .release_support import PIPELINE, make_release, release_trust


def releases() -> tuple[Manifest, Manifest, Manifest]:
    old, _ = make_release(version=Version(2, 4, 1), seed=b"2.4.1")
    new, _ = make_release(version=Version(3, 0, 0), seed=b"3.0.0")
    other, _ = make_release(lineage="A", version=Version(7, 0, 0), seed=b"A7")
    return old, new, other


def running(now: int = T0) -> tuple[AuthorityTable, Manifest, Manifest, Manifest]:
    """B 2.4.1 on standby, B 3.0.0 active, A 7.0.0 active."""
    old, new, other = releases()
    table = AuthorityTable()
    for manifest in (old, new, other):
        assert table.install(manifest, now).mode is Mode.SHADOW
    table.grant(old.release_id, now)
    table.grant(new.release_id, now)
    table.grant(other.release_id, now)
    return table, old, new, other


# --- the orders' bytes ---------------------------------------------------------------------


def test_orders_and_policy_tables_round_trip_and_verify() -> None:
    trust = release_trust()
    key = node_key(PIPELINE)
    order = RevocationOrder(7, T0, PIPELINE, "B", Version(3, 0, 0), "divergent thermal model")
    assert RevocationOrder.from_payload(order.to_payload()) == order
    assert verify_revocation(order.sign(key), trust, T0) == order
    whole = RevocationOrder(8, T0, PIPELINE, "B")
    assert verify_revocation(whole.sign(key), trust, T0) == whole
    table = PolicyTable(3, T0, PIPELINE, {"market-bids": True, "auditor-v2": False}, (("B", None),))
    assert PolicyTable.from_payload(table.to_payload()) == table
    assert verify_policy(table.sign(key), trust, T0) == table


def test_orders_from_a_node_without_the_release_role_are_refused_with_a_code() -> None:
    trust = release_trust()
    order = RevocationOrder(1, T0, 2, "B")
    with pytest.raises(ReleaseSignerNotAuthorised) as caught:
        verify_revocation(order.sign(node_key(2)), trust, T0)
    assert caught.value.code == "release-signer-unauthorised"
    with pytest.raises(ReleaseSignerNotAuthorised):
        verify_policy(PolicyTable(1, T0, 2).sign(node_key(2)), trust, T0)
    with pytest.raises(UntrustedKey, match="issuer"):
        verify_revocation(RevocationOrder(1, T0, 2, "B").sign(node_key(PIPELINE)), trust, T0)


def test_an_order_cannot_pass_for_a_policy_table() -> None:
    order = RevocationOrder(1, T0, PIPELINE, "B").sign(node_key(PIPELINE))
    with pytest.raises(SignatureInvalid):
        verify_policy(order, release_trust(), T0)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({1: 1, 2: 0, 3: 9, 4: "B", 5: [3, 0]}, "[major, minor, patch]"),
        ({1: 1, 2: 0, 3: 9, 4: "B", 7: 1}, "not known"),
        ({1: 1, 2: 0, 3: 9}, "lacks field 4"),
        ({1: 1, 2: 0, 3: 9, 4: "B", 6: "x" * 300}, "bytes"),
    ],
)
def test_bad_orders_are_refused(fields: dict[int, object], words: str) -> None:
    with pytest.raises(ReleaseFormatError, match=words.replace("[", r"\[")):
        RevocationOrder.from_payload(cbor.encode(fields))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({1: 1, 2: 0, 3: 9, 4: {"f": 1}, 5: []}, "true or false"),
        ({1: 1, 2: 0, 3: 9, 4: {"": True}, 5: []}, "1..64"),
        ({1: 1, 2: 0, 3: 9, 4: {}, 5: [[]]}, "lineage, ? version"),
        ({1: 1, 2: 0, 3: 9, 4: [], 5: []}, "map"),
    ],
)
def test_bad_policy_tables_are_refused(fields: dict[int, object], words: str) -> None:
    with pytest.raises(ReleaseFormatError, match=words.replace("?", r"\?")):
        PolicyTable.from_payload(cbor.encode(fields))


@given(st.binary(max_size=200))
def test_order_and_policy_decoders_meet_hostile_bytes_with_typed_errors(data: bytes) -> None:
    for decode in (RevocationOrder.from_payload, PolicyTable.from_payload):
        try:
            decode(data)
        except ReleaseFormatError:
            pass


# --- the table -----------------------------------------------------------------------------


def test_granting_a_new_release_puts_the_old_one_on_standby() -> None:
    table, old, new, other = running()
    assert table.active("B").release_id == new.release_id  # type: ignore[union-attr]
    assert table.installed()[old.release_id].mode is Mode.STANDBY
    assert table.active("A").release_id == other.release_id  # type: ignore[union-attr]


def test_revoking_the_active_version_falls_back_to_standby_and_keeps_the_bits() -> None:
    table, old, new, _ = running()
    order = RevocationOrder(1, T0, PIPELINE, "B", Version(3, 0, 0))
    actions = table.revoke(order, T0 + 1)
    assert actions == [
        AuthorityWithdrawn(new.release_id, "B", Version(3, 0, 0), "revoked by order 1"),
        AuthorityGranted(old.release_id, "B", Version(2, 4, 1)),
    ]
    assert table.installed()[new.release_id].mode is Mode.REVOKED  # still installed
    assert len(table.installed()) == 3
    assert table.revoke(order, T0 + 2) == []  # a replay changes nothing
    with pytest.raises(AuthorityRevoked) as caught:
        table.grant(new.release_id, T0 + 3)
    assert caught.value.code == "authority-revoked"
    assert table.active("B").release_id == old.release_id  # type: ignore[union-attr]


def test_revoking_a_whole_lineage_leaves_it_without_authority_and_others_untouched() -> None:
    table, _, _, other = running()
    actions = table.revoke(RevocationOrder(1, T0, PIPELINE, "B"), T0)
    assert [type(a) for a in actions] == [AuthorityWithdrawn]
    assert table.active("B") is None
    assert table.active("A").release_id == other.release_id  # type: ignore[union-attr]
    assert {r.mode for r in table.installed().values() if r.lineage == "B"} == {Mode.REVOKED}
    # A release of the lineage installed later arrives revoked too.
    later, _ = make_release(version=Version(3, 0, 1), seed=b"3.0.1")
    assert table.install(later, T0).mode is Mode.REVOKED


def test_a_shadow_release_that_is_revoked_is_never_granted() -> None:
    old, new, _ = releases()
    table = AuthorityTable()
    table.install(old, T0)
    table.grant(old.release_id, T0)
    table.install(new, T0)
    assert table.revoke(RevocationOrder(2, T0, PIPELINE, "B", Version(3, 0, 0)), T0) == []
    with pytest.raises(AuthorityRevoked):
        table.grant(new.release_id, T0)
    assert table.active("B").release_id == old.release_id  # type: ignore[union-attr]


def test_granting_what_is_not_installed_is_refused() -> None:
    _, new, _ = releases()
    with pytest.raises(ReleaseNotInstalled) as caught:
        AuthorityTable().grant(new.release_id, T0)
    assert caught.value.code == "release-not-installed"


def test_an_older_policy_is_refused_with_a_code_and_nothing_is_lost() -> None:
    table, *_ = running()
    before = table.installed()
    table.apply_policy(PolicyTable(5, T0, PIPELINE, {"market-bids": True}), T0)
    assert table.flag("market-bids") and not table.flag("unknown")
    with pytest.raises(PolicyStale) as caught:
        table.apply_policy(PolicyTable(4, T0 + DAY, PIPELINE, {"market-bids": False}), T0 + DAY)
    assert caught.value.code == "policy-stale"
    assert "older than table 5" in caught.value.message
    with pytest.raises(PolicyStale, match="two different"):
        table.apply_policy(PolicyTable(5, T0, PIPELINE, {"market-bids": False}), T0)
    assert table.apply_policy(PolicyTable(5, T0, PIPELINE, {"market-bids": True}), T0) == []
    assert table.flag("market-bids")
    assert table.installed() == before


def test_a_policy_table_carries_revocations_a_node_missed() -> None:
    table, old, new, _ = running()
    actions = table.apply_policy(PolicyTable(6, T0, PIPELINE, {}, (("B", Version(3, 0, 0)),)), T0)
    assert actions[-1] == AuthorityGranted(old.release_id, "B", Version(2, 4, 1))
    assert table.is_revoked("B", Version(3, 0, 0))
    # A newer table that no longer lists it does not lift the revocation.
    table.apply_policy(PolicyTable(7, T0, PIPELINE, {}), T0)
    with pytest.raises(AuthorityRevoked):
        table.grant(new.release_id, T0)


def test_the_mode_table_refuses_what_it_does_not_name() -> None:
    table, old, *_ = running()
    with pytest.raises(LocalProtocolError, match="no 'supersede'"):
        table._set(table.installed()[old.release_id], "supersede")  # standby: nothing to supersede
    assert TRANSITIONS[Mode.REVOKED] == {"revoke": Mode.REVOKED}


# --- a cell 10 virtual days into a partition ------------------------------------------------


def test_a_revocation_reaches_a_partitioned_cell_ten_days_late_and_takes_effect_on_arrival() -> (
    None
):
    """The release pipeline signs an order at T0; the link to the cell is down for ten days,
    and the bundle waits in the region's store. Each node of the cell applies it the moment
    it arrives, checked against the real trust store at its arrival time."""
    trust = release_trust(nodes=range(1, 6))
    cell = list(range(1, 6))
    tables = {node: running()[0] for node in cell}
    _, old, new, _ = running()
    envelope = RevocationOrder(
        11, T0, PIPELINE, "B", Version(3, 0, 0), "shadow outputs diverge in cell 4"
    ).sign(node_key(PIPELINE))
    heal = T0 + 10 * DAY
    seq = itertools.count()
    heap: list[tuple[int, int, int, bytes]] = []
    # Store-and-forward: the region holds the bundle until the contact returns, then the
    # coordinator (node 1) relays it through the cell a few seconds apart.
    heapq.heappush(heap, (heal, next(seq), 1, envelope))
    effective: dict[int, int] = {}
    while heap:
        now, _, node, data = heapq.heappop(heap)
        # Until the order arrives, the node still runs 3.0.0 with authority: it cannot know.
        assert tables[node].active("B").release_id == new.release_id  # type: ignore[union-attr]
        order = verify_revocation(data, trust, now)
        actions = tables[node].revoke(order, now)
        assert actions[0] == AuthorityWithdrawn(
            new.release_id, "B", Version(3, 0, 0), "revoked by order 11"
        )
        effective[node] = now
        if node == 1:
            for member in cell[1:]:
                heapq.heappush(heap, (now + 3_000 * member, next(seq), member, data))
    assert effective[1] == heal
    for node in cell:
        assert effective[node] - T0 >= 10 * DAY
        assert tables[node].active("B").release_id == old.release_id  # type: ignore[union-attr]
        assert tables[node].installed()[new.release_id].mode is Mode.REVOKED
        assert len(tables[node].installed()) == 3  # nothing installed lost


# --- property: the table's invariants -------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["install", "grant", "roll-back", "revoke", "revoke-lineage", "policy"]),
        st.integers(0, 5),
    ),
    max_size=40,
)


@given(_ops)
def test_property_one_active_release_per_lineage_never_a_revoked_one_and_nothing_lost(
    ops: list[tuple[str, int]],
) -> None:
    manifests = [
        make_release(
            lineage=lineage, version=Version(major, 0, 0), seed=b"%s%d" % (lineage.encode(), major)
        )[0]
        for lineage in ("A", "B")
        for major in (1, 2, 3)
    ]
    table = AuthorityTable()
    installed: set[object] = set()
    for serial, (op, index) in enumerate(ops, start=1):
        manifest = manifests[index]
        try:
            if op == "install":
                table.install(manifest, T0)
                installed.add(manifest.release_id)
            elif op == "grant":
                table.grant(manifest.release_id, T0)
            elif op == "roll-back":
                table.roll_back(manifest.lineage, manifest.version, T0)
            elif op == "revoke":
                table.revoke(
                    RevocationOrder(serial, T0, PIPELINE, manifest.lineage, manifest.version), T0
                )
            elif op == "revoke-lineage":
                table.revoke(RevocationOrder(serial, T0, PIPELINE, manifest.lineage), T0)
            else:
                table.apply_policy(
                    PolicyTable(serial, T0, PIPELINE, {}, ((manifest.lineage, manifest.version),)),
                    T0,
                )
        except (AuthorityRevoked, ReleaseNotInstalled):
            pass
        assert set(table.installed()) == installed
        for lineage in ("A", "B"):
            active = [
                r
                for r in table.installed().values()
                if r.lineage == lineage and r.mode is Mode.ACTIVE
            ]
            assert len(active) <= 1
            for release in active:
                assert not table.is_revoked(release.lineage, release.version)


def test_a_roll_back_returns_authority_and_the_rolled_back_release_is_no_fallback() -> None:
    table, old, new, _ = running()
    actions = table.roll_back("B", Version(2, 4, 1), T0)
    assert actions == [
        AuthorityWithdrawn(new.release_id, "B", Version(3, 0, 0), "rolled back"),
        AuthorityGranted(old.release_id, "B", Version(2, 4, 1)),
    ]
    assert table.installed()[new.release_id].mode is Mode.SHADOW
    assert table.roll_back("B", Version(2, 4, 1), T0) == []
    # Revoking 2.4.1 now leaves B without authority: 3.0.0 is not a fallback.
    table.revoke(RevocationOrder(1, T0, PIPELINE, "B", Version(2, 4, 1)), T0)
    assert table.active("B") is None
    with pytest.raises(AuthorityRevoked):
        table.roll_back("B", Version(2, 4, 1), T0)
    with pytest.raises(ReleaseNotInstalled):
        table.roll_back("B", Version(1, 0, 0), T0)


# --- rollout-stage orders on a node -------------------------------------------------------


def _plan_for(new: Manifest) -> RolloutPlan:
    return RolloutPlan(
        release_id=new.release_id,
        lineage="B",
        version=new.version,
        previous=Version(2, 4, 1),
        canary=4,
        waves=(frozenset({5}),),
        soak=DAY,
    )


def test_stage_orders_from_the_rollout_act_on_the_nodes_of_their_cells_only() -> None:
    old, new, _ = releases()
    plan = _plan_for(new)
    trust = release_trust()
    key = node_key(PIPELINE)
    canary, elsewhere = AuthorityTable(), AuthorityTable()
    for table in (canary, elsewhere):
        table.install(old, T0)
        table.grant(old.release_id, T0)
        table.install(new, T0)
    orders = [
        stage_order(action, plan, serial=serial, issuer=PIPELINE, now=T0)
        for serial, action in enumerate(
            [InstallShadow(0, frozenset({4})), GrantAuthority(0, frozenset({4}))], start=1
        )
    ]
    for order in orders:
        received = verify_rollout_stage(order.sign(key), trust, T0)
        canary.apply_stage(received, 4, T0)
        assert elsewhere.apply_stage(received, 5, T0) == []
    assert canary.active("B").release_id == new.release_id  # type: ignore[union-attr]
    assert elsewhere.active("B").release_id == old.release_id  # type: ignore[union-attr]
    assert canary.apply_stage(orders[1], 4, T0) == []  # the same order again: nothing


def test_a_grant_replayed_after_a_roll_back_is_refused_with_a_code() -> None:
    old, new, _ = releases()
    plan = _plan_for(new)
    table = AuthorityTable()
    table.install(old, T0)
    table.grant(old.release_id, T0)
    table.install(new, T0)
    grant = stage_order(GrantAuthority(0, frozenset({4})), plan, serial=2, issuer=PIPELINE, now=T0)
    back = stage_order(
        RollBack(frozenset({4}), Version(2, 4, 1)), plan, serial=3, issuer=PIPELINE, now=T0
    )
    table.apply_stage(grant, 4, T0)
    assert table.apply_stage(back, 4, T0)[-1] == AuthorityGranted(
        old.release_id, "B", Version(2, 4, 1)
    )
    with pytest.raises(StageOrderStale) as caught:
        table.apply_stage(grant, 4, T0 + DAY)
    assert caught.value.code == "rollout-stage-stale"
    assert table.active("B").release_id == old.release_id  # type: ignore[union-attr]


def test_a_roll_back_to_nothing_leaves_the_lineage_without_authority() -> None:
    _, new, _ = releases()
    plan = attrs.evolve(_plan_for(new), previous=None)
    table = AuthorityTable()
    table.install(new, T0)
    table.apply_stage(
        stage_order(GrantAuthority(0, frozenset({4})), plan, serial=1, issuer=PIPELINE, now=T0),
        4,
        T0,
    )
    order = stage_order(RollBack(frozenset({4}), None), plan, serial=2, issuer=PIPELINE, now=T0)
    assert order.to is None
    actions = table.apply_stage(order, 4, T0)
    assert actions == [AuthorityWithdrawn(new.release_id, "B", Version(3, 0, 0), "rolled back")]
    assert table.active("B") is None
    assert table.installed()[new.release_id].mode is Mode.SHADOW
