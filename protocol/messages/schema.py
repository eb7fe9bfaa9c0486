"""Field kinds: how one field of a message maps between its attrs value and its CBOR item.

Every message family declares its fields once, as a tuple of :class:`Field` (map key, attribute
name, kind). Encoding and decoding are driven by that table, so the CDDL in ``spec/`` and the
code cannot drift apart field by field, and every decode error names the field it is about.

Kinds convert to plain CBOR items (int, bytes, str, list, dict with small unsigned keys in
ascending order) and never produce floats, which is what lets the message encoder hand its
dicts straight to ``cbor2`` and still get RFC 8949 §4.2.1 deterministic bytes.
"""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import attrs

from ..errors import MessageError
from ..ids import ContentId, ContentIdError

T = TypeVar("T")
E = TypeVar("E", bound=enum.IntEnum)

UINT64_MAX: Final = (1 << 64) - 1
#: Bounds on variable-size fields; the CBOR scanner bounds the whole message before this.
MAX_TEXT: Final = 256
MAX_LIST: Final = 64


class Kind(abc.ABC, Generic[T]):
    """Converts a field between its Python value and its CBOR item."""

    cddl: str = "any"

    def to_wire(self, value: T) -> Any:
        return value

    @abc.abstractmethod
    def from_wire(self, raw: Any, path: str) -> T:
        """Validate and convert a decoded CBOR item; ``path`` names the field in errors."""


class _UInt(Kind[int]):
    cddl = "uint"

    def from_wire(self, raw: Any, path: str) -> int:
        if type(raw) is not int or raw < 0 or raw > UINT64_MAX:
            raise MessageError(f"expected an unsigned integer, got {_describe(raw)}", path)
        return raw


class _Text(Kind[str]):
    cddl = f"tstr .size (0..{MAX_TEXT})"

    def from_wire(self, raw: Any, path: str) -> str:
        if type(raw) is not str:
            raise MessageError(f"expected a text string, got {_describe(raw)}", path)
        if len(raw.encode()) > MAX_TEXT:
            raise MessageError(f"text longer than {MAX_TEXT} bytes", path)
        return raw


class _Cid(Kind[ContentId]):
    cddl = "content-id"

    def to_wire(self, value: ContentId) -> bytes:
        return value.raw

    def from_wire(self, raw: Any, path: str) -> ContentId:
        if type(raw) is not bytes:
            raise MessageError(f"expected a content id (byte string), got {_describe(raw)}", path)
        try:
            return ContentId.from_bytes(raw)
        except ContentIdError as exc:
            raise MessageError(exc.message, path) from None


class EnumKind(Kind[E]):
    """An :class:`enum.IntEnum` carried as its unsigned integer value."""

    def __init__(self, enum_type: type[E]) -> None:
        self.enum_type = enum_type
        self.cddl = " / ".join(str(int(member)) for member in enum_type)

    def to_wire(self, value: E) -> int:
        return int(value)

    def from_wire(self, raw: Any, path: str) -> E:
        if type(raw) is not int:
            raise MessageError(f"expected an integer code, got {_describe(raw)}", path)
        try:
            return self.enum_type(raw)
        except ValueError:
            raise MessageError(f"unknown {self.enum_type.__name__} code {raw}", path) from None


class ListOf(Kind[tuple[T, ...]]):
    """A bounded array of one kind, held as a tuple."""

    def __init__(self, item: Kind[T], max_items: int = MAX_LIST) -> None:
        self.item = item
        self.max_items = max_items
        self.cddl = f"[* {item.cddl}]"

    def to_wire(self, value: tuple[T, ...]) -> list[Any]:
        to_wire = self.item.to_wire
        return [to_wire(item) for item in value]

    def from_wire(self, raw: Any, path: str) -> tuple[T, ...]:
        if type(raw) is not list:
            raise MessageError(f"expected an array, got {_describe(raw)}", path)
        if len(raw) > self.max_items:
            raise MessageError(f"more than {self.max_items} items", path)
        from_wire = self.item.from_wire
        return tuple(from_wire(item, f"{path}[{index}]") for index, item in enumerate(raw))


class Struct(Kind[T]):
    """A nested attrs class with its own field table, carried as a map."""

    def __init__(self, cls: type[T], name: str) -> None:
        self.cls = cls
        self.cddl = name
        self.fields: tuple[Field, ...] = cls.FIELDS  # type: ignore[attr-defined]
        self.keys = frozenset(field.key for field in self.fields)

    def to_wire(self, value: T) -> dict[int, Any]:
        return fields_to_wire(self.fields, value)

    def from_wire(self, raw: Any, path: str) -> T:
        if type(raw) is not dict:
            raise MessageError(f"expected a map, got {_describe(raw)}", path)
        values = fields_from_wire(self.fields, raw, path)
        if not self.keys.issuperset(raw):
            extra = _unknown(raw, self.keys)
            raise MessageError(f"unknown keys {extra}", path)
        return self.cls(**values)


class _Int64(Kind[int]):
    cddl = "int64"

    def from_wire(self, raw: Any, path: str) -> int:
        if type(raw) is not int or not -INT64_LIMIT <= raw < INT64_LIMIT:
            raise MessageError(f"expected a 64-bit signed integer, got {_describe(raw)}", path)
        return raw


class _Bytes(Kind[bytes]):
    """A byte string; the message's own size bound (§3.4) is its bound."""

    cddl = "bstr"

    def from_wire(self, raw: Any, path: str) -> bytes:
        if type(raw) is not bytes:
            raise MessageError(f"expected a byte string, got {_describe(raw)}", path)
        return raw


class MapOf(Kind[tuple[tuple[str, T], ...]]):
    """A bounded map from short text names to one kind, held as (name, value) pairs in the
    map's deterministic key order (RFC 8949 §4.2.1: shorter encodings first, then bytewise),
    so that one value has one encoding and the pairs compare equal whenever the maps do."""

    def __init__(self, value: Kind[T], max_items: int, max_name: int) -> None:
        self.value = value
        self.max_items = max_items
        self.max_name = max_name
        self.cddl = f"{{0*{max_items} tstr .size (1..{max_name}) => {value.cddl}}}"

    def to_wire(self, value: tuple[tuple[str, T], ...]) -> dict[str, Any]:
        to_wire = self.value.to_wire
        return {name: to_wire(item) for name, item in value}

    def from_wire(self, raw: Any, path: str) -> tuple[tuple[str, T], ...]:
        if type(raw) is not dict:
            raise MessageError(f"expected a map, got {_describe(raw)}", path)
        if len(raw) > self.max_items:
            raise MessageError(f"more than {self.max_items} entries", path)
        out = []
        for name, item in raw.items():
            if type(name) is not str or not 1 <= len(name.encode()) <= self.max_name:
                raise MessageError(
                    f"a name is text of 1..{self.max_name} bytes, got {_describe(name)}", path
                )
            # An entry is named by its key as a JSON string: metrics["temp"].mean (§9 paths).
            where = f"{path}[{json.dumps(name, ensure_ascii=False)}]"
            out.append((name, self.value.from_wire(item, where)))
        out.sort(key=lambda pair: (len(pair[0].encode()), pair[0].encode()))
        return tuple(out)


INT64_LIMIT: Final = 1 << 63
UINT: Final = _UInt()
INT64: Final = _Int64()
BYTES: Final = _Bytes()
TEXT: Final = _Text()
CID: Final = _Cid()
CIDS: Final = ListOf(CID)


@attrs.frozen(slots=True)
class Field:
    """One entry of a field table: map key, attribute name, kind, and whether it may be absent."""

    key: int
    name: str
    kind: Kind[Any]
    optional: bool = False
    #: Checks across the decoded value (ranges, relations); raises MessageError.
    check: Callable[[Any, str], None] | None = None
    #: The protocol version that added the field to its type; a reader of an older version
    #: does not know the key and keeps it as an extension (protocol.md §5.3).
    since: int = 1


def fields_at(fields: tuple[Field, ...], version: int) -> tuple[Field, ...]:
    """The fields of a table that a reader or writer of ``version`` knows."""
    if all(field.since <= version for field in fields):
        return fields
    return tuple(field for field in fields if field.since <= version)


def fields_to_wire(fields: tuple[Field, ...], value: Any) -> dict[int, Any]:
    """Encode the fields of ``value`` as a dict in ascending key order (absent optionals left out)."""
    out: dict[int, Any] = {}
    for field in fields:
        item = getattr(value, field.name)
        if item is None or (field.optional and item == ()):
            continue
        out[field.key] = field.kind.to_wire(item)
    return out


_MISSING: Final = object()


def _slow_from_wire(field: Field, item: Any, path: str) -> Any:
    """The general path of one field, with the error renamed to the field's full path."""
    try:
        value = field.kind.from_wire(item, "")
    except MessageError as exc:
        where = f"{path}.{field.name}" if path else field.name
        inner = exc.field if not exc.field or exc.field[0] == "[" else "." + exc.field
        raise type(exc)(exc.reason, where + inner) from None
    return value


def _missing(field: Field, path: str) -> Any:
    if not field.optional:
        where = f"{path}.{field.name}" if path else field.name
        raise MessageError(f"required field (key {field.key}) is missing", where)
    return () if isinstance(field.kind, ListOf) else None


class _StructList:
    """Decodes a bounded array of nested maps; the element's path is built only on error."""

    def __init__(self, kind: ListOf[Any], name: str) -> None:
        item = kind.item
        assert isinstance(item, Struct)
        self.max_items = kind.max_items
        self.keys = item.keys
        self.decode = compile_from_wire(item.fields, item.cddl, item.cls)
        self.name = name

    def __call__(self, raw: list[Any], path: str) -> tuple[Any, ...]:
        where = f"{path}.{self.name}" if path else self.name
        if len(raw) > self.max_items:
            raise MessageError(f"more than {self.max_items} items", where)
        out = []
        keys, decode = self.keys, self.decode
        for index, item in enumerate(raw):
            if type(item) is not dict:
                raise MessageError(f"expected a map, got {_describe(item)}", f"{where}[{index}]")
            if not keys.issuperset(item):
                extra = _unknown(item, keys)
                raise MessageError(f"unknown keys {extra}", f"{where}[{index}]")
            try:
                out.append(decode(item, ""))
            except MessageError as exc:
                inner = "." + exc.field if exc.field else ""
                raise type(exc)(exc.reason, f"{where}[{index}]{inner}") from None
        return tuple(out)


_CID_TEST: Final = "type({0}) is bytes and len({0}) == 34 and {0}[0] == 0x12 and {0}[1] == 32"


def _fast_path(
    kind: Kind[Any], index: int, name: str, namespace: dict[str, Any]
) -> tuple[str, str | list[str]]:
    """(test, conversion) in generated code for a field value ``v`` of a common kind.

    The conversion is an expression, or statements that set ``v`` (lists: a loop, because a
    generator expression costs a frame per call, which is most of a short list's budget).
    """
    if kind is UINT:
        return f"type(v) is int and 0 <= v <= {UINT64_MAX}", "v"
    if kind is TEXT:
        return f"type(v) is str and len(v) <= {MAX_TEXT // 4}", "v"
    if kind is CID:
        return _CID_TEST.format("v"), "_ContentId(v)"
    if isinstance(kind, EnumKind):
        namespace[f"_members{index}"] = kind.enum_type._value2member_map_
        return f"type(v) is int and v in _members{index}", f"_members{index}[v]"
    if isinstance(kind, ListOf) and kind.item is CID:
        return f"type(v) is list and len(v) <= {kind.max_items}", [
            "t = []",
            "for x in v:",
            f"    if {_CID_TEST.format('x')}: t.append(_ContentId(x))",
            "    else: break",
            "else:",
            "    t = tuple(t)",
            f"v = t if type(t) is tuple else _slow(_f{index}, v, path)",
        ]
    if isinstance(kind, ListOf) and kind.item is UINT:
        return f"type(v) is list and len(v) <= {kind.max_items}", [
            "for x in v:",
            f"    if type(x) is not int or not 0 <= x <= {UINT64_MAX}:",
            f"        v = _slow(_f{index}, v, path)",
            "        break",
            "else:",
            "    v = tuple(v)",
        ]
    if isinstance(kind, ListOf) and isinstance(kind.item, Struct):
        # Inline for the common case; any refusal re-runs the list through _StructList,
        # which names the element and field (a try block costs nothing until it raises).
        structs = namespace[f"_structs{index}"] = _StructList(kind, name)
        namespace[f"_keys{index}"] = structs.keys
        namespace[f"_decode{index}"] = structs.decode  # compiled once, shared with the slow road
        return f"type(v) is list and len(v) <= {kind.max_items}", [
            "t = []",
            "try:",
            "    for x in v:",
            f"        if type(x) is dict and _keys{index}.issuperset(x): t.append(_decode{index}(x, ''))",
            "        else: break",
            "    else:",
            "        t = tuple(t)",
            "except MessageError:",
            "    pass",
            f"v = t if type(t) is tuple else _structs{index}(v, path)",
        ]
    if isinstance(kind, Struct):
        namespace[f"_struct{index}"] = kind
        namespace[f"_decode{index}"] = compile_from_wire(kind.fields, kind.cddl, kind.cls)
        return (
            f"type(v) is dict and _struct{index}.keys.issuperset(v)",
            f"_decode{index}(v, path + '.{name}' if path else '{name}')",
        )
    return "False", "v"


def _empty(field: Field, path: str) -> None:
    where = f"{path}.{field.name}" if path else field.name
    raise MessageError("an empty optional list is left out, not written empty", where)


def compile_from_wire(
    fields: tuple[Field, ...], label: str, cls: type[Any] | None = None, *extra: str
) -> Callable[..., Any]:
    """Generate the decoder of a field table, with errors naming the field.

    Without ``cls`` the decoder maps a CBOR map to keyword arguments:
    ``from_wire(raw, path) -> dict``. With ``cls`` it builds the value itself, passing the
    ``extra`` keyword arguments through: ``from_wire(raw, path, *extra) -> cls`` (a message
    takes ``header`` and ``extensions`` this way).

    The verify pipeline must reach 0.8 of raw Ed25519 verify throughput, so the common kinds
    (unsigned ints, short text, content ids) are checked in straight-line code generated once
    from the table; everything else, and every error, goes through the kind's ``from_wire``.
    """
    namespace: dict[str, Any] = {
        "_M": _MISSING,
        "_missing": _missing,
        "_empty": _empty,
        "_slow": _slow_from_wire,
        "_ContentId": ContentId,
        "_cls": cls,
        "MessageError": MessageError,
    }
    lines = [f"def from_wire({', '.join(('raw', 'path', *extra))}):"]
    for index, field in enumerate(fields):
        namespace[f"_f{index}"] = field
        kind = field.kind
        fast, convert = _fast_path(kind, index, field.name, namespace)
        absent = _missing(field, "") if field.optional else None
        lines += [
            f"    v = raw.get({field.key}, _M)",
            "    if v is _M:",
            f"        v = {absent!r}" if field.optional else f"        v = _missing(_f{index}, path)",
            f"    elif {fast}:",
            *(
                [f"        v = {convert}"]
                if isinstance(convert, str)
                else [f"        {line}" for line in convert]
            ),
            "    else:",
            f"        v = _slow(_f{index}, v, path)",
        ]
        if field.optional and isinstance(kind, ListOf):
            # Absent and empty would be two encodings of one content: only absence is allowed.
            lines.append(f"    if v == () and {field.key} in raw: _empty(_f{index}, path)")
        if field.check is not None:
            lines.append(
                f"    if v is not None: _f{index}.check(v, path + '.{field.name}' if path else '{field.name}')"
            )
        lines.append(f"    a{index} = v")
    values = {name: name for name in extra}
    values.update((field.name, f"a{index}") for index, field in enumerate(fields))
    init = [a.name for a in attrs.fields(cls) if a.init] if attrs.has(cls) else []  # type: ignore[arg-type]
    if init and set(init) == set(values):  # positional: a third faster than keywords
        arguments = [values[name] for name in init]
    else:
        arguments = [f"{name}={value}" for name, value in values.items()]
    if cls is None:
        items = ", ".join(f"'{field.name}': a{index}" for index, field in enumerate(fields))
        lines.append(f"    return {{{items}}}")
    else:
        lines.append(f"    return _cls({', '.join(arguments)})")
    exec(compile("\n".join(lines), f"<fleetwire decoder: {label}>", "exec"), namespace)
    function: Callable[..., Any] = namespace["from_wire"]
    return function


def fields_from_wire(fields: tuple[Field, ...], raw: dict[Any, Any], path: str) -> dict[str, Any]:
    """Decode the fields of a map into keyword arguments; names the field of any error."""
    # Keyed by identity (hashing Fields is slow); the entry keeps the table alive so the id
    # cannot be reused. Field tables are module-level constants, so this stays small.
    entry = _DECODERS.get(id(fields))
    if entry is None:
        entry = _DECODERS[id(fields)] = (fields, compile_from_wire(fields, path or "message"))
    return entry[1](raw, path)


_DECODERS: dict[int, tuple[tuple[Field, ...], Callable[[dict[Any, Any], str], dict[str, Any]]]] = {}


def in_range(low: int, high: int) -> Callable[[Any, str], None]:
    """A field check: the integer lies in ``low..high``."""

    def check(value: Any, path: str) -> None:
        if not low <= value <= high:
            raise MessageError(f"{value} is outside {low}..{high}", path)

    return check


def _unknown(raw: dict[Any, Any], keys: frozenset[int]) -> list[Any]:
    """The keys of ``raw`` not in ``keys``, in a stable order (they may mix types: hostile)."""
    return sorted(
        (key for key in raw if key not in keys),
        key=lambda key: (0, key, "") if type(key) is int else (1, 0, repr(key)),
    )


def _describe(raw: Any) -> str:
    text = repr(raw)
    return f"{type(raw).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
