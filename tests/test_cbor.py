"""The deterministic CBOR codec against RFC 8949: Appendix A, §4.2.1, limits, hostile bytes."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import (
    DecodeError,
    LimitExceeded,
    MalformedCBOR,
    NonDeterministicEncoding,
)
from hypothesis import given
from hypothesis import strategies as st

from .conftest import VECTORS

APPENDIX_A = json.loads((VECTORS / "cbor-test-vectors" / "appendix_a.json").read_text())
KEY_ORDER = json.loads((VECTORS / "rfc8949-det" / "core_deterministic_key_order.json").read_text())
LENIENT = cbor.Limits(deterministic=False, allow_indefinite=True)


@pytest.mark.parametrize("vector", APPENDIX_A, ids=[v["hex"][:24] for v in APPENDIX_A])
def test_appendix_a_decodes(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    assert base64.b64decode(vector["cbor"]) == data
    if data == b"\xf8\x18":
        # RFC 7049 listed simple(24) as f818; RFC 8949 §3.3 makes two-byte simple values
        # below 32 not well-formed.
        with pytest.raises(MalformedCBOR):
            cbor.decode(data, LENIENT)
        return
    value = cbor.decode(data, LENIENT)
    if "decoded" in vector:
        expected = vector["decoded"]
        if isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(value)
        else:
            assert value == expected


ROUNDTRIP = [
    v for v in APPENDIX_A if v["roundtrip"] and v["hex"][:2] not in ("c0", "c1") and v["hex"] != "f818"
]


@pytest.mark.parametrize("vector", ROUNDTRIP, ids=[v["hex"][:24] for v in ROUNDTRIP])
def test_appendix_a_preferred_encoding_roundtrips(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    value = cbor.decode(data, LENIENT)
    encoded = cbor.encode(value)
    if data[0] >> 5 in (2, 3, 4, 5) and data[0] & 31 == 31:
        # Indefinite-length example: the deterministic form of the same value is definite
        # (RFC 8949 §4.2.1), so the bytes differ, the value does not, and only ours is strict.
        assert encoded != data
        assert cbor.decode(encoded) == value
        with pytest.raises(NonDeterministicEncoding):
            cbor.decode(data)
    else:
        assert encoded == data


def test_core_deterministic_key_order_is_bytewise() -> None:
    keys = [bytes.fromhex(k["hex"]) for k in KEY_ORDER["sorted_keys"]]
    value = {_hashable(cbor2.loads(k)): 0 for k in reversed(keys)}
    encoded = cbor.encode(value)
    assert encoded.hex() == KEY_ORDER["derived_not_verbatim"]["hex"]
    assert cbor.decode(encoded, cbor.Limits()) is not None


def test_differs_from_cbor2_canonical_where_rfc7049_order_differs() -> None:
    observed = KEY_ORDER["observed_cbor2_6.3.0"]
    assert cbor.encode({256: 1, -1: 2}).hex() == observed["rfc8949_core_deterministic_expects"]
    assert cbor2.dumps({256: 1, -1: 2}, canonical=True).hex() != observed["rfc8949_core_deterministic_expects"]
    with pytest.raises(NonDeterministicEncoding, match="out of bytewise order"):
        cbor.decode(bytes.fromhex(observed["got"]), cbor.Limits())


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "f90000"), (1.5, "f93e00"), (100000.0, "fa47c35000"), (1.1, "fb3ff199999999999a"),
     (math.inf, "f97c00"), (-math.inf, "f9fc00"), (math.nan, "f97e00"), (5.960464477539063e-08, "f90001")],
)
def test_floats_take_their_shortest_form(value: float, expected: str) -> None:
    assert cbor.encode(value).hex() == expected


@pytest.mark.parametrize(
    ("hex_bytes", "rule"),
    [
        ("1817", "shortest"),  # 23 in two bytes
        ("190017", "shortest"),
        ("1a000000ff", "shortest"),
        ("1b00000000ffffffff", "shortest"),
        ("5801ff", "shortest"),  # length 1 in two bytes
        ("a2020101 01".replace(" ", ""), "order"),  # {2:1, 1:1}
        ("a201010101", "duplicate"),
        ("9f01ff", "indefinite"),
        ("fa3fc00000", "float"),  # 1.5 as single
        ("fb3ff8000000000000", "float"),  # 1.5 as double
        ("f97e01", "nan"),  # NaN with payload
        ("fa7fc00000", "float"),  # NaN as single
    ],
)
def test_non_deterministic_encodings_are_refused(hex_bytes: str, rule: str) -> None:
    data = bytes.fromhex(hex_bytes)
    with pytest.raises(NonDeterministicEncoding):
        cbor.decode(data, cbor.Limits())
    cbor.decode(data, LENIENT) if rule != "duplicate" else None


def test_duplicate_keys_refused_even_when_lenient() -> None:
    with pytest.raises(DecodeError, match="duplicate"):
        cbor.decode(bytes.fromhex("a201010101"), LENIENT)


@pytest.mark.parametrize(
    ("data", "limits", "what"),
    [
        (b"\x81" * 20 + b"\x00", cbor.Limits(max_depth=16), "deeper"),
        (b"\xc6" * 20 + b"\x00", cbor.Limits(max_depth=16), "deeper"),
        (b"\x99\x01\x00" + b"\x00" * 256, cbor.Limits(max_container_items=255), "container"),
        (b"\x83" + b"\x82\x00\x00" * 3, cbor.Limits(max_total_items=6), "in total"),
        (b"\x58\x20" + b"\x00" * 32, cbor.Limits(max_string_length=31), "string"),
        (b"\x40" * 1, cbor.Limits(max_size=0), "bytes of input"),
    ],
)
def test_limits_are_enforced_with_typed_errors(data: bytes, limits: cbor.Limits, what: str) -> None:
    with pytest.raises(LimitExceeded, match=what):
        cbor.decode(data, limits)


@pytest.mark.parametrize(
    "data",
    [
        b"\x9b" + (1 << 40).to_bytes(8, "big"),  # array claiming 2^40 items
        b"\x5b" + (1 << 62).to_bytes(8, "big") + b"ab",
        b"\xbb" + (1 << 40).to_bytes(8, "big"),
        b"\x1c",  # reserved additional information
        b"\xff",  # break outside an indefinite item
        b"\x7f\x61\x61\x01\xff",  # bad chunk in indefinite text
        b"\x62\xff\xfe",  # invalid UTF-8
        b"",
        b"\x00\x00",  # trailing bytes
    ],
)
def test_hostile_inputs_raise_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        cbor.decode(data, LENIENT)
    with pytest.raises(DecodeError):
        cbor.decode(data)


def test_decode_then_reencode_check_is_bounded() -> None:
    limits = cbor.Limits(max_size=100, max_depth=4)
    for data in (b"\x9b" + (1 << 40).to_bytes(8, "big"), b"\x81" * 10 + b"\x00", b"\x40" * 101):
        with pytest.raises(DecodeError):
            cbor.decode_then_reencode_check(data, limits)
    # Indefinite lengths and duplicate keys are the caller's re-encoding check to refuse:
    assert cbor.decode_then_reencode_check(b"\x9f\xff", limits) == []
    assert cbor.decode_then_reencode_check(b"\xa2\x00\x01\x00\x02", limits) == {0: 2}


# --- properties ---------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
keys = st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


@given(values)
def test_roundtrip_and_one_encoding(value: Any) -> None:
    encoded = cbor.encode(value)
    cbor.scan(encoded)  # the deterministic scanner accepts what the encoder writes
    decoded = cbor.decode(encoded, cbor.Limits(max_depth=64))
    assert decoded == value
    assert cbor.encode(decoded) == encoded


no_floats_no_maps = st.recursive(
    scalars.filter(lambda v: not isinstance(v, float)), lambda c: st.lists(c, max_size=4), max_leaves=10
)


@given(st.dictionaries(st.integers(0, 23), no_floats_no_maps, max_size=8))
def test_plain_cbor2_is_deterministic_for_ordered_small_keys_without_floats(value: Any) -> None:
    # The message fast path: small unsigned keys in ascending order, no floats; nested maps
    # are written by the same rule, recursively.
    ordered = dict(sorted(value.items()))
    assert cbor2.dumps(ordered) == cbor.encode(ordered)


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(k) or _has_float(v) for k, v in value.items())
    return False


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    for limits in (cbor.DEFAULT_LIMITS, LENIENT):
        try:
            cbor.decode(data, limits)
        except DecodeError:
            pass


@given(values, st.data())
def test_mutated_encodings_raise_only_decode_errors(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(cbor.encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
    try:
        decoded = cbor.decode(bytes(encoded))
    except DecodeError:
        return
    # Whatever survives the deterministic decoder is deterministic: it re-encodes identically.
    assert cbor.encode(decoded) == bytes(encoded)


def test_truncation_is_found_before_any_limit() -> None:
    """spec/v1/protocol.md §3.4: a declared length past the end is truncation, never a limit."""
    from fleetwire.protocol.errors import LimitExceeded, TruncatedCBOR

    limits = cbor.Limits(max_depth=8, max_string_length=16, max_container_items=4)
    for data in (
        b"\x81" * 8 + b"\x83",  # an array at level 9 that the input cannot hold
        b"\x7a\xff\xff\xff\xff",  # a text of 2^32-1 bytes, nothing after the head
        b"\x99\xff\xff\x01",  # an array of 65535 items, one given
    ):
        with pytest.raises(TruncatedCBOR):
            cbor.scan(data, limits)
    with pytest.raises(LimitExceeded):
        cbor.scan(b"\x81" * 8 + b"\x80", limits)  # the same depth, held whole
    with pytest.raises(LimitExceeded):
        cbor.scan(b"\x71" + b"x" * 17, limits)  # a string over its limit, held whole
