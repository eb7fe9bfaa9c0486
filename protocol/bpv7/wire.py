"""CBOR heads for the bundle codec: written directly, read directly, checked like the scanner.

Theory of operation
-------------------
A bundle is a small, fixed grammar of CBOR (RFC 9171 §4.1, Appendix B): arrays of unsigned
integers, byte strings, and text strings inside an indefinite-length array. Going through a generic
CBOR encoder or decoder per block costs far more than the few heads involved, so the codec writes
heads with :func:`head` and reads them with the ``read_*`` functions here, which hold the same
line as :mod:`fleetwire.protocol.cbor`'s scanner: every read is bounds-checked against ``end``,
every length is checked against the limit and the bytes that remain before anything is sliced,
and every head must be in its shortest form (RFC 8949 §4.2.1, required of bundles by RFC 9171
§4.1), so a decoded bundle re-encodes to the same bytes. Readers raise :class:`WireError` with a
short code; the block decoders turn it into a :class:`~.errors.BundleError` that names the block.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "WireError",
    "head",
    "uint",
    "read_head",
    "read_uint",
    "read_bytes",
    "read_text",
    "UINT64_MAX",
]

UINT64_MAX: Final = (1 << 64) - 1

_SMALL: Final = tuple(tuple(bytes((major << 5 | arg,)) for arg in range(24)) for major in range(8))
_SHORTEST_MIN: Final = (0, 24, 0x100, 0x10000, 0x100000000)  # by ai - 23: 24, 25, 26, 27


class WireError(Exception):
    """Low-level refusal (internal); ``code`` is a stable short name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def head(major: int, arg: int) -> bytes:
    """The shortest head of major type ``major`` with argument ``arg`` (RFC 8949 §4.2.1)."""
    if arg < 24:
        return _SMALL[major][arg]
    if arg < 0x100:
        return bytes((major << 5 | 24, arg))
    if arg < 0x10000:
        return bytes((major << 5 | 25,)) + arg.to_bytes(2, "big")
    if arg < 0x100000000:
        return bytes((major << 5 | 26,)) + arg.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + arg.to_bytes(8, "big")


def uint(value: int) -> bytes:
    """An unsigned integer item (major type 0)."""
    if value < 24:
        return _SMALL[0][value]
    return head(0, value)


def read_head(data: bytes, pos: int, end: int, major: int) -> tuple[int, int]:
    """Read a definite head of ``major`` at ``pos``; return (argument, position after the head)."""
    if pos >= end:
        raise WireError("truncated", f"item expected at offset {pos}, input ends")
    initial = data[pos]
    if initial >> 5 != major:
        raise WireError(
            "wrong-type", f"major type {initial >> 5} at offset {pos}, expected {major}"
        )
    ai = initial & 31
    if ai < 24:
        return ai, pos + 1
    if ai > 27:
        if ai == 31:
            raise WireError("indefinite", f"indefinite-length item at offset {pos} not accepted here")
        raise WireError("malformed", f"reserved additional information {ai} at offset {pos}")
    width = 1 << (ai - 24)
    after = pos + 1 + width
    if after > end:
        raise WireError("truncated", f"head at offset {pos} runs past the end")
    arg = int.from_bytes(data[pos + 1 : after], "big")
    if arg < _SHORTEST_MIN[ai - 23]:
        raise WireError("not-deterministic", f"argument {arg} at offset {pos} not in shortest form")
    return arg, after


def read_uint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read an unsigned integer item."""
    if pos < end and data[pos] < 24:  # the one-byte form: most flags, types, numbers
        return data[pos], pos + 1
    return read_head(data, pos, end, 0)


def read_bytes(data: bytes, pos: int, end: int, limit: int) -> tuple[int, int]:
    """Read a definite byte-string head; return (start of content, end of content)."""
    length, start = read_head(data, pos, end, 2)
    if length > limit:
        raise WireError("limit", f"byte string of {length} bytes at offset {pos} (limit {limit})")
    stop = start + length
    if stop > end:
        raise WireError("truncated", f"byte string at offset {pos} runs past the end")
    return start, stop


def read_text(data: bytes, pos: int, end: int, limit: int) -> tuple[str, int]:
    """Read a definite text string; it must be valid UTF-8 (RFC 8949 §3.1)."""
    length, start = read_head(data, pos, end, 3)
    if length > limit:
        raise WireError("limit", f"text string of {length} bytes at offset {pos} (limit {limit})")
    stop = start + length
    if stop > end:
        raise WireError("truncated", f"text string at offset {pos} runs past the end")
    try:
        return data[start:stop].decode("utf-8"), stop
    except UnicodeDecodeError:
        raise WireError("malformed", f"text string at offset {pos} is not UTF-8") from None
