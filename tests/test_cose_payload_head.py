"""parse_sign1 reads the payload's head inline for the usual sizes: exactly as _bstr_at would."""

from __future__ import annotations

from fleetwire.protocol import cose
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.keys import SigningKey
from hypothesis import example, given, settings
from hypothesis import strategies as st

KEY = SigningKey.from_seed(bytes(range(32)))
#: A COSE_Sign1 up to its payload: tag, array, protected {1: -8}, unprotected {4: kid}.
PREFIX = cose.sign1(b"", KEY)[: -(1 + 66)]

heads = st.one_of(
    st.binary(min_size=0, max_size=4),
    st.tuples(st.sampled_from([0x58, 0x59, 0x5A, 0x40, 0x57, 0x5F, 0x78]),
              st.binary(max_size=3)).map(lambda t: bytes([t[0]]) + t[1]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@example(b"\x58\x17", 23)  # a one-byte length that is not the shortest form
@example(b"\x59\x00\xff", 255)
@example(b"\x58\x18", 23)  # the payload runs past the end
@example(b"\x59\x01\x00", 256)
@example(b"\x58\x43", 0)  # one byte longer than what follows it
@example(b"\x59\x01\x43", 256)
@given(heads, st.integers(min_value=0, max_value=66_000))
def test_the_payload_head_is_read_as_bstr_at_reads_it(head: bytes, body: int) -> None:
    data = PREFIX + head + bytes(body) + b"\x58\x40" + bytes(64)
    pos = len(PREFIX)
    if len(data) > cose.DEFAULT_ENVELOPE_LIMITS.max_size or head[:1] == b"\xf6":
        return  # refused before the payload is read (too large; detached): not this test's
    try:
        start, end = cose._bstr_at(data, pos, "payload")
    except FleetwireError as exc:  # what _bstr_at refuses, parse_sign1 refuses alike
        try:
            cose.parse_sign1(data)
        except FleetwireError as got:
            assert (type(got), got.message) == (type(exc), exc.message)
        else:
            raise AssertionError("accepted a payload head _bstr_at refuses") from None
        return
    try:
        parsed = cose.parse_sign1(data)
    except FleetwireError as got:  # something after the payload (the signature, trailing bytes)
        assert "payload" not in got.message or "limit" in got.message
    else:
        assert parsed.payload == data[start:end]
