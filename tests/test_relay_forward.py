"""The relay's one-pass forwarding bytes give exactly what the Python road gives.

``relay_forward_bytes`` (``protocol/_speedups.c``, :data:`fleetwire.protocol.bpv7.accel.
relay_forward`) may only take the commonest shapes: for any bundle read from bytes,
:func:`~fleetwire.protocol.agent.bundling.forward_bytes` must return the same bytes, or raise
the same error, with it as without it. Inputs: real message bundles on their first and later
hops, bundles near that shape (other block numbers, flags, CRC types, hop counts at and past
their limit, hop data not in shortest form, other block types), any valid bundle, damaged
message bundles; and the C function alone must answer bytes or ``None`` — never raise, never
crash — for any arguments at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fleetwire.protocol.agent.actions import Transmit
from fleetwire.protocol.agent.bundling import (
    HOP_LIMIT,
    HopLimitExceeded,
    for_next_hop,
    forward_bytes,
    new_message,
)
from fleetwire.protocol.bpv7 import (
    BundleFlags,
    CanonicalBlock,
    CreationTimestamp,
    IpnEid,
    PrimaryBlock,
    accel,
    decode_bundle,
    decode_bundle_offsets,
    encode_bundle,
)
from fleetwire.protocol.bpv7.crc import CrcType
from hypothesis import example, given
from hypothesis import strategies as st

from tests.test_agent import A, B, C, agent, bundle_bytes, one, only
from tests.test_bpv7_accel import damaged
from tests.test_bpv7_bundle import bundles, raw

needs_c = pytest.mark.skipif(
    accel.relay_forward is None, reason="the C relay path is not built (or is off)"
)

T0 = 820_000_000_000
#: Node numbers a relay may have, and some no IpnEid takes (the Python road refuses them).
NODES = st.one_of(
    st.sampled_from([0, 1, 7, 23, 24, 255, 256, 65_535, 65_536, (1 << 32) - 1]),
    st.integers(0, (1 << 32) - 1),
    st.sampled_from([-1, 1 << 32, 1 << 64]),
)


def outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", run())
    except Exception as exc:
        return ("error", type(exc), getattr(exc, "code", None), str(exc))


def both_roads(data: bytes, node: int) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
    """forward_bytes with and without the C road, for ``data`` as a relay would hold it."""
    try:
        bundle, offsets = decode_bundle_offsets(data)
    except Exception:
        return None  # not a bundle: a relay never holds it
    fast = outcome(lambda: forward_bytes(bundle, data, node, offsets))
    with accel.without_relay_forward():
        slow = outcome(lambda: forward_bytes(bundle, data, node, offsets))
    return fast, slow


def agree(data: bytes, node: int) -> None:
    roads = both_roads(data, node)
    if roads is not None:
        fast, slow = roads
        assert fast == slow


def message(hop_limit_hops: int = 0, envelope: bytes = b"\xd2\x84" + bytes(60)) -> bytes:
    """A message bundle as sent, then forwarded ``hop_limit_hops`` times (Python road)."""
    bundle, data, offsets = new_message(envelope, source=5, destination=9, created_at=T0,
                                        sequence=3, lifetime_ms=86_400_000)  # fmt: skip
    with accel.without_relay_forward():
        for node in range(hop_limit_hops):
            data = forward_bytes(bundle, data, 100 + node, offsets)
            bundle, offsets = decode_bundle_offsets(data)
    return data


@needs_c
def test_the_common_shapes_are_taken_and_agree() -> None:
    assert accel.relay_forward is not None
    for hops, expected_blocks in ((0, 4), (1, 5), (5, 5)):
        data = message(hops)
        bundle, offsets = decode_bundle_offsets(data)
        assert len(offsets) == expected_blocks
        written = accel.relay_forward(data, offsets, 42)
        assert written is not None  # or the comparisons would test Python against itself
        with accel.without_relay_forward():
            assert written == forward_bytes(bundle, data, 42, offsets)
        assert written == for_next_hop(bundle, 42)  # and both are what a full encode gives
        forwarded = decode_bundle(written)
        assert forwarded.previous_node == IpnEid(42, 0)
        assert forwarded.hop_count is not None and forwarded.hop_count.count == hops + 1


@needs_c
def test_the_last_hop_is_left_to_python() -> None:
    primary = PrimaryBlock(IpnEid(9, 7), IpnEid(5, 7), IpnEid(5, 0), CreationTimestamp(T0, 0), 10)
    data = raw(primary, CanonicalBlock(10, 2, b"\x82\x03\x03"), CanonicalBlock(1, 1, b"x"))
    bundle, offsets = decode_bundle_offsets(data)
    assert accel.relay_forward is not None and accel.relay_forward(data, offsets, 4) is None
    with pytest.raises(HopLimitExceeded):
        forward_bytes(bundle, data, 4, offsets)


def _uint(value: int) -> bytes:
    if value < 24:
        return bytes([value])
    if value < 256:
        return bytes([0x18, value])
    return b"\x19" + value.to_bytes(2, "big")


def _odd(draw: st.DrawFn) -> bool:
    """One time in eight: a near miss instead of the common value."""
    return draw(st.integers(0, 7)) == 7


#: Hop Count block data near misses: not shortest form, wrong sizes, no data, any bytes.
_ODD_HOP_DATA = st.one_of(
    st.sampled_from([b"\x82\x18\x05\x00", b"\x82\x05\x18\x01", b"\x83\x05\x00\x00", b"\x82\x05",
                     b"\x82\x05\x00\x00", b"\x81\x05", b"", b"\x82\x19\x00\x05\x00"]),
    st.tuples(st.integers(0, 300), st.integers(0, 300)).map(
        lambda pair: b"\x82" + _uint(pair[0]) + _uint(pair[1])
    ),
    st.binary(max_size=6),
)  # fmt: skip
_NUMBERS = st.one_of(st.integers(2, 300), st.sampled_from([(1 << 64) - 1, (1 << 64) - 2]))


@st.composite
def near_shapes(draw: st.DrawFn) -> bytes:
    """Bundles in or near the relay's two shapes, with good CRCs: each part is the common one
    but now and then a near miss (which may break a §4 rule: the decoder refuses those, and a
    relay never holds them)."""
    primary = PrimaryBlock(
        IpnEid(9, 7), IpnEid(draw(st.sampled_from([5, 70_000])), 7), IpnEid(5, 0),
        CreationTimestamp(0 if _odd(draw) else T0, draw(st.integers(0, 30))),
        draw(st.sampled_from([1, 86_400_000])), draw(st.sampled_from([0, 4, 0x4000])),
        draw(st.sampled_from(list(CrcType))) if _odd(draw) else CrcType.CRC32C,
    )  # fmt: skip
    numbers = iter(draw(st.lists(_NUMBERS, min_size=2, max_size=2, unique=True)))

    def number() -> int:
        return draw(st.sampled_from([0, 1, 2])) if _odd(draw) else next(numbers)

    def crc() -> CrcType:
        return draw(st.sampled_from(list(CrcType))) if _odd(draw) else CrcType.CRC32C

    def flags() -> int:
        return draw(st.sampled_from([1, 4, 0x10])) if _odd(draw) else 0

    def kind(common: int) -> int:
        return draw(st.sampled_from([1, 6, 7, 10])) if _odd(draw) else common

    if _odd(draw):
        hop_data = draw(_ODD_HOP_DATA)
    else:
        limit = draw(st.integers(1, 255))
        hop_data = b"\x82" + _uint(limit) + _uint(draw(st.integers(0, limit + 1)))
    blocks = [CanonicalBlock(kind(10), number(), hop_data, flags(), crc())]
    if draw(st.booleans()):
        node = draw(st.sampled_from([IpnEid(3, 0).wire, IpnEid(70_000, 0).wire, b"\x82\x01\x00"]))
        blocks.append(CanonicalBlock(kind(6), number(), node, flags(), crc()))
    payload_number = draw(st.sampled_from([2, 5])) if _odd(draw) else 1
    blocks.append(CanonicalBlock(kind(1), payload_number, draw(st.binary(max_size=40)), flags(),
                                 crc()))  # fmt: skip
    if _odd(draw):
        blocks.reverse()
    elif _odd(draw):
        blocks.insert(0, CanonicalBlock(192, 50, b"", 0, CrcType.CRC32C))
    return raw(primary, *blocks)


@needs_c
@given(near_shapes(), NODES)
@example(
    raw(
        PrimaryBlock(IpnEid(9, 7), IpnEid(5, 7), IpnEid(5, 0), CreationTimestamp(T0, 0), 1),
        CanonicalBlock(10, (1 << 64) - 1, b"\x82\x05\x00"),
        CanonicalBlock(1, 1, b"x"),
    ),
    3,
)  # no number above the Hop Count block's for a new Previous Node block
@example(
    raw(
        PrimaryBlock(IpnEid(9, 7), IpnEid(5, 7), IpnEid(5, 0), CreationTimestamp(T0, 0), 1),
        CanonicalBlock(10, 2, b"\x82\x19\x01\x00\x00"),
        CanonicalBlock(1, 1, b"x"),
    ),
    3,
)  # a hop limit past 255
def test_near_shapes_agree(data: bytes, node: int) -> None:
    agree(data, node)


@needs_c
@given(bundles(), NODES)
def test_valid_bundles_agree(bundle: Any, node: int) -> None:
    agree(encode_bundle(bundle), node)


@needs_c
@given(damaged(), NODES)
def test_damaged_message_bundles_agree(data: bytes, node: int) -> None:
    agree(data, node)


@needs_c
@given(st.integers(0, HOP_LIMIT), st.binary(max_size=300), NODES)
def test_forwarded_message_bundles_agree(hops: int, envelope: bytes, node: int) -> None:
    agree(message(hops, envelope), node)


_ANY = st.one_of(st.none(), st.integers(-(1 << 70), 1 << 70), st.binary(max_size=8),
                 st.text(max_size=4), st.floats(allow_nan=False))  # fmt: skip


@needs_c
@given(
    st.one_of(st.binary(max_size=80), damaged(), _ANY),
    st.one_of(st.lists(st.integers(-3, 90), max_size=6).map(tuple),
              st.lists(_ANY, max_size=5).map(tuple), _ANY),
    st.one_of(NODES, _ANY),
)  # fmt: skip
def test_any_arguments_give_bytes_or_none(data: Any, offsets: Any, node: Any) -> None:
    assert accel.relay_forward is not None
    written = accel.relay_forward(data, offsets, node)
    assert written is None or type(written) is bytes


@needs_c
def test_too_few_or_many_arguments_give_none() -> None:
    assert accel.relay_forward is not None
    data = message(1)
    _, offsets = decode_bundle_offsets(data)
    assert accel.relay_forward(data, offsets) is None  # type: ignore[call-arg]
    assert accel.relay_forward(data, offsets, 1, 2) is None  # type: ignore[call-arg]
    assert accel.relay_forward(bytearray(data), offsets, 1) is None  # type: ignore[arg-type]
    assert accel.relay_forward(data, list(offsets), 1) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reports",
    [BundleFlags.NONE, BundleFlags.REPORT_FORWARDING, BundleFlags.REPORT_DELIVERY],
)
def test_a_relay_reports_forwarding_only_when_asked(reports: BundleFlags) -> None:
    """The relay hop end to end: taken, forwarded with the C bytes, and the forwarding status
    report (RFC 9171 §6.1.1) made on ``transmitted`` exactly when the source asked for one."""
    relay = agent(B)
    relay.link_up(A, T0)
    relay.link_up(C, T0)
    received = relay.receive(bundle_bytes(C, reports=reports), A, T0)
    transmit = one(received, Transmit)
    forwarded = decode_bundle(transmit.data)
    assert forwarded.previous_node == IpnEid(B, 0)
    assert forwarded.hop_count is not None and forwarded.hop_count.count == 1
    done = relay.transmitted(C, transmit.bundle, T0 + 1)
    report = only(done, Transmit)  # the report is routed back toward A, over its link
    if reports is BundleFlags.REPORT_FORWARDING:
        assert len(report) == 1 and report[0].link == A
        status = decode_bundle(report[0].data)
        assert status.primary.is_admin_record and status.primary.destination == IpnEid(A, 0)
    else:
        assert not report
    assert relay.stats.forwarded == 1
