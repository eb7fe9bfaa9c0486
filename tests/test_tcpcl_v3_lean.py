"""TCPCLv3's lean path (runs of whole one-segment bundles and complete ACK_SEGMENTs read from
the buffer, segments and acks written as bytes, ``ack_many``, ``send_bundles``) against the
general path, which stays the reference: the same bundles, acks, errors and bytes on the wire
over random splits and random or broken bytes, and the bounds for hostile input kept."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.tcpcl import sdnv
from fleetwire.protocol.tcpcl.common import (
    BundleReceived,
    BundlesReceived,
    ConnectionClosed,
    Event,
    NeedData,
    ProtocolViolation,
    Role,
    SessionEstablished,
    TransferAcked,
    TransferFailed,
    TransfersAcked,
    TransferStarted,
)
from fleetwire.protocol.tcpcl.v3 import (
    ContactFlags,
    ContactHeader,
    RefusalReason,
    State,
    TcpclV3Config,
    TcpclV3Error,
    TcpclV3Session,
    encode_ack_segment,
    encode_data_segment,
    encode_keepalive,
    encode_length,
    encode_refuse_bundle,
    encode_shutdown,
)
from fleetwire.runtime.links.cl_link import ClLink, TransferRefusedByPeer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_cl_link import v3_layer
from tests.test_cl_link_batches import BatchStore, run_pair

#: Small limits so that oversized lengths are cheap to write.
LIMIT = 64
WITH_REFUSAL = TcpclV3Config(local_eid="dtn://a/", keepalive_s=0, max_bundle_size=LIMIT)
WITHOUT_REFUSAL = TcpclV3Config(
    local_eid="dtn://a/", keepalive_s=0, max_bundle_size=LIMIT, allow_refusal=False
)
ACKS = ContactFlags.REQUEST_ACK | ContactFlags.ALLOW_REFUSAL


def drain(s: TcpclV3Session) -> list[Event]:
    out: list[Event] = []
    while True:
        event = s.next_event()
        if isinstance(event, NeedData):
            return out
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out


def outbox(s: TcpclV3Session) -> bytes:
    out = b""
    while chunk := s.data_to_send():
        out += chunk
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def session(config: TcpclV3Config, peer_flags: ContactFlags, *, lean: bool) -> TcpclV3Session:
    """An established session; ``lean``: batched events (the lean path), else the reference."""
    s = TcpclV3Session(Role.PASSIVE, config, batch_events=lean)
    outbox(s)
    s.receive_data(ContactHeader(peer_flags, 0, "dtn://peer/").encode())
    assert isinstance(s.next_event(), SessionEstablished)
    return s


def flatten(events: list[Event]) -> tuple[list[tuple[int, bytes]], list[int], list[object]]:
    """(received bundles, completely acked transfers, everything else) in order, batches spelt
    out; a TransferStarted only for transfers that never completed (batches leave it out)."""
    received: list[tuple[int, bytes]] = []
    acked: list[int] = []
    other: list[object] = []
    for e in events:
        if isinstance(e, BundlesReceived):
            received += zip(e.transfer_ids, e.data, strict=True)
        elif isinstance(e, BundleReceived):
            received.append((e.transfer_id, e.data))
        elif isinstance(e, TransfersAcked):
            acked += e.transfer_ids
        elif isinstance(e, TransferAcked) and e.complete:
            acked.append(e.transfer_id)
        elif isinstance(e, ProtocolViolation):
            error = e.error
            other.append((type(error), error.code, str(error), getattr(error, "rule", None)))
        else:
            other.append(e)
    done = {tid for tid, _ in received}
    other = [e for e in other if not (isinstance(e, TransferStarted) and e.transfer_id in done)]
    return received, acked, other


# --- messages, valid and broken --------------------------------------------------------------

_payload = st.binary(min_size=1, max_size=40)


def _multi(data: bytes, cut: int) -> bytes:
    cut = 1 + cut % len(data) if len(data) > 1 else 1
    return encode_data_segment(data[:cut], start=True, end=cut >= len(data)) + (
        encode_data_segment(data[cut:], start=False, end=True) if cut < len(data) else b""
    )


def _bad_sdnv(kind: int) -> st.SearchStrategy[bytes]:
    """``kind`` then an SDNV that is too long, overflows 64 bits, or is cut short by EOF."""
    return st.sampled_from(
        [
            bytes((kind,)) + b"\xff" * 11,  # too long
            bytes((kind,)) + b"\xff" * 9 + b"\x01",  # ten bytes, above 2**64-1
            bytes((kind,)) + b"\x81" + b"\x80" * 8 + b"\x00",  # ten bytes: 2**63, valid
            bytes((kind,)) + b"\x80" * 9 + b"\x05",  # ten bytes, not shortest: 5
            bytes((kind,)) + b"\x80" * 10 + b"\x05",  # eleven bytes: too long, though 5
            bytes((kind,)) + b"\x80\x03",  # not shortest: 3
        ]
    )


def _message(sent_sizes: list[int]) -> st.SearchStrategy[bytes]:
    acks = [*sent_sizes, 0, 1, 7, 200] if sent_sizes else [0, 1, 7, 200]
    return st.one_of(
        _payload.map(lambda b: encode_data_segment(b, start=True, end=True)),
        _payload.map(lambda b: encode_data_segment(b, start=True, end=True)),
        st.tuples(_payload, st.integers(0, 50)).map(lambda t: _multi(*t)),
        st.sampled_from(acks).map(encode_ack_segment),
        st.sampled_from(sent_sizes or [1]).map(encode_ack_segment),
        st.integers(0, 80).map(encode_length),
        st.just(encode_keepalive()),
        st.sampled_from(list(RefusalReason)).map(encode_refuse_bundle),
        st.integers(LIMIT + 1, 1 << 20).map(
            lambda n: b"\x13" + sdnv.encode(n) + b"x" * 5  # longer than we reassemble
        ),
        st.integers(LIMIT + 1, LIMIT + 3).map(
            lambda n: b"\x13" + sdnv.encode(n) + b"y" * n  # the same, all of it here
        ),
        st.just(b"\x13\x00"),  # a whole bundle of nothing
        st.just(b"\x23" + sdnv.encode(3)),  # ACK_SEGMENT with flags set
        _bad_sdnv(0x13),
        _bad_sdnv(0x20),
        st.binary(max_size=4),  # anything at all
        st.just(encode_shutdown()),
    )


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[bytes], bytes, list[int]]:
    sent = draw(st.lists(st.binary(min_size=1, max_size=30), max_size=5))
    messages = draw(st.lists(_message([len(b) for b in sent]), max_size=25))
    cuts = draw(st.lists(st.integers(min_value=0), max_size=8))
    return sent, b"".join(messages), cuts


def _run(
    config: TcpclV3Config, flags: ContactFlags, sent: list[bytes], wire: bytes, cuts: list[int],
    *, lean: bool,
) -> tuple[list[Event], bytes, State]:  # fmt: skip
    s = session(config, flags, lean=lean)
    if sent:
        if lean:
            assert s.send_bundles(sent) == range(len(sent))
        else:
            assert [s.send_bundle(b) for b in sent] == list(range(len(sent)))
    out = outbox(s)
    events: list[Event] = []
    for chunk in [*split(wire, cuts), b""]:
        s.receive_data(chunk)
        got = drain(s)
        events += got
        # The runtime stores what arrived, then acks it: in one call on the lean side.
        tids = [tid for tid, _ in flatten(got)[0]]
        if lean:
            s.ack_many(tids)
        else:
            for tid in tids:
                s.ack(tid)
        out += outbox(s)
    return events, out, s.state


@settings(max_examples=400, deadline=None)
@given(
    scenario=_scenario(),
    config=st.sampled_from([WITH_REFUSAL, WITHOUT_REFUSAL]),
    flags=st.sampled_from([ACKS, ContactFlags.REQUEST_ACK, ContactFlags.NONE]),
)
def test_lean_path_is_the_general_path_over_any_bytes_and_splits(
    scenario: tuple[list[bytes], bytes, list[int]],
    config: TcpclV3Config,
    flags: ContactFlags,
) -> None:
    sent, wire, cuts = scenario
    lean_events, lean_out, lean_state = _run(config, flags, sent, wire, cuts, lean=True)
    ref_events, ref_out, ref_state = _run(config, flags, sent, wire, cuts, lean=False)
    assert flatten(lean_events) == flatten(ref_events)
    assert lean_out == ref_out  # the same acks, refusals, shutdowns and segments, in order
    assert lean_state is ref_state


# --- hostile input in the lean position: the general path's errors and bounds ---------------

_RUN = encode_data_segment(b"one", start=True, end=True) + encode_data_segment(
    b"two", start=True, end=True
)


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b"\x13" + b"\xff" * 11, "bad SDNV"),  # never ends
        (b"\x13" + b"\xff" * 9 + b"\x7f", "bad SDNV"),  # ten bytes above 2**64-1
        (b"\x13" + b"\x80" * 10 + b"\x03abc", "bad SDNV"),  # 3, but in eleven bytes
        (b"\x20" + b"\xff" * 11, "bad SDNV"),
        (b"\x20" + b"\xff" * 9 + b"\x7f", "bad SDNV"),
        (b"\x20\x05", "ACK_SEGMENT with no bundle outstanding"),
    ],
)
def test_a_malformed_message_after_a_run_is_the_general_paths_violation(
    tail: bytes, why: str
) -> None:
    s = session(WITH_REFUSAL, ACKS, lean=True)
    s.receive_data(_RUN + tail)
    events = drain(s)
    assert events[0] == BundlesReceived((0, 1), (b"one", b"two"))
    violation = events[1]
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, TcpclV3Error)
    assert violation.error.code == "tcpclv3-protocol"
    assert why in str(violation.error)
    assert isinstance(events[-1], ConnectionClosed) and not events[-1].clean
    assert s.state is State.CLOSED
    assert outbox(s) == encode_shutdown()  # bundles not yet stored are not acked


def test_an_oversized_whole_bundle_after_a_run_is_refused_not_buffered() -> None:
    s = session(WITH_REFUSAL, ACKS, lean=True)
    # Declares LIMIT + 1 bytes: refused at its head, its bytes skipped as they stream in.
    s.receive_data(_RUN + b"\x13" + sdnv.encode(LIMIT + 1) + b"z" * 10)
    events = drain(s)
    assert events[:3] == [
        BundlesReceived((0, 1), (b"one", b"two")),
        TransferStarted(2, None),
        TransferFailed(2, outgoing=False),
    ]
    assert s.buffered < LIMIT
    s.ack_many([0, 1])
    assert outbox(s) == (
        encode_ack_segment(3)
        + encode_ack_segment(3)
        + encode_refuse_bundle(RefusalReason.NO_RESOURCES)
    )
    s.receive_data(b"z" * (LIMIT - 9) + encode_data_segment(b"ok", start=True, end=True))
    assert drain(s) == [BundlesReceived((3,), (b"ok",))]


@pytest.mark.parametrize("over", [1, 2, 1 << 20])
def test_an_oversized_whole_bundle_all_here_is_refused(over: int) -> None:
    s = session(WITH_REFUSAL, ACKS, lean=True)
    big = b"z" * (LIMIT + over)
    s.receive_data(_RUN + encode_data_segment(big, start=True, end=True) + _RUN)
    events = drain(s)
    assert events == [
        BundlesReceived((0, 1), (b"one", b"two")),
        TransferStarted(2, None),
        TransferFailed(2, outgoing=False),
        BundlesReceived((3, 4), (b"one", b"two")),
    ]
    s.ack_many([0, 1, 3, 4])
    three = encode_ack_segment(3)
    assert outbox(s) == three * 2 + encode_refuse_bundle(RefusalReason.NO_RESOURCES) + three * 2


def test_an_oversized_whole_bundle_without_refusal_ends_the_session() -> None:
    s = session(WITHOUT_REFUSAL, ContactFlags.REQUEST_ACK, lean=True)
    s.receive_data(_RUN + b"\x13" + sdnv.encode(LIMIT + 1))
    events = drain(s)
    assert events[0] == BundlesReceived((0, 1), (b"one", b"two"))
    assert isinstance(events[-1], ConnectionClosed) and not events[-1].clean
    assert outbox(s) == encode_shutdown()


def test_a_bundle_of_exactly_the_limit_is_taken() -> None:
    s = session(WITH_REFUSAL, ACKS, lean=True)
    s.receive_data(_RUN + encode_data_segment(b"m" * LIMIT, start=True, end=True))
    assert drain(s) == [BundlesReceived((0, 1, 2), (b"one", b"two", b"m" * LIMIT))]


# --- writing: the same bytes as the encoders ------------------------------------------------


@pytest.mark.parametrize("length_first", [False, True])
def test_written_segments_and_acks_are_the_encoders_bytes_at_every_sdnv_width(
    length_first: bool,
) -> None:
    sizes = [1, 127, 128, 129, 16383, 16384, 16385, 40000, 127]
    config = TcpclV3Config(local_eid="dtn://a/", keepalive_s=0)
    flags = ACKS | (ContactFlags.REQUEST_LENGTH if length_first else ContactFlags.NONE)
    sender = session(config, flags, lean=True)
    bundles = [bytes([n % 251]) * n for n in sizes]
    sender.send_bundles(bundles)
    chunks = []
    while chunk := sender.data_to_send():
        chunks.append(chunk)
    assert all(len(c) <= 64 * 1024 + 3 + 2 for c in chunks[1:])
    assert b"".join(chunks) == b"".join(
        (encode_length(len(b)) if length_first else b"")
        + encode_data_segment(b, start=True, end=True)
        for b in bundles
    )
    receiver = session(config, ACKS, lean=True)
    receiver.receive_data(b"".join(chunks))
    got = flatten(drain(receiver))[0]
    assert [d for _, d in got] == bundles
    receiver.ack_many([tid for tid, _ in got])
    acks = outbox(receiver)
    assert acks == b"".join(encode_ack_segment(n) for n in sizes)
    sender.receive_data(acks)
    assert flatten(drain(sender))[1] == list(range(len(sizes)))
    assert sender.outstanding_transfers == frozenset()


def test_ack_many_acks_in_order_and_stops_at_the_first_it_cannot_ack() -> None:
    s = session(WITH_REFUSAL, ACKS, lean=True)
    s.receive_data(_RUN + encode_data_segment(b"x", start=True, end=False))
    events = drain(s)
    assert events == [BundlesReceived((0, 1), (b"one", b"two")), TransferStarted(2, None)]
    with pytest.raises(LocalProtocolError, match="not complete yet"):
        s.ack_many([1, 2, 0])
    # 1 was acked before the error, 0 never reached: nothing leaves ahead of transfer 0.
    assert outbox(s) == b""
    assert s.awaiting_ack == frozenset({0})
    s.ack_many([0])
    # Then transfer 2's first segment, acked as soon as it is the oldest (§5.3).
    assert outbox(s) == encode_ack_segment(3) * 2 + encode_ack_segment(1)
    with pytest.raises(LocalProtocolError, match="no undecided"):
        s.ack_many([0])
    with pytest.raises(LocalProtocolError, match="no undecided"):
        s.ack_many([7])


def test_send_bundles_is_checked_as_a_whole() -> None:
    s = session(WITH_REFUSAL, ACKS, lean=True)
    with pytest.raises(LocalProtocolError, match="never empty"):
        s.send_bundles([b"a", b""])
    assert s.outstanding_transfers == frozenset()
    assert s.send_bundles([b"a", memoryview(b"bc")]) == range(2)
    assert s.send_bundle(b"d") == 2
    assert outbox(s) == b"".join(
        encode_data_segment(b, start=True, end=True) for b in (b"a", b"bc", b"d")
    )
    s.terminate()
    with pytest.raises(LocalProtocolError):
        s.send_bundles([b"e"])


def test_an_oversized_length_without_refusal_ends_the_session_once() -> None:
    # LENGTH above our limit, then the bundle's first segment: one SHUTDOWN and a close, never
    # an exception out of next_event (both the LENGTH and the segment exceed the limit).
    for lean in (False, True):
        s = session(WITHOUT_REFUSAL, ContactFlags.REQUEST_ACK, lean=lean)
        s.receive_data(encode_length(LIMIT + 1) + b"\x13" + sdnv.encode(LIMIT + 1) + b"x" * 5)
        events = drain(s)
        assert events[0] == TransferStarted(0, LIMIT + 1)
        assert isinstance(events[-1], ConnectionClosed) and not events[-1].clean
        assert s.state is State.CLOSED
        assert outbox(s) == encode_shutdown()


@pytest.mark.parametrize("order", [[0, 1, 2], [0, 2, 1], [1, 0, 2], [2, 1, 0]])
def test_ack_many_writes_what_one_ack_each_writes(order: list[int]) -> None:
    # Transfer 1 arrives in two segments: its intermediate ack leaves when it becomes the
    # oldest undecided bundle, before its final ack, whether acked one by one or in a batch.
    wire = (
        encode_data_segment(b"one", start=True, end=True)
        + encode_data_segment(b"t", start=True, end=False)
        + encode_data_segment(b"wo", start=False, end=True)
        + encode_data_segment(b"six", start=True, end=True)
    )
    written = []
    for lean in (False, True):
        s = session(WITH_REFUSAL, ACKS, lean=lean)
        s.receive_data(wire)
        assert [d for _, d in flatten(drain(s))[0]] == [b"one", b"two", b"six"]
        if lean:
            s.ack_many(order)
        else:
            for tid in order:
                s.ack(tid)
        written.append(outbox(s))
    assert written[0] == written[1]
    if order[0] == 0:
        assert written[1].startswith(encode_ack_segment(3) + encode_ack_segment(1))


# --- on the link: runs in custody, refusals for exactly the refused ones -----------------------


async def test_a_v3_link_batch_gets_one_outcome_per_bundle_after_the_commit() -> None:
    store = BatchStore()
    # Small bundles (the lean path) with a refused one every seventh and a multi-segment one
    # (the general path) in between.
    bundles = [bytes([i]) * 30 if i % 7 else b"\xff" + bytes(29) for i in range(1, 101)]
    bundles[50] = b"\x01" * 5000
    results: list[object] = []

    async def body(a: ClLink) -> None:
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                results.extend(await a.send_many(bundles))

            nursery.start_soon(send)
            while sum(map(len, store.calls)) < 32:  # two batches of 16 in custody ...
                await trio.testing.wait_all_tasks_blocked()
            assert results == [] and store.committed == 0  # ... and nothing acked yet
            store.commit.set()

    with trio.fail_after(10):
        await run_pair(v3_layer(1, segment_size=1024), v3_layer(2), store, body)
    assert len(results) == len(bundles)
    for bundle, outcome in zip(bundles, results, strict=True):
        if bundle.startswith(b"\xff"):
            assert isinstance(outcome, TransferRefusedByPeer)
        else:
            assert outcome is None
    assert sorted(store.held) == sorted(b for b in bundles if not b.startswith(b"\xff"))


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    segment=st.integers(1, 40),
    length_first=st.booleans(),
    batched=st.booleans(),
)
def test_segments_written_are_the_encoders_for_any_mix_of_whole_and_long_bundles(
    sizes: list[int], segment: int, length_first: bool, batched: bool
) -> None:
    config = TcpclV3Config(local_eid="dtn://a/", keepalive_s=0, segment_size=segment)
    flags = ACKS | (ContactFlags.REQUEST_LENGTH if length_first else ContactFlags.NONE)
    s = session(config, flags, lean=batched)
    bundles = [bytes([n]) * n for n in sizes]
    if batched:
        s.send_bundles(bundles)
    else:
        for b in bundles:
            s.send_bundle(b)
    expected = b"".join(
        (encode_length(len(b)) if length_first else b"")
        + b"".join(
            encode_data_segment(b[i : i + segment], start=i == 0, end=i + segment >= len(b))
            for i in range(0, len(b), segment)
        )
        for b in bundles
    )
    assert outbox(s) == expected
    # Acked in full, one by one, they all complete in order.
    s.receive_data(b"".join(encode_ack_segment(len(b)) for b in bundles))
    assert flatten(drain(s))[1] == list(range(len(bundles)))
