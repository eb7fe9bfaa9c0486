"""MTCP framer/session: bundles survive any split, hostile streams get only typed reactions."""

from __future__ import annotations

import itertools

import cbor2
import pytest
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.tcpcl.common import (
    BundleReceived,
    BundlesReceived,
    ConnectionClosed,
    Event,
    NeedData,
    ProtocolViolation,
    Role,
    SessionEstablished,
)
from fleetwire.protocol.tcpcl.mtcp import (
    MtcpBundleTooLarge,
    MtcpConfig,
    MtcpFramingError,
    MtcpSession,
    MtcpTruncated,
    State,
    frame,
)
from hypothesis import example, given
from hypothesis import strategies as st


def drain(session: MtcpSession) -> list[Event]:
    events: list[Event] = []
    while True:
        event = session.next_event()
        if isinstance(event, NeedData):
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def bundles_of(events: list[Event]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, BundleReceived)]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize("size", [1, 23, 24, 255, 256, 65535, 65536, 70000])
def test_frame_is_the_cbor_byte_string(size: int) -> None:
    bundle = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert frame(bundle) == cbor2.dumps(bundle)
    assert cbor2.loads(frame(bundle)) == bundle


@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_back_to_back_any_split(bundles: list[bytes], cuts: list[int]) -> None:
    sender = MtcpSession(Role.ACTIVE)
    receiver = MtcpSession(Role.PASSIVE)
    ids = [sender.send_bundle(b) for b in bundles]
    assert ids == list(range(len(bundles)))
    wire = b""
    while chunk := sender.data_to_send():
        wire += chunk
    events: list[Event] = []
    for chunk in split(wire, cuts):
        receiver.receive_data(chunk)
        events += drain(receiver)
    receiver.receive_data(b"")
    events += drain(receiver)
    assert isinstance(events[0], SessionEstablished)
    assert bundles_of(events) == bundles
    assert events[-1] == ConnectionClosed(clean=True)
    assert receiver.buffered == 0
    for i in range(len(bundles)):
        receiver.ack(i)  # accepted, sends nothing
    assert receiver.data_to_send() == b""


def test_non_preferred_heads_are_accepted() -> None:
    # A peer may write a longer head than needed (RFC 8949 §3 allows it outside deterministic mode).
    s = MtcpSession(Role.PASSIVE)
    s.receive_data(b"\x58\x02ab" + b"\x59\x00\x01c" + b"\x5b" + (3).to_bytes(8, "big") + b"def")
    assert bundles_of(drain(s)) == [b"ab", b"c", b"def"]


def test_oversized_frame_refused_from_its_head_alone() -> None:
    s = MtcpSession(Role.PASSIVE, MtcpConfig(max_bundle_size=100))
    assert isinstance(s.next_event(), SessionEstablished)
    s.receive_data(b"\x5a\xff\xff\xff\xff")  # declares 4 GiB, none of it sent
    violation = s.next_event()
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, MtcpBundleTooLarge)
    assert s.next_event() == ConnectionClosed(clean=False)
    s.receive_data(b"x" * 1000)  # ignored once failed
    assert s.buffered == 0
    assert s.next_event() == ConnectionClosed(clean=False)
    assert s.state is State.FAILED


def test_exactly_max_size_is_accepted() -> None:
    s = MtcpSession(Role.PASSIVE, MtcpConfig(max_bundle_size=100))
    s.receive_data(frame(b"z" * 100))
    assert bundles_of(drain(s)) == [b"z" * 100]


@pytest.mark.parametrize(
    "wire",
    [b"\x00", b"\x82\x01\x02", b"\x60", b"\x5f\x41a\xff", b"\x5c", b"\x5d", b"\x5e", b"\xff"],
)
def test_not_a_definite_byte_string(wire: bytes) -> None:
    s = MtcpSession(Role.PASSIVE)
    s.receive_data(wire)
    events = drain(s)
    assert isinstance(events[-2], ProtocolViolation)
    assert isinstance(events[-2].error, MtcpFramingError)
    assert events[-1] == ConnectionClosed(clean=False)


@pytest.mark.parametrize("wire", [b"\x59\x00", b"\x45abc"])
def test_eof_inside_a_frame(wire: bytes) -> None:
    s = MtcpSession(Role.PASSIVE)
    s.receive_data(wire)
    s.receive_data(b"")
    events = drain(s)
    assert isinstance(events[-2], ProtocolViolation)
    assert isinstance(events[-2].error, MtcpTruncated)
    assert events[-1] == ConnectionClosed(clean=False)


def test_caller_misuse() -> None:
    s = MtcpSession(Role.ACTIVE)
    with pytest.raises(LocalProtocolError):
        s.send_bundle(b"")
    with pytest.raises(LocalProtocolError):
        s.ack(0)  # nothing received yet
    s.send_bundle(b"last")
    s.terminate()
    assert s.data_to_send() == frame(b"last")  # queued frames still flushed
    assert s.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        s.send_bundle(b"more")
    assert drain(s)[-1] == ConnectionClosed(clean=True)
    assert s.next_deadline() is None


@given(st.lists(st.binary(max_size=64), max_size=12), st.booleans(), st.booleans())
def test_arbitrary_stream_only_typed_reactions(chunks: list[bytes], eof: bool, batch: bool) -> None:
    limit = 40
    s = MtcpSession(Role.PASSIVE, MtcpConfig(max_bundle_size=limit), batch_events=batch)
    for chunk in [*chunks, b""] if eof else chunks:
        s.receive_data(chunk)
        for event in drain(s):
            assert isinstance(
                event,
                SessionEstablished
                | BundleReceived
                | BundlesReceived
                | ProtocolViolation
                | ConnectionClosed,
            )
            if isinstance(event, BundleReceived):
                assert len(event.data) <= limit
            if isinstance(event, BundlesReceived):
                assert batch and all(len(data) <= limit for data in event.data)
            if isinstance(event, ProtocolViolation):
                assert event.error.code.startswith("mtcp-")
        # Held bytes never exceed one frame plus its head once the events are drained.
        assert s.buffered <= limit + 9 + len(chunk)


def batched(events: list[Event]) -> list[tuple[int, bytes]]:
    """(transfer id, bundle) of every bundle event, single or batched, in order."""
    out: list[tuple[int, bytes]] = []
    for e in events:
        if isinstance(e, BundleReceived):
            out.append((e.transfer_id, e.data))
        elif isinstance(e, BundlesReceived):
            out += zip(e.transfer_ids, e.data, strict=True)
    return out


@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=5),
)
def test_batched_events_carry_the_same_bundles_under_any_split(
    bundles: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(frame(b) for b in bundles)
    session = MtcpSession(Role.PASSIVE, batch_events=True)
    events = drain(session)
    for chunk in split(wire, cuts):
        session.receive_data(chunk)
        events += drain(session)
    assert batched(events) == list(enumerate(bundles))
    session.ack_many([tid for tid, _ in batched(events)])


def test_whole_frames_in_the_buffer_are_one_event() -> None:
    session = MtcpSession(Role.PASSIVE, batch_events=True)
    drain(session)
    session.receive_data(b"".join(frame(bytes([i]) * 200) for i in range(1, 6)) + b"\x58")
    events = drain(session)
    assert len(events) == 1 and isinstance(events[0], BundlesReceived)
    assert events[0].transfer_ids == (0, 1, 2, 3, 4)
    with pytest.raises(LocalProtocolError, match="transfer id 5"):
        session.ack_many([4, 5])


def test_a_violation_inside_a_run_comes_after_the_whole_frames_before_it() -> None:
    session = MtcpSession(Role.PASSIVE, MtcpConfig(max_bundle_size=100), batch_events=True)
    drain(session)
    session.receive_data(frame(b"a" * 10) + frame(b"b" * 10) + frame(b"c" * 101) + frame(b"d"))
    events = drain(session)
    assert isinstance(events[0], BundlesReceived) and events[0].data == (b"a" * 10, b"b" * 10)
    assert isinstance(events[1], ProtocolViolation)
    assert isinstance(events[1].error, MtcpBundleTooLarge)
    assert events[2] == ConnectionClosed(clean=False) and len(events) == 3
    assert session.state is State.FAILED


# --- the lean path (whole frames read straight from the buffer) against the general one ------

_LIMIT = 300


def _frame_any_head(data: bytes, width: int) -> bytes:
    """``data`` as a byte string whose head has the given width (1, 2, 3, 5 or 9 bytes),
    preferred or not (RFC 8949 §3.1 lets a decoder accept both)."""
    n = len(data)
    if width == 1 and n < 24:
        return bytes((0x40 | n,)) + data
    if width <= 2 and n < 256:
        return bytes((0x58, n)) + data
    if width <= 3 and n < 1 << 16:
        return b"\x59" + n.to_bytes(2, "big") + data
    if width <= 5:
        return b"\x5a" + n.to_bytes(4, "big") + data
    return b"\x5b" + n.to_bytes(8, "big") + data


_pieces = st.one_of(
    st.tuples(st.binary(max_size=40), st.sampled_from([1, 2, 3, 5, 9])).map(
        lambda t: _frame_any_head(*t)
    ),
    st.binary(min_size=_LIMIT - 2, max_size=_LIMIT + 2).map(frame),  # about the limit
    st.sampled_from([1 << 16, 1 << 32, (1 << 64) - 1]).map(
        lambda n: _frame_any_head(b"", 9)[:1] + n.to_bytes(8, "big")  # far over it
    ),
    st.sampled_from([b"\x5c", b"\x5f", b"\x41", b"\x60", b"\x00", b"\x5a\x00"]),  # broken or short
    st.binary(max_size=6),
)


def _normal(events: list[Event]) -> tuple[list[tuple[int, bytes]], list[object]]:
    other: list[object] = []
    for e in events:
        if isinstance(e, ProtocolViolation):
            other.append((type(e.error), e.error.code, str(e.error)))
        elif not isinstance(e, BundleReceived | BundlesReceived):
            other.append(e)
    return batched(events), other


@given(
    st.lists(_pieces, max_size=20),
    st.lists(st.integers(min_value=0), max_size=8),
    st.booleans(),
)
# Found by a CI run: two frames consumed ahead of a 299-byte one still arriving stayed held
# beside it (the buffer compacts only once its dead prefix is half), past the bound below.
@example(
    [b"\x5a\x00\x00\x00\x04" + bytes(4), b"\x4d" + bytes(13), b"\x59\x01\x2b" + bytes(299),
     b"\x59\x01\x2b" + bytes(299)],
    [310, 311],
    False,
)  # fmt: skip
def test_lean_frames_are_the_general_paths_over_any_bytes_and_splits(
    pieces: list[bytes], cuts: list[int], eof: bool
) -> None:
    wire = b"".join(pieces)
    runs = []
    for batch in (False, True):
        s = MtcpSession(Role.PASSIVE, MtcpConfig(max_bundle_size=_LIMIT), batch_events=batch)
        events = drain(s)
        for chunk in [*split(wire, cuts), *([b""] if eof else [])]:
            s.receive_data(chunk)
            events += drain(s)
            assert s.buffered <= _LIMIT + 9 + len(chunk)
        runs.append((_normal(events), s.state))
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("tail", "error"),
    [
        (b"\x59\x01\x2d" + b"x" * 301, MtcpBundleTooLarge),  # 301 bytes, all here
        (b"\x5a\x00\x00\x01\x2d" + b"x" * 301, MtcpBundleTooLarge),
        (b"\x5b" + (1 << 63).to_bytes(8, "big"), MtcpBundleTooLarge),
        (b"\x5f\x41a\xff", MtcpFramingError),  # indefinite length
        (b"\x61a", MtcpFramingError),  # a text string
    ],
)
def test_a_bad_frame_after_a_run_is_the_general_paths_error(tail: bytes, error: type) -> None:
    s = MtcpSession(Role.PASSIVE, MtcpConfig(max_bundle_size=_LIMIT), batch_events=True)
    drain(s)
    s.receive_data(frame(b"a") + frame(b"b" * 300) + frame(b"") + tail)
    events = drain(s)
    assert events[0] == BundlesReceived((0, 1, 2), (b"a", b"b" * 300, b""))
    assert isinstance(events[1], ProtocolViolation) and type(events[1].error) is error
    assert events[2] == ConnectionClosed(clean=False) and len(events) == 3


def test_lean_frames_split_at_every_byte() -> None:
    # Heads of every width cut at every point: a head not all here waits, never misreads.
    bundles = [b"a" * 30, b"b" * 300, b"c" * 7, b"d" * 20]
    wire = b"".join(_frame_any_head(b, w) for b, w in zip(bundles, [2, 3, 5, 1], strict=True))
    for cut in range(len(wire) + 1):
        s = MtcpSession(Role.PASSIVE, MtcpConfig(max_bundle_size=_LIMIT), batch_events=True)
        events = drain(s)
        for part in (wire[:cut], wire[cut:]):
            if part:
                s.receive_data(part)
                events += drain(s)
        s.receive_data(b"")  # end of stream
        events += drain(s)
        assert [d for _, d in batched(events)] == bundles
        assert events[-1] == ConnectionClosed(clean=True)
