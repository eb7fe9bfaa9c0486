"""The agent's receive path: its shortcuts answer exactly as the plain road does."""

from __future__ import annotations

import hashlib

import attrs
from fleetwire.protocol import cose
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.bundling import (
    LOCAL,
    Envelope,
    _neighbour_name,
    accept_record,
    inspect_bundle,
    message_bundle,
    neighbour_node,
    stored,
)
from fleetwire.protocol.agent.store import Accepted, Quota, RefusalReason, Refused, StoredBundle
from fleetwire.protocol.bpv7 import Bundle, IpnEid, encode_bundle
from fleetwire.protocol.keys import SigningKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_bpv7_bundle import bundles

_KEY = SigningKey.from_seed(bytes(range(32)))

# One operation on a store: (kind, bundle index, time, neighbour).
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "tombstone", "delete", "expire", "restore"]),
        st.integers(min_value=0, max_value=11),
        st.integers(min_value=0, max_value=40),
        st.sampled_from([None, "ipn:2.0", "ipn:3.0"]),
    ),
    max_size=60,
)


def _record(index: int, at: int, received_from: str | None) -> StoredBundle:
    return StoredBundle(
        bytes([index + 1]) * 4,
        None if index % 3 == 0 else bytes([index % 5 + 1]) * 8,
        "ipn:9.1",
        "ipn:1.1",
        10 + index * 3,
        at,
        b"x" * (index + 1),
        "ipn:4.0" if index % 4 == 1 else None,
        received_from,
    )


def _run(store: MemoryAgentStore, ops: list[tuple[str, int, int, str | None]]) -> list[object]:
    seen: list[object] = []
    for kind, index, at, source in ops:
        record = _record(index, at, source)
        if kind == "put":
            seen.append(store.put(record))
        elif kind == "restore":
            store.restore(record)
        elif kind == "tombstone":
            seen.append(store.tombstone(record.bundle_id, "ipn:5.0", at + 5))
        elif kind == "delete":
            seen.append(store.delete(record.bundle_id))
        else:
            seen.append(store.expire(at))
        # The heap's lazily deleted head against the records themselves.
        held = [store.get(_record(i, 0, None).bundle_id) for i in range(12)]
        times = [found.expires_at for found in held if found is not None]
        assert store.next_expiry() == min(times, default=None)
        seen.append((store.next_expiry(), store.count(), store.bytes_used()))
    return seen


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_an_unbounded_store_answers_as_one_checked_against_bounds_it_never_meets(
    ops: list[tuple[str, int, int, str | None]],
) -> None:
    # Without a bound ``put`` skips the quota check; with bounds too large to refuse anything
    # it runs it every time. Every answer, the next expiry and the accounts must agree.
    huge = Quota(max_bundles=10**9, max_bytes=10**12, source_share=0.5)
    assert _run(MemoryAgentStore(), ops) == _run(MemoryAgentStore(huge), ops)


class _SweepingStore(MemoryAgentStore):
    """Sweeps its expiry heap whenever a stale entry outnumbers a live one."""

    _slack = 0


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_sweeping_stale_expiry_entries_changes_no_answer(
    ops: list[tuple[str, int, int, str | None]],
) -> None:
    assert _run(_SweepingStore(), ops) == _run(MemoryAgentStore(), ops)


def test_a_relays_forwarded_tombstones_leave_no_pile_of_stale_entries() -> None:
    # A relay holds each bundle for a day but keeps its forwarded record a quarter hour:
    # every tombstone strands the day-long entry, which lazy deletion alone kept to the end.
    store = MemoryAgentStore()
    day, quarter = 86_400_000, 900_000
    for index in range(30_000):
        at = index * 100  # a bundle every 100 ms: 9,000 records live at a time
        record = attrs.evolve(_record(0, at, None), bundle_id=index.to_bytes(4, "big"),
                              content_id=None, expires_at=at + day)  # fmt: skip
        assert isinstance(store.put(record), Accepted)
        assert store.tombstone(record.bundle_id, "ipn:5.0", at + quarter)
        store.expire(at)
        assert len(store._expiry) <= 2 * store.count() + MemoryAgentStore._slack + 1
    assert store.count() == quarter // 100 and store.next_expiry() == 30_000 * 100
    assert len(store.expire(day * 2)) == quarter // 100 and store.count() == 0
    assert store.next_expiry() is None


def test_restored_bundles_count_against_their_neighbours_share() -> None:
    # restore takes bundles past the quota, but they still fill their neighbour's share.
    store = MemoryAgentStore(Quota(max_bundles=8, source_share=0.5))
    for index in (0, 2, 3, 4):  # none of them forwarded already (restore would tombstone it)
        store.restore(_record(index, 0, "ipn:2.0"))
    refused = store.put(_record(5, 0, "ipn:2.0"))
    assert isinstance(refused, Refused) and refused.reason is RefusalReason.SOURCE_SHARE
    assert isinstance(store.put(_record(8, 0, "ipn:3.0")), Accepted)
    # A record kept in its place frees its part of the share.
    assert store.tombstone(_record(0, 0, None).bundle_id, "ipn:5.0")
    assert isinstance(store.put(_record(5, 0, "ipn:2.0")), Accepted)
    refused = store.put(_record(9, 0, "ipn:2.0"))
    assert isinstance(refused, Refused) and refused.reason is RefusalReason.SOURCE_SHARE


def _reference_record(
    bundle: Bundle,
    data: bytes,
    now: int,
    envelope: Envelope,
    next_hop: str | None,
    received_from: int | None,
) -> StoredBundle:
    """The store's record as the bundling module's docstring defines it, built the plain way."""
    digest = envelope.envelope_digest or hashlib.sha256(bundle.payload).digest()
    content = envelope.envelope_digest
    return StoredBundle(
        bundle.id.key() + digest[:16],
        None if content is None else content + bundle.primary.destination.wire,
        str(bundle.primary.source), str(bundle.primary.destination), envelope.expires_at, now,
        data, next_hop, None if received_from is None else f"ipn:{received_from}.0",
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    bundle=bundles(),
    signed=st.booleans(),
    now=st.integers(min_value=0, max_value=2**40),
    next_hop=st.sampled_from([None, "local", "ipn:4.0"]),
    received_from=st.one_of(st.none(), st.integers(min_value=0, max_value=2**32)),
)
def test_the_stored_record_equals_the_plain_one(
    bundle: Bundle, signed: bool, now: int, next_hop: str | None, received_from: int | None
) -> None:
    if signed:  # a COSE_Sign1 payload: the content key is the envelope digest
        envelope_bytes = cose.sign1(bundle.payload, _KEY)
        bundle = message_bundle(envelope_bytes, source=5, destination=9, created_at=now + 1,
                                sequence=0, lifetime_ms=1000)  # fmt: skip
    data = encode_bundle(bundle)
    for envelope in (inspect_bundle(bundle, now), inspect_bundle(bundle, now, content_id=False)):
        got = stored(bundle, data, now, envelope, next_hop, received_from)
        assert got == _reference_record(bundle, data, now, envelope, next_hop, received_from)
        assert (got.content_id is None) == (not signed and envelope.envelope_digest is None)


@settings(max_examples=300, deadline=None)
@given(
    bundle=bundles(),
    payload=st.sampled_from(["as drawn", "sign1", "damaged sign1"]),
    sealed_here=st.booleans(),
    now=st.integers(min_value=0, max_value=2**40),
    here=st.sampled_from(["destination", "elsewhere"]),
    received_from=st.one_of(st.none(), st.integers(min_value=0, max_value=2**32)),
)
def test_accept_record_is_inspect_bundle_then_stored(
    bundle: Bundle, payload: str, sealed_here: bool, now: int, here: str,
    received_from: int | None,
) -> None:  # fmt: skip
    # Drawn bundles: ipn, dtn and null EIDs, fragments, creation time 0 with a Bundle Age
    # block, payloads that are not COSE; plus payloads that are (or nearly are) envelopes.
    if payload != "as drawn":
        envelope_bytes = cose.sign1(bundle.payload, _KEY)
        if payload == "damaged sign1":
            envelope_bytes = envelope_bytes[:-1]
        blocks = (*bundle.blocks[:-1], attrs.evolve(bundle.blocks[-1], data=envelope_bytes))
        bundle = Bundle(bundle.primary, blocks)
    destination = bundle.primary.destination
    this_node = destination.node if isinstance(destination, IpnEid) else 7
    if here == "elsewhere":
        this_node += 1
    data = b"as received"  # kept as it is: only the record holds it
    envelope = inspect_bundle(bundle, now, content_id=False, sealed_here=sealed_here)
    local = envelope.destination_node == this_node
    record = stored(bundle, data, now, envelope, LOCAL if local else None, received_from)
    got = accept_record(bundle, data, now, this_node, received_from, sealed_here=sealed_here)
    assert got == (record, envelope.expires_at, local, envelope.sign1)
    assert (got[3] is None) == (sealed_here or payload != "sign1")


@given(st.one_of(st.integers(min_value=0, max_value=2**64), st.text(max_size=12)))
def test_a_neighbour_name_reads_back_as_its_node(node_or_text: int | str) -> None:
    # The names stored() keeps read back through the cache; any other text the plain way.
    if isinstance(node_or_text, int):
        assert neighbour_node(_neighbour_name(node_or_text)) == node_or_text
    else:
        number = node_or_text[4:].partition(".")[0]
        plain = int(number) if node_or_text.startswith("ipn:") and number.isdigit() else None
        assert neighbour_node(node_or_text) == plain
