"""What the delivery checks cost on top of the signature, against raw Ed25519 in the same run.

A node accepts a message only after the signature, trust, role and replay checks (spec §10).
This times, per message: the raw limit (one ``cryptography`` Ed25519 verify of the payload),
the envelope verify alone (:func:`fleetwire.protocol.envelope.verify`), and the whole sans-IO
decision (verify + :func:`~fleetwire.protocol.roles.check_role` + the replay guard, with a
guard already holding ``--window`` records for the issuer, as a busy node's would). Figures are
µs/op and the ratio ``raw µs / case µs`` (1.0: free on top of the signature).

Timing: ``timeit`` over ``--number`` messages, best of ``--repeat`` interleaved rounds; every
message has its own sequence, so the guard accepts each (the common case).

    python benchmarks/bench_admission.py [--number N] [--repeat R] [--window W]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import timeit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetwire.protocol.envelope import seal, verify
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.protocol.replay import ReplayGuard, ReplayPolicy
from fleetwire.protocol.roles import check_role
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

NOW = 849_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--window", type=int, default=4096)
    args = parser.parse_args()

    root = SigningKey.from_seed(hashlib.sha256(b"root").digest())
    key = SigningKey.from_seed(hashlib.sha256(b"node 1").digest())
    trust = TrustStore([root.public])
    trust.add_credential(
        issue_credential(root, node=1, public_key=key.public, roles=[Role.NODE],
                         not_before=0, not_after=2 * NOW, serial=1),
        NOW,
    )  # fmt: skip
    claim = LeaseClaim(Header(issuer=1, issued_at=NOW, sequence=1), "dock/7", 60_000)
    envelope = seal(claim, key).envelope
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    payload = b"x" * 200
    signature = private.sign(payload)
    public = private.public_key()

    guard = ReplayGuard(ReplayPolicy(max_per_issuer=args.window))
    for n in range(args.window):
        guard.check(1, n, NOW, ContentId.of(b"%d" % n).raw, NOW)
    sequences = itertools.count(args.window)
    credential = trust.key_for(key.kid, NOW)

    def admit() -> None:
        signed = verify(envelope, trust, NOW)
        check_role(signed.message, credential)
        guard.check(1, next(sequences), NOW, signed.content_id.raw, NOW)

    cases = {
        "raw Ed25519 verify": lambda: public.verify(signature, payload),
        "envelope verify": lambda: verify(envelope, trust, NOW),
        "verify + role + replay": admit,
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeat):
        for name, case in cases.items():
            seconds = timeit.timeit(case, number=args.number)
            best[name] = min(best[name], seconds / args.number * 1e6)
    raw = best["raw Ed25519 verify"]
    for name, micros in best.items():
        print(f"{name:26s} {micros:8.1f} µs/op   ratio {raw / micros:5.2f}")
    print(f"replay records held: {guard.remembered()} (cap {args.window} per issuer)")


if __name__ == "__main__":
    main()
