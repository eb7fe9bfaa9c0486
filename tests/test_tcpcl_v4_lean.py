"""The TCPCLv4 lean path: one-segment transfers and XFER_ACKs without message objects.

The lean path must be invisible: the same events, the same bytes on the wire, and anything it
does not fully understand left to the general decoder (which refuses or rejects it as before).
"""

from __future__ import annotations

import struct

from fleetwire.protocol.tcpcl.common import BundleReceived, TransferAcked, TransferStarted
from fleetwire.protocol.tcpcl.v4 import SessionConfig, State
from fleetwire.protocol.tcpcl.v4_messages import (
    WHOLE_SEGMENT_HEADER,
    MsgReject,
    RefuseReason,
    RejectReason,
    SegmentFlags,
    XferAck,
    XferRefuse,
    XferSegment,
    encode_whole_segment,
    encode_xfer_ack,
)

from tests.test_tcpcl_v4 import decode_all, drain, established_pair, passive_established

START, END = SegmentFlags.START, SegmentFlags.END


def test_lean_encodings_are_the_general_ones() -> None:
    segment = XferSegment(START | END, 7, b"abc")
    assert encode_whole_segment(7, 3) + b"abc" == segment.encode()
    assert len(encode_whole_segment(7, 3)) == WHOLE_SEGMENT_HEADER
    assert encode_xfer_ack(START | END, 7, 3) == XferAck(START | END, 7, 3).encode()


def test_whole_segments_fed_one_byte_at_a_time_give_the_general_events_and_acks() -> None:
    s = passive_established()
    wire = b"".join(XferSegment(START | END, tid, bytes([tid]) * 50).encode() for tid in range(5))
    events = []
    for i in range(len(wire)):
        s.receive_data(wire[i : i + 1])
        events += drain(s)
    assert events == [
        e
        for tid in range(5)
        for e in (TransferStarted(tid, None), BundleReceived(tid, bytes([tid]) * 50))
    ]
    assert s.data_to_send() == b""  # no final ack before the runtime's ``ack``
    for tid in (3, 1, 0, 4, 2):  # stored in any order ...
        s.ack(tid)
    # ... acked in receive order, byte for byte what the general encoder writes.
    assert decode_all(s.data_to_send()) == [XferAck(START | END, tid, 50) for tid in range(5)]


def test_segments_the_lean_path_does_not_take_still_get_the_general_answers() -> None:
    s = passive_established()  # segment_mru 1000, transfer_mru 5000
    # Oversized for our Segment MRU: MSG_REJECT, skipped, refused (as before).
    big = struct.pack(">BBQIQ", 0x01, START | END, 0, 0, 2000) + bytes(2000)
    s.receive_data(big)
    drain(s)
    out = decode_all(s.data_to_send())
    assert MsgReject(RejectReason.UNSUPPORTED, 0x01) in out
    assert XferRefuse(RefuseReason.NO_RESOURCES, 0) in out
    # A reused transfer id: refused Not Acceptable by the general path.
    s.receive_data(XferSegment(START | END, 5, b"x").encode())
    assert BundleReceived(5, b"x") in drain(s)
    s.ack(5)
    s.receive_data(XferSegment(START | END, 5, b"y").encode())
    assert not [e for e in drain(s) if isinstance(e, BundleReceived)]
    out = decode_all(s.data_to_send())
    assert out == [XferAck(START | END, 5, 1), XferRefuse(RefuseReason.NOT_ACCEPTABLE, 5)]
    # A START|END segment with extension items is taken by the general path, intact.
    s.receive_data(
        struct.pack(">BBQI", 0x01, START | END, 6, 5)
        + struct.pack(">BHH", 0, 0x7F, 0)  # a non-critical unknown item (§5.2.5)
        + struct.pack(">Q", 3)
        + b"abc"
    )
    assert BundleReceived(6, b"abc") in drain(s)
    assert s.state is State.ESTABLISHED


def test_acks_read_by_the_lean_path_complete_transfers_and_impossible_ones_are_rejected() -> None:
    pair = established_pair()
    tids = [pair.a.send_bundle(bytes(100)) for _ in range(3)]
    pair.pump()
    assert [e for e in pair.of("a", TransferAcked)] == [TransferAcked(t, 100, True) for t in tids]
    assert pair.a.outstanding_transfers == frozenset()
    # An ack of a transfer never started: MSG_REJECT (the general rule, §5.1.2).
    pair.a.receive_data(XferAck(START | END, 99, 1).encode())
    drain(pair.a)
    assert decode_all(pair.a.data_to_send()) == [MsgReject(RejectReason.UNEXPECTED, 0x02)]


def test_small_whole_transfers_leave_together_and_a_long_one_still_yields_to_acks() -> None:
    pair = established_pair(
        active=SessionConfig(node_id="ipn:1.0", send_segment_size=1000),
    )
    for _ in range(100):
        pair.a.send_bundle(bytes(200))
    first = pair.a.data_to_send()
    # Many whole transfers in one call, bounded at 64 KiB of data.
    assert len(decode_all(first)) == 100
    pair.a.send_bundle(bytes(5000))  # five segments of 1000
    pair.a.send_bundle(bytes(10))
    pieces = []
    while data := pair.a.data_to_send():
        pieces.append(decode_all(data))
    # One segment per call while the long transfer lasts; the small one joins its last.
    assert [len(p) for p in pieces] == [1, 1, 1, 1, 2]
    assert pieces[-1][-1] == XferSegment(START | END, 101, bytes(10))
    many = established_pair()
    for _ in range(1000):
        many.a.send_bundle(bytes(1000))
    sizes = []
    while data := many.a.data_to_send():
        sizes.append(len(decode_all(data)))
    assert sum(sizes) == 1000 and max(sizes) == 65_536 // 1000  # 64 KiB of data a call
