"""BPv7 codec speed: ours in-process against pyd3tn 0.15.2 in its own interpreter, same bundles.

The bundle: ipn EIDs, 300-byte payload, CRC-32C on the primary and payload blocks. Measured:

* encode — a built bundle value to bytes (ours: ``encode_bundle``; pyd3tn: ``bytes(Bundle)``);
* parse + CRC check — bytes to a bundle value with every block's CRC verified (ours:
  ``decode_bundle``; pyd3tn: ``Bundle.parse`` then ``calculate_crc() == crc_provided`` per block).

Both sides time the same bytes in the same run (pyd3tn's encoding is checked to equal ours), each
taking the best of several rounds. A raw floor is printed too: CRC-32C over the whole bundle and
``cbor2.loads`` of it (a C decoder with no checks), to show how far each codec is from the bytes.

Usage: ``python benchmarks/bench_bpv7.py [--pyd3tn-python PATH]`` (or set FLEETWIRE_PYD3TN_PYTHON);
without either, pyd3tn is installed into a temporary virtual environment first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit
import venv
from pathlib import Path

import cbor2
from fleetwire.protocol.bpv7 import (
    Bundle,
    CrcType,
    CreationTimestamp,
    PrimaryBlock,
    crc32c,
    decode_bundle,
    encode_bundle,
    parse_eid,
    payload_block,
)

ROUNDS = 7
GOAL = 5.0

PEER = r'''
import json, sys, timeit
from pyd3tn.bundle7 import (Bundle, BundleProcFlag, CRCType, CreationTimestamp, PayloadBlock,
                            PrimaryBlock)
job = json.load(sys.stdin)
primary = PrimaryBlock(bundle_proc_flags=BundleProcFlag(0), crc_type=CRCType.CRC32,
                       destination=job["dst"], source=job["src"], report_to=job["rpt"],
                       creation_time=tuple.__new__(CreationTimestamp, job["ts"]),
                       lifetime=job["lifetime"])
bundle = Bundle(primary, PayloadBlock(bytes.fromhex(job["payload"]), crc_type=CRCType.CRC32))
data = bytes.fromhex(job["bytes"])

def parse_and_check():
    parsed = Bundle.parse(data)
    for block in parsed:
        if block.calculate_crc() != block.crc_provided:
            raise ValueError("CRC")

n, rounds = job["number"], job["rounds"]
encode = min(timeit.repeat(lambda: bytes(bundle), number=n, repeat=rounds)) / n
parse = min(timeit.repeat(parse_and_check, number=n, repeat=rounds)) / n
json.dump({"same_bytes": bytes(bundle) == data, "encode": encode, "parse": parse}, sys.stdout)
'''


def pyd3tn_python(given: str | None, workdir: Path) -> Path:
    if given:
        return Path(given)
    where = workdir / "pyd3tn-venv"
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "pyd3tn==0.15.2"], check=True)
    return python


def best(fn: object, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=ROUNDS)) / number  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyd3tn-python", default=os.environ.get("FLEETWIRE_PYD3TN_PYTHON"))
    parser.add_argument("--number", type=int, default=2000, help="operations per round (ours)")
    args = parser.parse_args()

    primary = PrimaryBlock(parse_eid("ipn:2.1"), parse_eid("ipn:1.1"), parse_eid("ipn:1.0"),
                           CreationTimestamp(757_382_400_123, 42), 3_600_000, 0, CrcType.CRC32C)
    bundle = Bundle(primary, (payload_block(bytes(range(256)) + bytes(44), CrcType.CRC32C),))
    data = encode_bundle(bundle)
    assert decode_bundle(data) == bundle

    with tempfile.TemporaryDirectory() as tmp:
        python = pyd3tn_python(args.pyd3tn_python, Path(tmp))
        job = {"dst": "ipn:2.1", "src": "ipn:1.1", "rpt": "ipn:1.0", "ts": [757_382_400_123, 42],
               "lifetime": 3_600_000, "payload": bundle.payload.hex(), "bytes": data.hex(),
               "number": max(args.number // 10, 100), "rounds": ROUNDS}
        result = subprocess.run([str(python), "-c", PEER], input=json.dumps(job).encode(),
                                capture_output=True, check=True)
        peer = json.loads(result.stdout)

    n = args.number
    ours_encode = best(lambda: encode_bundle(bundle), n)
    ours_parse = best(lambda: decode_bundle(data), n)
    floor_crc = best(lambda: crc32c(data), n * 10)
    floor_cbor = best(lambda: cbor2.loads(data), n * 10)

    print(f"bundle: {len(data)} bytes, 300-byte payload, CRC-32C; pyd3tn encodes the same bytes: "
          f"{peer['same_bytes']}")
    print(f"{'':24}{'ours µs':>10}{'pyd3tn µs':>12}{'speed-up':>10}")
    for name, ours, theirs in (("encode", ours_encode, peer["encode"]),
                               ("parse + CRC check", ours_parse, peer["parse"])):
        ratio = theirs / ours
        verdict = "ok" if ratio >= GOAL else f"below the {GOAL:.0f}x goal"
        print(f"{name:24}{ours * 1e6:10.1f}{theirs * 1e6:12.1f}{ratio:9.1f}x  {verdict}")
    print(f"raw floor: CRC-32C over the bundle {floor_crc * 1e6:.2f} µs, cbor2.loads (no checks) "
          f"{floor_cbor * 1e6:.2f} µs; our parse is {ours_parse / floor_cbor:.1f}x cbor2.loads")


if __name__ == "__main__":
    main()
