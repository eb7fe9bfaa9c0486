"""MTCP, the minimal TCP convergence layer (draft-ietf-dtn-mtcpcl-01), as a sans-IO session.

Theory of operation
-------------------
MTCP has no handshake, no acknowledgements, no keepalives and no termination message: each
bundle travels as one CBOR byte string (major type 2, definite length; draft §3) and the TCP
connection is the session. It is what µD3TN speaks by default.

:class:`MtcpSession` offers the same surface as the other convergence-layer sessions
(:class:`~fleetwire.protocol.tcpcl.common.ConvergenceLayerSession`) so the runtime drives all of
them alike:

* the first event is always :class:`SessionEstablished` (there is nothing to negotiate, and the
  peer's node ID is unknown: ``""``);
* every complete byte string becomes a :class:`BundleReceived`, numbered from 0 in arrival order;
  a session made with ``batch_events=True`` reports the whole frames one ``next_event`` finds in
  its buffer as one :class:`BundlesReceived` instead (the same frames under the same checks, in
  the same order: the runtime's link takes custody of a run at once, one store commit for many;
  its whole frames with heads up to 2**32-1 are read straight from the buffer in one loop,
  anything else is judged frame by frame as without batching);
* ``ack(transfer_id)`` is accepted for any delivered bundle and sends nothing: MTCP cannot confirm
  delivery, so a sender learns nothing more than "written to TCP" (no :class:`TransferAcked`);
* ``data_to_send`` returns one frame, or several small ones joined (up to 64 KiB): call it
  until it returns ``b""``;
* ``terminate`` ends the session locally; the runtime flushes ``data_to_send()`` and closes TCP.

Hostile input: the item head is read first and its declared length checked against
``max_bundle_size`` before a single content byte is kept, so an oversized frame is refused
immediately (:class:`MtcpBundleTooLarge`), never buffered. Anything that is not a definite
byte string head is :class:`MtcpFramingError`; a stream that ends inside a frame is
:class:`MtcpTruncated`. After any of these the stream cannot be resynchronised, so the session
reports :class:`ProtocolViolation` and then :class:`ConnectionClosed` (unclean). Memory held is
at most one frame (``max_bundle_size`` plus a 9-byte head) plus whatever the caller fed in one
``receive_data`` call beyond it.

The state machine is three states; its table is :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
from collections import deque
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
    Event,
    NeedData,
    ProtocolViolation,
    ReceiveBuffer,
    Role,
    SessionEstablished,
)

__all__ = [
    "TRANSITIONS",
    "MtcpBundleTooLarge",
    "MtcpConfig",
    "MtcpError",
    "MtcpFramingError",
    "MtcpSession",
    "MtcpTruncated",
    "State",
    "frame",
]

_RULE: Final = "draft-ietf-dtn-mtcpcl-01 §3"


class MtcpError(ConvergenceLayerError):
    """The byte stream is not a sequence of acceptable MTCP frames."""

    code = "mtcp-invalid"


class MtcpFramingError(MtcpError):
    """A frame head that is not a definite-length CBOR byte string."""

    code = "mtcp-framing"


class MtcpBundleTooLarge(MtcpError):
    """A frame declares more bytes than ``max_bundle_size``."""

    code = "mtcp-too-large"


class MtcpTruncated(MtcpError):
    """The stream ended inside a frame."""

    code = "mtcp-truncated"


@attrs.frozen(slots=True)
class MtcpConfig:
    """Limits of one MTCP session."""

    #: Largest bundle accepted from the peer (bytes); larger frames end the session unread.
    max_bundle_size: int = attrs.field(default=1 << 26, validator=attrs.validators.ge(1))


class State(enum.Enum):
    OPEN = "open"
    #: Closed cleanly: local ``terminate`` or the peer's EOF between frames.
    CLOSED = "closed"
    #: Closed on a protocol violation or an EOF inside a frame.
    FAILED = "failed"


class _Input(enum.Enum):
    EOF_BETWEEN_FRAMES = "eof-between-frames"
    LOCAL_TERMINATE = "local-terminate"
    VIOLATION = "violation"


#: ``{state: {input: next state}}``; an input missing from a row cannot happen in that state.
TRANSITIONS: Final[dict[State, dict[_Input, State]]] = {
    State.OPEN: {
        _Input.EOF_BETWEEN_FRAMES: State.CLOSED,
        _Input.LOCAL_TERMINATE: State.CLOSED,
        _Input.VIOLATION: State.FAILED,
    },
    State.CLOSED: {},
    State.FAILED: {},
}


#: Small frames joined by one ``data_to_send`` call (bytes).
_SMALL_BATCH = 64 * 1024


def _head(n: int) -> bytes:
    """CBOR head of a byte string of length ``n`` (RFC 8949 §3.1, preferred form)."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 1 << 8:
        return bytes((0x58, n))
    if n < 1 << 16:
        return b"\x59" + n.to_bytes(2, "big")
    if n < 1 << 32:
        return b"\x5a" + n.to_bytes(4, "big")
    return b"\x5b" + n.to_bytes(8, "big")


def frame(bundle: bytes) -> bytes:
    """The MTCP frame of one bundle: a definite-length CBOR byte string."""
    return _head(len(bundle)) + bundle


class MtcpSession:
    """One MTCP connection, either direction (``role`` is kept for the common surface)."""

    def __init__(
        self, role: Role, config: MtcpConfig | None = None, *, batch_events: bool = False
    ) -> None:
        self.role = role
        self.config = config or MtcpConfig()
        self.batch_events = batch_events
        self.state = State.OPEN
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._events: deque[Event] = deque([SessionEstablished(peer_node_id="", keepalive_s=0)])
        self._outbox: deque[bytes] = deque()
        self._received = 0
        self._sent = 0
        #: Content length of the frame whose head was read and accepted, until it is complete.
        self._pending: int | None = None

    # --- state -------------------------------------------------------------------------

    def _transition(self, what: _Input) -> None:
        self.state = TRANSITIONS[self.state][what]

    @property
    def buffered(self) -> int:
        """Bytes held from the peer and not yet delivered (for limits and tests)."""
        return self._buffer.allocated

    # --- the common surface --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from TCP; ``b""`` means the peer closed its side."""
        if self.state is not State.OPEN:
            return  # nothing more is read from a finished session
        if not data:
            self._eof = True
        elif not self._eof:
            self._buffer.extend(data)

    def next_event(self) -> Event | NeedData:
        if self._events:
            return self._events.popleft()
        if self.state is not State.OPEN:
            return ConnectionClosed(clean=self.state is State.CLOSED)
        event = self._parse()
        if event is not None:
            return event
        if self._eof:
            if self._pending is None and self._buffer.size == 0:
                self._transition(_Input.EOF_BETWEEN_FRAMES)
                return ConnectionClosed(clean=True)
            return self._fail(MtcpTruncated("stream ended inside a frame", _RULE))
        return NEED_DATA

    def data_to_send(self) -> bytes:
        """The next frame to write, or several small ones up to 64 KiB joined (one write for
        many small bundles; a large frame alone, so nothing is copied into one huge blob)."""
        outbox = self._outbox
        if not outbox:
            return b""
        first = outbox.popleft()
        if not outbox or len(first) + len(outbox[0]) > _SMALL_BATCH:
            return first
        frames = [first]
        size = len(first)
        while outbox and size + len(outbox[0]) <= _SMALL_BATCH:
            size += len(outbox[0])
            frames.append(outbox.popleft())
        return b"".join(frames)

    def tick(self, now: float) -> None:
        """MTCP has no timers."""

    def next_deadline(self) -> float | None:
        return None

    def send_bundle(self, data: bytes) -> int:
        """Queue one bundle; returns its transfer id (0, 1, ... in sending order)."""
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send a bundle on a {self.state.value} MTCP session")
        if not data:
            raise LocalProtocolError("a bundle is never empty")
        self._outbox.append(frame(data))
        self._sent += 1
        return self._sent - 1

    def ack(self, transfer_id: int) -> None:
        """Accepted for any bundle delivered; MTCP has no acknowledgement to send."""
        if not 0 <= transfer_id < self._received:
            raise LocalProtocolError(f"no received bundle has transfer id {transfer_id}")

    def ack_many(self, transfer_ids: Sequence[int]) -> None:
        """:meth:`ack` for each of ``transfer_ids``: a run taken into custody at once."""
        if transfer_ids and not (min(transfer_ids) >= 0 and max(transfer_ids) < self._received):
            bad = next(t for t in transfer_ids if not 0 <= t < self._received)
            raise LocalProtocolError(f"no received bundle has transfer id {bad}")

    def terminate(self) -> None:
        """End the session here; MTCP has no message for it, the runtime just closes TCP."""
        if self.state is State.OPEN:
            self._transition(_Input.LOCAL_TERMINATE)
            self._buffer.clear()

    # --- parsing -------------------------------------------------------------------------

    def _fail(self, error: MtcpError) -> Event:
        self._transition(_Input.VIOLATION)
        self._buffer.clear()
        self._pending = None
        self._events.append(ConnectionClosed(clean=False))
        return ProtocolViolation(error)

    def _parse(self) -> Event | None:
        first = self._frame()
        if not isinstance(first, bytes):
            return first  # more bytes needed, or a violation
        if not self.batch_events:
            return BundleReceived(transfer_id=self._received - 1, data=first)
        start = self._received - 1
        bundles = [first]
        while True:
            self._whole_frames(bundles)
            more = self._frame()
            if more is None:
                break
            if not isinstance(more, bytes):
                # The frames before it were whole and checked: deliver them first, then the
                # violation (``_fail`` already queued the close behind it).
                self._events.appendleft(more)
                break
            bundles.append(more)
        if len(bundles) == 1:
            return BundleReceived(transfer_id=start, data=first)
        return BundlesReceived(tuple(range(start, start + len(bundles))), tuple(bundles))

    def _whole_frames(self, bundles: list[bytes]) -> None:
        """The lean path: whole frames that follow in the buffer, appended to ``bundles``.

        Heads of byte strings up to 2**32-1 long (RFC 8949 §3.1: major type 2, additional
        information 0-26) are read straight from the buffer, every whole frame within
        ``max_bundle_size`` taken in one loop, as :meth:`_frame` would take them. It stops at
        anything else — another head, a frame not all here, a length over the limit — and
        :meth:`_frame`, which stays the reference, judges that (its typed errors).
        """
        if self._pending is not None:
            return
        raw, pos = self._buffer.window()
        end = len(raw)
        limit = self.config.max_bundle_size
        taken = 0
        with memoryview(raw) as view:
            while pos < end:
                first = raw[pos]
                if 0x40 <= first < 0x58:
                    n, at = first - 0x40, pos + 1
                elif first == 0x58 and end - pos >= 2:
                    n, at = raw[pos + 1], pos + 2
                elif first == 0x59 and end - pos >= 3:
                    n, at = raw[pos + 1] << 8 | raw[pos + 2], pos + 3
                elif first == 0x5A and end - pos >= 5:
                    n, at = int.from_bytes(view[pos + 1 : pos + 5], "big"), pos + 5
                else:
                    break
                if n > limit or end - at < n:
                    break
                bundles.append(bytes(view[at : at + n]))
                pos = at + n
                taken += 1
        if taken:
            self._buffer.consume_to(pos)
            self._received += taken

    def _frame(self) -> bytes | Event | None:
        """The next whole frame's bundle, None if more bytes are needed, or the violation."""
        if self._pending is None:
            first = self._buffer.peek(1)
            if first is None:
                return None
            major, info = first[0] >> 5, first[0] & 0x1F
            if major != 2:
                return self._fail(
                    MtcpFramingError(f"frame starts with major type {major}, not 2", _RULE)
                )
            if info < 24:
                head_len, length = 1, info
            elif info <= 27:
                head_len = 1 + (1 << (info - 24))
                head = self._buffer.peek(head_len)
                if head is None:
                    return None
                length = int.from_bytes(head[1:], "big")
            else:
                kind = "an indefinite length" if info == 31 else f"reserved additional info {info}"
                return self._fail(MtcpFramingError(f"byte string head with {kind}", _RULE))
            if length > self.config.max_bundle_size:
                return self._fail(
                    MtcpBundleTooLarge(
                        f"frame declares {length} bytes, limit {self.config.max_bundle_size}",
                        _RULE,
                    )
                )
            self._buffer.skip(head_len)
            self._pending = length
        length = self._pending
        if self._buffer.size < length:
            return None
        data = self._buffer.take(0, length)
        self._pending = None
        self._received += 1
        return data
