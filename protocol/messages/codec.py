"""Message bytes ⇄ message values, with the version window and the one-content-one-id rule.

Encoding writes the RFC 8949 §4.2.1 deterministic bytes directly from the field tables
(:mod:`.writer`, with the C accelerator of :mod:`.accel` in front where it is built). A message
that carries unknown extension keys (read from a newer writer) has them merged into its map and
goes through the general deterministic encoder (:func:`..cbor.encode`).

Decoding is strict, in this order, so the error is the most useful one:

1. the bytes are bounded in size and depth and decode (no indefinite lengths or duplicate keys);
2. the item is a map with unsigned keys; the header (keys 0–7) validates;
3. the version window of the reader's version *k* (``version=`` of :func:`decode_message`,
   this implementation's newest by default): ``min_version`` must not exceed *k* and
   ``version`` must not be older than ``k - 2`` (N-2 policy) — :class:`UnsupportedVersion`;
4. the type is known at *k*, the body validates field by field (errors name the field);
5. unknown keys are kept as extensions unless the header lists them as critical —
   :class:`UnknownCriticalField`. A key is known if its field existed at the older of *k* and
   the message's own ``version`` (protocol.md §5.3: "at the message's version, or at all"),
   so a reader of *k* reads exactly as an implementation of version *k* would;
6. the message re-encodes to exactly its input bytes, so one content has one content id.

Encoding (:func:`encode_message`) writes a message at the version its header names and
refuses what no reader of that version could read as meant: a type or a field newer than
``version``, or a type written with ``min_version`` below the version that introduced it.
Writing one message at another version is :func:`.versions.convert`'s work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
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
    PROTOCOL_VERSION,
    WINDOW,
    Header,
)
from .registry import MESSAGE_CLASSES, Message
from .schema import (
    UINT64_MAX,
    Field,
    compile_from_wire,
    fields_at,
)
from .v1 import Capability, Terms
from .v2 import Stats
from .writer import WRITE_ERRORS, compile_message_writer, diagnose

#: The bound on a message's size (spec/v1/protocol.md §3.4).
MAX_MESSAGE_SIZE: Final = 65536
#: The bound on nesting; the message map is level 1 (§3.4).
MAX_MESSAGE_DEPTH: Final = 8
#: Bounds for a whole message: exactly the two of §3.4. A reader MUST accept everything up to
#: them, so no other count is bounded below what they imply (a string, a container, or all
#: items together cannot exceed the input's length without the input being truncated).
MESSAGE_LIMITS: Final = cbor.Limits(
    max_size=MAX_MESSAGE_SIZE,
    max_depth=MAX_MESSAGE_DEPTH,
    max_container_items=MAX_MESSAGE_SIZE,
    max_total_items=MAX_MESSAGE_SIZE,
    max_string_length=MAX_MESSAGE_SIZE,
    allowed_tags=frozenset(),
)


class UnknownMessageType(MessageError):
    """Key 0 names a type this implementation does not know at any version it reads."""

    code = "message-type-unknown"


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
#: The keys each message class knows at each version: the header's and its body's.
_KNOWN: Final = {
    (cls, version): frozenset(range(FIRST_BODY_KEY))
    | {field.key for field in fields_at(cls.FIELDS, version)}
    for cls in MESSAGE_CLASSES.values()
    for version in range(1, PROTOCOL_VERSION + 1)
}
#: Body key → field, per class (every version's fields).
_FIELD_OF: Final[dict[type[Message], dict[int, Field]]] = {
    cls: {field.key: field for field in cls.FIELDS} for cls in MESSAGE_CLASSES.values()
}
#: The fields added after version 1, per class: what a reader of an older version must not see.
_LATER_FIELDS: Final[dict[type[Message], tuple[Field, ...]]] = {
    cls: tuple(field for field in cls.FIELDS if field.since > 1) for cls in MESSAGE_CLASSES.values()
}
#: Classes of version 1 that no later version added a field to: read alike by every reader.
_READ_AS_IS: Final = frozenset(
    cls for cls in MESSAGE_CLASSES.values() if cls.SINCE == 1 and not _LATER_FIELDS[cls]
)
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
        raise LocalProtocolError(f"{cls.__name__} is not a message of any version")
    data = _encode(message, write)  # first: it names any field a reader would refuse
    _check_writable(message)
    return data


def _check_writable(message: Message) -> None:
    """Refuse a message its header's version cannot carry (see the module docstring)."""
    cls, header = type(message), message.header
    # A version above ours is allowed: a message read from a newer writer keeps its header.
    if not 1 <= header.min_version <= header.version:
        raise LocalProtocolError(
            f"cannot encode {cls.__name__}: versions must satisfy 1 <= min_version "
            f"({header.min_version}) <= version ({header.version})"
        )
    if header.version < cls.SINCE:  # a reader would not know the type at that version
        raise LocalProtocolError(
            f"cannot encode {cls.__name__}: the type exists from version {cls.SINCE} on, and "
            f"the message is written at {header.version} "
            "(hint: versions.convert(message, version) writes it at a version)"
        )
    for field in _LATER_FIELDS[cls]:
        if field.since > header.version and getattr(message, field.name) not in (None, ()):
            raise LocalProtocolError(
                f"cannot encode {cls.__name__}: {field.name} (key {field.key}) exists from "
                f"version {field.since} on, and the message is written at {header.version} "
                "(hint: versions.convert(message, version) carries it as an extension)"
            )


def _encode(message: Message, write: Callable[[Any], bytes]) -> bytes:
    cls = type(message)
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
    cls, header = type(message), message.header
    known = _KNOWN[cls, min(header.version, PROTOCOL_VERSION)]
    for key in header.critical:
        if key not in known:
            raise MessageError(f"key {key} is not part of {cls.__name__}", "header.critical")
    if not message.extensions:
        return data
    fields = _FIELD_OF[cls]
    for key, _ in message.extensions:
        if type(key) is not int or not FIRST_BODY_KEY <= key <= UINT64_MAX:
            raise MessageError(f"key {key!r} is not an unknown unsigned key", "extensions")
        field = fields.get(key)
        # A field added after the oldest version that may read the message is an extension to
        # that reader (§5.3); it may travel as one, provided the field itself is absent.
        if field is not None and (
            field.since <= header.min_version or getattr(message, field.name) not in (None, ())
        ):
            raise MessageError(f"key {key!r} is not an unknown unsigned key", "extensions")
    out = cbor2.loads(data)  # our own bytes: ints, text, bytes, lists and maps only
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


def decode_message(
    data: bytes, limits: cbor.Limits = MESSAGE_LIMITS, *, version: int = PROTOCOL_VERSION
) -> Message:
    """Decode and validate one message as a reader of ``version`` (this implementation's
    newest by default; an older one for a node pinned to it, :mod:`.versions`).

    Raises only :class:`~..errors.DecodeError` or :class:`~..errors.MessageError` subclasses,
    each naming the rule or field broken.
    """
    if not 1 <= version <= PROTOCOL_VERSION:
        raise LocalProtocolError(
            f"cannot read as version {version}: this implementation reads as 1..{PROTOCOL_VERSION}"
        )
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
                and _version_window_error(header, version) is None
                and (type(message) in _READ_AS_IS or _known_as_read(message, version))
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
        message = _decode_message(data, limits, version)
    except (DecodeError, LocalProtocolError) as exc:
        cbor.scan(data, limits)  # error path only: the strict scanner names the exact rule
        if isinstance(exc, LocalProtocolError):  # a tag cbor2 gave meaning to (a date, say)
            raise DecodeError(f"cannot re-encode: {exc.message}") from None
        raise
    except MessageError:
        # Error path only. Step 1 of §5.2 comes before any field is judged: a tag (which cbor2
        # turns into a date, say) or a non-shortest, unsorted or trailing encoding gets the
        # CBOR rule's own code, not the field's.
        cbor.scan(data, limits)
        raise
    if message.extensions:
        cbor.scan(data, limits)  # rare path: refuses tags and bounds sizes in extension values
    return message


def _known_as_read(message: Message, version: int) -> bool:
    """Whether the accelerator's reading (every version's fields) is the reading of ``version``:
    the type exists there and no field it does not know yet is present."""
    cls = type(message)
    knows = min(message.header.version, version)
    if knows < cls.SINCE:
        return False
    return all(
        field.since <= knows or getattr(message, field.name) in (None, ())
        for field in _LATER_FIELDS[cls]
    )


def _decode_message(data: bytes, limits: cbor.Limits, version: int) -> Message:
    # Determinism is proven by the re-encoding check at the end (step 6), which is much
    # cheaper than the pure-Python scan; cbor2 bounds size and depth meanwhile.
    raw = cbor.decode_then_reencode_check(data, limits)
    if type(raw) is not dict:
        raise MessageError("a message is a CBOR map")
    try:
        return _read_map(raw, data, version)
    except MessageError:
        # Error path only: step 2 (every key an unsigned integer) comes before any field. The
        # keys are read from the bytes: cbor2's dict merges `true` into 1 and simple(8) into 8.
        for key in cbor.map_keys(data, limits):
            if key[0] >> 5 != 0:
                raise MessageError(f"map key 0x{key.hex():.20} is not an unsigned integer") from None
        raise


def _read_map(raw: dict[Any, Any], data: bytes, version: int) -> Message:
    """Steps 3–10 of spec/v1/protocol.md §5.2 on a decoded message map."""
    type_code = raw.get(0)
    if type(type_code) is not int or type_code < 0:
        raise MessageError("required field (key 0) is missing or not an unsigned integer", "type")
    header: Header = _read_header(raw, "header")
    window_error = _version_window_error(header, version)
    if window_error is not None:
        raise window_error
    # Keys are known as the message's version defined them, if older than ours (§5.3).
    reader = _READERS[min(header.version, version)].get(type_code)
    if reader is None or version < reader[0].SINCE:
        raise UnknownMessageType(
            f"message type {type_code} is not known at versions "
            f"{max(1, version - WINDOW)}..{version}",
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
                f"at version {min(header.version, version)}",
                "header.critical",
            )
    message: Message = read(raw, "", header, extensions)
    if check is not None:
        check(message)
    if (_encode(message, write) if extensions else write(message)) != data:
        raise MessageError(
            "message does not re-encode to its own bytes (an optional field written empty?)"
        )
    return message


_read_header: Final = compile_from_wire(HEADER_FIELDS, "header", Header)
_Reader = tuple[type[Message], frozenset[int], Callable[..., Any], Any, Callable[[Any], bytes]]


def _readers_at(version: int) -> dict[int, _Reader]:
    """Per type code known at ``version``: class, the keys it knows there, its generated
    reader of those fields, its cross-field check, and its writer."""
    readers: dict[int, _Reader] = {}
    for cls in MESSAGE_CLASSES.values():
        if version < cls.SINCE:
            continue
        fields = fields_at(cls.FIELDS, version)
        readers[cls.TYPE.value] = (
            cls,
            _KNOWN[cls, version],
            compile_from_wire(fields, f"{cls.__name__} v{version}", cls, "header", "extensions"),
            _CHECKS.get(cls),
            _PY_WRITERS[cls],
        )
    return readers


#: The readers of each version, by type code.
_READERS: Final = {version: _readers_at(version) for version in range(1, PROTOCOL_VERSION + 1)}


def _fast_specs() -> dict[int, tuple[Any, ...]]:
    specs = {}
    for cls in MESSAGE_CLASSES.values():
        try:
            specs[cls.TYPE.value] = accel.read_spec(cls, Header, HEADER_FIELDS)
        except accel.NoFastForm:
            continue  # that type stays on the Python road
    return specs


_fast_read = accel.fast_reader(_fast_specs())


@contextlib.contextmanager
def without_accelerator() -> Iterator[None]:
    """The pure-Python codec while the block runs: what an install without a C compiler gets.

    For tests and benchmarks of that road; it changes this module's tables and the classes'
    ``__init__`` for the whole process while it runs.
    """
    global _fast_read
    saved_read, saved_writers = _fast_read, dict(_WRITERS)
    inits = {cls: cls.__dict__["__init__"] for cls in accel.installed_fast_inits()}
    _fast_read = None
    _WRITERS.update(_PY_WRITERS)
    for cls in inits:
        accel.remove_fast_init(cls)
    try:
        yield
    finally:
        _fast_read = saved_read
        _WRITERS.update(saved_writers)
        for cls, init in inits.items():
            setattr(cls, "__init__", init)  # noqa: B010  (the very object that was there)

#: Classes whose objects every message is built of; with the accelerator their __init__ is
#: the C one (:func:`.accel.install_fast_init`), which binds arguments exactly as attrs does.
FAST_INIT_CLASSES: Final = (
    ContentId, Header, Capability, Terms, Stats, *MESSAGE_CLASSES.values()
)
for _cls in FAST_INIT_CLASSES:
    accel.install_fast_init(_cls)


def _version_window_error(header: Header, version: int) -> MessageError | None:
    """Why ``header`` is outside the window of a reader of ``version`` (N-2 policy,
    protocol.md §5.1, checked in the order listed there), or None if it is inside."""
    oldest = max(1, version - WINDOW)
    if header.min_version > header.version:
        return MessageError(
            f"min_version {header.min_version} is newer than version {header.version}",
            "header.min_version",
        )
    if header.min_version > version:
        return UnsupportedVersion(
            f"needs a reader of version {header.min_version} or newer; this reader "
            f"reads {oldest}..{version}",
            "header.min_version",
        )
    if header.version < oldest:
        return UnsupportedVersion(
            f"written at version {header.version}, older than the oldest this reader "
            f"reads ({oldest})",
            "header.version",
        )
    if header.min_version < 1:
        return MessageError("protocol versions start at 1", "header.min_version")
    return None


__all__ = [
    "MAX_MESSAGE_DEPTH",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_LIMITS", "UnknownMessageType", "content_id", "decode_message", "encode_message"]
