"""Self-Delimiting Numeric Values (RFC 6256), bounded for hostile input.

An SDNV carries an unsigned integer seven bits per byte, most significant group first; every
byte but the last has its high bit set (RFC 6256 §2.1). Nothing in the encoding bounds its
length, so RFC 6256 leaves the bound to the protocol using it. TCPCLv3 (RFC 7242) uses SDNVs
for lengths and delays; here they must fit in an unsigned 64-bit integer and in at most
:data:`MAX_SDNV_BYTES` bytes (ten 7-bit groups hold 70 bits, enough for any ``uint64`` and not
much more). Anything longer, larger or cut short is refused with a typed error.

Two decoders serve two situations:

* :func:`decode` reads from bytes that are all there is: running out is :class:`SdnvTruncated`;
* :func:`decode_prefix` reads from a stream still arriving: running out returns ``None`` (wait
  for more bytes), but a value that is already too long or too large is refused at once, so a
  hostile peer cannot make a reader wait on an SDNV that could never be valid.
"""

from __future__ import annotations

from typing import Final

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_SDNV_BYTES",
    "MAX_SDNV_VALUE",
    "SdnvError",
    "SdnvOverflow",
    "SdnvTooLong",
    "SdnvTruncated",
    "SdnvValueError",
    "decode",
    "decode_prefix",
    "encode",
    "encoded_length",
]

#: Longest SDNV accepted (bytes).
MAX_SDNV_BYTES: Final = 10
#: Largest value accepted or written: the top of ``uint64``.
MAX_SDNV_VALUE: Final = (1 << 64) - 1


class SdnvError(RemoteProtocolError):
    """Bytes that are not an acceptable SDNV (RFC 6256 §2.1 with the bounds above)."""

    code = "sdnv-invalid"


class SdnvTruncated(SdnvError):
    """The input ended inside an SDNV (a byte with the continuation bit set came last)."""

    code = "sdnv-truncated"


class SdnvTooLong(SdnvError):
    """More than :data:`MAX_SDNV_BYTES` bytes without an end."""

    code = "sdnv-too-long"


class SdnvOverflow(SdnvError):
    """The value does not fit in an unsigned 64-bit integer."""

    code = "sdnv-overflow"


class SdnvValueError(LocalProtocolError):
    """Asked to encode a negative value, a non-integer, or one above :data:`MAX_SDNV_VALUE`."""

    code = "sdnv-value"


def encode(value: int) -> bytes:
    """The SDNV of ``value`` in its shortest form (RFC 6256 §2.1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SdnvValueError(f"SDNV value must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_SDNV_VALUE:
        raise SdnvValueError(f"SDNV value {value} outside 0..2**64-1")
    out = bytearray((value & 0x7F,))
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.reverse()
    return bytes(out)


def encoded_length(value: int) -> int:
    """How many bytes :func:`encode` writes for ``value``."""
    return max(1, (value.bit_length() + 6) // 7)


def decode_prefix(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode the SDNV at ``data[offset:]`` from a stream.

    Returns ``(value, end)`` with ``end`` the offset just past the SDNV, or ``None`` when the
    bytes so far are a valid beginning that needs more input. Raises :class:`SdnvTooLong` or
    :class:`SdnvOverflow` as soon as the bytes seen can no longer become an acceptable SDNV.
    """
    value = 0
    limit = min(len(data), offset + MAX_SDNV_BYTES)
    pos = offset
    while pos < limit:
        byte = data[pos]
        value = (value << 7) | (byte & 0x7F)
        pos += 1
        if value > MAX_SDNV_VALUE:
            raise SdnvOverflow(f"SDNV at offset {offset} exceeds 2**64-1")
        if not byte & 0x80:
            return value, pos
    if pos - offset >= MAX_SDNV_BYTES:
        raise SdnvTooLong(f"SDNV at offset {offset} longer than {MAX_SDNV_BYTES} bytes")
    return None


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode the SDNV at ``data[offset:]`` where ``data`` is complete; ``(value, end)``."""
    result = decode_prefix(data, offset)
    if result is None:
        raise SdnvTruncated(f"input ends inside the SDNV at offset {offset}")
    return result
