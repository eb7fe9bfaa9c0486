"""Sign and verify pipelines of coordination messages, as ratios to raw Ed25519 and raw cbor2.

    python benchmarks/bench_pipeline.py [--message NAME ...] [--rounds N] [--pure-python] [--check]

Sign pipeline: build the message → deterministic CBOR → content id → COSE_Sign1 (Ed25519).
Verify pipeline: parse the envelope → trust-store lookup → Ed25519 verify → decode and
validate the message → issuer check → content id. Each is compared with the raw operation it
cannot avoid, measured in the same run on the same bytes: Ed25519 sign / verify of the
Sig_structure (``cryptography``), and ``cbor2`` dumps / loads of the same message map. The
goal (issue "foundation"): both pipelines at ≥ 0.8 of raw Ed25519 throughput, i.e. codec,
hashing and validation cost at most a quarter of the time.

Three messages: a lease claim (the commonest message of a busy cell, ~50 bytes), a lease grant
(the authority's answer, with a content id, ~100 bytes) and a capability advertisement with two
nested capabilities (~170 bytes). ``--pure-python`` takes the codec's C accelerator out, to
show what an install without a compiler gets. ``--check`` exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
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
    LeaseGrant,
    Message,
    accel,
    codec,
    decode_message,
    encode_message,
)
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

NOW = 820_000_000_000
ROOT = SigningKey.from_seed(b"\x01" * 32)
NODE = SigningKey.from_seed(b"\x02" * 32)
PARENT = ContentId.of(b"previous advertisement")


def build_claim() -> LeaseClaim:
    """A lease claim, the commonest message of a busy cell."""
    return LeaseClaim(
        header=Header(issuer=4711, issued_at=NOW, sequence=42),
        resource="cell-3/dock-2",
        term_ms=7_200_000,
    )


def build_grant() -> LeaseGrant:
    """A lease grant: the authority's answer to a claim, naming it by content id."""
    return LeaseGrant(
        header=Header(issuer=4711, issued_at=NOW, sequence=43, references=(PARENT,)),
        resource="cell-3/dock-2",
        holder=4712,
        claim=PARENT,
        fencing_token=1_000_017,
        term_ms=7_200_000,
        expires_at=NOW + 7_200_000,
    )


def build() -> CapabilityAdvertisement:
    """A capability advertisement with two nested capabilities."""
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


MESSAGES: dict[str, Callable[[], Message]] = {
    "claim": build_claim,
    "grant": build_grant,
    "advertisement": build,
}


def paired(
    raw: Callable[[], object], pipeline: Callable[[], object], number: int, rounds: int
) -> tuple[float, float, float]:
    """(raw µs, pipeline µs, throughput ratio) from many short blocks taken in turns.

    Each round times a block of ``number`` raw calls and a block of ``number`` pipeline calls
    back to back, in a random order. The ratio is the median over rounds of the two blocks'
    ratio: a virtual CPU's speed drifts (here by up to 1.7x within minutes), but two blocks a
    millisecond apart see the same speed, so their ratio does not drift with it. The times
    are the medians of the blocks.
    """
    raws, pipelines, ratios = [], [], []
    coin = random.Random(0)
    for _ in range(rounds):
        if coin.random() < 0.5:
            r = timeit.timeit(raw, number=number)
            p = timeit.timeit(pipeline, number=number)
        else:
            p = timeit.timeit(pipeline, number=number)
            r = timeit.timeit(raw, number=number)
        raws.append(r / number * 1e6)
        pipelines.append(p / number * 1e6)
        ratios.append(r / p)
    return statistics.median(raws), statistics.median(pipelines), statistics.median(ratios)


def measure(make: Callable[[], Message], trust: TrustStore, number: int, rounds: int) -> dict[str, float]:
    message = make()
    payload = encode_message(message)
    envelope = seal(message, NODE).envelope
    wire_map = cbor2.loads(payload)
    raw_key = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
    raw_public = raw_key.public_key()
    tbs = cose.sig_structure(cose.PROTECTED_EDDSA, b"", payload)
    signature = raw_key.sign(tbs)
    assert verify(envelope, trust, NOW).message == message
    figures: dict[str, float] = {}
    figures["raw sign"], figures["sign"], figures["sign ratio"] = paired(
        lambda: raw_key.sign(tbs), lambda: seal(make(), NODE), number, rounds
    )
    figures["raw verify"], figures["verify"], figures["verify ratio"] = paired(
        lambda: raw_public.verify(signature, tbs), lambda: verify(envelope, trust, NOW),
        max(1, number // 4), rounds,
    )  # fmt: skip
    figures["cbor2.dumps"], figures["encode"], _ = paired(
        lambda: cbor2.dumps(wire_map), lambda: encode_message(message), number * 5, rounds // 3
    )
    figures["cbor2.loads"], figures["decode"], _ = paired(
        lambda: cbor2.loads(payload), lambda: decode_message(payload), number * 5, rounds // 3
    )
    figures["build"] = min(timeit.repeat(make, number=number * 5, repeat=rounds // 3)) / number / 5 * 1e6
    figures["bytes"] = len(payload)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    parser.add_argument(
        "--message", choices=list(MESSAGES), action="append",
        help="which message to measure (repeatable; default: all three)",
    )  # fmt: skip
    parser.add_argument("--pure-python", action="store_true", help="without the C accelerator")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.pure_python:
            stack.enter_context(codec.without_accelerator())
        return run(args)


def run(args: argparse.Namespace) -> int:
    trust = TrustStore([ROOT.public])
    trust.add_credential(
        issue_credential(
            ROOT, node=4711, public_key=NODE.public, roles=[Role.NODE],
            not_before=0, not_after=NOW * 2, serial=1,
        ),
        NOW,
    )  # fmt: skip
    road = "pure Python" if args.pure_python or not accel.AVAILABLE else "C accelerator"
    print(f"codec: {road}; medians of {args.rounds} paired blocks of runs; times in µs")
    print(
        f"{'message':14} {'bytes':>5} {'raw sign':>9} {'sign':>7} {'ratio':>6}   "
        f"{'raw verify':>10} {'verify':>7} {'ratio':>6}   {'build':>6} {'encode':>7} "
        f"{'dumps':>6} {'decode':>7} {'loads':>6}"
    )
    missed = False
    for name in args.message or list(MESSAGES):
        f = measure(MESSAGES[name], trust, args.number, args.rounds)
        sign_ratio, verify_ratio = f["sign ratio"], f["verify ratio"]
        missed |= sign_ratio < 0.8 or verify_ratio < 0.8
        print(
            f"{name:14} {f['bytes']:5.0f} {f['raw sign']:9.1f} {f['sign']:7.1f} {sign_ratio:6.3f}   "
            f"{f['raw verify']:10.1f} {f['verify']:7.1f} {verify_ratio:6.3f}   {f['build']:6.2f} "
            f"{f['encode']:7.2f} {f['cbor2.dumps']:6.2f} {f['decode']:7.2f} {f['cbor2.loads']:6.2f}"
        )
    print("ratio: pipeline throughput / raw Ed25519 throughput (goal ≥ 0.8); build: making the")
    print("message objects (part of sign); dumps / loads: raw cbor2 on the same map and bytes")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
