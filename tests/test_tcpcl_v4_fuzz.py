"""TCPCLv4 session under hostile input and random operation (RFC 9174).

Two properties:

* any byte stream, cut anywhere, fed to a session produces only RFC-defined reactions: nothing
  escapes ``receive_data``/``next_event``, every byte the session writes back is a well-formed
  TCPCLv4 message of a kind a receiver may send, and the buffers stay within the bounds set by
  our MRUs however the stream is cut;
* two sessions driven by random commands, clock ticks and cut points never lose a bundle:
  every transfer ends acknowledged, refused or failed, and what arrives is what was sent.
"""

from __future__ import annotations

import struct

import hypothesis
from fleetwire.protocol.tcpcl.common import (
    NEED_DATA,
    BundleReceived,
    ConnectionClosed,
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
from fleetwire.protocol.tcpcl.v4 import SessionConfig, State, TcpclV4Session
from fleetwire.protocol.tcpcl.v4_messages import (
    ContactHeader,
    DecodeLimits,
    ExtensionItem,
    Keepalive,
    MsgReject,
    SessInit,
    SessTerm,
    XferAck,
    XferRefuse,
    XferSegment,
    decode_contact_header,
    decode_message,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

EVENT_TYPES = (
    StartTls,
    SessionEstablished,
    TransferStarted,
    BundleReceived,
    TransferAcked,
    TransferRefused,
    TransferFailed,
    SessionTerminated,
    ProtocolViolation,
    MessageRejected,
    ConnectionClosed,
)
#: What a session that sends no bundles may write after the contact header (§4-§6).
REPLIES = (SessInit, SessTerm, MsgReject, XferAck, XferRefuse, Keepalive)
CONFIG = SessionConfig(
    node_id="ipn:9.0",
    keepalive_s=5,
    segment_mru=200,
    transfer_mru=1000,
    max_extensions_length=64,
    min_peer_segment_mru=1,
    min_peer_transfer_mru=1,
)

tids = st.integers(0, 4) | st.integers(0, 2**64 - 1)
items = st.lists(
    st.builds(
        ExtensionItem,
        st.sampled_from([1, 2, 0x8000]),
        st.binary(max_size=10) | st.integers(0, 2000).map(lambda n: struct.pack(">Q", n)),
        st.booleans(),
    ),
    max_size=2,
).map(tuple)
valid = st.one_of(
    st.builds(
        SessInit,
        st.integers(0, 10),
        st.integers(0, 500),
        st.integers(0, 2000),
        st.sampled_from(["ipn:1.0", "", "x"]),
        items,
    ),
    st.builds(XferSegment, st.integers(0, 3), tids, st.binary(max_size=300), items),
    st.builds(XferAck, st.integers(0, 3), tids, st.integers(0, 2000)),
    st.builds(XferRefuse, st.integers(0, 8), tids),
    st.just(Keepalive()),
    st.builds(MsgReject, st.integers(0, 4), st.integers(0, 8)),
).map(lambda m: m.encode())
terms = st.builds(SessTerm, st.integers(0, 1), st.integers(0, 6)).map(lambda m: m.encode())


@st.composite
def transfers(draw: st.DrawFn) -> bytes:
    """A whole transfer as a peer would send it, sometimes with a wrong or huge total."""
    tid = draw(st.integers(0, 6))
    chunks = draw(st.lists(st.binary(max_size=250), min_size=1, max_size=6))
    total = sum(map(len, chunks))
    declared = draw(st.sampled_from([None, total, total + 1, 5000]))
    ext = () if declared is None else (ExtensionItem(1, struct.pack(">Q", declared)),)
    out = []
    for i, chunk in enumerate(chunks):
        flags = (2 if i == 0 else 0) | (1 if i == len(chunks) - 1 else 0)
        out.append(XferSegment(flags, tid, chunk, ext if i == 0 else ()).encode())
    return b"".join(out)


# Weighted by repetition: mostly coherent traffic, so the session gets deep before noise,
# a termination or an unknown message type ends it.
pieces = st.one_of(
    transfers(),
    transfers(),
    transfers(),
    valid,
    valid,
    terms,
    valid.flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda i: b[:i])),  # truncated
    st.binary(min_size=1, max_size=40),  # noise
    st.sampled_from(
        [b"\x01\x02" + struct.pack(">QI", 0, 2**32 - 1), b"\x01\x00" + bytes(8) + b"\xff" * 8]
    ),
)
HANDSHAKE = ContactHeader().encode() + SessInit(5, 500, 2000, "ipn:1.0").encode()


def check_output(data: bytes, first: bool, role: Role) -> None:
    """Everything written must decode, and be a kind of message a receiver sends."""
    buf = ReceiveBuffer()
    buf.extend(data)
    if first:
        assert decode_contact_header(buf) == ContactHeader(4, 0)
    limits = DecodeLimits(segment_mru=0)
    while buf.size:
        message = decode_message(buf, limits)
        assert message is not None, "session wrote a truncated message"
        assert isinstance(message, REPLIES)
        if isinstance(message, XferAck):
            assert message.length <= CONFIG.transfer_mru


@given(
    role=st.sampled_from([Role.PASSIVE, Role.ACTIVE]),
    handshake=st.sampled_from([True, True, True, False]),
    stream=st.lists(pieces, max_size=12) | st.lists(transfers(), max_size=6),
    cuts=st.lists(st.integers(0, 4000), max_size=10),
    ticks=st.lists(st.floats(0, 30), max_size=10),
)
def test_arbitrary_streams_get_only_protocol_reactions_within_bounded_memory(
    role: Role, handshake: bool, stream: list[bytes], cuts: list[int], ticks: list[float]
) -> None:
    session = TcpclV4Session(role, CONFIG, now=0.0)
    wire = (HANDSHAKE if handshake else b"") + b"".join(stream)
    points = sorted({min(c, len(wire)) for c in cuts} | {len(wire)})
    first_output = True
    if role is Role.ACTIVE:
        assert session.data_to_send() == ContactHeader().encode()
        first_output = False
    now, start, closed = 0.0, 0, False
    bound = session.max_receive_buffer
    for i, stop in enumerate(points):
        session.receive_data(wire[start:stop])
        largest_chunk = stop - start
        start = stop
        while (event := session.next_event()) is not NEED_DATA:
            assert isinstance(event, EVENT_TYPES)
            hypothesis.event(type(event).__name__)  # shown by --hypothesis-show-statistics
            if isinstance(event, ConnectionClosed):
                closed = True
                break
        # Bounded memory: at most one message in the receive buffer once it asks for data,
        # never more than our Transfer MRU in reassembly.
        assert session.receive_buffer_size <= bound
        assert session._recv.allocated <= 2 * bound + largest_chunk
        assert session.reassembly_size <= CONFIG.transfer_mru
        if i < len(ticks):
            now += ticks[i]
            session.tick(now)
        out = session.data_to_send()
        if out:
            check_output(out, first_output, role)
            first_output = False
        if closed:
            assert session.state is State.CLOSED
            assert session.data_to_send() == b""
            break
    session.receive_data(b"")
    events = []
    while (event := session.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    assert session.state is State.CLOSED and isinstance(events[-1], ConnectionClosed)


# --- two sessions, random operation ----------------------------------------------------


class SessionPair(RuleBasedStateMachine):
    """Random commands, ticks and cut points on two wired sessions; nothing is ever lost."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        configs = {
            Role.ACTIVE: SessionConfig(
                node_id="ipn:1.0", keepalive_s=10, segment_mru=300, transfer_mru=3000
            ),
            Role.PASSIVE: SessionConfig(
                node_id="ipn:2.0", keepalive_s=20, segment_mru=128, transfer_mru=2000
            ),
        }
        self.s = {r: TcpclV4Session(r, c, now=0.0) for r, c in configs.items()}
        self.in_flight = {r: bytearray() for r in Role}  # bytes written by r, not yet delivered
        self.sent: dict[Role, dict[int, bytes]] = {r: {} for r in Role}
        self.settled: dict[Role, set[int]] = {r: set() for r in Role}
        self.received: dict[Role, dict[int, bytes]] = {r: {} for r in Role}
        self.to_ack: dict[Role, list[int]] = {r: [] for r in Role}
        self.closed = {r: False for r in Role}
        self.eof_sent = {r: False for r in Role}
        # Start established (the handshake has its own tests): the steps go to transfers.
        for _ in range(3):
            for role in Role:
                self.collect(role)
                self.deliver(role, 10_000)
        assert all(s.state is State.ESTABLISHED for s in self.s.values())

    def other(self, role: Role) -> Role:
        return Role.PASSIVE if role is Role.ACTIVE else Role.ACTIVE

    def collect(self, role: Role) -> None:
        session = self.s[role]
        self.in_flight[role] += session.data_to_send()
        while (event := session.next_event()) is not NEED_DATA:
            if isinstance(event, ConnectionClosed):
                self.closed[role] = True
                break
            if isinstance(event, BundleReceived):
                assert event.transfer_id not in self.received[role]
                self.received[role][event.transfer_id] = event.data
                self.to_ack[role].append(event.transfer_id)
            elif isinstance(event, TransferAcked) and event.complete:
                self.settle(role, event.transfer_id)
                peer = self.other(role)
                assert self.received[peer][event.transfer_id] == self.sent[role][event.transfer_id]
            elif isinstance(event, TransferRefused) or (
                isinstance(event, TransferFailed) and event.outgoing
            ):
                self.settle(role, event.transfer_id)
            elif isinstance(event, ProtocolViolation):
                raise AssertionError(f"well-behaved peers reported a violation: {event.error}")
        self.in_flight[role] += session.data_to_send()

    def settle(self, role: Role, tid: int) -> None:
        assert tid in self.sent[role] and tid not in self.settled[role]
        self.settled[role].add(tid)

    @rule(role=st.sampled_from(Role), size=st.integers(0, 2500))
    def send(self, role: Role, size: int) -> None:
        session = self.s[role]
        peer = session.peer_session_init
        if session.state is State.ESTABLISHED and peer is not None and size <= peer.transfer_mru:
            payload = bytes([size % 256, role is Role.ACTIVE]) * (size // 2) + b"!" * (size % 2)
            self.sent[role][session.send_bundle(payload)] = payload
        self.collect(role)

    @rule(role=st.sampled_from(Role), cut=st.integers(1, 700))
    def deliver(self, role: Role, cut: int) -> None:
        data = bytes(self.in_flight[role][:cut])
        del self.in_flight[role][:cut]
        peer = self.other(role)
        if data and not self.eof_sent[role]:
            self.s[peer].receive_data(data)
        self.collect(peer)
        self.collect(role)

    @rule(role=st.sampled_from(Role))
    def ack(self, role: Role) -> None:
        if self.to_ack[role]:
            self.s[role].ack(self.to_ack[role].pop(0))
        self.collect(role)

    @rule(role=st.sampled_from(Role), odds=st.integers(0, 5))
    def terminate(self, role: Role, odds: int) -> None:
        session = self.s[role]
        if odds == 0 and session.state is State.ESTABLISHED:
            session.terminate()
        self.collect(role)

    @rule(dt=st.floats(0, 8))
    def tick(self, dt: float) -> None:
        self.now += dt
        for role in Role:
            self.s[role].tick(self.now)
            self.collect(role)

    @rule(role=st.sampled_from(Role), odds=st.integers(0, 9))
    def hang_up(self, role: Role, odds: int) -> None:
        """The connection drops: whatever is in flight from ``role`` is lost."""
        if odds == 0 and not self.eof_sent[role]:
            self.eof_sent[role] = True
            self.in_flight[role].clear()
            self.s[self.other(role)].receive_data(b"")
            self.collect(self.other(role))

    @invariant()
    def buffers_bounded(self) -> None:
        for session in self.s.values():
            assert session.receive_buffer_size <= session.max_receive_buffer
            assert session.reassembly_size <= session.config.transfer_mru

    def teardown(self) -> None:
        # Finish: deliver everything, ack everything, then end the session either way.
        for _ in range(10_000):
            moved = False
            for role in Role:
                while self.to_ack[role]:
                    self.s[role].ack(self.to_ack[role].pop(0))
                    moved = True
                self.collect(role)
                if self.in_flight[role]:
                    moved = True
                    self.deliver(role, 10_000)
            if not moved:
                break
        for role in Role:
            if not self.closed[role]:
                self.s[role].receive_data(b"")
                self.collect(role)
        delivered = sum(len(r) for r in self.received.values())
        hypothesis.event(f"bundles delivered: {min(delivered, 5)}{'+' if delivered >= 5 else ''}")
        for role in Role:
            assert self.closed[role]
            # Conservation: every bundle handed to send_bundle was acked, refused or failed.
            assert self.settled[role] == set(self.sent[role])


TestSessionPair = SessionPair.TestCase
# A quarter of the profile's examples (50 by default, 5000 with --soak), 40 steps each.
TestSessionPair.settings = settings(
    max_examples=max(1, settings().max_examples // 4), stateful_step_count=40, deadline=None
)
