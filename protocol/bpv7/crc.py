"""Block CRCs of RFC 9171 §4.2.1–§4.2.2: CRC-16/X-25 and CRC-32C (Castagnoli).

The CRC of a block is computed over every byte of the block with the CRC field itself present but
filled with zeros (§4.3.1, §4.3.2): the CBOR byte-string head ``0x42``/``0x44`` stays, its 2 or 4
content bytes are zero. Both functions here are incremental (``crc(b, crc(a)) == crc(a + b)``) so
an encoder can run the CRC over the block's parts without joining them first.

CRC-32C runs in C (the ``crc32c`` package, hardware-accelerated where the CPU allows).

CRC-16/X-25 (poly 0x1021, init 0xFFFF, reflected in and out, xorout 0xFFFF) also runs in C, by way
of :func:`binascii.crc_hqx`, which is the *non-reflected* CCITT CRC with the same polynomial. A
reflected CRC over some bytes equals the bit-reversal of the non-reflected CRC over the
bit-reversed bytes (with a bit-reversed initial value; 0xFFFF is its own reversal). So we reverse
the bits of every byte with one ``bytes.translate``, run ``crc_hqx`` from 0xFFFF, and reverse the
16-bit result; xorout is applied at the end. The running value between chunks is the raw
``crc_hqx`` register, which is what :func:`x25_update` carries.
"""

from __future__ import annotations

import binascii
import enum
from typing import Final

import crc32c as _crc32c

__all__ = [
    "CrcType",
    "crc16_x25",
    "crc32c",
    "x25_update",
    "x25_finish",
    "X25_INIT",
    "ZERO_FIELD",
    "CRC_SIZE",
]


class CrcType(enum.IntEnum):
    """CRC type codes (RFC 9171 §4.2.1); no other values are valid."""

    NONE = 0
    CRC16 = 1  # "a standard X-25 CRC-16"
    CRC32C = 2  # "a standard CRC32C (Castagnoli) CRC-32"


#: The CRC field as it enters the CRC computation: a byte string of zeros (§4.3.1, §4.3.2).
ZERO_FIELD: Final = {CrcType.CRC16: b"\x42\x00\x00", CrcType.CRC32C: b"\x44\x00\x00\x00\x00"}
#: Bytes of CRC value per type (§4.2.2).
CRC_SIZE: Final = {CrcType.NONE: 0, CrcType.CRC16: 2, CrcType.CRC32C: 4}

_REVERSE: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
X25_INIT: Final = 0xFFFF


def x25_update(data: bytes, register: int = X25_INIT) -> int:
    """Advance the X-25 register over ``data`` (start from :data:`X25_INIT`)."""
    return binascii.crc_hqx(data.translate(_REVERSE), register)


def x25_finish(register: int) -> int:
    """Turn a register from :func:`x25_update` into the CRC-16/X-25 value."""
    return ((_REVERSE[register & 0xFF] << 8) | _REVERSE[register >> 8]) ^ 0xFFFF


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25 of ``data`` (check value: ``crc16_x25(b"123456789") == 0x906E``)."""
    return x25_finish(binascii.crc_hqx(data.translate(_REVERSE), X25_INIT))


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C of ``data``, continuing from ``value`` (check: ``b"123456789"`` → 0xE3069283)."""
    result: int = _crc32c.crc32c(data, value)
    return result
