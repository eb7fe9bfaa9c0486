"""spec/v1/fcp.cddl and trust.cddl against the code and the vectors, with an independent CDDL validator.

Three kinds of check keep the CDDL and the ``FIELDS`` tables from drifting apart:

1. text: every rule mirrors its table — same keys, names, optionality, and types (ranges are
   probed against the field's own check function);
2. the validator (``cddl-verifier``, RFC 8610) accepts every valid vector and hypothesis
   messages, and refuses exactly the invalid vectors marked ``structural``;
3. mutations: a field dropped or given a float is refused by both the CDDL and the decoder.
"""

from __future__ import annotations

import json
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cddl_verifier import Validator, schema_diagnostics
from fleetwire.protocol import cbor
from fleetwire.protocol.cose import parse_sign1
from fleetwire.protocol.errors import FleetwireError, MessageError
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    V1_MESSAGE_CLASSES as MESSAGE_CLASSES,
)
from fleetwire.protocol.messages import (
    Message,
    MessageType,
    decode_message,
    encode_message,
)
from fleetwire.protocol.messages.header import HEADER_FIELDS
from fleetwire.protocol.messages.schema import (
    CID,
    MAX_LIST,
    MAX_TEXT,
    TEXT,
    UINT,
    EnumKind,
    Field,
    ListOf,
    Struct,
    fields_at,
)
from fleetwire.protocol.trust import (
    Credential,
    CredentialError,
    Role,
    issue_credential,
    issue_revocations,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .strategies import messages

SPEC = Path(__file__).resolve().parent.parent / "spec"
CDDL = SPEC / "v1" / "fcp.cddl"
VECTORS = SPEC / "vectors" / "v1"

#: Message class → the CDDL rules that describe it (a commitment is a choice of two maps).
# The validator logs every mismatch at ERROR level; the tests below expect many.
logging.getLogger("cddl_verifier").setLevel(logging.CRITICAL)

RULES: dict[type[Any], tuple[str, ...]] = {
    cls: (
        ("commitment-offer", "commitment-change")
        if t is MessageType.COMMITMENT
        else (t.name.lower().replace("_", "-"),)
    )
    for t, cls in MESSAGE_CLASSES.items()
}
#: Fields whose CDDL type is a named refinement of the table's kind.
REFINED = {("capability-advertisement", "versions"): "version-range"}
UINT_ALIASES = {"uint", "node-id", "dtn-time"}


@cache
def validator() -> Validator:
    return Validator(CDDL)


def cddl_valid(data: bytes | Any, rule: str = "message") -> bool:
    return validator().validate(data, root_type=rule).valid


# --- 1. the text mirrors the FIELDS tables ----------------------------------------------------


@cache
def cddl_rules() -> dict[str, dict[int, tuple[bool, str, str]]]:
    """Rule name → {key: (optional, type, field name)} for every map or group rule."""
    text = CDDL.read_text(encoding="utf-8")
    rules: dict[str, dict[int, tuple[bool, str, str]]] = {}
    for match in re.finditer(r"^([a-z-]+)(?:<\w+>)? = [{(]\n(.*?)\n[})]", text, re.M | re.S):
        members: dict[int, tuple[bool, str, str]] = {}
        for line in match.group(2).splitlines():
            member = re.match(r"\s*(\?\s*)?(\d+): (.+?),\s*; (\w+)", line)
            if member:
                optional, key, type_, name = member.groups()
                members[int(key)] = (optional is not None, type_, name)
        rules[match.group(1)] = members
    return rules


def int_set(type_: str) -> set[int]:
    """The integers a literal (``4``) or range (``1..5``) type allows."""
    low, _, high = type_.partition("..")
    return set(range(int(low), int(high or low) + 1))


def check_type(field: Field, type_: str, rule: str) -> None:
    kind = field.kind
    where = f"{rule}.{field.name}"
    if (rule, field.name) in REFINED:
        assert type_ == REFINED[rule, field.name], where
    elif kind is UINT and field.check is not None:
        values = int_set(type_)
        low, high = min(values), max(values)
        field.check(low, where)
        field.check(high, where)
        for outside in (low - 1, high + 1):
            with pytest.raises(MessageError):
                field.check(outside, where)
    elif kind is UINT:
        assert type_ in UINT_ALIASES, where
    elif kind is TEXT:
        assert type_ == "text", where
    elif kind is CID:
        assert type_ == "content-id", where
    elif isinstance(kind, EnumKind):
        assert int_set(type_) <= {int(m) for m in kind.enum_type}, where
    elif isinstance(kind, Struct):
        assert type_ == kind.cddl, where
        check_rule(kind.cddl, kind.fields)
    elif isinstance(kind, ListOf):
        low = 1 if field.optional else 0
        item = "content-id" if kind.item is CID else kind.item.cddl
        if isinstance(kind.item, Struct):
            check_rule(kind.item.cddl, kind.item.fields)
        named = {"content-ids": f"[1*{MAX_LIST} content-id]"}
        assert named.get(type_, type_) == f"[{low}*{kind.max_items} {item}]", where
    else:
        raise AssertionError(f"{where}: no CDDL mapping for {kind!r}")


def check_rule(rule: str, fields: tuple[Field, ...], extra: frozenset[int] = frozenset()) -> None:
    members = cddl_rules()[rule]
    by_key = {field.key: field for field in fields}
    assert set(members) == set(by_key) | extra, rule
    for key, field in by_key.items():
        optional, type_, name = members[key]
        assert name == field.name, f"{rule} key {key}"
        assert optional == field.optional, f"{rule}.{field.name} optional"
        check_type(field, type_, rule)


def test_schema_is_valid_cddl() -> None:
    assert schema_diagnostics(CDDL) == ()


def test_common_definitions_match_the_bounds_in_the_code() -> None:
    text = CDDL.read_text(encoding="utf-8")
    assert f"text = tstr .size (0..{MAX_TEXT})" in text
    assert f"content-ids = [1*{MAX_LIST} content-id]" in text
    assert "content-id = bstr .size 34" in text
    assert "extension = (* uint => any)" in text


def test_header_group_mirrors_header_fields() -> None:
    check_rule("header", HEADER_FIELDS, extra=frozenset({0}))
    assert cddl_rules()["header"][0] == (False, "type", "type")


@pytest.mark.parametrize("cls", list(MESSAGE_CLASSES.values()), ids=lambda cls: cls.__name__)
def test_message_rules_mirror_fields_tables(cls: type[Message]) -> None:
    text = CDDL.read_text(encoding="utf-8")
    union: dict[int, set[str]] = {}
    for rule in RULES[cls]:
        members = cddl_rules()[rule]
        assert f"{rule} = {{\n  header<{int(cls.TYPE)}>,\n" in text, rule
        assert members, rule
        assert set(members) <= {field.key for field in fields_at(cls.FIELDS, 1)}, f"{rule}: keys not in FIELDS"
        for field in fields_at(cls.FIELDS, 1):
            if field.key not in members:
                assert field.optional, f"{rule} leaves out required {field.name}"
                continue
            optional, type_, name = members[field.key]
            assert name == field.name, f"{rule} key {field.key}"
            # A choice may require what the table leaves optional, never the other way.
            assert optional <= field.optional, f"{rule}.{name} optional"
            check_type(field, type_, rule)
            union.setdefault(field.key, set()).add(type_)
    assert set(union) == {field.key for field in fields_at(cls.FIELDS, 1)}
    for field in fields_at(cls.FIELDS, 1):
        if isinstance(field.kind, EnumKind):  # the choice covers every value between them
            covered = set().union(*(int_set(t) for t in union[field.key]))
            assert covered == {int(m) for m in field.kind.enum_type}, field.name
    message_rule = cddl_rules().get("message")
    assert message_rule is None  # `message` is a type choice, not a map
    choice = " ".join(text.split("message =")[1].split(";")[0].split())
    expected = "commitment" if len(RULES[cls]) > 1 else RULES[cls][0]
    assert expected in choice.replace("/", " ").split()


# --- 2. the validator against vectors and generated messages -------------------------------


def load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))[
        "vectors"
    ]
    return vectors


def test_valid_vectors_match_message_and_their_own_rule() -> None:
    for vector in load("valid.json"):
        data = bytes.fromhex(vector["hex"])
        assert cddl_valid(data), vector["id"]
        rule = vector["type"]
        if rule == "commitment":
            rule = "commitment-offer" if vector["message"]["state"] == 0 else "commitment-change"
        assert cddl_valid(data, rule), vector["id"]


def test_extension_vectors_match() -> None:
    for vector in load("extensions.json"):
        assert cddl_valid(bytes.fromhex(vector["hex"])), vector["id"]


def test_structural_invalid_vectors_fail_cddl_and_only_those() -> None:
    wrong = []
    for vector in load("invalid.json"):
        if cddl_valid(bytes.fromhex(vector["hex"])) == vector["structural"]:
            wrong.append(f"{vector['id']}: structural={vector['structural']}")
    assert not wrong, "the 'structural' flag is wrong for:\n" + "\n".join(wrong)


def test_signed_payloads_match() -> None:
    envelopes = json.loads((VECTORS / "envelopes.json").read_text(encoding="utf-8"))
    for vector in envelopes["valid"]:
        envelope = cbor2.loads(bytes.fromhex(vector["hex"]))
        assert cddl_valid(envelope.value[2]), vector["id"]


FEW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(messages)
def test_generated_messages_match(message: Message) -> None:
    data = encode_message(message)
    result = validator().validate(data, root_type="message")
    assert result.valid, result.errors


@FEW
@given(
    messages,
    st.integers(30, 2**32),
    st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=5), st.binary(max_size=5)),
)
def test_generated_messages_with_extensions_match(message: Message, key: int, value: Any) -> None:
    raw = cbor2.loads(encode_message(message))
    raw[key] = value
    data = cbor.encode(raw)
    decode_message(data)  # the decoder keeps it ...
    assert cddl_valid(data)  # ... and the CDDL allows it


# --- 3. mutations: both refuse -----------------------------------------------------------------


def mutations(message: Message) -> list[tuple[str, bytes, bool]]:
    """(what, bytes, must be refused) for every body field of ``message``."""
    raw = cbor2.loads(encode_message(message))
    out = []
    for field in fields_at(message.FIELDS, 1):
        changed = dict(raw)
        changed[field.key] = 1.5  # no v1 field is a float
        out.append((f"{field.name} = 1.5", cbor.encode(changed), True))
        if field.key in raw:
            dropped = {k: v for k, v in raw.items() if k != field.key}
            refused = not field.optional or _needed(message, field)
            out.append((f"without {field.name}", cbor.encode(dropped), refused))
    return out


def _needed(message: Message, field: Field) -> bool:
    """Optional in the table but required by a cross-field rule (commitment offer/change)."""
    return field.name in {"terms", "commitment"} and hasattr(message, "state")


def _decodes(data: bytes) -> bool:
    try:
        decode_message(data)
    except FleetwireError:
        return False
    return True


def own_rule(message: Message) -> str:
    return (
        "commitment"
        if RULES[type(message)][0].startswith("commitment")
        else RULES[type(message)][0]
    )


def check_mutations(message: Message) -> None:
    rule = own_rule(message)  # key 0 is never mutated, so this is as good as `message`, faster
    for what, data, refused in mutations(message):
        assert _decodes(data) is not refused, f"decoder: {what}"
        assert cddl_valid(data, rule) is not refused, f"cddl: {what}"


def test_cddl_and_decoder_agree_on_mutations_of_the_valid_vectors() -> None:
    for vector in load("valid.json"):
        check_mutations(decode_message(bytes.fromhex(vector["hex"])))


@settings(FEW, max_examples=25)
@given(messages)
def test_cddl_and_decoder_agree_on_mutations(message: Message) -> None:
    check_mutations(message)


# --- trust payloads (spec/v1/trust.cddl) ------------------------------------------------------

TRUST_CDDL = SPEC / "v1" / "trust.cddl"
ROOT = SigningKey(bytes(range(32)))


@cache
def trust_validator() -> Validator:
    return Validator(TRUST_CDDL)


def test_trust_schema_is_valid_cddl() -> None:
    assert schema_diagnostics(TRUST_CDDL) == ()


@settings(FEW, max_examples=30)
@given(
    node=st.integers(0, 2**64 - 1),
    roles=st.sets(st.sampled_from(Role), min_size=1),
    window=st.tuples(st.integers(0, 2**40), st.integers(1, 2**40)),
    serial=st.integers(0, 2**64 - 1),
    lineage=st.text(max_size=20),
    seed=st.binary(min_size=32, max_size=32),
)
def test_issued_credentials_match_and_unknown_keys_fail_both(
    node: int, roles: set[Role], window: tuple[int, int], serial: int, lineage: str, seed: bytes
) -> None:
    data = issue_credential(
        ROOT,
        node=node,
        public_key=SigningKey(seed).public,
        roles=roles,
        not_before=window[0],
        not_after=window[0] + window[1],
        serial=serial,
        lineage=lineage,
        cell=3 if Role.CELL_COORDINATOR in roles else None,
        region=1 if Role.REGION_COORDINATOR in roles else None,
    )
    payload = parse_sign1(data).payload
    assert trust_validator().validate(payload, root_type="credential").valid
    widened = cbor.encode({**cbor2.loads(payload), 11: 0})
    assert not trust_validator().validate(widened, root_type="credential").valid
    with pytest.raises(CredentialError):
        Credential.from_payload(widened)


def test_issued_revocation_lists_match() -> None:
    kids = [SigningKey(bytes([i]) * 32).kid for i in range(3)]
    for revoked, serials in (([], []), (kids, [1, 5, 9])):
        data = issue_revocations(
            ROOT, serial=7, issued_at=1000, kids=revoked, credential_serials=serials
        )
        payload = parse_sign1(data).payload
        assert trust_validator().validate(payload, root_type="revocation-list").valid
        assert trust_validator().validate(payload, root_type="trust-payload").valid
        assert not trust_validator().validate(payload, root_type="credential").valid
