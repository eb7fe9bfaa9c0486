"""Administrative records and bundle status reports (RFC 9171 §6.1)."""

from __future__ import annotations

import attrs
import cbor2
import pytest
from fleetwire.protocol.bpv7 import (
    Bundle,
    BundleError,
    BundleFlags,
    BundleId,
    CreationTimestamp,
    InvalidBundle,
    StatusAssertion,
    StatusReason,
    StatusReport,
    UnknownAdminRecord,
    admin_record_of,
    decode_admin_record,
    decode_bundle,
    encode_bundle,
    parse_eid,
    status_report_bundle,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.test_bpv7_bundle import eids

U64 = (1 << 64) - 1
times = st.one_of(st.none(), st.integers(0, U64))


@st.composite
def assertions(draw: st.DrawFn) -> StatusAssertion:
    asserted = draw(st.booleans())
    return StatusAssertion(asserted, draw(times) if asserted else None)


@st.composite
def reports(draw: st.DrawFn) -> StatusReport:
    fragment = draw(st.booleans())
    subject = BundleId(
        draw(eids), CreationTimestamp(draw(st.integers(0, U64)), draw(st.integers(0, U64))),
        draw(st.integers(0, U64)) if fragment else None,
        draw(st.integers(0, U64)) if fragment else None,
    )
    return StatusReport(subject, draw(st.integers(0, 255)), draw(assertions()),
                        draw(assertions()), draw(assertions()), draw(assertions()))


@given(reports())
def test_status_report_roundtrip(report: StatusReport) -> None:
    payload = report.to_payload()
    assert decode_admin_record(payload) == report
    assert cbor2.loads(payload)[0] == 1


def test_status_report_layout() -> None:
    subject = BundleId(parse_eid("ipn:5.1"), CreationTimestamp(1000, 2))
    report = StatusReport(subject, StatusReason.HOP_LIMIT_EXCEEDED,
                          deleted=StatusAssertion(True, 2000))
    assert cbor2.loads(report.to_payload()) == [
        1, [[[False], [False], [False], [True, 2000]], 9, [2, [5, 1]], [1000, 2]]]
    fragment = BundleId(subject.source, subject.creation, 10, 20)
    assert len(cbor2.loads(StatusReport(fragment).to_payload())[1]) == 6


def test_status_report_bundle() -> None:
    report = StatusReport(BundleId(parse_eid("ipn:5.1"), CreationTimestamp(1000, 2)),
                          received=StatusAssertion(True))
    bundle = status_report_bundle(report, source=parse_eid("ipn:7.0"),
                                  destination=parse_eid("ipn:5.0"),
                                  creation=CreationTimestamp(5000, 0), lifetime=60_000)
    decoded = decode_bundle(encode_bundle(bundle))
    assert decoded.primary.flags & BundleFlags.ADMIN_RECORD
    assert admin_record_of(decoded) == report
    plain = Bundle(attrs.evolve(decoded.primary, flags=BundleFlags.NONE), decoded.blocks)
    with pytest.raises(BundleError) as info:
        admin_record_of(plain)
    assert "§4.2.3" in info.value.rule


def test_unknown_record_types_are_kept() -> None:
    payload = cbor2.dumps([64443, [0, 0, b"inner"]])  # BIBE PDU: not interpreted here
    assert decode_admin_record(payload) == UnknownAdminRecord(64443, payload)


@pytest.mark.parametrize(
    "record",
    [
        [1], [1, 2, 3], ["x", []], [1, []], [1, [[[True]] * 3, 0, [1, 0], [0, 0]]],
        [1, [[[True], [False], [False], [False]], -1, [1, 0], [0, 0]]],
        [1, [[[True], [False], [False], [False]], 0, [9, 0], [0, 0]]],
        [1, [[[True], [False], [False], [False]], 0, [1, 0], [0]]],
        [1, [[[False, 5], [False], [False], [False]], 0, [1, 0], [0, 0]]],
        [1, [[[1], [False], [False], [False]], 0, [1, 0], [0, 0]]],
        [1, [[[True], [False], [False], [False]], 0, [1, 0], [0, 0], 5]],
        [1, [[[True], [False], [False], [False]], 0, [1, 0], [0, 0], 5, "x"]],
    ],
)
def test_malformed_records_are_refused(record: object) -> None:
    with pytest.raises(BundleError):
        decode_admin_record(cbor2.dumps(record))


@given(st.binary(max_size=200))
def test_arbitrary_payloads_raise_only_typed_errors(data: bytes) -> None:
    try:
        decode_admin_record(data)
    except BundleError:
        pass


def test_time_without_assertion_is_a_local_error() -> None:
    report = StatusReport(BundleId(parse_eid("ipn:5.1"), CreationTimestamp(1, 2)),
                          received=StatusAssertion(False, 5))
    with pytest.raises(InvalidBundle):
        report.to_payload()
