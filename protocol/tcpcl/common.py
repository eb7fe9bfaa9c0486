"""What every convergence-layer session shares: roles, events, errors, a bounded receive buffer.

Theory of operation
-------------------
A convergence-layer session (TCPCLv4 RFC 9174, TCPCLv3 RFC 7242, MTCP) is an h11-style sans-IO
object. The runtime owns the socket and the clock; the session owns the bytes and the rules:

* ``receive_data(data)`` feeds bytes read from the stream (``b""`` means the peer closed it);
* ``next_event()`` returns the next :data:`Event` the session has parsed, or :data:`NEED_DATA`
  when it needs more bytes (a session that is closed keeps returning :class:`ConnectionClosed`);
* ``data_to_send()`` returns the bytes the runtime must write next (replies, acks, keepalives and
  the segments of bundles it was asked to send); an empty result means nothing to write now;
* ``tick(now)`` lets timers fire (keepalive, idle and establishment timeouts) and
  ``next_deadline()`` says when the runtime should call ``tick`` again; time is always passed in.
  Call ``tick`` every time the runtime wakes (after reading, after writing, at the deadline):
  bytes received or handed out since the previous ``tick`` count as activity at this ``now``;
* caller commands (send a bundle, ack a received one, terminate) are methods; asking for
  something the protocol forbids raises :class:`~fleetwire.protocol.errors.LocalProtocolError`
  and changes nothing.

Bytes from the peer never raise out of ``receive_data``/``next_event``: a protocol violation is
answered the way the RFC says (a reject, a refusal or a termination written to the outbox) and
reported as a :class:`ProtocolViolation` event, so the runtime can log it and count it.

A received bundle is not acknowledged in full until the runtime says so with ``ack(transfer_id)``:
the runtime must persist the bundle first (store-and-forward custody), so the final ack is
explicit; acks of intermediate segments may be automatic.

This module holds only what is version-independent; each version's module maps its own reason
codes onto these events (``reason`` fields carry that version's ``IntEnum``).
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Final, Protocol

import attrs

from ..errors import RemoteProtocolError

__all__ = [
    "NEED_DATA",
    "BundleReceived",
    "ConnectionClosed",
    "ConvergenceLayerError",
    "ConvergenceLayerSession",
    "Event",
    "MessageRejected",
    "NeedData",
    "ProtocolViolation",
    "ReceiveBuffer",
    "Role",
    "SessionEstablished",
    "SessionTerminated",
    "StartTls",
    "TransferAcked",
    "TransferFailed",
    "TransferRefused",
    "TransferStarted",
]


class Role(enum.Enum):
    """Which side opened the TCP connection (RFC 9174 §3.1 "active" / "passive" entity)."""

    ACTIVE = "active"
    PASSIVE = "passive"


class NeedData(enum.Enum):
    """Sentinel type of :data:`NEED_DATA` (an enum so type checkers can narrow on it)."""

    NEED_DATA = "need-data"


#: Returned by ``next_event`` when no complete event can be parsed from the bytes so far.
NEED_DATA: Final = NeedData.NEED_DATA


# --- errors ----------------------------------------------------------------------------


class ConvergenceLayerError(RemoteProtocolError):
    """The peer broke the convergence-layer protocol; ``rule`` names the RFC section broken."""

    code = "cl-protocol"

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(f"{message} ({rule})" if rule else message)
        self.rule = rule


# --- events ----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class StartTls:
    """Both contact headers offered TLS: the runtime must wrap the stream now (RFC 9174 §4.4).

    First write out ``data_to_send()`` in the clear (it may hold our contact header), hand the
    session's trailing bytes (already read past the peer's contact header) to the TLS layer,
    do the handshake (the active side is the TLS client), then tell the session it is done;
    from then on every byte goes through TLS and the session carries on unchanged.
    """


@attrs.frozen(slots=True)
class SessionEstablished:
    """Negotiation finished; transfers may start (RFC 9174 §4.7, RFC 7242 §4.3)."""

    peer_node_id: str
    #: Negotiated keepalive interval in seconds; 0 means keepalives are disabled.
    keepalive_s: int
    #: Largest segment we may send (peer's MRU); ``None`` if the version has no such limit.
    peer_segment_mru: int | None = None
    #: Largest bundle we may send (peer's transfer MRU); ``None`` if unlimited.
    peer_transfer_mru: int | None = None


@attrs.frozen(slots=True)
class TransferStarted:
    """The peer began an incoming transfer; ``total_length`` if it told us (RFC 9174 §5.2.5)."""

    transfer_id: int
    total_length: int | None = None


@attrs.frozen(slots=True)
class BundleReceived:
    """A whole bundle arrived. Persist it, then call ``session.ack(transfer_id)``."""

    transfer_id: int
    data: bytes


@attrs.frozen(slots=True)
class BundlesReceived:
    """Several whole bundles arrived one after the other (the batched form of
    :class:`BundleReceived`, for a session asked to batch): persist them, then ack each
    (``session.ack_many``). ``transfer_ids[i]`` carried ``data[i]``; no
    :class:`TransferStarted` precedes them."""

    transfer_ids: tuple[int, ...]
    data: tuple[bytes, ...]


@attrs.frozen(slots=True)
class TransfersAcked:
    """The peer acknowledged the whole of each of these transfers of ours (the batched form
    of :class:`TransferAcked` with ``complete``, for a session asked to batch)."""

    transfer_ids: tuple[int, ...]


@attrs.frozen(slots=True)
class TransferAcked:
    """The peer acknowledged ``acked_length`` bytes of our transfer; ``complete`` on the last."""

    transfer_id: int
    acked_length: int
    complete: bool


@attrs.frozen(slots=True)
class TransferRefused:
    """One of our transfers will not be delivered; ``reason`` is the version's refusal code.

    ``by_peer``: the peer refused it; otherwise the session dropped it before it started
    because the session is ending (RFC 9174 §6.1). Either way the bundle is still ours to route.
    """

    transfer_id: int
    reason: int
    by_peer: bool = True


@attrs.frozen(slots=True)
class TransferFailed:
    """A transfer ended unfinished: the connection closed under it (RFC 9174 §6.1), or, for an
    incoming one, the session refused it for breaking a rule or a limit.

    ``outgoing`` tells whether it was one of ours (from ``send_bundle``: retry elsewhere) or
    one the peer had started (its ``TransferStarted`` will see no ``BundleReceived``).
    """

    transfer_id: int
    outgoing: bool


@attrs.frozen(slots=True)
class SessionTerminated:
    """A session termination message was sent or received (RFC 9174 §6.1, RFC 7242 §6.1).

    ``by_peer`` tells who began it. No new transfers start after this event; transfers already
    in progress may still finish before :class:`ConnectionClosed`.
    """

    reason: int
    by_peer: bool


@attrs.frozen(slots=True)
class ProtocolViolation:
    """The peer broke the protocol; the session already reacted as the RFC says."""

    error: ConvergenceLayerError


@attrs.frozen(slots=True)
class MessageRejected:
    """The peer rejected one of our messages (RFC 9174 §5.1.2): a bug or mismatch on our side."""

    reason: int
    message_type: int


@attrs.frozen(slots=True)
class ConnectionClosed:
    """The session is over: the runtime should flush ``data_to_send()`` and close the stream.

    ``clean`` is true when both sides terminated in order (or the stream ended after that).
    """

    clean: bool


Event = (
    StartTls
    | SessionEstablished
    | TransferStarted
    | BundleReceived
    | BundlesReceived
    | TransferAcked
    | TransfersAcked
    | TransferRefused
    | TransferFailed
    | SessionTerminated
    | ProtocolViolation
    | MessageRejected
    | ConnectionClosed
)


class ConvergenceLayerSession(Protocol):
    """The surface the runtime drives, the same for every convergence-layer version."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Event | NeedData: ...

    def data_to_send(self) -> bytes: ...

    def tick(self, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...

    def send_bundle(self, data: bytes) -> int: ...

    def ack(self, transfer_id: int) -> None: ...

    def terminate(self) -> None: ...


# --- receive buffer --------------------------------------------------------------------


class ReceiveBuffer:
    """Bytes received but not yet parsed, consumed from the front without quadratic copying.

    The owner must check :attr:`size` against its own bound after each ``extend``; this class
    does no policy, only bookkeeping.
    """

    __slots__ = ("_buf", "_start")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0

    def extend(self, data: bytes) -> None:
        # What was consumed goes before more comes (deleting a bytearray's front only moves
        # its start), so :attr:`allocated` after a read is the unconsumed bytes plus the read:
        # the lazy compaction below alone let consumed messages stay held beside a long one
        # still arriving, past the bound a session's owner checks.
        if self._start:
            del self._buf[: self._start]
            self._start = 0
        self._buf += data

    @property
    def size(self) -> int:
        """Unconsumed bytes held."""
        return len(self._buf) - self._start

    @property
    def allocated(self) -> int:
        """Bytes held in memory, including consumed ones not yet compacted."""
        return len(self._buf)

    def peek(self, n: int, offset: int = 0) -> bytes | None:
        """A copy of ``n`` bytes at ``offset`` without consuming them, ``None`` if not all held.

        Decoders peek at fixed-size fields only, so waiting for a long message costs nothing
        per call however slowly its bytes arrive.
        """
        begin = self._start + offset
        if len(self._buf) - begin < n:
            return None
        return bytes(self._buf[begin : begin + n])

    @property
    def first_byte(self) -> int:
        """The next byte (a message type), or -1 when nothing is held; copies nothing."""
        return self._buf[self._start] if self._start < len(self._buf) else -1

    def unpack_head(self, layout: struct.Struct) -> tuple[Any, ...] | None:
        """``layout`` unpacked from the front without consuming or copying, ``None`` if short."""
        if len(self._buf) - self._start < layout.size:
            return None
        return layout.unpack_from(self._buf, self._start)

    def take(self, skip: int, n: int) -> bytes:
        """Drop ``skip`` bytes (a header already read), then remove and return ``n`` bytes
        with one copy (the caller has checked ``size``)."""
        begin = self._start + skip
        with memoryview(self._buf) as view:
            out = bytes(view[begin : begin + n])
        self._start = begin + n
        if self._start > len(self._buf) // 2:
            del self._buf[: self._start]
            self._start = 0
        return out

    def window(self) -> tuple[bytearray, int]:
        """The bytes held and where the unconsumed ones start, for a scanner that reads many
        small messages in one loop; it must not keep the bytearray past :meth:`consume_to`."""
        return self._buf, self._start

    def consume_to(self, position: int) -> None:
        """Everything before ``position`` (an index into :meth:`window`'s bytes) is consumed."""
        self._start = position
        if position > len(self._buf) // 2:
            del self._buf[:position]
            self._start = 0

    def consume(self, n: int) -> bytes:
        """Remove and return the next ``n`` bytes (the caller has checked ``size``)."""
        out = bytes(self._buf[self._start : self._start + n])
        self._start += n
        # Compact once the dead prefix dominates, so memory stays within 2x of live data.
        if self._start > len(self._buf) // 2:
            del self._buf[: self._start]
            self._start = 0
        return out

    def skip(self, n: int) -> None:
        """Drop the next ``n`` bytes (at most :attr:`size`) without copying them out."""
        self._start += min(n, self.size)
        if self._start > len(self._buf) // 2:
            del self._buf[: self._start]
            self._start = 0

    def clear(self) -> None:
        self._buf = bytearray()
        self._start = 0
