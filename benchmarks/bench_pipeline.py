"""Sign and verify pipelines of a coordination message, as ratios to raw Ed25519 and raw cbor2.

    python benchmarks/bench_pipeline.py [--rounds N] [--check]

Sign pipeline: build the message → deterministic CBOR → content id → COSE_Sign1 (Ed25519).
Verify pipeline: parse the envelope → trust-store lookup → Ed25519 verify → decode and
validate the message → issuer check → content id. Each is compared with the raw operation it
cannot avoid, measured in the same run on the same bytes: Ed25519 sign / verify of the
Sig_structure (``cryptography``), and ``cbor2`` dumps / loads of the same message map. The
goal (issue "foundation"): both pipelines at ≥ 0.8 of raw Ed25519 throughput. ``--check``
exits non-zero when a goal is missed.
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
from collections.abc import Callable

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetwire.protocol import cose
from fleetwire.protocol.envelope import seal, verify
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Header,
    LeaseClaim,
    decode_message,
    encode_message,
)
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

NOW = 820_000_000_000
ROOT = SigningKey.from_seed(b"\x01" * 32)
NODE = SigningKey.from_seed(b"\x02" * 32)
PARENT = ContentId.of(b"previous advertisement")


def build_claim() -> LeaseClaim:
    """A lease claim, the commonest message of a busy cell (about 60 bytes of CBOR)."""
    return LeaseClaim(
        header=Header(issuer=4711, issued_at=NOW, sequence=42),
        resource="cell-3/dock-2",
        term_ms=7_200_000,
    )


def build() -> CapabilityAdvertisement:
    """A capability advertisement with two capabilities (about 170 bytes of CBOR)."""
    return CapabilityAdvertisement(
        header=Header(issuer=4711, issued_at=NOW, sequence=42, references=(PARENT,)),
        capabilities=(
            Capability("refine/carbonaceous", 40_000, "kg", NOW, NOW + 86_400_000 * 30),
            Capability("fabricate/truss", 12, "unit", NOW, NOW + 86_400_000 * 30),
        ),
        versions=(1, 1),
        lineage="B",
        cell=17,
    )


def paired(
    raw: Callable[[], object], pipeline: Callable[[], object], number: int, rounds: int
) -> tuple[float, float]:
    """Best per-call µs of ``raw`` and ``pipeline`` over many short runs in shuffled order.

    Short runs, taking turns in a random order, mean that load from elsewhere on the machine
    (and a virtual CPU's changing speed) hits both alike; the best of many is the least
    disturbed one.
    """
    best = {"raw": float("inf"), "pipeline": float("inf")}
    functions = {"raw": raw, "pipeline": pipeline}
    order = list(functions)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            best[name] = min(best[name], timeit.timeit(functions[name], number=number) / number)
    return best["raw"] * 1e6, best["pipeline"] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=120)
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    parser.add_argument(
        "--message", choices=["advertisement", "claim"], default="advertisement",
        help="which message to build (default: a capability advertisement)",
    )  # fmt: skip
    args = parser.parse_args()
    make = build if args.message == "advertisement" else build_claim

    trust = TrustStore([ROOT.public])
    trust.add_credential(
        issue_credential(
            ROOT, node=4711, public_key=NODE.public, roles=[Role.NODE],
            not_before=0, not_after=NOW * 2, serial=1,
        ),
        NOW,
    )  # fmt: skip
    message = make()
    payload = encode_message(message)
    envelope = seal(message, NODE).envelope
    wire_map = cbor2.loads(payload)
    raw_key = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
    raw_public = raw_key.public_key()
    tbs = cose.sig_structure(cose.PROTECTED_EDDSA, b"", payload)
    signature = raw_key.sign(tbs)
    assert verify(envelope, trust, NOW).message == message

    n, r = args.number, args.rounds
    raw_sign, sign_pipeline = paired(lambda: raw_key.sign(tbs), lambda: seal(make(), NODE), n, r)
    raw_verify, verify_pipeline = paired(
        lambda: raw_public.verify(signature, tbs), lambda: verify(envelope, trust, NOW), n // 4, r
    )
    raw_dumps, encode = paired(lambda: cbor2.dumps(wire_map), lambda: encode_message(message), n * 5, r)
    raw_loads, decode = paired(lambda: cbor2.loads(payload), lambda: decode_message(payload), n * 5, r)

    sign_ratio = raw_sign / sign_pipeline
    verify_ratio = raw_verify / verify_pipeline
    print(f"message: {len(payload)} bytes of CBOR, envelope {len(envelope)} bytes")
    print(f"{'operation':44} {'µs/op':>9} {'ops/s':>10}")
    for name, value in [
        ("raw Ed25519 sign (cryptography)", raw_sign),
        ("sign pipeline: build+encode+id+COSE_Sign1", sign_pipeline),
        ("raw Ed25519 verify (cryptography)", raw_verify),
        ("verify pipeline: parse+trust+verify+decode", verify_pipeline),
        ("raw cbor2.dumps of the same map", raw_dumps),
        ("encode_message (deterministic)", encode),
        ("raw cbor2.loads of the same bytes", raw_loads),
        ("decode_message (validate + determinism)", decode),
    ]:
        print(f"{name:44} {value:9.2f} {1e6 / value:10.0f}")
    print(f"sign pipeline / raw sign throughput:     {sign_ratio:.3f}  (goal ≥ 0.8)")
    print(f"verify pipeline / raw verify throughput: {verify_ratio:.3f}  (goal ≥ 0.8)")
    print(f"encode_message / raw cbor2.dumps time:   {encode / raw_dumps:.2f}x")
    if args.check and (sign_ratio < 0.8 or verify_ratio < 0.8):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
