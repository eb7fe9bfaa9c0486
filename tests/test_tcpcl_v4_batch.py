"""TCPCLv4 batched events: a session made with ``batch_events`` reports runs of whole
one-segment transfers and final acks as one event each, and takes acks and bundles in batches.

Batching must change nothing but the grouping: the same bundles, the same acknowledgements,
the same bytes on the wire, and whatever the lean path does not fully understand still goes to
the general decoder. Each test drives a batching session and a plain one with the same input.
"""

from __future__ import annotations

import random
import struct

import pytest
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.tcpcl.common import (
    BundleReceived,
    BundlesReceived,
    Event,
    ProtocolViolation,
    TransferAcked,
    TransfersAcked,
    TransferStarted,
)
from fleetwire.protocol.tcpcl.v4 import State
from fleetwire.protocol.tcpcl.v4_messages import (
    Keepalive,
    MsgReject,
    RejectReason,
    SegmentFlags,
    XferAck,
    XferSegment,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_tcpcl_v4 import decode_all, drain, established_pair, passive_established

START, END = SegmentFlags.START, SegmentFlags.END


def _unbatched(events: list[Event]) -> list[object]:
    """Batched events spelled out as the plain session reports them (less TransferStarted)."""
    out: list[object] = []
    for event in events:
        if isinstance(event, BundlesReceived):
            out += [
                BundleReceived(t, d) for t, d in zip(event.transfer_ids, event.data, strict=True)
            ]
        elif isinstance(event, ProtocolViolation):  # exceptions do not compare equal
            out.append((type(event.error), str(event.error)))
        elif not isinstance(event, TransferStarted):
            out.append(event)
    return out


def _hostile_mix() -> bytes:
    """Whole segments, a keepalive, an oversized segment, a reused id, extension items."""
    parts = [XferSegment(START | END, tid, bytes([tid]) * (20 + tid)).encode() for tid in range(6)]
    parts.append(Keepalive().encode())
    parts += [XferSegment(START | END, tid, bytes([tid]) * 30).encode() for tid in range(6, 9)]
    parts.append(struct.pack(">BBQIQ", 0x01, START | END, 9, 0, 2000) + bytes(2000))  # > MRU
    parts.append(XferSegment(START | END, 8, b"again").encode())  # reused id: refused
    parts.append(
        struct.pack(">BBQI", 0x01, START | END, 10, 5)
        # A non-critical unknown extension item whose bytes, read as the lean header's data
        # length, would say 0: the lean path must not mistake it for a whole segment.
        + struct.pack(">BHH", 0, 0, 0)
        + struct.pack(">Q", 3)
        + b"abc"
    )
    parts += [XferSegment(START | END, tid, bytes(40)).encode() for tid in range(11, 15)]
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(6))
def test_batched_session_gives_the_plain_sessions_bundles_and_bytes(seed: int) -> None:
    wire = _hostile_mix()
    rng = random.Random(seed)
    plain, batched = passive_established(), passive_established()
    batched.batch_events = True
    got: dict[str, list[Event]] = {"plain": [], "batched": []}
    at = 0
    while at < len(wire):
        step = rng.choice([1, 7, 22, 60, 500, len(wire)])
        for name, session in (("plain", plain), ("batched", batched)):
            session.receive_data(wire[at : at + step])
            got[name] += drain(session)
        at += step
    assert any(isinstance(e, BundlesReceived) for e in got["batched"])
    assert _unbatched(got["batched"]) == _unbatched(got["plain"])
    received = [e.transfer_id for e in _unbatched(got["plain"]) if isinstance(e, BundleReceived)]
    for tid in received:
        plain.ack(tid)
    batched.ack_many(received)
    assert batched.data_to_send() == plain.data_to_send()
    assert batched.state is plain.state is State.ESTABLISHED


def test_ack_many_releases_in_receive_order_and_stops_at_a_transfer_not_waiting() -> None:
    s = passive_established()
    s.batch_events = True
    s.receive_data(b"".join(XferSegment(START | END, t, b"x" * 10).encode() for t in range(4)))
    assert drain(s) == [BundlesReceived((0, 1, 2, 3), (b"x" * 10,) * 4)]
    s.ack_many([2, 0])
    assert decode_all(s.data_to_send()) == [XferAck(START | END, 0, 10)]  # 1 holds 2 back
    with pytest.raises(LocalProtocolError, match="transfer 7 is not awaiting"):
        s.ack_many([1, 7, 3])
    # 1 was acked before the unknown one stopped the call; 3 still waits.
    assert decode_all(s.data_to_send()) == [XferAck(START | END, t, 10) for t in (1, 2)]
    assert s.awaiting_ack == frozenset({3})


def test_send_bundles_checks_the_batch_whole_and_writes_what_send_bundle_writes() -> None:
    batched, plain = established_pair(auto_ack=False), established_pair(auto_ack=False)
    bundles = [bytes([i]) * (50 + i) for i in range(20)]
    assert batched.a.send_bundles(bundles) == range(20)
    for b in bundles:
        plain.a.send_bundle(b)
    assert batched.a.data_to_send() == plain.a.data_to_send()
    # One bundle over the peer's Transfer MRU: nothing of the batch is queued.
    mru = batched.a.peer_session_init.transfer_mru  # type: ignore[union-attr]
    with pytest.raises(LocalProtocolError, match="Transfer MRU"):
        batched.a.send_bundles([b"ok", bytes(mru + 1)])
    assert batched.a.data_to_send() == b""
    assert batched.a.send_bundles([b"next"]) == range(20, 21)


def test_acks_of_a_batched_sender_come_as_one_event_per_run() -> None:
    pair = established_pair()
    pair.a.batch_events = True
    tids = pair.a.send_bundles([bytes(100)] * 50)
    pair.pump()
    acked = [t for e in pair.of("a", TransfersAcked) for t in e.transfer_ids]
    assert acked == list(tids)
    assert not pair.of("a", TransferAcked)
    assert pair.a.outstanding_transfers == frozenset()
    # An ack that does not complete a sent transfer is the general path's: rejected.
    pair.a.receive_data(XferAck(START | END, 99, 1).encode())
    drain(pair.a)
    assert decode_all(pair.a.data_to_send()) == [MsgReject(RejectReason.UNEXPECTED, 0x02)]


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_ack_many_writes_what_acks_one_by_one_write(data: st.DataObject) -> None:
    # ack_many's run path (the oldest replies, in order, encoded in one go) and its general
    # path must both write, call by call, what ack() per transfer writes: refusals from the
    # hostile mix wait among the final acks, and calls come in and out of receive order.
    wire = _hostile_mix() + b"".join(
        XferSegment(START | END, tid, bytes([tid]) * tid).encode() for tid in range(15, 40)
    )
    plain, batched = passive_established(), passive_established()
    batched.batch_events = True
    for session in (plain, batched):
        session.receive_data(wire)
    events = drain(batched)
    drain(plain)
    assert batched.data_to_send() == plain.data_to_send()  # the replies sent at once
    waiting = [e.transfer_id for e in _unbatched(events) if isinstance(e, BundleReceived)]
    assert len(waiting) > 20
    if data.draw(st.booleans(), label="shuffled"):
        waiting = data.draw(st.permutations(waiting), label="order")
    while waiting:
        n = data.draw(st.integers(1, len(waiting)), label="call")
        call, waiting = waiting[:n], waiting[n:]
        for tid in call:
            plain.ack(tid)
        batched.ack_many(call)
        assert batched.data_to_send() == plain.data_to_send()
        assert batched.awaiting_ack == plain.awaiting_ack
    assert not batched.awaiting_ack and batched.state is plain.state is State.ESTABLISHED
