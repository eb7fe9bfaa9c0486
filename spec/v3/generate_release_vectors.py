"""Write spec/v3/release-vectors.json: test vectors of the version-3 release objects.

Deterministic (fixed content, RFC 8032 §7.1 TEST 1 key, Ed25519 signatures are deterministic):
``--check`` compares the committed file with a fresh generation instead of writing it. Codes
of the invalid vectors are written by hand from release.md §7, not copied from what fleetwire
raises; the vector test checks that fleetwire agrees.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cbor2
from fleetwire.protocol import cbor
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.release.carriage import Holdings, NodeReport
from fleetwire.protocol.release.manifest import ChunkRef, Manifest, Version
from fleetwire.protocol.release.messages import (
    ChunkAnswer,
    ChunkRequest,
    RolloutStage,
    StageAction,
)
from fleetwire.protocol.release.orders import PolicyTable, RevocationOrder
from fleetwire.protocol.release.wire import (
    MANIFEST_AAD,
    POLICY_AAD,
    REVOCATION_AAD,
    ROLLOUT_STAGE_AAD,
)

OUT = Path(__file__).resolve().parent / "release-vectors.json"
TEST_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
#: The node number the test key belongs to; its credential grants the release role (5).
SIGNER = 900
T = 820_000_000_000  # DTN ms

CHUNK_BYTES = [b"fleetwire release chunk %d" % i for i in range(3)]
CHUNKS = [ChunkRef(ContentId.of(data), len(data)) for data in CHUNK_BYTES]
MANIFEST = Manifest(
    lineage="B",
    version=Version(3, 0, 0),
    chunks=tuple(CHUNKS),
    min_peer_version=1,
    max_peer_version=3,
    issuer=SIGNER,
    issued_at=T,
)
RELEASE = MANIFEST.release_id

SIGNED: list[tuple[str, str, str, Any, bytes]] = [
    ("manifest/basic", "a release of lineage B, 3.0.0, in three chunks", "manifest",
     MANIFEST, MANIFEST_AAD),
    ("rollout-stage/install-canary", "install in shadow mode in the canary cell", "rollout-stage",
     RolloutStage(1, T, SIGNER, RELEASE, 0, StageAction.INSTALL_SHADOW, (4,)), ROLLOUT_STAGE_AAD),
    ("rollout-stage/grant-wave", "grant authority to the first wave", "rollout-stage",
     RolloutStage(2, T, SIGNER, RELEASE, 1, StageAction.GRANT_AUTHORITY, (1, 2, 7)),
     ROLLOUT_STAGE_AAD),
    ("rollout-stage/roll-back-to-none", "roll the canary back with no release to return to",
     "rollout-stage", RolloutStage(4, T, SIGNER, RELEASE, 0, StageAction.ROLL_BACK, (4,)),
     ROLLOUT_STAGE_AAD),
    ("rollout-stage/roll-back", "roll the canary back to 2.4.1", "rollout-stage",
     RolloutStage(3, T, SIGNER, RELEASE, 0, StageAction.ROLL_BACK, (4,), Version(2, 4, 1)),
     ROLLOUT_STAGE_AAD),
    ("authority-revocation/version", "take authority from B 3.0.0", "authority-revocation",
     RevocationOrder(11, T, SIGNER, "B", Version(3, 0, 0), "shadow outputs diverge"),
     REVOCATION_AAD),
    ("authority-revocation/lineage", "take authority from every version of lineage C",
     "authority-revocation", RevocationOrder(12, T, SIGNER, "C"), REVOCATION_AAD),
    ("policy-table/flags", "two feature flags and two standing revocations", "policy-table",
     PolicyTable(5, T, SIGNER, {"market-bids": True, "auditor-v2": False},
                 (("B", Version(3, 0, 0)), ("C", None))), POLICY_AAD),
    ("policy-table/empty", "no flags, no revocations", "policy-table",
     PolicyTable(6, T, SIGNER), POLICY_AAD),
]  # fmt: skip

UNSIGNED: list[tuple[str, str, str, Any]] = [
    ("chunk-request/two", "ask for two chunks of a release", "chunk-request",
     ChunkRequest(RELEASE, (CHUNKS[0].id, CHUNKS[2].id))),
    ("chunk-answer/basic", "one chunk and its bytes", "chunk-answer",
     ChunkAnswer(CHUNKS[1].id, CHUNK_BYTES[1])),
    ("holdings/two", "a neighbour holds two chunks (§5.5)", "holdings",
     Holdings(frozenset((CHUNKS[0].id, CHUNKS[1].id)))),
    ("node-report/shadow", "node 12 of cell 3 installed the release; 40 shadow comparisons "
     "agreed; the payload only: its envelope is signed by the node's own key (§5.5)",
     "node-report", NodeReport(12, T, RELEASE, 3, True, agreed=40, passed=2)),
]  # fmt: skip


def _payload(fields: dict[int, Any]) -> bytes:
    return cbor.encode(fields)


def _manifest_with(**changes: Any) -> dict[int, Any]:
    fields: dict[int, Any] = cbor.decode(MANIFEST.to_payload())
    for key, value in changes.items():
        label = int(key[1:])
        if value is None:
            del fields[label]
        else:
            fields[label] = value
    return fields


CID = CHUNKS[0].id.raw
#: (id, description, object, payload, code, structural)
INVALID: list[tuple[str, str, str, bytes, str, bool]] = [
    ("manifest/unknown-key", "a key the reader does not know is refused, not ignored",
     "manifest", _payload(_manifest_with(k9=1)), "release-format", True),
    ("manifest/no-chunks", "a release of no chunk", "manifest",
     _payload(_manifest_with(k3=[])), "release-format", True),
    ("manifest/chunk-too-large", "a chunk over 1 MiB", "manifest",
     _payload(_manifest_with(k3=[[CID, 1048577]])), "release-format", True),
    ("manifest/peer-window-inverted", "min_peer_version above max_peer_version", "manifest",
     _payload(_manifest_with(k4=4)), "release-format", False),
    ("manifest/lineage-empty", "an empty lineage", "manifest",
     _payload(_manifest_with(k1="")), "release-format", True),
    ("manifest/bad-content-id", "a chunk id with an unknown hash code", "manifest",
     _payload(_manifest_with(k3=[[b"\x13\x20" + bytes(32), 5]])), "release-format", False),
    ("manifest/not-deterministic", "the map's keys in descending order (RFC 8949 §4.2.1)",
     "manifest", cbor2.dumps(dict(reversed(_manifest_with().items()))), "release-format",
     False),
    ("chunk-request/repeated", "the same chunk asked twice", "chunk-request",
     _payload({1: RELEASE.raw, 2: [CID, CID]}), "release-format", False),
    ("chunk-answer/empty", "an answer with no bytes", "chunk-answer",
     _payload({1: CID, 2: b""}), "release-format", True),
    ("rollout-stage/action-unknown", "action 9", "rollout-stage",
     _payload({1: 1, 2: T, 3: SIGNER, 4: RELEASE.raw, 5: 0, 6: 9, 7: [4]}),
     "release-format", True),
    ("rollout-stage/cells-unsorted", "cells out of order", "rollout-stage",
     _payload({1: 1, 2: T, 3: SIGNER, 4: RELEASE.raw, 5: 1, 6: 2, 7: [7, 1]}),
     "release-format", False),
    ("rollout-stage/to-without-roll-back", "a return version on a grant", "rollout-stage",
     _payload({1: 1, 2: T, 3: SIGNER, 4: RELEASE.raw, 5: 1, 6: 2, 7: [1], 8: [2, 4, 1]}),
     "release-format", False),
    ("authority-revocation/version-short", "a version of two numbers", "authority-revocation",
     _payload({1: 1, 2: T, 3: SIGNER, 4: "B", 5: [3, 0]}), "release-format", True),
    ("policy-table/flag-not-bool", "a flag that is not true or false", "policy-table",
     _payload({1: 1, 2: T, 3: SIGNER, 4: {"x": 1}, 5: []}), "release-format", True),
    ("holdings/repeated", "the same chunk named twice", "holdings",
     _payload({1: [CID, CID]}), "release-format", False),
    ("node-report/installed-not-bool", "installed given as 1", "node-report",
     _payload({1: 12, 2: T, 3: RELEASE.raw, 4: 3, 5: 1, 6: 0, 7: 0, 8: 0, 9: 0, 10: True}),
     "release-format", True),
]  # fmt: skip


def documents() -> dict[str, Any]:
    key = SigningKey.from_seed(TEST_SEED)
    valid = []
    for vector_id, description, rule, value, aad in SIGNED:
        payload = value.to_payload()
        valid.append(
            {
                "id": vector_id,
                "description": description,
                "object": rule,
                "hex": payload.hex(),
                "content_id": ContentId.of(payload).raw.hex(),
                "external_aad": aad.decode(),
                "envelope": value.sign(key).hex(),
            }
        )
    for vector_id, description, rule, value in UNSIGNED:
        payload = value.to_payload()
        valid.append(
            {
                "id": vector_id,
                "description": description,
                "object": rule,
                "hex": payload.hex(),
                "content_id": ContentId.of(payload).raw.hex(),
            }
        )
    invalid = [
        {
            "id": vector_id,
            "description": description,
            "object": rule,
            "hex": payload.hex(),
            "code": code,
            "structural": structural,
        }
        for vector_id, description, rule, payload, code, structural in INVALID
    ]
    return {
        "format": "fleetwire-vectors/1",
        "protocol_version": 3,
        "kind": "release",
        "key": {
            "description": "RFC 8032 §7.1 TEST 1 Ed25519 key; its credential names node 900 "
            "and grants the release role (5)",
            "seed": TEST_SEED.hex(),
            "public": key.public.raw.hex(),
            "kid": key.kid.hex(),
            "node": SIGNER,
        },
        "valid": valid,
        "invalid": invalid,
    }


def render(document: Any) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render(documents())
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"stale vector file: {OUT.name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
