"""Endpoint IDs (RFC 9171 §4.2.5.1, RFC 9758): text, CBOR, validation."""

from __future__ import annotations

import cbor2
import pytest
from fleetwire.protocol.bpv7 import (
    DTN_NONE,
    DtnEid,
    EidError,
    InvalidEid,
    IpnEid,
    eid_from_cbor,
    parse_eid,
)
from fleetwire.protocol.bpv7.eid import read_eid
from hypothesis import given
from hypothesis import strategies as st

from tests.test_bpv7_bundle import eids

U32 = (1 << 32) - 1


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("dtn:none", "820100"),
        ("dtn://node1/app", "82016b2f2f6e6f6465312f617070"),
        ("dtn://n/", "8201642f2f6e2f"),
        ("ipn:1.2", "8202820102"),
        ("ipn:0.0", "8202820000"),
        # RFC 9758: allocator 977000 -> 3-element form; as a 64-bit FQNN in the 2-element form.
        ("ipn:977000.1.1", "8202831a000ee8680101"),
        ("ipn:4196183048192001.1", "8202831a000ee8680101"),  # written in the 3-element form
    ],
)
def test_text_and_wire_forms(text: str, wire: str) -> None:
    eid = parse_eid(text)
    assert eid.wire.hex() == wire
    decoded, end = read_eid(eid.wire, 0, len(eid.wire), 100)
    assert decoded == eid and end == len(eid.wire)
    assert eid_from_cbor(cbor2.loads(eid.wire)) == eid


def test_fqnn_forms_name_the_same_endpoint() -> None:
    two = eid_from_cbor(cbor2.loads(bytes.fromhex("8202821b000ee8680000000101")))
    three = parse_eid("ipn:977000.1.1")
    assert parse_eid("ipn:4196183048192001.1") == three  # 977000 << 32 | 1
    assert two == three and str(two) == "ipn:977000.1.1"
    assert isinstance(two, IpnEid) and two.fqnn == 977000 << 32 | 1
    assert two.elements == 2 and three.elements == 3  # each keeps its wire form
    assert two.wire.hex() == "8202821b000ee8680000000101"
    # The hardy/RFC 9758 examples: 3-element with allocator 0 equals the 2-element form.
    assert eid_from_cbor([2, [0, 1, 1]]) == eid_from_cbor([2, [1, 1]])


def test_null_forms() -> None:
    assert parse_eid("dtn:none") is DTN_NONE and DTN_NONE.is_null
    assert parse_eid("ipn:0.0").is_null and not parse_eid("ipn:0.1").is_null
    assert not DtnEid("a", "").is_null
    assert DtnEid("a", "~group").is_singleton is False


@pytest.mark.parametrize(
    "text",
    [
        "dtn:", "dtn:nonе", "dtn://", "dtn:///x", "dtn://a", "dtn://a b/x", "dtn://a/\u00e9",
        "dtn://a/x y", "dtn:/a/b", "ipn:1", "ipn:1.2.3.4", "ipn:-1.2", "ipn:1.+2", "ipn: 1.2",
        "ipn:1_0.2", "ipn:\u0661.2", "ipn:1.18446744073709551616", "ipn:4294967296.1.1",
        "ipn:1.4294967296.1", "ipn:18446744073709551616.0", "http://x", "", "ipn:.1",
    ],
)
def test_invalid_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidEid):
        parse_eid(text)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ([1, 1], "dtn-ssp"),
        ([1, "none"], "dtn-ssp"),
        ([1, "dtn://x/"], "dtn-syntax"),
        ([1, "//x"], "dtn-syntax"),
        ([1, b"//x/"], "dtn-ssp"),
        ([2, [1]], "ipn-ssp"),
        ([2, [1, 2, 3, 4]], "ipn-ssp"),
        ([2, [1, True]], "ipn-ssp"),
        ([2, [1 << 32, 1, 1]], "ipn-allocator"),
        ([2, [1, 1 << 32, 1]], "ipn-node"),
        ([2, [-1, 1]], "ipn-node"),
        ([0, 0], "eid-scheme"),
        ([3, "x"], "eid-scheme"),
        ([1], "eid-structure"),
        ("dtn:none", "eid-structure"),
    ],
)
def test_invalid_cbor_values_are_refused(value: object, code: str) -> None:
    with pytest.raises(EidError) as info:
        eid_from_cbor(value)
    assert info.value.code == code


@given(eids)
def test_eid_roundtrips(eid: object) -> None:
    assert parse_eid(str(eid)) == eid
    wire = eid.wire  # type: ignore[attr-defined]
    assert read_eid(wire, 0, len(wire), 1000)[0] == eid
    assert eid_from_cbor(cbor2.loads(wire)) == eid


@given(st.integers(0, U32), st.integers(0, U32), st.integers(0, (1 << 64) - 1))
def test_ipn_text_forms(allocator: int, node: int, service: int) -> None:
    eid = IpnEid(node, service, allocator)
    assert parse_eid(f"ipn:{allocator}.{node}.{service}") == eid
    assert parse_eid(f"ipn:{allocator << 32 | node}.{service}") == eid
    assert len(eid.wire) <= 3 + 5 + 5 + 9
    assert (eid.elements == 3) == (allocator != 0)


def test_constructor_validates() -> None:
    for bad in (lambda: DtnEid(""), lambda: DtnEid("a", "\n"), lambda: IpnEid(1 << 32, 0),
                lambda: IpnEid(1, 1 << 64), lambda: IpnEid(1, 1, elements=4),
                lambda: IpnEid(True, 1)):  # type: ignore[arg-type]
        with pytest.raises(InvalidEid):
            bad()
