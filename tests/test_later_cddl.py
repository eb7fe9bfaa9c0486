"""spec/v2 and spec/v3 CDDL against the message classes of versions 2 and 3, and the valid
vectors against the CDDL with the independent validator (``cddl-verifier``, RFC 8610)."""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path

import pytest
from cddl_verifier import Validator, schema_diagnostics
from fleetwire.conformance.breaking import schema
from fleetwire.protocol.messages import MESSAGE_CLASSES, ExceptionReport, Message
from fleetwire.protocol.messages.schema import Struct

SPEC = Path(__file__).resolve().parent.parent / "spec"
#: Type code → (file, root rule): the later versions' messages.
FILES = {
    **{code: ("v2/faults.cddl", "fault-message") for code in (3, 10, 11, 12, 13, 14, 15)},
    **{code: ("v2/reservations.cddl", "reservation-message") for code in (16, 17, 18, 19)},
    **{code: ("v3/market.cddl", "market-message") for code in (24, 25, 26)},
}
LATER = [cls for cls in MESSAGE_CLASSES.values() if cls.SINCE > 1] + [ExceptionReport]

logging.getLogger("cddl_verifier").setLevel(logging.CRITICAL)


@cache
def validator(file: str) -> Validator:
    return Validator(SPEC / file)


@pytest.mark.parametrize("file", sorted({f for f, _ in FILES.values()}))
def test_the_cddl_is_well_formed(file: str) -> None:
    assert schema_diagnostics(SPEC / file) == ()


@pytest.mark.parametrize("cls", LATER, ids=lambda cls: cls.__name__)
def test_each_rule_mirrors_its_class(cls: type[Message]) -> None:
    rules = {rule.code: rule for rule in schema(SPEC, 3).values() if rule.code is not None}
    rule = rules[int(cls.TYPE)]
    members = {m.key: (m.name, m.optional) for m in rule.members}
    fields = {f.key: (f.name, f.optional) for f in cls.FIELDS}
    assert members == fields, rule.name
    for field in cls.FIELDS:  # nested maps mirror their tables too
        kind = getattr(field.kind, "value", None)
        if isinstance(kind, Struct):
            nested = schema(SPEC, 3)[kind.cddl]
            assert {m.key: m.name for m in nested.members} == {f.key: f.name for f in kind.fields}


@pytest.mark.parametrize("version", [2, 3])
def test_every_valid_vector_meets_the_cddl(version: int) -> None:
    document = json.loads((SPEC / "vectors" / f"v{version}" / "valid.json").read_text())
    checked = 0
    for vector in document["vectors"]:
        code = vector["message"]["type"]
        if code not in FILES:
            continue  # a version-1 type written at a later version: spec/v1/fcp.cddl's
        file, root = FILES[code]
        data = bytes.fromhex(vector["hex"])
        assert validator(file).validate(data, root_type=root).valid, vector["id"]
        checked += 1
    assert checked >= 4
