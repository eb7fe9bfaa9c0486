"""TCPCLv3 (RFC 7242) session: negotiation, transfers over arbitrary splits, acks in order,
refusal, keepalive and idle timers, shutdown, and hostile bytes met only by documented reactions."""

from __future__ import annotations

import itertools

import attrs
import pytest
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
    SessionTerminated,
    TransferAcked,
    TransferFailed,
    TransferRefused,
    TransferStarted,
)
from fleetwire.protocol.tcpcl.v3 import (
    TRANSITIONS,
    ContactFlags,
    ContactHeader,
    Negotiated,
    RefusalReason,
    SessionTerminatedV3,
    ShutdownReason,
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
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

A = TcpclV3Config(local_eid="dtn://a/", keepalive_s=0)
B = TcpclV3Config(local_eid="dtn://b/", keepalive_s=0)
PEER_HEADER = ContactHeader(ContactFlags.REQUEST_ACK | ContactFlags.ALLOW_REFUSAL, 0, "dtn://peer/")


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


def feed(s: TcpclV3Session, data: bytes, cuts: list[int] | None = None) -> list[Event]:
    events: list[Event] = []
    for chunk in split(data, cuts or []):
        s.receive_data(chunk)
        events += drain(s)
    return events


def established(config: TcpclV3Config = A, peer: ContactHeader = PEER_HEADER) -> TcpclV3Session:
    """A session that has read ``peer``'s contact header; our own header already taken."""
    s = TcpclV3Session(Role.PASSIVE, config)
    assert outbox(s) == ContactHeader(config.flags, config.keepalive_s, config.local_eid).encode()
    events = feed(s, peer.encode())
    assert events == [SessionEstablished(peer.eid, min(config.keepalive_s, peer.keepalive_s))]
    return s


def of(events: list[Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


# --- codec and negotiation -------------------------------------------------------------


def test_contact_header_layout() -> None:
    # §4.1, byte for byte (the layout pyd3tn and DTN2 write).
    header = ContactHeader(ContactFlags.REQUEST_ACK | ContactFlags.REQUEST_LENGTH, 0x1234, "dtn://n/")
    assert header.encode() == b"dtn!\x03\x09\x12\x34\x08dtn://n/"


def test_message_layouts() -> None:
    assert encode_data_segment(b"ab", start=True, end=True) == b"\x13\x02ab"
    assert encode_data_segment(b"", start=False, end=False) == b"\x10\x00"
    assert encode_ack_segment(300) == b"\x20" + sdnv.encode(300)
    assert encode_refuse_bundle(RefusalReason.NO_RESOURCES) == b"\x32"
    assert encode_keepalive() == b"\x40"
    assert encode_length(5) == b"\x60\x05"
    assert encode_shutdown() == b"\x50"
    assert encode_shutdown(ShutdownReason.BUSY, 200) == b"\x53\x02" + sdnv.encode(200)
    assert encode_shutdown(None, 7) == b"\x51\x07"


@pytest.mark.parametrize(
    ("ours", "theirs", "acks", "refusal", "frag"),
    [
        (0b0111, 0b0111, True, True, True),
        (0b0101, 0b0001, True, False, False),
        (0b0100, 0b0100, False, False, False),  # refusal is meaningless without acks (§4.1)
        (0b0001, 0b0000, False, False, False),
        (0b0010, 0b0010, False, False, True),
    ],
)
def test_negotiation_flags(ours: int, theirs: int, acks: bool, refusal: bool, frag: bool) -> None:
    n = Negotiated.from_headers(
        ContactHeader(ContactFlags(ours), 0, "a"), ContactHeader(ContactFlags(theirs), 0, "b")
    )
    assert (n.acks, n.refusal, n.reactive_fragmentation) == (acks, refusal, frag)


@pytest.mark.parametrize(("ours", "theirs", "agreed"), [(10, 30, 10), (30, 10, 10), (0, 5, 0), (5, 0, 0)])
def test_negotiation_keepalive_is_the_minimum(ours: int, theirs: int, agreed: int) -> None:
    n = Negotiated.from_headers(
        ContactHeader(ContactFlags.NONE, ours, "a"), ContactHeader(ContactFlags.NONE, theirs, "b")
    )
    assert n.keepalive_s == agreed


def test_length_is_sent_when_the_peer_asks() -> None:
    s = established(peer=ContactHeader(ContactFlags.REQUEST_LENGTH, 0, "p"))
    s.send_bundle(b"xyz")
    assert outbox(s) == encode_length(3) + encode_data_segment(b"xyz", start=True, end=True)


def test_transition_table_is_closed() -> None:
    for row in TRANSITIONS.values():
        assert set(row.values()) <= set(State)
    assert TRANSITIONS[State.CLOSED] == {}


# --- back to back ----------------------------------------------------------------------


def pump(x: TcpclV3Session, y: TcpclV3Session, cuts: list[int], log: dict[int, list[Event]]) -> None:
    """Move bytes both ways until quiet; ``cuts`` choose split points; acks every bundle."""
    for _ in range(1000):
        moved = False
        for src, dst in ((x, y), (y, x)):
            data = outbox(src)
            if data:
                moved = True
                for event in feed(dst, data, cuts):
                    log[id(dst)].append(event)
                    if isinstance(event, BundleReceived):
                        dst.ack(event.transfer_id)
        if not moved:
            return
    raise AssertionError("no quiescence")


@settings(max_examples=120)
@given(
    a_bundles=st.lists(st.binary(min_size=1, max_size=200), max_size=5),
    b_bundles=st.lists(st.binary(min_size=1, max_size=200), max_size=5),
    seg_a=st.integers(1, 64),
    seg_b=st.integers(1, 64),
    acks=st.booleans(),
    length=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_back_to_back_any_split(
    a_bundles: list[bytes],
    b_bundles: list[bytes],
    seg_a: int,
    seg_b: int,
    acks: bool,
    length: bool,
    cuts: list[int],
) -> None:
    x = TcpclV3Session(Role.ACTIVE, attrs.evolve(A, segment_size=seg_a, request_ack=acks, request_length=length))
    y = TcpclV3Session(Role.PASSIVE, attrs.evolve(B, segment_size=seg_b))
    ids_a = [x.send_bundle(b) for b in a_bundles]  # queued before the session is up
    log: dict[int, list[Event]] = {id(x): [], id(y): []}
    pump(x, y, cuts, log)
    ids_b = [y.send_bundle(b) for b in b_bundles]
    pump(x, y, cuts, log)
    x.terminate()
    pump(x, y, cuts, log)
    for me, mine, ids, theirs in ((x, a_bundles, ids_a, b_bundles), (y, b_bundles, ids_b, a_bundles)):
        events = log[id(me)]
        assert isinstance(events[0], SessionEstablished)
        assert [e.data for e in of(events, BundleReceived)] == theirs
        assert not of(events, ProtocolViolation)
        assert events[-1] == ConnectionClosed(clean=True)
        assert me.state is State.CLOSED
        done = [e for e in of(events, TransferAcked) if e.complete]
        if acks:
            assert [(e.transfer_id, e.acked_length) for e in done] == [(i, len(b)) for i, b in zip(ids, mine, strict=True)]
            per_transfer: dict[int, list[int]] = {}
            for e in of(events, TransferAcked):
                per_transfer.setdefault(e.transfer_id, []).append(e.acked_length)
            assert all(v == sorted(set(v)) for v in per_transfer.values())  # cumulative, growing
        else:
            assert done == []
        starts = of(events, TransferStarted)
        # Only x asked for LENGTH messages, so only x learns totals up front.
        expected = [len(b) for b in theirs] if length and me is x else [None] * len(theirs)
        assert [t.total_length for t in starts] == expected
    assert of(log[id(y)], SessionTerminatedV3)[0].by_peer


def test_final_ack_waits_for_the_runtime_and_later_acks_wait_behind_it() -> None:
    s = established()
    feed(s, encode_data_segment(b"aaaa", start=True, end=True))
    assert outbox(s) == b""  # not persisted yet: no final ack
    assert s.awaiting_ack == {0}
    # The next bundle's intermediate ack would be read as the first bundle's: it must wait.
    feed(s, encode_data_segment(b"bb", start=True, end=False))
    assert outbox(s) == b""
    s.ack(0)
    assert s.awaiting_ack == frozenset()
    assert outbox(s) == encode_ack_segment(4) + encode_ack_segment(2)
    events = feed(s, encode_data_segment(b"b", start=False, end=True))
    assert of(events, BundleReceived) == [BundleReceived(1, b"bbb")]
    assert outbox(s) == b""
    s.ack(1)
    assert outbox(s) == encode_ack_segment(3)


def test_acks_released_in_order_even_if_the_runtime_acks_out_of_order() -> None:
    s = established()
    feed(s, encode_data_segment(b"a", start=True, end=True) + encode_data_segment(b"bc", start=True, end=True))
    s.ack(1)
    assert outbox(s) == b""
    s.ack(0)
    assert outbox(s) == encode_ack_segment(1) + encode_ack_segment(2)


def test_sender_side_ack_and_refusal_bookkeeping() -> None:
    s = established(attrs.evolve(A, segment_size=2))
    assert s.send_bundle(b"abcde") == 0
    assert s.send_bundle(b"xy") == 1
    assert outbox(s) == (
        encode_data_segment(b"ab", start=True, end=False)
        + encode_data_segment(b"cd", start=False, end=False)
        + encode_data_segment(b"e", start=False, end=True)
        + encode_data_segment(b"xy", start=True, end=True)
    )
    assert s.outstanding_transfers == {0, 1}
    events = feed(s, encode_ack_segment(2) + encode_ack_segment(5) + encode_refuse_bundle(RefusalReason.COMPLETED))
    assert s.outstanding_transfers == frozenset()
    assert events == [
        TransferAcked(0, 2, False),
        TransferAcked(0, 5, True),
        TransferRefused(1, RefusalReason.COMPLETED, by_peer=True),
    ]


def test_refusal_stops_the_remaining_segments() -> None:
    s = established(attrs.evolve(A, segment_size=1))
    s.send_bundle(b"abc")
    s.send_bundle(b"z")
    assert s.data_to_send() == encode_data_segment(b"a", start=True, end=False)
    assert feed(s, encode_refuse_bundle(RefusalReason.NO_RESOURCES)) == [
        TransferRefused(0, RefusalReason.NO_RESOURCES, by_peer=True)
    ]
    assert outbox(s) == encode_data_segment(b"z", start=True, end=True)


# --- bounded reassembly ----------------------------------------------------------------


def test_oversized_bundle_refused_and_skipped_when_refusal_negotiated() -> None:
    s = established(attrs.evolve(A, max_bundle_size=4))
    events = feed(
        s,
        encode_data_segment(b"abc", start=True, end=False)
        + encode_data_segment(b"de", start=False, end=False)  # would make 5 > 4
        + encode_data_segment(b"fgh", start=False, end=True)  # skipped
        + encode_data_segment(b"ok", start=True, end=True),
    )
    assert events == [
        TransferStarted(0, None),
        TransferFailed(0, outgoing=False),
        TransferStarted(1, None),
        BundleReceived(1, b"ok"),
    ]
    # The intermediate ack of 3 went out before the limit was hit; then the refusal.
    assert outbox(s) == encode_ack_segment(3) + encode_refuse_bundle(RefusalReason.NO_RESOURCES)
    s.ack(1)
    assert outbox(s) == encode_ack_segment(2)
    assert s.buffered == 0


def test_oversized_length_refused_before_any_content() -> None:
    s = established(attrs.evolve(A, max_bundle_size=4))
    events = feed(s, encode_length(1 << 40) + b"\x12" + sdnv.encode(1 << 40))
    assert events == [TransferStarted(0, 1 << 40), TransferFailed(0, outgoing=False)]
    assert outbox(s) == encode_refuse_bundle(RefusalReason.NO_RESOURCES)


def test_oversized_bundle_without_refusal_shuts_down() -> None:
    s = established(attrs.evolve(A, max_bundle_size=4), ContactHeader(ContactFlags.REQUEST_ACK, 0, "p"))
    events = feed(s, encode_data_segment(b"abcde", start=True, end=True))
    assert events == [
        TransferStarted(0, None),
        SessionTerminatedV3(ShutdownReason.UNSPECIFIED, by_peer=False),
        TransferFailed(0, outgoing=False),
        ConnectionClosed(clean=False),
    ]
    assert outbox(s) == encode_shutdown()


def test_runtime_refuses_an_arriving_bundle() -> None:
    s = established()
    feed(s, encode_data_segment(b"ab", start=True, end=False))
    assert outbox(s) == encode_ack_segment(2)
    s.refuse(0, RefusalReason.COMPLETED)
    assert outbox(s) == encode_refuse_bundle(RefusalReason.COMPLETED)
    assert feed(s, encode_data_segment(b"c", start=False, end=True)) == []


# --- timers ----------------------------------------------------------------------------


def test_keepalive_sent_and_missing_peer_detected() -> None:
    s = established(attrs.evolve(A, keepalive_s=10), attrs.evolve(PEER_HEADER, keepalive_s=30))
    s.tick(100.0)
    assert s.next_deadline() == 110.0
    s.tick(110.0)
    assert outbox(s) == encode_keepalive()
    s.receive_data(encode_keepalive())
    assert drain(s) == []
    s.tick(115.0)  # the peer's keepalive counts as heard at 115
    assert s.next_deadline() == 120.0
    s.tick(120.0)
    assert outbox(s) == encode_keepalive()
    s.tick(135.0)  # 20 s since we last heard anything: 2 x keepalive
    assert outbox(s) == encode_shutdown()
    assert drain(s) == [SessionTerminatedV3(ShutdownReason.UNSPECIFIED, False), ConnectionClosed(clean=False)]
    assert s.next_deadline() is None


def test_idle_timeout_shuts_down_with_its_reason() -> None:
    s = established(attrs.evolve(A, idle_timeout_s=60.0))
    s.tick(0.0)
    s.send_bundle(b"x")
    outbox(s)
    s.tick(30.0)  # data moved: idle clock restarts at 30
    feed(s, encode_ack_segment(1))
    s.tick(89.0)
    assert outbox(s) == b""
    s.tick(90.0)
    assert outbox(s) == encode_shutdown(ShutdownReason.IDLE_TIMEOUT)
    assert drain(s) == [SessionTerminatedV3(ShutdownReason.IDLE_TIMEOUT, by_peer=False)]
    assert s.state is State.CLOSING
    s.tick(100.0)  # the peer never answers
    assert drain(s) == [ConnectionClosed(clean=False)]


def test_shutdown_timer_starts_at_the_tick_after_terminate() -> None:
    s = established(attrs.evolve(A, shutdown_timeout_s=10.0))
    s.tick(40.0)
    s.terminate()
    assert s.next_deadline() == 0.0
    s.tick(50.0)
    assert s.next_deadline() == 60.0
    s.tick(59.0)
    assert s.state is State.CLOSING
    s.tick(60.0)
    assert drain(s)[-1] == ConnectionClosed(clean=False)
    assert outbox(s) == encode_shutdown()  # written once, at terminate


def test_contact_timeout() -> None:
    s = TcpclV3Session(Role.ACTIVE, attrs.evolve(A, contact_timeout_s=5.0))
    outbox(s)
    assert s.next_deadline() == 0.0
    s.tick(1000.0)
    assert s.next_deadline() == 1005.0
    s.receive_data(b"dtn!\x03")  # half a header, then silence
    s.tick(1005.0)
    assert outbox(s) == encode_shutdown()
    assert drain(s)[-1] == ConnectionClosed(clean=False)


# --- shutdown --------------------------------------------------------------------------


def test_shutdown_with_reason_and_delay_is_answered() -> None:
    s = established()
    events = feed(s, encode_shutdown(ShutdownReason.BUSY, 3600))
    assert events == [SessionTerminatedV3(ShutdownReason.BUSY, True, 3600), ConnectionClosed(clean=True)]
    assert outbox(s) == encode_shutdown()


def test_unassigned_shutdown_reason_reported_as_number() -> None:
    s = established()
    events = feed(s, b"\x52\x99")
    assert events[0] == SessionTerminatedV3(0x99, True, None)


def test_pyd3tn_style_shutdown_then_eof() -> None:
    s = established(peer=ContactHeader(ContactFlags.NONE, 0, "dtn://pyd3tn/"))
    events = feed(s, encode_data_segment(b"bundle", start=True, end=True) + b"\x50")
    s.receive_data(b"")  # the EOF after a SHUTDOWN changes nothing
    assert s.next_event() == ConnectionClosed(clean=True)
    assert events == [
        TransferStarted(0, None),
        BundleReceived(0, b"bundle"),
        SessionTerminatedV3(ShutdownReason.UNSPECIFIED, True, None),
        ConnectionClosed(clean=True),
    ]
    s.ack(0)  # acks were not negotiated: accepted, nothing written
    assert outbox(s) == encode_shutdown()


def test_unfinished_transfers_reported_when_the_session_ends() -> None:
    s = established(attrs.evolve(A, segment_size=2))
    s.send_bundle(b"abcd")  # 0: half sent, then cut by our SHUTDOWN
    s.send_bundle(b"never")  # 1: not started
    assert s.data_to_send() == encode_data_segment(b"ab", start=True, end=False)
    feed(s, encode_data_segment(b"in", start=True, end=False))  # the peer's, half received
    s.terminate()
    assert drain(s) == [
        SessionTerminatedV3(ShutdownReason.UNSPECIFIED, by_peer=False),
        TransferRefused(1, RefusalReason.UNKNOWN, by_peer=False),
    ]
    assert outbox(s) == encode_ack_segment(2) + encode_shutdown()  # no data after SHUTDOWN
    assert feed(s, encode_ack_segment(2)) == [TransferAcked(0, 2, False)]  # acks still count
    s.receive_data(b"")
    assert drain(s) == [
        TransferFailed(0, outgoing=False),
        TransferFailed(0, outgoing=True),
        ConnectionClosed(clean=True),
    ]


def test_half_sent_bundle_without_acks_fails_at_terminate() -> None:
    s = established(attrs.evolve(A, segment_size=2), ContactHeader(ContactFlags.NONE, 0, "p"))
    s.send_bundle(b"abcd")
    s.data_to_send()
    s.terminate()
    assert drain(s) == [
        SessionTerminatedV3(ShutdownReason.UNSPECIFIED, by_peer=False),
        TransferFailed(0, outgoing=True),
    ]


def test_eof_without_shutdown_is_unclean() -> None:
    s = established()
    s.receive_data(b"")
    assert drain(s) == [ConnectionClosed(clean=False)]


def test_refusing_setup_before_the_peer_header() -> None:
    s = TcpclV3Session(Role.PASSIVE, A)
    outbox(s)
    s.terminate(ShutdownReason.BUSY, reconnect_delay_s=60)
    assert outbox(s) == encode_shutdown(ShutdownReason.BUSY, 60)
    # The peer's header crossed our SHUTDOWN, then its own SHUTDOWN arrives.
    events = feed(s, PEER_HEADER.encode() + encode_shutdown())
    assert events == [
        SessionTerminatedV3(ShutdownReason.BUSY, False, 60),
        SessionTerminatedV3(ShutdownReason.UNSPECIFIED, True, None),
        ConnectionClosed(clean=True),
    ]
    assert outbox(s) == b""  # we already sent ours


# --- caller misuse ---------------------------------------------------------------------


def test_local_protocol_errors() -> None:
    s = established()
    with pytest.raises(LocalProtocolError):
        s.send_bundle(b"")
    with pytest.raises(LocalProtocolError):
        s.ack(0)  # nothing received
    feed(s, encode_data_segment(b"ab", start=True, end=False))
    with pytest.raises(LocalProtocolError):
        s.ack(0)  # not complete
    feed(s, encode_data_segment(b"c", start=False, end=True))
    s.ack(0)
    with pytest.raises(LocalProtocolError):
        s.ack(0)  # twice
    s.terminate()
    with pytest.raises(LocalProtocolError):
        s.send_bundle(b"late")
    feed(s, encode_data_segment(b"z", start=True, end=False))
    with pytest.raises(LocalProtocolError):
        s.refuse(1, 9)  # type: ignore[arg-type]  # not a refusal reason
    no_refusal = established(peer=ContactHeader(ContactFlags.REQUEST_ACK, 0, "p"))
    feed(no_refusal, encode_data_segment(b"a", start=True, end=True))
    with pytest.raises(LocalProtocolError):
        no_refusal.refuse(0)
    closed = established()
    feed(closed, encode_data_segment(b"q", start=True, end=True) + encode_shutdown())
    closed.ack(0)  # after the close: accepted, nothing more written
    assert outbox(closed) == encode_shutdown()
    with pytest.raises(LocalProtocolError):
        closed.terminate()
    with pytest.raises(ValueError):
        TcpclV3Config(local_eid="x", keepalive_s=70000)


# --- peer violations -------------------------------------------------------------------


def violation_of(s: TcpclV3Session, wire: bytes) -> tuple[list[Event], bytes]:
    events = feed(s, wire)
    return events, outbox(s)


@pytest.mark.parametrize(
    ("wire", "rule"),
    [
        (b"\x70", "§5.1"),
        (b"\x00", "§5.1"),
        (encode_data_segment(b"a", start=False, end=True), "§5.2"),
        (encode_data_segment(b"a", start=True, end=False) + encode_data_segment(b"b", start=True, end=True), "§5.2"),
        (encode_ack_segment(1), "§5.3"),
        (encode_data_segment(b"a", start=True, end=False) + encode_length(3), "§5.5"),
        (encode_length(2) + encode_data_segment(b"abc", start=True, end=True), "§5.5"),
        (encode_length(3) + encode_data_segment(b"ab", start=True, end=True), "§5.5"),
        (b"\x13" + b"\xff" * 10, "RFC 6256"),
        (b"\x51" + b"\x82" + b"\x80" * 8 + b"\x00", "§6.1"),
        (encode_refuse_bundle(RefusalReason.UNKNOWN), "§5.4"),
    ],
)
def test_peer_violations_shut_the_session_down(wire: bytes, rule: str) -> None:
    s = established()
    events, sent = violation_of(s, wire)
    violations = of(events, ProtocolViolation)
    assert len(violations) == 1
    assert isinstance(violations[0].error, TcpclV3Error)
    assert rule in violations[0].error.rule
    after = events[events.index(violations[0]) + 1 :]
    assert after[0] == SessionTerminatedV3(ShutdownReason.UNSPECIFIED, False)
    assert after[-1] == ConnectionClosed(clean=False)
    assert all(e == TransferFailed(0, outgoing=False) for e in after[1:-1])  # a bundle it cut short
    assert sent.endswith(encode_shutdown())
    assert s.buffered == 0


def test_acks_beyond_what_was_sent_and_without_negotiation() -> None:
    s = established()
    s.send_bundle(b"abc")
    outbox(s)
    events = feed(s, encode_ack_segment(4))
    assert of(events, ProtocolViolation)
    plain = established(peer=ContactHeader(ContactFlags.NONE, 0, "p"))
    plain.send_bundle(b"abc")
    outbox(plain)
    assert of(feed(plain, encode_ack_segment(3)), ProtocolViolation)


def test_bad_magic_closes_without_shutdown() -> None:
    s = TcpclV3Session(Role.PASSIVE, A)
    outbox(s)
    events = feed(s, b"GET / HTTP/1.1\r\n")
    assert isinstance(events[0], ProtocolViolation)
    assert events[-1] == ConnectionClosed(clean=False)
    assert outbox(s) == b""


def test_version_mismatch_answered_with_its_reason() -> None:
    s = TcpclV3Session(Role.PASSIVE, A)
    outbox(s)
    events = feed(s, b"dtn!\x04\x00\x00\x00\x01x")
    assert isinstance(events[0], ProtocolViolation)
    assert outbox(s) == encode_shutdown(ShutdownReason.VERSION_MISMATCH)


def test_eid_length_bounded_before_buffering() -> None:
    s = TcpclV3Session(Role.PASSIVE, attrs.evolve(A, max_eid_length=16))
    outbox(s)
    events = feed(s, b"dtn!\x03\x00\x00\x00" + sdnv.encode(1 << 30))
    assert isinstance(events[0], ProtocolViolation)
    assert "§4.1" in events[0].error.rule
    assert events[-1] == ConnectionClosed(clean=False)


def test_non_utf8_eid() -> None:
    s = TcpclV3Session(Role.PASSIVE, A)
    outbox(s)
    assert isinstance(feed(s, b"dtn!\x03\x00\x00\x00\x01\xff")[0], ProtocolViolation)


# --- hostile streams -------------------------------------------------------------------

_message = st.one_of(
    st.builds(encode_data_segment, st.binary(max_size=40), start=st.booleans(), end=st.booleans()),
    st.builds(encode_ack_segment, st.integers(0, 100)),
    st.builds(encode_refuse_bundle, st.sampled_from(RefusalReason)),
    st.just(encode_keepalive()),
    st.builds(encode_length, st.integers(0, 100)),
    st.builds(encode_shutdown, st.sampled_from([None, *ShutdownReason]), st.one_of(st.none(), st.integers(0, 999))),
    st.binary(min_size=1, max_size=12),
)

_DOCUMENTED = (
    SessionEstablished,
    TransferStarted,
    BundleReceived,
    TransferAcked,
    TransferRefused,
    TransferFailed,
    SessionTerminated,
    ProtocolViolation,
    ConnectionClosed,
)


@settings(max_examples=200)
@given(
    prefix=st.sampled_from([b"", PEER_HEADER.encode()]),
    messages=st.lists(_message, max_size=12),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
    eof=st.booleans(),
    ack_everything=st.booleans(),
)
def test_arbitrary_streams_only_documented_reactions(
    prefix: bytes, messages: list[bytes], cuts: list[int], eof: bool, ack_everything: bool
) -> None:
    limit = 64
    s = TcpclV3Session(Role.PASSIVE, attrs.evolve(A, max_bundle_size=limit, keepalive_s=5))
    s.send_bundle(b"some outgoing bundle")
    wire = prefix + b"".join(messages)
    chunks = [*split(wire, cuts), b""] if eof else split(wire, cuts)
    now = 0.0
    for chunk in chunks:
        s.receive_data(chunk)
        for event in drain(s):
            assert isinstance(event, _DOCUMENTED)
            if isinstance(event, BundleReceived):
                assert len(event.data) <= limit
                if ack_everything:
                    s.ack(event.transfer_id)
        assert s.buffered <= limit + 32 + len(chunk)
        outbox(s)
        now += 3.0
        s.tick(now)
    assert s.state in set(State)


# --- two sessions under random interleavings -------------------------------------------


class TwoSessions(RuleBasedStateMachine):
    """Both ends are ours; the wire delivers bytes in arbitrary slices at arbitrary times, and
    each runtime acks or refuses whenever it likes. Nothing may look like a violation, and at
    the end every bundle sent has exactly one outcome that matches what the receiver decided."""

    @initialize(
        acks=st.booleans(),
        refusal=st.booleans(),
        length=st.booleans(),
        seg_x=st.integers(1, 40),
        seg_y=st.integers(1, 40),
    )
    def setup(self, acks: bool, refusal: bool, length: bool, seg_x: int, seg_y: int) -> None:
        self.x = TcpclV3Session(
            Role.ACTIVE, attrs.evolve(A, request_ack=acks, allow_refusal=refusal, request_length=length, segment_size=seg_x)
        )
        self.y = TcpclV3Session(Role.PASSIVE, attrs.evolve(B, allow_refusal=refusal, segment_size=seg_y))
        self.sides = (self.x, self.y)
        self.peer = {id(self.x): self.y, id(self.y): self.x}
        self.wire: dict[int, bytearray] = {id(self.x): bytearray(), id(self.y): bytearray()}
        self.sent: dict[int, list[bytes]] = {id(self.x): [], id(self.y): []}
        self.got: dict[int, dict[int, bytes]] = {id(self.x): {}, id(self.y): {}}
        self.undecided: dict[int, set[int]] = {id(self.x): set(), id(self.y): set()}
        self.decided: dict[int, dict[int, str]] = {id(self.x): {}, id(self.y): {}}
        self.outcome: dict[int, dict[int, str]] = {id(self.x): {}, id(self.y): {}}
        self.violations: list[Event] = []

    def handle(self, s: TcpclV3Session, events: list[Event]) -> None:
        me = id(s)
        for e in events:
            if isinstance(e, ProtocolViolation):
                self.violations.append(e)
            elif isinstance(e, TransferStarted):
                self.undecided[me].add(e.transfer_id)
            elif isinstance(e, BundleReceived):
                self.got[me][e.transfer_id] = e.data
            elif isinstance(e, TransferAcked) and e.complete:
                assert e.transfer_id not in self.outcome[me]
                self.outcome[me][e.transfer_id] = "acked"
            elif isinstance(e, TransferRefused | TransferFailed) and (
                not isinstance(e, TransferFailed) or e.outgoing
            ):
                assert e.transfer_id not in self.outcome[me]
                self.outcome[me][e.transfer_id] = "refused" if isinstance(e, TransferRefused) else "failed"

    @rule(x_side=st.booleans(), data=st.binary(min_size=1, max_size=60))
    def send(self, x_side: bool, data: bytes) -> None:
        s = self.x if x_side else self.y
        if s.state in (State.AWAIT_CONTACT, State.ESTABLISHED):
            assert s.send_bundle(data) == len(self.sent[id(s)])
            self.sent[id(s)].append(data)

    @rule(x_side=st.booleans(), n=st.integers(1, 80))
    def deliver(self, x_side: bool, n: int) -> None:
        src = self.x if x_side else self.y
        dst = self.peer[id(src)]
        wire = self.wire[id(dst)]
        wire += src.data_to_send()
        chunk, wire[:] = bytes(wire[:n]), wire[n:]
        if chunk:
            dst.receive_data(chunk)
            self.handle(dst, drain(dst))

    @rule(x_side=st.booleans(), pick=st.integers(0, 1000), refuse=st.booleans())
    def decide(self, x_side: bool, pick: int, refuse: bool) -> None:
        s = self.x if x_side else self.y
        me = id(s)
        complete = sorted(t for t in self.undecided[me] if t in self.got[me])
        refusable = sorted(self.undecided[me])
        assert s.negotiated is not None or not refusable
        if refuse and refusable and s.negotiated is not None and s.negotiated.refusal:
            t = refusable[pick % len(refusable)]
            s.refuse(t)
            self.decided[me][t] = "refused"
        elif complete:
            t = complete[pick % len(complete)]
            s.ack(t)
            self.decided[me][t] = "acked"
        else:
            return
        self.undecided[me].discard(t)

    @invariant()
    def no_violation(self) -> None:
        assert self.violations == []
        for s in self.sides:
            for t, data in self.got[id(s)].items():
                assert data == self.sent[id(self.peer[id(s)])][t]

    def teardown(self) -> None:
        if not hasattr(self, "x"):
            return
        for _ in range(100):  # settle: deliver everything, ack what is complete
            moved = False
            for s in self.sides:
                for t in sorted(self.undecided[id(s)] & set(self.got[id(s)])):
                    s.ack(t)
                    self.decided[id(s)][t] = "acked"
                    self.undecided[id(s)].discard(t)
                dst = self.peer[id(s)]
                data = bytes(self.wire[id(dst)]) + outbox(s)
                self.wire[id(dst)].clear()
                if data:
                    moved = True
                    dst.receive_data(data)
                    self.handle(dst, drain(dst))
            if not moved:
                break
        assert self.violations == []
        acks = self.x.negotiated is not None and self.x.negotiated.acks
        for s in self.sides:
            peer = self.peer[id(s)]
            if s.negotiated is None:
                continue
            for t in range(len(self.sent[id(s)])):
                if acks:
                    # Exactly one outcome, and it is what the receiving runtime decided.
                    assert self.outcome[id(s)][t] == self.decided[id(peer)][t]
                else:
                    assert t in self.got[id(peer)]
            assert s.outstanding_transfers == frozenset()


TestTwoSessions = TwoSessions.TestCase
TestTwoSessions.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)


# --- batched events ----------------------------------------------------------------------


def _batched_session(batch: bool) -> TcpclV3Session:
    s = TcpclV3Session(Role.PASSIVE, A, batch_events=batch)
    outbox(s)
    feed(s, PEER_HEADER.encode())
    return s


def _flat(events: list[Event]) -> list[Event]:
    """Events with each batch spelt out as single ones, and no TransferStarted."""
    out: list[Event] = []
    for e in events:
        if isinstance(e, BundlesReceived):
            out += [BundleReceived(t, d) for t, d in zip(e.transfer_ids, e.data, strict=True)]
        elif not isinstance(e, TransferStarted):
            out.append(e)
    return out


@settings(max_examples=150)
@given(
    bundles=st.lists(st.binary(min_size=1, max_size=90), min_size=1, max_size=8),
    segment=st.integers(1, 100),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
)
def test_batched_events_carry_the_same_bundles_and_acks_under_any_split(
    bundles: list[bytes], segment: int, cuts: list[int]
) -> None:
    wire = b"".join(
        encode_data_segment(b[i : i + segment], start=i == 0, end=i + segment >= len(b))
        for b in bundles
        for i in range(0, len(b), segment)
    )
    runs: dict[bool, tuple[list[Event], bytes]] = {}
    for batch in (False, True):
        s = _batched_session(batch)
        events = feed(s, wire, cuts)
        for e in events:
            if isinstance(e, BundleReceived):
                s.ack(e.transfer_id)
            elif isinstance(e, BundlesReceived):
                assert batch
                for tid in e.transfer_ids:
                    s.ack(tid)
        runs[batch] = (events, outbox(s))
    assert _flat(runs[True][0]) == _flat(runs[False][0])
    assert [e.data for e in _flat(runs[True][0]) if isinstance(e, BundleReceived)] == bundles
    assert runs[True][1] == runs[False][1]  # the same ACK_SEGMENTs, in the same order


def test_bundles_back_to_back_are_one_event_and_an_unfinished_one_starts_after_it() -> None:
    s = _batched_session(True)
    events = feed(
        s,
        encode_data_segment(b"a", start=True, end=True)
        + encode_data_segment(b"bb", start=True, end=True)
        + encode_data_segment(b"ccc", start=True, end=True)
        + encode_data_segment(b"d", start=True, end=False),
    )
    assert events == [
        BundlesReceived((0, 1, 2), (b"a", b"bb", b"ccc")),
        TransferStarted(3, None),
    ]
    events = feed(s, encode_data_segment(b"d", start=False, end=True) + encode_shutdown())
    assert events[0] == BundleReceived(3, b"dd")
    assert isinstance(events[1], SessionTerminated)
