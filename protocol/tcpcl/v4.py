"""TCPCLv4 session (RFC 9174 §3.3, §4, §5, §6) as a sans-IO state machine.

Theory of operation
-------------------
One :class:`TcpclV4Session` is one TCP connection, seen from one side. The runtime feeds it
bytes (``receive_data``), drains what it parsed (``next_event``), writes what it asks for
(``data_to_send``) and lends it a clock (``tick``/``next_deadline``); the contract is in
:mod:`.common`. The session never reads a clock, a socket or a random source.

The session-level state moves only through :data:`TRANSITIONS`, a table
``{state: {input: new state}}`` that is the RFC's Figures 4-10 and 13-14 in one place::

    WAIT_CONTACT --contact ok--> WAIT_SESS_INIT --SESS_INIT ok--> ESTABLISHED
         |        --contact, both CAN_TLS--> WAIT_TLS --tls established--> WAIT_SESS_INIT
         any state after contact --SESS_TERM sent/received--> ENDING --drained--> CLOSED
         any state --abort (EOF, fatal error, timeout)--> CLOSED

:data:`ACCEPTS` says which peer messages each state takes; any other well-formed message gets
MSG_REJECT "Message Unexpected" (§5.1.2) and changes nothing. Everything else the RFC asks of a
message is checked in its handler below, one method per message type.

Two transfer streams run inside an established session (§3.3 Figures 11, 12):

* outgoing: ``send_bundle`` queues a bundle under the next Transfer ID (0, 1, 2, … §5.2.1);
  ``data_to_send`` cuts it lazily into segments no larger than the peer's Segment MRU (and our
  own ``send_segment_size``), one segment per call, so acks and keepalives queued meanwhile go
  out between segments; bundles that fit one segment go out several per call (up to 64 KiB),
  so a burst of small bundles is one write, not one each. XFER_ACKs come back as :class:`~.common.TransferAcked` events, an
  XFER_REFUSE stops the remaining segments and becomes :class:`~.common.TransferRefused`.
* incoming: segments are reassembled in one buffer that never grows past our Transfer MRU;
  every segment but the last is acked automatically (§5.2.3); the last one yields
  :class:`~.common.BundleReceived` and the final XFER_ACK waits for ``ack(transfer_id)``,
  which the runtime calls once the bundle is durable. ``refuse`` answers with XFER_REFUSE.
  Every reply (XFER_ACK, XFER_REFUSE) leaves in the order its segment arrived, across
  transfers: the runtime may store bundles in any order and in batches, the peer still sees
  its acks first in, first out (deployed senders need that; see ``_release_replies``).

The lean path: most bundles of a fleet are small, one START|END segment without extension
items, answered by one XFER_ACK. In ESTABLISHED those two messages are read straight from the
receive buffer (and the final ack written as bytes) without message objects, every such
message that follows in one step; the first message that is anything else, or that the
general handlers would refuse or reject, goes the general way, which stays the reference.
A session made with ``batch_events=True`` reports each such run as one event
(:class:`~.common.BundlesReceived`: no per-transfer ``TransferStarted``;
:class:`~.common.TransfersAcked` for the final acks of our transfers), and takes acks and
bundles in batches (``ack_many``, ``send_bundles``): a runtime that moves thousands of small
bundles a second then spends its time per batch, not per bundle.

Termination (§6.1): sending SESS_TERM (ours, or the reply to the peer's) enters ENDING: no new
transfer starts in either direction (queued ones fail with "session terminating"), transfers in
progress may finish, and once both SESS_TERMs have crossed and nothing is in flight the session
is CLOSED cleanly. An idle timeout bounds ENDING too, so a silent peer cannot hold it open.

Memory: the receive buffer holds at most one message (bounded by our Segment MRU and the
extension-length limit, see :attr:`DecodeLimits.max_message_size`) plus whatever the runtime
fed since it last drained events; the reassembly buffer holds at most our Transfer MRU;
oversized segments are discarded as they stream in, never buffered (one longer than our
Transfer MRU ends the session instead: nothing legitimate is that long).

Timers use the ``now`` of the last ``tick``; bytes received or sent since the previous tick
count as activity at the current one (see :mod:`.common`).

TLS (§4.4): when both contact headers set CAN_TLS the session stops in WAIT_TLS and emits
:class:`~.common.StartTls`; the runtime flushes ``data_to_send()``, feeds
``take_trailing_data()`` to its TLS layer, performs the handshake (active = client) and calls
``tls_established()``; SESS_INIT then goes out through TLS. Nothing else changes.

Versions (§4.3): a passive listener that also speaks TCPCLv3 reads the fifth byte (the version)
itself and builds the matching session; this one answers any version but 4 with its own contact
header and SESS_TERM "Version mismatch" (passive) or by closing (active), and reports
:class:`VersionMismatch` with the peer's version so the runtime can retry with an older one.
"""

from __future__ import annotations

import collections
import enum
import re
import struct
from collections.abc import Sequence
from typing import Final

import attrs

from ..errors import LocalProtocolError
from .common import (
    NEED_DATA,
    BundleReceived,
    BundlesReceived,
    ConnectionClosed,
    ConvergenceLayerError,
    ConvergenceLayerSession,
    Event,
    MessageRejected,
    NeedData,
    ProtocolViolation,
    ReceiveBuffer,
    Role,
    SessionEstablished,
    SessionTerminated,
    StartTls,
    TransferAcked,
    TransferFailed,
    TransferRefused,
    TransfersAcked,
    TransferStarted,
)
from .v4_messages import (
    FLAG_END,
    FLAG_START,
    U64_MAX,
    VERSION,
    WHOLE_SEGMENT_HEADER,
    XFER_ACK_SIZE,
    BadMagic,
    ContactFlags,
    ContactHeader,
    DecodeLimits,
    ExtensionItem,
    ExtensionsTooLong,
    Keepalive,
    MalformedMessage,
    Message,
    MessageType,
    MsgReject,
    RefuseReason,
    RejectReason,
    SegmentTooLarge,
    SessInit,
    SessTerm,
    SessTermFlags,
    TermReason,
    TransferExtensionType,
    UnknownMessageType,
    XferAck,
    XferRefuse,
    XferSegment,
    decode_contact_header,
    decode_message,
    encode_extension_items,
    encode_segment_header,
    encode_whole_segment,
    encode_xfer_ack,
    peek_whole_segment,
    peek_xfer_ack,
)

__all__ = [
    "ACCEPTS",
    "TRANSITIONS",
    "Input",
    "SessionConfig",
    "State",
    "TcpclV4Session",
    "VersionMismatch",
    "diagram",
]

_U64 = struct.Struct(">Q")
# RFC 3986 §3.1 scheme, then a non-empty scheme-specific part without spaces or controls.
_NODE_ID = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\x00-\x20\x7f]+")


class VersionMismatch(ConvergenceLayerError):
    """The peer's contact header names another TCPCL version (§4.3); ``peer_version`` says which."""

    code = "tcpcl-version-mismatch"

    def __init__(self, peer_version: int) -> None:
        super().__init__(f"peer speaks TCPCL version {peer_version}", "RFC 9174 §4.3")
        self.peer_version = peer_version


# --- the state machine -----------------------------------------------------------------


class State(enum.Enum):
    """Session states (§3.3 Figure 4; "Idle"/"Live" differ only in transfers, not here)."""

    WAIT_CONTACT = "wait-contact"
    WAIT_TLS = "wait-tls"
    WAIT_SESS_INIT = "wait-sess-init"
    ESTABLISHED = "established"
    ENDING = "ending"
    CLOSED = "closed"


class Input(enum.Enum):
    """What moves the session state."""

    CONTACT_OK = "contact-ok"
    CONTACT_TLS = "contact-tls"
    TLS_DONE = "tls-done"
    SESS_INIT_OK = "sess-init-ok"
    TERM_SENT = "term-sent"
    TERM_RECEIVED = "term-received"
    DRAINED = "drained"
    ABORT = "abort"


#: The session's transitions: the whole of what may follow what.
TRANSITIONS: Final[dict[State, dict[Input, State]]] = {
    State.WAIT_CONTACT: {
        Input.CONTACT_OK: State.WAIT_SESS_INIT,
        Input.CONTACT_TLS: State.WAIT_TLS,
        Input.TERM_SENT: State.ENDING,  # contact received but refused (§4.3 TLS policy)
        Input.ABORT: State.CLOSED,
    },
    State.WAIT_TLS: {Input.TLS_DONE: State.WAIT_SESS_INIT, Input.ABORT: State.CLOSED},
    State.WAIT_SESS_INIT: {
        Input.SESS_INIT_OK: State.ESTABLISHED,
        Input.TERM_SENT: State.ENDING,
        Input.TERM_RECEIVED: State.ENDING,
        Input.ABORT: State.CLOSED,
    },
    State.ESTABLISHED: {
        Input.TERM_SENT: State.ENDING,
        Input.TERM_RECEIVED: State.ENDING,
        Input.ABORT: State.CLOSED,
    },
    State.ENDING: {
        Input.TERM_SENT: State.ENDING,
        Input.TERM_RECEIVED: State.ENDING,
        Input.DRAINED: State.CLOSED,
        Input.ABORT: State.CLOSED,
    },
    State.CLOSED: {},
}

_M = MessageType
_TRANSFER_MESSAGES: Final = frozenset({_M.XFER_SEGMENT, _M.XFER_ACK, _M.XFER_REFUSE, _M.KEEPALIVE})
#: Peer messages each state takes (§5.1.2: anything else is "Message Unexpected"). Transfer
#: messages in ENDING are taken only if the session was established before it began ending.
ACCEPTS: Final[dict[State, frozenset[MessageType]]] = {
    State.WAIT_CONTACT: frozenset(),
    State.WAIT_TLS: frozenset(),
    State.WAIT_SESS_INIT: frozenset({_M.SESS_INIT, _M.SESS_TERM, _M.MSG_REJECT}),
    State.ESTABLISHED: _TRANSFER_MESSAGES | {_M.SESS_TERM, _M.MSG_REJECT},
    State.ENDING: _TRANSFER_MESSAGES | {_M.SESS_TERM, _M.MSG_REJECT},
    State.CLOSED: frozenset(),
}


def diagram() -> str:
    """The transition table as a Mermaid state diagram (the table is the source of truth)."""
    lines = ["stateDiagram-v2", "    [*] --> wait_contact"]
    for state, moves in TRANSITIONS.items():
        for what, target in moves.items():
            lines.append(f"    {state.name.lower()} --> {target.name.lower()}: {what.value}")
    lines.append("    closed --> [*]")
    return "\n".join(lines)


# --- configuration ---------------------------------------------------------------------


def _node_id(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value and not _NODE_ID.fullmatch(value):
        raise ValueError(f"node id {value!r} is not a URI")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 < value <= U64_MAX:
        raise ValueError(f"{attribute.name} must be in 1..2**64-1")


@attrs.frozen(slots=True)
class SessionConfig:
    """Our side's parameters and policy (§4.2, §4.6, §4.7)."""

    #: Our Node ID, a URI such as ``ipn:7.0`` or ``dtn://node7/``; empty hides it (§4.6).
    node_id: str = attrs.field(default="", validator=_node_id)
    #: Offered keepalive interval (§4.6); the session uses the smaller of both, 0 disables.
    keepalive_s: int = attrs.field(
        default=60,
        validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(0xFFFF)),
    )
    #: Largest segment data we accept (Segment MRU, §4.6): bounds the receive buffer.
    segment_mru: int = attrs.field(default=1 << 20, validator=_positive)
    #: Largest bundle we accept (Transfer MRU, §4.6): bounds the reassembly buffer.
    transfer_mru: int = attrs.field(default=1 << 24, validator=_positive)
    #: Offer TLS in the contact header (§4.2); the runtime does the handshake on StartTls.
    can_tls: bool = False
    #: Refuse a session in which TLS was not negotiated (§4.3 "Enable TLS" policy).
    require_tls: bool = False
    #: Session extension items we send in SESS_INIT (§4.8).
    session_extensions: tuple[ExtensionItem, ...] = ()
    #: Session extension types we understand; an unknown CRITICAL one ends the session.
    known_session_extensions: frozenset[int] = frozenset()
    #: Our cap on outgoing segment size, below the peer's Segment MRU (§3.6 sizing policy).
    send_segment_size: int = attrs.field(default=1 << 20, validator=_positive)
    #: No message received for this long ends the session (§5.1.1); ``None``: 2x keepalive.
    idle_timeout_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    #: Idle session shutdown (§6.2): end a session in which no message but KEEPALIVE arrived
    #: for this long and nothing is in flight; ``None`` keeps idle sessions open.
    idle_shutdown_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    #: Contact header and SESS_INIT must complete within this (§4.1: at most 60 s advised).
    establish_timeout_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    #: Peer MRUs below these are unacceptable ("data dribble", §8.10): Contact Failure.
    min_peer_segment_mru: int = attrs.field(default=64, validator=_positive)
    min_peer_transfer_mru: int = attrs.field(default=64, validator=_positive)
    #: Longest session or transfer extension item list we read.
    max_extensions_length: int = 1 << 16
    #: Require each incoming Transfer ID to exceed the previous one (§5.2.1 default rule).
    require_increasing_transfer_ids: bool = True
    #: Replies (XFER_ACK / XFER_REFUSE) held in receive order behind a final ack that waits
    #: for the store; past this, intermediate acks of one transfer are merged (cumulative).
    max_held_replies: int = attrs.field(default=4096, validator=attrs.validators.ge(2))

    def __attrs_post_init__(self) -> None:
        if self.require_tls and not self.can_tls:
            raise ValueError("require_tls needs can_tls")


# --- per-transfer bookkeeping ----------------------------------------------------------


@attrs.define(slots=True)
class _Outgoing:
    transfer_id: int
    data: bytes | memoryview
    total: int
    sent: int = 0
    acked: int = 0


@attrs.define(slots=True)
class _Incoming:
    transfer_id: int
    total: int | None
    buffer: bytearray = attrs.field(factory=bytearray)
    received: int = 0
    #: Refusal reason once refused: later segments of it are refused again (§5.2.4).
    refused: int | None = None


@attrs.define(slots=True)
class _Reply:
    """One reply to a received segment, in receive order; ``message`` is ``None`` while a
    final ack waits for the runtime's ``ack`` (``flags`` and ``length`` are then its content;
    the ack itself is then stored encoded)."""

    transfer_id: int
    message: XferAck | XferRefuse | bytes | None
    flags: int = 0
    length: int = 0


def _term_reason(code: int) -> int:
    """Undecodable reasons are treated as Unknown (§6.1)."""
    return TermReason(code) if code in TermReason._value2member_map_ else TermReason.UNKNOWN


def _refuse_reason(code: int) -> int:
    """Undecodable reasons are treated as Unknown (§5.2.4)."""
    return RefuseReason(code) if code in RefuseReason._value2member_map_ else RefuseReason.UNKNOWN


class TcpclV4Session:
    """One side of one TCPCLv4 session. See the module docstring for how to drive it."""

    def __init__(
        self, role: Role, config: SessionConfig, now: float, *, batch_events: bool = False
    ) -> None:
        self.role = role
        self.config = config
        #: Report runs of lean transfers as one :class:`~.common.BundlesReceived` and runs of
        #: final acks as one :class:`~.common.TransfersAcked` (module docstring).
        self.batch_events = batch_events
        self._state = State.WAIT_CONTACT
        self._limits = DecodeLimits(config.segment_mru, config.max_extensions_length)
        self._recv = ReceiveBuffer()
        self._skip = 0  # bytes of an oversized segment still to discard
        self._eof = False
        self._outbox = bytearray()
        self._events: collections.deque[Event] = collections.deque()
        self._clean_close = False
        # Negotiation results.
        self._contact = ContactHeader(VERSION, ContactFlags.CAN_TLS if config.can_tls else 0)
        self.peer_contact: ContactHeader | None = None
        self.peer_session_init: SessInit | None = None
        self.keepalive_s = 0
        self.idle_timeout_s: float | None = None
        self._established = False
        # Termination.
        self._term_sent = False
        self._term_received = False
        self._ending_since = 0.0
        # Transfers.
        self._next_tid = 0
        self._tx_queue: collections.deque[_Outgoing] = collections.deque()
        self._tx: dict[int, _Outgoing] = {}
        self._rx: _Incoming | None = None
        self._last_rx_tid: int | None = None
        self._awaiting_ack: dict[int, _Reply] = {}  # tid -> its place in ``_replies``
        # XFER_ACK / XFER_REFUSE in the order their segments arrived (see ``_release_replies``).
        self._replies: collections.deque[_Reply] = collections.deque()
        # Clock.
        self._created = now
        self._now = now
        self._last_received = now
        self._last_sent = now
        self._received_flag = False
        self._last_message = now  # last message other than KEEPALIVE (§6.2)
        self._message_flag = False
        self._sent_flag = False
        if role is Role.ACTIVE:
            self._outbox += self._contact.encode()  # §4.1: the active entity speaks first

    # --- introspection -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def established(self) -> bool:
        """SESS_INIT went both ways (it stays true while ENDING)."""
        return self._established

    @property
    def terminating(self) -> bool:
        """We sent SESS_TERM (ours or the reply): no new transfer may start (§6.1)."""
        return self._term_sent

    @property
    def max_receive_buffer(self) -> int:
        """What the receive buffer may hold after ``next_event`` returned NEED_DATA."""
        return self._limits.max_message_size

    @property
    def receive_buffer_size(self) -> int:
        return self._recv.size

    @property
    def reassembly_size(self) -> int:
        return len(self._rx.buffer) if self._rx is not None else 0

    @property
    def buffered(self) -> int:
        """Bytes held from the peer: unparsed input plus the bundle being reassembled."""
        return self._recv.allocated + self.reassembly_size

    @property
    def receiving_transfer(self) -> int | None:
        """The incoming transfer being reassembled (not refused), if any: the one
        :meth:`refuse` can stop to give its memory back (§5.2.4)."""
        rx = self._rx
        return rx.transfer_id if rx is not None and rx.refused is None else None

    @property
    def outstanding_transfers(self) -> frozenset[int]:
        """Our transfers not yet fully acknowledged or refused."""
        return frozenset(self._tx)

    @property
    def awaiting_ack(self) -> frozenset[int]:
        """Received bundles whose final XFER_ACK waits for ``ack``."""
        return frozenset(self._awaiting_ack)

    # --- h11-style surface -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the stream; ``b""`` means the peer closed its side."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after end of stream")
            return
        if not data:
            self._eof = True
            return
        self._received_flag = True
        if self._state is not State.CLOSED:
            self._recv.extend(data)

    def next_event(self) -> Event | NeedData:
        """The next event, :data:`NEED_DATA`, or (forever, once closed) ConnectionClosed."""
        while not self._events and self._step():
            pass
        if self._events:
            return self._events.popleft()
        if self._state is State.CLOSED:
            return ConnectionClosed(self._clean_close)
        return NEED_DATA

    def data_to_send(self) -> bytes:
        """Bytes to write now: queued control messages and one segment, or several whole
        one-segment transfers up to 64 KiB (small bundles leave in one write, not one write
        each; a multi-segment transfer still goes one segment per call, so acks and
        keepalives queued meanwhile go out between its segments). Loop until b""."""
        chunks: list[bytes | memoryview] = []
        if self._outbox:
            chunks.append(bytes(self._outbox))
            self._outbox.clear()
        queue = self._tx_queue
        if queue and self._state is not State.CLOSED:
            chunks.extend(self._next_segment())
            peer = self.peer_session_init
            assert peer is not None
            whole = min(peer.segment_mru, self.config.send_segment_size)
            room = _SMALL_BATCH - len(chunks[-1])
            # Whole transfers that follow: the lean path of _next_segment, inline.
            pack = _WHOLE_HEAD.pack
            append = chunks.append
            while queue and (head := queue[0]).sent == 0 and head.total <= min(whole, room):
                queue.popleft()
                room -= head.total
                head.sent = head.total
                append(pack(_XFER_SEGMENT, _WHOLE_FLAGS, head.transfer_id, 0, head.total))
                append(head.data)
        if not chunks:
            return b""
        self._sent_flag = True
        return b"".join(chunks)

    def take_trailing_data(self) -> bytes:
        """After StartTls: bytes already received past the contact header, which belong to TLS.

        The runtime hands them to its TLS layer before reading more from the socket (§4.4.3).
        """
        data = self._recv.peek(self._recv.size) or b""
        self._recv.clear()
        return data

    def tls_established(self) -> None:
        """The runtime finished the TLS handshake (§4.4.3); SESS_INIT may go out now."""
        if self._state is not State.WAIT_TLS:
            raise LocalProtocolError(f"no TLS handshake pending in state {self._state.value}")
        if self._recv.size:
            raise LocalProtocolError("call take_trailing_data() and feed those bytes to TLS first")
        self._move(Input.TLS_DONE)
        if self.role is Role.ACTIVE:
            self._queue(self._our_sess_init())

    def tick(self, now: float) -> None:
        """Let timers fire at ``now`` (§4.1 establishment, §5.1.1 keepalive and idle)."""
        now = max(now, self._now)
        self._now = now
        if self._received_flag:
            self._last_received, self._received_flag = now, False
        if self._message_flag:
            self._last_message, self._message_flag = now, False
        if self._sent_flag:
            self._last_sent, self._sent_flag = now, False
        state = self._state
        if state is State.CLOSED:
            return
        if state in (State.WAIT_CONTACT, State.WAIT_TLS, State.WAIT_SESS_INIT):
            if now >= self._created + self.config.establish_timeout_s:
                if state is State.WAIT_SESS_INIT:
                    self._terminate(TermReason.IDLE_TIMEOUT)  # §3.3 Figures 8, 9: Timeout -> [ST]
                else:
                    self._abort()  # §4.1: close the TCP connection
            return
        if self.keepalive_s and now >= self._last_sent + self.keepalive_s:
            self._queue(Keepalive())
            self._last_sent = now
        if state is State.ESTABLISHED:
            if self.idle_timeout_s is not None and now >= self._last_received + self.idle_timeout_s:
                self._terminate(TermReason.IDLE_TIMEOUT)
            elif self._idle_shutdown_due(now):
                self._terminate(TermReason.IDLE_TIMEOUT)  # §6.2 idle session shutdown
        elif now >= max(self._last_received, self._ending_since) + self._ending_timeout():
            self._abort()

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called, or ``None`` if no timer runs."""
        state = self._state
        if state is State.CLOSED:
            return None
        if state in (State.WAIT_CONTACT, State.WAIT_TLS, State.WAIT_SESS_INIT):
            return self._created + self.config.establish_timeout_s
        deadlines: list[float] = []
        if self.keepalive_s:
            deadlines.append(self._last_sent + self.keepalive_s)
        if state is State.ESTABLISHED:
            if self.idle_timeout_s is not None:
                deadlines.append(self._last_received + self.idle_timeout_s)
            if self.config.idle_shutdown_s is not None:
                deadlines.append(self._last_message + self.config.idle_shutdown_s)
        else:
            deadlines.append(max(self._last_received, self._ending_since) + self._ending_timeout())
        return min(deadlines) if deadlines else None

    # --- caller commands ---------------------------------------------------------------

    def send_bundle(self, data: bytes | memoryview) -> int:
        """Queue a bundle for transfer (§5.2); returns its Transfer ID."""
        if self._state is not State.ESTABLISHED or self._term_sent:
            raise LocalProtocolError(f"cannot start a transfer in state {self._state.value} (§6.1)")
        peer = self.peer_session_init
        assert peer is not None
        if len(data) > peer.transfer_mru:
            raise LocalProtocolError(
                f"bundle of {len(data)} octets exceeds the peer's Transfer MRU {peer.transfer_mru} (§4.6)"
            )
        if self._next_tid > U64_MAX:
            self._terminate(TermReason.RESOURCE_EXHAUSTION)  # §5.2.1
            raise LocalProtocolError("Transfer ID space exhausted; session terminating (§5.2.1)")
        tid = self._next_tid
        self._next_tid += 1
        view = memoryview(data).cast("B")
        transfer = _Outgoing(tid, view, len(view))
        self._tx_queue.append(transfer)
        self._tx[tid] = transfer
        return tid

    def send_bundles(self, bundles: Sequence[bytes]) -> range:
        """:meth:`send_bundle` for each of ``bundles``, checked first as a whole (nothing is
        queued if one cannot be); returns their Transfer IDs, consecutive (§5.2.1)."""
        if self._state is not State.ESTABLISHED or self._term_sent:
            raise LocalProtocolError(f"cannot start a transfer in state {self._state.value} (§6.1)")
        peer = self.peer_session_init
        assert peer is not None
        if not bundles:
            return range(0)
        sizes = [len(b) if type(b) is bytes else memoryview(b).nbytes for b in bundles]
        if max(sizes) > peer.transfer_mru:
            raise LocalProtocolError(
                f"bundle of {max(sizes)} octets exceeds the peer's Transfer MRU "
                f"{peer.transfer_mru} (§4.6)"
            )
        first = self._next_tid
        if first + len(bundles) - 1 > U64_MAX:
            self._terminate(TermReason.RESOURCE_EXHAUSTION)  # §5.2.1
            raise LocalProtocolError("Transfer ID space exhausted; session terminating (§5.2.1)")
        queue = self._tx_queue
        table = self._tx
        tid = first
        for data, size in zip(bundles, sizes, strict=True):
            view = data if type(data) is bytes else memoryview(data).cast("B")
            transfer = _Outgoing(tid, view, size)
            queue.append(transfer)
            table[tid] = transfer
            tid += 1
        self._next_tid = tid
        return range(first, tid)

    def ack(self, transfer_id: int) -> None:
        """Send the final XFER_ACK of a received bundle, now that it is stored (§5.2.3).

        It leaves once every reply to an earlier-received segment has left (receive order).
        """
        try:
            reply = self._awaiting_ack.pop(transfer_id)
        except KeyError:
            raise LocalProtocolError(f"transfer {transfer_id} is not awaiting an ack") from None
        if self._state is not State.CLOSED:
            reply.message = encode_xfer_ack(reply.flags, transfer_id, reply.length)
            self._release_replies()
            self._maybe_drained()

    def ack_many(self, transfer_ids: Sequence[int]) -> None:
        """:meth:`ack` for each of ``transfer_ids`` in turn, the replies released once; on a
        transfer not awaiting an ack it raises, the ones before it acked."""
        awaiting = self._awaiting_ack
        live = self._state is not State.CLOSED
        try:
            for tid in transfer_ids:
                try:
                    reply = awaiting.pop(tid)
                except KeyError:
                    raise LocalProtocolError(f"transfer {tid} is not awaiting an ack") from None
                if live:
                    reply.message = _ACK_HEAD.pack(_XFER_ACK, reply.flags, tid, reply.length)
        finally:
            if live:
                self._release_replies()
                self._maybe_drained()

    def refuse(self, transfer_id: int, reason: RefuseReason) -> None:
        """Refuse an incoming transfer in progress or awaiting its final ack (§5.2.4)."""
        waiting = self._awaiting_ack.pop(transfer_id, None)
        if waiting is not None:
            # Its place in the reply order is kept: the refusal leaves where the ack would.
            if self._state is not State.CLOSED:
                waiting.message = XferRefuse(reason, transfer_id)
                self._release_replies()
                self._maybe_drained()
            return
        if (
            self._rx is not None
            and self._rx.transfer_id == transfer_id
            and self._rx.refused is None
        ):
            self._rx.refused = reason
            self._rx.buffer = bytearray()
        else:
            raise LocalProtocolError(
                f"transfer {transfer_id} is not an incoming transfer to refuse"
            )
        if self._state is not State.CLOSED:
            self._queue_refuse(reason, transfer_id)
            self._maybe_drained()

    def terminate(self, reason: TermReason = TermReason.UNKNOWN) -> None:
        """Begin a clean termination (§6.1); before the contact exchange this just closes."""
        if self._state is State.CLOSED or self._term_sent:
            raise LocalProtocolError(
                f"session already {'closed' if self._state is State.CLOSED else 'ending'}"
            )
        if self._state is State.WAIT_CONTACT or self._state is State.WAIT_TLS:
            self._abort()  # §6.1: no SESS_TERM before both contact headers (or inside TLS setup)
        else:
            self._terminate(reason)

    # --- internals: state ----------------------------------------------------------------

    def _move(self, what: Input) -> None:
        try:
            self._state = TRANSITIONS[self._state][what]
        except KeyError:
            raise LocalProtocolError(
                f"{what.value} not allowed in state {self._state.value}"
            ) from None

    def _queue(self, message: Message | ContactHeader) -> None:
        self._outbox += message.encode()

    def _queue_refuse(self, reason: int, tid: int) -> None:
        """XFER_REFUSE in its place in the reply order (§5.2.4: every earlier transfer must
        be fully acked or refused first; a final ack left to the runtime may hold it back)."""
        refusal = XferRefuse(reason, tid)
        replies = self._replies
        if replies and replies[-1].message == refusal:
            return  # crossing segments of a refused transfer: one refusal is enough
        replies.append(_Reply(tid, refusal))
        self._release_replies()

    def _queue_segment_ack(self, flags: int, tid: int, length: int) -> None:
        """An intermediate XFER_ACK (§5.2.3), in its place in the reply order.

        While a final ack waits for the store, the intermediate acks of the next transfer
        wait behind it. Past ``max_held_replies`` they are merged into the newest one of the
        same transfer (acks are cumulative, §5.2.3), so a hostile stream of tiny segments
        cannot grow this queue without bound.
        """
        replies = self._replies
        if replies:
            tail = replies[-1]
            if (
                len(replies) >= self.config.max_held_replies
                and tail.transfer_id == tid
                and isinstance(tail.message, XferAck)
            ):
                tail.message = XferAck(flags, tid, length)
                return
            replies.append(_Reply(tid, XferAck(flags, tid, length)))
            self._release_replies()
        else:
            self._queue(XferAck(flags, tid, length))  # nothing ahead of it: out at once

    def _release_replies(self) -> None:
        """Send the replies that are ready, in the order their segments arrived.

        Why receive order: RFC 9174 allows a final XFER_ACK whenever the bundle is stored,
        but deployed senders (HDTN among them) match every XFER_ACK against a first-in,
        first-out queue of the segments they sent and stall on the first one out of place.
        Releasing in order costs nothing when the runtime commits bundles in batches.
        """
        replies = self._replies
        ready: list[bytes] = []
        while replies and (message := replies[0].message) is not None:
            replies.popleft()
            ready.append(message if isinstance(message, bytes) else message.encode())
        if ready:
            self._outbox += b"".join(ready)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _idle_shutdown_due(self, now: float) -> bool:
        limit = self.config.idle_shutdown_s
        busy = self._tx or self._awaiting_ack or (self._rx is not None and self._rx.refused is None)
        return limit is not None and not busy and now >= self._last_message + limit

    def _ending_timeout(self) -> float:
        return (
            self.idle_timeout_s
            if self.idle_timeout_s is not None
            else self.config.establish_timeout_s
        )

    def _violation(self, error: ConvergenceLayerError) -> None:
        self._emit(ProtocolViolation(error))

    def _reject(self, reason: RejectReason, message_type: int, why: str) -> None:
        self._queue(MsgReject(reason, message_type))
        self._violation(ConvergenceLayerError(why, "RFC 9174 §5.1.2"))

    def _terminate(self, reason: int) -> None:
        """Send our initiating SESS_TERM and enter ENDING."""
        if Input.TERM_SENT not in TRANSITIONS[self._state]:
            raise LocalProtocolError(f"cannot terminate in state {self._state.value}")
        self._queue(SessTerm(0, reason))
        self._emit(SessionTerminated(reason, by_peer=False))
        self._enter_ending(Input.TERM_SENT)
        self._maybe_drained()

    def _enter_ending(self, what: Input) -> None:
        self._move(what)
        self._term_sent = True
        self._ending_since = self._now
        # §6.1: no new outgoing transfer once SESS_TERM is sent: unstarted ones fail here.
        for transfer in [t for t in self._tx_queue if t.sent == 0]:
            self._tx_queue.remove(transfer)
            del self._tx[transfer.transfer_id]
            self._emit(
                TransferRefused(
                    transfer.transfer_id, RefuseReason.SESSION_TERMINATING, by_peer=False
                )
            )

    def _abort(self) -> None:
        """Close without (further) SESS_TERM: fatal error, EOF or timeout."""
        if self._state is State.CLOSED:
            return
        self._move(Input.ABORT)
        for tid in sorted(self._tx):
            self._emit(TransferFailed(tid, outgoing=True))
        if self._rx is not None and self._rx.refused is None:
            self._emit(TransferFailed(self._rx.transfer_id, outgoing=False))
        self._close_out(clean=False)

    def _maybe_drained(self) -> None:
        """ENDING with both SESS_TERMs crossed and nothing in flight: clean close (§6.1)."""
        if (
            self._state is State.ENDING
            and self._term_sent
            and self._term_received
            and not self._tx
            and not self._awaiting_ack
            and (self._rx is None or self._rx.refused is not None)
        ):
            self._move(Input.DRAINED)
            self._close_out(clean=True)

    def _close_out(self, clean: bool) -> None:
        self._clean_close = clean
        self._tx.clear()
        self._tx_queue.clear()
        self._rx = None
        self._recv.clear()
        self._skip = 0
        self._replies.clear()
        self._emit(ConnectionClosed(clean))

    def _our_sess_init(self) -> SessInit:
        c = self.config
        return SessInit(
            c.keepalive_s, c.segment_mru, c.transfer_mru, c.node_id, c.session_extensions
        )

    # --- internals: parsing --------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one unit of input; False when nothing more can be done without more bytes."""
        state = self._state
        if state is State.CLOSED:
            return False
        if state is State.WAIT_TLS:
            return self._at_eof()  # the bytes that follow are TLS's, not ours
        if not self._recv.size:
            return self._at_eof()
        if self._skip:
            n = min(self._skip, self._recv.size)
            self._recv.skip(n)
            self._skip -= n
            if self._skip:
                return self._at_eof()
        lean = self._lean_batch if self.batch_events else self._lean_step
        if state is State.ESTABLISHED and self._rx is None and not self._term_sent and lean():
            return True
        try:
            if state is State.WAIT_CONTACT:
                contact = decode_contact_header(self._recv)
                if contact is None:
                    return self._at_eof()
                self._on_contact(contact)
                return True
            message = decode_message(self._recv, self._limits)
            if message is None:
                return self._at_eof()
            self._on_message(message)
        except BadMagic as error:
            self._violation(error)
            self._abort()  # §4.3, §6.1: close without SESS_TERM
        except UnknownMessageType as error:
            self._queue(MsgReject(RejectReason.TYPE_UNKNOWN, error.message_type))
            self._violation(error)
            self._abort()  # §5.1.2: reject and close the TCP connection
        except ExtensionsTooLong as error:
            self._violation(error)
            self._fatal_term(
                TermReason.CONTACT_FAILURE
                if error.message_type == MessageType.SESS_INIT
                else TermReason.RESOURCE_EXHAUSTION
            )
        except SegmentTooLarge as error:
            if error.data_length > self.config.transfer_mru:
                # Not even a whole bundle could be that long: no point discarding it for ever.
                self._violation(error)
                self._fatal_term(TermReason.RESOURCE_EXHAUSTION)
                return True
            self._skip = error.data_length
            self._queue(MsgReject(RejectReason.UNSUPPORTED, MessageType.XFER_SEGMENT))
            self._violation(error)
            start = bool(error.flags & FLAG_START)
            rx = self._rx
            if self._established and (
                start or (rx is not None and rx.transfer_id == error.transfer_id)
            ):
                self._refuse_segment(error.transfer_id, start, RefuseReason.NO_RESOURCES)
                self._fail_incoming(error.transfer_id)
        except MalformedMessage as error:
            self._violation(error)
            self._on_malformed(error)
        return True

    def _lean_step(self) -> bool:
        """The common messages of a busy established session, without message objects.

        Whole one-segment transfers (START|END, no extension items) and XFER_ACKs are read
        straight from the buffer, as many as follow each other, and handled as
        :meth:`_on_segment` and :meth:`_on_ack` would handle them; at anything else, or
        anything those would refuse or reject, it stops and the general path (which stays
        the reference) takes over. False if it took nothing.
        """
        buf = self._recv
        limits = self._limits
        config = self.config
        awaiting = self._awaiting_ack
        replies = self._replies
        events = self._events
        took = False
        while True:
            kind = buf.first_byte
            if kind == _XFER_SEGMENT:
                whole = peek_whole_segment(buf, limits)
                if whole is None:
                    return took
                tid, length = whole
                last = self._last_rx_tid
                if length > config.transfer_mru or (
                    config.require_increasing_transfer_ids and last is not None and tid <= last
                ):
                    return took
                data = buf.take(WHOLE_SEGMENT_HEADER, length)
                self._last_rx_tid = tid
                reply = _Reply(tid, None, FLAG_START | FLAG_END, length)
                awaiting[tid] = reply
                replies.append(reply)
                events.append(TransferStarted(tid, None))
                events.append(BundleReceived(tid, data))
            elif kind == _XFER_ACK:
                ack = peek_xfer_ack(buf)
                if ack is None:
                    return took
                buf.skip(XFER_ACK_SIZE)
                self._on_ack(*ack)
            else:
                return took
            self._message_flag = took = True

    def _lean_batch(self) -> bool:
        """:meth:`_lean_step` for a session that batches its events: the same messages under
        the same checks, read in one loop over the buffer, reported as one
        :class:`~.common.BundlesReceived` and one :class:`~.common.TransfersAcked`. An ack
        that is not the complete ack of a whole sent transfer stops the run (the general
        path judges it)."""
        raw, pos = self._recv.window()
        end = len(raw)
        config = self.config
        segment_mru = self._limits.segment_mru
        transfer_mru = config.transfer_mru
        increasing = config.require_increasing_transfer_ids
        last = self._last_rx_tid
        awaiting = self._awaiting_ack
        replies = self._replies
        sending = self._tx
        unpack_whole = _WHOLE_HEAD.unpack_from
        unpack_ack = _ACK_HEAD.unpack_from
        tids: list[int] = []
        bundles: list[bytes] = []
        acked: list[int] = []
        with memoryview(raw) as view:
            while pos < end:
                kind = raw[pos]
                if kind == _XFER_SEGMENT:
                    if end - pos < WHOLE_SEGMENT_HEADER:
                        break
                    _, flags, tid, ext_len, n = unpack_whole(raw, pos)
                    start = pos + WHOLE_SEGMENT_HEADER
                    if (
                        flags != _WHOLE_FLAGS
                        or ext_len
                        or n > segment_mru
                        or end - start < n
                        or n > transfer_mru
                        or (increasing and last is not None and tid <= last)
                    ):
                        break
                    bundles.append(bytes(view[start : start + n]))
                    tids.append(tid)
                    last = tid
                    pos = start + n
                    reply = _Reply(tid, None, _WHOLE_FLAGS, n)
                    awaiting[tid] = reply
                    replies.append(reply)
                elif kind == _XFER_ACK:
                    if end - pos < XFER_ACK_SIZE:
                        break
                    _, flags, tid, length = unpack_ack(raw, pos)
                    tx = sending.get(tid)
                    if (
                        tx is None
                        or not flags & FLAG_END
                        or length != tx.total
                        or tx.sent != tx.total
                    ):
                        break
                    del sending[tid]
                    acked.append(tid)
                    pos += XFER_ACK_SIZE
                else:
                    break
        if not tids and not acked:
            return False
        self._recv.consume_to(pos)
        self._last_rx_tid = last
        self._message_flag = True
        if tids:
            self._events.append(BundlesReceived(tuple(tids), tuple(bundles)))
        if acked:
            self._events.append(TransfersAcked(tuple(acked)))
            self._maybe_drained()
        return True

    def _at_eof(self) -> bool:
        """At the end of the stream nothing more can complete: close (§6.1 transfers fail)."""
        if self._eof and self._state is not State.CLOSED:
            self._abort()
            return True
        return False

    def _fatal_term(self, reason: TermReason) -> None:
        """Unrecoverable input after contact: SESS_TERM if we still may, then close (§6.1)."""
        if not self._term_sent:
            self._queue(SessTerm(0, reason))
            self._term_sent = True
            self._emit(SessionTerminated(reason, by_peer=False))
        self._abort()

    # --- internals: contact and session init ---------------------------------------------

    def _on_contact(self, contact: ContactHeader) -> None:
        """§4.3 contact validation and negotiation."""
        self.peer_contact = contact
        if contact.version != VERSION:
            error = VersionMismatch(contact.version)
            self._violation(error)
            if self.role is Role.PASSIVE:
                # Our header first, then terminate with "Version mismatch" (§4.3, §6.1).
                self._queue(self._contact)
                self._queue(SessTerm(0, TermReason.VERSION_MISMATCH))
                self._term_sent = True
                self._emit(SessionTerminated(TermReason.VERSION_MISMATCH, by_peer=False))
            self._abort()  # the active entity closes the connection (§4.3)
            return
        if self.role is Role.PASSIVE:
            self._queue(self._contact)  # §4.1: the passive entity answers
        tls = self._contact.can_tls and contact.can_tls
        if self.config.require_tls and not tls:
            self._terminate(TermReason.CONTACT_FAILURE)  # §4.3: unacceptable Enable TLS
            return
        if tls:
            self._move(Input.CONTACT_TLS)
            self._emit(StartTls())
            return
        self._move(Input.CONTACT_OK)
        if self.role is Role.ACTIVE:
            self._queue(self._our_sess_init())

    def _on_sess_init(self, init: SessInit) -> None:
        """§4.6 validation, §4.7 negotiation, §4.8 session extension items."""
        c = self.config
        problem = ""
        if init.node_id and not _NODE_ID.fullmatch(init.node_id):
            problem = "peer node id is not a URI (§4.6)"
        elif (
            init.segment_mru < c.min_peer_segment_mru or init.transfer_mru < c.min_peer_transfer_mru
        ):
            problem = "peer MRU unacceptable (§4.7)"
        else:
            for item in init.extensions:
                if item.critical and item.item_type not in c.known_session_extensions:
                    problem = f"unknown critical session extension {item.item_type} (§4.8)"
                    break
        if problem:
            self._violation(ConvergenceLayerError(problem, "RFC 9174 §4.6-4.8"))
            self._terminate(TermReason.CONTACT_FAILURE)
            return
        self.peer_session_init = init
        if self.role is Role.PASSIVE:
            self._queue(self._our_sess_init())
        self.keepalive_s = min(c.keepalive_s, init.keepalive_s)
        if c.idle_timeout_s is not None:
            self.idle_timeout_s = c.idle_timeout_s
        elif self.keepalive_s:
            self.idle_timeout_s = 2.0 * self.keepalive_s  # §5.1.1: exactly twice if not configured
        self._last_received = self._last_sent = self._now
        self._established = True
        self._move(Input.SESS_INIT_OK)
        self._emit(
            SessionEstablished(
                peer_node_id=init.node_id,
                keepalive_s=self.keepalive_s,
                peer_segment_mru=init.segment_mru,
                peer_transfer_mru=init.transfer_mru,
            )
        )

    # --- internals: messages -------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        kind = _TYPE_OF[type(message)]
        if kind != MessageType.KEEPALIVE:
            self._message_flag = True
        if kind == MessageType.SESS_INIT and self._state is State.ENDING and not self._established:
            return  # it crossed our SESS_TERM on the wire: nothing to answer (§6.1)
        accepted = kind in ACCEPTS[self._state]
        if accepted and kind in _TRANSFER_MESSAGES and not self._established:
            accepted = False
        if kind == MessageType.SESS_TERM and self._term_received:
            accepted = False
        if not accepted:
            self._reject(
                RejectReason.UNEXPECTED,
                kind,
                f"{kind.name} unexpected in state {self._state.value}",
            )
            return
        if isinstance(message, XferSegment):
            self._on_segment(message)
        elif isinstance(message, XferAck):
            self._on_ack(message.flags, message.transfer_id, message.length)
        elif isinstance(message, XferRefuse):
            self._on_refuse(message)
        elif isinstance(message, SessTerm):
            self._on_sess_term(message)
        elif isinstance(message, MsgReject):
            self._emit(MessageRejected(message.reason, message.rejected_header))
        elif isinstance(message, SessInit):
            self._on_sess_init(message)
        # KEEPALIVE: its arrival is the whole point (activity is stamped at the next tick).

    def _on_malformed(self, error: MalformedMessage) -> None:
        if error.message_type == MessageType.SESS_INIT:
            if self._state is State.WAIT_SESS_INIT:
                self._terminate(TermReason.CONTACT_FAILURE)  # §4.6: reception has failed
            else:
                self._queue(MsgReject(RejectReason.UNEXPECTED, MessageType.SESS_INIT))
        elif self._established:
            # §5.2.2: a failed START segment; refuse the transfer it would begin.
            self._refuse_segment(error.transfer_id, True, RefuseReason.EXTENSION_FAILURE)
        else:
            self._queue(MsgReject(RejectReason.UNEXPECTED, MessageType.XFER_SEGMENT))

    def _on_sess_term(self, term: SessTerm) -> None:
        """§6.1: reply to an initiation; a reply (or a crossing initiation) completes ours."""
        self._term_received = True
        if not self._term_sent:
            self._queue(SessTerm(SessTermFlags.REPLY, term.reason))  # identical but for REPLY
            self._emit(SessionTerminated(_term_reason(term.reason), by_peer=True))
            self._enter_ending(Input.TERM_RECEIVED)
        self._maybe_drained()

    def _abandon_current(self) -> None:
        """A START while a transfer is unfinished: §5.2.2 forbids interleaving; drop the old one."""
        rx = self._rx
        if rx is not None and rx.refused is None:
            self._violation(
                ConvergenceLayerError(f"transfer {rx.transfer_id} never ended", "RFC 9174 §5.2.2")
            )
            self._queue_refuse(RefuseReason.NOT_ACCEPTABLE, rx.transfer_id)
            self._emit(TransferFailed(rx.transfer_id, outgoing=False))
        self._rx = None

    def _fail_incoming(self, tid: int) -> None:
        """Tell the runtime a started incoming transfer will not complete."""
        self._emit(TransferFailed(tid, outgoing=False))

    def _refuse_segment(self, tid: int, start: bool, reason: RefuseReason) -> None:
        """Refuse the transfer ``tid`` (current or beginning) and remember it (§5.2.4)."""
        rx = self._rx
        if rx is not None and rx.transfer_id == tid:
            if rx.refused is None:
                rx.refused = reason
                rx.buffer = bytearray()
            self._queue_refuse(rx.refused, tid)
            return
        if start:
            self._abandon_current()
            self._rx = _Incoming(tid, None, refused=reason)
            self._last_rx_tid = tid
            self._queue_refuse(reason, tid)
        else:
            self._queue(MsgReject(RejectReason.UNEXPECTED, MessageType.XFER_SEGMENT))

    def _on_segment(self, seg: XferSegment) -> None:
        """§5.2.2 reassembly, §5.2.3 acks, §5.2.4 refusals, §5.2.5 transfer extensions."""
        rx = self._rx
        if seg.start:
            self._abandon_current()
            reason = self._start_problem(seg)
            if reason is not None:
                self._refuse_segment(seg.transfer_id, True, reason)
                if seg.end:
                    self._rx = None
                self._maybe_drained()
                return
            total = self._transfer_length(seg)
            self._rx = rx = _Incoming(seg.transfer_id, total)
            self._last_rx_tid = seg.transfer_id
            self._emit(TransferStarted(seg.transfer_id, total))
        elif rx is None or rx.transfer_id != seg.transfer_id:
            self._reject(
                RejectReason.UNEXPECTED,
                MessageType.XFER_SEGMENT,
                f"segment of unknown transfer {seg.transfer_id}",
            )
            return
        if rx.refused is not None:
            self._queue_refuse(rx.refused, rx.transfer_id)  # §5.2.4: refuse crossing segments
            if seg.end:
                self._rx = None
                self._maybe_drained()
            return
        received = rx.received + len(seg.data)
        if received > self.config.transfer_mru:
            self._refuse_segment(rx.transfer_id, False, RefuseReason.NO_RESOURCES)
            self._fail_incoming(rx.transfer_id)
        elif rx.total is not None and (received > rx.total or (seg.end and received != rx.total)):
            self._refuse_segment(rx.transfer_id, False, RefuseReason.NOT_ACCEPTABLE)  # §5.2.5.1
            self._fail_incoming(rx.transfer_id)
        else:
            rx.received = received
            if seg.end:
                if seg.start:
                    data = seg.data
                else:
                    rx.buffer += seg.data
                    data = bytes(rx.buffer)
                self._rx = None
                reply = _Reply(rx.transfer_id, None, seg.flags, received)
                self._awaiting_ack[rx.transfer_id] = reply
                self._replies.append(reply)
                self._emit(BundleReceived(rx.transfer_id, data))
                return
            rx.buffer += seg.data
            self._queue_segment_ack(seg.flags, rx.transfer_id, received)
            return
        if seg.end:
            self._rx = None
            self._maybe_drained()

    def _start_problem(self, seg: XferSegment) -> RefuseReason | None:
        """Why a START segment must be refused, or None (§5.2.1, §5.2.5, §6.1)."""
        if self._term_sent:
            return RefuseReason.SESSION_TERMINATING  # §6.1: no new incoming transfer
        if (
            self.config.require_increasing_transfer_ids
            and self._last_rx_tid is not None
            and seg.transfer_id <= self._last_rx_tid
        ):
            self._violation(
                ConvergenceLayerError(f"transfer id {seg.transfer_id} reused", "RFC 9174 §5.2.1")
            )
            return RefuseReason.NOT_ACCEPTABLE
        lengths = 0
        for item in seg.extensions:
            if item.item_type == TransferExtensionType.TRANSFER_LENGTH:
                lengths += 1
                if len(item.value) != _U64.size or lengths > 1:
                    return RefuseReason.EXTENSION_FAILURE
                if _U64.unpack(item.value)[0] > self.config.transfer_mru:
                    return RefuseReason.NO_RESOURCES  # §5.2.5.1: refuse pre-emptively
            elif item.critical:
                return RefuseReason.EXTENSION_FAILURE  # §5.2.5: unknown critical item
        return None

    @staticmethod
    def _transfer_length(seg: XferSegment) -> int | None:
        for item in seg.extensions:
            if item.item_type == TransferExtensionType.TRANSFER_LENGTH:
                return int(_U64.unpack(item.value)[0])
        return None

    def _on_ack(self, flags: int, tid: int, length: int) -> None:
        """§5.2.3: cumulative acknowledgement of one of our transfers."""
        tx = self._tx.get(tid)
        if tx is None:
            if tid >= self._next_tid:
                self._reject(
                    RejectReason.UNEXPECTED,
                    MessageType.XFER_ACK,
                    f"ack of unknown transfer {tid}",
                )
            return  # an ack crossing our refusal-driven stop, or a late duplicate: harmless
        complete = bool(flags & FLAG_END)
        if length > tx.sent or length < tx.acked or (complete and length != tx.total):
            self._reject(
                RejectReason.UNEXPECTED, MessageType.XFER_ACK, f"ack length {length} impossible"
            )
            return
        tx.acked = length
        if complete:
            del self._tx[tid]
        self._emit(TransferAcked(tid, length, complete))
        self._maybe_drained()

    def _on_refuse(self, refuse: XferRefuse) -> None:
        """§5.2.4: stop sending the refused transfer; tell the runtime."""
        tx = self._tx.pop(refuse.transfer_id, None)
        if tx is None:
            if refuse.transfer_id >= self._next_tid:
                self._reject(
                    RejectReason.UNEXPECTED,
                    MessageType.XFER_REFUSE,
                    f"refusal of unknown transfer {refuse.transfer_id}",
                )
            return
        if tx in self._tx_queue:
            self._tx_queue.remove(tx)
        self._emit(TransferRefused(refuse.transfer_id, _refuse_reason(refuse.reason), by_peer=True))
        self._maybe_drained()

    # --- internals: sending ----------------------------------------------------------------

    def _next_segment(self) -> list[bytes | memoryview]:
        """Cut the next segment of the head transfer (§5.2.2: no interleaving)."""
        peer = self.peer_session_init
        assert peer is not None
        tx = self._tx_queue[0]
        size = min(peer.segment_mru, self.config.send_segment_size, tx.total - tx.sent)
        if tx.sent == 0 and size == tx.total:  # the lean path: one whole segment
            self._tx_queue.popleft()
            tx.sent = size
            return [encode_whole_segment(tx.transfer_id, size), tx.data]
        flags = 0
        items = b""
        if tx.sent == 0:
            flags |= FLAG_START
        if tx.sent + size == tx.total:
            flags |= FLAG_END
            self._tx_queue.popleft()
        elif tx.sent == 0:
            # §5.2.5.1: announce the total on multi-segment transfers only.
            items = encode_extension_items(
                (ExtensionItem(TransferExtensionType.TRANSFER_LENGTH, _U64.pack(tx.total)),)
            )
        chunk = memoryview(tx.data)[tx.sent : tx.sent + size]
        tx.sent += size
        return [encode_segment_header(flags, tx.transfer_id, size, items), chunk]


_XFER_SEGMENT: Final = int(MessageType.XFER_SEGMENT)
_XFER_ACK: Final = int(MessageType.XFER_ACK)
#: Headers of the lean path's messages (§5.2.2, §5.2.3), as in :mod:`.v4_messages`.
_WHOLE_HEAD: Final = struct.Struct(">BBQIQ")
_ACK_HEAD: Final = struct.Struct(">BBQQ")
_WHOLE_FLAGS: Final = FLAG_START | FLAG_END
#: Whole small transfers written by one ``data_to_send`` call (bytes).
_SMALL_BATCH: Final = 64 * 1024

_TYPE_OF: Final[dict[type, MessageType]] = {
    SessInit: MessageType.SESS_INIT,
    XferSegment: MessageType.XFER_SEGMENT,
    XferAck: MessageType.XFER_ACK,
    XferRefuse: MessageType.XFER_REFUSE,
    Keepalive: MessageType.KEEPALIVE,
    SessTerm: MessageType.SESS_TERM,
    MsgReject: MessageType.MSG_REJECT,
}


def _conforms(session: TcpclV4Session) -> ConvergenceLayerSession:
    """Type-checked: the session offers the surface every convergence layer shares."""
    return session
