"""BPv7 interoperability with pyd3tn 0.15.2, an independent implementation in its own process.

Both directions, in one subprocess call each way (JSON over stdin/stdout):

* bundles pyd3tn builds — both CRC types, ipn (2- and 3-element) and dtn EIDs, Previous Node,
  Bundle Age and Hop Count blocks, fragments — decode here with our CRC check, carry the fields
  they were built from, and re-encode to pyd3tn's exact bytes;
* bundles we build parse in pyd3tn with the same fields, and pyd3tn's own CRC computation over
  each block equals the CRC we wrote.

Status reports cross both ways too. pyd3tn cannot parse block types it does not know, so opaque
blocks stay out of the bundles sent to it.
"""

from __future__ import annotations

import json
import random
from typing import Any

import cbor2
import pytest
from fleetwire.protocol.bpv7 import (
    BlockType,
    Bundle,
    BundleId,
    CrcType,
    CreationTimestamp,
    PrimaryBlock,
    StatusAssertion,
    StatusReason,
    StatusReport,
    admin_record_of,
    bundle_age_block,
    decode_admin_record,
    decode_bundle,
    encode_bundle,
    hop_count_block,
    parse_eid,
    payload_block,
    previous_node_block,
    status_report_bundle,
)
from fleetwire.protocol.bpv7.blocks import read_primary_block
from fleetwire.protocol.bpv7.extensions import HopCount

pytestmark = pytest.mark.interop

PEER = r'''
import json, sys
import cbor2
from pyd3tn.bundle7 import (
    EID, Bundle, BundleProcFlag, BlockProcFlag, CRCType, CreationTimestamp, PrimaryBlock,
    PayloadBlock, PreviousNodeBlock, CBORBlock, HopCountBlock, BundleStatusReport, ReasonCode,
)

def eid_json(e):
    return [e[0], list(e[1]) if isinstance(e[1], tuple) else e[1]]

def crc_of(block):
    return block.calculate_crc() if block.crc_type != CRCType.NONE else None

def make(spec):
    frag = spec["fragment"]
    primary = PrimaryBlock(
        bundle_proc_flags=BundleProcFlag(spec["flags"]), crc_type=CRCType(spec["crc_primary"]),
        destination=spec["dst"], source=spec["src"], report_to=spec["rpt"],
        creation_time=tuple.__new__(CreationTimestamp, [spec["time"], spec["seq"]]),
        lifetime=spec["lifetime"], fragment_offset=frag and frag[0],
        total_payload_length=frag and frag[1])
    cc = CRCType(spec["crc_canonical"])
    blocks = []
    for b in spec["blocks"]:
        kw = dict(block_number=b["num"], block_proc_flags=BlockProcFlag(b["flags"]), crc_type=cc)
        if b["type"] == 6:
            blocks.append(PreviousNodeBlock(b["value"], **kw))
        elif b["type"] == 7:
            blocks.append(CBORBlock(7, b["value"], **kw))
        else:
            blocks.append(HopCountBlock(b["value"][0], b["value"][1], **kw))
    payload = PayloadBlock(bytes.fromhex(spec["payload"]), crc_type=cc)
    return bytes(Bundle(primary, payload, blocks)).hex()

def read(hexdata):
    bundle = Bundle.parse(bytes.fromhex(hexdata))
    p = bundle.primary_block
    out = {"flags": int(p.bundle_proc_flags), "crc_type": int(p.crc_type),
           "dst": eid_json(p.destination), "src": eid_json(p.source), "rpt": eid_json(p.report_to),
           "time": p.creation_time[0], "seq": p.creation_time[1], "lifetime": p.lifetime,
           "fragment": [p.fragment_offset, p.total_payload_length]
                       if p.fragment_offset is not None else None,
           "crc_provided": p.crc_provided, "crc_computed": crc_of(p), "blocks": []}
    for b in bundle.blocks + [bundle.payload_block]:
        out["blocks"].append({"type": int(b.block_type), "num": b.block_number,
                              "flags": int(b.block_proc_flags), "crc_type": int(b.crc_type),
                              "data": b.data.hex(), "crc_provided": b.crc_provided,
                              "crc_computed": crc_of(b)})
    return out

def make_report(spec):
    subject = Bundle(PrimaryBlock(source=spec["src"], destination="ipn:9.9", report_to="ipn:9.0",
                                  creation_time=tuple.__new__(CreationTimestamp, spec["ts"])),
                     PayloadBlock(b"x"))
    report = BundleStatusReport(spec["status"], ReasonCode(spec["reason"]), subject.primary_block.source,
                                subject.primary_block.creation_time)
    return report.data.hex()

def read_report(hexdata):
    rec = Bundle.parse_administrative_record(bytes.fromhex(hexdata))
    data = rec["record_data"]
    return {"type": rec["record_type"], "status": [item[0] for item in data[0]],
            "reason": data[1], "src": eid_json(data[2]), "ts": list(data[3])}

job = json.load(sys.stdin)
json.dump({"made": [make(s) for s in job["make"]], "read": [read(h) for h in job["read"]],
           "reports_made": [make_report(s) for s in job["make_reports"]],
           "reports_read": [read_report(h) for h in job["read_reports"]]}, sys.stdout)
'''

EIDS = ["ipn:1.1", "ipn:977000.5.1", "ipn:0.12.3", "ipn:4196183048192001.7", "ipn:2.0",
        "dtn://ground-station/fleet", "dtn://relay.7/", "dtn://n/~tilde", "ipn:4294967295.18446744073709551615"]
NODE_EIDS = ["ipn:3.0", "dtn://relay.7/", "ipn:977000.5.0"]
YEAR_2024 = 757_382_400_000  # DTN time of 2024-01-01


def _specs(count: int) -> list[dict[str, Any]]:
    rng = random.Random(9171)
    specs = []
    for index in range(count):
        payload = rng.randbytes(rng.choice([0, 1, 37, 300, 2000]))
        flags = rng.choice([0, 0x4, 0x20, 0x40, 0x4000 | 0x20000, 0x2])
        fragment = None
        if payload and index % 5 == 0:
            flags |= 0x1
            offset = rng.randrange(0, 10_000)
            fragment = [offset, offset + len(payload) + rng.randrange(0, 500)]
        time = 0 if index % 7 == 3 else YEAR_2024 + rng.randrange(0, 10**11)
        numbers = rng.sample(range(2, 40), 3)
        blocks = []
        if rng.random() < 0.5:
            blocks.append({"type": 10, "num": numbers[0], "flags": rng.choice([0, 1, 0x10]),
                           "value": [rng.randrange(1, 256), rng.randrange(0, 300)]})
        if rng.random() < 0.5:
            blocks.append({"type": 6, "num": numbers[1], "flags": 0, "value": rng.choice(NODE_EIDS)})
        if time == 0 or rng.random() < 0.4:
            blocks.append({"type": 7, "num": numbers[2], "flags": rng.choice([0, 4]),
                           "value": rng.randrange(0, 10**9)})
        if flags & 0x2:  # an admin record asks for no reports and no "report if unprocessable"
            blocks = [dict(b, flags=b["flags"] & ~0x2) for b in blocks]
        specs.append({
            "flags": flags, "crc_primary": [1, 2][index % 2],
            "crc_canonical": [1, 2][(index // 2) % 2],
            "dst": rng.choice(EIDS), "src": rng.choice(EIDS[:-1]), "rpt": rng.choice(EIDS),
            "time": time, "seq": rng.randrange(0, 1 << 40), "lifetime": rng.randrange(1, 10**10),
            "fragment": fragment, "blocks": blocks, "payload": payload.hex(),
        })
    return specs


def _ours(spec: dict[str, Any]) -> Bundle:
    frag = spec["fragment"]
    primary = PrimaryBlock(
        parse_eid(spec["dst"]), parse_eid(spec["src"]), parse_eid(spec["rpt"]),
        CreationTimestamp(spec["time"], spec["seq"]), spec["lifetime"], spec["flags"],
        CrcType(spec["crc_primary"]), frag and frag[0], frag and frag[1],
    )
    crc = CrcType(spec["crc_canonical"])
    blocks = []
    for b in spec["blocks"]:
        if b["type"] == 6:
            blocks.append(previous_node_block(b["num"], parse_eid(b["value"]), crc, b["flags"]))
        elif b["type"] == 7:
            blocks.append(bundle_age_block(b["num"], b["value"], crc, b["flags"]))
        else:
            blocks.append(hop_count_block(b["num"], HopCount(*b["value"]), crc, b["flags"]))
    return Bundle(primary, (*blocks, payload_block(bytes.fromhex(spec["payload"]), crc)))


def _wire_eid(text: str) -> list[Any]:
    value: list[Any] = cbor2.loads(parse_eid(text).wire)
    return value


def _peer_eid(text: str) -> list[Any]:
    """The CBOR pyd3tn writes for an EID text: its own reading of the text."""
    scheme, _, ssp = text.partition(":")
    if scheme == "ipn":
        return [2, [int(part) for part in ssp.split(".")]]
    return [1, 0 if ssp == "none" else ssp]


@pytest.fixture(scope="module")
def exchange(run_pyd3tn: Any) -> dict[str, Any]:
    specs = _specs(64)
    ours = [encode_bundle(_ours(spec)).hex() for spec in specs]
    reports = [
        StatusReport(BundleId(parse_eid("ipn:5.1"), CreationTimestamp(YEAR_2024 + n, n)),
                     StatusReason(n % 12), received=StatusAssertion(n % 2 == 0),
                     delivered=StatusAssertion(n % 3 == 0), deleted=StatusAssertion(n % 5 == 0))
        for n in range(8)
    ]
    report_specs = [{"src": "ipn:5.1", "ts": [YEAR_2024 + n, n], "status": [1, 4, 8, 0x10][n % 4],
                     "reason": n % 11} for n in range(8)]
    job = {"make": specs, "read": ours, "make_reports": report_specs,
           "read_reports": [r.to_payload().hex() for r in reports]}
    result = run_pyd3tn(PEER, input=json.dumps(job).encode())
    answer: dict[str, Any] = json.loads(result.stdout)
    answer.update(specs=specs, ours=ours, reports=reports, report_specs=report_specs)
    return answer


def test_pyd3tn_bundles_decode_here_with_their_fields_and_crcs(exchange: dict[str, Any]) -> None:
    crc_types = set()
    for spec, made in zip(exchange["specs"], exchange["made"], strict=True):
        data = bytes.fromhex(made)
        bundle = decode_bundle(data)  # verifies every CRC pyd3tn wrote
        assert encode_bundle(bundle) == data  # same fields, same encodings, same CRCs
        primary = bundle.primary
        assert cbor2.loads(primary.destination.wire) == _peer_eid(spec["dst"])
        assert cbor2.loads(primary.source.wire) == _peer_eid(spec["src"])
        assert cbor2.loads(primary.report_to.wire) == _peer_eid(spec["rpt"])
        assert primary.destination == parse_eid(spec["dst"])
        assert (primary.creation.time, primary.creation.sequence) == (spec["time"], spec["seq"])
        assert (primary.lifetime, int(primary.flags)) == (spec["lifetime"], spec["flags"])
        assert primary.crc_type == spec["crc_primary"]
        frag = spec["fragment"]
        assert [primary.fragment_offset, primary.total_adu_length] == (frag or [None, None])
        assert bundle.payload == bytes.fromhex(spec["payload"])
        by_type = {b["type"]: b for b in spec["blocks"]}
        if 10 in by_type:
            assert bundle.hop_count == HopCount(*by_type[10]["value"])
        if 6 in by_type:
            assert bundle.previous_node == parse_eid(by_type[6]["value"])
        if 7 in by_type:
            assert bundle.bundle_age == by_type[7]["value"]
        for block in bundle.blocks:
            assert block.crc_type == spec["crc_canonical"]
            if block.block_type != BlockType.PAYLOAD:
                assert (block.number, block.flags) == (by_type[block.block_type]["num"],
                                                       by_type[block.block_type]["flags"])
        crc_types.add((spec["crc_primary"], spec["crc_canonical"]))
    assert crc_types == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_our_bundles_parse_in_pyd3tn_with_the_same_fields(exchange: dict[str, Any]) -> None:
    fragments = 0
    for spec, ours, seen in zip(exchange["specs"], exchange["ours"], exchange["read"], strict=True):
        bundle = decode_bundle(bytes.fromhex(ours))
        assert seen["dst"] == _wire_eid(spec["dst"]) and seen["src"] == _wire_eid(spec["src"])
        assert seen["rpt"] == _wire_eid(spec["rpt"])
        assert (seen["time"], seen["seq"], seen["lifetime"]) == (
            spec["time"], spec["seq"], spec["lifetime"])
        assert (seen["flags"], seen["crc_type"]) == (spec["flags"], spec["crc_primary"])
        assert seen["fragment"] == spec["fragment"]
        fragments += seen["fragment"] is not None
        # pyd3tn's own CRC over our primary block equals the CRC we wrote.
        assert seen["crc_computed"] == seen["crc_provided"] is not None
        assert seen["crc_provided"] == int.from_bytes(_primary_crc(bytes.fromhex(ours)), "big")
        theirs = {b["num"]: b for b in seen["blocks"]}
        assert set(theirs) == {b.number for b in bundle.blocks}
        for block in bundle.blocks:
            peer = theirs[block.number]
            assert (peer["type"], peer["flags"], peer["crc_type"]) == (
                block.block_type, block.flags, block.crc_type)
            assert bytes.fromhex(peer["data"]) == block.data
            assert peer["crc_computed"] == peer["crc_provided"] is not None
    assert fragments > 0


def _primary_crc(data: bytes) -> bytes:
    """The CRC value bytes at the end of the primary block of ``data``."""
    primary, end = read_primary_block(data, 1, len(data))
    return data[end - (2 if primary.crc_type == CrcType.CRC16 else 4) : end]


def test_status_reports_cross_both_ways(exchange: dict[str, Any]) -> None:
    for report, seen in zip(exchange["reports"], exchange["reports_read"], strict=True):
        assert seen["type"] == 1
        assert seen["status"] == [report.received.asserted, report.forwarded.asserted,
                                  report.delivered.asserted, report.deleted.asserted]
        assert seen["reason"] == report.reason
        assert seen["src"] == cbor2.loads(report.subject.source.wire)
        assert seen["ts"] == [report.subject.creation.time, report.subject.creation.sequence]
    for spec, made in zip(exchange["report_specs"], exchange["reports_made"], strict=True):
        bundle = status_report_bundle(
            _decode_report(made), source=parse_eid("ipn:9.0"), destination=parse_eid("ipn:5.0"),
            creation=CreationTimestamp(YEAR_2024, 1), lifetime=1000)
        report = admin_record_of(decode_bundle(encode_bundle(bundle)))
        assert isinstance(report, StatusReport)
        flags = [report.received, report.forwarded, report.delivered, report.deleted]
        assert [f.asserted for f in flags] == [spec["status"] == s for s in (1, 4, 8, 0x10)]
        assert report.reason == spec["reason"]
        assert report.subject == BundleId(parse_eid(spec["src"]), CreationTimestamp(*spec["ts"]))


def _decode_report(hexdata: str) -> StatusReport:
    report = decode_admin_record(bytes.fromhex(hexdata))
    assert isinstance(report, StatusReport)
    return report

