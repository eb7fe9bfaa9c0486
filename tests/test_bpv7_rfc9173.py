"""The example bundles of RFC 9173 Appendix A.

Their primary and payload blocks parse; BIB and BCB blocks stay opaque. The examples carry no
CRCs (CRC type 0 everywhere). RFC 9171 §4.3.1 allows that on the primary block only when a BIB
targets the primary block, which is the case in A.3 alone; every other example bundle is refused
for exactly that rule, naming it.
"""

from __future__ import annotations

import json

import pytest
from fleetwire.protocol.bpv7 import (
    BlockType,
    BundleError,
    CrcType,
    IpnEid,
    decode_bundle,
    decode_canonical_block,
    decode_primary_block,
    encode_bundle,
    encode_canonical_block,
    encode_primary_block,
)

from tests.conftest import VECTORS

CASES = json.loads((VECTORS / "rfc9173" / "rfc9173_appendixA_vectors.json").read_text())
PAYLOAD = b"Ready to generate a 32-byte payload"


def _cases(word: str) -> list[dict[str, str]]:
    return [case for case in CASES if word in case["section"]]


@pytest.mark.parametrize("case", _cases("Primary Block"), ids=lambda c: c["section"])
def test_primary_blocks_parse_and_reencode(case: dict[str, str]) -> None:
    data = bytes.fromhex(case["hex"])
    primary = decode_primary_block(data)
    assert primary.destination == IpnEid(1, 2)
    assert primary.source == primary.report_to == IpnEid(2, 1)
    assert (primary.creation.time, primary.creation.sequence) == (0, 40)
    assert primary.lifetime == 1_000_000 and primary.crc_type == CrcType.NONE
    assert encode_primary_block(primary) == data


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["kind"] == "cbor" and "Primary" not in c["section"]
             and "Bundle" not in c["section"] and "Final" not in c["section"]],
    ids=lambda c: c["section"],
)
def test_canonical_blocks_parse_and_reencode(case: dict[str, str]) -> None:
    data = bytes.fromhex(case["hex"])
    block = decode_canonical_block(data)
    if block.block_type == BlockType.PAYLOAD:
        assert block.number == 1 and block.data == PAYLOAD
    assert block.block_type in (BlockType.PAYLOAD, BlockType.BUNDLE_AGE, BlockType.BIB,
                                BlockType.BCB)
    assert encode_canonical_block(block) == data


BUNDLES = [c for c in CASES if "Bundle CBOR" in c["section"] or "Final" in c["section"]]


@pytest.mark.parametrize("case", BUNDLES, ids=lambda c: c["section"])
def test_bundles_follow_the_primary_crc_rule(case: dict[str, str]) -> None:
    data = bytes.fromhex(case["hex"])
    if case["section"] == "A.3.5 Final Bundle":
        bundle = decode_bundle(data)  # its BIB targets blocks 0 and 2: no CRC needed
        assert [b.block_type for b in bundle.blocks] == [BlockType.BIB, BlockType.BCB,
                                                         BlockType.BUNDLE_AGE, BlockType.PAYLOAD]
        assert bundle.bundle_age == 300
        assert encode_bundle(bundle) == data
        return
    with pytest.raises(BundleError) as info:
        decode_bundle(data)
    assert info.value.code == "primary-crc-missing"
    assert info.value.block == 0 and "§4.3.1" in info.value.rule
