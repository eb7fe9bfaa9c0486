"""``fleetwire inspect``: read a bundle and say what is in it, block by block.

Like a protocol analyser, ``inspect`` does not stop at the first broken rule: a bundle that
decodes block by block but breaks a bundle-wide rule of RFC 9171 §4 (say, primary CRC type 0
without a BIB on the primary block — RFC 9173's Appendix A.1 example does that, §4.3.1 says it
must not) or carries a wrong CRC is still shown whole, with the broken rule marked. Only when
the bytes stop making sense are the blocks decoded so far shown, then the error. The exit
status is 1 whenever a rule is broken, so scripts can still rely on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fleetwire.protocol import cose
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.bpv7 import (
    BlockFlags,
    BlockType,
    Bundle,
    BundleError,
    BundleFlags,
    StatusReport,
    admin_record_of,
    decode_bundle,
)
from fleetwire.protocol.bpv7.blocks import (
    CanonicalBlock,
    PrimaryBlock,
    read_canonical_block,
    read_primary_block,
)
from fleetwire.protocol.bpv7.bundle import BUNDLE_LIMITS, check_bundle
from fleetwire.protocol.envelope import verify
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import decode_message
from fleetwire.protocol.messages.text import message_to_json

from ..node import keyfiles

HELP = """\
Decode a Bundle Protocol v7 bundle (RFC 9171) and print it readably: the primary block with
its endpoints and creation time as a date, every canonical block, and the coordination message
the payload carries with its content id. With --keys the message's signature is checked
against the fleet root and the credentials in that folder.

The bundle may be a file of raw bytes, a file or argument of hex, or standard input (-).

examples:
  fleetwire inspect bundle.bin
  fleetwire inspect 9f88070000820282...ff
  fleetwire inspect - --keys fleet/ < bundle.bin
  fleetwire inspect bundle.bin --json
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="decode a bundle and print its blocks and message",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", help="file, hex, or - for standard input")
    parser.add_argument(
        "--keys", type=Path, help="key folder: check the signature against its root"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)


def read_input(source: str) -> bytes:
    """Raw or hex bytes from a file, an argument or standard input."""
    if source == "-":
        data = sys.stdin.buffer.read()
    elif _is_hex(source.encode()):
        data = source.encode()
    else:
        data = Path(source).read_bytes()
    text = data.strip()
    if _is_hex(text):
        return bytes.fromhex(text.decode())
    return data


def _is_hex(text: bytes) -> bool:
    digits = bytes(c for c in text if c not in b" \n\r\t")
    return (
        bool(digits)
        and len(digits) % 2 == 0
        and all(c in b"0123456789abcdefABCDEF" for c in digits)
    )


def date(dtn_ms: int) -> str:
    if dtn_ms == 0:
        return "unknown (no clock at the source)"
    seconds = DTN_EPOCH_UNIX + dtn_ms / 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{dtn_ms % 1000:03d}Z"


def _flag_names(value: int, flags: type[BundleFlags] | type[BlockFlags]) -> list[str]:
    return [f.name.lower() for f in flags if f.value and f.name and value & f.value]


def _problem(error: BundleError) -> dict[str, Any]:
    return {"code": error.code, "detail": error.detail, "block": error.block, "rule": error.rule}


def read_leniently(data: bytes) -> tuple[Bundle, list[BundleError]]:
    """Decode ``data`` as far as it goes; return the bundle and every broken rule found.

    Raises :class:`BundleError` only when not even the primary block can be read.
    """
    try:
        return decode_bundle(data), []
    except BundleError:
        pass
    problems: list[BundleError] = []
    end = len(data)
    if not end or data[0] != 0x9F:
        raise BundleError("not-indefinite-array", "a bundle starts with 0x9f",
                          rule="RFC 9171 §4.1: a CBOR indefinite-length array")  # fmt: skip
    primary: PrimaryBlock
    try:
        primary, pos = read_primary_block(data, 1, end, True)
    except BundleError as error:
        primary, pos = read_primary_block(data, 1, end, False)  # raises if not CRC alone
        problems.append(error)
    blocks: list[CanonicalBlock] = []
    max_data = BUNDLE_LIMITS.max_string_length
    try:
        while pos < end and data[pos] != 0xFF and len(blocks) < BUNDLE_LIMITS.max_container_items:
            index = len(blocks) + 1
            try:
                block, pos = read_canonical_block(data, pos, end, max_data, index, True)
            except BundleError as error:
                block, pos = read_canonical_block(data, pos, end, max_data, index, False)
                problems.append(error)
            blocks.append(block)
        if pos >= end:
            problems.append(BundleError("truncated", "the bundle has no break stop code",
                                        rule="RFC 9171 §4.1"))  # fmt: skip
        elif data[pos] == 0xFF and pos + 1 != end:
            problems.append(BundleError("trailing-bytes", f"{end - pos - 1} bytes after the break",
                                        rule="RFC 9171 §4.1: the break terminates the bundle"))  # fmt: skip
    except BundleError as error:  # the bytes stopped making sense: show what came before
        problems.append(error)
    bundle = Bundle(primary, tuple(blocks))
    try:
        check_bundle(bundle, BundleError)
    except BundleError as error:
        problems.append(error)
    return bundle, problems


def describe(bundle: Bundle, keys: Path | None, now: int) -> dict[str, Any]:
    primary = bundle.primary
    out: dict[str, Any] = {
        "primary": {
            "destination": str(primary.destination),
            "source": str(primary.source),
            "report_to": str(primary.report_to),
            "created": date(primary.creation.time),
            "sequence": primary.creation.sequence,
            "lifetime_ms": primary.lifetime,
            "flags": _flag_names(int(primary.flags), BundleFlags),
            "crc": primary.crc_type.name,
        },
        "blocks": [],
    }
    if primary.is_fragment:
        out["primary"]["fragment"] = {
            "offset": primary.fragment_offset,
            "total": primary.total_adu_length,
        }
    for block in bundle.blocks:
        try:
            kind = BlockType(block.block_type).name.lower()
        except ValueError:
            kind = f"unknown ({block.block_type})"
        entry: dict[str, Any] = {
            "number": block.number,
            "type": kind,
            "bytes": len(block.data),
            "flags": _flag_names(int(block.flags), BlockFlags),
            "crc": block.crc_type.name,
        }
        try:
            if block.block_type == BlockType.HOP_COUNT and bundle.hop_count is not None:
                entry["hops"] = f"{bundle.hop_count.count} of {bundle.hop_count.limit}"
            elif block.block_type == BlockType.PREVIOUS_NODE:
                entry["node"] = str(bundle.previous_node)
            elif block.block_type == BlockType.BUNDLE_AGE:
                entry["age_ms"] = bundle.bundle_age
        except BundleError as error:
            entry["error"] = f"{error.code}: {error.detail}"
        out["blocks"].append(entry)
    if bundle.blocks and bundle.blocks[-1].block_type == BlockType.PAYLOAD:
        try:
            out["payload"] = describe_payload(bundle, keys, now)
        except BundleError as error:
            out["payload"] = {"error": f"{error.code}: {error.detail}"}
    else:
        out["payload"] = {"missing": "no payload block was decoded"}
    return out


def describe_payload(bundle: Bundle, keys: Path | None, now: int) -> dict[str, Any]:
    if bundle.primary.is_admin_record:
        record = admin_record_of(bundle)
        if isinstance(record, StatusReport):
            return {
                "status_report": {
                    "subject": str(record.subject.source),
                    "reason": int(record.reason),
                }
            }
        return {"admin_record": repr(record)}
    try:
        envelope = cose.parse_sign1(bundle.payload)
    except FleetwireError as exc:
        return {"opaque": f"{len(bundle.payload)} bytes, not a COSE_Sign1 ({exc.code})"}
    result: dict[str, Any] = {
        "content_id": str(ContentId.of(envelope.payload)),
        "signed_by": envelope.kid.hex() if isinstance(envelope.kid, bytes) else None,
    }
    try:
        result["message"] = message_to_json(decode_message(envelope.payload))
    except FleetwireError as exc:
        result["message_error"] = f"{exc.code}: {exc}"
    if keys is None:
        result["signature"] = "not checked (pass --keys FOLDER)"
    else:
        try:
            verify(bundle.payload, keyfiles.load_trust(keys, now), now)
            result["signature"] = "valid, signer trusted"
        except FleetwireError as exc:
            result["signature"] = f"REFUSED {exc.code}: {exc}"
    return result


def run(args: argparse.Namespace) -> int:
    data = read_input(args.bundle)
    bundle, problems = read_leniently(data)
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    info = describe(bundle, args.keys, now)
    info["broken_rules"] = [_problem(p) for p in problems]
    status = 1 if problems else 0
    if args.json:
        print(json.dumps(info, indent=2))
        return status
    p = info["primary"]
    print(f"bundle {len(data)} bytes, BPv7, primary CRC {p['crc']}")
    print(f"  from     {p['source']}")
    print(f"  to       {p['destination']}   (reports to {p['report_to']})")
    print(f"  created  {p['created']}  #{p['sequence']}, lifetime {p['lifetime_ms'] / 1000:g} s")
    if p["flags"]:
        print(f"  flags    {', '.join(p['flags'])}")
    for block in info["blocks"]:
        extra = {
            k: v for k, v in block.items() if k not in ("number", "type", "bytes", "flags", "crc")
        }
        detail = "  ".join(f"{k}={v}" for k, v in extra.items())
        print(
            f"  block {block['number']:>3} {block['type']:<14} {block['bytes']:>6} B  {block['crc']:<7} {detail}"
        )
    payload = info["payload"]
    if "message" in payload:
        message = payload["message"]
        print(f"message {message['type']}  content id {payload['content_id']}")
        print(f"  signed by {payload['signed_by']}: {payload['signature']}")
        for key, value in message.items():
            if key != "type":
                print(f"  {key:<14} {json.dumps(value)}")
    else:
        for key, value in payload.items():
            print(f"payload {key}: {value}")
    for problem in info["broken_rules"]:
        where = "" if problem["block"] is None else f" (block {problem['block']})"
        print(f"BROKEN {problem['code']}{where}: {problem['detail']} — {problem['rule']}")
    return status
