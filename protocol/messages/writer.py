"""Message values → RFC 8949 §4.2.1 deterministic bytes, written directly from the field tables.

The signing pipeline must reach 0.8 of raw Ed25519 sign throughput, which leaves a few
microseconds for the codec. Building a dict and handing it to ``cbor2`` costs more than that
(``cbor2`` spends most of a microsecond on every array), so each field table is compiled once
into straight-line code: one expression per field's CBOR pieces, joined once per map (optional
fields are prepared first, so the map head can count them).

What makes the output deterministic without a sorting pass (§4.2.1):

- every head is written in its shortest form (:func:`..cbor.head` builds the tables);
- map keys are the small unsigned keys of the table, which :func:`check_ascending` checks are
  strictly ascending — for unsigned integers numeric order is bytewise order of the encodings;
- absent optionals (``None``, or an empty tuple for a list) are left out, never written empty;
- there are no floats, tags or indefinite lengths in any field kind.

The writer refuses what a reader would refuse: an integer outside ``0..2**64-1``, a text or a
list over its bound, an enum code the enum does not have. The tables' sizes are the bounds, so
the check costs nothing on the common path; the error is then found and named by the field's
own ``from_wire`` (:func:`diagnose`). Kinds without a fast form fall back to
:func:`..cbor.encode` of the kind's ``to_wire`` item, so a new kind works before it is fast.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from .. import cbor
from ..errors import MessageError
from .schema import (
    CID,
    MAX_LIST,
    MAX_TEXT,
    TEXT,
    UINT,
    UINT64_MAX,
    EnumKind,
    Field,
    Kind,
    ListOf,
    Struct,
)

#: Encoded unsigned integers 0..1023: one list index on the common path.
_UINTS: Final = tuple(cbor.head(0, value) for value in range(1024))
_TEXT_HEADS: Final = tuple(cbor.head(3, size) for size in range(MAX_TEXT + 1))
_BYTES_HEADS: Final = tuple(cbor.head(2, size) for size in range(256))
_ARRAY_HEADS: Final = tuple(cbor.head(4, size) for size in range(MAX_LIST + 1))
_MAP_HEADS: Final = tuple(cbor.head(5, size) for size in range(64))
_U64: Final = struct.Struct(">BQ").pack


def uint(value: int) -> bytes:
    """The encoding of an unsigned integer above the table (or a refusal)."""
    if type(value) is not int and not isinstance(value, int):
        raise TypeError(f"expected an unsigned integer, got {type(value).__name__}")
    if value >= 0x100000000:  # DTN times in ms: the commonest large value
        if value > UINT64_MAX:
            raise OverflowError(f"{value} does not fit in 64 bits")
        return _U64(0x1B, value)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return cbor.head(0, value)


#: Exceptions a writer raises on a value its table refuses; :func:`diagnose` names the field.
WRITE_ERRORS: Final = (
    TypeError,
    ValueError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
    struct.error,  # a float of 2**32 or more reaching the 8-byte pack
)


def _uint_pieces(source: str, var: str) -> list[str]:
    # The walrus reads the attribute once; DTN times (8-byte) skip the function call.
    return [
        f"(_U[{var}] if 0 <= ({var} := {source}) < 1024 else "
        f"_Q(0x1B, {var}) if 0x100000000 <= {var} <= {UINT64_MAX} else _uint({var}))"
    ]


class _Compiler:
    """Turns field tables into Python source; constants go into one shared namespace."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "_U": _UINTS,
            "_Q": _U64,
            "_uint": uint,
            "_T": _TEXT_HEADS,
            "_B": _BYTES_HEADS,
            "_M": _MAP_HEADS,
            "_generic": cbor.encode,
        }
        self.temporaries = 0

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def temporary(self) -> str:
        self.temporaries += 1
        return f"t{self.temporaries}"

    def pieces(self, kind: Kind[Any], source: str) -> list[str] | None:
        """Expressions for the pieces of a scalar field, or None if it needs statements."""
        if kind is UINT:
            return _uint_pieces(source, self.temporary())
        if kind is TEXT:
            var = self.temporary()
            return [f"_T[len({var} := {source}.encode())]", var]
        if kind is CID:
            var = self.temporary()
            return [f"_B[len({var} := {source}.raw)]", var]
        if isinstance(kind, EnumKind):
            codes = {member.value: cbor.head(0, member.value) for member in kind.enum_type}
            return [f"{self.constant(codes)}[{source}]"]
        return None

    def expression(self, kind: Kind[Any], source: str) -> list[str]:
        """Expressions whose bytes, joined, are the encoding of ``source`` (of ``kind``)."""
        pieces = self.pieces(kind, source)
        if pieces is not None:
            return pieces
        if isinstance(kind, ListOf):
            heads = self.constant(_ARRAY_HEADS[: kind.max_items + 1])
            var = self.temporary()
            item = self.constant(self.item_writer(kind.item))
            # map() over a compiled function: a comprehension would cost a frame per call.
            return [f"{heads}[len({var} := {source})]", f"b''.join(map({item}, {var}))"]
        if isinstance(kind, Struct):
            return [f"{self.constant(self.compile(kind.fields, kind.cddl))}({source})"]
        # A kind with no fast form: its CBOR item through the general encoder.
        return [f"_generic({self.constant(kind)}.to_wire({source}))"]

    def item_writer(self, kind: Kind[Any]) -> Callable[[Any], bytes]:
        """A function writing one list item of ``kind``."""
        if isinstance(kind, Struct):
            return self.compile(kind.fields, kind.cddl)
        pieces = self.expression(kind, "x")
        body = " + ".join(pieces) if len(pieces) <= 2 else f"b''.join(({', '.join(pieces)},))"
        function: Callable[[Any], bytes] = self.define(["def item(x):", f"    return {body}"], kind.cddl, "item")
        return function

    def table(self, fields: tuple[Field, ...], source: str, lines: list[str]) -> list[str]:
        """The pieces of ``source``'s fields; optional ones are prepared in ``lines`` first,
        counting those present in ``n``."""
        out: list[str] = []
        for field in fields:
            key = self.constant(cbor.head(0, field.key))
            var = f"{source}.{field.name}"
            if field.check is not None:  # a reader's range rule: never write what it refuses
                guard = f"if {var} is not None: " if field.optional else ""
                lines.append(f"    {guard}{self.constant(field.check)}({var}, {field.name!r})")
            if not field.optional:
                out += [key, *self.expression(field.kind, var)]
                continue
            part = self.temporary()
            test = var if isinstance(field.kind, ListOf) else f"{var} is not None"
            pieces = ", ".join([key, *self.expression(field.kind, var)])
            lines += [
                f"    if {test}:",
                "        n += 1",
                f"        {part} = b''.join(({pieces},))",
                "    else:",
                f"        {part} = b''",
            ]
            out.append(part)
        return self.merged(out)

    def merged(self, pieces: list[str]) -> list[str]:
        """Adjacent constant pieces joined into one constant, at compile time."""
        out: list[str] = []
        for piece in pieces:
            if out and piece in self.namespace and out[-1] in self.namespace:
                out[-1] = self.constant(self.namespace[out[-1]] + self.namespace[piece])
            else:
                out.append(piece)
        return out

    def compile(self, fields: tuple[Field, ...], label: str) -> Callable[[Any], bytes]:
        """The writer of a nested map: ``write(value) -> bytes``."""
        check_ascending(fields, label)
        required = sum(not field.optional for field in fields)
        fixed = required == len(fields)
        lines = ["def write(m):"] if fixed else ["def write(m):", f"    n = {required}"]
        pieces = self.table(fields, "m", lines)
        function: Callable[[Any], bytes] = self.finish(lines, pieces, required, fixed, label)
        return function

    def finish(self, lines: list[str], pieces: list[str], required: int, fixed: bool, label: str) -> Any:
        head = self.constant(_MAP_HEADS[required]) if fixed else "_M[n]"
        lines.append(f"    return b''.join(({', '.join(self.merged([head, *pieces]))},))")
        return self.define(lines, label, "write")

    def define(self, lines: list[str], label: str, name: str) -> Any:
        exec(compile("\n".join(lines), f"<fleetwire writer: {label}>", "exec"), self.namespace)
        return self.namespace.pop(name)


def check_ascending(fields: tuple[Field, ...], label: str) -> None:
    """Refuse a table whose keys are not strictly ascending (the writer relies on it)."""
    keys = [field.key for field in fields]
    if keys != sorted(set(keys)) or (keys and keys[0] < 0):
        raise ValueError(f"field table of {label} must have strictly ascending unsigned keys")
    if len(keys) >= len(_MAP_HEADS):
        raise ValueError(f"field table of {label} has more fields than the writer's map heads")


def compile_message_writer(
    type_code: int,
    header_fields: tuple[Field, ...],
    fields: tuple[Field, ...],
    label: str,
) -> Callable[[Any], bytes]:
    """The writer of a whole message: type (key 0), the header's fields, then the body's."""
    check_ascending((Field(0, "type", UINT), *header_fields, *fields), label)
    compiler = _Compiler()
    lines = ["def write(m):", "    h = m.header"]
    required = 1 + sum(not field.optional for field in (*header_fields, *fields))
    lines.append(f"    n = {required}")
    pieces = [compiler.constant(cbor.head(0, 0) + cbor.head(0, type_code))]
    pieces += compiler.table(header_fields, "h", lines)
    pieces += compiler.table(fields, "m", lines)
    fixed = required == 1 + len(header_fields) + len(fields)
    function: Callable[[Any], bytes] = compiler.finish(lines, pieces, required, fixed, label)
    return function


def diagnose(fields: tuple[Field, ...], value: Any, path: str) -> MessageError | None:
    """The first field of ``value`` that a reader would refuse, as the reader's own error."""
    for field in fields:
        where = f"{path}.{field.name}" if path else field.name
        item = getattr(value, field.name, None)
        if item is None or (field.optional and item == ()):
            if field.optional:
                continue
            return MessageError("required field is missing", where)
        kind = field.kind
        if isinstance(kind, Struct):
            found = diagnose(kind.fields, item, where)
        elif isinstance(kind, ListOf) and isinstance(kind.item, Struct):
            found = _diagnose_list(kind, item, where)
        else:
            found = _diagnose_item(kind, item, where, field.check)
        if found is not None:
            return found
    return None


def _diagnose_list(kind: ListOf[Any], items: Any, path: str) -> MessageError | None:
    assert isinstance(kind.item, Struct)
    if len(items) > kind.max_items:
        return MessageError(f"more than {kind.max_items} items", path)
    for index, item in enumerate(items):
        found = diagnose(kind.item.fields, item, f"{path}[{index}]")
        if found is not None:
            return found
    return None


def _diagnose_item(
    kind: Kind[Any], item: Any, path: str, check: Callable[[Any, str], None] | None
) -> MessageError | None:
    try:
        value = kind.from_wire(kind.to_wire(item), path)
        if check is not None:
            check(value, path)
    except MessageError as exc:
        return exc
    except (*WRITE_ERRORS, UnicodeError) as exc:
        return MessageError(f"cannot be written: {exc}", path)
    return None


__all__ = ["WRITE_ERRORS", "check_ascending", "compile_message_writer", "diagnose", "uint"]
