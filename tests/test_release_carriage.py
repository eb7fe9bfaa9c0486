"""The release service's framing, holdings and node reports: round trips, bounds, hostile
bytes met with typed errors (spec v3 release §5.5)."""

from __future__ import annotations

import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import FleetwireError, UntrustedKey
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.carriage import (
    MAX_HOLDINGS,
    Holdings,
    Kind,
    NodeReport,
    decode_carriage,
    encode_carriage,
    verify_report,
)
from fleetwire.protocol.release.errors import ReleaseFormatError
from fleetwire.protocol.release.manifest import MAX_CHUNK_SIZE
from hypothesis import given
from hypothesis import strategies as st

from .fleet import T0, node_key
from .release_support import release_trust

TRUST = release_trust([1, 2])
RELEASE = ContentId.of(b"a release")


def test_carriage_round_trips_and_refuses_unknown_kinds_and_oversize_bodies() -> None:
    assert decode_carriage(encode_carriage(Kind.HOLDINGS, b"xyz")) == (Kind.HOLDINGS, b"xyz")
    with pytest.raises(ReleaseFormatError, match="kind 9 is not known"):
        decode_carriage(cbor.encode([9, b""]))
    with pytest.raises(ReleaseFormatError):
        decode_carriage(cbor.encode([3, b"x" * (MAX_CHUNK_SIZE + 1024)]))
    with pytest.raises(ReleaseFormatError, match=r"\[kind, body: bstr\]"):
        decode_carriage(cbor.encode([3, "text"]))


def test_holdings_are_bounded_and_distinct() -> None:
    ids = frozenset(ContentId.of(b"%d" % i) for i in range(3))
    assert Holdings.from_payload(Holdings(ids).to_payload()).chunks == ids
    assert Holdings.from_payload(Holdings(frozenset()).to_payload()).chunks == frozenset()
    too_many = [ContentId.of(b"%d" % i).raw for i in range(MAX_HOLDINGS + 1)]
    with pytest.raises(ReleaseFormatError):
        Holdings.from_payload(cbor.encode({1: too_many}))


def test_a_node_report_verifies_only_under_its_own_nodes_key() -> None:
    report = NodeReport(1, T0, RELEASE, 5, True, agreed=10, passed=1)
    assert verify_report(report.sign(node_key(1)), TRUST, T0) == report
    with pytest.raises(UntrustedKey) as refused:  # node 2 signs a report naming node 1
        verify_report(report.sign(node_key(2)), TRUST, T0)
    assert refused.value.code == "issuer-mismatch"


@given(st.binary(max_size=300))
def test_decoders_meet_hostile_bytes_with_typed_errors(data: bytes) -> None:
    for decode in (decode_carriage, Holdings.from_payload, NodeReport.from_payload):
        try:
            decode(data)
        except ReleaseFormatError:
            pass
    try:
        verify_report(data, TRUST, T0)
    except FleetwireError:
        pass
