"""TCPCLv3 (RFC 7242) as an h11-style sans-IO session.

Theory of operation
-------------------
Each side of a new TCP connection sends a contact header at once (RFC 7242 §4.1): magic
``dtn!``, version 3, flags (request acks, reactive fragmentation, allow refusal, request LENGTH
messages), a keepalive interval and its endpoint ID. :class:`TcpclV3Session` queues ours when it
is created and negotiates when the peer's arrives (§4.2): the keepalive interval is the smaller
of the two (zero in either disables keepalives); acks, reactive fragmentation and refusal hold
only if both sides asked (refusal only together with acks); LENGTH messages are sent when the
peer asked for them. A bad magic closes the connection unanswered; another version is answered
with SHUTDOWN "version mismatch" (§4.2, §6.1).

The session's life is the table :data:`TRANSITIONS` — ``{state: {input: next state}}``; the code
around it performs the actions that go with each input (write a SHUTDOWN, queue events). Two
rules keep the table honest: every state change goes through :meth:`TcpclV3Session._transition`,
and an input missing from a state's row is a bug here, never a peer's doing (peer behaviour
arrives as the inputs ``VIOLATION``, ``PEER_SHUTDOWN`` or ``EOF``). Transfers are not states of
the session; they are two FIFO queues beside it, because TCPCLv3 names no bundle: acks and
refusals refer to "the oldest bundle not yet fully acknowledged or refused" (§5.3, §5.4).

Sending (§5.2): ``send_bundle`` queues a bundle; ``data_to_send`` writes control messages first,
then one DATA_SEGMENT (at most ``segment_size`` bytes; S flag on the first, E on the last) per
call, so acks and keepalives are never stuck behind a large bundle. Call it until it returns
``b""``. ACK_SEGMENTs carry the cumulative acknowledged length of the oldest outstanding bundle
and become :class:`TransferAcked`; a REFUSE_BUNDLE stops that bundle's remaining segments and
becomes :class:`TransferRefused`.

Receiving: segments are copied into one reassembly buffer bounded by ``max_bundle_size``; a
bundle that would exceed it (by its LENGTH message or its segments) is refused with "resources
exhausted" when refusal was negotiated (reported as an incoming :class:`TransferFailed`; its
remaining segments are skipped), or else the session is shut down (§5.4, §6.1). A complete
bundle becomes :class:`BundleReceived` (a session made with ``batch_events=True`` reports the
bundles completed back to back in its buffer as one :class:`BundlesReceived`, without their
:class:`TransferStarted`: the runtime's link takes custody of a run at once); its final ACK (the whole length) is sent only when the
runtime calls ``ack(transfer_id)`` after persisting it, and since acks are matched in order,
acks of later bundles wait for it. Acks of intermediate segments are automatic.

The lean path: most bundles of a fleet are small, one DATA_SEGMENT with S and E answered by
one ACK_SEGMENT of its whole length. A session made with ``batch_events=True`` reads runs of
those two messages straight from its receive buffer in ESTABLISHED (no bundle in progress, no
LENGTH announced), without the general parser's per-message steps, and reports each run as one
:class:`BundlesReceived` and one :class:`TransfersAcked`; the first message that is anything
else, or that the general path would judge (an SDNV out of range or incomplete, a length over
``max_bundle_size``, a partial, repeated or unexpected ack), goes the general way, which stays
the reference for hostile input. ``send_bundles`` queues a run and ``data_to_send`` writes its
segments in one join; ``ack_many`` acks a run. The bytes on the wire are the same as the general
path writes, acks in receive order (intermediate acks included).

Keepalive and idle (§5.6, §6.2): time only enters through ``tick(now)``; bytes moved since the
previous tick are dated to whichever end of that interval errs safe (sent: the start, so
keepalives are never late; received: ``now``, so the peer is never timed out early). With a
negotiated interval ``k``, a KEEPALIVE goes out after ``k`` seconds without sending, and ``2k``
seconds without receiving ends the session with a one-byte SHUTDOWN. ``idle_timeout_s``
(optional) shuts an idle session down with reason "idle timeout" once no bundle has moved for
that long.

When the session ends, every transfer left unfinished is reported before
:class:`ConnectionClosed`: queued bundles never started as :class:`TransferRefused`
(``by_peer=False``: still ours to route), started ones as :class:`TransferFailed`.

Bytes from the peer never raise: a violation is answered with SHUTDOWN (no reason code: RFC
7242 has none for protocol errors) and reported as :class:`ProtocolViolation` followed by
:class:`SessionTerminated` and :class:`ConnectionClosed`. Calls that break the protocol raise
:class:`~fleetwire.protocol.errors.LocalProtocolError` and change nothing.
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

import attrs

from ..errors import LocalProtocolError
from . import sdnv
from .common import (
    NEED_DATA,
    BundleReceived,
    BundlesReceived,
    ConnectionClosed,
    ConvergenceLayerError,
    Event,
    NeedData,
    ProtocolViolation,
    ReceiveBuffer,
    Role,
    SessionEstablished,
    SessionTerminated,
    TransferAcked,
    TransferFailed,
    TransferRefused,
    TransfersAcked,
    TransferStarted,
)

__all__ = [
    "MAGIC",
    "TRANSITIONS",
    "VERSION",
    "ContactFlags",
    "ContactHeader",
    "MessageType",
    "Negotiated",
    "RefusalReason",
    "SessionTerminatedV3",
    "ShutdownReason",
    "State",
    "TcpclV3Config",
    "TcpclV3Error",
    "TcpclV3Session",
    "encode_ack_segment",
    "encode_data_segment",
    "encode_keepalive",
    "encode_length",
    "encode_refuse_bundle",
    "encode_shutdown",
]

MAGIC: Final = b"dtn!"
VERSION: Final = 3
_FIXED: Final = struct.Struct(">4sBBH")  # magic, version, flags, keepalive_interval (§4.1)


class ContactFlags(enum.IntFlag):
    """Contact header flags (RFC 7242 §4.1)."""

    NONE = 0
    REQUEST_ACK = 0x01
    REACTIVE_FRAGMENTATION = 0x02
    ALLOW_REFUSAL = 0x04
    REQUEST_LENGTH = 0x08


class MessageType(enum.IntEnum):
    """Message type codes, the high nibble of a message's first byte (RFC 7242 §5.1)."""

    DATA_SEGMENT = 0x1
    ACK_SEGMENT = 0x2
    REFUSE_BUNDLE = 0x3
    KEEPALIVE = 0x4
    SHUTDOWN = 0x5
    LENGTH = 0x6


class RefusalReason(enum.IntEnum):
    """REFUSE_BUNDLE reason codes, carried in the flags nibble (RFC 7242 §5.4)."""

    UNKNOWN = 0x0
    COMPLETED = 0x1
    NO_RESOURCES = 0x2
    RETRANSMIT = 0x3


class ShutdownReason(enum.IntEnum):
    """SHUTDOWN reason codes (RFC 7242 §6.1); ``UNSPECIFIED`` is never on the wire."""

    #: The SHUTDOWN carried no reason code.
    UNSPECIFIED = -1
    IDLE_TIMEOUT = 0x00
    VERSION_MISMATCH = 0x01
    BUSY = 0x02


_DATA_START: Final = 0x02  # §5.2: S flag
_DATA_END: Final = 0x01  # §5.2: E flag
_SHUTDOWN_HAS_REASON: Final = 0x02  # §6.1
_SHUTDOWN_HAS_DELAY: Final = 0x01  # §6.1
#: First byte of a whole one-segment bundle (DATA_SEGMENT with S and E, §5.2) and of an
#: ACK_SEGMENT (§5.3): the lean path's two messages.
_WHOLE_SEGMENT: Final = MessageType.DATA_SEGMENT << 4 | _DATA_START | _DATA_END
_ACK_SEGMENT: Final = MessageType.ACK_SEGMENT << 4


#: Whole small bundles written by one ``data_to_send`` call (bytes).
_SMALL_BATCH = 64 * 1024


class TcpclV3Error(ConvergenceLayerError):
    """The peer broke RFC 7242; ``rule`` names the section."""

    code = "tcpclv3-protocol"


@attrs.frozen(slots=True)
class SessionTerminatedV3(SessionTerminated):
    """:class:`SessionTerminated` with TCPCLv3's optional reconnection delay (§6.1), seconds."""

    reconnect_delay_s: int | None = None


# --- messages (encoding) ---------------------------------------------------------------


@attrs.frozen(slots=True)
class ContactHeader:
    """The contact header (RFC 7242 §4.1)."""

    flags: ContactFlags
    keepalive_s: int
    eid: str

    def encode(self) -> bytes:
        eid = self.eid.encode("utf-8")
        return (
            _FIXED.pack(MAGIC, VERSION, self.flags, self.keepalive_s) + sdnv.encode(len(eid)) + eid
        )


def encode_data_segment(payload: bytes | memoryview, *, start: bool, end: bool) -> bytes:
    """DATA_SEGMENT (§5.2): type/flags byte, SDNV length, contents."""
    flags = (_DATA_START if start else 0) | (_DATA_END if end else 0)
    return bytes((MessageType.DATA_SEGMENT << 4 | flags,)) + sdnv.encode(len(payload)) + payload


def encode_ack_segment(acked_length: int) -> bytes:
    """ACK_SEGMENT (§5.3): the cumulative length received of the current bundle."""
    return bytes((MessageType.ACK_SEGMENT << 4,)) + sdnv.encode(acked_length)


def _final_ack(total: int) -> bytes:
    """:func:`encode_ack_segment` for the common lengths written as bytes (the SDNV in its
    shortest form, RFC 6256 §2.1); the encoder, which stays the reference, writes the rest."""
    if total < 0x80:
        return bytes((_ACK_SEGMENT, total))
    if total < 0x4000:
        return bytes((_ACK_SEGMENT, 0x80 | total >> 7, total & 0x7F))
    return encode_ack_segment(total)


def encode_refuse_bundle(reason: RefusalReason) -> bytes:
    """REFUSE_BUNDLE (§5.4): the reason is the flags nibble."""
    return bytes((MessageType.REFUSE_BUNDLE << 4 | reason,))


def encode_keepalive() -> bytes:
    """KEEPALIVE (§5.6)."""
    return bytes((MessageType.KEEPALIVE << 4,))


def encode_length(total_length: int) -> bytes:
    """LENGTH (§5.5): the total length of the bundle whose segments follow."""
    return bytes((MessageType.LENGTH << 4,)) + sdnv.encode(total_length)


def encode_shutdown(
    reason: ShutdownReason | None = None, reconnect_delay_s: int | None = None
) -> bytes:
    """SHUTDOWN (§6.1): optional reason byte, then optional SDNV reconnection delay."""
    flags = 0
    tail = b""
    if reason is not None and reason is not ShutdownReason.UNSPECIFIED:
        flags |= _SHUTDOWN_HAS_REASON
        tail += bytes((reason,))
    if reconnect_delay_s is not None:
        flags |= _SHUTDOWN_HAS_DELAY
        tail += sdnv.encode(reconnect_delay_s)
    return bytes((MessageType.SHUTDOWN << 4 | flags,)) + tail


# --- configuration and negotiation -----------------------------------------------------


def _u16(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{attribute.name} must fit in 16 bits, not {value}")


@attrs.frozen(slots=True)
class TcpclV3Config:
    """What this node offers and accepts on a TCPCLv3 session."""

    #: Our endpoint ID, sent in the contact header.
    local_eid: str
    #: Keepalive interval we propose (seconds, 0 disables).
    keepalive_s: int = attrs.field(default=30, validator=_u16)
    request_ack: bool = True
    allow_refusal: bool = True
    request_length: bool = False
    #: Offered only: the session reports acked lengths; fragments are the bundle layer's job.
    reactive_fragmentation: bool = False
    #: Largest DATA_SEGMENT content we write (bytes).
    segment_size: int = attrs.field(default=1 << 20, validator=attrs.validators.ge(1))
    #: Largest bundle we reassemble (bytes); larger ones are refused or end the session.
    max_bundle_size: int = attrs.field(default=1 << 26, validator=attrs.validators.ge(1))
    #: Longest peer endpoint ID accepted in the contact header (bytes).
    max_eid_length: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    #: Time allowed for the peer's contact header to arrive (seconds).
    contact_timeout_s: float = 30.0
    #: Shut down with "idle timeout" after this long without bundle data (§6.2); ``None``: never.
    idle_timeout_s: float | None = None
    #: After our SHUTDOWN, how long to wait for the peer's SHUTDOWN or EOF (seconds).
    shutdown_timeout_s: float = 10.0

    @property
    def flags(self) -> ContactFlags:
        flags = ContactFlags.NONE
        if self.request_ack:
            flags |= ContactFlags.REQUEST_ACK
            if self.allow_refusal:  # §4.1: refusal MUST NOT be offered without acks
                flags |= ContactFlags.ALLOW_REFUSAL
        if self.reactive_fragmentation:
            flags |= ContactFlags.REACTIVE_FRAGMENTATION
        if self.request_length:
            flags |= ContactFlags.REQUEST_LENGTH
        return flags


@attrs.frozen(slots=True)
class Negotiated:
    """Session parameters after both contact headers (RFC 7242 §4.2)."""

    peer_eid: str
    peer_flags: ContactFlags
    keepalive_s: int
    acks: bool
    refusal: bool
    reactive_fragmentation: bool
    #: The peer asked for LENGTH messages before each bundle we send.
    send_length: bool

    @classmethod
    def from_headers(cls, ours: ContactHeader, theirs: ContactHeader) -> Negotiated:
        both = ours.flags & theirs.flags
        acks = bool(both & ContactFlags.REQUEST_ACK)
        return cls(
            peer_eid=theirs.eid,
            peer_flags=theirs.flags,
            keepalive_s=min(ours.keepalive_s, theirs.keepalive_s),
            acks=acks,
            refusal=acks and bool(both & ContactFlags.ALLOW_REFUSAL),
            reactive_fragmentation=bool(both & ContactFlags.REACTIVE_FRAGMENTATION),
            send_length=bool(theirs.flags & ContactFlags.REQUEST_LENGTH),
        )


# --- the session state machine ---------------------------------------------------------


class State(enum.Enum):
    AWAIT_CONTACT = "await-contact"
    ESTABLISHED = "established"
    #: We sent SHUTDOWN; acks may still flow, no new data from us.
    CLOSING = "closing"
    CLOSED = "closed"


class Input(enum.Enum):
    CONTACT_ACCEPTED = "contact-accepted"
    LOCAL_SHUTDOWN = "local-shutdown"
    PEER_SHUTDOWN = "peer-shutdown"
    #: The peer broke the protocol, a timer expired, or we cannot go on (bundle too large).
    ABORT = "abort"
    EOF = "eof"


#: ``{state: {input: next state}}`` — the whole life of a session.
TRANSITIONS: Final[dict[State, dict[Input, State]]] = {
    State.AWAIT_CONTACT: {
        Input.CONTACT_ACCEPTED: State.ESTABLISHED,
        Input.LOCAL_SHUTDOWN: State.CLOSING,  # §6.1: SHUTDOWN may refuse a session at setup
        Input.PEER_SHUTDOWN: State.CLOSED,
        Input.ABORT: State.CLOSED,
        Input.EOF: State.CLOSED,
    },
    State.ESTABLISHED: {
        Input.LOCAL_SHUTDOWN: State.CLOSING,
        Input.PEER_SHUTDOWN: State.CLOSED,
        Input.ABORT: State.CLOSED,
        Input.EOF: State.CLOSED,
    },
    State.CLOSING: {
        Input.CONTACT_ACCEPTED: State.CLOSING,  # the peer's header crossed our SHUTDOWN
        Input.PEER_SHUTDOWN: State.CLOSED,
        Input.ABORT: State.CLOSED,
        Input.EOF: State.CLOSED,
    },
    State.CLOSED: {},
}


@attrs.define(slots=True)
class _Outgoing:
    transfer_id: int
    data: memoryview
    sent: int = 0
    acked: int = 0


@attrs.define(slots=True)
class _Incoming:
    """A bundle whose segments are arriving."""

    transfer_id: int
    announced: int | None
    buf: bytearray = attrs.field(factory=bytearray)
    received: int = 0
    #: Refused: its remaining segments are read and dropped.
    skipping: bool = False


@attrs.define(slots=True)
class _Disposition:
    """A received (or arriving) bundle whose final ack or refusal has not been written yet."""

    transfer_id: int
    #: Bytes through the last non-final segment: may be acked before the runtime decides.
    intermediate: int = 0
    intermediate_sent: int = 0
    total: int | None = None
    #: ``None`` until the runtime (or a size limit) decides: ``"ack"`` or a refusal reason.
    decision: Literal["ack"] | RefusalReason | None = None


class TcpclV3Session:
    """One TCPCLv3 session over one TCP connection; see the module docstring."""

    def __init__(self, role: Role, config: TcpclV3Config, *, batch_events: bool = False) -> None:
        self.role = role
        self.config = config
        self.batch_events = batch_events
        self.state = State.AWAIT_CONTACT
        self.negotiated: Negotiated | None = None
        self._ours = ContactHeader(config.flags, config.keepalive_s, config.local_eid)
        self._clean = False
        self._shutdown_sent = False
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._events: deque[Event] = deque()
        self._control = bytearray(self._ours.encode())  # §4.1: sent at once by both sides
        # sending
        self._to_send: deque[_Outgoing] = deque()
        self._unacked: deque[_Outgoing] = deque()
        self._next_out_id = 0
        # receiving
        self._rx: _Incoming | None = None
        self._announced: int | None = None
        self._segment_left = 0
        self._segment_end = False
        self._in_segment = False
        self._pending: deque[_Disposition] = deque()
        #: ``_pending`` by transfer id: a bundle's disposition is found without a scan (many
        #: small bundles may be in flight at once).
        self._pending_ids: dict[int, _Disposition] = {}
        self._next_in_id = 0
        # timers: armed by the first tick
        self._started: float | None = None
        self._last_tick = self._last_rx = self._last_tx = self._last_data = 0.0
        self._closing_since: float | None = None
        self._rx_activity = self._tx_activity = self._data_activity = False

    # --- state -------------------------------------------------------------------------

    def _transition(self, what: Input) -> None:
        self.state = TRANSITIONS[self.state][what]

    @property
    def established(self) -> bool:
        """Both contact headers went through (stays true while closing)."""
        return self.negotiated is not None

    @property
    def buffered(self) -> int:
        """Bytes held from the peer: unparsed input plus the bundle being reassembled."""
        return self._buffer.allocated + (len(self._rx.buf) if self._rx else 0)

    @property
    def outstanding_transfers(self) -> frozenset[int]:
        """Our transfers not finished: not fully written yet, or (with acks) not fully acked."""
        return frozenset(t.transfer_id for t in (*self._to_send, *self._unacked))

    @property
    def awaiting_ack(self) -> frozenset[int]:
        """Received bundles whose final ACK waits for ``ack`` (with acks negotiated)."""
        return frozenset(
            e.transfer_id for e in self._pending if e.total is not None and e.decision is None
        )

    # --- commands ----------------------------------------------------------------------

    def send_bundle(self, data: bytes | memoryview) -> int:
        """Queue a bundle for sending; returns its transfer id (0, 1, ... in order)."""
        if self.state not in (State.AWAIT_CONTACT, State.ESTABLISHED):
            raise LocalProtocolError(f"cannot send a bundle in state {self.state.value}")
        if not data:
            raise LocalProtocolError("a bundle is never empty")
        transfer = _Outgoing(self._next_out_id, memoryview(bytes(data)))
        self._next_out_id += 1
        self._to_send.append(transfer)
        return transfer.transfer_id

    def send_bundles(self, bundles: Sequence[bytes | memoryview]) -> range:
        """:meth:`send_bundle` for each of ``bundles``, checked first as a whole (nothing is
        queued if one cannot be); returns their transfer ids, consecutive."""
        if self.state not in (State.AWAIT_CONTACT, State.ESTABLISHED):
            raise LocalProtocolError(f"cannot send a bundle in state {self.state.value}")
        if not all(bundles):
            raise LocalProtocolError("a bundle is never empty")
        first = tid = self._next_out_id
        queue = self._to_send
        for data in bundles:
            queue.append(_Outgoing(tid, memoryview(data if type(data) is bytes else bytes(data))))
            tid += 1
        self._next_out_id = tid
        return range(first, tid)

    def ack(self, transfer_id: int) -> None:
        """The runtime persisted received bundle ``transfer_id``: send its final ACK (§5.3)."""
        self._decide(transfer_id, "ack")

    def ack_many(self, transfer_ids: Sequence[int]) -> None:
        """:meth:`ack` for each of ``transfer_ids`` in turn, the same bytes written (acks
        leave in receive order, §5.3); on a transfer that cannot be acked it raises as
        :meth:`ack` would, the ones before it acked."""
        ids = self._pending_ids
        pending = self._pending
        rest: Iterable[int] = transfer_ids
        if self._acks and pending:
            # The common case inline: the oldest received bundle, complete, is acked. What
            # ``ack`` does: decide it, write its final ack, then (``_release``) the decided
            # ones after it and the next one's intermediate ack — rare, so only when due.
            control = self._control
            taken = 0
            for tid in transfer_ids:
                entry = pending[0]
                if entry.transfer_id != tid or entry.decision is not None or entry.total is None:
                    break
                pending.popleft()
                del ids[tid]
                entry.decision = "ack"
                control += _final_ack(entry.total)
                taken += 1
                if not pending:
                    break
                head = pending[0]
                if head.decision is not None or head.intermediate > head.intermediate_sent:
                    self._release()
                    if not pending:
                        break
            rest = itertools.islice(transfer_ids, taken, None)
        for tid in rest:
            found = ids.get(tid)
            if found is None or found.decision is not None or found.total is None:
                self._decide(tid, "ack")  # what ack answers: nothing to write, or its error
                continue
            found.decision = "ack"
            # Between calls the oldest disposition is always undecided (``_release`` ran), so
            # only deciding it writes anything: the acks it frees, then the next one's
            # intermediate ack, exactly as one ``ack`` per transfer would.
            if pending[0] is found:
                self._release()

    def refuse(self, transfer_id: int, reason: RefusalReason = RefusalReason.UNKNOWN) -> None:
        """Refuse a received or arriving bundle with REFUSE_BUNDLE (§5.4)."""
        if self.negotiated is None or not self.negotiated.refusal:
            raise LocalProtocolError("bundle refusal was not negotiated on this session")
        if reason not in tuple(RefusalReason):
            raise LocalProtocolError(f"{reason!r} is not a TCPCLv3 refusal reason")
        self._decide(transfer_id, RefusalReason(reason))

    def terminate(
        self,
        reason: ShutdownReason | None = None,
        reconnect_delay_s: int | None = None,
    ) -> None:
        """Send SHUTDOWN (§6.1); no data follows it.

        Bundles not yet started come back as :class:`TransferRefused` (``by_peer=False``), a
        half-sent one as :class:`TransferFailed`; acks for what was sent may still arrive.
        """
        if self.state is State.CLOSED:
            raise LocalProtocolError("the session is already closed")
        if self.state is State.CLOSING:
            return
        self._control += encode_shutdown(reason, reconnect_delay_s)
        self._shutdown_sent = True
        self._closing_since = None  # the shutdown timer starts at the next tick
        self._transition(Input.LOCAL_SHUTDOWN)
        self._events.append(
            SessionTerminatedV3(
                reason=reason if reason is not None else ShutdownReason.UNSPECIFIED,
                by_peer=False,
                reconnect_delay_s=reconnect_delay_s,
            )
        )
        self._drop_unsent()

    def _decide(self, transfer_id: int, decision: Literal["ack"] | RefusalReason) -> None:
        received = 0 <= transfer_id < self._next_in_id
        entry = self._entry(transfer_id)
        if entry is None:
            if received and (self.state is State.CLOSED or not self._acks):
                return  # nothing to write: closed, or acks were not negotiated
            raise LocalProtocolError(f"no undecided received bundle has transfer id {transfer_id}")
        if entry.decision is not None:
            raise LocalProtocolError(f"transfer {transfer_id} was already acked or refused")
        if decision == "ack" and entry.total is None:
            raise LocalProtocolError(f"transfer {transfer_id} is not complete yet")
        entry.decision = decision
        if isinstance(decision, RefusalReason) and self._rx and self._rx.transfer_id == transfer_id:
            self._rx.skipping = True
            self._rx.buf = bytearray()
        self._release()

    # --- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write now: control messages, then one DATA_SEGMENT, or several bundles
        that fit one segment each up to 64 KiB (small bundles leave in one write; a long
        one still goes a segment per call, so acks queued meanwhile go out between its
        segments). Repeat until empty."""
        control = self._control
        self._control = bytearray()
        queue = self._to_send
        if not (self.state is State.ESTABLISHED and queue):
            if control:
                self._tx_activity = True
            return bytes(control)
        chunks: list[bytes | bytearray | memoryview] = [control, self._next_segment()]
        size = len(control) + len(chunks[1])
        whole = self.config.segment_size
        negotiated = self.negotiated
        assert negotiated is not None
        # Whole bundles that follow, each one S|E segment: _next_segment's bytes, inline.
        unacked = self._unacked if negotiated.acks else None
        length_first = negotiated.send_length
        append = chunks.append
        while queue and (head := queue[0]).sent == 0:
            n = len(head.data)
            if n > whole or size + n > _SMALL_BATCH:
                break
            if n < 0x80:
                header = bytes((_WHOLE_SEGMENT, n))
            elif n < 0x4000:
                header = bytes((_WHOLE_SEGMENT, 0x80 | n >> 7, n & 0x7F))
            else:
                header = bytes((_WHOLE_SEGMENT,)) + sdnv.encode(n)
            if length_first:
                header = encode_length(n) + header
            queue.popleft()
            head.sent = n
            if unacked is not None:
                unacked.append(head)
            append(header)
            append(head.data)
            size += len(header) + n
        self._tx_activity = True
        return b"".join(chunks)

    def _next_segment(self) -> bytes:
        assert self.negotiated is not None
        transfer = self._to_send[0]
        total = len(transfer.data)
        head = b""
        if transfer.sent == 0:
            if self.negotiated.send_length:
                head = encode_length(total)
            if self.negotiated.acks:
                self._unacked.append(transfer)
        chunk = transfer.data[transfer.sent : transfer.sent + self.config.segment_size]
        start = transfer.sent == 0
        transfer.sent += len(chunk)
        end = transfer.sent == total
        if end:
            self._to_send.popleft()
        self._data_activity = True
        return head + encode_data_segment(chunk, start=start, end=end)

    # --- timers ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Let keepalive, idle and setup timers fire at time ``now`` (seconds, monotonic)."""
        if self._started is None:
            self._started = self._last_tick = now
            self._last_rx = self._last_tx = self._last_data = now
        # Bytes moved since the last tick happened somewhere in (last tick, now]: take the bound
        # that errs safe — sent as early as possible (keepalives go out sooner), received and
        # data moved as late as possible (no premature expiry or idle shutdown).
        if self._rx_activity:
            self._last_rx, self._rx_activity = now, False
        if self._tx_activity:
            self._last_tx, self._tx_activity = max(self._last_tx, self._last_tick), False
        if self._data_activity:
            self._last_data, self._data_activity = now, False
        self._last_tick = now
        cfg = self.config
        if self.state is State.AWAIT_CONTACT:
            if now - self._started >= cfg.contact_timeout_s:
                self._abort(None, send_shutdown=True)
        elif self.state is State.ESTABLISHED:
            assert self.negotiated is not None
            k = self.negotiated.keepalive_s
            if k and now - self._last_rx >= 2 * k:
                self._abort(None, send_shutdown=True)  # §5.6: one-byte SHUTDOWN, then close
                return
            if k and now - self._last_tx >= k and not self._control and not self._to_send:
                self._control += encode_keepalive()
                self._last_tx = now
            idle = cfg.idle_timeout_s
            if idle is not None and now - self._last_data >= idle and not self._busy():
                self.terminate(ShutdownReason.IDLE_TIMEOUT)
                self._closing_since = now
        elif self.state is State.CLOSING:
            if self._closing_since is None:
                self._closing_since = now
            elif now - self._closing_since >= cfg.shutdown_timeout_s:
                self._abort(None, send_shutdown=False)

    def next_deadline(self) -> float | None:
        """When ``tick`` should next be called; ``None`` once closed."""
        if self.state is State.CLOSED:
            return None
        if self._started is None:
            return 0.0  # never ticked: tick now to arm the timers
        if self.state is State.AWAIT_CONTACT:
            return self._started + self.config.contact_timeout_s
        if self.state is State.CLOSING:
            if self._closing_since is None:
                return 0.0  # terminated since the last tick: tick now to start the timer
            return self._closing_since + self.config.shutdown_timeout_s
        assert self.negotiated is not None
        deadlines = []
        k = self.negotiated.keepalive_s
        if k:
            deadlines += [self._last_tx + k, self._last_rx + 2 * k]
        if self.config.idle_timeout_s is not None:
            deadlines.append(self._last_data + self.config.idle_timeout_s)
        return min(deadlines) if deadlines else None

    def _busy(self) -> bool:
        return bool(self._to_send or self._unacked or self._rx or self._pending)

    # --- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from TCP; ``b""`` means the peer closed its side."""
        if self.state is State.CLOSED or self._eof:
            return
        if not data:
            self._eof = True
            return
        self._buffer.extend(data)
        self._rx_activity = True

    def next_event(self) -> Event | NeedData:
        event = self._next_event()
        if not self.batch_events:
            return event
        if isinstance(event, TransferStarted):  # the start of a bundle already complete?
            following = self._next_event()
            if not (
                isinstance(following, BundleReceived)
                and following.transfer_id == event.transfer_id
            ):
                if not isinstance(following, NeedData):
                    self._events.appendleft(following)
                return event
            event = following
        if type(event) is not BundleReceived:
            return event
        # Batched: the bundles completed back to back after this one join it. A transfer's
        # TransferStarted is dropped when its bundle joins; anything else ends the run and is
        # put back in front, in order, as are a TransferStarted of a bundle not complete yet.
        tids, bundles = [event.transfer_id], [event.data]
        started: TransferStarted | None = None
        while True:
            following = self._next_event()
            if isinstance(following, TransferStarted) and started is None:
                started = following
                continue
            if isinstance(following, BundleReceived) and (
                started is None or started.transfer_id == following.transfer_id
            ):
                tids.append(following.transfer_id)
                bundles.append(following.data)
                started = None
                continue
            if not isinstance(following, NeedData):
                self._events.appendleft(following)
            if started is not None:
                self._events.appendleft(started)
            break
        if len(tids) == 1:
            return event
        return BundlesReceived(tuple(tids), tuple(bundles))

    def _next_event(self) -> Event | NeedData:
        while True:
            if self._events:
                return self._events.popleft()
            if self.state is State.CLOSED:
                return ConnectionClosed(clean=self._clean)
            if self._step():
                continue
            if not self._eof:
                return NEED_DATA
            self._clean = self.state is State.CLOSING
            self._transition(Input.EOF)
            self._closed()

    def _step(self) -> bool:
        """Parse what the buffer allows; False when more bytes are needed."""
        if self._in_segment:
            return self._segment_content()
        if self.negotiated is None:
            return self._contact_header()
        if (
            self.batch_events
            and self.state is State.ESTABLISHED
            and self._rx is None
            and self._announced is None
            and self._lean_batch()
        ):
            return True
        first = self._buffer.peek(1)
        if first is None:
            return False
        kind, flags = first[0] >> 4, first[0] & 0x0F
        if kind == MessageType.DATA_SEGMENT:
            return self._with_sdnv(lambda n: self._data_segment(flags, n))
        if kind == MessageType.ACK_SEGMENT:
            return self._with_sdnv(self._ack_segment)
        if kind == MessageType.LENGTH:
            return self._with_sdnv(self._length)
        if kind == MessageType.REFUSE_BUNDLE:
            self._buffer.consume(1)
            self._refuse_bundle(flags)
        elif kind == MessageType.KEEPALIVE:
            self._buffer.consume(1)
        elif kind == MessageType.SHUTDOWN:
            return self._shutdown(flags)
        else:
            self._violation(f"unknown message type {kind:#x}", "RFC 7242 §5.1")
        return True

    def _lean_batch(self) -> bool:
        """Runs of the common messages of a busy session, read straight from the buffer.

        Whole one-segment bundles (DATA_SEGMENT with S|E, §5.2, complete in the buffer) and
        ACK_SEGMENTs that complete our oldest outstanding bundle (§5.3) are handled as
        :meth:`_data_segment`, :meth:`_segment_content` and :meth:`_ack_segment` would handle
        them, every such message that follows in one loop, and reported as one
        :class:`BundlesReceived` and one :class:`TransfersAcked`. At anything else — another
        message, a segment not all here, an SDNV that is not in its valid range or not
        complete, a length the general path would refuse, an ack that is partial, repeated or
        wrong — it stops, and the general path (which stays the reference) takes that
        message: the errors and bounds for hostile input are its. False if it took nothing.
        """
        raw, pos = self._buffer.window()
        end = len(raw)
        limit = self.config.max_bundle_size
        assert self.negotiated is not None
        acks = self.negotiated.acks
        pending = self._pending
        ids = self._pending_ids
        unacked = self._unacked
        tid = self._next_in_id
        tids: list[int] = []
        bundles: list[bytes] = []
        acked: list[int] = []
        with memoryview(raw) as view:
            while pos < end:
                kind = raw[pos]
                if kind != _WHOLE_SEGMENT and kind != _ACK_SEGMENT:
                    break
                # The SDNV (RFC 6256): the general path's bounds, stricter — at most 9 bytes
                # (63 bits) here; anything longer or incomplete goes the general way.
                at = pos + 1
                if at == end:
                    break
                value = raw[at]
                at += 1
                if value < 0x80:
                    pass  # one byte: lengths below 128
                elif at < end and raw[at] < 0x80:  # two bytes: below 16 KiB
                    value = (value & 0x7F) << 7 | raw[at]
                    at += 1
                else:
                    value &= 0x7F
                    stop = min(end, at + 8)
                    while at < stop:
                        byte = raw[at]
                        at += 1
                        value = value << 7 | (byte & 0x7F)
                        if byte < 0x80:
                            break
                    else:
                        break  # cut short, or long enough for the general path to judge
                if kind == _WHOLE_SEGMENT:
                    if not 0 < value <= limit or end - at < value:
                        break
                    bundles.append(bytes(view[at : at + value]))
                    tids.append(tid)
                    if acks:
                        entry = _Disposition(tid, total=value)
                        pending.append(entry)
                        ids[tid] = entry
                    tid += 1
                    pos = at + value
                else:
                    if not acks or not unacked:
                        break
                    head = unacked[0]
                    if value != len(head.data) or head.sent != value or head.acked == value:
                        break
                    head.acked = value
                    unacked.popleft()
                    acked.append(head.transfer_id)
                    pos = at
        if not tids and not acked:
            return False
        self._buffer.consume_to(pos)
        if tids:
            self._next_in_id = tid
            self._data_activity = True
            self._events.append(BundlesReceived(tuple(tids), tuple(bundles)))
        if acked:
            self._events.append(TransfersAcked(tuple(acked)))
        return True

    def _with_sdnv(self, handle: Callable[[int], None]) -> bool:
        """Read ``type byte, SDNV`` and hand the value over; False if incomplete."""
        window = self._buffer.peek(min(self._buffer.size, 1 + sdnv.MAX_SDNV_BYTES))
        assert window is not None
        try:
            result = sdnv.decode_prefix(window, 1)
        except sdnv.SdnvError as exc:
            self._violation(f"bad SDNV: {exc.message}", "RFC 7242 §5, RFC 6256")
            return True
        if result is None:
            return False
        value, end = result
        self._buffer.consume(end)
        handle(value)
        return True

    def _contact_header(self) -> bool:
        cfg = self.config
        fixed = self._buffer.peek(min(self._buffer.size, _FIXED.size))
        assert fixed is not None
        if not MAGIC.startswith(fixed[:4]):
            # §4.2: not a TCPCL peer at all: close without a word.
            self._violation("contact header magic is not 'dtn!'", "RFC 7242 §4.1", shutdown=False)
            return True
        if len(fixed) < _FIXED.size:
            return False
        _, version, flags, keepalive = _FIXED.unpack(fixed)
        if version != VERSION:
            self._violation(
                f"peer speaks TCPCL version {version}",
                "RFC 7242 §4.2",
                reason=ShutdownReason.VERSION_MISMATCH,
            )
            return True
        window = self._buffer.peek(min(self._buffer.size, _FIXED.size + sdnv.MAX_SDNV_BYTES))
        assert window is not None
        try:
            result = sdnv.decode_prefix(window, _FIXED.size)
        except sdnv.SdnvError as exc:
            self._violation(f"bad EID length: {exc.message}", "RFC 7242 §4.1")
            return True
        if result is None:
            return False
        eid_length, eid_start = result
        if eid_length > cfg.max_eid_length:
            self._violation(
                f"peer EID of {eid_length} bytes exceeds {cfg.max_eid_length}", "RFC 7242 §4.1"
            )
            return True
        whole = self._buffer.peek(eid_start + eid_length)
        if whole is None:
            return False
        self._buffer.consume(eid_start + eid_length)
        try:
            eid = whole[eid_start:].decode("utf-8")
        except UnicodeDecodeError:
            self._violation("peer EID is not UTF-8 text", "RFC 7242 §4.1")
            return True
        theirs = ContactHeader(ContactFlags(flags & 0x0F), keepalive, eid)
        self.negotiated = Negotiated.from_headers(self._ours, theirs)
        self._transition(Input.CONTACT_ACCEPTED)
        if self.state is State.ESTABLISHED:
            self._events.append(
                SessionEstablished(peer_node_id=eid, keepalive_s=self.negotiated.keepalive_s)
            )
        return True

    # --- messages from the peer --------------------------------------------------------

    def _data_segment(self, flags: int, length: int) -> None:
        cfg = self.config
        rx = self._rx
        if flags & _DATA_START:
            if rx is not None and not rx.skipping:
                self._violation("a bundle started before the previous one ended", "RFC 7242 §5.2")
                return
            rx = self._rx = _Incoming(self._next_in_id, self._announced)
            self._next_in_id += 1
            self._announced = None
            if self._acks:
                entry = _Disposition(rx.transfer_id)
                self._pending.append(entry)
                self._pending_ids[rx.transfer_id] = entry
            self._events.append(TransferStarted(rx.transfer_id, rx.announced))
            if rx.announced is not None and rx.announced > cfg.max_bundle_size:
                self._too_large(rx)
                if self.state is State.CLOSED:
                    return  # no refusal negotiated: the session is over, nothing more to judge
        elif rx is None:
            self._violation("DATA_SEGMENT without S flag continues no bundle", "RFC 7242 §5.2")
            return
        if not rx.skipping:
            if rx.announced is not None and rx.received + length > rx.announced:
                self._violation("segments exceed the bundle's LENGTH", "RFC 7242 §5.5")
                return
            if rx.received + length > cfg.max_bundle_size:
                self._too_large(rx)
        if self.state is State.CLOSED:
            return
        self._segment_left = length
        self._segment_end = bool(flags & _DATA_END)
        self._in_segment = True
        self._data_activity = True

    def _segment_content(self) -> bool:
        rx = self._rx
        assert rx is not None
        if self._segment_left:
            take = min(self._segment_left, self._buffer.size)
            if take == 0:
                return False
            if rx.skipping:
                self._buffer.skip(take)
            else:
                rx.buf += self._buffer.consume(take)
            self._segment_left -= take
            rx.received += take
            if self._segment_left:
                return True
        self._in_segment = False
        if rx.skipping:
            if self._segment_end:
                self._rx = None
            return True
        entry = self._entry(rx.transfer_id)
        if not self._segment_end:
            if entry is not None:
                entry.intermediate = rx.received
                self._release()
            return True
        if rx.announced is not None and rx.received != rx.announced:
            self._violation("bundle shorter than its LENGTH", "RFC 7242 §5.5")
            return True
        if entry is not None:
            entry.total = rx.received
        self._rx = None
        self._events.append(BundleReceived(rx.transfer_id, bytes(rx.buf)))
        return True

    def _too_large(self, rx: _Incoming) -> None:
        """§5.4: refuse with "resources exhausted" if we may; otherwise shut down (§6.1)."""
        assert self.negotiated is not None
        if self.negotiated.refusal:
            self._events.append(TransferFailed(rx.transfer_id, outgoing=False))
            rx.skipping = True
            rx.buf = bytearray()
            entry = self._entry(rx.transfer_id)
            assert entry is not None  # refusal implies acks
            entry.decision = RefusalReason.NO_RESOURCES
            self._release()
        else:
            self._abort(None, send_shutdown=True)

    def _ack_segment(self, acked: int) -> None:
        if self.negotiated is None or not self.negotiated.acks:
            self._violation("ACK_SEGMENT on a session without acks", "RFC 7242 §5.3")
            return
        if not self._unacked:
            self._violation("ACK_SEGMENT with no bundle outstanding", "RFC 7242 §5.3")
            return
        head = self._unacked[0]
        if not head.acked <= acked <= head.sent:
            self._violation(
                f"ACK_SEGMENT of {acked} bytes; {head.acked} acked, {head.sent} sent",
                "RFC 7242 §5.3",
            )
            return
        if acked == head.acked:
            return  # a repeat says nothing new
        head.acked = acked
        complete = acked == len(head.data)
        if complete:
            self._unacked.popleft()
        self._events.append(TransferAcked(head.transfer_id, acked, complete))

    def _refuse_bundle(self, reason: int) -> None:
        if self.negotiated is None or not self.negotiated.refusal:
            self._violation("REFUSE_BUNDLE on a session without refusal", "RFC 7242 §5.4")
            return
        if not self._unacked:
            self._violation("REFUSE_BUNDLE with no bundle outstanding", "RFC 7242 §5.4")
            return
        head = self._unacked.popleft()
        if self._to_send and self._to_send[0] is head:
            self._to_send.popleft()  # stop sending its remaining segments
        self._events.append(TransferRefused(head.transfer_id, reason, by_peer=True))

    def _length(self, total: int) -> None:
        if self._rx is not None and not self._rx.skipping:
            self._violation("LENGTH inside a bundle", "RFC 7242 §5.5")
            return
        self._announced = total

    def _shutdown(self, flags: int) -> bool:
        need = 1 + (1 if flags & _SHUTDOWN_HAS_REASON else 0)
        head = self._buffer.peek(need)
        if head is None:
            return False
        reason: int = head[1] if flags & _SHUTDOWN_HAS_REASON else ShutdownReason.UNSPECIFIED
        delay: int | None = None
        end = need
        if flags & _SHUTDOWN_HAS_DELAY:
            window = self._buffer.peek(min(self._buffer.size, need + sdnv.MAX_SDNV_BYTES))
            assert window is not None
            try:
                result = sdnv.decode_prefix(window, need)
            except sdnv.SdnvError as exc:
                self._violation(f"bad reconnection delay: {exc.message}", "RFC 7242 §6.1")
                return True
            if result is None:
                return False
            delay, end = result
        self._buffer.consume(end)
        try:
            reason = ShutdownReason(reason)
        except ValueError:
            pass  # an unassigned code: reported as the number it is
        self._events.append(
            SessionTerminatedV3(reason=reason, by_peer=True, reconnect_delay_s=delay)
        )
        if not self._shutdown_sent:
            self._control += encode_shutdown()  # answer, then close (§6.1)
            self._shutdown_sent = True
        self._clean = True
        self._transition(Input.PEER_SHUTDOWN)
        self._closed()
        return True

    # --- acks in order ------------------------------------------------------------------

    @property
    def _acks(self) -> bool:
        return self.negotiated is not None and self.negotiated.acks

    def _entry(self, transfer_id: int) -> _Disposition | None:
        """The undecided disposition of a received transfer (kept only when acks are on)."""
        return self._pending_ids.get(transfer_id)

    def _release(self) -> None:
        """Write decided acks/refusals from the oldest on, then the next one's intermediate ack."""
        acks = self._acks
        pending = self._pending
        ids = self._pending_ids
        control = self._control
        while pending and pending[0].decision is not None:
            entry = pending.popleft()
            del ids[entry.transfer_id]
            if isinstance(entry.decision, RefusalReason):
                control += encode_refuse_bundle(entry.decision)
            elif acks:
                assert entry.total is not None
                control += _final_ack(entry.total)
        if acks and self._pending:
            head = self._pending[0]
            if head.intermediate > head.intermediate_sent:
                self._control += encode_ack_segment(head.intermediate)
                head.intermediate_sent = head.intermediate

    # --- ending ------------------------------------------------------------------------

    def _violation(
        self,
        message: str,
        rule: str,
        *,
        shutdown: bool = True,
        reason: ShutdownReason | None = None,
    ) -> None:
        self._events.append(ProtocolViolation(TcpclV3Error(message, rule)))
        self._abort(reason, send_shutdown=shutdown)

    def _abort(self, reason: ShutdownReason | None, *, send_shutdown: bool) -> None:
        """End the session at once (unclean): optional SHUTDOWN, then ConnectionClosed."""
        if send_shutdown and not self._shutdown_sent:
            self._control += encode_shutdown(reason)
            self._shutdown_sent = True
            self._events.append(
                SessionTerminatedV3(
                    reason=reason if reason is not None else ShutdownReason.UNSPECIFIED,
                    by_peer=False,
                )
            )
        self._clean = False
        self._transition(Input.ABORT)
        self._closed()

    def _closed(self) -> None:
        """The session is over: report every unfinished transfer, then let nothing linger."""
        if self._rx is not None and not self._rx.skipping:
            self._events.append(TransferFailed(self._rx.transfer_id, outgoing=False))
        self._drop_unsent()
        for transfer in self._unacked:
            self._events.append(TransferFailed(transfer.transfer_id, outgoing=True))
        self._unacked.clear()
        self._pending.clear()  # decisions can no longer be written
        self._pending_ids.clear()
        self._buffer.clear()
        self._rx = None
        self._in_segment = False

    def _drop_unsent(self) -> None:
        """No data after SHUTDOWN (§6.1): give back queued bundles, fail a half-sent one."""
        for transfer in self._to_send:
            if transfer.sent == 0:
                self._events.append(
                    TransferRefused(transfer.transfer_id, RefusalReason.UNKNOWN, by_peer=False)
                )
            elif not any(t is transfer for t in self._unacked):  # else failed with the unacked
                self._events.append(TransferFailed(transfer.transfer_id, outgoing=True))
        self._to_send.clear()
