"""The direct §4.2.1 message writers: same bytes as the general encoder, and the same refusals.

The writers (``protocol/messages/writer.py``) are generated straight-line code that skips the
dict and the sorting pass, so each test checks them against an independent road: the dict form
of the message encoded by the general deterministic encoder, and the reader's own verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    MESSAGE_CLASSES,
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseClaim,
    LeaseGrant,
    LeaseRevoke,
    Message,
    Scope,
    Terms,
    decode_message,
    encode_message,
)
from fleetwire.protocol.messages.codec import _WRITERS
from fleetwire.protocol.messages.header import FIRST_BODY_KEY, HEADER_FIELDS
from fleetwire.protocol.messages.schema import (
    MAX_LIST,
    MAX_TEXT,
    UINT,
    Field,
    fields_at,
    fields_to_wire,
)
from fleetwire.protocol.messages.writer import check_ascending, compile_message_writer, uint
from hypothesis import example, given
from hypothesis import strategies as st

from tests.strategies import messages

UINT64_MAX = 2**64 - 1
#: Every size class of a CBOR head and both sides of each edge, plus the writer's table edge.
BOUNDARIES = (0, 1, 23, 24, 255, 256, 1023, 1024, 65535, 65536, 2**32 - 1, 2**32, UINT64_MAX)


def general_bytes(message: Message) -> bytes:
    """The independent road: the generic table walk's dict through the general encoder."""
    cls = type(message)
    form = {0: cls.TYPE.value, **fields_to_wire(HEADER_FIELDS, message.header)}
    return cbor.encode(form | fields_to_wire(cls.FIELDS, message))


def assert_written_and_read(message: Message) -> None:
    """The direct bytes match the general encoder's and decode back to the same value."""
    data = encode_message(message)
    assert data == _WRITERS[type(message)](message)
    assert data == general_bytes(message)
    assert decode_message(data) == message


# --- 1. direct writer == general deterministic encoder ------------------------------------


@st.composite
def with_critical(draw: Any) -> Message:
    """A generated message whose header also lists some of its own keys as critical."""
    message = draw(messages)
    fields = fields_at(type(message).FIELDS, message.header.version)
    known = list(range(FIRST_BODY_KEY)) + [field.key for field in fields]
    critical = draw(st.lists(st.sampled_from(known), max_size=16).map(tuple))
    return attrs.evolve(message, header=attrs.evolve(message.header, critical=critical))


@given(messages)
def test_direct_writer_matches_general_encoder(message: Message) -> None:
    assert_written_and_read(message)


@given(with_critical())
def test_direct_writer_matches_general_encoder_with_critical(message: Message) -> None:
    assert_written_and_read(message)


@given(messages, st.sampled_from(BOUNDARIES) | st.integers(0, UINT64_MAX))
def test_header_integers_in_every_size_class(message: Message, value: int) -> None:
    header = attrs.evolve(message.header, issuer=value, issued_at=value, sequence=value)
    assert_written_and_read(attrs.evolve(message, header=header))


def test_every_class_has_a_writer() -> None:
    assert set(_WRITERS) == set(MESSAGE_CLASSES.values())


# --- 2. refusals name the field; boundary values are accepted ------------------------------

HEADER = Header(issuer=7, issued_at=1000, sequence=3)
CID = ContentId.of(b"offer")
CAPABILITY = Capability(kind="refine", capacity=10, unit="kg", valid_from=0, valid_until=100)
ADVERT = CapabilityAdvertisement(
    header=HEADER, capabilities=(CAPABILITY, CAPABILITY), versions=(1, 1), lineage="B"
)
TERMS = Terms(promisor=1, promisee=2, action="deliver", quantity=5, unit="kg", deadline=99)
OFFER = Commitment(header=HEADER, state=CommitmentState.OFFERED, terms=TERMS)
ACCEPT = Commitment(header=HEADER, state=CommitmentState.ACCEPTED, commitment=CID)
REPORT = ExceptionReport(header=HEADER, code=1, severity=2, scope=Scope.CELL, scope_id=4)
CLAIM = LeaseClaim(header=HEADER, resource="volume-3", term_ms=60_000)
GRANT = LeaseGrant(
    header=HEADER, resource="v", holder=1, claim=CID, fencing_token=1, term_ms=1, expires_at=2
)
REVOKE = LeaseRevoke(header=HEADER, resource="v", fencing_token=1, holder=1, effective_at=5)


def in_header(**changes: Any) -> Callable[[Message], Message]:
    return lambda message: attrs.evolve(message, header=attrs.evolve(message.header, **changes))


def second_capability(**changes: Any) -> CapabilityAdvertisement:
    return attrs.evolve(ADVERT, capabilities=(CAPABILITY, attrs.evolve(CAPABILITY, **changes)))


#: Where each unsigned field is set to a value: (label, message with that value).
UINT_SITES: dict[str, Callable[[int], Message]] = {
    "header.issuer": lambda v: in_header(issuer=v)(CLAIM),
    "header.issued_at": lambda v: in_header(issued_at=v)(CLAIM),
    "header.sequence": lambda v: in_header(sequence=v)(GRANT),
    "capabilities[1].capacity": lambda v: second_capability(capacity=v),
    "capabilities[1].valid_until": lambda v: second_capability(valid_until=v),
    "cell": lambda v: attrs.evolve(ADVERT, cell=v),
    "terms.quantity": lambda v: attrs.evolve(OFFER, terms=attrs.evolve(TERMS, quantity=v)),
    "code": lambda v: attrs.evolve(REPORT, code=v),
    "scope_id": lambda v: attrs.evolve(REPORT, scope_id=v),
    "term_ms": lambda v: attrs.evolve(CLAIM, term_ms=v),
    "priority": lambda v: attrs.evolve(CLAIM, priority=v),
    "fencing_token": lambda v: attrs.evolve(GRANT, fencing_token=v),
    "effective_at": lambda v: attrs.evolve(REVOKE, effective_at=v),
}
#: Integer fields with a range check of their own take the boundaries only where legal.
RANGED_SITES: dict[str, Callable[[int], Message]] = {
    "versions[1]": lambda v: attrs.evolve(ADVERT, versions=(1, v)),
}


@pytest.mark.parametrize("value", BOUNDARIES)
@pytest.mark.parametrize("site", sorted(UINT_SITES))
def test_unsigned_boundaries_accepted(site: str, value: int) -> None:
    assert_written_and_read(UINT_SITES[site](value))


@pytest.mark.parametrize("value", [v for v in BOUNDARIES if v >= 1])
def test_version_boundaries_accepted(value: int) -> None:
    assert_written_and_read(RANGED_SITES["versions[1]"](value))


def refused(message: Message, path: str) -> str:
    """Encode ``message``, expect a refusal naming ``path``; returns the refusal's message."""
    with pytest.raises(LocalProtocolError) as raised:
        encode_message(message)
    text = raised.value.message
    assert f"cannot encode {type(message).__name__}: {path}: " in text, text
    return text


#: Integers and non-integers a reader refuses in an unsigned field (floats below 2**32).
BAD_UINTS: tuple[Any, ...] = (-1, -24, -(2**64), 2**64, 2**64 + 1, 2**100, 0.0, 1.5, 24.0, 2.0**31)


@pytest.mark.parametrize("value", BAD_UINTS, ids=repr)
@pytest.mark.parametrize("site", sorted({**UINT_SITES, **RANGED_SITES}))
def test_bad_unsigned_refused(site: str, value: Any) -> None:
    builder = UINT_SITES.get(site) or RANGED_SITES[site]
    refused(builder(value), site)


@pytest.mark.parametrize("value", [2.0**32, 5e9, 2.0**63])
def test_large_float_in_unsigned_field_refused(value: float) -> None:
    refused(attrs.evolve(CLAIM, term_ms=value), "term_ms")


#: Text fields by path, each set to a value.
TEXT_SITES: dict[str, Callable[[str], Message]] = {
    "resource": lambda s: attrs.evolve(CLAIM, resource=s),
    "lineage": lambda s: attrs.evolve(ADVERT, lineage=s),
    "capabilities[1].kind": lambda s: second_capability(kind=s),
    "terms.unit": lambda s: attrs.evolve(OFFER, terms=attrs.evolve(TERMS, unit=s)),
    "reason": lambda s: attrs.evolve(ACCEPT, reason=s),
    "detail": lambda s: attrs.evolve(REPORT, detail=s),
}
#: UTF-8 sizes at every head size class, up to exactly the bound (1-, 2- and 4-byte chars).
GOOD_TEXTS = (
    "",
    "a" * 23,
    "a" * 24,
    "a" * 255,
    "a" * MAX_TEXT,
    "é" * 128,
    "😀" * 64,
    "€" * 85 + "a",
)
#: Over the bound in bytes (some are under it in characters) or not encodable as UTF-8.
BAD_TEXTS = ("a" * 257, "é" * 128 + "a", "😀" * 65, "a\ud800", "\udfff")


@pytest.mark.parametrize("value", GOOD_TEXTS, ids=lambda s: f"{len(s.encode())}B")
@pytest.mark.parametrize("site", sorted(TEXT_SITES))
def test_text_up_to_bound_accepted(site: str, value: str) -> None:
    assert len(value.encode()) <= MAX_TEXT
    assert_written_and_read(TEXT_SITES[site](value))


@pytest.mark.parametrize("value", BAD_TEXTS, ids=lambda s: f"{len(s)}ch")
@pytest.mark.parametrize("site", sorted(TEXT_SITES))
def test_bad_text_refused(site: str, value: str) -> None:
    refused(TEXT_SITES[site](value), site)


@pytest.mark.parametrize("value", [b"text", 5], ids=repr)
@pytest.mark.parametrize("site", sorted(TEXT_SITES))
def test_non_text_in_text_field_refused(site: str, value: Any) -> None:
    refused(TEXT_SITES[site](value), site)  # type: ignore[arg-type]


def cids(count: int) -> tuple[ContentId, ...]:
    return tuple(ContentId.of(index.to_bytes(2, "big")) for index in range(count))


#: List fields by path: (message with n items, max_items).
LIST_SITES: dict[str, tuple[Callable[[int], Message], int]] = {
    "header.references": (lambda n: in_header(references=cids(n))(CLAIM), MAX_LIST),
    # Critical keys must be known to the type: ExceptionReport knows 0..14; repeats are legal.
    "header.critical": (lambda n: in_header(critical=tuple(k % 15 for k in range(n)))(REPORT), 16),
    "capabilities": (lambda n: attrs.evolve(ADVERT, capabilities=(CAPABILITY,) * n), MAX_LIST),
    "versions": (lambda n: attrs.evolve(ADVERT, versions=(1,) * n), 2),
    "terms.rests_on": (
        lambda n: attrs.evolve(OFFER, terms=attrs.evolve(TERMS, rests_on=cids(n))),
        MAX_LIST,
    ),
    "affects": (lambda n: attrs.evolve(REPORT, affects=cids(n)), MAX_LIST),
}


@pytest.mark.parametrize("site", sorted(LIST_SITES))
def test_list_of_exactly_max_items_accepted(site: str) -> None:
    build, max_items = LIST_SITES[site]
    assert_written_and_read(build(max_items))


@pytest.mark.parametrize("site", sorted(LIST_SITES))
def test_list_over_max_items_refused(site: str) -> None:
    build, max_items = LIST_SITES[site]
    text = refused(build(max_items + 1), site)
    assert f"more than {max_items} items" in text


def test_list_items_named_by_index() -> None:
    refused(attrs.evolve(ADVERT, versions=(1, -1)), "versions[1]")
    refused(in_header(critical=(8, 2**64))(CLAIM), "header.critical[1]")
    refused(attrs.evolve(ADVERT, capabilities=(CAPABILITY, None)), "capabilities[1].kind")


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (attrs.evolve(GRANT, claim=CID.raw), "claim"),
        (attrs.evolve(ACCEPT, commitment=CID.raw), "commitment"),
        (attrs.evolve(REPORT, digest=CID.raw), "digest"),
        (attrs.evolve(REPORT, affects=(CID, CID.raw)), "affects"),
        (in_header(references=(CID.raw,))(CLAIM), "header.references"),
        (attrs.evolve(OFFER, terms=attrs.evolve(TERMS, rests_on=(CID.raw,))), "terms.rests_on"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_bytes_where_content_id_expected_refused(message: Message, path: str) -> None:
    refused(message, path)


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (attrs.evolve(ACCEPT, state=5), "state"),
        (attrs.evolve(ACCEPT, state=-1), "state"),
        (attrs.evolve(ACCEPT, state=2**64), "state"),
        (attrs.evolve(REPORT, scope=3), "scope"),
        (attrs.evolve(REPORT, scope=99), "scope"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_int_not_an_enum_member_refused(message: Message, path: str) -> None:
    text = refused(message, path)
    assert "unknown" in text and "code" in text


@pytest.mark.parametrize("state", list(CommitmentState))
def test_every_enum_member_accepted(state: CommitmentState) -> None:
    message = OFFER if state is CommitmentState.OFFERED else attrs.evolve(ACCEPT, state=state)
    assert_written_and_read(message)
    for scope in Scope:
        assert_written_and_read(attrs.evolve(REPORT, scope=scope))


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (in_header(issuer=None)(CLAIM), "header.issuer"),
        (in_header(version=None)(CLAIM), "header.version"),
        (attrs.evolve(CLAIM, resource=None), "resource"),
        (attrs.evolve(CLAIM, term_ms=None), "term_ms"),
        (attrs.evolve(GRANT, claim=None), "claim"),
        (attrs.evolve(ACCEPT, state=None), "state"),
        (attrs.evolve(ADVERT, capabilities=None), "capabilities"),
        (attrs.evolve(ADVERT, versions=None), "versions"),
        (second_capability(unit=None), "capabilities[1].unit"),
        (attrs.evolve(OFFER, terms=attrs.evolve(TERMS, deadline=None)), "terms.deadline"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_none_in_required_field_refused(message: Message, path: str) -> None:
    text = refused(message, path)
    assert "missing" in text


def test_absent_optionals_left_out() -> None:
    """None and () are absence: the writer leaves the key out, as the dict form does."""
    bare = encode_message(ACCEPT)
    assert bare == general_bytes(ACCEPT)
    assert 11 not in cbor2.loads(bare)
    assert 6 not in cbor2.loads(encode_message(CLAIM))
    assert 12 not in cbor2.loads(encode_message(REPORT))


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (in_header(issuer=-1)(CLAIM), "header.issuer"),
        (attrs.evolve(CLAIM, resource="a" * 257), "resource"),
        (attrs.evolve(ADVERT, versions=(1, 1, 1)), "versions"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_refusals_also_with_extensions(message: Message, path: str) -> None:
    refused(attrs.evolve(message, extensions=((40, 1),)), path)


# --- 3. uint on its own --------------------------------------------------------------------


@given(st.sampled_from(BOUNDARIES) | st.integers(0, UINT64_MAX))
@example(UINT64_MAX)
def test_uint_matches_cbor2(value: int) -> None:
    assert uint(value) == cbor2.dumps(value)


@pytest.mark.parametrize("value", [-1, -(2**63), -(2**64), -(2**65)])
def test_uint_refuses_negative(value: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        uint(value)


@pytest.mark.parametrize("value", [2**64, 2**64 + 1, 2**128])
def test_uint_refuses_over_64_bits(value: int) -> None:
    with pytest.raises(OverflowError):
        uint(value)


@pytest.mark.parametrize("value", [1.0, 2.0**40, float("nan"), "1", b"\x01", None, [1]], ids=repr)
def test_uint_refuses_non_integers(value: Any) -> None:
    with pytest.raises(TypeError):
        uint(value)


# --- 4. field tables must be strictly ascending --------------------------------------------


def table(*keys: int) -> tuple[Field, ...]:
    return tuple(Field(key, f"f{index}", UINT) for index, key in enumerate(keys))


@pytest.mark.parametrize("keys", [(), (0,), (1, 2, 3), (0, 23, 24, 255, 256)], ids=repr)
def test_check_ascending_accepts_ascending(keys: tuple[int, ...]) -> None:
    check_ascending(table(*keys), "t")


@pytest.mark.parametrize(
    "keys", [(2, 1), (1, 3, 2), (1, 1), (1, 2, 2, 3), (-1, 0), (24, 23)], ids=repr
)
def test_check_ascending_refuses_unsorted_or_duplicate(keys: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="strictly ascending"):
        check_ascending(table(*keys), "t")


def test_check_ascending_refuses_more_fields_than_map_heads() -> None:
    with pytest.raises(ValueError, match="more fields"):
        check_ascending(table(*range(64)), "t")


def test_body_keys_must_follow_header_keys() -> None:
    """A body key among the header's (or key 0, the type) would be written out of order."""
    header = table(1, 2, 3)
    for body in (table(3, 9), table(0, 9), table(2)):
        with pytest.raises(ValueError, match="strictly ascending"):
            compile_message_writer(4, header, body, "t")
    compile_message_writer(4, header, table(4, 9), "t")


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (attrs.evolve(CLAIM, extensions=((9, 1),)), "extensions"),  # would replace term_ms
        (attrs.evolve(CLAIM, extensions=((-1, 1),)), "extensions"),
        (attrs.evolve(CLAIM, extensions=(("x", 1),)), "extensions"),
        (in_header(critical=(30,))(CLAIM), "header.critical"),
        (attrs.evolve(ADVERT, versions=(2, 1)), "versions"),
        (attrs.evolve(REPORT, severity=0), "severity"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_rules_a_reader_applies_are_applied_when_writing(message: Message, path: str) -> None:
    refused(message, path)
