"""Messages as JSON-friendly values: for the command line, logs, reports and adapters.

The form follows the field tables (names, not keys; every version's types): ``{"type": "lease-claim", "header": {...},
"resource": "dock/7", "term_ms": 60000, ...}``. Content ids and byte strings are hex
strings, enums their lower-case names, nested structures and named maps objects. It is a view for people and scripts; the wire
form is CBOR and only the CBOR is signed.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from ..errors import MessageError
from ..ids import ContentId
from .header import HEADER_FIELDS, Header, MessageType
from .registry import MESSAGE_CLASSES, Message
from .schema import BYTES, CID, EnumKind, Field, Kind, ListOf, MapOf, Struct

__all__ = ["TYPE_NAMES", "message_from_json", "message_to_json", "type_name"]

#: ``"lease-claim"`` ⇄ :class:`MessageType`.
TYPE_NAMES: Final = {kind.name.lower().replace("_", "-"): kind for kind in MessageType}
_NAMES_OF: Final = {kind: name for name, kind in TYPE_NAMES.items()}


def type_name(message: Message) -> str:
    """The JSON name of the message's type, e.g. ``"lease-grant"``."""
    return _NAMES_OF[message.TYPE]


def _to_json(kind: Kind[Any], value: Any) -> Any:
    if value is None:
        return None
    if kind is CID:
        return str(value)
    if isinstance(kind, EnumKind):
        return value.name.lower()
    if isinstance(kind, ListOf):
        return [_to_json(kind.item, item) for item in value]
    if isinstance(kind, MapOf):
        return {name: _to_json(kind.value, item) for name, item in value}
    if isinstance(kind, Struct):
        return _fields_to_json(kind.fields, value)
    if kind is BYTES:
        return value.hex()
    return value


def _fields_to_json(fields: tuple[Field, ...], value: Any) -> dict[str, Any]:
    out = {}
    for field in fields:
        item = getattr(value, field.name)
        if item is None or (field.optional and item == ()):
            continue
        out[field.name] = _to_json(field.kind, item)
    return out


def message_to_json(message: Message) -> dict[str, Any]:
    """``message`` as a JSON-friendly dict (unknown extension keys are left out)."""
    return {
        "type": type_name(message),
        "header": _fields_to_json(HEADER_FIELDS, message.header),
        **_fields_to_json(message.FIELDS, message),
    }


def _from_json(kind: Kind[Any], value: Any, path: str) -> Any:
    if kind is CID:
        if not isinstance(value, str):
            raise MessageError("expected a content id as hex", path)
        try:
            return ContentId.from_bytes(bytes.fromhex(value))
        except ValueError:
            raise MessageError("not hex", path) from None
    if isinstance(kind, EnumKind):
        members: type[enum.IntEnum] = kind.enum_type
        try:
            return members[str(value).upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(m.name.lower() for m in members)
            raise MessageError(f"expected one of {names}", path) from None
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise MessageError("expected a list", path)
        return tuple(_from_json(kind.item, item, f"{path}[{i}]") for i, item in enumerate(value))
    if isinstance(kind, MapOf):
        if not isinstance(value, dict):
            raise MessageError("expected an object", path)
        items = {name: _from_json(kind.value, item, f"{path}[{name!r}]") for name, item in value.items()}
        return kind.from_wire({name: kind.value.to_wire(item) for name, item in items.items()}, path)
    if isinstance(kind, Struct):
        return kind.cls(**_fields_from_json(kind.fields, value, path))
    if kind is BYTES:
        try:
            return bytes.fromhex(value) if isinstance(value, str) else kind.from_wire(value, path)
        except ValueError:
            raise MessageError("expected bytes as hex", path) from None
    # Plain kinds check themselves exactly as on the wire.
    return kind.from_wire(value, path)


def _fields_from_json(
    fields: tuple[Field, ...], value: Any, path: str, cls: type | None = None
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError("expected an object", path)
    known = {field.name for field in fields}
    unknown = sorted(set(value) - known - {"type", "header"})
    if unknown:
        raise MessageError(f"unknown fields {unknown}; expected {sorted(known)}", path)
    out = {}
    for field in fields:
        where = f"{path}.{field.name}" if path else field.name
        if field.name not in value or value[field.name] is None:
            default = _default(cls, field.name)
            if default is not attrs.NOTHING:
                continue  # the class's own default (e.g. a claim's priority 0)
            if not field.optional:
                raise MessageError("required field is missing", where)
            out[field.name] = () if isinstance(field.kind, ListOf) else None
            continue
        out[field.name] = _from_json(field.kind, value[field.name], where)
    return out


def _default(cls: type | None, name: str) -> Any:
    if cls is None:
        return attrs.NOTHING
    return attrs.fields_dict(cls)[name].default


def message_from_json(value: dict[str, Any], header: Header | None = None) -> Message:
    """Build a message from its JSON form; ``header`` overrides (or stands in for) its header."""
    kind = TYPE_NAMES.get(str(value.get("type")))
    if kind is None:
        raise MessageError(f"expected one of {sorted(TYPE_NAMES)}", "type")
    cls = MESSAGE_CLASSES[kind]
    if header is None:
        header = Header(**_fields_from_json(HEADER_FIELDS, value.get("header"), "header"))
    message = cls(header=header, **_fields_from_json(cls.FIELDS, value, "", cls))
    check = getattr(message, "check", None)
    if check is not None:
        check()
    return message
