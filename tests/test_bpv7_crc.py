"""CRC-16/X-25 and CRC-32C (RFC 9171 §4.2.1) against check values and a bitwise reference."""

from __future__ import annotations

from fleetwire.protocol.bpv7 import crc16_x25, crc32c
from fleetwire.protocol.bpv7.crc import X25_INIT, x25_finish, x25_update
from hypothesis import given
from hypothesis import strategies as st


def _x25_bitwise(data: bytes) -> int:
    """The textbook reflected CRC-16 (poly 0x8408 reflected), init/xorout 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_check_values() -> None:
    assert crc16_x25(b"123456789") == 0x906E
    assert crc32c(b"123456789") == 0xE3069283
    assert crc16_x25(b"") == 0x0000
    # RFC 3720 §B.4 (iSCSI) CRC32C examples, cited by RFC 9171 §4.2.1 via RFC 7143.
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


@given(st.binary(max_size=300))
def test_matches_bitwise_reference(data: bytes) -> None:
    assert crc16_x25(data) == _x25_bitwise(data)
    assert crc32c(data) == _crc32c_bitwise(data)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_incremental(a: bytes, b: bytes) -> None:
    assert x25_finish(x25_update(b, x25_update(a, X25_INIT))) == crc16_x25(a + b)
    assert crc32c(b, crc32c(a)) == crc32c(a + b)
