"""Test peers that behave like the DTN agents fleetwire meets in service.

Those agents are not on the package index, so their observable habits are rebuilt here, on
raw sockets, without fleetwire's session machines (only the message codec is shared):

* :class:`FifoAckSender` — an HDTN-like TCPCLv4 sender (active side). It keeps up to
  ``window`` transfers unacknowledged and matches every XFER_ACK against a first-in,
  first-out queue of the segments it sent; the first ack out of place is a
  :class:`WrongAck` ("wrong ack" in HDTN's log, after which its outduct stops for good).
* :func:`announcing_listener` — a TCPCLv4 passive peer that announces whatever Node ID it
  is told to (the peer that is not the node it was configured as) and records what it got.
* :class:`Ud3tnLikeV3Peer` — a µD3TN-like TCPCLv3 passive peer: negotiates no acks and no
  keepalives, never answers SHUTDOWN and never closes first, and cannot take segments over
  1 MiB (a larger one is a :class:`PeerFailure`).
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterable

import attrs
import trio
from fleetwire.protocol.tcpcl import sdnv
from fleetwire.protocol.tcpcl.common import ReceiveBuffer
from fleetwire.protocol.tcpcl.v4_messages import (
    FLAG_END,
    FLAG_START,
    ContactHeader,
    DecodeLimits,
    ExtensionItem,
    Keepalive,
    MsgReject,
    SessInit,
    SessTerm,
    SessTermFlags,
    TermReason,
    TransferExtensionType,
    XferAck,
    XferRefuse,
    XferSegment,
    decode_contact_header,
    decode_message,
    encode_extension_items,
    encode_segment_header,
)


class PeerFailure(Exception):
    """The test peer saw something the agent it imitates cannot live with."""


class WrongAck(PeerFailure):
    """An XFER_ACK that is not the next one in the sender's FIFO."""


_LIMITS = DecodeLimits(1 << 20)


async def read_message(stream: trio.abc.Stream, buf: ReceiveBuffer) -> object:
    while True:
        message = decode_message(buf, _LIMITS)
        if message is not None:
            return message
        data = await stream.receive_some(1 << 16)
        if not data:
            raise PeerFailure("connection closed by fleetwire")
        buf.extend(bytes(data))


async def v4_handshake(
    stream: trio.abc.Stream, node_id: str, *, active: bool
) -> tuple[ReceiveBuffer, SessInit]:
    """Contact headers and SESS_INIT both ways (RFC 9174 §4); returns the peer's SESS_INIT."""
    buf = ReceiveBuffer()
    ours = SessInit(0, 1 << 20, 1 << 24, node_id)
    await stream.send_all(ContactHeader().encode() + (ours.encode() if active else b""))
    while decode_contact_header(buf) is None:
        data = await stream.receive_some(1 << 16)
        if not data:
            raise PeerFailure("closed during the contact exchange")
        buf.extend(bytes(data))
    theirs = await read_message(stream, buf)
    if not isinstance(theirs, SessInit):
        raise PeerFailure(f"expected SESS_INIT, got {theirs!r}")
    if not active:
        await stream.send_all(ours.encode())
    return buf, theirs


@attrs.define
class FifoAckSender:
    """Pipeline ``bundles`` into a TCPCLv4 listener the way HDTN's outduct does."""

    window: int = 8
    segment_size: int = 1 << 20
    node_id: str = "ipn:77.0"
    #: Every XFER_ACK in arrival order (transfer id, flags, length).
    acks: list[tuple[int, int, int]] = attrs.field(factory=list)
    acked_bundles: int = 0
    peer_node_id: str = ""

    async def run(self, host: str, port: int, bundles: Iterable[bytes]) -> None:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            buf, init = await v4_handshake(stream, self.node_id, active=True)
            self.peer_node_id = init.node_id
            expected: collections.deque[tuple[int, int, int]] = collections.deque()
            finals: collections.deque[int] = collections.deque()
            room = trio.Semaphore(self.window)
            all_sent = trio.Event()
            done = trio.Event()

            async def read_acks() -> None:
                while not (all_sent.is_set() and not finals):
                    message = await read_message(stream, buf)
                    if isinstance(message, Keepalive):
                        continue
                    if not isinstance(message, XferAck):
                        raise PeerFailure(f"unexpected {message!r}")
                    got = (message.transfer_id, message.flags, message.length)
                    self.acks.append(got)
                    if not expected or expected[0] != got:
                        head = expected[0] if expected else None
                        raise WrongAck(f"wrong ack {got}, expected {head} (ack #{len(self.acks)})")
                    expected.popleft()
                    if message.flags & FLAG_END:
                        assert finals.popleft() == message.transfer_id
                        self.acked_bundles += 1
                        room.release()
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_acks)
                for tid, bundle in enumerate(bundles):
                    await room.acquire()
                    finals.append(tid)
                    await stream.send_all(self._segments(tid, bundle, expected))
                all_sent.set()
                if not finals:
                    nursery.cancel_scope.cancel()
            await stream.send_all(SessTerm(0, TermReason.UNKNOWN).encode())
            with trio.move_on_after(5):
                while not isinstance(reply := await read_message(stream, buf), SessTerm):
                    pass
                assert reply.flags & SessTermFlags.REPLY

    def _segments(
        self, tid: int, bundle: bytes, expected: collections.deque[tuple[int, int, int]]
    ) -> bytes:
        out = bytearray()
        sent = 0
        while sent < len(bundle) or sent == 0:
            size = min(self.segment_size, len(bundle) - sent)
            flags = (FLAG_START if sent == 0 else 0) | (
                FLAG_END if sent + size == len(bundle) else 0
            )
            items = b""
            if sent == 0 and not flags & FLAG_END:
                length = struct.pack(">Q", len(bundle))
                items = encode_extension_items(
                    (ExtensionItem(TransferExtensionType.TRANSFER_LENGTH, length),)
                )
            out += encode_segment_header(flags, tid, size, items) + bundle[sent : sent + size]
            sent += size
            expected.append((tid, flags, sent))
            if size == 0:
                break
        return bytes(out)


async def send_v4(
    stream: trio.abc.Stream, buf: ReceiveBuffer, transfers: list[tuple[int, bytes]]
) -> list[object]:
    """Send whole single-segment transfers; return the reply to each (final XFER_ACK,
    XFER_REFUSE or SESS_TERM), in order."""
    replies: list[object] = []
    for tid, bundle in transfers:
        await stream.send_all(
            encode_segment_header(FLAG_START | FLAG_END, tid, len(bundle)) + bundle
        )
    while len(replies) < len(transfers):
        message = await read_message(stream, buf)
        if isinstance(message, (XferAck, XferRefuse, SessTerm)):
            replies.append(message)
            if isinstance(message, SessTerm):
                break
    return replies


async def read_until_term(stream: trio.abc.Stream, buf: ReceiveBuffer) -> SessTerm:
    """Read (and drop) messages until the peer's SESS_TERM."""
    while True:
        message = await read_message(stream, buf)
        if isinstance(message, SessTerm):
            return message


# --- a peer that is not the node it was configured as ------------------------------------


@attrs.define
class AnnouncingPeer:
    """A TCPCLv4 passive peer announcing ``node_id``; records what fleetwire did."""

    node_id: str
    segments: int = 0
    term_reason: int | None = None
    sessions: int = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            self.sessions += 1
            try:
                buf, _ = await v4_handshake(stream, self.node_id, active=False)
                while True:
                    message = await read_message(stream, buf)
                    if isinstance(message, XferSegment):
                        self.segments += 1
                    elif isinstance(message, SessTerm):
                        if self.term_reason is None:
                            self.term_reason = message.reason
                        if not message.flags & SessTermFlags.REPLY:
                            reply = SessTerm(SessTermFlags.REPLY, message.reason)
                            await stream.send_all(reply.encode())
            except (PeerFailure, trio.BrokenResourceError, trio.ClosedResourceError):
                return


# --- a µD3TN-like TCPCLv3 peer -----------------------------------------------------------

_V3_MAGIC = b"dtn!"


@attrs.define
class Ud3tnLikeV3Peer:
    """TCPCLv3 (RFC 7242) as µD3TN speaks it: flags 0 (no acks, no refusal), keepalive 0,
    no SHUTDOWN answer, no close of its own; segments over ``max_segment`` fail it."""

    eid: str = "dtn://ud3tn.dtn/"
    max_segment: int = 1 << 20
    bundles: list[bytes] = attrs.field(factory=list)
    shutdowns: int = 0
    failure: str = ""
    peer_eid: str = ""
    closed_by_fleetwire: trio.Event = attrs.field(factory=trio.Event)
    #: Drop the first session right after its first bundle, as a crashing agent would.
    crash_after_first_bundle: bool = False
    sessions: int = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await self._serve(stream)
            except PeerFailure as error:
                self.failure = str(error)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            self.closed_by_fleetwire.set()

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.sessions += 1
        crash = self.crash_after_first_bundle and self.sessions == 1
        eid = self.eid.encode()
        await stream.send_all(_V3_MAGIC + bytes([3, 0]) + b"\x00\x00" + sdnv.encode(len(eid)) + eid)
        buf = bytearray()

        async def need(n: int) -> None:
            while len(buf) < n:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise trio.ClosedResourceError
                buf.extend(data)

        await need(8)
        if bytes(buf[:4]) != _V3_MAGIC:
            raise PeerFailure("not a TCPCLv3 contact header")
        await need(9)
        length, used = _sdnv_at(buf, 8)
        while used is None:
            await need(len(buf) + 1)
            length, used = _sdnv_at(buf, 8)
        await need(8 + used + length)
        self.peer_eid = bytes(buf[8 + used : 8 + used + length]).decode()
        del buf[: 8 + used + length]
        current = bytearray()
        while True:
            await need(1)
            kind, flags = buf[0] >> 4, buf[0] & 0x0F
            if kind == 0x1:  # DATA_SEGMENT
                size, used = _sdnv_at(buf, 1)
                while used is None:
                    await need(len(buf) + 1)
                    size, used = _sdnv_at(buf, 1)
                if size > self.max_segment:
                    raise PeerFailure(f"segment of {size} octets is over 1 MiB")
                await need(1 + used + size)
                if flags & 0x2:  # START
                    current = bytearray()
                current += buf[1 + used : 1 + used + size]
                del buf[: 1 + used + size]
                if flags & 0x1:  # END
                    self.bundles.append(bytes(current))
                    if crash:
                        return  # the connection closes with nothing said, as in a crash
            elif kind == 0x5:  # SHUTDOWN (§6.1): noted, never answered, never closed on
                self.shutdowns += 1
                head = 1 + (1 if flags & 0x2 else 0)  # optional reason code
                await need(head)
                if flags & 0x1:  # optional SDNV reconnection delay
                    _, used = _sdnv_at(buf, head)
                    while used is None:
                        await need(len(buf) + 1)
                        _, used = _sdnv_at(buf, head)
                    head += used
                del buf[:head]
            elif kind == 0x4:  # KEEPALIVE (µD3TN negotiated 0: none expected, but harmless)
                del buf[:1]
            else:
                raise PeerFailure(f"unexpected TCPCLv3 message type {kind:#x}")


def _sdnv_at(buf: bytearray, offset: int) -> tuple[int, int | None]:
    """(value, octets used) of the SDNV at ``offset``; octets ``None`` while incomplete."""
    found = sdnv.decode_prefix(buf, offset)
    return (0, None) if found is None else (found[0], found[1] - offset)


__all__ = [
    "AnnouncingPeer",
    "FifoAckSender",
    "MsgReject",
    "PeerFailure",
    "Ud3tnLikeV3Peer",
    "WrongAck",
    "XferRefuse",
    "read_message",
    "read_until_term",
    "send_v4",
    "v4_handshake",
]
