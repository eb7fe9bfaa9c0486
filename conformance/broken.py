"""Deliberately broken adapters: the proof that the suite can fail.

Theory of operation
-------------------
Each flaw is the reference adapter (:mod:`.reference`) with one thing done wrong, the way a
real implementation gets it wrong. ``python -m fleetwire.conformance.broken <flaw>`` serves it;
the tests run the suite against each one and check that the cases in :data:`CAUGHT_BY` fail
(and that the run exits non-zero). A flaw the suite did not catch would be a hole in the suite.

=========================  =====================================================================
flaw                       what it does wrong
=========================  =====================================================================
wrong-key-order            writes map keys in descending order (decode answers and encode)
ignores-critical           accepts messages whose ``critical`` names keys it does not know
accepts-out-of-window      reads messages with ``version`` 0 or ``min_version`` above its own
drops-v1                   says it speaks v2–v3 and refuses every v1 message
accepts-bad-signature      opens envelopes without verifying the signature
different-content-id       names what it re-encodes by the hash of something else
overlapping-leases         its lease authority grants every claim at once, held or not
never-expires              its leases never end: no lapse at the authority, no stop at the holder
=========================  =====================================================================
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any, Final

import cbor2
from fleetwire.protocol.cose import parse_sign1
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import LeaseClaim, LeaseGrant, decode_message, encode_message
from fleetwire.protocol.messages.header import Header

from .reference import Reference, refusal, serve

__all__ = ["CAUGHT_BY", "FLAWS", "broken"]


def _reorder(data: bytes) -> bytes:
    """The same map, keys written in descending order (not RFC 8949 §4.2.1)."""
    value = cbor2.loads(data)
    return cbor2.dumps(dict(sorted(value.items(), reverse=True)))


class WrongKeyOrder(Reference):
    def write(self, message: Any) -> bytes:
        return _reorder(encode_message(message))

    def op_decode(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().op_decode(request)
        if answer.get("ok"):
            return self.accepted(_reorder(bytes.fromhex(answer["hex"])))
        return answer


class IgnoresCritical(Reference):
    def op_decode(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().op_decode(request)
        if answer.get("code") == "critical-field-unknown":
            return self.accepted(bytes.fromhex(request["hex"]))
        return answer


class AcceptsOutOfWindow(Reference):
    def op_decode(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().op_decode(request)
        if answer.get("code") == "version-unsupported":
            return self.accepted(bytes.fromhex(request["hex"]))
        return answer


class DropsV1(Reference):
    versions = (2, 3)

    def op_hello(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().op_hello(request)
        answer["versions"] = [1, 3]  # it still claims v1, as an upgrade that forgot it would
        return answer

    def op_decode(self, request: dict[str, Any]) -> dict[str, Any]:
        return refusal("version-unsupported", "v1 is no longer read", "header.version")

    def op_open(self, request: dict[str, Any]) -> dict[str, Any]:
        return refusal("version-unsupported", "v1 is no longer read", "header.version")


class AcceptsBadSignature(Reference):
    def op_open(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().op_open(request)
        if answer.get("code") in ("signature-invalid", "envelope-kid-mismatch"):
            payload = parse_sign1(bytes.fromhex(request["hex"])).payload
            return super().op_decode({"op": "decode", "hex": payload.hex()})
        return answer


class DifferentContentId(Reference):
    def content_id(self, data: bytes) -> str:
        return (b"\x12\x20" + hashlib.sha256(data + b"\n").digest()).hex()

    def op_decode(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().op_decode(request)
        if answer.get("ok"):
            answer["content_id"] = self.content_id(bytes.fromhex(answer["hex"]))
        return answer


class OverlappingLeases(Reference):
    def op_scenario(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("machine") != "lease-authority":
            return super().op_scenario(request)
        config = request.get("config", {})
        outputs: list[list[dict[str, Any]]] = []
        token = 0
        for step in request["steps"]:
            out: list[dict[str, Any]] = []
            if "receive" in step:
                claim = decode_message(bytes.fromhex(step["receive"]))
                if isinstance(claim, LeaseClaim):
                    token += 1
                    now = int(step["at"])
                    cid = ContentId.of(bytes.fromhex(step["receive"]))
                    grant = LeaseGrant(
                        Header(issuer=int(config["node"]), issued_at=now, sequence=token,
                               references=(cid,)),
                        claim.resource, claim.header.issuer, cid, token, claim.term_ms,
                        now + claim.term_ms,
                    )  # fmt: skip
                    out.append({"send": encode_message(grant).hex(), "to": claim.header.issuer})
            outputs.append(out)
        return {"ok": True, "outputs": outputs}


class NeverExpires(Reference):
    def op_scenario(self, request: dict[str, Any]) -> dict[str, Any]:
        machine = request.get("machine")
        if machine == "lease-authority":
            # Time stands still: every step is run at the time of the first.
            first = request["steps"][0]["at"] if request["steps"] else 0
            steps = [{**step, "at": first} for step in request["steps"]]
            return super().op_scenario({**request, "steps": steps})
        if machine == "lease-holder":
            answer = super().op_scenario(request)
            granted = None
            for output in answer.get("outputs", []):
                for item in output:
                    if "use" in item:
                        granted = item["use"] if item["use"] is not None else granted
                        item["use"] = granted
            return answer
        return super().op_scenario(request)


FLAWS: Final[dict[str, type[Reference]]] = {
    "wrong-key-order": WrongKeyOrder,
    "ignores-critical": IgnoresCritical,
    "accepts-out-of-window": AcceptsOutOfWindow,
    "drops-v1": DropsV1,
    "accepts-bad-signature": AcceptsBadSignature,
    "different-content-id": DifferentContentId,
    "overlapping-leases": OverlappingLeases,
    "never-expires": NeverExpires,
}

#: The cases meant to catch each flaw (each must fail against it).
CAUGHT_BY: Final[dict[str, tuple[str, ...]]] = {
    "wrong-key-order": ("3.1.2", "3.2.1"),
    "ignores-critical": ("5.4.1",),
    "accepts-out-of-window": ("5.1.1",),
    "drops-v1": ("3.2.1", "7.1"),
    "accepts-bad-signature": ("7.3",),
    "different-content-id": ("3.2.1", "3.3.1"),
    "overlapping-leases": ("6.4.3",),
    "never-expires": ("6.4.4", "6.4.8"),
}


def broken(flaw: str) -> Reference:
    adapter = FLAWS[flaw]()
    adapter.name = f"broken adapter: {flaw}"
    return adapter


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in FLAWS:
        print(f"usage: python -m fleetwire.conformance.broken {{{','.join(FLAWS)}}}", file=sys.stderr)
        sys.exit(2)
    serve(broken(sys.argv[1]), sys.stdin, sys.stdout)
