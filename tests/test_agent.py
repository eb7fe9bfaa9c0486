"""The sans-IO bundle agent: every decision, without Trio (protocol/agent)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fleetwire.protocol.agent.actions import (
    Action,
    Deliver,
    DeliveryRefused,
    Discarded,
    RevocationsApplied,
    Sent,
    StatusReportReceived,
    TransferAccepted,
    TransferRefused,
    Transmit,
    WakeAt,
)
from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.bundling import (
    DELIVERED,
    FORWARDED,
    HOP_LIMIT,
    inspect_bundle,
    message_bundle,
    status_report_for,
    stored,
)
from fleetwire.protocol.agent.contacts import Contact, ContactPlan
from fleetwire.protocol.agent.states import (
    TRANSITIONS,
    AgentStateError,
    BundleEvent,
    BundleState,
    next_state,
)
from fleetwire.protocol.agent.store import Quota
from fleetwire.protocol.bpv7 import (
    BundleFlags,
    DtnEid,
    HopCount,
    StatusReason,
    decode_bundle,
    encode_bundle,
    hop_count_block,
)
from fleetwire.protocol.envelope import seal
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.protocol.trust import issue_revocations

from .fleet import DAY, ROOT, T0, node_key, trust_for

HOUR = 3_600_000
A, B, C = 1, 2, 3


def agent(
    node: int, store: MemoryAgentStore | None = None, trust=None, **kw: object  # type: ignore[no-untyped-def]
) -> BundleAgent:
    trust = trust or trust_for([A, B, C])
    config = AgentConfig(node=node, key=node_key(node), trust=trust, **kw)  # type: ignore[arg-type]
    made = BundleAgent(config, store or MemoryAgentStore())
    made.start(T0)
    return made


def claim(sequence: int = 1, issuer: int = A, resource: str = "dock/7") -> LeaseClaim:
    return LeaseClaim(
        header=Header(issuer=issuer, issued_at=T0, sequence=sequence), resource=resource,
        term_ms=HOUR,
    )  # fmt: skip


def only(actions: Sequence[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [action for action in actions if isinstance(action, kind)]


def one(actions: Sequence[Action], kind: type):  # type: ignore[no-untyped-def,type-arg]
    found = only(actions, kind)
    assert len(found) == 1, actions
    return found[0]


def bundle_bytes(to: int, *, sequence: int = 1, lifetime: int = DAY, created: int = T0,
                 reports: BundleFlags = BundleFlags.NONE) -> bytes:  # fmt: skip
    signed = seal(claim(sequence), node_key(A))
    bundle = message_bundle(
        signed.envelope, source=A, destination=to, created_at=created, sequence=sequence,
        lifetime_ms=lifetime, reports=reports,
    )  # fmt: skip
    return encode_bundle(bundle)


# --- the transition table -------------------------------------------------------------


def test_transition_table_covers_every_state_and_ends_in_gone() -> None:
    assert set(TRANSITIONS) == set(BundleState)
    for state, moves in TRANSITIONS.items():
        if state is not BundleState.GONE:
            assert moves.get(BundleEvent.EXPIRE) is BundleState.GONE, state
    assert next_state(BundleState.IN_FLIGHT, BundleEvent.CUSTODY) is BundleState.GONE
    with pytest.raises(AgentStateError, match="no transition from gone on hand"):
        next_state(BundleState.GONE, BundleEvent.HAND)
    with pytest.raises(AgentStateError):
        next_state(BundleState.PARKED, BundleEvent.TRANSMIT)  # never sent without a route


# --- forward ----------------------------------------------------------------------------


def test_send_to_a_linked_neighbour_transmits_with_hop_counted_and_previous_node() -> None:
    a = agent(A)
    a.link_up(B, T0)
    actions = a.send(claim(), B, T0)
    sent = one(actions, Sent)
    transmit = one(actions, Transmit)
    assert transmit.link == B and transmit.bundle == sent.bundle
    bundle = decode_bundle(transmit.data)
    assert bundle.hop_count == HopCount(HOP_LIMIT, 1)
    assert bundle.previous_node is not None and str(bundle.previous_node) == f"ipn:{A}.0"
    assert a.held_state(sent.bundle) is BundleState.IN_FLIGHT
    a.transmitted(B, sent.bundle, T0 + 5)
    assert a.held_state(sent.bundle) is None
    record = a.store.get(sent.bundle)
    assert record is not None and record.next_hop == FORWARDED and record.data == b""
    assert record.expires_at == T0 + 5 + a.config.forwarded_memory_ms
    assert a.stats.forwarded == 1


def test_a_resend_after_forwarding_is_a_duplicate_not_a_second_forward() -> None:
    b = agent(B)
    b.link_up(C, T0)
    data = bundle_bytes(C)
    first = b.receive(data, A, T0)
    transmit = one(first, Transmit)
    b.transmitted(C, transmit.bundle, T0 + 1)
    again = b.receive(data, A, T0 + 2)  # A crashed before deleting its copy
    assert one(again, TransferAccepted).link == A
    assert not only(again, Transmit)
    assert b.stats.duplicates == 1 and b.stats.forwarded == 1


def test_relay_chain_delivers_once_and_acknowledgement_tombstones() -> None:
    a, b, c = agent(A, static_routes={C: B}), agent(B), agent(C, static_routes={A: B})
    a.link_up(B, T0)
    b.link_up(A, T0)
    b.link_up(C, T0)
    a_out = one(a.send(claim(), C, T0, reports=BundleFlags.REPORT_DELIVERY), Transmit)
    assert a_out.link == B
    b_actions = b.receive(a_out.data, A, T0 + 10)
    assert one(b_actions, TransferAccepted).link == A
    b_out = one(b_actions, Transmit)
    assert b_out.link == C
    c_actions = c.receive(b_out.data, B, T0 + 20)
    delivery = one(c_actions, Deliver)
    assert delivery.message.message == claim() and delivery.from_link == B
    assert c.held_state(delivery.delivery) is BundleState.HANDED
    # Not acknowledged: the bundle stays held, bytes and all.
    held = c.store.get(delivery.delivery)
    assert held is not None and held.data
    c.link_up(B, T0 + 25)
    ack = c.acknowledge(delivery.delivery, T0 + 30)
    record = c.store.get(delivery.delivery)
    assert record is not None and record.next_hop == DELIVERED
    seen, _ = c.store.remembered()
    assert [s.sequence for s in seen] == [1]  # replay memory kept before the tombstone
    report = one(ack, Transmit)  # the delivery report, toward A via B
    assert report.link == B and decode_bundle(report.data).primary.is_admin_record
    # A late copy of the same bundle is a duplicate: no second delivery.
    assert not only(c.receive(b_out.data, B, T0 + 40), Deliver)
    # The report reaches A through B.
    b_report = one(b.receive(report.data, C, T0 + 50), Transmit)
    a_link = a.receive(b_report.data, B, T0 + 60)
    assert one(a_link, StatusReportReceived).report.delivered.asserted


def test_without_a_link_the_bundle_parks_and_goes_when_the_link_comes_up() -> None:
    a = agent(A, static_routes={C: B})
    sent = one(a.send(claim(), C, T0), Sent)
    assert a.held_state(sent.bundle) is BundleState.PARKED
    transmit = one(a.link_up(B, T0 + 100), Transmit)
    assert transmit.link == B and transmit.bundle == sent.bundle


def test_hierarchical_default_route_goes_up_to_the_parent() -> None:
    a = agent(A, parents={A: B, C: B})
    a.link_up(B, T0)
    assert one(a.send(claim(), C, T0), Transmit).link == B


def test_contact_plan_parks_until_the_contact_and_wakes_for_it() -> None:
    opens = T0 + HOUR
    plan = ContactPlan([Contact(A, B, opens, opens + HOUR, 1_000_000, 500)])
    a = agent(A, contact_plan=plan)
    actions = a.send(claim(), B, T0)
    sent = one(actions, Sent)
    assert a.held_state(sent.bundle) is BundleState.PARKED
    assert actions[-1] == WakeAt(opens)
    transmit = one(a.link_up(B, opens), Transmit)
    assert transmit.bundle == sent.bundle


def test_never_back_to_the_previous_node() -> None:
    b = agent(B)
    b.link_up(A, T0)  # A is B's only neighbour: a static route back, excluded
    actions = b.receive(bundle_bytes(C), A, T0)
    assert not only(actions, Transmit)
    assert b.stats.accepted == 1


def test_link_down_in_flight_routes_again_and_retransmits_on_the_next_link_up() -> None:
    a = agent(A)
    a.link_up(B, T0)
    first = one(a.send(claim(), B, T0), Transmit)
    assert not only(a.link_down(B, T0 + 1), Transmit)
    assert a.held_state(first.bundle) is BundleState.QUEUED  # B is still its next hop
    again = one(a.link_up(B, T0 + 2), Transmit)
    assert again.bundle == first.bundle
    # A stale answer for the first attempt after the link is gone changes nothing harmful.
    a.transmitted(B, again.bundle, T0 + 3)
    assert a.held_state(first.bundle) is None


def test_refused_by_the_neighbour_waits_before_trying_again() -> None:
    a = agent(A, refused_retry_ms=30_000)
    a.link_up(B, T0)
    first = one(a.send(claim(), B, T0), Transmit)
    actions = a.transmit_failed(B, first.bundle, T0 + 1, refused=True)
    assert not only(actions, Transmit)
    assert WakeAt(T0 + 1 + 30_000) in actions
    assert one(a.poll(T0 + 1 + 30_000), Transmit).bundle == first.bundle


def test_no_ack_link_retains_then_releases_or_resends() -> None:
    a = agent(A, retain_unconfirmed_ms=10_000)
    a.link_up(B, T0, confirms=False)
    sent = one(a.send(claim(1), B, T0), Transmit)
    a.transmitted(B, sent.bundle, T0)
    assert a.held_state(sent.bundle) is BundleState.RETAINED
    # The session ends within the retention: the next hop may have lost it: sent again.
    a.link_down(B, T0 + 5)
    assert a.stats.resent == 1
    again = one(a.link_up(B, T0 + 6, confirms=False), Transmit)
    assert again.bundle == sent.bundle
    a.transmitted(B, again.bundle, T0 + 6)
    # Retention runs out: released, kept as a forwarded tombstone.
    a.poll(T0 + 6 + 10_000)
    assert a.held_state(sent.bundle) is None
    record = a.store.get(sent.bundle)
    assert record is not None and record.next_hop == FORWARDED


def test_a_reception_report_releases_a_retained_bundle_early() -> None:
    a = agent(A, retain_unconfirmed_ms=HOUR)
    b = agent(B)
    a.link_up(B, T0, confirms=False)
    b.link_up(A, T0)
    sent = one(a.send(claim(), B, T0, reports=BundleFlags.REPORT_RECEPTION), Transmit)
    a.transmitted(B, sent.bundle, T0)
    report = one(b.receive(sent.data, A, T0 + 1), Transmit)
    assert one(a.receive(report.data, B, T0 + 2), StatusReportReceived).report.received.asserted
    a.poll(T0 + 2)
    assert a.held_state(sent.bundle) is None


# --- accept -------------------------------------------------------------------------


def test_malformed_bundle_is_refused_not_acknowledged() -> None:
    b = agent(B)
    data = bytearray(bundle_bytes(C))
    data[-3] ^= 0xFF  # break the payload block's CRC
    refused = one(b.receive(bytes(data), A, T0), TransferRefused)
    assert refused.link == A and refused.code
    assert b.stats.malformed == 1 and b.store.count() == 0


def test_expired_on_arrival_is_taken_dropped_and_reported() -> None:
    b = agent(B)
    b.link_up(A, T0)
    data = bundle_bytes(C, lifetime=1000, created=T0 - 2000, reports=BundleFlags.REPORT_DELETION)
    actions = b.receive(data, A, T0)
    assert one(actions, TransferAccepted).link == A
    assert one(actions, Discarded).reason == StatusReason.LIFETIME_EXPIRED
    assert b.store.count() == 1  # only the deletion report, on its way to A
    report = decode_bundle(one(actions, Transmit).data)
    assert report.primary.is_admin_record


def test_over_the_hop_limit_is_dropped() -> None:
    bundle = decode_bundle(bundle_bytes(C))
    over = bundle.with_block(hop_count_block(2, HopCount(3, 4)))
    b = agent(B)
    actions = b.receive(encode_bundle(over), A, T0)
    assert one(actions, Discarded).reason == StatusReason.HOP_LIMIT_EXCEEDED
    assert b.stats.hop_limited == 1 and b.store.count() == 0


def test_the_last_hop_the_limit_allows_is_not_forwarded() -> None:
    bundle = decode_bundle(bundle_bytes(C))
    at_limit = bundle.with_block(hop_count_block(2, HopCount(3, 3)))
    b = agent(B)
    b.link_up(C, T0)
    actions = b.receive(encode_bundle(at_limit), A, T0)
    assert not only(actions, Transmit)
    assert one(actions, Discarded).reason == StatusReason.HOP_LIMIT_EXCEEDED


def test_a_full_store_refuses_and_acknowledges_nothing() -> None:
    b = agent(B, store=MemoryAgentStore(Quota(max_bundles=1)))
    assert only(b.receive(bundle_bytes(C, sequence=1), A, T0), TransferAccepted)
    refused = one(b.receive(bundle_bytes(C, sequence=2), A, T0), TransferRefused)
    assert refused.code == "store-max-bundles"
    assert b.stats.refused == 1


def test_dtn_destination_has_no_known_route() -> None:
    bundle = decode_bundle(bundle_bytes(C))
    import attrs

    primary = attrs.evolve(bundle.primary, destination=DtnEid("elsewhere", "fcp"))
    b = agent(B)
    actions = b.receive(encode_bundle(attrs.evolve(bundle, primary=primary)), A, T0)
    assert one(actions, Discarded).reason == StatusReason.NO_KNOWN_ROUTE
    assert b.stats.no_route == 1


# --- deliver ------------------------------------------------------------------------


def test_a_forged_signature_is_refused_and_deleted() -> None:
    forged = seal(claim(), node_key(B))  # signed by B's key, claims issuer A
    bundle = message_bundle(forged.envelope, source=A, destination=C, created_at=T0,
                            sequence=1, lifetime_ms=DAY)  # fmt: skip
    c = agent(C)
    actions = c.receive(encode_bundle(bundle), B, T0)
    refused = one(actions, DeliveryRefused)
    assert refused.code and not only(actions, Deliver)
    assert c.store.get(refused.bundle) is None and c.stats.rejected == 1


def test_a_reused_sequence_is_refused_by_the_replay_guard() -> None:
    c = agent(C)
    first = seal(claim(5, resource="dock/1"), node_key(A))
    second = seal(claim(5, resource="dock/2"), node_key(A))  # same issuer and sequence
    for n, signed in enumerate((first, second)):
        bundle = message_bundle(signed.envelope, source=A, destination=C, created_at=T0 + n,
                                sequence=0, lifetime_ms=DAY)  # fmt: skip
        actions = c.receive(encode_bundle(bundle), A, T0 + n)
    assert one(actions, DeliveryRefused).code == "replay-sequence-reused"


def test_unknown_service_is_refused() -> None:
    signed = seal(claim(), node_key(A))
    bundle = message_bundle(signed.envelope, source=A, destination=C, created_at=T0,
                            sequence=0, lifetime_ms=DAY, service=99)  # fmt: skip
    assert one(agent(C).receive(encode_bundle(bundle), A, T0), DeliveryRefused).code == (
        "service-unknown"
    )


def test_revocation_list_applies_and_spreads_to_every_neighbour_but_its_sender() -> None:
    trust = trust_for([A, B, C])
    b = agent(B, trust=trust)
    b.link_up(A, T0)
    b.link_up(C, T0)
    data = issue_revocations(ROOT, serial=1, issued_at=T0, kids=[node_key(C).kid])
    bundle = message_bundle(data, source=A, destination=B, created_at=T0, sequence=0,
                            lifetime_ms=DAY, service=8)  # fmt: skip
    actions = b.receive(encode_bundle(bundle), A, T0)
    assert one(actions, RevocationsApplied).serial == 1
    assert [t.link for t in only(actions, Transmit)] == [C]
    assert trust.revocations is not None and trust.revocations.serial == 1


# --- expiry and restart -------------------------------------------------------------


def test_expiry_wakes_at_the_rounded_expiry_and_drops_the_bundle() -> None:
    a = agent(A, static_routes={C: B}, expiry_granularity_ms=60_000)
    actions = a.send(claim(), C, T0, lifetime_ms=90_000)
    sent = one(actions, Sent)
    wake = actions[-1]
    assert isinstance(wake, WakeAt) and wake.at >= T0 + 90_000 and wake.at % 60_000 == 0
    a.poll(wake.at)
    assert a.held_state(sent.bundle) is None and a.store.get(sent.bundle) is None
    assert a.stats.expired == 1


def test_restart_delivers_unacknowledged_messages_again_and_routes_held_bundles() -> None:
    store = MemoryAgentStore()
    c = agent(C, store=store)
    delivery = one(c.receive(bundle_bytes(C), B, T0), Deliver)
    b_store = MemoryAgentStore()
    b = agent(B, store=b_store)
    one(b.receive(bundle_bytes(C, sequence=2), A, T0), TransferAccepted)
    # Both "crash" and come back over the same stores.
    c2 = BundleAgent(c.config, store)
    again = one(c2.start(T0 + 1), Deliver)
    assert again.delivery == delivery.delivery
    b2 = BundleAgent(b.config, b_store)
    b2.start(T0 + 1)
    assert one(b2.link_up(C, T0 + 2), Transmit).link == C


def test_replay_memory_survives_restart_after_acknowledgement() -> None:
    store = MemoryAgentStore()
    c = agent(C, store=store)
    delivery = one(c.receive(bundle_bytes(C), B, T0), Deliver)
    c.acknowledge(delivery.delivery, T0 + 1)
    store.expire(T0 + 2 * DAY)  # the tombstone is gone; the replay record must not be
    store.remember([], {})
    c2 = BundleAgent(c.config, store)
    c2.start(T0 + 2)
    # The same message in a new bundle (another creation time) is a replay.
    signed = seal(claim(1), node_key(A))
    bundle = message_bundle(signed.envelope, source=A, destination=C, created_at=T0 + 3,
                            sequence=0, lifetime_ms=DAY)  # fmt: skip
    assert one(c2.receive(encode_bundle(bundle), B, T0 + 3), DeliveryRefused).code == (
        "replay-duplicate"
    )


def test_given_back_message_is_offered_again() -> None:
    c = agent(C)
    delivery = one(c.receive(bundle_bytes(C), B, T0), Deliver)
    again = one(c.give_back(delivery.delivery, T0 + 1), Deliver)
    assert again.delivery == delivery.delivery
    assert c.stats.delivered == 1  # admitted once: the replay guard is not met again


def test_store_record_helpers_key_on_envelope_and_destination() -> None:
    bundle = decode_bundle(bundle_bytes(C))
    record = stored(bundle, bundle_bytes(C), T0, inspect_bundle(bundle, T0), None, A)
    assert record.received_from == f"ipn:{A}.0"
    assert MemoryAgentStore().put(record).bundle_id == record.bundle_id


def test_forward_bytes_are_the_bytes_a_full_encode_gives() -> None:
    from fleetwire.protocol.agent.bundling import for_next_hop, forward_bytes

    data = bundle_bytes(C, reports=BundleFlags.REPORT_DELIVERY)
    bundle = decode_bundle(data)
    for node in (B, 300, 70_000):
        first = forward_bytes(bundle, data, node)
        assert first == for_next_hop(bundle, node)
        again = decode_bundle(first)  # a second hop replaces the Previous Node block
        assert forward_bytes(again, first, C) == for_next_hop(again, C)
        assert decode_bundle(forward_bytes(again, first, C)).hop_count == HopCount(HOP_LIMIT, 2)
    # A bundle with neither block (a status report made elsewhere) gets a Previous Node block.
    report = status_report_for(bundle, BundleFlags.REPORT_DELIVERY, this_node=C, now=T0,
                               sequence=0, lifetime_ms=DAY)  # fmt: skip
    assert report is not None and report.hop_count is None
    encoded = encode_bundle(report)
    assert forward_bytes(report, encoded, B) == for_next_hop(report, B)


def test_revocations_from_a_file_apply_and_spread_and_an_older_list_is_ignored() -> None:
    trust = trust_for([A, B, C])
    b = agent(B, trust=trust)
    b.link_up(A, T0)
    b.link_up(C, T0)
    newer = issue_revocations(ROOT, serial=2, issued_at=T0, kids=[node_key(C).kid])
    actions = b.apply_revocations(newer, T0)
    assert one(actions, RevocationsApplied).serial == 2
    assert sorted(t.link for t in only(actions, Transmit)) == [A, C]
    older = issue_revocations(ROOT, serial=1, issued_at=T0)
    assert not only(b.apply_revocations(older, T0 + 1), Transmit)
    # A list already in force when the node started (loaded from its file): spread, since no
    # link had it yet, but not applied again; not spread when the driver wrote that file.
    loaded = trust_for([A, B, C])
    loaded.apply_revocations(newer, T0)
    for spread, links in ((False, []), (True, [A, C])):
        restarted = agent(B, trust=loaded)
        restarted.link_up(A, T0)
        restarted.link_up(C, T0)
        again = restarted.apply_revocations(newer, T0 + 2, spread=spread)
        assert not only(again, RevocationsApplied)
        assert sorted(t.link for t in only(again, Transmit)) == links


def test_a_source_behind_the_agents_isolation_boundary_is_refused_at_delivery() -> None:
    b = agent(B)
    b.boundary = lambda node: node != A  # A's cell or region is severed here
    refused = one(b.receive(bundle_bytes(B, sequence=1), A, T0), DeliveryRefused)
    assert refused.code == "source-isolated" and b.stats.rejected == 1
    b.boundary = None  # the order lifted
    assert one(b.receive(bundle_bytes(B, sequence=2), A, T0 + 1), Deliver)
