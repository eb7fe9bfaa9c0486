"""Generate the language-agnostic test vectors of protocol version 1 (spec/vectors/v1/).

Usage::

    python spec/generate_vectors.py           # (re)write the files
    python spec/generate_vectors.py --check   # exit 1 if the files differ from a fresh run

The output is deterministic (fixed messages, fixed test key, Ed25519 signatures are
deterministic, JSON written with a fixed layout), so regenerating gives identical files.
A released version is frozen: once v1 is released, this script may only add vectors, and
``tests/test_spec_vectors.py`` proves the committed files equal what it writes.

The error code of every invalid vector is what the spec (spec/v1/protocol.md §9) requires,
written here by hand; it is *not* copied from what fleetwire happens to raise. The runner
(``fleetwire.conformance.vectors``) compares an implementation with these files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from fleetwire.protocol import cbor, errors
from fleetwire.protocol.cose import PROTECTED_EDDSA, sig_structure, sign1
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseClaim,
    LeaseExpiry,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    LeaseRevoke,
    Message,
    Scope,
    Terms,
    UnknownMessageType,
    encode_message,
)
from fleetwire.protocol.messages.header import HEADER_FIELDS
from fleetwire.protocol.messages.schema import Field, Struct

VERSION = 1
OUT = Path(__file__).resolve().parent / "vectors" / f"v{VERSION}"
FORMAT = "fleetwire-vectors/1"

# --- fixed content ---------------------------------------------------------------------

#: RFC 8032 §7.1 TEST 1 secret key (the same key as the COSE WG EdDSA examples).
TEST_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
#: A second fixed key, only used to name a kid that is not the signer's.
OTHER_SEED = bytes(range(32))


def cid(label: str) -> ContentId:
    """A fixed content id: the id of the label's UTF-8 bytes."""
    return ContentId.of(label.encode())


T0 = 817_000_000_000  # DTN ms: 2025-11-22T00:26:40Z
HEADER = Header(issuer=7, issued_at=T0, sequence=3)


def header(**changes: Any) -> Header:
    values = {"issuer": 7, "issued_at": T0, "sequence": 3}
    values.update(changes)
    return Header(**values)


CLAIM = LeaseClaim(
    header=HEADER, resource="feedstock/2026-XY/volume-3", term_ms=3_600_000, priority=2
)
OFFER = Commitment(
    header=header(issuer=12, sequence=40),
    state=CommitmentState.OFFERED,
    terms=Terms(
        promisor=12,
        promisee=7,
        action="deliver/refined-carbon",
        quantity=120_000,
        unit="kg",
        deadline=T0 + 12 * 86_400_000,
        rests_on=(cid("capability of node 12"),),
    ),
)
OFFER_ID = ContentId.of(encode_message(OFFER))
GRANT = LeaseGrant(
    header=header(issuer=2, sequence=900, references=(ContentId.of(encode_message(CLAIM)),)),
    resource=CLAIM.resource,
    holder=7,
    claim=ContentId.of(encode_message(CLAIM)),
    fencing_token=41,
    term_ms=3_600_000,
    expires_at=T0 + 3_600_000,
)
GRANT_ID = ContentId.of(encode_message(GRANT))
REVOKE = LeaseRevoke(
    header=header(issuer=2, sequence=901),
    resource=CLAIM.resource,
    fencing_token=41,
    holder=7,
    effective_at=T0 + 60_000,
    reason="cell coordinator hand-over",
)
REPORT = ExceptionReport(
    header=header(sequence=4),
    code=1,
    severity=3,
    scope=Scope.CELL,
    scope_id=3,
    affects=(OFFER_ID,),
    digest=cid("thermal digest"),
    detail="radiator loop B at 341 K",
)


def valid_messages() -> list[tuple[str, str, Message]]:
    """(id, description, message) of every valid vector."""
    cap = Capability("refine/carbonaceous", 40_000, "kg", T0, T0 + 30 * 86_400_000)
    return [
        (
            "capability-advertisement/full",
            "two capabilities, versions 1..1, lineage, cell",
            CapabilityAdvertisement(
                header=header(issuer=12, sequence=1),
                capabilities=(cap, Capability("haul/bulk", 250_000, "kg", T0, T0 + 86_400_000)),
                versions=(1, 1),
                lineage="B",
                cell=3,
            ),
        ),
        (
            "capability-advertisement/minimal",
            "no capabilities, no cell (optional key 11 absent), a reader of versions 1..3",
            CapabilityAdvertisement(
                header=header(issuer=13, sequence=0), capabilities=(), versions=(1, 3), lineage=""
            ),
        ),
        ("commitment/offered", "an offer carries terms, resting on a capability", OFFER),
        (
            "commitment/offered-minimal",
            "an offer whose terms rest on nothing (terms key 6 absent)",
            Commitment(
                header=header(issuer=12, sequence=41),
                state=CommitmentState.OFFERED,
                terms=Terms(12, 7, "deliver/water", 5, "t", T0 + 86_400_000),
            ),
        ),
        (
            "commitment/accepted",
            "the promisee accepts: names the offer, references it in the header",
            Commitment(
                header=header(sequence=5, references=(OFFER_ID,)),
                state=CommitmentState.ACCEPTED,
                commitment=OFFER_ID,
            ),
        ),
        (
            "commitment/fulfilled",
            "the promisor reports the commitment done",
            Commitment(
                header=header(issuer=12, sequence=60),
                state=CommitmentState.FULFILLED,
                commitment=OFFER_ID,
            ),
        ),
        (
            "commitment/broken",
            "the promisor reports it cannot keep the commitment, with a reason",
            Commitment(
                header=header(issuer=12, sequence=61, references=(REPORT_ID,)),
                state=CommitmentState.BROKEN,
                commitment=OFFER_ID,
                reason="thermal fault, see exception report",
            ),
        ),
        (
            "commitment/withdrawn",
            "the promisor withdraws an offer not yet accepted",
            Commitment(
                header=header(issuer=12, sequence=62),
                state=CommitmentState.WITHDRAWN,
                commitment=OFFER_ID,
            ),
        ),
        (
            "exception-report/full",
            "severity 3, cell scope, affects a commitment, digest, detail",
            REPORT,
        ),
        (
            "exception-report/minimal",
            "severity 1 (advisory), node scope, optional keys 12..14 absent",
            ExceptionReport(
                header=header(sequence=6), code=0, severity=1, scope=Scope.NODE, scope_id=7
            ),
        ),
        (
            "exception-report/escalated",
            "severity 5, region scope, an unknown exception code kept as a number",
            ExceptionReport(
                header=header(issuer=3, sequence=2, references=(cid("cell report"),)),
                code=4000,
                severity=5,
                scope=Scope.REGION,
                scope_id=1,
            ),
        ),
        ("lease-claim/basic", "a claim for one hour at priority 2", CLAIM),
        (
            "lease-claim/limits",
            "uint64 maximum values and a 256-byte UTF-8 resource name (128 two-byte characters)",
            LeaseClaim(
                header=header(issuer=2**64 - 1, issued_at=2**64 - 1, sequence=2**64 - 1),
                resource="é" * 128,
                term_ms=2**64 - 1,
                priority=0,
            ),
        ),
        (
            "lease-grant/basic",
            "the authority's grant with fencing token 41, referencing the claim",
            GRANT,
        ),
        (
            "lease-renew/basic",
            "the holder asks to extend the grant it holds",
            LeaseRenew(
                header=header(sequence=7, references=(GRANT_ID,)),
                resource=CLAIM.resource,
                fencing_token=41,
                grant=GRANT_ID,
                term_ms=3_600_000,
            ),
        ),
        (
            "lease-release/basic",
            "the holder gives the resource back before expiry",
            LeaseRelease(
                header=header(sequence=8), resource=CLAIM.resource, fencing_token=41, grant=GRANT_ID
            ),
        ),
        (
            "lease-revoke/with-reason",
            "the authority revokes from a future instant, with a reason",
            LeaseRevoke(
                header=header(issuer=2, sequence=901),
                resource=CLAIM.resource,
                fencing_token=41,
                holder=7,
                effective_at=T0 + 60_000,
                reason="cell coordinator hand-over",
            ),
        ),
        (
            "lease-revoke/minimal",
            "a revocation without a reason (key 12 absent)",
            LeaseRevoke(
                header=header(issuer=2, sequence=902),
                resource=CLAIM.resource,
                fencing_token=41,
                holder=7,
                effective_at=T0,
            ),
        ),
        (
            "lease-expiry/basic",
            "notice that grant 41 lapsed without renewal",
            LeaseExpiry(
                header=header(issuer=2, sequence=903),
                resource=CLAIM.resource,
                fencing_token=41,
                holder=7,
                expired_at=T0 + 3_600_000,
            ),
        ),
        (
            "header/critical-known-key",
            "the header marks body key 8 critical; a v1 reader knows it, so it accepts",
            LeaseClaim(
                header=header(sequence=9, critical=(8, 9)), resource="dock/2", term_ms=60_000
            ),
        ),
        (
            "header/references-at-bound",
            "64 references, the most a header may carry",
            LeaseClaim(
                header=header(sequence=11, references=tuple(cid(str(i)) for i in range(64))),
                resource="dock/2",
                term_ms=60_000,
            ),
        ),
        (
            "header/critical-at-bound",
            "16 critical keys, the most allowed; critical is a list, so a key may repeat",
            LeaseClaim(
                header=header(sequence=12, critical=(*range(8, 11), *([8] * 13))),
                resource="dock/2",
                term_ms=60_000,
            ),
        ),
        (
            "capability-advertisement/capabilities-at-bound",
            "64 capabilities, the most an advertisement may carry",
            CapabilityAdvertisement(
                header=header(issuer=14, sequence=1),
                capabilities=tuple(
                    Capability(f"kind/{i}", i, "kg", T0, T0 + 1) for i in range(64)
                ),
                versions=(1, 1),
                lineage="B",
            ),
        ),
        (
            "header/newer-writer",
            "written at version 3, readable from version 1: a v1 reader accepts it",
            LeaseClaim(
                header=header(sequence=10, version=3, min_version=1), resource="dock/2", term_ms=1
            ),
        ),
    ]


REPORT_ID = ContentId.of(encode_message(REPORT))


# --- JSON-friendly views ---------------------------------------------------------------


def edn(value: Any) -> str:
    """RFC 8949 §8 diagnostic notation of a decoded CBOR item (ints, text, bytes, containers)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if value is cbor2.undefined:
        return "undefined"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(edn(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{edn(k)}: {edn(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no diagnostic notation for {type(value).__name__}")


def _field_json(field: Field, value: Any) -> Any:
    if isinstance(field.kind, Struct):
        return _fields_json(field.kind.fields, value)
    item = field.kind.to_wire(value)
    if isinstance(item, list):
        return [i.hex() if isinstance(i, bytes) else _plain(i) for i in item]
    return item.hex() if isinstance(item, bytes) else _plain(item)


def _plain(item: Any) -> Any:
    return _fields_json(_struct_fields(item), item) if hasattr(item, "FIELDS") else item


def _struct_fields(value: Any) -> tuple[Field, ...]:
    fields: tuple[Field, ...] = type(value).FIELDS
    return fields


def _fields_json(fields: tuple[Field, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in fields:
        item = getattr(value, field.name)
        if item is None or (field.optional and item == ()):
            continue
        if isinstance(item, tuple) and item and hasattr(item[0], "FIELDS"):
            out[field.name] = [_fields_json(_struct_fields(i), i) for i in item]
        else:
            out[field.name] = _field_json(field, item)
    return out


def message_json(message: Message) -> dict[str, Any]:
    """The message as named fields: header then body; content ids as hex."""
    out: dict[str, Any] = {"type": int(message.TYPE)}
    out.update(_fields_json(HEADER_FIELDS, message.header))
    out.update(_fields_json(message.FIELDS, message))
    if message.extensions:
        out["extensions"] = {str(key): edn(value) for key, value in message.extensions}
    return out


def type_name(message: Message) -> str:
    return message.TYPE.name.lower().replace("_", "-")


# --- invalid messages ------------------------------------------------------------------


def wire(message: Message) -> dict[int, Any]:
    value: dict[int, Any] = cbor2.loads(encode_message(message))
    return value


def changed(message: Message, change: Callable[[dict[int, Any]], None]) -> bytes:
    """The message's map with ``change`` applied, in deterministic encoding."""
    raw = wire(message)
    change(raw)
    return cbor.encode(raw)


def _set(**items: Any) -> Callable[[dict[int, Any]], None]:
    return lambda raw: raw.update({int(k[1:]): v for k, v in items.items()})


def _drop(key: int) -> Callable[[dict[int, Any]], None]:
    return lambda raw: raw.pop(key) and None


def _nested(key: int, inner: int, value: Any) -> Callable[[dict[int, Any]], None]:
    def change(raw: dict[int, Any]) -> None:
        target = raw[key][0] if isinstance(raw[key], list) else raw[key]
        target[inner] = value

    return change


CLAIM_BYTES = encode_message(CLAIM)


def _splice(old: str, new: str, data: bytes = CLAIM_BYTES) -> bytes:
    """Replace one occurrence of hex ``old`` in ``data`` by hex ``new``."""
    assert data.hex().count(old) == 1, old
    return bytes.fromhex(data.hex().replace(old, new))


def _long_references(raw: dict[int, Any]) -> None:
    raw[6] = [cid(str(i)).raw for i in range(65)]


def _deep(raw: dict[int, Any]) -> None:
    _nest(8)(raw)  # the map plus 8 arrays: 9 levels


def _nest(arrays: int) -> Callable[[dict[int, Any]], None]:
    def change(raw: dict[int, Any]) -> None:
        value: Any = 0
        for _ in range(arrays):
            value = [value]
        raw[30] = value

    return change


#: The two limits of protocol.md §3.4.
MAX_SIZE = 65536
MAX_DEPTH = 8


def _grow(data: bytes, entry_hex: str) -> bytes:
    """``data`` (a map of fewer than 23 pairs) with one more pair appended: key and value hex."""
    assert data[0] < 0xB7
    return bytes([data[0] + 1]) + data[1:] + bytes.fromhex(entry_hex)


def _sized(size: int) -> bytes:
    """A lease claim of exactly ``size`` bytes: an extension key 30 holds a text filling it."""
    for text_length in range(size - len(CLAIM_BYTES) - 10, size):
        data = changed(CLAIM, _set(k30="x" * text_length))
        if len(data) == size:
            return data
    raise AssertionError(f"no claim of {size} bytes")


def invalid_vectors() -> list[dict[str, Any]]:
    """Every rejection rule of spec/v1/protocol.md §5–§6, with the code a reader reports."""
    accepted_offer = Commitment(
        header=header(sequence=5), state=CommitmentState.ACCEPTED, commitment=OFFER_ID
    )
    ad = valid_messages()[0][2]
    # fmt: off
    cases: list[tuple[str, str, bytes, str, str | None, bool]] = [
        # id, description, bytes, code, field, structural (a CDDL validator alone refuses it)
        # -- CBOR level: well-formedness (RFC 8949 §3) and limits
        ("cbor/empty", "no bytes at all", b"", "cbor-malformed", None, True),
        ("cbor/truncated", "the last byte of a lease claim is missing", CLAIM_BYTES[:-1],
         "cbor-malformed", None, True),
        ("cbor/trailing-bytes", "a valid lease claim followed by one byte 0x00", CLAIM_BYTES + b"\x00",
         "cbor-malformed", None, True),
        ("cbor/too-deep", "nesting deeper than 8 (an extension of 8 nested arrays)",
         changed(CLAIM, _deep), "cbor-limit", None, False),
        # -- deterministic encoding (RFC 8949 §4.2.1)
        ("deterministic/non-shortest-integer", "sequence 3 written as 0x1803 (two bytes)",
         _splice("0503", "051803"), "cbor-not-deterministic", None, False),
        ("deterministic/non-shortest-length", "the resource text length 26 written as 0x79001a",
         _splice("08781a", "0879001a"), "cbor-not-deterministic", None, False),
        ("deterministic/non-shortest-map-head", "the map of 9 pairs written as 0xb80009... (0xb809)",
         b"\xb8\x09" + CLAIM_BYTES[1:], "cbor-not-deterministic", None, False),
        ("deterministic/unsorted-keys", "keys 9 and 10 swapped (10 before 9)",
         _splice("091a0036ee800a02", "0a02091a0036ee80"), "cbor-not-deterministic", None, False),
        ("deterministic/indefinite-map", "the message map written with indefinite length (0xbf ... 0xff)",
         b"\xbf" + CLAIM_BYTES[1:] + b"\xff", "cbor-not-deterministic", None, False),
        ("deterministic/indefinite-text", "the resource as an indefinite-length text of one chunk",
         _splice("08781a" + CLAIM.resource.encode().hex(), "087f781a" + CLAIM.resource.encode().hex() + "ff"),
         "cbor-not-deterministic", None, False),
        ("deterministic/duplicate-key", "key 10 (priority) written twice, map head counts 10 pairs",
         b"\xaa" + CLAIM_BYTES[1:] + b"\x0a\x02", "cbor-not-deterministic", None, True),
        ("cbor/tagged-uint", "term_ms written as bignum tag 2 (no tags in a message)",
         _splice("091a0036ee80", "09c2440036ee80"), "cbor-decode", None, True),
        ("cbor/tag-in-defined-field", "exception scope 1 written as tag 1 (epoch time) around 1: step 1, not the field",
         _splice("0a01", "0ac101", encode_message(REPORT)), "cbor-decode", None, True),
        ("cbor/tag-as-key", "a tag around an extension key: no tags anywhere",
         _grow(CLAIM_BYTES, "d8821e01"), "cbor-decode", None, True),
        ("cbor/tag-in-extension", "unknown key 30 holds tag 4000 around 1: no tags anywhere in a message",
         bytes([CLAIM_BYTES[0] + 1]) + CLAIM_BYTES[1:] + bytes.fromhex("181ed90fa001"), "cbor-decode", None,
         False),
        ("cbor/time-tag-in-extension", "unknown key 30 holds tag 1 (epoch time) around 1",
         bytes([CLAIM_BYTES[0] + 1]) + CLAIM_BYTES[1:] + bytes.fromhex("181ec101"), "cbor-decode", None, False),
        ("cbor/declared-text-past-end", "an extension text whose head declares 2^32-1 bytes; input ends",
         _grow(CLAIM_BYTES, "181e7affffffff" + "78" * 8), "cbor-malformed", None, True),
        ("cbor/declared-bytes-past-end", "an extension byte string declaring 2^64-1 bytes",
         _grow(CLAIM_BYTES, "181e5bffffffffffffffff00"), "cbor-malformed", None, True),
        ("cbor/declared-array-past-end", "an extension array declaring 65535 items, 3 given",
         _grow(CLAIM_BYTES, "181e99ffff010203"), "cbor-malformed", None, True),
        ("cbor/truncated-past-depth", "an array head at level 9 declaring 3 items where the input ends: truncation is checked before the depth limit",
         _grow(CLAIM_BYTES, "181e" + "81" * 7 + "83"), "cbor-malformed", None, True),
        ("cbor/declared-map-past-end", "a message map head declaring 70000 pairs over a claim's 9",
         b"\xba\x00\x01\x11\x70" + CLAIM_BYTES[1:], "cbor-malformed", None, True),
        ("cbor/size-past-bound", "a lease claim of 65537 bytes (an extension text fills it): one past 65536",
         _sized(MAX_SIZE + 1), "cbor-limit", None, False),
        ("cbor/invalid-utf8-in-field", "the resource text holds the byte 0xff",
         _splice("08781a" + CLAIM.resource.encode().hex(), "08781a" + "ff" + CLAIM.resource.encode()[1:].hex()),
         "cbor-decode", None, True),
        ("cbor/overlong-utf8-in-field", "the resource text holds 0xc0 0x80 (an overlong NUL)",
         _splice("08781a" + CLAIM.resource.encode().hex(), "08781a" + "c080" + CLAIM.resource.encode()[2:].hex()),
         "cbor-decode", None, True),
        ("cbor/surrogate-utf8-in-extension", "an extension text holding 0xed 0xa0 0x80 (a UTF-16 surrogate)",
         _grow(CLAIM_BYTES, "181e63eda080"), "cbor-decode", None, True),
        ("cbor/invalid-utf8-in-extension-key", "an extension map whose text key is the byte 0xfe",
         _grow(CLAIM_BYTES, "181ea161fe01"), "cbor-decode", None, True),
        ("body/float-for-uint", "priority 2 written as the half float 2.0",
         _splice("0a02", "0af94000"), "message-invalid", "priority", True),
        ("body/null-for-optional-text", "a revoke's optional reason written as null",
         changed(REVOKE, _set(k12=None)), "message-invalid", "reason", True),
        ("empty-list/references", "header references written as an empty array",
         changed(CLAIM, _set(k6=[])), "message-invalid", "header.references", True),
        ("empty-list/critical", "header critical written as an empty array",
         changed(CLAIM, _set(k7=[])), "message-invalid", "header.critical", True),
        ("empty-list/affects", "an exception's optional affects written as an empty array",
         changed(REPORT, _set(k12=[])), "message-invalid", "affects", True),
        ("empty-list/rests-on", "an offer's terms.rests_on written as an empty array",
         changed(OFFER, _nested(9, 6, [])), "message-invalid", "terms.rests_on", True),
        # -- shape
        ("shape/not-a-map", "an array instead of a map", cbor.encode([4, 1, 1]), "message-invalid", None, True),
        ("shape/text-key", "a text map key next to the integer keys",
         cbor.encode({**wire(CLAIM), "x": 1}),
         "message-invalid", None, True),
        ("shape/simple-value-key", "simple value 8 (0xe8) as a key after key 0x1818: not key 8",
         _grow(CLAIM_BYTES, "e8420102"), "message-invalid", None, True),
        ("shape/true-key", "the key true (0xf5) after the integer keys: not key 1",
         _grow(CLAIM_BYTES, "f501"), "message-invalid", None, True),
        ("shape/negative-key", "a negative map key -1", cbor.encode({**wire(CLAIM), -1: 1}),
         "message-invalid", None, True),
        # -- header fields
        ("header/missing-type", "key 0 (type) absent", changed(CLAIM, _drop(0)), "message-invalid", "type", True),
        ("header/missing-issuer", "key 3 (issuer) absent", changed(CLAIM, _drop(3)),
         "message-invalid", "header.issuer", True),
        ("header/issuer-wrong-type", "issuer is a byte string", changed(CLAIM, _set(k3=b"node")),
         "message-invalid", "header.issuer", True),
        ("header/issued-at-negative", "issued_at is -1", changed(CLAIM, _set(k4=-1)),
         "message-invalid", "header.issued_at", True),
        ("header/reference-bad-hash", "a reference with multihash code 0x99",
         changed(CLAIM, _set(k6=[b"\x99\x20" + bytes(32)])), "message-invalid", "header.references[0]", False),
        ("header/reference-short", "a reference of 33 bytes (31-byte digest)",
         changed(CLAIM, _set(k6=[b"\x12\x20" + bytes(31)])), "message-invalid", "header.references[0]", True),
        ("header/reference-wrong-digest-size", "a reference 0x12 0x1f + 32 bytes (declared size 31)",
         changed(CLAIM, _set(k6=[b"\x12\x1f" + bytes(32)])), "message-invalid", "header.references[0]", False),
        ("header/too-many-references", "65 references (at most 64)", changed(CLAIM, _long_references),
         "message-invalid", "header.references", True),
        ("header/too-many-critical", "17 critical keys (at most 16)",
         changed(CLAIM, _set(k7=list(range(8, 25)))), "message-invalid", "header.critical", True),
        # -- version window (N-2 policy)
        ("version/min-version-too-new", "written at 3, readable only from 2: a v1 reader cannot read it",
         changed(CLAIM, _set(k1=3, k2=2)), "version-unsupported", "header.min_version", False),
        ("version/too-old", "written at version 0, older than the oldest a v1 reader reads",
         changed(CLAIM, _set(k1=0, k2=0)), "version-unsupported", "header.version", False),
        ("version/min-version-zero", "written at 1, min_version 0: versions start at 1",
         changed(CLAIM, _set(k2=0)), "message-invalid", "header.min_version", False),
        ("version/min-above-version", "min_version 2 above version 1: inconsistent header",
         changed(CLAIM, _set(k2=2)), "message-invalid", "header.min_version", False),
        # -- type
        ("type/unknown", "type 99 is not a v1 message type", changed(CLAIM, _set(k0=99)),
         "message-type-unknown", "type", True),
        ("type/zero", "type 0 is not assigned", changed(CLAIM, _set(k0=0)), "message-type-unknown", "type", True),
        ("type/negative", "type is -5: not an unsigned integer (step 3), so not an unknown type",
         changed(CLAIM, _set(k0=-5)), "message-invalid", "type", True),
        ("type/text", "type is a text string", changed(CLAIM, _set(k0="lease-claim")), "message-invalid",
         "type", True),
        # -- critical keys
        ("critical/unknown-present", "key 30 present and marked critical: a v1 reader does not know it",
         changed(CLAIM, _set(k30=1, k7=[30])), "critical-field-unknown", "header.critical", False),
        ("critical/unknown-absent", "key 31 marked critical though absent: still refused",
         changed(CLAIM, _set(k7=[31])), "critical-field-unknown", "header.critical", False),
        # -- body fields
        ("body/missing-field", "lease claim without key 8 (resource)", changed(CLAIM, _drop(8)),
         "message-invalid", "resource", True),
        ("body/missing-priority", "lease claim without key 10 (priority)", changed(CLAIM, _drop(10)),
         "message-invalid", "priority", True),
        ("body/wrong-type-text-for-uint", "term_ms is the text \"soon\"", changed(CLAIM, _set(k9="soon")),
         "message-invalid", "term_ms", True),
        ("body/wrong-type-bool-for-uint", "term_ms is true", changed(CLAIM, _set(k9=True)),
         "message-invalid", "term_ms", True),
        ("body/wrong-type-bytes-for-text", "resource is a byte string", changed(CLAIM, _set(k8=b"dock")),
         "message-invalid", "resource", True),
        ("body/negative-uint", "term_ms is -1", changed(CLAIM, _set(k9=-1)), "message-invalid", "term_ms", True),
        ("body/text-too-long", "resource of 257 bytes (at most 256)", changed(CLAIM, _set(k8="é" * 128 + "a")),
         "message-invalid", "resource", True),
        ("body/severity-zero", "exception severity 0 (range 1..5)", changed(REPORT, _set(k9=0)),
         "message-invalid", "severity", True),
        ("body/severity-six", "exception severity 6 (range 1..5)", changed(REPORT, _set(k9=6)),
         "message-invalid", "severity", True),
        ("body/scope-unknown", "exception scope 3 (node 0, cell 1, region 2)", changed(REPORT, _set(k10=3)),
         "message-invalid", "scope", True),
        ("body/affects-bad-content-id", "an affected content id of 2 bytes",
         changed(REPORT, _set(k12=[b"\x12\x00"])), "message-invalid", "affects[0]", True),
        ("body/affects-second-bad", "the second affected content id has hash code 0x13",
         changed(REPORT, _set(k12=[OFFER_ID.raw, b"\x13\x20" + bytes(32)])), "message-invalid", "affects[1]",
         False),
        ("body/rests-on-bad-content-id", "terms.rests_on[0] of 33 bytes",
         changed(OFFER, _nested(9, 6, [b"\x12\x20" + bytes(31)])), "message-invalid", "terms.rests_on[0]", True),
        ("body/too-many-capabilities", "65 capabilities (at most 64)",
         changed(ad, lambda raw: raw.update({8: [raw[8][0]] * 65})), "message-invalid", "capabilities", True),
        ("body/second-capability-unit-wrong-type", "capabilities[1].unit is an integer",
         changed(ad, lambda raw: raw[8][1].update({2: 3})), "message-invalid", "capabilities[1].unit", True),
        ("body/capability-unknown-key", "a capability with key 5: nested maps have no extension keys",
         changed(ad, lambda raw: raw[8][0].update({5: 1})), "message-invalid", "capabilities[0]", True),
        ("body/terms-negative-quantity", "terms.quantity is -5",
         changed(OFFER, _nested(9, 3, -5)), "message-invalid", "terms.quantity", True),
        ("body/state-unknown", "commitment state 5", changed(accepted_offer, _set(k8=5)),
         "message-invalid", "state", True),
        ("body/offer-without-terms", "an offer (state 0) with no terms", changed(OFFER, _drop(9)),
         "message-invalid", "terms", True),
        ("body/accepted-with-terms", "an acceptance that carries terms: names terms, the field that must not be there",
         changed(accepted_offer, lambda raw: raw.update({9: wire(OFFER)[9]})), "message-invalid", "terms",
         True),
        ("body/offer-with-commitment", "an offer that names a commitment: names commitment",
         changed(OFFER, _set(k10=OFFER_ID.raw)), "message-invalid", "commitment", True),
        ("body/fulfilled-with-terms", "a fulfilment carrying terms",
         changed(accepted_offer, lambda raw: raw.update({8: 2, 9: wire(OFFER)[9]})), "message-invalid", "terms",
         True),
        ("body/accepted-without-commitment", "an acceptance that names no offer",
         changed(accepted_offer, _drop(10)), "message-invalid", "commitment", True),
        ("body/terms-field-wrong-type", "terms.promisor is a text string", changed(OFFER, _nested(9, 0, "seven")),
         "message-invalid", "terms.promisor", True),
        ("body/terms-unknown-key", "terms carry key 7: nested maps have no extension keys",
         changed(OFFER, _nested(9, 7, 1)), "message-invalid", "terms", True),
        ("body/capability-not-a-map", "a capability written as an array",
         changed(ad, _set(k8=[[1, 2]])), "message-invalid", "capabilities[0]", True),
        ("body/capability-missing-unit", "a capability without key 2 (unit)",
         changed(ad, lambda raw: raw[8][0].pop(2) and None), "message-invalid", "capabilities[0].unit", True),
        ("body/versions-reversed", "versions [2, 1]: oldest above newest", changed(ad, _set(k9=[2, 1])),
         "message-invalid", "versions", False),
        ("body/versions-zero", "versions [0, 1]: version 0 does not exist", changed(ad, _set(k9=[0, 1])),
         "message-invalid", "versions", True),
        ("body/versions-one-item", "versions [1]: must be [oldest, newest]", changed(ad, _set(k9=[1])),
         "message-invalid", "versions", True),
        ("body/grant-claim-bad-content-id", "lease grant claim id with multihash code 0x13",
         changed(GRANT, _set(k10=b"\x13\x20" + bytes(32))), "message-invalid", "claim", False),
    ]
    out = []
    for vector_id, description, data, code, field, structural in cases:
        vector: dict[str, Any] = {"id": vector_id, "description": description, "hex": data.hex(), "code": code}
        if field is not None:
            vector["field"] = field
        vector["structural"] = structural
        out.append(vector)
    return out


# --- accepted extensions ---------------------------------------------------------------


def extension_vectors() -> list[dict[str, Any]]:
    """Messages with unknown non-critical keys: a reader accepts them and keeps them."""
    # fmt: off
    cases = [
        ("extension/text", "lease claim with unknown key 30 = text",
         changed(CLAIM, _set(k30="hint"))),
        ("extension/nested-map-with-float", "unknown key 30 = {\"hint\": [1, 2.5]} (a float, shortest form)",
         changed(CLAIM, _set(k30={"hint": [1, 2.5]}))),
        ("extension/big-key", "unknown key 1000 (a two-byte key sorts after the body keys)",
         changed(GRANT, _set(k1000=b"\x01\x02"))),
        ("extension/newer-writer", "written at v3 readable from v1, with a v3-only key 20 not critical",
         changed(CLAIM, _set(k1=3, k20="v3-only detail"))),
        ("extension/critical-known-other-unknown", "key 8 critical (known) and unknown key 31 not critical",
         changed(REPORT, _set(k7=[8], k31=[1, 2, 3]))),
        ("extension/size-at-bound", "a lease claim of exactly 65536 bytes: one extension text fills it",
         _sized(MAX_SIZE)),
        ("extension/depth-at-bound", "an extension of 7 nested arrays: 8 levels with the message map",
         changed(CLAIM, _nest(MAX_DEPTH - 1))),
        ("extension/long-text", "an extension text of 20000 bytes (only §3.4 bounds extension values)",
         changed(CLAIM, _set(k30="y" * 20_000))),
        ("extension/many-items", "an extension array of 1000 integers and a map of 300 pairs",
         changed(CLAIM, _set(k30=list(range(1000)), k31={i: i for i in range(300)}))),
        ("extension/any-cbor", "extension values may be negative, floats, simple values, text-keyed maps",
         changed(CLAIM, _set(k30=[-1, -1000, 1.5, -0.0, True, False, None, cbor2.undefined, {"a": {"b": []}}]))),
    ]
    # fmt: on
    out = []
    for vector_id, description, data in cases:
        raw = cbor2.loads(data)
        known = {int(k) for k in raw if isinstance(k, int) and (k < 8 or k in _body_keys(raw[0]))}
        out.append(
            {
                "id": vector_id,
                "description": description,
                "hex": data.hex(),
                "content_id": ContentId.of(data).raw.hex(),
                "extensions": {str(k): edn(v) for k, v in raw.items() if k not in known},
            }
        )
    return out


def _body_keys(type_code: int) -> set[int]:
    from fleetwire.protocol.messages import MESSAGE_CLASSES, MessageType
    from fleetwire.protocol.messages.schema import fields_at

    return {field.key for field in fields_at(MESSAGE_CLASSES[MessageType(type_code)].FIELDS, VERSION)}


# --- signed envelopes ------------------------------------------------------------------


def _sign_with(
    key: SigningKey, payload: bytes, protected: bytes, kid: bytes | None, unprotected: Any = None
) -> bytes:
    """A tagged COSE_Sign1 with any headers (even ones we refuse), signed by ``key``."""
    signature = key.sign(sig_structure(protected, b"", payload))
    if unprotected is None:
        unprotected = {} if kid is None else {4: kid}
    return cbor.encode(cbor2.CBORTag(18, [protected, unprotected, payload, signature]))


def _raw_envelope(key: SigningKey, payload: bytes, protected: bytes, unprotected_hex: str) -> bytes:
    """An envelope whose unprotected bucket is given as raw bytes (to break its encoding)."""
    signature = key.sign(sig_structure(protected, b"", payload))
    return b"".join(
        (b"\xd2\x84", cbor.encode(protected), bytes.fromhex(unprotected_hex), cbor.encode(payload),
         cbor.encode(signature))
    )  # fmt: skip


#: protocol.md §7 bounds.
MAX_HEADER = 1024
MAX_PAYLOAD = 65536
MAX_ENVELOPE = 66674


def _padded_protected(size: int) -> bytes:
    """A protected bucket of exactly ``size`` bytes: alg -8 and an ignored label 99 of padding."""
    for pad in range(size - 8, size):
        protected = cbor.encode({1: -8, 99: bytes(pad)})
        if len(protected) == size:
            return protected
    raise AssertionError(size)


def envelope_vectors() -> dict[str, Any]:
    key = SigningKey.from_seed(TEST_SEED)
    other = SigningKey.from_seed(OTHER_SEED)
    valid = []
    for vector_id, _, message in valid_messages():
        if vector_id not in {
            "lease-claim/basic",
            "lease-grant/basic",
            "commitment/offered",
            "exception-report/full",
            "capability-advertisement/full",
        }:
            continue
        payload = encode_message(message)
        envelope = sign1(payload, key)
        valid.append(
            {
                "id": f"signed/{vector_id}",
                "description": f"COSE_Sign1 of the valid vector {vector_id}",
                "hex": envelope.hex(),
                "payload_content_id": ContentId.of(payload).raw.hex(),
            }
        )
    payload = CLAIM_BYTES
    big = _sized(MAX_PAYLOAD)
    widest = _sign_with(key, big, _padded_protected(MAX_HEADER), key.kid)
    assert len(widest) == MAX_ENVELOPE
    # fmt: off
    more_valid: list[tuple[str, str, bytes, bytes]] = [
        ("signed/kid-in-protected", "the kid in the protected bucket (then signed), none unprotected",
         _sign_with(key, payload, cbor.encode({1: -8, 4: key.kid}), None), payload),
        ("signed/payload-at-bound", "a payload of exactly 65536 bytes", sign1(big, key), big),
        ("signed/protected-at-bound", "a protected bucket of exactly 1024 bytes (label 99 pads it; not in crit: ignored)",
         _sign_with(key, payload, _padded_protected(MAX_HEADER), key.kid), payload),
        ("signed/widest", "a 66674-byte envelope: every bound reached at once", widest, big),
        ("signed/crit-understood", "crit names content type (3), which a v1 reader understands",
         _sign_with(key, payload, cbor.encode({1: -8, 2: [3], 3: 0}), key.kid), payload),
    ]
    # fmt: on
    for vector_id, description, data, signed_payload in more_valid:
        valid.append(
            {
                "id": vector_id,
                "description": description,
                "hex": data.hex(),
                "payload_content_id": ContentId.of(signed_payload).raw.hex(),
            }
        )
    good = bytearray(sign1(payload, key))
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    flipped_r = bytearray(good)
    flipped_r[-64] ^= 0x80
    bad_payload = changed(CLAIM, _set(k1=3, k2=2))
    # fmt: off
    invalid: list[tuple[str, str, bytes, str]] = [
        ("signed/flipped-signature-bit", "lowest bit of the last signature byte flipped",
         bytes(flipped), "signature-invalid"),
        ("signed/flipped-signature-r-bit", "top bit of the first signature byte flipped",
         bytes(flipped_r), "signature-invalid"),
        ("signed/payload-changed", "payload priority 2 changed to 3 after signing",
         bytes(good[:-67]) + b"\x03" + bytes(good[-66:]), "signature-invalid"),
        ("signed/wrong-kid", "signed by the test key but kid names another key",
         _sign_with(key, payload, PROTECTED_EDDSA, other.kid), "envelope-kid-mismatch"),
        ("signed/signed-by-other-key", "kid names the test key, signature made by another key",
         _sign_with(other, payload, PROTECTED_EDDSA, key.kid), "signature-invalid"),
        ("signed/wrong-alg", "protected alg -7 (ES256) instead of -8 (EdDSA)",
         _sign_with(key, payload, b"\xa1\x01\x26", key.kid), "envelope-alg-unsupported"),
        ("signed/no-alg", "protected bucket {} encoded as a zero-length bstr",
         _sign_with(key, payload, b"", key.kid), "envelope-alg-unsupported"),
        ("signed/untagged", "a COSE_Sign1 array without tag 18", bytes(good[1:]), "envelope-not-sign1"),
        ("signed/detached-payload", "payload nil (detached content)",
         cbor.encode(cbor2.CBORTag(18, [PROTECTED_EDDSA, {4: key.kid}, None, bytes(64)])),
         "envelope-payload-detached"),
        ("signed/short-signature", "a 63-byte signature", bytes(good[:-66]) + b"\x58\x3f" + bytes(good[-63:]),
         "envelope-signature-size"),
        ("signed/trailing-bytes", "one byte after the envelope", bytes(good) + b"\x00", "envelope-not-sign1"),
        ("signed/payload-version-unsupported", "a correctly signed payload that needs a v2 reader",
         sign1(bad_payload, key), "version-unsupported"),
        # -- kid (§7): required, in one bucket, a content id
        ("signed/no-kid", "no kid in either bucket", _sign_with(key, payload, PROTECTED_EDDSA, None),
         "envelope-header-invalid"),
        ("signed/kid-short", "a kid of 33 bytes", _sign_with(key, payload, PROTECTED_EDDSA, key.kid[:-1]),
         "envelope-header-invalid"),
        ("signed/kid-bad-hash-code", "a kid with multihash code 0x13",
         _sign_with(key, payload, PROTECTED_EDDSA, b"\x13" + key.kid[1:]), "envelope-header-invalid"),
        ("signed/kid-text", "a kid that is a text string",
         _sign_with(key, payload, PROTECTED_EDDSA, None, {4: "kid"}), "envelope-header-invalid"),
        ("signed/kid-in-both-buckets", "the kid in both buckets",
         _sign_with(key, payload, cbor.encode({1: -8, 4: key.kid}), key.kid), "envelope-header-invalid"),
        # -- structure of the envelope's own CBOR (§7 rule 2)
        ("signed/protected-not-bstr", "the protected bucket written as a map, not a byte string",
         cbor.encode(cbor2.CBORTag(18, [{1: -8}, {4: key.kid}, payload, bytes(64)])), "envelope-not-sign1"),
        ("signed/unprotected-not-map", "the unprotected bucket written as an array",
         cbor.encode(cbor2.CBORTag(18, [PROTECTED_EDDSA, [4, key.kid], payload, bytes(64)])), "envelope-not-sign1"),
        ("signed/payload-text", "the payload written as a text string",
         cbor.encode(cbor2.CBORTag(18, [PROTECTED_EDDSA, {4: key.kid}, "claim", bytes(64)])), "envelope-not-sign1"),
        ("signed/three-elements", "tag 18 around a 3-element array",
         cbor.encode(cbor2.CBORTag(18, [PROTECTED_EDDSA, {4: key.kid}, payload])), "envelope-not-sign1"),
        ("signed/truncated", "the last byte of a valid envelope is missing", bytes(good[:-1]), "envelope-not-sign1"),
        ("signed/declared-payload-past-end", "a payload head declaring 2^32-1 bytes; the input ends",
         bytes(good[:44]) + b"\x5a\xff\xff\xff\xff" + payload[:10], "envelope-not-sign1"),
        ("signed/non-shortest-payload-head", "the payload length written in two bytes more than needed",
         bytes(good[:44]) + b"\x59" + len(payload).to_bytes(2, "big") + bytes(good[46:]), "envelope-not-sign1"),
        ("signed/indefinite-payload", "the payload as an indefinite-length byte string of one chunk",
         bytes(good[:44]) + b"\x5f" + bytes(good[44:-66]) + b"\xff" + bytes(good[-66:]), "envelope-not-sign1"),
        ("signed/non-shortest-tag", "tag 18 written as 0xd8 0x12",
         b"\xd8\x12" + bytes(good[1:]), "envelope-not-sign1"),
        # -- inside the header buckets (§7 rules 5, 6, 8, 9)
        ("signed/protected-truncated-cbor", "the protected bstr holds a1 01: a map cut short inside it",
         _sign_with(key, payload, b"\xa1\x01", key.kid), "envelope-header-invalid"),
        ("signed/protected-trailing-byte", "the protected bstr holds a1 01 27 00: a byte after the map",
         _sign_with(key, payload, b"\xa1\x01\x27\x00", key.kid), "envelope-header-invalid"),
        ("signed/protected-unsorted", "the protected map {3: 0, 1: -8}: keys out of order",
         _sign_with(key, payload, b"\xa2\x03\x00\x01\x27", key.kid), "envelope-header-invalid"),
        ("signed/protected-not-a-map", "the protected bstr holds the integer 5",
         _sign_with(key, payload, b"\x05", key.kid), "envelope-header-invalid"),
        ("signed/protected-empty-map", "the protected bucket holds a0 (an empty map must be a zero-length bstr)",
         _sign_with(key, payload, b"\xa0", key.kid), "envelope-header-invalid"),
        ("signed/protected-invalid-utf8", "a protected content type text holding the byte 0xff",
         _sign_with(key, payload, b"\xa2\x01\x27\x03\x61\xff", key.kid), "envelope-header-invalid"),
        ("signed/unprotected-non-shortest", "the kid's length in the unprotected map written as 59 0022",
         _raw_envelope(key, payload, PROTECTED_EDDSA, "a104590022" + key.kid.hex()), "envelope-header-invalid"),
        ("signed/alg-unprotected", "alg in the unprotected bucket as well",
         _sign_with(key, payload, PROTECTED_EDDSA, None, {1: -8, 4: key.kid}), "envelope-header-invalid"),
        ("signed/unprotected-extra-label", "an unprotected label 5 next to the kid",
         _sign_with(key, payload, PROTECTED_EDDSA, None, {4: key.kid, 5: b"iv"}), "envelope-header-invalid"),
        ("signed/crit-empty", "crit is an empty array",
         _sign_with(key, payload, cbor.encode({1: -8, 2: []}), key.kid), "envelope-header-invalid"),
        ("signed/crit-unknown", "crit names label 99, which a v1 reader does not understand",
         _sign_with(key, payload, cbor.encode({1: -8, 2: [99], 99: 0}), key.kid), "envelope-crit-unknown"),
        # -- bounds (§7 rules 1, 3, 11)
        ("signed/payload-past-bound", "a payload of 65537 bytes",
         sign1(_sized(MAX_PAYLOAD + 1), key), "envelope-too-large"),
        ("signed/protected-past-bound", "a protected bucket of 1025 bytes",
         _sign_with(key, payload, _padded_protected(MAX_HEADER + 1), key.kid), "envelope-too-large"),
        ("signed/envelope-past-bound", "the widest envelope with one byte more: 66675 bytes",
         widest + b"\x00", "envelope-too-large"),
        # -- the payload, once the signature verifies (§5.2): message codes with their fields
        ("signed/payload-invalid-utf8", "a signed payload whose resource text holds 0xff",
         sign1(_splice("08781a" + CLAIM.resource.encode().hex(),
                       "08781a" + "ff" + CLAIM.resource.encode()[1:].hex()), key), "cbor-decode"),
    ]
    field_invalid = [
        ("signed/payload-field", "a signed acceptance carrying terms: the payload's code and field",
         sign1(changed(Commitment(header=header(sequence=5), state=CommitmentState.ACCEPTED,
                                  commitment=OFFER_ID), lambda raw: raw.update({9: wire(OFFER)[9]})), key),
         "message-invalid", "terms"),
    ]
    # fmt: on
    return {
        "key": {
            "description": "RFC 8032 §7.1 TEST 1 Ed25519 key; kid = content id of the public key",
            "seed": TEST_SEED.hex(),
            "public": key.public.raw.hex(),
            "kid": key.kid.hex(),
        },
        "valid": valid,
        "invalid": [
            {"id": i, "description": d, "hex": h.hex(), "code": c} for i, d, h, c in invalid
        ]
        + [
            {"id": i, "description": d, "hex": h.hex(), "code": c, "field": f}
            for i, d, h, c, f in field_invalid
        ],
    }


# --- trust: credentials, revocation lists, now -------------------------------------------

#: Fixed keys of trust.json, each from a fixed seed (SHA-256 of its label).
TRUST_KEYS = ("root", "node-7", "node-9", "stranger")


def _trust_key(label: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(f"fleetwire test key: {label}".encode()).digest())


def trust_vectors() -> dict[str, Any]:
    """Envelopes opened against a trust store (protocol.md §7, §8; README "trusted open")."""
    from fleetwire.protocol.keys import VerifyKey
    from fleetwire.protocol.trust import (
        CREDENTIAL_AAD,
        Credential,
        Role,
        issue_credential,
        issue_revocations,
    )

    root, node7, node9, stranger = (_trust_key(label) for label in TRUST_KEYS)
    roots = [root.public.raw.hex()]
    day = 86_400_000
    start, end = T0 - day, T0 + 30 * day

    def credential(key: SigningKey, node: int, *, signer: SigningKey = root, serial: int = 1,
                   roles: tuple[Role, ...] = (Role.NODE,), **extra: Any) -> bytes:  # fmt: skip
        return issue_credential(
            signer, node=node, public_key=key.public, roles=roles, not_before=start,
            not_after=end, serial=serial, lineage="B", **extra,
        )  # fmt: skip

    def revocations(serial: int, *, kids: tuple[bytes, ...] = (), serials: tuple[int, ...] = (),
                    signer: SigningKey = root, issued_at: int = T0) -> bytes:  # fmt: skip
        return issue_revocations(signer, serial=serial, issued_at=issued_at, kids=kids,
                                 credential_serials=serials)  # fmt: skip

    def forged_credential(issuer_field: bytes, extra: dict[int, Any] | None = None) -> bytes:
        fields = cbor2.loads(
            Credential(node=7, public_key=VerifyKey(node7.public.raw), roles=frozenset({Role.NODE}),
                       not_before=start, not_after=end, serial=1, issuer=issuer_field,
                       lineage="B").to_payload()
        )  # fmt: skip
        fields.update(extra or {})
        return sign1(cbor.encode(fields), root, external_aad=CREDENTIAL_AAD)

    claim = CLAIM_BYTES  # issuer 7
    signed = sign1(claim, node7)
    cred7 = credential(node7, 7)
    flipped = bytearray(signed)
    flipped[-1] ^= 1
    # fmt: off
    cases: list[tuple[str, str, dict[str, Any], bytes, str | None]] = [
        # id, description, trust input, envelope, code (None: accept)
        ("trust/credential-valid", "node 7's key vouched for by the root; a claim by node 7",
         {"credentials": [cred7], "now": T0}, signed, None),
        ("trust/now-at-not-before", "now is not_before: valid from not_before inclusive",
         {"credentials": [cred7], "now": start}, signed, None),
        ("trust/now-before-not-before", "now is one ms before not_before",
         {"credentials": [cred7], "now": start - 1}, signed, "key-not-yet-valid"),
        ("trust/now-at-not-after", "now is not_after: valid until not_after exclusive",
         {"credentials": [cred7], "now": end}, signed, "key-expired"),
        ("trust/now-before-not-after", "now is one ms before not_after",
         {"credentials": [cred7], "now": end - 1}, signed, None),
        ("trust/no-credential", "no credential names the signing key",
         {"credentials": [credential(node9, 9)], "now": T0}, signed, "key-unknown"),
        ("trust/role-granted", "the caller requires role 2; the credential grants 1 and 2 for cell 3",
         {"credentials": [credential(node7, 7, roles=(Role.NODE, Role.CELL_COORDINATOR), cell=3)],
          "now": T0, "role": 2}, signed, None),
        ("trust/role-missing", "the caller requires role 2 (cell coordinator); the credential grants 1",
         {"credentials": [cred7], "now": T0, "role": 2}, signed, "key-wrong-role"),
        ("trust/issuer-mismatch", "node 9's key signs a claim whose issuer is node 7",
         {"credentials": [credential(node9, 9)], "now": T0}, sign1(claim, node9), "issuer-mismatch"),
        ("trust/signature-invalid", "the claim's signature with one bit flipped",
         {"credentials": [cred7], "now": T0}, bytes(flipped), "signature-invalid"),
        ("trust/payload-refused", "a trusted signature over a payload that needs a v2 reader",
         {"credentials": [cred7], "now": T0}, sign1(changed(CLAIM, _set(k1=3, k2=2)), node7),
         "version-unsupported"),
        ("trust/key-revoked", "the revocation list in force names node 7's kid",
         {"revocations": [revocations(1, kids=(node7.kid,))], "credentials": [cred7], "now": T0},
         signed, "key-revoked"),
        ("trust/serial-revoked", "the revocation list names the credential's serial",
         {"revocations": [revocations(1, serials=(1,))], "credentials": [cred7], "now": T0},
         signed, "key-revoked"),
        ("trust/other-key-revoked", "the list revokes node 9's kid and serial 2: node 7 is unaffected",
         {"revocations": [revocations(1, kids=(node9.kid,), serials=(2,))], "credentials": [cred7],
          "now": T0}, signed, None),
        ("trust/newer-list-unrevokes", "list 2 replaces list 1 whole: node 7 no longer revoked",
         {"revocations": [revocations(1, kids=(node7.kid,)), revocations(2)], "credentials": [cred7],
          "now": T0}, signed, None),
        ("trust/revocations-stale", "list 2 then list 1: an older list is refused",
         {"revocations": [revocations(2), revocations(1)], "credentials": [cred7], "now": T0},
         signed, "revocations-stale"),
        ("trust/revocations-conflict", "two different lists with serial 1",
         {"revocations": [revocations(1), revocations(1, serials=(5,))], "credentials": [cred7],
          "now": T0}, signed, "revocations-stale"),
        ("trust/revocations-repeat", "the same list twice: the repeat is a no-op",
         {"revocations": [revocations(1), revocations(1)], "credentials": [cred7], "now": T0},
         signed, None),
        ("trust/revocations-reissued", "list 1 again with a later issued_at, same kids and serials: a no-op",
         {"revocations": [revocations(1, kids=(node9.kid,)), revocations(1, kids=(node9.kid,), issued_at=T0 + 1)],
          "credentials": [cred7], "now": T0}, signed, None),
        ("trust/revocations-not-from-root", "a revocation list signed by a key that is not a root",
         {"revocations": [revocations(1, signer=stranger)], "credentials": [cred7], "now": T0},
         signed, "issuer-untrusted"),
        ("trust/root-revoked", "the list revokes the root's own kid: its credentials are refused",
         {"revocations": [revocations(1, kids=(root.kid,))], "credentials": [cred7], "now": T0},
         signed, "issuer-untrusted"),
        ("trust/credential-not-from-root", "node 7's credential signed by a key that is not a root",
         {"credentials": [credential(node7, 7, signer=stranger)], "now": T0}, signed, "issuer-untrusted"),
        ("trust/credential-issuer-field", "signed by the root, but its issuer field names another key",
         {"credentials": [forged_credential(stranger.kid)], "now": T0}, signed, "credential-invalid"),
        ("trust/credential-unknown-key", "a credential payload with key 11: no extensions in credentials",
         {"credentials": [forged_credential(root.kid, {11: 0})], "now": T0}, signed, "credential-invalid"),
        ("trust/credential-wrong-aad", "a credential signed without the credential external_aad",
         {"credentials": [sign1(cbor2.dumps(cbor2.loads(
             Credential(node=7, public_key=VerifyKey(node7.public.raw), roles=frozenset({Role.NODE}),
                        not_before=start, not_after=end, serial=1, issuer=root.kid,
                        lineage="B").to_payload())), root)], "now": T0}, signed, "signature-invalid"),
        ("trust/credential-expired-at-add", "a credential already expired at now",
         {"credentials": [cred7], "now": end + 1}, signed, "key-expired"),
    ]
    # fmt: on
    valid, invalid = [], []
    for vector_id, description, given, data, code in cases:
        vector: dict[str, Any] = {
            "id": vector_id,
            "description": description,
            "roots": roots,
            "revocations": [item.hex() for item in given.get("revocations", [])],
            "credentials": [item.hex() for item in given.get("credentials", [])],
            "now": given["now"],
        }
        if "role" in given:
            vector["role"] = given["role"]
        vector["hex"] = data.hex()
        if code is None:
            payload = cose_payload(data)
            vector["payload_content_id"] = ContentId.of(payload).raw.hex()
            valid.append(vector)
        else:
            vector["code"] = code
            invalid.append(vector)
    return {
        "keys": {
            label: {"seed": hashlib.sha256(f"fleetwire test key: {label}".encode()).hexdigest(),
                    "public": key.public.raw.hex(), "kid": key.kid.hex()}
            for label, key in zip(TRUST_KEYS, (root, node7, node9, stranger), strict=True)
        },
        "valid": valid,
        "invalid": invalid,
    }


def cose_payload(envelope: bytes) -> bytes:
    payload: bytes = cbor2.loads(envelope).value[2]
    return payload


# --- error codes -----------------------------------------------------------------------


def code_tree() -> dict[str, str | None]:
    """Every error code a v1 reader reports, with its parent code (None for the root)."""
    from fleetwire.protocol import cose, envelope, keys, trust
    from fleetwire.protocol.ids import ContentIdError
    from fleetwire.protocol.messages import codec

    classes: set[type[FleetwireError]] = set()
    for module in (errors, cose, envelope, keys, trust, codec):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, errors.RemoteProtocolError):
                classes.add(value)
    classes.update({ContentIdError, UnknownMessageType})
    tree: dict[str, str | None] = {}
    for cls in sorted(classes, key=lambda c: c.code):
        parent = cls.__mro__[1]
        if parent.code == cls.code:
            continue  # a refinement inside one code (TruncatedCBOR is cbor-malformed)
        tree[cls.code] = parent.code if issubclass(parent, errors.RemoteProtocolError) else None
    return tree


# --- files -----------------------------------------------------------------------------


def documents() -> dict[str, dict[str, Any]]:
    """File name → JSON document, for every vector file of this version."""
    valid = []
    for vector_id, description, message in valid_messages():
        data = encode_message(message)
        valid.append(
            {
                "id": vector_id,
                "description": description,
                "type": type_name(message),
                "message": message_json(message),
                "edn": edn(cbor2.loads(data)),
                "hex": data.hex(),
                "content_id": ContentId.of(data).raw.hex(),
            }
        )
    common = {"format": FORMAT, "protocol_version": VERSION}
    return {
        "valid.json": {**common, "kind": "valid", "vectors": valid},
        "invalid.json": {**common, "kind": "invalid", "vectors": invalid_vectors()},
        "extensions.json": {**common, "kind": "extensions", "vectors": extension_vectors()},
        "envelopes.json": {**common, "kind": "envelopes", **envelope_vectors()},
        "trust.json": {**common, "kind": "trust", **trust_vectors()},
        "codes.json": {**common, "kind": "codes", "codes": code_tree()},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, document in documents().items():
        path = OUT / name
        text = render(document)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale vector files: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
