"""The draft version-2 messages of spec/v2/faults.md against spec/v2/faults.cddl, with the
independent validator: the key tables in the code and the CDDL say the same, and what the code
holds (a real digest, a real isolation order) written as those messages is accepted."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cddl_verifier import Validator, schema_diagnostics
from fleetwire.protocol import cbor
from fleetwire.protocol.coordination import digests, escalation, forensics, isolation
from fleetwire.protocol.coordination.digests import DigestBuilder, EmitDigest, MetricSpec
from fleetwire.protocol.coordination.escalation import Escalate, Escalator, Fault, Resolution
from fleetwire.protocol.coordination.isolation import IsolationOrder, OrderAction, Target
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import ExceptionReport, Header, Scope, content_id

CDDL = Path(__file__).resolve().parent.parent / "spec" / "v2" / "faults.cddl"
ROOT = "fault-message"
TABLE: dict[str, tuple[int, tuple[tuple[int, str], ...]]] = {
    **digests.DRAFT_WIRE,
    **forensics.DRAFT_WIRE,
    **escalation.DRAFT_WIRE,
    **isolation.DRAFT_WIRE,
}
CID = ContentId.of(b"an escalated report")


def real_digest() -> dict[str, Any]:
    builder = DigestBuilder(
        7, {"purity": MetricSpec(edges=(990, 1010), center=1000, sigma=5)}, 60_000, 0
    )
    for i, value in enumerate([1000, 1003, 996, 1001]):
        builder.observe("purity", value, 1_000 * i)
    (emit,) = [a for a in builder.tick(60_000) if isinstance(a, EmitDigest)]
    return emit.digest.draft_body()


def escalated_report() -> dict[str, Any]:
    """A real escalation, with the lineage of its incident (spec/v2/faults.md §0)."""
    esc = Escalator(900, Scope.CELL, 4, itertools.count(1).__next__)
    report = ExceptionReport(Header(100, 1, 1), code=1, severity=5, scope=Scope.NODE, scope_id=100)
    (up,) = [
        a for a in esc.receive(Fault(report, content_id(report), "B"), 2) if isinstance(a, Escalate)
    ]
    r = up.report
    fields = {"code": r.code, "severity": r.severity, "scope": int(r.scope), "scope_id": r.scope_id}
    if r.affects:
        fields["affects"] = [cid.raw for cid in r.affects]
    if r.detail is not None:
        fields["detail"] = r.detail
    return fields | {"lineage": up.incident.signature.lineage}


SAMPLES: dict[str, dict[str, Any]] = {
    "exception-report": escalated_report(),
    "digest": real_digest(),
    "detail-request": {"details": [CID.raw]},
    "detail-answer": {"detail": CID.raw, "data": b"\xa0"},
    "escalation-ack": {"escalation": CID.raw},
    "escalation-close": {
        "escalation": CID.raw,
        "resolution": int(Resolution.CONTAINED),
        "detail": "ok",
    },
    "isolation-order": IsolationOrder(
        801, 5, 9, OrderAction.SEVER, Target(Scope.CELL, 11), "suspect"
    ).draft_body(),
}


def encode(name: str, fields: dict[str, Any]) -> bytes:
    code, keys = TABLE[name]
    data: dict[int, Any] = {0: code, 1: 2, 2: 2, 3: 7, 4: 820_000_000_000, 5: 3}
    data |= {key: fields[field] for key, field in keys if field in fields}
    return cbor.encode(data)


def test_the_draft_cddl_is_well_formed_and_names_every_field() -> None:
    assert schema_diagnostics(CDDL) == ()
    text = CDDL.read_text(encoding="utf-8")
    assert {code for code, _ in TABLE.values()} == {3, *range(10, 16)}
    for name, (code, keys) in TABLE.items():
        rule = re.search(
            r"\n" + name + r" = \{\n  header<" + str(code) + r">,\n(.*?)\n\}", text, re.S
        )
        assert rule is not None, name
        named = [
            (int(m.group(1)), m.group(2))
            for m in (
                re.match(r"\s+\??\s*(\d+): .*; (\w+)", line) for line in rule.group(1).splitlines()
            )
            if m
        ]
        assert named == list(keys), name


@pytest.mark.parametrize("name", sorted(TABLE))
def test_the_code_writes_what_the_draft_cddl_accepts(name: str) -> None:
    validator = Validator(CDDL)
    data = encode(name, SAMPLES[name])
    assert validator.validate(data, root_type=ROOT, require_deterministic=True).valid
    # The first body field dropped, or given a float, is refused.
    first = TABLE[name][1][0][0]
    decoded = cbor2.loads(data)
    dropped = {k: v for k, v in decoded.items() if k != first}
    assert not validator.validate(cbor.encode(dropped), root_type=ROOT).valid
    assert not validator.validate(cbor.encode(decoded | {first: 1.5}), root_type=ROOT).valid


def test_optional_fields_may_be_left_out() -> None:
    validator = Validator(CDDL)
    order = IsolationOrder(801, 5, 9, OrderAction.LIFT, Target(Scope.REGION, 2)).draft_body()
    assert "reason" not in order
    assert validator.validate(encode("isolation-order", order), root_type=ROOT).valid
    close = {"escalation": CID.raw, "resolution": 0}
    assert validator.validate(encode("escalation-close", close), root_type=ROOT).valid
