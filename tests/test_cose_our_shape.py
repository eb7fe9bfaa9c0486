"""parse_sign1's fixed-offset road for the envelope sign1 writes gives exactly what the
general road gives: the same Sign1, or (for anything it does not take) the same error.

The general road is reached with the same bytes in a bytearray (the fixed-offset road takes
only ``bytes``)."""

from __future__ import annotations

from typing import Any

from fleetwire.protocol import cose
from fleetwire.protocol.keys import SigningKey
from hypothesis import example, given, settings
from hypothesis import strategies as st

KEY = SigningKey.from_seed(bytes(range(32)))
OTHER = SigningKey.from_seed(bytes(range(1, 33)))

#: Payload sizes on each side of every head boundary (RFC 8949 §3.1: 23/24, 255/256, 65535).
_EDGES = (0, 1, 23, 24, 25, 255, 256, 257, 1000, 65535, 65536)

_LIMITS = st.sampled_from([
    cose.DEFAULT_ENVELOPE_LIMITS,
    cose.EnvelopeLimits(),
    cose.EnvelopeLimits(max_size=400),
    cose.EnvelopeLimits(max_payload_size=255),
    cose.EnvelopeLimits(require_kid=False, allow_ed448=True, unprotected_labels=None),
])  # fmt: skip


def outcome(data: bytes | bytearray, limits: cose.EnvelopeLimits) -> tuple[Any, ...]:
    try:
        return ("ok", cose.parse_sign1(data, limits))
    except Exception as exc:
        return ("error", type(exc), str(exc))


def both_roads(data: bytes, limits: cose.EnvelopeLimits) -> tuple[Any, Any]:
    return outcome(data, limits), outcome(bytearray(data), limits)


@settings(max_examples=300, deadline=None)
@example(size=0, key=KEY, limits=cose.DEFAULT_ENVELOPE_LIMITS)
@given(
    size=st.one_of(st.sampled_from(_EDGES), st.integers(0, 70_000)),
    key=st.sampled_from([KEY, OTHER]),
    limits=_LIMITS,
)
def test_our_envelopes_parse_as_the_general_road_parses_them(
    size: int, key: SigningKey, limits: cose.EnvelopeLimits
) -> None:
    data = cose.sign1(bytes(range(256)) * (size // 256) + bytes(size % 256), key)
    fast, slow = both_roads(data, limits)
    assert fast == slow
    if fast[0] == "ok":
        parsed = fast[1]
        assert type(parsed.payload) is bytes and type(parsed.signature) is bytes
        assert parsed.kid == key.kid and len(parsed.signature) == 64


@settings(max_examples=500, deadline=None)
@given(
    size=st.sampled_from(_EDGES[:8]),
    # positions where the fixed-offset road reads: prefix, kid, payload head; signature head
    edits=st.lists(
        st.tuples(st.one_of(st.integers(0, 48), st.integers(-68, -1)), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    ),
    cut=st.one_of(st.none(), st.integers(-70, 70)),
    limits=_LIMITS,
)
def test_damaged_envelopes_fare_alike_on_both_roads(
    size: int, edits: list[tuple[int, int]], cut: int | None, limits: cose.EnvelopeLimits
) -> None:
    envelope = bytearray(cose.sign1(bytes(size), KEY))
    for at, value in edits:
        envelope[at] = value
    if cut is not None:  # truncated, or bytes added (a head's length then disagrees)
        envelope = envelope[:cut] if cut < 0 else envelope + bytes(cut)
    fast, slow = both_roads(bytes(envelope), limits)
    assert fast == slow
