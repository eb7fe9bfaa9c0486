"""SDNV codec (RFC 6256): vectors, round trips, and hostile input refused with typed errors."""

from __future__ import annotations

import pytest
from fleetwire.protocol.tcpcl import sdnv
from fleetwire.protocol.tcpcl.sdnv import (
    MAX_SDNV_BYTES,
    MAX_SDNV_VALUE,
    SdnvError,
    SdnvOverflow,
    SdnvTooLong,
    SdnvTruncated,
    SdnvValueError,
)
from hypothesis import given
from hypothesis import strategies as st

# RFC 6256 §2.1 examples, and the edges of one and two bytes.
VECTORS = [
    (0, b"\x00"),
    (0x7F, b"\x7f"),
    (0x80, b"\x81\x00"),
    (0xABC, b"\x95\x3c"),
    (0x1234, b"\xa4\x34"),
    (0x4234, b"\x81\x84\x34"),
    (0x3FFF, b"\xff\x7f"),
    (MAX_SDNV_VALUE, b"\x81" + b"\xff" * 8 + b"\x7f"),
]


@pytest.mark.parametrize(("value", "wire"), VECTORS)
def test_vectors(value: int, wire: bytes) -> None:
    assert sdnv.encode(value) == wire
    assert sdnv.decode(wire) == (value, len(wire))
    assert sdnv.encoded_length(value) == len(wire)


@given(st.integers(0, MAX_SDNV_VALUE), st.binary(max_size=8), st.binary(max_size=8))
def test_round_trip_inside_other_bytes(value: int, before: bytes, after: bytes) -> None:
    wire = sdnv.encode(value)
    assert len(wire) == sdnv.encoded_length(value) <= MAX_SDNV_BYTES
    assert sdnv.decode(before + wire + after, len(before)) == (value, len(before) + len(wire))


@given(st.integers(0, MAX_SDNV_VALUE))
def test_every_strict_prefix_needs_more(value: int) -> None:
    wire = sdnv.encode(value)
    for cut in range(len(wire)):
        assert sdnv.decode_prefix(wire[:cut]) is None
        with pytest.raises(SdnvTruncated):
            sdnv.decode(wire[:cut])


def test_non_minimal_leading_zero_groups_are_read() -> None:
    # RFC 6256 does not forbid them; they still count against the length bound.
    assert sdnv.decode(b"\x80\x80\x01") == (1, 3)


def test_too_long_refused_even_before_the_end_arrives() -> None:
    eleven = b"\x80" * MAX_SDNV_BYTES + b"\x01"
    with pytest.raises(SdnvTooLong):
        sdnv.decode(eleven)
    # A stream reader must not wait for an end that could never be valid.
    with pytest.raises(SdnvTooLong):
        sdnv.decode_prefix(b"\x80" * MAX_SDNV_BYTES)
    assert sdnv.decode_prefix(b"\x80" * (MAX_SDNV_BYTES - 1)) is None


def test_overflow_refused() -> None:
    # 2**64 needs ten bytes starting 0x82: short enough, too large.
    with pytest.raises(SdnvOverflow):
        sdnv.decode(b"\x82" + b"\x80" * 8 + b"\x00")
    with pytest.raises(SdnvOverflow):
        sdnv.decode_prefix(b"\xff" * 10)


@pytest.mark.parametrize("bad", [-1, MAX_SDNV_VALUE + 1, True, 1.0, "1"])
def test_encode_refuses_what_it_cannot_write(bad: object) -> None:
    with pytest.raises(SdnvValueError):
        sdnv.encode(bad)  # type: ignore[arg-type]


@given(st.binary(max_size=24))
def test_arbitrary_bytes_only_typed_outcomes(data: bytes) -> None:
    try:
        result = sdnv.decode_prefix(data)
    except SdnvError:
        return
    if result is None:
        assert len(data) < MAX_SDNV_BYTES
        assert all(b & 0x80 for b in data)
    else:
        value, end = result
        assert 1 <= end <= MAX_SDNV_BYTES
        assert 0 <= value <= MAX_SDNV_VALUE
        assert not data[end - 1] & 0x80
