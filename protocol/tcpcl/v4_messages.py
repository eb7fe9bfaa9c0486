"""TCPCLv4 wire format (RFC 9174 §4.2, §4.6, §4.8, §5.1, §5.2, §6.1): message classes and codec.

Theory of operation
-------------------
Every message is a frozen attrs value with ``encode() -> bytes``. Decoding is incremental: the
session keeps a :class:`~.common.ReceiveBuffer` and calls :func:`decode_message` (or
:func:`decode_contact_header` before the session starts); each call either returns one whole
message and consumes its bytes, returns ``None`` without consuming anything when more bytes are
needed, or raises a typed :class:`~.common.ConvergenceLayerError` subclass.

Hostile input is bounded *before* it is buffered: the length fields of a message are checked
against :class:`DecodeLimits` as soon as their bytes arrive, so a peer announcing a 2**64-byte
segment is refused at its 18-byte header, never after buffering it. Errors say how much was
consumed, so the session can keep the stream in sync where the RFC allows it to carry on:

* :class:`SegmentTooLarge` consumes only the segment header; the session then discards the
  announced data as it streams in, and the session stays usable;
* :class:`MalformedMessage` consumes the whole (length-delimited) message whose contents are bad
  (extension items overrunning their declared length, a Node ID that is not UTF-8);
* :class:`UnknownMessageType`, :class:`ExtensionsTooLong` and :class:`BadMagic` consume nothing:
  the stream cannot be resynchronised and the session closes.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

import attrs

from .common import ConvergenceLayerError, ReceiveBuffer

__all__ = [
    "CONTACT_HEADER_LENGTH",
    "MAGIC",
    "U64_MAX",
    "VERSION",
    "BadMagic",
    "ContactFlags",
    "ContactHeader",
    "DecodeLimits",
    "ExtensionFlags",
    "ExtensionItem",
    "ExtensionsTooLong",
    "FLAG_END",
    "FLAG_START",
    "Keepalive",
    "MalformedMessage",
    "Message",
    "MessageType",
    "MsgReject",
    "RefuseReason",
    "RejectReason",
    "SegmentFlags",
    "SegmentTooLarge",
    "SessInit",
    "SessTerm",
    "SessTermFlags",
    "TermReason",
    "TransferExtensionType",
    "UnknownMessageType",
    "XferAck",
    "XferRefuse",
    "XferSegment",
    "decode_contact_header",
    "decode_extension_items",
    "decode_message",
    "encode_extension_items",
    "encode_segment_header",
]

MAGIC: Final = b"dtn!"
VERSION: Final = 4
CONTACT_HEADER_LENGTH: Final = 6
U64_MAX: Final = (1 << 64) - 1
U32_MAX: Final = (1 << 32) - 1
U16_MAX: Final = (1 << 16) - 1

_CONTACT = struct.Struct(">4sBB")
# type, keepalive, segment MRU, transfer MRU, node id length
_SESS_INIT_FIXED = struct.Struct(">BHQQH")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SEG_PREFIX = struct.Struct(">BBQ")  # type, flags, transfer id
_SEG_START = struct.Struct(">BBQI")  # ... plus transfer extension items length
_ACK = struct.Struct(">BBQQ")
_REFUSE = struct.Struct(">BBQ")
_TERM = struct.Struct(">BBB")
_REJECT = struct.Struct(">BBB")
_ITEM = struct.Struct(">BHH")


class MessageType(enum.IntEnum):
    """Message header codes (RFC 9174 §4.5, Table 2)."""

    XFER_SEGMENT = 0x01
    XFER_ACK = 0x02
    XFER_REFUSE = 0x03
    KEEPALIVE = 0x04
    SESS_TERM = 0x05
    MSG_REJECT = 0x06
    SESS_INIT = 0x07


class ContactFlags(enum.IntFlag):
    """Contact header flags (§4.2, Table 1)."""

    CAN_TLS = 0x01


class ExtensionFlags(enum.IntFlag):
    """Session and transfer extension item flags (§4.8 Table 3, §5.2.5 Table 7)."""

    CRITICAL = 0x01


class SegmentFlags(enum.IntFlag):
    """XFER_SEGMENT and XFER_ACK flags (§5.2.2, Table 5)."""

    END = 0x01
    START = 0x02


class SessTermFlags(enum.IntFlag):
    """SESS_TERM flags (§6.1, Table 8)."""

    REPLY = 0x01


class RejectReason(enum.IntEnum):
    """MSG_REJECT reason codes (§5.1.2, Table 4)."""

    TYPE_UNKNOWN = 0x01
    UNSUPPORTED = 0x02
    UNEXPECTED = 0x03


class RefuseReason(enum.IntEnum):
    """XFER_REFUSE reason codes (§5.2.4, Table 6)."""

    UNKNOWN = 0x00
    COMPLETED = 0x01
    NO_RESOURCES = 0x02
    RETRANSMIT = 0x03
    NOT_ACCEPTABLE = 0x04
    EXTENSION_FAILURE = 0x05
    SESSION_TERMINATING = 0x06


class TermReason(enum.IntEnum):
    """SESS_TERM reason codes (§6.1, Table 9)."""

    UNKNOWN = 0x00
    IDLE_TIMEOUT = 0x01
    VERSION_MISMATCH = 0x02
    BUSY = 0x03
    CONTACT_FAILURE = 0x04
    RESOURCE_EXHAUSTION = 0x05


# Plain-int copies for hot paths: ``int & IntFlag`` goes through the enum machinery (slow).
FLAG_END: Final = 0x01
FLAG_START: Final = 0x02


class TransferExtensionType(enum.IntEnum):
    """Transfer extension item types (§5.2.5, §9.4)."""

    TRANSFER_LENGTH = 0x0001


# --- errors ----------------------------------------------------------------------------


class BadMagic(ConvergenceLayerError):
    """The first bytes are not ``dtn!``: not a TCPCL peer (§4.3); close without SESS_TERM."""

    code = "tcpcl-bad-magic"


class UnknownMessageType(ConvergenceLayerError):
    """A message header names no TCPCLv4 message (§5.1.2): MSG_REJECT and close."""

    code = "tcpcl-unknown-message"

    def __init__(self, message_type: int) -> None:
        super().__init__(f"unknown message type 0x{message_type:02x}", "RFC 9174 §5.1.2")
        self.message_type = message_type


class ExtensionsTooLong(ConvergenceLayerError):
    """An extension list longer than we accept; the stream cannot be resynchronised."""

    code = "tcpcl-extensions-too-long"

    def __init__(self, message_type: int, length: int, limit: int) -> None:
        super().__init__(f"extension items length {length} > {limit}", "RFC 9174 §4.8, §5.2.5")
        self.message_type = message_type


class SegmentTooLarge(ConvergenceLayerError):
    """XFER_SEGMENT data longer than our Segment MRU (§4.6); only its header was consumed."""

    code = "tcpcl-segment-too-large"

    def __init__(self, flags: int, transfer_id: int, data_length: int, limit: int) -> None:
        super().__init__(f"segment data length {data_length} > MRU {limit}", "RFC 9174 §4.6")
        self.flags = flags
        self.transfer_id = transfer_id
        self.data_length = data_length


class MalformedMessage(ConvergenceLayerError):
    """A whole message was consumed but its contents are invalid (§4.6, §5.2.2)."""

    code = "tcpcl-malformed"

    def __init__(self, message_type: int, why: str, rule: str, transfer_id: int = 0) -> None:
        super().__init__(why, rule)
        self.message_type = message_type
        self.transfer_id = transfer_id


# --- messages --------------------------------------------------------------------------


def _u8(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{attribute.name} must fit in 8 bits")


def _u16(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= U16_MAX:
        raise ValueError(f"{attribute.name} must fit in 16 bits")


def _u64(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"{attribute.name} must fit in 64 bits")


@attrs.frozen(slots=True)
class ContactHeader:
    """``dtn!``, version, flags (§4.2). Sent in the clear before anything else."""

    version: int = attrs.field(default=VERSION, validator=_u8)
    flags: int = attrs.field(default=0, validator=_u8)

    @property
    def can_tls(self) -> bool:
        return bool(self.flags & ContactFlags.CAN_TLS)

    def encode(self) -> bytes:
        return _CONTACT.pack(MAGIC, self.version, self.flags)


@attrs.frozen(slots=True)
class ExtensionItem:
    """One session (§4.8) or transfer (§5.2.5) extension item: flags, type, value."""

    item_type: int = attrs.field(validator=_u16)
    value: bytes = attrs.field(default=b"")
    critical: bool = False

    def __attrs_post_init__(self) -> None:
        if len(self.value) > U16_MAX:
            raise ValueError("extension item value longer than 65535 octets")


@attrs.frozen(slots=True)
class SessInit:
    """Session parameters of one side (§4.6)."""

    keepalive_s: int = attrs.field(validator=_u16)
    segment_mru: int = attrs.field(validator=_u64)
    transfer_mru: int = attrs.field(validator=_u64)
    node_id: str = ""
    extensions: tuple[ExtensionItem, ...] = ()

    def encode(self) -> bytes:
        node = self.node_id.encode("utf-8")
        if len(node) > U16_MAX:
            raise ValueError("node id longer than 65535 octets")
        items = encode_extension_items(self.extensions)
        return b"".join(
            (
                _SESS_INIT_FIXED.pack(
                    MessageType.SESS_INIT,
                    self.keepalive_s,
                    self.segment_mru,
                    self.transfer_mru,
                    len(node),
                ),
                node,
                _U32.pack(len(items)),
                items,
            )
        )


@attrs.frozen(slots=True)
class XferSegment:
    """One segment of a transfer (§5.2.2); extensions only on a START segment."""

    flags: int = attrs.field(validator=_u8)
    transfer_id: int = attrs.field(validator=_u64)
    data: bytes = b""
    extensions: tuple[ExtensionItem, ...] = ()

    @property
    def start(self) -> bool:
        return bool(self.flags & FLAG_START)

    @property
    def end(self) -> bool:
        return bool(self.flags & FLAG_END)

    def encode(self) -> bytes:
        items = encode_extension_items(self.extensions) if self.start else b""
        return (
            encode_segment_header(self.flags, self.transfer_id, len(self.data), items) + self.data
        )


@attrs.frozen(slots=True)
class XferAck:
    """Cumulative acknowledgement of a transfer's segments (§5.2.3)."""

    flags: int = attrs.field(validator=_u8)
    transfer_id: int = attrs.field(validator=_u64)
    length: int = attrs.field(validator=_u64)

    def encode(self) -> bytes:
        return _ACK.pack(0x02, self.flags, self.transfer_id, self.length)


@attrs.frozen(slots=True)
class XferRefuse:
    """The receiver refuses a transfer (§5.2.4)."""

    reason: int = attrs.field(validator=_u8)
    transfer_id: int = attrs.field(validator=_u64)

    def encode(self) -> bytes:
        return _REFUSE.pack(MessageType.XFER_REFUSE, self.reason, self.transfer_id)


@attrs.frozen(slots=True)
class Keepalive:
    """Session upkeep (§5.1.1): the header alone."""

    def encode(self) -> bytes:
        return bytes((MessageType.KEEPALIVE,))


@attrs.frozen(slots=True)
class SessTerm:
    """Session termination (§6.1); a reply repeats the reason with REPLY set."""

    flags: int = attrs.field(validator=_u8)
    reason: int = attrs.field(validator=_u8)

    @property
    def reply(self) -> bool:
        return bool(self.flags & SessTermFlags.REPLY)

    def encode(self) -> bytes:
        return _TERM.pack(MessageType.SESS_TERM, self.flags, self.reason)


@attrs.frozen(slots=True)
class MsgReject:
    """Rejection of a message we could not handle (§5.1.2)."""

    reason: int = attrs.field(validator=_u8)
    rejected_header: int = attrs.field(validator=_u8)

    def encode(self) -> bytes:
        return _REJECT.pack(MessageType.MSG_REJECT, self.reason, self.rejected_header)


Message = SessInit | XferSegment | XferAck | XferRefuse | Keepalive | SessTerm | MsgReject


# --- encoding helpers ------------------------------------------------------------------


def encode_extension_items(items: tuple[ExtensionItem, ...]) -> bytes:
    """The TLV list of §4.8 / §5.2.5 (without its U32 length prefix)."""
    return b"".join(
        _ITEM.pack(ExtensionFlags.CRITICAL if it.critical else 0, it.item_type, len(it.value))
        + it.value
        for it in items
    )


def encode_segment_header(
    flags: int, transfer_id: int, data_length: int, items: bytes = b""
) -> bytes:
    """Everything of an XFER_SEGMENT before its data (§5.2.2): the per-segment framing cost."""
    if flags & FLAG_START:
        return (
            _SEG_START.pack(MessageType.XFER_SEGMENT, flags, transfer_id, len(items))
            + items
            + _U64.pack(data_length)
        )
    return _SEG_PREFIX.pack(MessageType.XFER_SEGMENT, flags, transfer_id) + _U64.pack(data_length)


# --- the lean path: one-segment transfers and their acks ----------------------------------
#
# Most bundles of a fleet are small and travel as one XFER_SEGMENT with START|END and no
# transfer extension items (§5.2.5.1 asks for Transfer Length only when there are several
# segments), answered by one XFER_ACK. These helpers read and write exactly those shapes
# straight from and into bytes, without message objects; anything else (or anything
# doubtful) is left to :func:`decode_message`, which is the reference.

#: type, flags, transfer id, extension items length (0), data length (§5.2.2).
_WHOLE = struct.Struct(">BBQIQ")
#: Bytes before the data of a one-segment transfer.
WHOLE_SEGMENT_HEADER: Final = _WHOLE.size
#: Bytes of an XFER_ACK (§5.2.3).
XFER_ACK_SIZE: Final = _ACK.size


def encode_whole_segment(transfer_id: int, data_length: int) -> bytes:
    """The header of a one-segment transfer (START|END, no extension items), §5.2.2."""
    return _WHOLE.pack(0x01, FLAG_START | FLAG_END, transfer_id, 0, data_length)


def encode_xfer_ack(flags: int, transfer_id: int, length: int) -> bytes:
    """An XFER_ACK (§5.2.3); the caller's values are already in range (they echo a segment)."""
    return _ACK.pack(0x02, flags, transfer_id, length)


def peek_whole_segment(buf: ReceiveBuffer, limits: DecodeLimits) -> tuple[int, int] | None:
    """``(transfer id, data length)`` when ``buf`` starts with a complete START|END segment
    without extension items within ``limits``; ``None`` means: use :func:`decode_message`."""
    head = buf.unpack_head(_WHOLE)
    if head is None:
        return None
    kind, flags, tid, ext_len, n = head
    if (
        kind != 0x01
        or flags != FLAG_START | FLAG_END
        or ext_len
        or n > limits.segment_mru
        or buf.size < _WHOLE.size + n
    ):
        return None
    return tid, n


def peek_xfer_ack(buf: ReceiveBuffer) -> tuple[int, int, int] | None:
    """``(flags, transfer id, length)`` of a complete XFER_ACK at the front of ``buf``."""
    head = buf.unpack_head(_ACK)
    if head is None or head[0] != 0x02:
        return None
    return head[1], head[2], head[3]


# --- decoding --------------------------------------------------------------------------


@attrs.frozen(slots=True)
class DecodeLimits:
    """What we accept from the peer; these bound every buffer the decoder can grow."""

    #: Our Segment MRU: the largest XFER_SEGMENT data we buffer (§4.6).
    segment_mru: int
    #: Largest session or transfer extension items list (the RFC allows up to 2**32 - 1).
    max_extensions_length: int = 1 << 16

    @property
    def max_message_size(self) -> int:
        """Largest message :func:`decode_message` can buffer: a bound on the receive buffer."""
        sess_init = _SESS_INIT_FIXED.size + U16_MAX + _U32.size + self.max_extensions_length
        segment = _SEG_START.size + self.max_extensions_length + _U64.size + self.segment_mru
        return max(sess_init, segment)


def decode_contact_header(buf: ReceiveBuffer) -> ContactHeader | None:
    """The peer's contact header (§4.2), or ``None`` until 6 bytes arrived; checks the magic."""
    head = buf.peek(CONTACT_HEADER_LENGTH)
    if head is None:
        # Refuse a wrong magic as soon as the first differing byte arrives.
        partial = buf.peek(min(buf.size, len(MAGIC)))
        if partial and not MAGIC.startswith(partial):
            raise BadMagic("contact header magic is not 'dtn!'", "RFC 9174 §4.3")
        return None
    magic, version, flags = _CONTACT.unpack(head)
    if magic != MAGIC:
        raise BadMagic("contact header magic is not 'dtn!'", "RFC 9174 §4.3")
    buf.consume(CONTACT_HEADER_LENGTH)
    return ContactHeader(version, flags)


def decode_extension_items(
    data: bytes, message_type: int, transfer_id: int = 0
) -> tuple[ExtensionItem, ...]:
    """Split a TLV list; an item overrunning the list fails the whole message (§4.6, §5.2.2)."""
    items: list[ExtensionItem] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _ITEM.size:
            raise MalformedMessage(
                message_type, "truncated extension item header", "RFC 9174 §4.8", transfer_id
            )
        flags, item_type, length = _ITEM.unpack_from(data, offset)
        offset += _ITEM.size
        if length > len(data) - offset:
            raise MalformedMessage(
                message_type, "extension item overruns its list", "RFC 9174 §4.8", transfer_id
            )
        items.append(
            ExtensionItem(
                item_type,
                bytes(data[offset : offset + length]),
                bool(flags & ExtensionFlags.CRITICAL),
            )
        )
        offset += length
    return tuple(items)


def decode_message(buf: ReceiveBuffer, limits: DecodeLimits) -> Message | None:
    """One whole message from the front of ``buf``, or ``None`` (nothing consumed) for more bytes."""
    head = buf.peek(1)
    if head is None:
        return None
    kind = head[0]
    if kind == MessageType.XFER_SEGMENT:
        return _decode_segment(buf, limits)
    if kind == MessageType.XFER_ACK:
        raw = buf.peek(_ACK.size)
        if raw is None:
            return None
        buf.consume(_ACK.size)
        _, flags, tid, length = _ACK.unpack(raw)
        return XferAck(flags, tid, length)
    if kind == MessageType.XFER_REFUSE:
        raw = buf.peek(_REFUSE.size)
        if raw is None:
            return None
        buf.consume(_REFUSE.size)
        _, reason, tid = _REFUSE.unpack(raw)
        return XferRefuse(reason, tid)
    if kind == MessageType.KEEPALIVE:
        buf.consume(1)
        return Keepalive()
    if kind == MessageType.SESS_TERM:
        raw = buf.peek(_TERM.size)
        if raw is None:
            return None
        buf.consume(_TERM.size)
        _, flags, reason = _TERM.unpack(raw)
        return SessTerm(flags, reason)
    if kind == MessageType.MSG_REJECT:
        raw = buf.peek(_REJECT.size)
        if raw is None:
            return None
        buf.consume(_REJECT.size)
        _, reason, rejected = _REJECT.unpack(raw)
        return MsgReject(reason, rejected)
    if kind == MessageType.SESS_INIT:
        return _decode_sess_init(buf, limits)
    raise UnknownMessageType(kind)


def _decode_sess_init(buf: ReceiveBuffer, limits: DecodeLimits) -> SessInit | None:
    fixed = buf.peek(_SESS_INIT_FIXED.size)
    if fixed is None:
        return None
    _, keepalive, seg_mru, xfer_mru, node_len = _SESS_INIT_FIXED.unpack(fixed)
    ext_at = _SESS_INIT_FIXED.size + node_len + _U32.size
    ext_field = buf.peek(_U32.size, ext_at - _U32.size)
    if ext_field is None:
        return None
    (ext_len,) = _U32.unpack(ext_field)
    if ext_len > limits.max_extensions_length:
        raise ExtensionsTooLong(MessageType.SESS_INIT, ext_len, limits.max_extensions_length)
    if buf.size < ext_at + ext_len:
        return None
    raw = buf.consume(ext_at + ext_len)
    try:
        node_id = raw[_SESS_INIT_FIXED.size : ext_at - _U32.size].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage(
            MessageType.SESS_INIT, "node id is not UTF-8", "RFC 9174 §4.6"
        ) from None
    items = decode_extension_items(raw[ext_at:], MessageType.SESS_INIT)
    return SessInit(keepalive, seg_mru, xfer_mru, node_id, items)


def _decode_segment(buf: ReceiveBuffer, limits: DecodeLimits) -> XferSegment | None:
    prefix = buf.peek(_SEG_PREFIX.size)
    if prefix is None:
        return None
    _, flags, tid = _SEG_PREFIX.unpack(prefix)
    ext_len = 0
    items_at = _SEG_PREFIX.size
    if flags & FLAG_START:
        ext_field = buf.peek(_U32.size, _SEG_PREFIX.size)
        if ext_field is None:
            return None
        (ext_len,) = _U32.unpack(ext_field)
        if ext_len > limits.max_extensions_length:
            raise ExtensionsTooLong(MessageType.XFER_SEGMENT, ext_len, limits.max_extensions_length)
        items_at = _SEG_START.size
    header_len = items_at + ext_len + _U64.size
    len_field = buf.peek(_U64.size, header_len - _U64.size)
    if len_field is None:
        return None
    (data_len,) = _U64.unpack(len_field)
    if data_len > limits.segment_mru:
        buf.consume(header_len)
        raise SegmentTooLarge(flags, tid, data_len, limits.segment_mru)
    if buf.size < header_len + data_len:
        return None
    header = buf.consume(header_len)
    data = buf.consume(data_len)
    items = (
        decode_extension_items(header[items_at : items_at + ext_len], MessageType.XFER_SEGMENT, tid)
        if ext_len
        else ()
    )
    return XferSegment(flags, tid, data, items)
