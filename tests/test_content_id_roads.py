"""The content ids' C SHA-256 (``protocol/_content_id.c``) against hashlib and FIPS 180-4.

``ContentId.of`` takes the C road when the accelerator is built; it must name every content
exactly as hashlib's SHA-256 does, by each road the C file has (the SHA extensions where the
CPU has them, the portable rounds everywhere), at every length around the padding's edges
(55/56 bytes: one block or two; 64: a whole block) and for arbitrary bytes.
"""

from __future__ import annotations

import hashlib

import pytest
from fleetwire.protocol import ids
from fleetwire.protocol.ids import ContentId
from hypothesis import given
from hypothesis import strategies as st

speedups = pytest.importorskip("fleetwire.protocol._speedups")

# FIPS 180-4 examples (NIST CSRC "SHA256.pdf", "SHA2 additional examples").
VECTORS = [
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]


@pytest.mark.parametrize(("data", "digest"), VECTORS, ids=["empty", "abc", "448-bit", "million-a"])
def test_standard_vectors_by_every_road(data: bytes, digest: str) -> None:
    portable, hardware = speedups.sha256_roads(data)
    assert portable.hex() == digest
    if hardware is not None:
        assert hardware.hex() == digest


@pytest.mark.parametrize("size", [*range(0, 130), 183, 255, 256, 1000, 4095, 4096, 65_537])
def test_every_length_near_the_padding_edges(size: int) -> None:
    data = bytes((i * 131 + size) & 0xFF for i in range(size))
    expected = hashlib.sha256(data).digest()
    portable, hardware = speedups.sha256_roads(data)
    assert portable == expected
    assert hardware in (None, expected)


@given(st.binary(max_size=600))
def test_any_bytes_by_every_road(data: bytes) -> None:
    expected = hashlib.sha256(data).digest()
    portable, hardware = speedups.sha256_roads(data)
    assert portable == expected
    assert hardware in (None, expected)
    assert ContentId.of(data).raw == b"\x12\x20" + expected
    assert speedups.sha256(data) == expected


@given(st.binary(max_size=300))
def test_content_id_of_is_the_same_by_either_road(data: bytes) -> None:
    road = ids._sha256
    assert road is not None  # the accelerator is built: ContentId.of takes the C road
    fast, fast_digest = ContentId.of(data), ids.sha256_digest(data)
    ids._sha256 = None
    try:
        slow, slow_digest = ContentId.of(data), ids.sha256_digest(data)
    finally:
        ids._sha256 = road
    assert fast == slow
    assert fast_digest == slow_digest == fast.digest
    assert fast.matches(data)
    assert ContentId.from_bytes(fast.raw) == fast


def test_buffers_other_than_bytes() -> None:
    data = bytearray(b"a message payload")
    assert speedups.sha256(memoryview(data)) == hashlib.sha256(data).digest()
    assert speedups.sha256(data) == hashlib.sha256(data).digest()
    with pytest.raises(TypeError):
        speedups.sha256("text is not bytes")
    with pytest.raises(TypeError):
        speedups.sha256(None)
