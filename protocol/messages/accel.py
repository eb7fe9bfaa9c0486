"""The optional C accelerator of the message codec, and the specs that drive it.

``_speedups`` (``protocol/_speedups.c``) writes and reads the common case of every message in C:
no extensions, nothing out of range, deterministic input. On anything else it answers ``None``
and the pure-Python writer or reader runs, so behaviour, errors included, is the Python code's;
the C code only makes the common case fast. Without a C compiler the package installs and runs
unchanged, only slower (``AVAILABLE`` is then false).

Why C at all: the sign and verify pipelines must reach 0.8 of raw Ed25519 throughput, and in
CPython the per-field work of writing, validating and re-encoding a 170-byte message with
nested maps costs more than that budget (see benchmarks/bench_pipeline.py).

The specs are built from the same field tables (``FIELDS``, ``HEADER_FIELDS``) as the Python
codec. A kind is a tuple led by a code the C file defines; see there for the formats.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final

import attrs

from ..ids import ContentId
from .header import Header
from .schema import CID, MAX_TEXT, TEXT, UINT, EnumKind, Field, Kind, ListOf, Struct

try:
    from .. import _speedups  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the Python codec alone
    _speedups = None

AVAILABLE: Final = _speedups is not None

K_UINT, K_TEXT, K_CID, K_ENUM, K_LIST, K_STRUCT, K_CHECKED, K_CONST = range(8)


class NoFastForm(Exception):
    """A field kind the accelerator does not know: that class stays on the Python road."""


def _kind(kind: Kind[Any], read: bool) -> tuple[Any, ...]:
    if kind is UINT:
        return (K_UINT,)
    if kind is TEXT:
        return (K_TEXT, MAX_TEXT)
    if kind is CID:
        raw = _offsets(ContentId, ["raw"])
        if raw is None:
            raise NoFastForm("ContentId has no slots")
        return (K_CID, ContentId, raw[0], raw)
    if isinstance(kind, EnumKind):
        return (K_ENUM, {member.value: member for member in kind.enum_type})
    if isinstance(kind, ListOf):
        return (K_LIST, kind.max_items, _kind(kind.item, read))
    if isinstance(kind, Struct):
        spec = _read_struct(kind) if read else (kind.cls, _write_entries(kind.cls, kind.fields))
        return (K_STRUCT, kind.cls, spec)
    raise NoFastForm(type(kind).__name__)


def _field_kind(field: Field, read: bool) -> tuple[Any, ...]:
    kind = _kind(field.kind, read)
    return kind if field.check is None else (K_CHECKED, field.check, field.name, kind)


def _offsets(cls: type[Any], names: list[str]) -> tuple[int, ...] | None:
    """The slot offsets of ``names`` in ``cls``, if its objects may be filled slot by slot.

    That is so for attrs classes with slots whose ``__init__`` only stores its arguments (no
    validators, converters or post-init); for anything else the C reader calls the class.
    """
    if _speedups is None or not attrs.has(cls) or hasattr(cls, "__attrs_post_init__"):
        return None
    fields = attrs.fields(cls)
    if any(a.validator is not None or a.converter is not None or not a.init for a in fields):
        return None
    try:
        return tuple(_speedups.slot_offset(cls.__dict__[name]) for name in names)
    except (KeyError, TypeError):  # not a slot of this very class
        return None


def _absent(field: Field) -> int:
    if not field.optional:
        return 0
    return 2 if isinstance(field.kind, ListOf) else 1


def _write_entries(cls: type[Any], fields: tuple[Field, ...], via: Any = None) -> tuple[Any, ...]:
    """Entries ``(key, getter, absent, kind)``; ``via`` reaches the fields through a nested
    object, as ``(offset in the message, its class)`` for the header. ``absent``: 0 required,
    1 optional (left out when None), 2 optional list (left out when None or empty)."""
    offsets = _offsets(cls, [field.name for field in fields])
    if offsets is None:
        raise NoFastForm(f"{cls.__name__} is not a plain slotted attrs class")
    return tuple(
        (field.key, offset if via is None else (*via, offset), _absent(field),
         _field_kind(field, read=False))
        for field, offset in zip(fields, offsets, strict=True)
    )  # fmt: skip


def _read_entries(fields: tuple[Field, ...]) -> list[tuple[Any, ...]]:
    return [
        (field.key, field.optional, () if isinstance(field.kind, ListOf) else None,
         _field_kind(field, read=True))
        for field in fields
    ]  # fmt: skip


def _arguments(cls: type[Any], index: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
    """Constructor arguments of ``cls`` in attrs order, as the C reader names them, and the
    slots they fill (None: call the class instead)."""
    names = [a.name for a in attrs.fields(cls) if a.init]
    return tuple(index[name] for name in names), _offsets(cls, names)


def _read_struct(kind: Struct[Any]) -> tuple[Any, ...]:
    entries = _read_entries(kind.fields)
    index = {field.name: position for position, field in enumerate(kind.fields)}
    return (tuple(entries), kind.cls, *_arguments(kind.cls, index))


def write_spec(cls: type[Any], header_fields: tuple[Field, ...]) -> tuple[Any, ...]:
    """The C writer's spec of a message class: type (key 0), header fields, body fields."""
    header = _offsets(cls, ["header"])
    if header is None:
        raise NoFastForm(f"{cls.__name__} is not a plain slotted attrs class")
    return (cls, (
        (0, None, 0, (K_CONST, cls.TYPE.value)),
        *_write_entries(Header, header_fields, (header[0], Header)),
        *_write_entries(cls, cls.FIELDS),
    ))  # fmt: skip


def read_spec(cls: type[Any], header_cls: type[Any], header_fields: tuple[Field, ...]) -> tuple[Any, ...]:
    """The C reader's spec of a message class; the header is built from entries 1..7."""
    entries = [(0, False, None, (K_CONST, cls.TYPE.value))]
    entries += _read_entries(header_fields)
    header_index = {field.name: 1 + position for position, field in enumerate(header_fields)}
    entries += _read_entries(cls.FIELDS)
    first_body = 1 + len(header_fields)
    index: dict[str, Any] = {
        field.name: first_body + position for position, field in enumerate(cls.FIELDS)
    }
    index["header"] = (1, header_cls, *_arguments(header_cls, header_index))
    index["extensions"] = (0, ())
    return (tuple(entries), cls, *_arguments(cls, index))


def fast_writer(spec: tuple[Any, ...], slow: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """``slow`` with the C writer in front of it, when the accelerator is there."""
    if _speedups is None:
        return slow
    # A partial of the C function, which calls ``slow`` itself where it defers: no Python
    # frame between encode_message and the bytes.
    writer: Callable[[Any], bytes] = functools.partial(_speedups.write_or, spec, slow)
    return writer


def fast_reader(specs: dict[int, tuple[Any, ...]]) -> Callable[[bytes], Any] | None:
    """``read(data) -> message | None`` over ``specs`` by type code, or None without C."""
    if _speedups is None:
        return None
    read: Callable[[bytes], Any] = functools.partial(_speedups.read_message, specs)
    return read  # a partial, not a closure: no Python frame on the hot path


#: Marks a constructor argument without a default.
_REQUIRED: Final = object()


def install_fast_init(cls: type[Any]) -> bool:
    """Give ``cls`` the C ``__init__`` (``SlotInit``) in place of the attrs-generated one.

    Building a message's objects is a third of the sign pipeline's overhead, and most of that
    is the generated ``__init__`` storing each field through ``object.__setattr__``. The C one
    binds arguments the same way (positional, keyword, defaults; TypeError where attrs'
    would) and stores them straight into the slots. Only for plain slotted attrs classes
    (see :func:`_offsets`) without factories, keyword-only or renamed arguments; returns
    whether it was installed. The original stays reachable as ``cls.__init__.__wrapped__``.
    """
    if _speedups is None:
        return False
    current = cls.__dict__.get("__init__")
    if isinstance(current, _speedups.SlotInit):
        return True
    fields = [a for a in attrs.fields(cls) if a.init]
    if any(
        a.kw_only or isinstance(a.default, attrs.Factory) or a.alias != a.name  # type: ignore[arg-type]
        for a in fields
    ) or hasattr(cls, "__attrs_pre_init__") or current is None:
        return False
    names = tuple(a.name for a in fields)
    offsets = _offsets(cls, list(names))
    if offsets is None:
        return False
    defaults = tuple(_REQUIRED if a.default is attrs.NOTHING else a.default for a in fields)
    init = _speedups.SlotInit(cls, names, offsets, defaults, _REQUIRED, current)
    init.__wrapped__ = current  # inspect.signature() and help() read the original
    init.__doc__ = current.__doc__
    init.__name__ = "__init__"
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init
    # And Cls(...) itself straight to it, without type.__call__ (see construct_fast in
    # _speedups.c: it checks on every call that this __init__ is still the class's own).
    if type(cls) is type:
        _speedups.construct_fast(cls, True)
    if cls not in _INSTALLED:
        _INSTALLED.append(cls)
    return True


#: The classes :func:`install_fast_init` changed, in order (for :func:`remove_fast_init`).
_INSTALLED: list[type[Any]] = []


def installed_fast_inits() -> tuple[type[Any], ...]:
    """The classes whose ``__init__`` is the C one now."""
    return tuple(cls for cls in _INSTALLED if isinstance(cls.__dict__.get("__init__"), _speedups.SlotInit))


def remove_fast_init(cls: type[Any]) -> None:
    """Put the attrs-generated ``__init__`` back (tests of the pure-Python road)."""
    current = cls.__dict__.get("__init__")
    if _speedups is not None and isinstance(current, _speedups.SlotInit):
        cls.__init__ = current.__wrapped__
        if type(cls) is type:
            _speedups.construct_fast(cls, False)


__all__ = [
    "AVAILABLE",
    "NoFastForm",
    "fast_reader",
    "fast_writer",
    "install_fast_init",
    "installed_fast_inits",
    "read_spec",
    "remove_fast_init",
    "write_spec",
]
