"""Deterministic CBOR: RFC 8949 core deterministic encoding (§4.2.1) and a hostile-input decoder.

Theory of operation
-------------------
Encoding: ``cbor2``'s C encoder does the byte work. It already writes the preferred (shortest)
form of integers and lengths and definite lengths everywhere, which is most of §4.2.1; two rules
it does not keep are handled here. Map keys must be sorted bytewise by their own encoding —
``cbor2``'s ``canonical=True`` sorts length-first (the RFC 7049 rule, RFC 8949 §4.2.3), which
differs once keys of different encoded lengths mix — so :func:`encode` pre-encodes every key and
writes maps itself. Floats must take the shortest of half/single/double that keeps the value
(§4.2.1, preferred serialization §4.2.2), which ``cbor2`` does only in canonical mode.

Protocol messages take a faster road: their keys are small unsigned integers written in
ascending order and they carry no floats, so plain ``cbor2.dumps`` of their ordered dict *is*
the deterministic form (property-tested against :func:`encode`).

Decoding: :func:`scan` walks the item heads in pure Python without building values, enforcing
the :class:`Limits` (total size, nesting depth, items per container and in total, string length)
and, in deterministic mode, every §4.2.1 rule: shortest heads, definite lengths, shortest floats,
map keys strictly ascending bytewise (which also refuses duplicate keys). Only bytes that passed
the scan reach ``cbor2.loads``, so the C decoder never sees a length it could over-allocate for.
Every refusal is a typed :mod:`fleetwire.protocol.errors` exception naming the offset.
"""

from __future__ import annotations

import itertools
import math
import struct
from typing import Any, Final

import attrs
import cbor2

from .errors import (
    DecodeError,
    LimitExceeded,
    MalformedCBOR,
    NonDeterministicEncoding,
    TruncatedCBOR,
)

__all__ = [
    "DEFAULT_LIMITS",
    "WIRE_LIMITS",
    "Limits",
    "decode",
    "decode_then_reencode_check",
    "encode",
    "head",
    "item_end",
    "map_keys",
    "scan",
]


@attrs.frozen(slots=True)
class Limits:
    """Bounds on what a decoder will accept; every crossing raises :class:`LimitExceeded`."""

    max_size: int = 1 << 20
    max_depth: int = 16
    max_container_items: int = 4096
    max_total_items: int = 65536
    max_string_length: int = 1 << 20
    #: Require RFC 8949 §4.2.1 core deterministic encoding.
    deterministic: bool = True
    #: Accept indefinite-length items (never in deterministic mode; BPv7 bundles use them).
    allow_indefinite: bool = False
    #: Tags that may appear; ``None`` allows any tag number.
    allowed_tags: frozenset[int] | None = None


#: For signed protocol content: deterministic, no tags.
DEFAULT_LIMITS: Final = Limits(allowed_tags=frozenset())
#: For framing formats from other agents (BPv7): well-formed and bounded, not deterministic.
WIRE_LIMITS: Final = Limits(
    max_size=1 << 26,
    max_string_length=1 << 26,
    deterministic=False,
    allow_indefinite=True,
)

_HALF: Final = struct.Struct(">e")
_SINGLE: Final = struct.Struct(">f")
_DOUBLE: Final = struct.Struct(">d")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


# --- encoding --------------------------------------------------------------------------


def _float_bytes(value: float) -> bytes:
    """Shortest IEEE 754 form that round-trips ``value`` (RFC 8949 §4.2.1, §4.2.2)."""
    if math.isnan(value):
        return b"\xf9\x7e\x00"  # the one deterministic NaN
    try:
        half = _HALF.pack(value)
        if _HALF.unpack(half)[0] == value:
            return b"\xf9" + half
    except OverflowError:
        pass
    try:
        single = _SINGLE.pack(value)
        if _SINGLE.unpack(single)[0] == value:
            return b"\xfa" + single
    except OverflowError:
        pass
    return b"\xfb" + _DOUBLE.pack(value)


@attrs.frozen(slots=True)
class _Float:
    value: float


@attrs.frozen(slots=True)
class _SortedMap:
    entries: list[tuple[bytes, Any]]


def head(major: int, arg: int) -> bytes:
    """The shortest head of major type ``major`` with argument ``arg`` (RFC 8949 §3, §4.2.1)."""
    if arg < 24:
        return bytes((major << 5 | arg,))
    if arg < 0x100:
        return bytes((major << 5 | 24, arg))
    if arg < 0x10000:
        return bytes((major << 5 | 25,)) + _U16.pack(arg)
    if arg < 0x100000000:
        return bytes((major << 5 | 26,)) + _U32.pack(arg)
    return bytes((major << 5 | 27,)) + _U64.pack(arg)


def _write_special(encoder: cbor2.CBOREncoder, value: Any) -> None:
    if isinstance(value, _Float):
        encoder.write(_float_bytes(value.value))
    elif isinstance(value, _SortedMap):
        encoder.write(head(5, len(value.entries)))
        for key_bytes, item in value.entries:
            encoder.write(key_bytes)
            encoder.encode(item)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as deterministic CBOR")


def _prepare(value: Any) -> Any:
    # bool is an int subclass: test the plain, common types first, exactly.
    kind = type(value)
    if kind in (int, bytes, str, bool) or value is None:
        return value
    if kind is float:
        return _Float(value)
    if isinstance(value, (list, tuple)):
        return [_prepare(item) for item in value]
    if isinstance(value, dict):
        entries = sorted((encode(key), _prepare(item)) for key, item in value.items())
        for (left, _), (right, _) in itertools.pairwise(entries):
            if left == right:
                raise ValueError("two map keys encode to the same bytes")
        return _SortedMap(entries)
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _prepare(value.value))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, cbor2.CBORSimpleValue) or value is cbor2.undefined:
        return value
    raise TypeError(f"cannot encode {kind.__name__} as deterministic CBOR")


def encode(value: Any) -> bytes:
    """Encode ``value`` in RFC 8949 §4.2.1 core deterministic encoding.

    Accepts ``None``, bool, int (bignums as tags 2/3, §3.4.3), float, bytes, str, lists and
    tuples (arrays), dicts (maps, keys sorted bytewise by their encoding), :class:`cbor2.CBORTag`
    and simple values.
    """
    return cbor2.dumps(_prepare(value), default=_write_special)


# --- decoding --------------------------------------------------------------------------


class _Scan:
    """One pass over the item heads of ``data``; see the module docstring."""

    __slots__ = ("data", "limits", "items")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.limits = limits
        self.items = 0

    def _arg(self, pos: int, ai: int) -> tuple[int, int]:
        """Read the argument of the head at ``pos``; return (argument, end of head)."""
        data = self.data
        if ai < 24:
            return ai, pos + 1
        if ai > 27:
            raise MalformedCBOR(f"reserved additional information {ai} at offset {pos}")
        width = 1 << (ai - 24)
        end = pos + 1 + width
        if end > len(data):
            raise TruncatedCBOR(f"truncated head at offset {pos}")
        arg = int.from_bytes(data[pos + 1 : end], "big")
        if self.limits.deterministic and arg < (24 if width == 1 else 1 << (width * 4)):
            raise NonDeterministicEncoding(f"argument {arg} not in its shortest form at offset {pos}")
        return arg, end

    def item(self, pos: int, depth: int) -> int:
        """Check the item at ``pos``; return the offset just past it."""
        data = self.data
        limits = self.limits
        if pos >= len(data):
            raise TruncatedCBOR(f"truncated: item expected at offset {pos}")
        self.items += 1
        if self.items > limits.max_total_items:
            raise LimitExceeded(f"more than {limits.max_total_items} items in total")
        initial = data[pos]
        major = initial >> 5
        ai = initial & 31
        if ai == 31:
            return self._indefinite(pos, major, depth)
        if major == 7:
            return self._simple_or_float(pos, ai)
        arg, pos_after = self._arg(pos, ai)
        if major <= 1:
            return pos_after
        if major <= 3:
            # A declared length past the end of the input is truncation, whatever its size:
            # the input cannot hold it, so no bound is reached (spec/v1/protocol.md §3.4).
            end = pos_after + arg
            if end > len(data):
                raise TruncatedCBOR(f"string at offset {pos} runs past the end of the input")
            if arg > limits.max_string_length:
                raise LimitExceeded(
                    f"string of {arg} bytes at offset {pos} (limit {limits.max_string_length})"
                )
            if major == 3 and limits.deterministic:
                _check_utf8(data, pos_after, end, pos)
            return end
        if major == 6:
            if limits.allowed_tags is not None and arg not in limits.allowed_tags:
                raise DecodeError(f"tag {arg} at offset {pos} is not allowed here")
            if depth >= limits.max_depth:
                raise LimitExceeded(f"nesting deeper than {limits.max_depth} at offset {pos}")
            return self.item(pos_after, depth + 1)
        # Truncation before any limit (spec/v1/protocol.md §3.4), the depth limit included.
        count = arg if major == 4 else 2 * arg
        if count > len(data) - pos_after:
            raise TruncatedCBOR(f"container at offset {pos} declares more items than bytes remain")
        if depth >= limits.max_depth:
            raise LimitExceeded(f"nesting deeper than {limits.max_depth} at offset {pos}")
        if arg > limits.max_container_items:
            raise LimitExceeded(
                f"container of {arg} items at offset {pos} (limit {limits.max_container_items})"
            )
        if major == 4:
            for _ in range(arg):
                pos_after = self.item(pos_after, depth + 1)
            return pos_after
        return self._map_entries(pos_after, arg, depth + 1, pos)

    def _map_entries(self, pos: int, pairs: int, depth: int, map_pos: int) -> int:
        deterministic = self.limits.deterministic
        previous = b""
        seen: set[bytes] = set()
        for index in range(pairs):
            key_end = self.item(pos, depth)
            key = self.data[pos:key_end]
            if deterministic:
                if index and key <= previous:
                    what = "duplicate key" if key == previous else "keys out of bytewise order"
                    raise NonDeterministicEncoding(f"map at offset {map_pos}: {what} at offset {pos}")
                previous = key
            else:
                # Not deterministic, still refuse duplicates by encoding (RFC 8949 §5.6).
                if key in seen:
                    raise DecodeError(f"map at offset {map_pos}: duplicate key at offset {pos}")
                seen.add(key)
            pos = self.item(key_end, depth)
        return pos

    def _simple_or_float(self, pos: int, ai: int) -> int:
        data = self.data
        if ai < 24:
            return pos + 1
        if ai == 24:
            if pos + 2 > len(data):
                raise TruncatedCBOR(f"truncated simple value at offset {pos}")
            if data[pos + 1] < 32:
                raise MalformedCBOR(f"two-byte simple value below 32 at offset {pos}")
            return pos + 2
        if ai > 27:
            raise MalformedCBOR(f"reserved additional information {ai} at offset {pos}")
        width = 1 << (ai - 24)
        end = pos + 1 + width
        if end > len(data):
            raise TruncatedCBOR(f"truncated float at offset {pos}")
        if self.limits.deterministic and ai > 25:
            value = (_SINGLE if ai == 26 else _DOUBLE).unpack(data[pos + 1 : end])[0]
            if len(_float_bytes(value)) < 1 + width or (
                math.isnan(value) and data[pos:end] != b"\xf9\x7e\x00"
            ):
                raise NonDeterministicEncoding(f"float at offset {pos} not in its shortest form")
        elif (
            self.limits.deterministic
            and math.isnan(_HALF.unpack(data[pos + 1 : end])[0])
            and data[pos:end] != b"\xf9\x7e\x00"
        ):
            raise NonDeterministicEncoding(f"NaN at offset {pos} is not 0xf97e00")
        return end

    def _indefinite(self, pos: int, major: int, depth: int) -> int:
        if major == 7:
            raise MalformedCBOR(f"unexpected break at offset {pos}")
        if major <= 1 or major == 6:
            raise MalformedCBOR(f"indefinite length not allowed for major type {major} at {pos}")
        if self.limits.deterministic or not self.limits.allow_indefinite:
            raise NonDeterministicEncoding(f"indefinite-length item at offset {pos}")
        if depth >= self.limits.max_depth:
            raise LimitExceeded(f"nesting deeper than {self.limits.max_depth} at offset {pos}")
        data = self.data
        cursor = pos + 1
        count = 0
        total = 0
        while True:
            if cursor >= len(data):
                raise TruncatedCBOR(f"indefinite item at offset {pos} has no break")
            if data[cursor] == 0xFF:
                break
            if major <= 3:  # string chunks: definite strings of the same major type
                if data[cursor] >> 5 != major or data[cursor] & 31 == 31:
                    raise MalformedCBOR(f"bad chunk in indefinite string at offset {cursor}")
                start = cursor
                cursor = self.item(cursor, depth + 1)
                total += cursor - start
                if total > self.limits.max_string_length:
                    raise LimitExceeded(f"indefinite string at offset {pos} exceeds the limit")
            else:
                cursor = self.item(cursor, depth + 1)
                if major == 5:
                    cursor = self.item(cursor, depth + 1)
                count += 1
                if count > self.limits.max_container_items:
                    raise LimitExceeded(f"indefinite container at offset {pos} exceeds the limit")
        return cursor + 1


def _check_utf8(data: bytes, start: int, end: int, pos: int) -> None:
    """Text strings are UTF-8 (RFC 8949 §3.1, a validity rule of §5.3.1, not well-formedness)."""
    try:
        data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"text string at offset {pos} is not valid UTF-8") from None


def item_end(data: bytes, pos: int = 0, limits: Limits = DEFAULT_LIMITS) -> int:
    """Check one item starting at ``pos`` against ``limits``; return the offset after it."""
    if len(data) > limits.max_size:
        raise LimitExceeded(f"{len(data)} bytes of input (limit {limits.max_size})")
    return _Scan(data, limits).item(pos, 0)


def map_keys(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[bytes]:
    """The encoded keys of the map ``data`` is (definite length), in wire order.

    For error paths that must see keys as written: a decoder's dict merges keys that compare
    equal across types (``true`` and ``1``, a simple value and an integer).
    """
    scanner = _Scan(data, limits)
    if not data or data[0] >> 5 != 5 or data[0] & 31 == 31:
        return []
    pairs, pos = scanner._arg(0, data[0] & 31)
    keys = []
    for _ in range(pairs):
        end = scanner.item(pos, 1)
        keys.append(data[pos:end])
        pos = scanner.item(end, 1)
    return keys


def scan(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check that ``data`` is exactly one acceptable CBOR item; raise a :class:`DecodeError` if not."""
    end = item_end(data, 0, limits)
    if end != len(data):
        raise MalformedCBOR(f"{len(data) - end} trailing bytes after the item")


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one CBOR item after :func:`scan` accepted it.

    Maps decode to dicts (in wire order, which in deterministic mode is the sorted order) and
    arrays to lists. Signed protocol content allows no tags (:data:`DEFAULT_LIMITS`); where
    tags are allowed, ``cbor2`` gives the well-known ones their meaning (bignums, dates) and
    leaves the rest as :class:`cbor2.CBORTag`.
    """
    scan(data, limits)
    try:
        return cbor2.loads(bytes(data))
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"undecodable CBOR: {exc}") from None


def decode_then_reencode_check(data: bytes, limits: Limits) -> Any:
    """Decode with ``cbor2``'s own bounds only, for callers that re-encode what they decode.

    The caller MUST compare its deterministic re-encoding of the result with ``data`` and refuse
    a mismatch: that comparison proves §4.2.1 (our encoder writes nothing else) far faster than
    :func:`scan` can in pure Python. Memory stays bounded: ``data`` is at most
    ``limits.max_size`` bytes, nesting at most ``limits.max_depth``, and ``cbor2`` (≥ 6.3)
    reads declared lengths incrementally instead of allocating them up front.
    """
    if len(data) > limits.max_size:
        raise LimitExceeded(f"{len(data)} bytes of input (limit {limits.max_size})")
    try:
        # Indefinite lengths and duplicate keys are left to the caller's re-encoding check
        # (it writes neither, so it cannot match such input); cbor2's own checks cost more.
        return cbor2.loads(data, max_depth=limits.max_depth)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"undecodable CBOR: {exc}") from None
