"""Generate the test vectors of protocol versions 2 and 3 (spec/vectors/v2/, spec/vectors/v3/).

Usage::

    python spec/generate_later_vectors.py           # (re)write the files
    python spec/generate_later_vectors.py --check   # exit 1 if the files differ from a fresh run

Same format as version 1's (``fleetwire-vectors/1``, spec/README.md) and the same helpers
(spec/generate_vectors.py); the vectors of version N describe a *reader of version N*: what it
accepts (and re-encodes to the same bytes and content id) and what it refuses, with the code of
spec/v1/protocol.md §9. Version 1's vectors stay as they are: a reader of 2 or 3 must still
meet them where its window makes it read them (``fleetwire spec check``).

The codes and fields below are written by hand from the spec text (spec/v2/*.md, spec/v3/*.md,
and protocol.md §5 for the window), not copied from what fleetwire raises.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cbor2
from fleetwire.protocol.cose import sign1
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Ask,
    Award,
    Bid,
    BlockGrant,
    BlockRelease,
    BlockRenew,
    BlockRequest,
    DetailAnswer,
    DetailRequest,
    Digest,
    EscalationAck,
    EscalationClose,
    ExceptionReport,
    Header,
    IsolationAction,
    IsolationOrder,
    IsolationScope,
    LeaseClaim,
    Message,
    Resolution,
    Scope,
    Stats,
    Trigger,
    encode_message,
)
from fleetwire.protocol.messages.schema import MapOf

HERE = Path(__file__).resolve().parent


def _v1_generator() -> ModuleType:
    """spec/generate_vectors.py, for its helpers (it is a script, not a module of the package)."""
    spec = importlib.util.spec_from_file_location("generate_vectors", HERE / "generate_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V1 = _v1_generator()
FORMAT = V1.FORMAT
T0 = V1.T0
cid = V1.cid


def header(version: int, min_version: int | None = None, **changes: Any) -> Header:
    values: dict[str, Any] = {"issuer": 7, "issued_at": T0, "sequence": 3}
    values.update(changes)
    return Header(version=version, min_version=version if min_version is None else min_version, **values)


def changed(message: Message, change: Callable[[dict[int, Any]], None]) -> bytes:
    return V1.changed(message, change)  # type: ignore[no-any-return]


def _set(**items: Any) -> Callable[[dict[int, Any]], None]:
    return V1._set(**items)  # type: ignore[no-any-return]


def _in_metric(name: str, key: int, value: Any) -> Callable[[dict[int, Any]], None]:
    def change(raw: dict[int, Any]) -> None:
        raw[11][name][key] = value

    return change


# --- version 2 --------------------------------------------------------------------------------

STATS = Stats(
    count=720, mean=341_250, sigma=1_800, minimum=337_000, maximum=348_000,
    histogram=(12, 300, 380, 28), out_of_control=3, anomaly=3_750,
)  # fmt: skip
DIGEST = Digest(
    header(2, issuer=12, sequence=70),
    period_start=T0 - 3_600_000,
    period_end=T0,
    trigger=Trigger.THRESHOLD,
    metrics=(("temp", STATS), ("power-w", Stats(720, -12_500, 900, -15, -9, (720,), 0, 0))),
    details=(cid("detail chunk 1 of node 12"),),
)
DIGEST_ID = ContentId.of(encode_message(DIGEST))
REPORT_V2 = ExceptionReport(
    header(2, 1, sequence=4),
    code=1,
    severity=3,
    scope=Scope.CELL,
    scope_id=3,
    digest=DIGEST_ID,
    detail="radiator loop B at 341 K",
    lineage="B",
)
REPORT_ID = ContentId.of(encode_message(REPORT_V2))
BLOCK_REQUEST = BlockRequest(header(2, issuer=30, sequence=11), "feedstock/2026-XY", 400, 86_400_000)
BLOCK_GRANT = BlockGrant(
    header(2, issuer=2, sequence=500, references=(ContentId.of(encode_message(BLOCK_REQUEST)),)),
    pool="feedstock/2026-XY",
    block="r2-b17",
    cell=30,
    amount=400,
    fencing_token=17,
    expires_at=T0 + 86_400_000,
)
BLOCK_ID = ContentId.of(encode_message(BLOCK_GRANT))


def v2_valid() -> list[tuple[str, str, Message]]:
    refs = (REPORT_ID,)
    return [
        ("digest/threshold", "a threshold digest of two metrics, one detail chunk", DIGEST),
        ("detail-request/one", "a coordinator asks for one chunk, naming the digest",
         DetailRequest(header(2, issuer=3, sequence=9, references=(DIGEST_ID,)),
                       (cid("detail chunk 1 of node 12"),))),
        ("detail-answer/one", "the chunk's bytes (a CBOR map, opaque to the codec)",
         DetailAnswer(header(2, issuer=12, sequence=71), cid("detail chunk 1 of node 12"),
                      bytes.fromhex("a3000c011b000000be38feaa0002a0"))),
        ("escalation-ack/basic", "the region acknowledges an escalated report",
         EscalationAck(header(2, issuer=2, sequence=60, references=refs), REPORT_ID)),
        ("escalation-close/contained", "the region closes it as contained, with a detail",
         EscalationClose(header(2, issuer=2, sequence=61, references=refs), REPORT_ID,
                         Resolution.CONTAINED, "lineage B held in shadow mode")),
        ("isolation-order/sever-cell", "region 2 severs cell 4 of its own region",
         IsolationOrder(header(2, issuer=2, sequence=62), IsolationAction.SEVER,
                        IsolationScope.CELL, 4, "runaway lineage B")),
        ("isolation-order/lift-region", "a lift of region 5, no reason",
         IsolationOrder(header(2, issuer=2, sequence=63), IsolationAction.LIFT,
                        IsolationScope.REGION, 5)),
        ("block-request/basic", "a cell asks its region for 400 kg for a day", BLOCK_REQUEST),
        ("block-grant/basic", "the region grants block r2-b17", BLOCK_GRANT),
        ("block-renew/basic", "the cell renews the block",
         BlockRenew(header(2, issuer=30, sequence=12, references=(BLOCK_ID,)),
                    "feedstock/2026-XY", "r2-b17", 17, 86_400_000)),
        ("block-release/basic", "the cell gives the block back",
         BlockRelease(header(2, issuer=30, sequence=13, references=(BLOCK_ID,)),
                      "feedstock/2026-XY", "r2-b17", 17)),
        ("exception-report/lineage", "a v2 report with lineage (key 15), readable from v1",
         REPORT_V2),
        ("lease-claim/written-at-2", "a v1 type written at 2, readable from 1",
         LeaseClaim(header(2, 1), "feedstock/2026-XY/volume-3", 3_600_000, 2)),
    ]  # fmt: skip


def v2_invalid() -> list[tuple[str, str, bytes, str, str | None]]:
    bid = Bid(header(3), "feedstock/2026-XY", 1, 40)
    return [
        ("version/min-version-too-new", "written at 3, readable only from 3: a v2 reader cannot",
         changed(BLOCK_REQUEST, _set(k1=3, k2=3)), "version-unsupported", "header.min_version"),
        ("version/too-old", "written at version 0", changed(BLOCK_REQUEST, _set(k1=0, k2=0)),
         "version-unsupported", "header.version"),
        ("type/v3-type-under-a-v2-header", "type 24 (a v3 bid) claiming version 2: not a v2 type",
         changed(bid, _set(k1=2, k2=2)), "message-type-unknown", "type"),
        ("critical/unknown", "a digest with key 30 marked critical",
         changed(DIGEST, _set(k30=1, k7=[30])), "critical-field-unknown", "header.critical"),
        ("digest/period-reversed", "period_end before period_start",
         changed(DIGEST, _set(k9=T0 - 3_600_001)), "message-invalid", "period_end"),
        ("digest/trigger-unknown", "trigger 2", changed(DIGEST, _set(k10=2)),
         "message-invalid", "trigger"),
        ("digest/mean-past-int64", "a mean of 2^63", changed(DIGEST, _in_metric("temp", 1, 1 << 63)),
         "message-invalid", 'metrics["temp"].mean'),
        ("digest/histogram-empty", "a histogram of no buckets",
         changed(DIGEST, _in_metric("temp", 5, [])), "message-invalid", 'metrics["temp"].histogram'),
        ("digest/stats-unknown-key", "a stats map with key 8",
         changed(DIGEST, _in_metric("temp", 8, 0)), "message-invalid", 'metrics["temp"]'),
        ("digest/metric-name-empty", "a metric named by the empty text",
         changed(DIGEST, lambda raw: raw[11].update({"": raw[11]["temp"]})),
         "message-invalid", "metrics"),
        ("detail-request/none", "an empty list of details",
         changed(DetailRequest(header(2), (cid("x"),)), _set(k8=[])), "message-invalid", "details"),
        ("detail-answer/data-text", "data as a text string",
         changed(DetailAnswer(header(2), cid("x"), b"\x00"), _set(k9="00")), "message-invalid", "data"),
        ("escalation-close/resolution-unknown", "resolution 3",
         changed(EscalationClose(header(2), REPORT_ID, Resolution.RESOLVED), _set(k9=3)),
         "message-invalid", "resolution"),
        ("isolation-order/scope-node", "scope 0 (a node): only cells and regions are isolated",
         changed(IsolationOrder(header(2), IsolationAction.SEVER, IsolationScope.CELL, 4), _set(k9=0)),
         "message-invalid", "scope"),
        ("isolation-order/reason-empty", "an empty reason text",
         changed(IsolationOrder(header(2), IsolationAction.SEVER, IsolationScope.CELL, 4), _set(k11="")),
         "message-invalid", "reason"),
        ("block-request/amount-zero", "amount 0", changed(BLOCK_REQUEST, _set(k9=0)),
         "message-invalid", "amount"),
        ("block-grant/missing-token", "no fencing_token",
         changed(BLOCK_GRANT, lambda raw: raw.pop(12)), "message-invalid", "fencing_token"),
        ("exception-report/lineage-not-text", "a v2 report whose lineage is an integer",
         changed(REPORT_V2, _set(k15=2)), "message-invalid", "lineage"),
    ]  # fmt: skip


def v2_extensions() -> list[tuple[str, str, bytes]]:
    report_v1 = ExceptionReport(header(1), 1, 3, Scope.CELL, 3, detail="radiator loop B")
    return [
        ("extension/digest-unknown-key", "a digest with unknown key 30",
         changed(DIGEST, _set(k30="hint"))),
        ("extension/v4-writer", "a block request written at 4, readable from 2, key 40 not critical",
         changed(BLOCK_REQUEST, _set(k1=4, k40="v4-only"))),
        ("extension/key-15-from-a-v1-writer", "a report written at 1 with key 15: an extension, "
         "since a key is known only at the message's own version (v1 §5.3)",
         changed(report_v1, _set(k15=2))),
    ]  # fmt: skip


# --- version 3 --------------------------------------------------------------------------------

BID = Bid(header(3, issuer=40, sequence=5), "feedstock/2026-XY", 3, 120, term_ms=14_400_000)
AWARD = Award(
    header(3, issuer=2, sequence=800, references=(ContentId.of(encode_message(BID)),)),
    pool="feedstock/2026-XY",
    bidder=40,
    quantity=3,
    price=95,
    fencing_token=212,
    expires_at=T0 + 14_400_000,
)


def v3_valid() -> list[tuple[str, str, Message]]:
    return [
        ("bid/with-term", "a bid for 3 units at 120 with the term a lease claim would ask", BID),
        ("bid/plain", "a bid for one unit, no term",
         Bid(header(3, issuer=41, sequence=2), "feedstock/2026-XY", 1, 80)),
        ("ask/basic", "a node offers 10 units at a reserve of 60",
         Ask(header(3, issuer=44, sequence=9), "feedstock/2026-XY", 10, 60)),
        ("award/basic", "the clearing's award to node 40 at the uniform price 95", AWARD),
        ("digest/written-at-3", "a v2 type written at 3, readable from 2",
         Digest(header(3, 2, issuer=12, sequence=72), T0, T0 + 60_000, Trigger.PERIODIC, ())),
        ("lease-claim/written-at-3", "a v1 type written at 3, readable from 1",
         LeaseClaim(header(3, 1), "feedstock/2026-XY/volume-3", 3_600_000, 2)),
    ]  # fmt: skip


def v3_invalid() -> list[tuple[str, str, bytes, str, str | None]]:
    return [
        ("version/min-version-too-new", "written at 4, readable only from 4: a v3 reader cannot",
         changed(BID, _set(k1=4, k2=4)), "version-unsupported", "header.min_version"),
        ("version/too-old", "written at version 0", changed(BID, _set(k1=0, k2=0)),
         "version-unsupported", "header.version"),
        ("type/unknown", "type 99", changed(BID, _set(k0=99)), "message-type-unknown", "type"),
        ("critical/unknown", "a bid with key 30 marked critical", changed(BID, _set(k30=1, k7=[30])),
         "critical-field-unknown", "header.critical"),
        ("bid/quantity-zero", "quantity 0", changed(BID, _set(k9=0)), "message-invalid", "quantity"),
        ("bid/price-negative", "price -1", changed(BID, _set(k10=-1)), "message-invalid", "price"),
        ("ask/pool-bytes", "the pool as a byte string", changed(BID, _set(k0=25, k8=b"ore")),
         "message-invalid", "pool"),
        ("award/missing-token", "no fencing_token", changed(AWARD, lambda raw: raw.pop(12)),
         "message-invalid", "fencing_token"),
    ]  # fmt: skip


def v3_extensions() -> list[tuple[str, str, bytes]]:
    return [
        ("extension/bid-unknown-key", "a bid with unknown key 30", changed(BID, _set(k30=[1, 2]))),
        ("extension/v4-writer", "an award written at 4, readable from 3, key 40 not critical",
         changed(AWARD, _set(k1=4, k40={"note": "v4"}))),
    ]  # fmt: skip


# --- files ------------------------------------------------------------------------------------


def message_json(message: Message) -> dict[str, Any]:
    """Version 1's named-field form; a map of named entries (a digest's metrics) as an object
    of named-field objects."""
    out: dict[str, Any] = V1.message_json(message)
    for field in message.FIELDS:
        if isinstance(field.kind, MapOf) and field.name in out:
            out[field.name] = {
                name: V1._fields_json(field.kind.value.fields, value)  # type: ignore[attr-defined]
                for name, value in getattr(message, field.name)
            }
    return out


def _valid_json(vector_id: str, description: str, message: Message) -> dict[str, Any]:
    data = encode_message(message)
    return {
        "id": vector_id,
        "description": description,
        "type": V1.type_name(message),
        "message": message_json(message),
        "edn": V1.edn(cbor2.loads(data)),
        "hex": data.hex(),
        "content_id": ContentId.of(data).raw.hex(),
    }


def _extension_json(vector_id: str, description: str, data: bytes, version: int) -> dict[str, Any]:
    from fleetwire.protocol.messages import decode_message

    message = decode_message(data, version=version)
    return {
        "id": vector_id,
        "description": description,
        "hex": data.hex(),
        "content_id": ContentId.of(data).raw.hex(),
        "extensions": {str(k): V1.edn(v) for k, v in message.extensions},
    }


def _envelopes(valid: list[tuple[str, str, Message]], invalid: list[tuple[str, str, bytes, str, str]]) -> dict[str, Any]:
    key = SigningKey.from_seed(V1.TEST_SEED)
    return {
        "key": {
            "description": "RFC 8032 §7.1 TEST 1 Ed25519 key; kid = content id of the public key",
            "seed": V1.TEST_SEED.hex(),
            "public": key.public.raw.hex(),
            "kid": key.kid.hex(),
        },
        "valid": [
            {
                "id": f"signed/{vector_id}",
                "description": f"COSE_Sign1 of the valid vector {vector_id}",
                "hex": sign1(encode_message(message), key).hex(),
                "payload_content_id": ContentId.of(encode_message(message)).raw.hex(),
            }
            for vector_id, _, message in valid
        ],
        "invalid": [
            {"id": i, "description": d, "hex": sign1(payload, key).hex(), "code": c, "field": f}
            for i, d, payload, c, f in invalid
        ],
    }


def documents(version: int) -> dict[str, dict[str, Any]]:
    """File name → JSON document, for every vector file of ``version`` (2 or 3)."""
    if version == 2:
        valid, invalid, extensions = v2_valid(), v2_invalid(), v2_extensions()
        signed = [v for v in valid if v[0] in {"digest/threshold", "block-grant/basic"}]
        signed_invalid = [("signed/payload-needs-v3", "a signed v3 bid: a v2 reader cannot read it",
                           encode_message(BID), "version-unsupported", "header.min_version")]  # fmt: skip
    else:
        valid, invalid, extensions = v3_valid(), v3_invalid(), v3_extensions()
        signed = [v for v in valid if v[0] in {"bid/with-term", "award/basic"}]
        signed_invalid = [("signed/payload-quantity-zero", "a signed bid for 0 units",
                           changed(BID, _set(k9=0)), "message-invalid", "quantity")]  # fmt: skip
    common = {"format": FORMAT, "protocol_version": version}
    return {
        "valid.json": {**common, "kind": "valid", "vectors": [_valid_json(*v) for v in valid]},
        "invalid.json": {
            **common,
            "kind": "invalid",
            "vectors": [
                {"id": i, "description": d, "hex": h.hex(), "code": c, **({"field": f} if f else {})}
                for i, d, h, c, f in invalid
            ],
        },
        "extensions.json": {
            **common,
            "kind": "extensions",
            "vectors": [_extension_json(*e, version) for e in extensions],
        },
        "envelopes.json": {**common, "kind": "envelopes", **_envelopes(signed, signed_invalid)},
        "codes.json": {**common, "kind": "codes", "codes": V1.code_tree()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for version in (2, 3):
        out = HERE / "vectors" / f"v{version}"
        for name, document in documents(version).items():
            path = out / name
            text = V1.render(document)
            if args.check:
                if not path.exists() or path.read_text(encoding="utf-8") != text:
                    stale.append(f"v{version}/{name}")
            else:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if stale:
        print("stale vector files: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
