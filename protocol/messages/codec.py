"""Message bytes ⇄ message values, with the version window and the one-content-one-id rule.

Encoding writes the header keys and the body fields in ascending key order and hands the dict
to ``cbor2``: with small unsigned keys in order and no floats that is already the RFC 8949
§4.2.1 deterministic form (see :mod:`..cbor`). A message that carries unknown extension keys
(read from a newer writer) goes through the general deterministic encoder instead.

Decoding is strict, in this order, so the error is the most useful one:

1. the bytes are bounded in size and depth and decode (no indefinite lengths or duplicate keys);
2. the item is a map with unsigned keys; the header (keys 0–7) validates;
3. the version window: ``min_version`` must not exceed the newest version we read and
   ``version`` must not be older than the oldest (N-2 policy) — :class:`UnsupportedVersion`;
4. the type is known, the body validates field by field (errors name the field);
5. unknown keys are kept as extensions unless the header lists them as critical —
   :class:`UnknownCriticalField`;
6. the message re-encodes to exactly its input bytes, so one content has one content id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import cbor2

from .. import cbor
from ..errors import (
    DecodeError,
    LocalProtocolError,
    MessageError,
    UnknownCriticalField,
    UnsupportedVersion,
)
from ..ids import ContentId
from . import accel
from .header import (
    FIRST_BODY_KEY,
    HEADER_FIELDS,
    OLDEST_READ_VERSION,
    PROTOCOL_VERSION,
    Header,
)
from .schema import (
    CID,
    TEXT,
    UINT,
    UINT64_MAX,
    EnumKind,
    Field,
    Kind,
    ListOf,
    Struct,
    compile_from_wire,
)
from .v1 import MESSAGE_CLASSES, Capability, Message, Terms
from .writer import WRITE_ERRORS, compile_message_writer, diagnose

#: Bounds for a whole message; a coordination message is small by design.
MESSAGE_LIMITS: Final = cbor.Limits(
    max_size=64 * 1024,
    max_depth=8,
    max_container_items=256,
    max_total_items=4096,
    max_string_length=16 * 1024,
    allowed_tags=frozenset(),
)


class UnknownMessageType(MessageError):
    """Key 0 names a type this implementation does not know at any version it reads."""

    code = "message-type-unknown"


def _value_expr(kind: Kind[Any], var: str, namespace: dict[str, Any]) -> str:
    """Python expression turning ``var`` (a field value) into its CBOR item."""
    if kind is UINT or kind is TEXT:
        return var
    if kind is CID:
        return f"{var}.raw"
    if isinstance(kind, EnumKind):
        return f"{var}.value"
    if isinstance(kind, ListOf):
        item = _value_expr(kind.item, "x", namespace)
        return f"list({var})" if item == "x" else f"[{item} for x in {var}]"
    if isinstance(kind, Struct):
        name = f"_struct{len(namespace)}"
        namespace[name] = _compile_fields(kind.fields, kind.cddl)
        return f"{name}({var})"
    name = f"_kind{len(namespace)}"
    namespace[name] = kind
    return f"{name}.to_wire({var})"


def _compile_fields(
    fields: tuple[Field, ...], label: str, prologue: tuple[str, ...] = ()
) -> Callable[[Any], dict[int, Any]]:
    """Generate the encoder of a field table.

    The signing pipeline has a budget of a few microseconds for the codec (it must reach 0.8
    of raw Ed25519 sign throughput), which a table-walking loop does not meet; straight-line
    code generated once from the same table does, and cannot drift from it.
    """
    namespace: dict[str, Any] = {}
    lines = ["def to_wire(m):", *prologue] if prologue else ["def to_wire(m):", "    out = {}"]
    for field in fields:
        expr = _value_expr(field.kind, f"m.{field.name}", namespace)
        if field.optional:
            test = f"m.{field.name}" if isinstance(field.kind, ListOf) else f"m.{field.name} is not None"
            lines.append(f"    if {test}: out[{field.key}] = {expr}")
        else:
            lines.append(f"    out[{field.key}] = {expr}")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<fleetwire encoder: {label}>", "exec"), namespace)
    function: Callable[[Any], dict[int, Any]] = namespace["to_wire"]
    return function


def _compile_message(cls: type[Message]) -> Callable[[Any], dict[int, Any]]:
    prologue = (
        "    h = m.header",
        f"    out = {{0: {cls.TYPE.value}, 1: h.version, 2: h.min_version, 3: h.issuer,"
        " 4: h.issued_at, 5: h.sequence}",
        "    if h.references: out[6] = [x.raw for x in h.references]",
        "    if h.critical: out[7] = list(h.critical)",
    )
    return _compile_fields(cls.FIELDS, cls.__name__, prologue)


#: The dict form of each message class: the general road, for messages with extensions.
_ENCODERS: Final = {cls: _compile_message(cls) for cls in MESSAGE_CLASSES.values()}
#: The direct writers (:mod:`.writer`): the road every message without extensions takes.
_PY_WRITERS: Final = {
    cls: compile_message_writer(cls.TYPE.value, HEADER_FIELDS, cls.FIELDS, cls.__name__)
    for cls in MESSAGE_CLASSES.values()
}


def _with_accelerator(cls: type[Message]) -> Callable[[Any], bytes]:
    try:
        return accel.fast_writer(accel.write_spec(cls, HEADER_FIELDS), _PY_WRITERS[cls])
    except accel.NoFastForm:
        return _PY_WRITERS[cls]


#: The writers in use: the C accelerator in front of the Python writer, where it is built.
_WRITERS: Final = {cls: _with_accelerator(cls) for cls in MESSAGE_CLASSES.values()}
#: The keys each message class knows: the header's and its body's.
_KNOWN: Final = {
    cls: frozenset(range(FIRST_BODY_KEY)) | {field.key for field in cls.FIELDS}
    for cls in MESSAGE_CLASSES.values()
}
#: Cross-field rules (a reader's too), for the classes that have them.
_CHECKS: Final[dict[type[Message], Callable[[Any], None]]] = {
    cls: cls.check for cls in MESSAGE_CLASSES.values() if hasattr(cls, "check")
}


def encode_message(message: Message) -> bytes:
    """The deterministic CBOR bytes of ``message`` (what is signed and named by content id).

    Refuses with :class:`LocalProtocolError`, naming the field, whatever a reader would refuse:
    values out of range or over their bounds, broken cross-field rules, critical keys the
    message type does not have, and extension keys that are not unknown unsigned keys.
    """
    cls = type(message)
    write = _WRITERS.get(cls)
    if write is None:
        raise LocalProtocolError(f"{cls.__name__} is not a message of version {PROTOCOL_VERSION}")
    try:
        data = write(message)
        if cls in _CHECKS:
            _CHECKS[cls](message)
        if message.header.critical or message.extensions:
            return _encode_rare(message, data)
    except (*WRITE_ERRORS, MessageError, cbor2.CBOREncodeError) as exc:
        raise _refusal(message, exc) from None
    return data


def _encode_rare(message: Message, data: bytes) -> bytes:
    """Critical keys and extensions: checked as a reader would, then the general encoder."""
    known = _KNOWN[type(message)]
    for key in message.header.critical:
        if key not in known:
            raise MessageError(f"key {key} is not part of {type(message).__name__}", "header.critical")
    if not message.extensions:
        return data
    for key, _ in message.extensions:
        if type(key) is not int or not FIRST_BODY_KEY <= key <= UINT64_MAX or key in known:
            raise MessageError(f"key {key!r} is not an unknown unsigned key", "extensions")
    out = _ENCODERS[type(message)](message)
    out.update(message.extensions)
    return cbor.encode(out)


def _refusal(message: Message, exc: Exception) -> LocalProtocolError:
    """Name the field a reader would refuse; the writers' tables only say *that* it failed."""
    name = type(message).__name__
    found = diagnose(HEADER_FIELDS, message.header, "header") or diagnose(
        type(message).FIELDS, message, ""
    )
    if found is None and isinstance(exc, MessageError):
        found = exc
    if found is None:
        return LocalProtocolError(f"cannot encode {name}: {exc}")
    return LocalProtocolError(f"cannot encode {name}: {found.field}: {found.reason}")


def content_id(message: Message) -> ContentId:
    """The content id of ``message``: the hash of its deterministic bytes."""
    return ContentId.of(encode_message(message))


def decode_message(data: bytes, limits: cbor.Limits = MESSAGE_LIMITS) -> Message:
    """Decode and validate one message; raises only :class:`~..errors.DecodeError` or
    :class:`~..errors.MessageError` subclasses, each naming the rule or field broken."""
    if (
        _fast_read is not None
        and limits is MESSAGE_LIMITS
        and type(data) is bytes
        and len(data) <= limits.max_size
    ):
        # The C reader takes only valid, deterministic, extension-free messages (so the
        # re-encoding check holds by construction); the version window, critical keys and
        # cross-field rules are applied here; anything else takes the Python road below,
        # which also gives every error.
        message: Message | None = _fast_read(data)
        if message is not None:
            header = message.header
            if (
                not header.critical
                and header.version >= OLDEST_READ_VERSION
                and 1 <= header.min_version <= PROTOCOL_VERSION
                and header.min_version <= header.version
            ):
                check = _CHECKS.get(type(message))
                if check is None:
                    return message
                try:
                    check(message)
                    return message
                except MessageError:
                    pass
    try:
        message = _decode_message(data, limits)
    except (DecodeError, LocalProtocolError) as exc:
        cbor.scan(data, limits)  # error path only: the strict scanner names the exact rule
        if isinstance(exc, LocalProtocolError):  # a tag cbor2 gave meaning to (a date, say)
            raise DecodeError(f"cannot re-encode: {exc.message}") from None
        raise
    except MessageError as exc:
        if exc.field or "re-encode" not in exc.reason:
            raise
        cbor.scan(data, limits)  # non-shortest, unsorted, trailing: the CBOR rule's own code
        raise
    if message.extensions:
        cbor.scan(data, limits)  # rare path: refuses tags and bounds sizes in extension values
    return message


def _decode_message(data: bytes, limits: cbor.Limits) -> Message:
    # Determinism is proven by the re-encoding check at the end (step 6), which is much
    # cheaper than the pure-Python scan; cbor2 bounds size and depth meanwhile.
    raw = cbor.decode_then_reencode_check(data, limits)
    if type(raw) is not dict:
        raise MessageError("a message is a CBOR map")
    type_code = raw.get(0)
    if type(type_code) is not int:
        raise MessageError("required field (key 0) is missing or not an integer", "type")
    header: Header = _read_header(raw, "header")
    _check_version_window(header)
    reader = _READERS.get(type_code)
    if reader is None:
        raise UnknownMessageType(
            f"message type {type_code} is not known at versions "
            f"{OLDEST_READ_VERSION}..{PROTOCOL_VERSION}",
            "type",
        )
    cls, known, read, check, write = reader
    extensions: tuple[tuple[int, Any], ...] = ()
    if not known.issuperset(raw):  # rare: extension keys from a newer writer
        for key in raw:
            if type(key) is not int or not 0 <= key <= UINT64_MAX:
                raise MessageError(f"map key {key!r} is not an unsigned integer")
        extensions = tuple((key, value) for key, value in raw.items() if key not in known)
    for key in header.critical:
        if key not in known:
            raise UnknownCriticalField(
                f"key {key} is marked critical but is not part of {cls.__name__} "
                f"at version {PROTOCOL_VERSION}",
                "header.critical",
            )
    message: Message = read(raw, "", header, extensions)
    if check is not None:
        check(message)
    if (encode_message(message) if extensions else write(message)) != data:
        raise MessageError(
            "message does not re-encode to its own bytes (an optional field written empty?)"
        )
    return message


_read_header: Final = compile_from_wire(HEADER_FIELDS, "header", Header)
#: Per type code: class, the keys it knows, its generated reader, and its cross-field check.
_READERS: Final[
    dict[int, tuple[type[Message], frozenset[int], Callable[..., Any], Any, Callable[[Any], bytes]]]
] = {
    cls.TYPE.value: (
        cls,
        _KNOWN[cls],
        compile_from_wire(cls.FIELDS, cls.__name__, cls, "header", "extensions"),
        _CHECKS.get(cls),
        _PY_WRITERS[cls],
    )
    for cls in MESSAGE_CLASSES.values()
}


def _fast_specs() -> dict[int, tuple[Any, ...]]:
    specs = {}
    for cls in MESSAGE_CLASSES.values():
        try:
            specs[cls.TYPE.value] = accel.read_spec(cls, Header, HEADER_FIELDS)
        except accel.NoFastForm:
            continue  # that type stays on the Python road
    return specs


_fast_read: Final = accel.fast_reader(_fast_specs())

#: Classes whose objects every message is built of; with the accelerator their __init__ is
#: the C one (:func:`.accel.install_fast_init`), which binds arguments exactly as attrs does.
FAST_INIT_CLASSES: Final = (ContentId, Header, Capability, Terms, *MESSAGE_CLASSES.values())
for _cls in FAST_INIT_CLASSES:
    accel.install_fast_init(_cls)


def _check_version_window(header: Header) -> None:
    if header.min_version > header.version:
        raise MessageError(
            f"min_version {header.min_version} is newer than version {header.version}",
            "header.min_version",
        )
    if header.min_version > PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"needs a reader of version {header.min_version} or newer; this implementation "
            f"reads {OLDEST_READ_VERSION}..{PROTOCOL_VERSION}",
            "header.min_version",
        )
    if header.version < OLDEST_READ_VERSION:
        raise UnsupportedVersion(
            f"written at version {header.version}, older than the oldest this implementation "
            f"reads ({OLDEST_READ_VERSION})",
            "header.version",
        )
    if header.min_version < 1:
        raise MessageError("protocol versions start at 1", "header.min_version")


__all__ = ["MESSAGE_LIMITS", "UnknownMessageType", "content_id", "decode_message", "encode_message"]
