"""COSE_Sign1 against a peer implementation: ours in-process, pycose in its own interpreter.

The peer is pycose (PyPI ``cose`` 0.9.dev8, the COSE working group's Python library), in a
temporary virtual environment with ``cbor2<6`` (that release cannot decode with cbor2 6). Both
sides sign the same payload — a capability advertisement's deterministic bytes — with the same
Ed25519 key and the same headers ({1: -8} protected, {4: kid} unprotected), and each verifies
the other's envelope. Measured on each side, against that side's own raw Ed25519 sign / verify
timed in the same process (the two processes run one after the other, so only ratios compare):

* sign: payload → tagged COSE_Sign1 bytes (ours: ``cose.sign1``; pycose: ``Sign1Message`` →
  ``encode()``);
* verify: envelope bytes → checked payload (ours: ``parse_sign1`` + ``verify_sign1``; pycose:
  ``CoseMessage.decode`` + ``verify_signature``).

Ours also runs the whole message pipelines (``seal`` of a freshly built message, ``verify``
with the trust store), which pycose has no counterpart for.

Usage: ``python benchmarks/bench_cose_peer.py [--pycose-python PATH]`` (or set
FLEETWIRE_PYCOSE_PYTHON); without either, pycose is installed into a temporary environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from bench_pipeline import NODE, NOW, ROOT, build, paired
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetwire.protocol import cose
from fleetwire.protocol.envelope import seal, verify
from fleetwire.protocol.messages import encode_message
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

ROUNDS = 200

PEER = r'''
import json, sys, timeit
from cose.algorithms import EdDSA
from cose.headers import KID, Algorithm
from cose.keys import OKPKey
from cose.keys.curves import Ed25519
from cose.messages import CoseMessage, Sign1Message
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
job = json.load(sys.stdin)
seed, public, kid = (bytes.fromhex(job[k]) for k in ("seed", "public", "kid"))
payload, ours = bytes.fromhex(job["payload"]), bytes.fromhex(job["envelope"])
key = OKPKey(crv=Ed25519, d=seed, x=public)
raw = Ed25519PrivateKey.from_private_bytes(seed)
tbs = bytes.fromhex(job["tbs"])
signature = raw.sign(tbs)

def sign():
    message = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={KID: kid}, payload=payload)
    message.key = key
    return message.encode()

def check(data):
    message = CoseMessage.decode(data)
    message.key = key
    if not message.verify_signature():
        raise ValueError("bad signature")
    return message.payload

def paired(raw, case, number, rounds):
    # as bench_pipeline.paired: medians of blocks timed back to back, and of their ratios
    import statistics
    raws, cases, ratios = [], [], []
    for _ in range(rounds):
        r = timeit.timeit(raw, number=number)
        c = timeit.timeit(case, number=number)
        raws.append(r / number * 1e6); cases.append(c / number * 1e6); ratios.append(r / c)
    return statistics.median(raws), statistics.median(cases), statistics.median(ratios)

n, rounds = job["number"], job["rounds"]
public_key = raw.public_key()
out = {"same_bytes": sign() == ours, "verifies_ours": check(ours) == payload,
       "envelope": sign().hex()}
out["raw sign"], out["sign"], out["sign ratio"] = paired(lambda: raw.sign(tbs), sign, n, rounds)
out["raw verify"], out["verify"], out["verify ratio"] = paired(
    lambda: public_key.verify(signature, tbs), lambda: check(ours), max(1, n // 4), rounds)
json.dump(out, sys.stdout)
'''


def pycose_python(given: str | None, workdir: Path) -> Path:
    if given:
        return Path(given)
    where = workdir / "pycose-venv"
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "cose==0.9.dev8", "cbor2<6"], check=True)  # fmt: skip
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pycose-python", default=os.environ.get("FLEETWIRE_PYCOSE_PYTHON"))
    parser.add_argument("--number", type=int, default=200, help="operations per round")
    args = parser.parse_args()

    payload = encode_message(build())
    envelope = cose.sign1(payload, NODE)
    tbs = cose.sig_structure(cose.PROTECTED_EDDSA, b"", payload)
    with tempfile.TemporaryDirectory() as tmp:
        python = pycose_python(args.pycose_python, Path(tmp))
        job = {"seed": NODE.seed.hex(), "public": NODE.public.raw.hex(), "kid": NODE.kid.hex(),
               "payload": payload.hex(), "envelope": envelope.hex(), "tbs": tbs.hex(),
               "number": args.number, "rounds": ROUNDS}  # fmt: skip
        result = subprocess.run([str(python), "-c", PEER], input=json.dumps(job).encode(),
                                capture_output=True, check=True)  # fmt: skip
        peer = json.loads(result.stdout)

    trust = TrustStore([ROOT.public])
    trust.add_credential(
        issue_credential(ROOT, node=4711, public_key=NODE.public, roles=[Role.NODE],
                         not_before=0, not_after=NOW * 2, serial=1),
        NOW,
    )  # fmt: skip
    raw = Ed25519PrivateKey.from_private_bytes(NODE.seed)
    signature = raw.sign(tbs)
    n, public = args.number, raw.public_key()
    ours: dict[str, float] = {}
    ours["raw sign"], ours["sign"], ours["sign ratio"] = paired(
        lambda: raw.sign(tbs), lambda: cose.sign1(payload, NODE), n, ROUNDS
    )
    ours["raw verify"], ours["verify"], ours["verify ratio"] = paired(
        lambda: public.verify(signature, tbs),
        lambda: cose.verify_sign1(cose.parse_sign1(envelope), NODE.public), max(1, n // 4), ROUNDS,
    )  # fmt: skip
    _, ours["seal"], ours["seal ratio"] = paired(
        lambda: raw.sign(tbs), lambda: seal(build(), NODE), n, ROUNDS
    )
    _, ours["verify message"], ours["verify message ratio"] = paired(
        lambda: public.verify(signature, tbs), lambda: verify(envelope, trust, NOW),
        max(1, n // 4), ROUNDS,
    )  # fmt: skip
    theirs_ok = cose.verify_sign1(cose.parse_sign1(bytes.fromhex(peer["envelope"])), NODE.public)

    print(f"payload: a {len(payload)}-byte capability advertisement; envelope {len(envelope)} bytes")
    print(f"pycose writes the same bytes: {peer['same_bytes']}; pycose verifies ours: "
          f"{peer['verifies_ours']}; we verify pycose's: {theirs_ok == payload}")
    print(f"{'':30}{'ours µs':>9}{'ratio':>7}{'pycose µs':>11}{'ratio':>7}{'speed-up':>10}")
    for name in ("sign", "verify"):
        mine, peers = ours[f"{name} ratio"], peer[f"{name} ratio"]
        print(f"COSE_Sign1 {name:19}{ours[name]:9.1f}{mine:7.3f}{peer[name]:11.1f}{peers:7.3f}"
              f"{mine / peers:9.1f}x")  # fmt: skip
    for name in ("seal", "verify message"):
        print(f"{'whole pipeline: ' + name:30}{ours[name]:9.1f}{ours[name + ' ratio']:7.3f}")
    print("ratio: raw Ed25519 throughput / case throughput on the same side (medians of paired")
    print("blocks); speed-up: our ratio over pycose's, i.e. throughput at equal Ed25519 speed")


if __name__ == "__main__":
    main()
