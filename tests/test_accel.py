"""The C accelerator of the message codec answers exactly as the Python codec does, or defers.

``protocol/_speedups.c`` may only ever take the common road: for any value or any bytes it
either produces what the pure-Python writer or reader produces, or answers ``None`` so the
Python code runs (and decides every error). Each test here holds the C answer against the
Python answer for the same input: generated messages, values a reader refuses, and hostile
bytes (mutations of valid encodings, non-deterministic forms, extensions, tags, garbage).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseClaim,
    Message,
    Scope,
    Terms,
    accel,
    codec,
    decode_message,
    encode_message,
)
from fleetwire.protocol.messages.header import HEADER_FIELDS
from fleetwire.protocol.messages.schema import ListOf, Struct
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.strategies import commitments, messages

if not accel.AVAILABLE or codec._fast_read is None:
    pytest.skip("the C accelerator is not built, or --pure-python", allow_module_level=True)

_speedups: Any = accel._speedups
SPEC = Path(__file__).resolve().parent.parent / "spec"
UINT64_MAX = 2**64 - 1


def _write_specs() -> dict[type[Any], tuple[Any, ...]]:
    specs = {}
    for cls in codec._PY_WRITERS:
        try:
            specs[cls] = accel.write_spec(cls, HEADER_FIELDS)
        except accel.NoFastForm:
            continue  # a kind the C writer does not know (a digest's metrics): Python only
    return specs


WRITE_SPECS = _write_specs()


# --- the two roads ----------------------------------------------------------------------


@contextmanager
def python_road() -> Iterator[None]:
    """Run the codec with the C reader and writers taken out (the pure-Python codec)."""
    with codec.without_accelerator():
        yield


def outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call gave, comparably: the value (by type and repr, so an enum member is not
    taken for its int) or the error (type, code, field, text)."""
    try:
        value = run()
    except Exception as exc:  # any difference in refusal is the finding
        return (
            "error",
            type(exc),
            getattr(exc, "code", None),
            getattr(exc, "field", None),
            str(exc),
        )
    return ("value", type(value), repr(value))


def decode_both(data: bytes) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """``decode_message`` with the accelerator, and without."""
    fast = outcome(lambda: decode_message(data))
    with python_road():
        slow = outcome(lambda: decode_message(data))
    return fast, slow


def c_write(message: Any) -> bytes | None:
    result: bytes | None = _speedups.write(WRITE_SPECS[type(message)], message)
    return result


def assert_writer_agrees(message: Any) -> bytes | None:
    """The C writer defers or gives the Python writer's bytes (never bytes it refuses)."""
    data = c_write(message)  # must not raise, whatever the value
    if data is not None:
        assert outcome(lambda: codec._PY_WRITERS[type(message)](message)) == (
            "value",
            bytes,
            repr(data),
        ), f"C wrote {data.hex()} for {message!r}"
    return data


def assert_reader_agrees(data: bytes) -> None:
    """The C reader defers or gives the Python road's message, which re-encodes to ``data``;
    and ``decode_message`` answers the same with and without it, errors included."""
    fast = codec._fast_read(data)  # type: ignore[misc]  # must not raise, whatever the bytes
    accelerated, slow = decode_both(data)
    if fast is not None:
        # The C reader's promise: only deterministic, extension-free bytes it re-encodes exactly.
        assert codec._PY_WRITERS[type(fast)](fast) == data, data.hex()
        assert not fast.extensions
        # The C reader knows every version's fields; a field newer than the message's own
        # version is an extension to its reader (§5.3), so the gate sends that to Python.
        if slow[0] == "value" and codec._known_as_read(fast, codec.PROTOCOL_VERSION):
            assert ("value", type(fast), repr(fast)) == slow, data.hex()
            assert encode_message(fast) == data, data.hex()
        # else: the version window, critical keys or a cross-field rule refuse it, which the
        # codec applies after the C reader; the comparison below checks that it does.
    assert accelerated == slow, data.hex()


# --- 1. writer equivalence ------------------------------------------------------------------


@given(messages)
def test_c_writer_writes_every_generated_message_as_python_does(message: Message) -> None:
    data = c_write(message)
    assert data is not None, "a valid message should take the fast road"
    assert data == codec._PY_WRITERS[type(message)](message)
    assert data == encode_message(message)


class Text(str):
    """A str subclass: may encode differently, so the C writer must leave it to Python."""


class Number(int):
    """An int subclass that is not a bool."""


@attrs.frozen
class DuckHeader:
    """Not a Header, but with its attributes: the Python writer writes it as one."""

    issuer: int = 1
    issued_at: int = 2
    sequence: int = 3
    references: tuple[ContentId, ...] = ()
    version: int = 1
    min_version: int = 1
    critical: tuple[int, ...] = ()


CID = ContentId.of(b"x")

#: Values a reader refuses somewhere, or that only a duck-typed Python writer accepts.
ODD_VALUES: tuple[Any, ...] = (
    -1,
    -24,
    -(2**64),
    2**64,
    2**64 + 1,
    2**100,
    0.0,
    1.5,
    24.0,
    2.0**31,
    2.0**32,
    2.0**63,
    float("nan"),
    True,
    False,
    None,
    (),
    [],
    {},
    "",
    "x",
    "a" * 256,
    "a" * 257,
    "é" * 128,
    "é" * 128 + "a",
    "😀" * 65,
    "a\ud800",
    "\udfff",
    Text("x"),
    Number(5),
    Number(2**40),
    b"",
    b"text",
    CID.raw,
    bytearray(CID.raw),
    ContentId(b"\x12"),
    ContentId(b"\x00" * 300),
    CID,
    (CID,),
    [CID],
    (CID.raw,),
    (CID,) * 65,
    (1,) * 17,
    (1, 2),
    (2, 1),
    [1, 2],
    (1, -1),
    (1, 2**64),
    5,
    99,
    3,
    CommitmentState.ACCEPTED,
    Scope.CELL,
    Scope.REGION,
    DuckHeader(),
    object(),
)


def sites(value: Any, fields: tuple[Any, ...], path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Every place a value can be put: each field, each list item, inside nested structs."""
    for field in fields:
        here = (*path, field.name)
        yield here
        item = getattr(value, field.name)
        kind = field.kind
        if isinstance(kind, Struct) and item is not None:
            yield from sites(item, kind.fields, here)
        if isinstance(kind, ListOf) and isinstance(item, tuple):
            for index, element in enumerate(item):
                yield (*here, index)
                if isinstance(kind.item, Struct):
                    yield from sites(element, kind.item.fields, (*here, index))


def message_sites(message: Any) -> list[tuple[Any, ...]]:
    return [
        ("header",),
        *sites(message.header, HEADER_FIELDS, ("header",)),
        *sites(message, type(message).FIELDS, ()),
    ]


def put(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """``value`` with the item at ``path`` replaced (attrs.evolve all the way down)."""
    if not path:
        return new
    step, rest = path[0], path[1:]
    if isinstance(step, int):
        items = list(value)
        items[step] = put(items[step], rest, new)
        return tuple(items)
    inner = put(getattr(value, step), rest, new)
    return attrs.evolve(value, **{step: inner})


def field_at(message: Any, path: tuple[Any, ...]) -> Any:
    """The Field of the last attribute step of ``path`` (None for a list item)."""
    if isinstance(path[-1], int):
        return None
    fields: tuple[Any, ...] = HEADER_FIELDS if path[0] == "header" else type(message).FIELDS
    field = None
    for step in path[1:] if path[0] == "header" else path:
        if isinstance(step, int):
            continue
        field = next(f for f in fields if f.name == step)
        kind = field.kind.item if isinstance(field.kind, ListOf) else field.kind
        fields = kind.fields if isinstance(kind, Struct) else ()
    return field


def known_gap(message: Any, path: tuple[Any, ...], value: Any) -> bool:
    """The gap test_c_writer_writes_an_empty_tuple_in_an_optional_scalar_field pins down."""
    field = field_at(message, path)
    return (
        value == ()
        and type(value) is tuple
        and field is not None
        and field.optional
        and not isinstance(field.kind, ListOf)
    )


@st.composite
def odd_messages(draw: Any) -> Any:
    """A generated message with one value anywhere replaced by an odd one."""
    message = draw(messages)
    path = draw(st.sampled_from(message_sites(message)))
    value = draw(st.sampled_from(ODD_VALUES) | st.integers() | st.text(max_size=3))
    if known_gap(message, path, value):
        value = None
    return put(message, path, value)


@settings(max_examples=200)
@given(odd_messages())
def test_c_writer_never_writes_what_python_refuses(message: Any) -> None:
    assert_writer_agrees(message)


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_c_writer_on_odd_values_everywhere(value: Any) -> None:
    """Every odd value in every place of one message of each shape (deterministic sweep)."""
    header = Header(issuer=7, issued_at=1000, sequence=3, references=(CID,), critical=(8,))
    capability = Capability(kind="k", capacity=1, unit="kg", valid_from=0, valid_until=1)
    terms = Terms(1, 2, "deliver", 5, "kg", 99, rests_on=(CID,))
    samples: list[Any] = [
        CapabilityAdvertisement(header, (capability, capability), (1, 1), "B", cell=4),
        Commitment(header, CommitmentState.OFFERED, terms=terms),
        Commitment(header, CommitmentState.BROKEN, commitment=CID, reason="r"),
        ExceptionReport(header, 1, 2, Scope.CELL, 4, affects=(CID,), digest=CID, detail="d"),
        LeaseClaim(header, "volume-3", 60_000, 1),
    ]
    for message in samples:
        for path in message_sites(message):
            if not known_gap(message, path, value):
                assert_writer_agrees(put(message, path, value))


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (CapabilityAdvertisement(Header(1, 2, 3), (), (1, 1), "B"), "cell"),
        (Commitment(Header(1, 2, 3), CommitmentState.ACCEPTED, commitment=CID), "reason"),
        (
            Commitment(Header(1, 2, 3), CommitmentState.OFFERED, terms=Terms(1, 2, "a", 3, "u", 4)),
            "terms",
        ),
        (ExceptionReport(Header(1, 2, 3), 1, 2, Scope.CELL, 4), "digest"),
        (ExceptionReport(Header(1, 2, 3), 1, 2, Scope.CELL, 4), "detail"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_c_writer_writes_an_empty_tuple_in_an_optional_scalar_field(
    message: Any, field: str
) -> None:
    """The Python writer tests ``is not None`` for optional scalars and structs, so ``()``
    is written and refused (LocalProtocolError); the C writer treats ``()`` as absent for
    every optional field and writes bytes, so ``encode_message`` accepts the value."""
    odd = attrs.evolve(message, **{field: ()})
    assert_writer_agrees(odd)


# --- 2. reader equivalence --------------------------------------------------------------------


@given(messages)
def test_c_reader_reads_every_valid_encoding_as_python_does(message: Message) -> None:
    data = encode_message(message)
    fast = codec._fast_read(data)  # type: ignore[misc]
    if fast is None:
        # The one deferral by design: the C reader takes an empty array only where it is
        # never valid (optional lists), so an empty required list takes the Python road.
        assert getattr(message, "capabilities", None) == (), "valid messages take the fast road"
        return
    with python_road():
        slow = codec._decode_message(data, codec.MESSAGE_LIMITS, codec.PROTOCOL_VERSION)
    assert type(fast) is type(slow) and repr(fast) == repr(slow) and fast == message


@settings(max_examples=300)
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xa0")
@example(b"\xa1\x00\x04")
@example(b"\xbf\x00\x04\xff")
@example(b"\xa1\x18\x00\x04")
def test_c_reader_on_random_bytes(data: bytes) -> None:
    assert_reader_agrees(data)


@settings(max_examples=150)
@given(messages, st.binary(min_size=1, max_size=40))
def test_c_reader_on_random_tails(message: Message, tail: bytes) -> None:
    """A valid beginning and random bytes after it: the C reader gets deep into the map."""
    data = encode_message(message)
    for cut in (len(data) // 3, len(data) // 2, len(data) - 1, len(data)):
        assert_reader_agrees(data[:cut] + tail)


@settings(max_examples=30)
@given(messages)
def test_c_reader_on_every_truncation(message: Message) -> None:
    data = encode_message(message)
    for cut in range(len(data)):
        assert_reader_agrees(data[:cut])


REPLACEMENTS = (0x00, 0xFF, 0x1F, 0x9F, 0xBF, 0xF9, 0xC0, 0x18, 0x5F, 0x7F, 0xF4, 0xF6, 0x20)


@settings(max_examples=400)
@given(messages, st.data())
def test_c_reader_on_single_byte_mutations(message: Message, data: Any) -> None:
    encoded = encode_message(message)
    offset = data.draw(st.integers(0, len(encoded) - 1))
    byte = data.draw(
        st.sampled_from(REPLACEMENTS)
        | st.integers(0, 7).map(lambda bit: encoded[offset] ^ (1 << bit))
        | st.integers(0, 255)
    )
    assert_reader_agrees(encoded[:offset] + bytes([byte]) + encoded[offset + 1 :])


@st.composite
def refused_after_reading(draw: Any) -> bytes:
    """Well-formed bytes the C reader reads but the codec must still refuse (or accept):
    versions outside the window, critical keys (known or not), broken cross-field rules;
    one of them at a time, so each is the only reason for a refusal."""
    case = draw(st.sampled_from(["window", "critical", "rule", "rule"]))
    if case == "rule":  # an offer without terms, or a later state with them
        message: Any = draw(commitments())
        state = draw(st.sampled_from(CommitmentState))
        terms = draw(st.none() | st.just(Terms(1, 2, "a", 3, "u", 4)))
        cid = draw(st.none() | st.just(CID))
        message = attrs.evolve(message, state=state, terms=terms, commitment=cid)
    else:
        message = draw(messages.filter(lambda m: getattr(m, "capabilities", None) != ()))
    if case == "window":
        header = attrs.evolve(
            message.header,
            version=draw(st.sampled_from([0, 1, 2, 3, UINT64_MAX])),
            min_version=draw(st.sampled_from([0, 1, 2, 3])),
        )
        message = attrs.evolve(message, header=header)
    if case == "critical":
        keys = st.sampled_from([0, 5, 8, 11, 14, 15, 30, UINT64_MAX])
        header = attrs.evolve(
            message.header, critical=draw(st.lists(keys, min_size=1, max_size=3).map(tuple))
        )
        message = attrs.evolve(message, header=header)
    data: bytes = codec._PY_WRITERS[type(message)](message)  # no class rule, no window
    return data


@settings(max_examples=80)
@given(refused_after_reading())
def test_codec_reapplies_the_rules_after_the_c_reader(data: bytes) -> None:
    assert codec._fast_read(data) is not None  # type: ignore[misc]  # so the gate is what decides
    assert_reader_agrees(data)


# A small CBOR tree, so structural mutations keep the rest of the item intact.


@attrs.define
class Node:
    major: int
    arg: int
    head: bytes
    payload: bytes = b""  # byte and text strings
    children: list[Node] = attrs.field(factory=list)  # arrays; maps as key, value, ...

    def emit(self) -> bytes:
        return self.head + self.payload + b"".join(child.emit() for child in self.children)


def parse(data: bytes, at: int = 0) -> tuple[Node, int]:
    """One item of deterministic CBOR (definite lengths only) and where it ends."""
    initial = data[at]
    major, info = initial >> 5, initial & 31
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info, 0)
    arg = info if info < 24 else int.from_bytes(data[at + 1 : at + 1 + size], "big")
    end = at + 1 + size
    node = Node(major, arg, data[at:end])
    if major in (2, 3):
        node.payload = data[end : end + arg]
        end += arg
    elif major in (4, 5):
        for _ in range(arg * (2 if major == 5 else 1)):
            child, end = parse(data, end)
            node.children.append(child)
    elif major == 6:
        child, end = parse(data, end)
        node.children.append(child)
    return node, end


def head(major: int, arg: int, size: int | None = None) -> bytes:
    """A head of ``major``/``arg``; ``size`` forces the argument width (non-shortest)."""
    if size is None:
        size = 0 if arg < 24 else 1 if arg < 256 else 2 if arg < 65536 else 4 if arg < 2**32 else 8
    info = {0: arg, 1: 24, 2: 25, 4: 26, 8: 27}[size]
    return bytes([major << 5 | info]) + (arg.to_bytes(size, "big") if size else b"")


def preorder(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from preorder(child)


#: Items put in place of another item, or added as an extension's value.
ITEMS = [
    bytes.fromhex(h)
    for h in (
        "00", "17", "1818", "1b" + "ff" * 8, "20", "3b" + "ff" * 8, "40", "60", "6161",
        "80", "8101", "a0", "a10000", "f4", "f5", "f6", "f7", "f93c00", "fa3f800000", "c100",
        "c24105", "d82000", "5822" + "1220" + "00" * 32, "5822" + "1120" + "00" * 32,
        "62c328", "63eda080", "7f6161ff", "9f01ff", "bf0000ff",
    )
]  # fmt: skip


def mutate(node: Node, target: int, how: int, choice: int) -> bytes:
    """The message with one structural change at the ``target``-th item (pre-order)."""
    nodes = list(preorder(node))
    victim = nodes[target % len(nodes)]
    item = ITEMS[choice % len(ITEMS)]
    original = victim.emit()
    replacement: bytes
    if how == 0:  # non-shortest head
        width = [w for w in (1, 2, 4, 8) if w > len(victim.head) - 1 and victim.arg < 256**w]
        new_head = (
            head(victim.major, victim.arg, width[choice % len(width)]) if width else victim.head
        )
        replacement = new_head + victim.payload + b"".join(c.emit() for c in victim.children)
    elif how == 1:  # indefinite length
        if victim.major in (2, 3):
            replacement = bytes([victim.major << 5 | 31]) + original + b"\xff"
        elif victim.major in (4, 5):
            inner = b"".join(c.emit() for c in victim.children)
            replacement = bytes([victim.major << 5 | 31]) + inner + b"\xff"
        else:
            replacement = original
    elif how == 2:  # a tag in front
        replacement = [b"\xc0", b"\xc1", b"\xc2", b"\xd8\x18", b"\xd9\xd9\xf7"][
            choice % 5
        ] + original
    elif how == 3:  # another item in its place
        replacement = item
    else:
        replacement = original
    if victim.major == 5 and how >= 4:
        pairs = [victim.children[i : i + 2] for i in range(0, len(victim.children), 2)]
        keys = [p[0].arg if p[0].major == 0 else -1 for p in pairs]
        if how == 4 and pairs:  # duplicate a key
            index = choice % len(pairs)
            pairs.insert(index, pairs[index])
        elif how == 5 and len(pairs) > 1:  # two keys swapped
            index = choice % (len(pairs) - 1)
            pairs[index], pairs[index + 1] = pairs[index + 1], pairs[index]
        elif how == 6 and pairs:  # a key left out
            pairs.pop(choice % len(pairs))
        else:  # an added key in order: an extension, an empty list, an unknown nested key
            key = [6, 7, 12, 6, 15, 30, 255, 2**32, UINT64_MAX][choice % 9]
            value = b"\x80" if choice % 3 == 0 else item
            position = sum(1 for k in keys if 0 <= k < key)
            if key not in keys:
                pairs.insert(position, [Node(0, key, head(0, key)), Node(0, 0, value)])
        body = b"".join(pair[0].emit() + pair[1].emit() for pair in pairs)
        replacement = head(5, len(pairs)) + body
    full = node.emit()
    start = sum(len(n.head) + len(n.payload) for n in nodes[: target % len(nodes)])
    return full[:start] + replacement + full[start + len(original) :]


@settings(max_examples=300)
@given(messages, st.integers(0, 10**6), st.integers(0, 8), st.integers(0, 10**6))
def test_c_reader_on_structural_mutations(
    message: Message, target: int, how: int, choice: int
) -> None:
    """Non-shortest heads, indefinite lengths, tags, wrong items, duplicate, unsorted, missing
    and added keys (extensions, empty optional lists), each at any item of a valid message."""
    data = encode_message(message)
    tree, end = parse(data)
    assert end == len(data) and tree.emit() == data
    assert_reader_agrees(mutate(tree, target, how, choice))


@settings(max_examples=100)
@given(messages, st.sampled_from([*ITEMS, b"\x00", b"\xff", b"\xa0"]))
def test_c_reader_on_trailing_bytes(message: Message, tail: bytes) -> None:
    assert_reader_agrees(encode_message(message) + tail)


def test_c_reader_defers_on_hand_made_cases() -> None:
    """Named cases: non-shortest type code, indefinite map, duplicate and unsorted keys."""
    claim = encode_message(LeaseClaim(Header(7, 1000, 3), "v", 5))
    assert claim[:3] == b"\xa9\x00\x04"
    for data in (
        b"\xa9\x00\x18\x04" + claim[3:],  # type 4 as 0x18 0x04
        b"\xbf" + claim[1:] + b"\xff",  # indefinite-length map
        b"\xaa\x00\x04\x00\x04" + claim[3:],  # key 0 twice
        b"\xa9\x01\x01\x00\x04" + claim[5:],  # keys 1, 0: unsorted
        claim + b"\x00",  # trailing byte
        b"\xaa" + claim[1:] + b"\x18\x1e\x00",  # extension key 30
        b"\xaa" + claim[1:-4] + b"\x06\x80" + claim[-4:],  # misplaced empty references
    ):
        assert codec._fast_read(data) is None, data.hex()  # type: ignore[misc]
        assert_reader_agrees(data)


@pytest.mark.parametrize("data", ["", (), [1]], ids=repr)
def test_decode_message_of_a_non_bytes_argument(data: Any) -> None:
    """``decode_message`` promises DecodeError or MessageError only; the Python road gives
    DecodeError for these, but ``_speedups.read_message`` parses its argument as ``y*`` and
    raises TypeError before the Python road runs."""
    fast, slow = decode_both(data)
    assert fast == slow


# --- 3. the spec vectors, with and without the accelerator ----------------------------------


def vector_bytes() -> list[tuple[str, bytes]]:
    """Every hex string of spec/vectors/v1, and the payload of each COSE envelope."""
    found: list[tuple[str, bytes]] = []

    def walk(item: Any, name: str) -> None:
        if isinstance(item, dict):
            if isinstance(item.get("hex"), str):
                data = bytes.fromhex(item["hex"])
                found.append((f"{name}:{item.get('id', '?')}", data))
                try:
                    envelope = cbor2.loads(data)
                except Exception:  # most vectors are not envelopes
                    envelope = None
                if isinstance(envelope, cbor2.CBORTag) and isinstance(
                    envelope.value, (list, tuple)
                ):
                    payload = envelope.value[2] if len(envelope.value) == 4 else None
                    if isinstance(payload, bytes):
                        found.append((f"{name}:{item.get('id', '?')}:payload", payload))
            for value in item.values():
                walk(value, name)
        elif isinstance(item, list):
            for value in item:
                walk(value, name)

    for path in sorted((SPEC / "vectors").glob("v*/*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")), path.stem)
    return found


VECTORS = vector_bytes()


def test_vectors_were_found() -> None:
    names = {name.split(":")[0] for name, _ in VECTORS}
    assert {"valid", "invalid", "extensions", "envelopes"} <= names
    assert sum(name.endswith(":payload") for name, _ in VECTORS) >= 5


@pytest.mark.parametrize(("name", "data"), VECTORS, ids=[name for name, _ in VECTORS])
def test_spec_vector_same_with_and_without_accelerator(name: str, data: bytes) -> None:
    fast, slow = decode_both(data)
    assert fast == slow
    if slow[0] == "value":
        message = decode_message(data)
        written = outcome(lambda: encode_message(message))
        with python_road():
            assert outcome(lambda: encode_message(message)) == written
        assert written == ("value", bytes, repr(data))
    assert_reader_agrees(data)


def first_of_each_type() -> list[tuple[str, bytes]]:
    """The first valid vector of each message type, and the extension vectors."""
    chosen: dict[Any, tuple[str, bytes]] = {}
    for name, data in VECTORS:
        if name.startswith("valid:"):
            chosen.setdefault(cbor2.loads(data)[0], (name, data))
        elif name.startswith("extensions:"):
            chosen[name] = (name, data)
    return list(chosen.values())


#: The exhaustive sweep's inputs.
SWEPT = first_of_each_type()


def test_sweep_covers_every_message_type() -> None:
    swept = {cbor2.loads(data)[0] for _, data in SWEPT}
    assert swept >= {cls.TYPE.value for cls in codec._PY_WRITERS}


@pytest.mark.parametrize(("name", "data"), SWEPT, ids=[name for name, _ in SWEPT])
def test_spec_vector_every_byte_mutation(name: str, data: bytes) -> None:
    """Exhaustive: every offset of each vector, the listed replacements and two bit flips.

    The vectors at the bounds (a 64 KiB message, 20 KB of text, thousands of items) are swept in
    full at their first and last 128 bytes, where the structure is, and at 64 offsets
    between: inside a long text or a run of like items one offset is much like another, and a
    full sweep of them would cost minutes.
    """
    for offset in _offsets(len(data)):
        for byte in (0x00, 0xFF, 0xC0, 0xF9, data[offset] ^ 0x01, data[offset] ^ 0x80):
            assert_reader_agrees(data[:offset] + bytes([byte]) + data[offset + 1 :])


def _offsets(size: int, edge: int = 128, between: int = 64) -> list[int]:
    if size <= 4 * edge:
        return list(range(size))
    stride = max(1, (size - 2 * edge) // between)
    return [*range(edge), *range(edge, size - edge, stride), *range(size - edge, size)]
