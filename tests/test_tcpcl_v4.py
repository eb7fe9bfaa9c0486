"""TCPCLv4 (RFC 9174): codec vectors and round trips, and the session state machine."""

from __future__ import annotations

import struct

import pytest
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.tcpcl.common import (
    NEED_DATA,
    BundleReceived,
    ConnectionClosed,
    ConvergenceLayerError,
    Event,
    MessageRejected,
    ProtocolViolation,
    ReceiveBuffer,
    Role,
    SessionEstablished,
    SessionTerminated,
    StartTls,
    TransferAcked,
    TransferFailed,
    TransferRefused,
    TransferStarted,
)
from fleetwire.protocol.tcpcl.v4 import (
    ACCEPTS,
    TRANSITIONS,
    Input,
    SessionConfig,
    State,
    TcpclV4Session,
    VersionMismatch,
    diagram,
)
from fleetwire.protocol.tcpcl.v4_messages import (
    BadMagic,
    ContactHeader,
    DecodeLimits,
    ExtensionItem,
    Keepalive,
    MalformedMessage,
    Message,
    MsgReject,
    RefuseReason,
    RejectReason,
    SegmentFlags,
    SegmentTooLarge,
    SessInit,
    SessTerm,
    SessTermFlags,
    TermReason,
    UnknownMessageType,
    XferAck,
    XferRefuse,
    XferSegment,
    decode_contact_header,
    decode_message,
)
from hypothesis import given
from hypothesis import strategies as st

START, END = SegmentFlags.START, SegmentFlags.END
LIMITS = DecodeLimits(segment_mru=1 << 20)


# --- helpers ---------------------------------------------------------------------------


def decode_all(data: bytes, contact: bool = False) -> list[Message | ContactHeader]:
    """Every message in ``data`` (our own output): must decode completely and cleanly."""
    buf = ReceiveBuffer()
    buf.extend(data)
    out: list[Message | ContactHeader] = []
    if contact:
        header = decode_contact_header(buf)
        assert header is not None
        out.append(header)
    while buf.size:
        message = decode_message(buf, LIMITS)
        assert message is not None, "truncated output"
        out.append(message)
    return out


def drain(session: TcpclV4Session) -> list[Event]:
    events: list[Event] = []
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            return events
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


class Pair:
    """Two sessions wired back to back; ``pump`` moves bytes until both are quiet."""

    def __init__(
        self,
        active: SessionConfig | None = None,
        passive: SessionConfig | None = None,
        chunk: int | None = None,
        auto_ack: bool = True,
    ) -> None:
        self.a = TcpclV4Session(Role.ACTIVE, active or SessionConfig(node_id="ipn:1.0"), now=0.0)
        self.p = TcpclV4Session(Role.PASSIVE, passive or SessionConfig(node_id="ipn:2.0"), now=0.0)
        self.events: dict[str, list[Event]] = {"a": [], "p": []}
        self.wire: dict[str, bytearray] = {"a": bytearray(), "p": bytearray()}  # bytes each sent
        self.chunk = chunk
        self.auto_ack = auto_ack

    def pump(self, rounds: int = 100_000) -> None:
        for _ in range(rounds):
            moved = False
            for name, src, dst in (("a", self.a, self.p), ("p", self.p, self.a)):
                data = src.data_to_send()
                if data:
                    moved = True
                    self.wire[name] += data
                    step = self.chunk or len(data)
                    for i in range(0, len(data), step):
                        dst.receive_data(data[i : i + step])
            for name, session in (("a", self.a), ("p", self.p)):
                if self.events[name] and isinstance(self.events[name][-1], ConnectionClosed):
                    continue
                for event in drain(session):
                    moved = True
                    self.events[name].append(event)
                    if self.auto_ack and isinstance(event, BundleReceived):
                        session.ack(event.transfer_id)
            if not moved:
                return
        raise AssertionError("sessions did not settle")

    def of(self, name: str, kind: type) -> list:
        return [e for e in self.events[name] if isinstance(e, kind)]


def established_pair(**kwargs: object) -> Pair:
    pair = Pair(**kwargs)  # type: ignore[arg-type]
    pair.pump()
    assert pair.a.state is State.ESTABLISHED and pair.p.state is State.ESTABLISHED
    return pair


def passive_established(
    config: SessionConfig | None = None, peer: SessInit | None = None
) -> TcpclV4Session:
    """A passive session driven by hand-written peer bytes up to ESTABLISHED; outbox drained."""
    s = TcpclV4Session(
        Role.PASSIVE,
        config or SessionConfig(node_id="ipn:2.0", segment_mru=1000, transfer_mru=5000),
        now=0.0,
    )
    s.receive_data(
        ContactHeader().encode() + (peer or SessInit(30, 1 << 16, 1 << 20, "ipn:1.0")).encode()
    )
    events = drain(s)
    assert any(isinstance(e, SessionEstablished) for e in events)
    s.data_to_send()
    s.tick(0.0)  # the runtime ticks whenever it wakes (see the contract in common)
    return s


def feed(
    session: TcpclV4Session, *messages: Message
) -> tuple[list[Event], list[Message | ContactHeader]]:
    session.receive_data(b"".join(m.encode() for m in messages))
    events = drain(session)
    return events, decode_all(session.data_to_send())


# --- the table is the spec -------------------------------------------------------------


def test_transition_table_is_closed_and_every_state_reaches_closed() -> None:
    assert set(TRANSITIONS) == set(State) == set(ACCEPTS)
    for state, moves in TRANSITIONS.items():
        assert set(moves.values()) <= set(State)
        if state is not State.CLOSED:
            assert moves[Input.ABORT] is State.CLOSED
    assert TRANSITIONS[State.CLOSED] == {}
    text = diagram()
    assert text.count("-->") == sum(map(len, TRANSITIONS.values())) + 2
    assert "established --> ending: term-sent" in text


def test_transfer_id_exhaustion_terminates_with_resource_exhaustion() -> None:
    """§5.2.1: after the last 64-bit Transfer ID the session ends, "Resource Exhaustion"."""
    pair = established_pair()
    pair.a._next_tid = 2**64 - 1
    assert pair.a.send_bundle(b"last") == 2**64 - 1
    with pytest.raises(LocalProtocolError):
        pair.a.send_bundle(b"one too many")
    assert SessTerm(0, TermReason.RESOURCE_EXHAUSTION) in decode_all(pair.a.data_to_send())
    assert pair.a.state is State.ENDING


# --- codec -----------------------------------------------------------------------------


def test_contact_header_vector() -> None:
    """§4.2 Figure 16: magic 'dtn!', version 4, flags."""
    assert ContactHeader(flags=1).encode() == b"dtn!\x04\x01"
    buf = ReceiveBuffer()
    buf.extend(b"dtn!\x04\x01rest")
    assert decode_contact_header(buf) == ContactHeader(4, 1)
    assert buf.size == 4


def test_bad_magic_is_refused_at_the_first_wrong_byte() -> None:
    buf = ReceiveBuffer()
    buf.extend(b"GE")
    with pytest.raises(BadMagic):
        decode_contact_header(buf)


def test_sess_init_and_segment_vectors_follow_the_rfc_layout() -> None:
    """§4.6 Figure 19, §5.2.2 Figure 22, §5.2.5.1 Figure 26, built field by field."""
    init = SessInit(
        30, 0x1000, 0x100000, "ipn:1.0", (ExtensionItem(0x0102, b"\xaa", critical=True),)
    )
    expected = (
        b"\x07"
        + struct.pack(">H", 30)
        + struct.pack(">Q", 0x1000)
        + struct.pack(">Q", 0x100000)
        + struct.pack(">H", 7)
        + b"ipn:1.0"
        + struct.pack(">I", 6)
        + b"\x01\x01\x02\x00\x01\xaa"
    )
    assert init.encode() == expected
    seg = XferSegment(START, 7, b"abc", (ExtensionItem(1, struct.pack(">Q", 10)),))
    assert seg.encode() == (
        b"\x01\x02"
        + struct.pack(">Q", 7)
        + struct.pack(">I", 13)
        + b"\x00\x00\x01\x00\x08"
        + struct.pack(">Q", 10)
        + struct.pack(">Q", 3)
        + b"abc"
    )
    assert XferSegment(END, 7, b"z").encode() == b"\x01\x01" + struct.pack(">QQ", 7, 1) + b"z"
    assert XferAck(END, 7, 13).encode() == b"\x02\x01" + struct.pack(">QQ", 7, 13)
    assert XferRefuse(RefuseReason.NO_RESOURCES, 7).encode() == b"\x03\x02" + struct.pack(">Q", 7)
    assert Keepalive().encode() == b"\x04"
    assert SessTerm(SessTermFlags.REPLY, TermReason.BUSY).encode() == b"\x05\x01\x03"
    assert MsgReject(RejectReason.UNEXPECTED, 0x07).encode() == b"\x06\x03\x07"


items = st.lists(
    st.builds(ExtensionItem, st.integers(0, 0xFFFF), st.binary(max_size=20), st.booleans()),
    max_size=3,
).map(tuple)
messages = st.one_of(
    st.builds(
        SessInit,
        st.integers(0, 0xFFFF),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**64 - 1),
        st.sampled_from(["", "ipn:1.0", "dtn://node-ü/"]),
        items,
    ),
    st.builds(
        XferSegment, st.just(START), st.integers(0, 2**64 - 1), st.binary(max_size=50), items
    ),
    st.builds(
        XferSegment, st.sampled_from([0, END]), st.integers(0, 2**64 - 1), st.binary(max_size=50)
    ),
    st.builds(XferAck, st.integers(0, 255), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.builds(XferRefuse, st.integers(0, 255), st.integers(0, 2**64 - 1)),
    st.just(Keepalive()),
    st.builds(SessTerm, st.integers(0, 255), st.integers(0, 255)),
    st.builds(MsgReject, st.integers(0, 255), st.integers(0, 255)),
)


@given(st.lists(messages, max_size=8), st.data())
def test_codec_round_trips_at_any_split(msgs: list[Message], data: st.DataObject) -> None:
    wire = b"".join(m.encode() for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    buf, out = ReceiveBuffer(), []
    for start, stop in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        buf.extend(wire[start:stop])
        while (m := decode_message(buf, LIMITS)) is not None:
            out.append(m)
    assert out == msgs and buf.size == 0


def test_decoder_refuses_unknown_type_and_oversized_segment_before_buffering() -> None:
    buf = ReceiveBuffer()
    buf.extend(b"\x08")
    with pytest.raises(UnknownMessageType):
        decode_message(buf, LIMITS)
    buf = ReceiveBuffer()
    buf.extend(b"\x01\x01" + struct.pack(">QQ", 1, 2**63))  # announces 8 EiB: header only
    with pytest.raises(SegmentTooLarge) as info:
        decode_message(buf, DecodeLimits(segment_mru=100))
    assert info.value.data_length == 2**63 and buf.size == 0


@given(st.binary(max_size=300), st.integers(1, 64), st.integers(0, 32))
def test_decoder_on_arbitrary_bytes_raises_only_typed_errors(
    data: bytes, mru: int, ext: int
) -> None:
    """Hostile bytes: a message, NEED_DATA, or a ConvergenceLayerError naming the rule."""
    limits = DecodeLimits(segment_mru=mru, max_extensions_length=ext)
    buf = ReceiveBuffer()
    buf.extend(data)
    for _ in range(len(data) + 1):
        before = buf.size
        try:
            message = decode_message(buf, limits)
        except ConvergenceLayerError as error:
            assert error.rule
            if not isinstance(error, (SegmentTooLarge, MalformedMessage)):
                assert buf.size == before  # unrecoverable: nothing consumed, session closes
            break
        if message is None:
            assert buf.size == before and buf.size < limits.max_message_size
            break
        assert buf.size < before
        if isinstance(message, XferSegment):
            assert len(message.data) <= mru


# --- establishment and negotiation -----------------------------------------------------


def test_session_establishes_and_negotiates_per_section_4_7() -> None:
    pair = established_pair(
        active=SessionConfig(node_id="ipn:1.0", keepalive_s=30, segment_mru=500, transfer_mru=9000),
        passive=SessionConfig(
            node_id="dtn://two/", keepalive_s=45, segment_mru=700, transfer_mru=8000
        ),
    )
    (ea,) = pair.of("a", SessionEstablished)
    (ep,) = pair.of("p", SessionEstablished)
    assert ea == SessionEstablished("dtn://two/", 30, 700, 8000)
    assert ep == SessionEstablished("ipn:1.0", 30, 500, 9000)
    assert pair.a.idle_timeout_s == pair.p.idle_timeout_s == 60.0  # §5.1.1: twice the keepalive
    # Order on the wire (§4.1, §4.4.3): the active sends its contact header and SESS_INIT, the
    # passive answers each.
    a_wire = decode_all(bytes(pair.wire["a"]), contact=True)
    p_wire = decode_all(bytes(pair.wire["p"]), contact=True)
    assert [type(m) for m in a_wire] == [ContactHeader, SessInit]
    assert [type(m) for m in p_wire] == [ContactHeader, SessInit]


def test_passive_sends_nothing_before_the_contact_header_and_active_speaks_first() -> None:
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(), now=0.0)
    assert p.data_to_send() == b""
    a = TcpclV4Session(Role.ACTIVE, SessionConfig(), now=0.0)
    assert a.data_to_send() == b"dtn!\x04\x00"


def test_keepalive_zero_disables_keepalive_and_idle_timeout() -> None:
    pair = established_pair(active=SessionConfig(keepalive_s=0))
    assert pair.a.keepalive_s == pair.p.keepalive_s == 0
    assert pair.a.next_deadline() is None
    pair.a.tick(10_000.0)
    assert pair.a.data_to_send() == b"" and pair.a.state is State.ESTABLISHED


def test_tls_negotiated_when_both_offer_it_and_sess_init_waits_for_the_handshake() -> None:
    pair = Pair(active=SessionConfig(can_tls=True), passive=SessionConfig(can_tls=True))
    pair.pump()
    assert pair.of("a", StartTls) and pair.of("p", StartTls)
    assert pair.a.state is pair.p.state is State.WAIT_TLS
    assert bytes(pair.wire["a"]) == b"dtn!\x04\x01"  # no SESS_INIT in the clear (§4.4.3)
    with pytest.raises(LocalProtocolError):
        pair.a.send_bundle(b"x")
    for s in (pair.a, pair.p):
        assert s.take_trailing_data() == b""
        s.tls_established()
    pair.pump()
    assert pair.a.state is State.ESTABLISHED and pair.p.state is State.ESTABLISHED


def test_tls_trailing_bytes_are_handed_back_not_parsed() -> None:
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(can_tls=True), now=0.0)
    p.receive_data(b"dtn!\x04\x01\x16\x03\x01")  # contact header + start of a TLS ClientHello
    assert isinstance(drain(p)[0], StartTls)
    with pytest.raises(LocalProtocolError):
        p.tls_established()
    assert p.take_trailing_data() == b"\x16\x03\x01"
    p.tls_established()
    assert p.state is State.WAIT_SESS_INIT


def test_tls_only_on_one_side_is_not_used_unless_required() -> None:
    pair = established_pair(active=SessionConfig(can_tls=True))
    assert not pair.of("a", StartTls)
    pair = Pair(active=SessionConfig(can_tls=True, require_tls=True))
    pair.pump()
    (term,) = pair.of("a", SessionTerminated)
    assert term == SessionTerminated(TermReason.CONTACT_FAILURE, by_peer=False)
    assert pair.of("p", SessionTerminated)[0].by_peer


@pytest.mark.parametrize("version", [3, 5, 0])
def test_passive_answers_a_version_mismatch_with_its_header_then_sess_term(version: int) -> None:
    """§4.3: send our contact header, then terminate with "Version mismatch"; then close."""
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(), now=0.0)
    p.receive_data(b"dtn!" + bytes([version, 0]) + b"\x00\x3c\x01")  # a v3 header continues
    events = drain(p)
    violation = next(e for e in events if isinstance(e, ProtocolViolation))
    assert isinstance(violation.error, VersionMismatch) and violation.error.peer_version == version
    assert SessionTerminated(TermReason.VERSION_MISMATCH, by_peer=False) in events
    assert events[-1] == ConnectionClosed(clean=False)
    assert decode_all(p.data_to_send(), contact=True) == [
        ContactHeader(4, 0),
        SessTerm(0, TermReason.VERSION_MISMATCH),
    ]


def test_active_closes_on_a_lower_version_without_sess_term() -> None:
    a = TcpclV4Session(Role.ACTIVE, SessionConfig(), now=0.0)
    a.data_to_send()
    a.receive_data(b"dtn!\x03\x00")
    events = drain(a)
    assert isinstance(events[0], ProtocolViolation) and isinstance(events[0].error, VersionMismatch)
    assert events[-1] == ConnectionClosed(clean=False)
    assert a.data_to_send() == b""


def test_bad_magic_closes_without_sess_term() -> None:
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(), now=0.0)
    p.receive_data(b"GET / HTTP/1.1\r\n")
    events = drain(p)
    assert isinstance(events[0].error, BadMagic)  # type: ignore[union-attr]
    assert events[-1] == ConnectionClosed(clean=False) and p.data_to_send() == b""


def test_unknown_critical_session_extension_is_contact_failure_and_noncritical_is_skipped() -> None:
    ok = passive_established(
        peer=SessInit(30, 1 << 16, 1 << 20, "ipn:1.0", (ExtensionItem(0x99, b"x"),))
    )
    assert ok.state is State.ESTABLISHED
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(), now=0.0)
    p.receive_data(
        ContactHeader().encode()
        + SessInit(
            30, 1 << 16, 1 << 20, "ipn:1.0", (ExtensionItem(0x99, b"x", critical=True),)
        ).encode()
    )
    events = drain(p)
    assert SessionTerminated(TermReason.CONTACT_FAILURE, by_peer=False) in events
    out = decode_all(p.data_to_send(), contact=True)
    assert out[1:] == [SessTerm(0, TermReason.CONTACT_FAILURE)]  # no SESS_INIT of ours
    known = passive_established(
        config=SessionConfig(known_session_extensions=frozenset({0x99})),
        peer=SessInit(30, 1 << 16, 1 << 20, "ipn:1.0", (ExtensionItem(0x99, b"x", critical=True),)),
    )
    assert (
        known.peer_session_init is not None
        and known.peer_session_init.extensions[0].item_type == 0x99
    )


@pytest.mark.parametrize(
    "peer",
    [
        SessInit(30, 10, 1 << 20, "ipn:1.0"),  # dribble-sized Segment MRU (§8.10)
        SessInit(30, 1 << 16, 10, "ipn:1.0"),  # useless Transfer MRU
        SessInit(30, 1 << 16, 1 << 20, "not a uri"),  # §4.6: Node ID must be a URI
    ],
)
def test_unacceptable_sess_init_is_contact_failure(peer: SessInit) -> None:
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(), now=0.0)
    p.receive_data(ContactHeader().encode() + peer.encode())
    events = drain(p)
    assert SessionTerminated(TermReason.CONTACT_FAILURE, by_peer=False) in events
    assert not any(isinstance(e, SessionEstablished) for e in events)


@pytest.mark.parametrize(
    "bad",
    [
        # extension items overrunning their declared length (§4.6)
        SessInit(30, 1 << 16, 1 << 20, "ipn:1.0").encode()[:-4]
        + struct.pack(">I", 3)
        + b"\x00\x00\x01",
        # a Node ID that is not UTF-8 (§4.6)
        SessInit(30, 1 << 16, 1 << 20, "ipn:1.0").encode().replace(b"ipn:1.0", b"ipn:\xff.0"),
    ],
)
def test_malformed_sess_init_fails_reception(bad: bytes) -> None:
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(), now=0.0)
    p.receive_data(ContactHeader().encode() + bad)
    events = drain(p)
    assert isinstance(events[0], ProtocolViolation)
    assert SessionTerminated(TermReason.CONTACT_FAILURE, by_peer=False) in events
    assert decode_all(p.data_to_send(), contact=True)[1:] == [
        SessTerm(0, TermReason.CONTACT_FAILURE)
    ]


# --- rejects ---------------------------------------------------------------------------


def test_unknown_message_type_is_rejected_and_the_connection_closed() -> None:
    s = passive_established()
    s.receive_data(b"\x0f")
    events = drain(s)
    assert events[-1] == ConnectionClosed(clean=False)
    assert decode_all(s.data_to_send()) == [MsgReject(RejectReason.TYPE_UNKNOWN, 0x0F)]


@pytest.mark.parametrize(
    "message",
    [
        SessInit(30, 1 << 16, 1 << 20, "ipn:1.0"),  # SESS_INIT after establishment
        XferAck(0, 99, 1),  # ack of a transfer never started
        XferRefuse(0, 99),  # refusal of a transfer never started
        XferSegment(END, 5, b"x"),  # segment of a transfer that never started
    ],
)
def test_unexpected_messages_get_msg_reject_and_change_nothing(message: Message) -> None:
    s = passive_established()
    events, out = feed(s, message)
    kind = message.encode()[0]
    assert out == [MsgReject(RejectReason.UNEXPECTED, kind)]
    assert isinstance(events[0], ProtocolViolation) and s.state is State.ESTABLISHED


def test_transfer_messages_before_establishment_are_unexpected() -> None:
    s = TcpclV4Session(Role.PASSIVE, SessionConfig(), now=0.0)
    s.receive_data(
        ContactHeader().encode() + Keepalive().encode() + XferSegment(START | END, 0, b"x").encode()
    )
    drain(s)
    out = decode_all(s.data_to_send(), contact=True)
    assert out[1:] == [MsgReject(RejectReason.UNEXPECTED, 4), MsgReject(RejectReason.UNEXPECTED, 1)]
    assert s.state is State.WAIT_SESS_INIT


def test_peer_msg_reject_is_reported_and_never_answered() -> None:
    s = passive_established()
    events, out = feed(s, MsgReject(RejectReason.UNSUPPORTED, 1))
    assert events == [MessageRejected(RejectReason.UNSUPPORTED, 1)] and out == []


# --- transfers -------------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=5),
    back=st.lists(st.integers(0, 3000), max_size=3),
    seg_a=st.integers(64, 700),
    seg_p=st.integers(64, 700),
    chunk=st.integers(1, 400),
)
def test_bundles_of_any_size_cross_at_any_split(
    sizes: list[int], back: list[int], seg_a: int, seg_p: int, chunk: int
) -> None:
    pair = established_pair(
        active=SessionConfig(node_id="ipn:1.0", segment_mru=seg_a, transfer_mru=4000),
        passive=SessionConfig(node_id="ipn:2.0", segment_mru=seg_p, transfer_mru=4000),
        chunk=chunk,
    )
    sent_a = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    sent_p = [bytes([200 - i]) * n for i, n in enumerate(back)]
    ids_a = [pair.a.send_bundle(b) for b in sent_a]
    ids_p = [pair.p.send_bundle(b) for b in sent_p]
    assert ids_a == list(range(len(sizes)))  # §5.2.1: 0, 1, 2, ...
    pair.pump()
    assert [(e.transfer_id, e.data) for e in pair.of("p", BundleReceived)] == list(
        zip(ids_a, sent_a, strict=True)
    )
    assert [(e.transfer_id, e.data) for e in pair.of("a", BundleReceived)] == list(
        zip(ids_p, sent_p, strict=True)
    )
    done_a = [(e.transfer_id, e.acked_length) for e in pair.of("a", TransferAcked) if e.complete]
    assert done_a == [(t, len(b)) for t, b in zip(ids_a, sent_a, strict=True)]
    assert not pair.a.outstanding_transfers and not pair.p.outstanding_transfers
    # Every segment the active sent respects the passive's Segment MRU (§4.6).
    for m in decode_all(bytes(pair.wire["a"]), contact=True):
        if isinstance(m, XferSegment):
            assert len(m.data) <= seg_p
    pair.a.terminate()
    pair.pump()
    assert pair.events["a"][-1] == ConnectionClosed(clean=True)
    assert pair.events["p"][-1] == ConnectionClosed(clean=True)


def test_segments_acks_and_transfer_length_extension_on_the_wire() -> None:
    pair = established_pair(passive=SessionConfig(segment_mru=100))
    pair.a.send_bundle(bytes(250))
    pair.pump()
    segs = [
        m for m in decode_all(bytes(pair.wire["a"]), contact=True) if isinstance(m, XferSegment)
    ]
    assert [(s.flags, len(s.data)) for s in segs] == [(START, 100), (0, 100), (END, 50)]
    assert segs[0].extensions == (ExtensionItem(1, struct.pack(">Q", 250)),)  # §5.2.5.1
    acks = [m for m in decode_all(bytes(pair.wire["p"]), contact=True) if isinstance(m, XferAck)]
    assert [(a.flags, a.length) for a in acks] == [(START, 100), (0, 200), (END, 250)]  # §5.2.3
    single = established_pair()
    single.a.send_bundle(b"abc")
    single.pump()
    (seg,) = [
        m for m in decode_all(bytes(single.wire["a"]), contact=True) if isinstance(m, XferSegment)
    ]
    assert seg.flags == START | END and seg.extensions == ()  # §5.2.5.1: SHOULD NOT on one segment


def test_final_ack_waits_for_the_runtime() -> None:
    pair = established_pair(auto_ack=False)
    tid = pair.a.send_bundle(b"bundle")
    pair.pump()
    assert pair.of("p", BundleReceived) == [BundleReceived(tid, b"bundle")]
    assert pair.p.awaiting_ack == {tid}
    assert not pair.of("a", TransferAcked)  # nothing acked until durable
    pair.p.ack(tid)
    pair.pump()
    assert pair.of("a", TransferAcked) == [TransferAcked(tid, 6, True)]
    with pytest.raises(LocalProtocolError):
        pair.p.ack(tid)


def test_runtime_refusal_of_a_received_bundle() -> None:
    pair = established_pair(auto_ack=False)
    tid = pair.a.send_bundle(b"bundle")
    pair.pump()
    pair.p.refuse(tid, RefuseReason.COMPLETED)
    pair.pump()
    assert pair.of("a", TransferRefused) == [
        TransferRefused(tid, RefuseReason.COMPLETED, by_peer=True)
    ]
    with pytest.raises(LocalProtocolError):
        pair.p.refuse(tid, RefuseReason.UNKNOWN)


def test_bundle_over_peer_transfer_mru_is_our_callers_error() -> None:
    pair = established_pair(passive=SessionConfig(transfer_mru=1000))
    with pytest.raises(LocalProtocolError):
        pair.a.send_bundle(bytes(1001))
    pair.a.send_bundle(bytes(1000))
    assert pair.a.outstanding_transfers == {0}


@pytest.mark.parametrize("reason", [*RefuseReason, 0x7F])
def test_peer_refusal_stops_the_transfer_with_every_reason(reason: int) -> None:
    pair = established_pair(passive=SessionConfig(segment_mru=100))
    tid = pair.a.send_bundle(bytes(1000))
    first = pair.a.data_to_send()  # START segment only
    pair.p.receive_data(first)
    drain(pair.p)
    pair.p.data_to_send()
    pair.a.receive_data(XferRefuse(reason, tid).encode())
    events = drain(pair.a)
    expected = reason if reason in RefuseReason._value2member_map_ else RefuseReason.UNKNOWN
    assert events == [TransferRefused(tid, expected, by_peer=True)]
    assert pair.a.data_to_send() == b""  # §5.2.4: no further segments
    assert not pair.a.outstanding_transfers


def test_unknown_critical_transfer_extension_is_refused_and_later_segments_too() -> None:
    s = passive_established()
    events, out = feed(s, XferSegment(START, 0, b"ab", (ExtensionItem(0x42, b"", critical=True),)))
    assert out == [XferRefuse(RefuseReason.EXTENSION_FAILURE, 0)] and not events
    events, out = feed(s, XferSegment(0, 0, b"cd"), XferSegment(END, 0, b"ef"))
    assert out == [XferRefuse(RefuseReason.EXTENSION_FAILURE, 0)] * 2 and not events
    events, out = feed(
        s, XferSegment(START | END, 1, b"ok", (ExtensionItem(0x42, b"", critical=False),))
    )
    assert events[-1] == BundleReceived(1, b"ok")


@pytest.mark.parametrize(
    "items",
    [
        (ExtensionItem(1, b"\x00" * 4),),  # Transfer Length of the wrong width
        (ExtensionItem(1, struct.pack(">Q", 3)),) * 2,  # §5.2.5.1: at most one
    ],
)
def test_bad_transfer_length_items_are_extension_failures(items: tuple[ExtensionItem, ...]) -> None:
    s = passive_established()
    events, out = feed(s, XferSegment(START, 0, b"abc", items))
    assert out == [XferRefuse(RefuseReason.EXTENSION_FAILURE, 0)] and events == []


def test_runtime_refuses_a_transfer_in_progress_and_later_segments_follow() -> None:
    s = passive_established()
    events, _ = feed(s, XferSegment(START, 0, b"abc", (ExtensionItem(1, struct.pack(">Q", 9)),)))
    assert events == [TransferStarted(0, 9)]
    s.refuse(0, RefuseReason.COMPLETED)  # e.g. the store already holds this bundle
    assert decode_all(s.data_to_send()) == [XferRefuse(RefuseReason.COMPLETED, 0)]
    assert s.reassembly_size == 0
    events, out = feed(s, XferSegment(0, 0, b"def"), XferSegment(END, 0, b"ghi"))
    assert events == [] and out == [XferRefuse(RefuseReason.COMPLETED, 0)] * 2
    with pytest.raises(LocalProtocolError):
        s.refuse(0, RefuseReason.COMPLETED)


def test_malformed_transfer_extensions_refuse_the_transfer() -> None:
    s = passive_established()
    raw = b"\x01\x03" + struct.pack(">QI", 0, 3) + b"\x00\x00\x01" + struct.pack(">Q", 1) + b"x"
    s.receive_data(raw)
    events = drain(s)
    assert isinstance(events[0], ProtocolViolation)
    assert decode_all(s.data_to_send()) == [XferRefuse(RefuseReason.EXTENSION_FAILURE, 0)]


def test_transfer_length_over_our_mru_is_refused_before_any_data() -> None:
    s = passive_established()  # transfer MRU 5000
    length = ExtensionItem(1, struct.pack(">Q", 10_000))
    events, out = feed(s, XferSegment(START, 0, b"x" * 100, (length,)))
    assert out == [XferRefuse(RefuseReason.NO_RESOURCES, 0)] and s.reassembly_size == 0
    assert events == []


def test_reassembly_never_exceeds_the_transfer_mru() -> None:
    s = passive_established()  # segment MRU 1000, transfer MRU 5000
    feed(s, XferSegment(START, 0, bytes(1000)))
    for _ in range(3):
        feed(s, XferSegment(0, 0, bytes(1000)))
    assert s.reassembly_size == 4000
    events, out = feed(s, XferSegment(0, 0, bytes(1000)))
    assert s.reassembly_size == 5000 and out == [XferAck(0, 0, 5000)]
    events, out = feed(s, XferSegment(0, 0, bytes(1)))
    assert out == [XferRefuse(RefuseReason.NO_RESOURCES, 0)]
    assert events == [TransferFailed(0, outgoing=False)] and s.reassembly_size == 0


@pytest.mark.parametrize("actual", [9, 11])
def test_transfer_length_mismatch_is_not_acceptable(actual: int) -> None:
    s = passive_established()
    length = ExtensionItem(1, struct.pack(">Q", 10))
    feed(s, XferSegment(START, 0, bytes(5), (length,)))
    events, out = feed(s, XferSegment(END, 0, bytes(actual - 5)))
    assert out == [XferRefuse(RefuseReason.NOT_ACCEPTABLE, 0)]
    assert events == [TransferFailed(0, outgoing=False)]


def test_oversized_segment_is_rejected_discarded_and_the_session_goes_on() -> None:
    s = passive_established()  # segment MRU 1000
    s.receive_data(b"\x01\x03" + struct.pack(">QIQ", 0, 0, 5000))
    for _ in range(5):
        s.receive_data(bytes(1000))
        drain(s)
        assert s.receive_buffer_size == 0  # discarded as it streams
    events, out = feed(s, XferSegment(START | END, 1, b"next"))
    assert out[:2] == [
        MsgReject(RejectReason.UNSUPPORTED, 1),
        XferRefuse(RefuseReason.NO_RESOURCES, 0),
    ]
    assert events[-1] == BundleReceived(1, b"next")


def test_segment_longer_than_any_bundle_we_take_ends_the_session() -> None:
    s = passive_established()  # transfer MRU 5000
    s.receive_data(b"\x01\x03" + struct.pack(">QIQ", 0, 0, 2**64 - 1))
    events = drain(s)
    assert isinstance(events[0], ProtocolViolation) and isinstance(events[0].error, SegmentTooLarge)
    assert events[1:] == [
        SessionTerminated(TermReason.RESOURCE_EXHAUSTION, by_peer=False),
        ConnectionClosed(clean=False),
    ]
    assert decode_all(s.data_to_send()) == [SessTerm(0, TermReason.RESOURCE_EXHAUSTION)]


def test_reused_transfer_id_is_not_acceptable() -> None:
    s = passive_established()
    feed(s, XferSegment(START | END, 5, b"a"))
    events, out = feed(s, XferSegment(START | END, 5, b"b"))
    assert out == []  # the refusal waits behind the first transfer's ack (receive order)
    assert isinstance(events[0], ProtocolViolation)
    s.ack(5)
    assert decode_all(s.data_to_send()) == [
        XferAck(START | END, 5, 1),
        XferRefuse(RefuseReason.NOT_ACCEPTABLE, 5),
    ]


def test_start_inside_an_unfinished_transfer_abandons_it() -> None:
    s = passive_established()
    feed(s, XferSegment(START, 0, b"half"))
    events, out = feed(s, XferSegment(START | END, 1, b"whole"))
    assert out == [XferRefuse(RefuseReason.NOT_ACCEPTABLE, 0)]
    assert TransferFailed(0, outgoing=False) in events and events[-1] == BundleReceived(1, b"whole")


def test_impossible_ack_length_is_rejected() -> None:
    pair = established_pair()
    tid = pair.a.send_bundle(b"12345")
    pair.a.data_to_send()
    pair.a.receive_data(XferAck(END, tid, 6).encode())
    events = drain(pair.a)
    assert isinstance(events[0], ProtocolViolation)
    assert decode_all(pair.a.data_to_send()) == [MsgReject(RejectReason.UNEXPECTED, 2)]
    assert pair.a.outstanding_transfers == {tid}


# --- termination -----------------------------------------------------------------------


@pytest.mark.parametrize("reason", [*TermReason, 0x55])
def test_peer_termination_is_answered_with_an_identical_reply(reason: int) -> None:
    s = passive_established()
    events, out = feed(s, SessTerm(0, reason))
    expected = reason if reason in TermReason._value2member_map_ else TermReason.UNKNOWN
    assert events[0] == SessionTerminated(expected, by_peer=True)
    assert out == [SessTerm(SessTermFlags.REPLY, reason)]  # §6.1: identical but for REPLY
    assert events[-1] == ConnectionClosed(clean=True)


def test_ending_lets_transfers_in_progress_finish_but_starts_none() -> None:
    pair = established_pair(passive=SessionConfig(segment_mru=100))
    running = pair.a.send_bundle(bytes(300))
    queued = pair.a.send_bundle(b"later")
    pair.p.receive_data(pair.a.data_to_send())  # the first segment of `running` is out
    drain(pair.p)
    pair.a.terminate(TermReason.BUSY)
    events = drain(pair.a)
    assert SessionTerminated(TermReason.BUSY, by_peer=False) in events
    assert TransferRefused(queued, RefuseReason.SESSION_TERMINATING, by_peer=False) in events
    with pytest.raises(LocalProtocolError):
        pair.a.send_bundle(b"no")  # §6.1: no new outgoing transfer
    with pytest.raises(LocalProtocolError):
        pair.a.terminate()
    # The peer may not start one either: its START is refused with "session terminating".
    pair.pump()
    assert pair.p.state is State.ENDING or pair.p.state is State.CLOSED
    assert [e.data for e in pair.of("p", BundleReceived)] == [bytes(300)]
    assert pair.of("a", TransferAcked)[-1] == TransferAcked(running, 300, True)
    assert pair.events["a"][-1] == ConnectionClosed(clean=True)
    assert pair.events["p"][-1] == ConnectionClosed(clean=True)


def test_new_incoming_transfer_while_ending_is_refused_session_terminating() -> None:
    s = passive_established()
    feed(s, XferSegment(START, 0, b"in progress"))  # keeps the session from closing
    s.terminate()
    assert drain(s) == [SessionTerminated(TermReason.UNKNOWN, by_peer=False)]
    s.data_to_send()
    events, out = feed(s, XferSegment(END, 0, b"!"), XferSegment(START | END, 1, b"new"))
    assert events == [BundleReceived(0, b"in progress!")]
    assert out == []  # §5.2.4: no refusal of 1 before 0 is fully acked
    s.ack(0)
    assert decode_all(s.data_to_send()) == [
        XferAck(END, 0, 12),
        XferRefuse(RefuseReason.SESSION_TERMINATING, 1),  # §6.1
    ]


def test_refusals_wait_for_earlier_final_acks() -> None:
    """§5.2.4: every transfer before a refused one is acked (or refused) first."""
    s = passive_established()
    feed(s, XferSegment(START | END, 0, b"kept"))
    big = ExtensionItem(1, struct.pack(">Q", 10**6))  # over our Transfer MRU
    events, out = feed(s, XferSegment(START, 1, b"x", (big,)), XferSegment(0, 1, b"y"))
    assert out == [] and events == []  # refused (no TransferStarted), the refusal held back
    s.refuse(0, RefuseReason.RETRANSMIT)  # the runtime refuses 0 instead of acking it
    assert decode_all(s.data_to_send()) == [
        XferRefuse(RefuseReason.RETRANSMIT, 0),
        XferRefuse(RefuseReason.NO_RESOURCES, 1),
    ]


def test_in_progress_incoming_transfer_finishes_while_ending() -> None:
    s = passive_established()
    feed(s, XferSegment(START, 0, b"in "))
    s.terminate()
    drain(s)
    s.data_to_send()
    events, out = feed(s, XferSegment(END, 0, b"progress"), SessTerm(SessTermFlags.REPLY, 0))
    assert out == []  # no automatic final ack
    assert events[0] == BundleReceived(0, b"in progress")
    assert s.state is State.ENDING  # the final ack is still ours to send
    s.ack(0)
    assert s.next_event() == ConnectionClosed(clean=True)
    assert decode_all(s.data_to_send()) == [XferAck(END, 0, 11)]


def test_second_sess_term_is_unexpected() -> None:
    s = passive_established()
    feed(s, XferSegment(START, 0, b"x"))  # keeps the session open after the exchange
    feed(s, SessTerm(0, 0))
    events, out = feed(s, SessTerm(0, 0))
    assert out == [MsgReject(RejectReason.UNEXPECTED, 5)]
    assert isinstance(events[0], ProtocolViolation)


def test_eof_mid_transfer_fails_transfers_both_ways() -> None:
    pair = established_pair(passive=SessionConfig(segment_mru=100))
    tid = pair.a.send_bundle(bytes(300))
    pair.p.receive_data(pair.a.data_to_send())
    assert drain(pair.p) == [TransferStarted(tid, 300)]
    pair.p.receive_data(b"")
    assert drain(pair.p) == [TransferFailed(tid, outgoing=False), ConnectionClosed(clean=False)]
    pair.a.receive_data(b"")
    assert drain(pair.a) == [TransferFailed(tid, outgoing=True), ConnectionClosed(clean=False)]
    with pytest.raises(LocalProtocolError):
        pair.a.receive_data(b"more")


# --- timers ----------------------------------------------------------------------------


def test_keepalive_sent_after_an_interval_without_transmission() -> None:
    s = passive_established()  # keepalive min(60, 30) = 30
    assert s.keepalive_s == 30 and s.next_deadline() == 30.0
    s.tick(29.9)
    assert s.data_to_send() == b""
    s.tick(30.0)
    assert s.data_to_send() == b"\x04"
    s.tick(45.0)  # the keepalive we just handed out counts as transmission at this tick
    assert s.next_deadline() == 60.0  # idle deadline (2 x 30 from t=0) comes first
    s.receive_data(Keepalive().encode())
    drain(s)
    s.tick(50.0)
    assert s.next_deadline() == 75.0


def test_idle_timeout_terminates_then_a_silent_peer_is_dropped() -> None:
    s = passive_established()
    s.tick(59.0)
    s.data_to_send()
    s.tick(60.0)
    assert drain(s) == [SessionTerminated(TermReason.IDLE_TIMEOUT, by_peer=False)]
    assert SessTerm(0, TermReason.IDLE_TIMEOUT) in decode_all(s.data_to_send())
    assert s.state is State.ENDING
    s.tick(119.0)
    assert s.state is State.ENDING
    s.tick(120.0)
    assert drain(s) == [ConnectionClosed(clean=False)] and s.next_deadline() is None


def test_idle_session_shutdown_counts_only_messages_other_than_keepalives() -> None:
    """§6.2: keepalives keep the connection alive, but not an idle session."""
    config = SessionConfig(segment_mru=1000, transfer_mru=5000, idle_shutdown_s=100)
    s = passive_established(config)
    for t in range(20, 100, 20):
        s.receive_data(Keepalive().encode())
        drain(s)
        s.tick(float(t))
        s.data_to_send()
    feed(s, XferSegment(START | END, 0, b"x"))  # a transfer resets the clock ...
    s.tick(90.0)
    assert s.next_deadline() == 120.0  # ... keepalive deadline first; shutdown at 190
    for t in range(100, 190, 20):
        s.receive_data(Keepalive().encode())
        drain(s)
        s.tick(float(t))
        s.data_to_send()
    s.tick(189.0)
    assert s.state is State.ESTABLISHED  # ... and the unacked bundle keeps it busy anyway
    s.ack(0)
    s.data_to_send()
    s.tick(190.0)
    assert drain(s) == [SessionTerminated(TermReason.IDLE_TIMEOUT, by_peer=False)]


def test_received_messages_postpone_the_idle_timeout() -> None:
    s = passive_established()
    for t in range(10, 200, 10):
        s.receive_data(Keepalive().encode())
        drain(s)
        s.tick(float(t))
        s.data_to_send()
    assert s.state is State.ESTABLISHED


def test_establishment_timeouts() -> None:
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(establish_timeout_s=10), now=100.0)
    assert p.next_deadline() == 110.0
    p.tick(110.0)
    assert drain(p) == [ConnectionClosed(clean=False)] and p.data_to_send() == b""  # §4.1
    p = TcpclV4Session(Role.PASSIVE, SessionConfig(establish_timeout_s=10), now=0.0)
    p.receive_data(ContactHeader().encode())
    drain(p)
    p.data_to_send()
    p.tick(10.0)  # §3.3 Figure 9: SESS_INIT never came
    assert drain(p) == [SessionTerminated(TermReason.IDLE_TIMEOUT, by_peer=False)]
    assert decode_all(p.data_to_send()) == [SessTerm(0, TermReason.IDLE_TIMEOUT)]


def test_caller_misuse_is_local_protocol_error() -> None:
    s = TcpclV4Session(Role.ACTIVE, SessionConfig(), now=0.0)
    with pytest.raises(LocalProtocolError):
        s.send_bundle(b"x")
    with pytest.raises(LocalProtocolError):
        s.ack(0)
    with pytest.raises(LocalProtocolError):
        s.tls_established()
    s.terminate()  # before the contact exchange: just closes
    assert s.next_event() == ConnectionClosed(clean=False)
    with pytest.raises(LocalProtocolError):
        s.terminate()
    with pytest.raises(ValueError):
        SessionConfig(node_id="no scheme")


# --- replies leave in receive order (deployed senders match acks first in, first out) ---


def test_final_acks_leave_in_receive_order_whatever_order_the_store_finishes() -> None:
    s = passive_established()
    feed(s, *(XferSegment(START | END, tid, b"x" * (tid + 1)) for tid in range(4)))
    for tid in (2, 0, 3):  # the store finished these in another order
        s.ack(tid)
    # 0 may go; 1 still waits for the store, so 2 and 3 wait behind it.
    assert decode_all(s.data_to_send()) == [XferAck(START | END, 0, 1)]
    s.ack(1)
    assert decode_all(s.data_to_send()) == [
        XferAck(START | END, 1, 2),
        XferAck(START | END, 2, 3),
        XferAck(START | END, 3, 4),
    ]


def test_next_transfers_segment_acks_wait_behind_the_previous_final_ack() -> None:
    s = passive_established()
    feed(s, XferSegment(START | END, 0, b"one"))
    _, out = feed(s, XferSegment(START, 1, b"ab"), XferSegment(SegmentFlags(0), 1, b"cd"))
    assert out == []  # transfer 0 is not stored yet: its ack comes first
    s.ack(0)
    assert decode_all(s.data_to_send()) == [
        XferAck(START | END, 0, 3),
        XferAck(START, 1, 2),
        XferAck(SegmentFlags(0), 1, 4),
    ]
    _, out = feed(s, XferSegment(END, 1, b"e"))
    assert out == []
    s.ack(1)
    assert decode_all(s.data_to_send()) == [XferAck(END, 1, 5)]


def test_a_refusal_takes_the_place_of_the_ack_it_replaces() -> None:
    s = passive_established()
    feed(s, XferSegment(START | END, 0, b"a"), XferSegment(START | END, 1, b"b"))
    s.refuse(1, RefuseReason.NO_RESOURCES)
    assert s.data_to_send() == b""
    s.ack(0)
    assert decode_all(s.data_to_send()) == [
        XferAck(START | END, 0, 1),
        XferRefuse(RefuseReason.NO_RESOURCES, 1),
    ]


def test_held_segment_acks_are_bounded_by_merging_cumulative_ones() -> None:
    s = passive_established(
        SessionConfig(node_id="ipn:2.0", segment_mru=1000, transfer_mru=50_000, max_held_replies=4)
    )
    feed(s, XferSegment(START | END, 0, b"a"))
    feed(s, XferSegment(START, 1, b"b"), *(XferSegment(SegmentFlags(0), 1, b"c") for _ in range(20)))
    assert len(s._replies) == 4
    s.ack(0)
    out = decode_all(s.data_to_send())
    assert out[0] == XferAck(START | END, 0, 1)
    assert out[-1] == XferAck(SegmentFlags(0), 1, 21)  # cumulative: nothing is lost
    assert len(out) == 4
