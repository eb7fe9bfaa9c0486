"""The C walk of a bundle's common shape gives exactly what the Python readers give.

``walk_bundle`` (``protocol/_speedups.c``, :mod:`fleetwire.protocol.bpv7.accel`) may only take
the common road: for any bytes, :func:`decode_bundle_offsets` must return the same bundle and
offsets, or raise the same error (type, code, text), with the walk as without it. Inputs:
valid bundles of every shape, bundles in the walk's shape that break each §4 rule (with good
CRCs, so only the rules can refuse them), damaged copies of real message bundles (flips,
truncations, insertions) and random bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
from fleetwire.protocol.agent.bundling import encode_message_bundle, message_bundle
from fleetwire.protocol.bpv7 import (
    DTN_NONE,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    CreationTimestamp,
    IpnEid,
    PrimaryBlock,
    accel,
    decode_bundle_offsets,
    encode_bundle,
)
from fleetwire.protocol.bpv7 import bundle as bundle_module
from fleetwire.protocol.bpv7.crc import CrcType, crc32c
from fleetwire.protocol.cbor import Limits
from hypothesis import example, given
from hypothesis import strategies as st

from tests.test_bpv7_bundle import bundles, raw

pytestmark = pytest.mark.skipif(accel.walk is None, reason="the C bundle walk is not built (or is off)")


def outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", run())
    except Exception as exc:
        return ("error", type(exc), getattr(exc, "code", None), str(exc))


def both_roads(data: bytes, **options: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    fast = outcome(lambda: decode_bundle_offsets(data, **options))
    with accel.without_walk():
        slow = outcome(lambda: decode_bundle_offsets(data, **options))
    return fast, slow


def walked(data: bytes) -> bool:
    """Whether the C walk took ``data`` (rather than leaving it to Python)."""
    limits = bundle_module.BUNDLE_LIMITS
    spec = bundle_module._walk_spec(limits.max_container_items, limits.max_string_length)
    assert spec is not None and accel.walk is not None
    return accel.walk(spec, data) is not None


def message(envelope: bytes = b"\xd2\x84" + bytes(60), **fields: Any) -> bytes:
    options = {"source": 5, "destination": 9, "created_at": 820_000_000_000, "sequence": 3,
               "lifetime_ms": 86_400_000} | fields  # fmt: skip
    return encode_message_bundle(message_bundle(envelope, **options))[0]


def test_the_walk_takes_the_common_shape_and_agrees() -> None:
    data = message()
    assert walked(data)  # or every comparison below would only test Python against itself
    fast, slow = both_roads(data)
    assert fast == slow and fast[0] == "ok"
    bundle, offsets = fast[1]
    assert type(bundle.primary.source) is IpnEid and bundle.primary.source.wire == b"\x82\x02\x82\x05\x07"
    assert offsets[0] == 1 and offsets[-1] == len(data) - 1


@given(bundles())
def test_valid_bundles_of_every_shape(bundle: Any) -> None:
    data = encode_bundle(bundle)
    fast, slow = both_roads(data)
    assert fast == slow
    assert fast[0] == "ok"


_EXTENSION_DATA = st.sampled_from([
    b"\x82\x18\x20\x00", b"\x82\x18\x20\x1f", b"\x82\x00\x00", b"\x82\x19\x01\x00\x00",
    b"\x82\x18\x05\x00", b"\x82\x01", b"\x83\x01\x01\x01", b"\x82\x01\x01\x00", b"\x18\x05",
    b"\x82\x02\x82\x07\x00", b"\x82\x01\x00", b"\x82\x02\x83\x01\x02\x03", b"\x05", b"",
    b"\x82\x02\x82\x1b\x00\x00\x00\x01\x00\x00\x00\x00\x00", b"\x82\x02\x82\x18\x05\x00",
])  # fmt: skip
_EIDS = st.sampled_from([
    DTN_NONE, IpnEid(0, 0), IpnEid(5, 7), IpnEid(5, 0), IpnEid(1 << 31, 1 << 40),
    IpnEid(3, 2, allocator=1), IpnEid(3, 2, allocator=1, elements=2),
])  # fmt: skip


@st.composite
def rule_breakers(draw: st.DrawFn) -> bytes:
    """Bundles with good CRCs, in or near the walk's shape, that may break any §4 rule."""
    flags = draw(st.sampled_from([0, 2, 4, 6, 0x10, 0x14, 0x16, 0x20, 0x4000, 0x4004]))
    primary = PrimaryBlock(
        draw(_EIDS), draw(_EIDS), draw(_EIDS),
        CreationTimestamp(draw(st.sampled_from([0, 1, 820_000_000_000])), draw(st.integers(0, 30))),
        draw(st.sampled_from([0, 1, 86_400_000])), flags, draw(st.sampled_from(list(CrcType))),
    )  # fmt: skip
    blocks = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from([0, 1, 6, 7, 10, 11, 23, 24, 192]))
        data = draw(st.one_of(_EXTENSION_DATA, st.binary(max_size=30)))
        blocks.append(CanonicalBlock(
            kind, draw(st.sampled_from([0, 1, 2, 3, 4, 23, 24])), data,
            draw(st.sampled_from([0, 1, 2, 4, 0x10, 23, 24])),
            draw(st.sampled_from([CrcType.CRC32C, CrcType.CRC32C, CrcType.NONE])),
        ))  # fmt: skip
    return raw(primary, *blocks)


@given(rule_breakers())
@example(raw(PrimaryBlock(IpnEid(9, 7), IpnEid(5, 7), DTN_NONE, CreationTimestamp(1, 0), 1),
             CanonicalBlock(10, 2, b"\x82\x18\x20\x00"), CanonicalBlock(10, 3, b"\x82\x18\x20\x00"),
             CanonicalBlock(1, 1, b"x")))  # fmt: skip
@example(raw(PrimaryBlock(IpnEid(9, 7), IpnEid(5, 7), DTN_NONE, CreationTimestamp(0, 0), 1),
             CanonicalBlock(1, 1, b"x")))  # fmt: skip
@example(raw(PrimaryBlock(IpnEid(9, 7), DTN_NONE, DTN_NONE, CreationTimestamp(1, 0), 1),
             CanonicalBlock(1, 1, b"x")))  # fmt: skip
def test_rules_are_refused_alike(data: bytes) -> None:
    fast, slow = both_roads(data)
    assert fast == slow


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A real message bundle (maybe forwarded: Previous Node, hop counted), then damaged."""
    data = message(
        draw(st.binary(max_size=300)), source=draw(st.sampled_from([0, 5, 300, (1 << 32) - 1])),
        destination=draw(st.sampled_from([1, 9, 70_000])),
        created_at=draw(st.sampled_from([1, 820_000_000_000, (1 << 64) - 1])),
        sequence=draw(st.integers(0, 300)),
        reports=draw(st.sampled_from([BundleFlags.NONE, BundleFlags.REPORT_DELIVERY])),
    )  # fmt: skip
    buffer = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not buffer:
            break
        at = draw(st.integers(0, len(buffer) - 1))
        change = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        if change == "flip":
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif change == "cut":
            del buffer[at:]
        elif change == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            buffer[at] = draw(st.sampled_from([0x00, 0x17, 0x18, 0x19, 0x1B, 0x1F, 0x5F, 0xFF]))
    return bytes(buffer)


@given(damaged())
def test_damaged_message_bundles_agree(data: bytes) -> None:
    fast, slow = both_roads(data)
    assert fast == slow


@given(st.binary(max_size=200).map(lambda tail: b"\x9f" + tail))
def test_random_bytes_agree(data: bytes) -> None:
    fast, slow = both_roads(data)
    assert fast == slow


@given(damaged(), st.integers(1, 4), st.integers(0, 80))
def test_limits_agree(data: bytes, blocks: int, size: int) -> None:
    fast, slow = both_roads(data, limits=Limits(max_container_items=blocks, max_string_length=size))
    assert fast == slow


def test_a_bad_crc_is_left_to_python() -> None:
    data = bytearray(message())
    data[-2] ^= 0x01  # the payload block's CRC
    assert not walked(bytes(data))
    fast, slow = both_roads(bytes(data))
    assert fast == slow and fast[0] == "error" and fast[2] == "crc-mismatch"


@given(st.binary(max_size=300), st.integers(0, 7))
@example(b"123456789", 0)  # the check value of CRC-32C (RFC 3720 B.4): 0xE3069283
def test_the_walks_crc_roads_agree_with_the_reference(data: bytes, skip: int) -> None:
    # The walk and the writer check with the SSE 4.2 instruction where the CPU has it, else
    # with the table: both against crc.crc32c, at every alignment of the 8-byte steps.
    roads = accel._speedups.crc32c_roads
    table, hardware = roads(memoryview(data)[skip:])
    assert table == crc32c(data[skip:])
    assert hardware in (None, table)


_P = PrimaryBlock(IpnEid(9, 7), IpnEid(5, 7), DTN_NONE, CreationTimestamp(1, 0), 1)
_HOPS = CanonicalBlock(10, 2, b"\x82\x18\x20\x00")
_PAYLOAD = CanonicalBlock(1, 1, b"x")


def _primary(**changes: Any) -> PrimaryBlock:
    return attrs.evolve(_P, **changes)


#: One rule broken at a time, from a bundle the walk takes (each with good CRCs).
ONE_RULE_BROKEN = {
    "duplicate-block-number": raw(_P, _HOPS, CanonicalBlock(11, 2, b""), _PAYLOAD),
    "block-number-zero": raw(_P, CanonicalBlock(11, 0, b""), _PAYLOAD),
    "payload-not-last": raw(_P, _PAYLOAD, _HOPS),
    "payload-number": raw(_P, _HOPS, CanonicalBlock(1, 2, b"x")),
    "block-type-reserved": raw(_P, CanonicalBlock(0, 3, b""), _PAYLOAD),
    "payload-missing": raw(_P, _HOPS),
    "extension-duplicate": raw(_P, _HOPS, CanonicalBlock(10, 3, b"\x82\x18\x20\x00"), _PAYLOAD),
    "hop-limit-zero": raw(_P, CanonicalBlock(10, 2, b"\x82\x00\x00"), _PAYLOAD),
    "hop-limit-256": raw(_P, CanonicalBlock(10, 2, b"\x82\x19\x01\x00\x00"), _PAYLOAD),
    "hop-trailing": raw(_P, CanonicalBlock(10, 2, b"\x82\x18\x20\x00\x00"), _PAYLOAD),
    "hop-not-shortest": raw(_P, CanonicalBlock(10, 2, b"\x82\x18\x05\x00"), _PAYLOAD),
    "hop-three-items": raw(_P, CanonicalBlock(10, 2, b"\x83\x01\x01\x01"), _PAYLOAD),
    "previous-truncated": raw(_P, CanonicalBlock(6, 3, b"\x82\x02\x82\x07"), _PAYLOAD),
    "previous-trailing": raw(_P, CanonicalBlock(6, 3, b"\x82\x02\x82\x07\x00\x00"), _PAYLOAD),
    "age-trailing": raw(_P, CanonicalBlock(7, 3, b"\x05\x00"), _PAYLOAD),
    "age-not-shortest": raw(_P, CanonicalBlock(7, 3, b"\x18\x05"), _PAYLOAD),
    "bundle-age-missing": raw(_primary(creation=CreationTimestamp(0, 0)), _PAYLOAD),
    "anonymous-flags": raw(_primary(source=DTN_NONE), _PAYLOAD),
    "anonymous-ipn-flags": raw(_primary(source=IpnEid(0, 0)), _PAYLOAD),
    "admin-block-report-flag": raw(_primary(flags=2), CanonicalBlock(11, 3, b"", 2), _PAYLOAD),
    "anonymous-block-report-flag": raw(
        _primary(source=DTN_NONE, flags=4), CanonicalBlock(11, 3, b"", 2), _PAYLOAD
    ),
}
#: Their neighbours that keep every rule: the walk must take these.
ALL_RULES_KEPT = {
    "plain": raw(_P, _HOPS, _PAYLOAD),
    "previous-node": raw(_P, CanonicalBlock(6, 3, b"\x82\x02\x82\x07\x00"), _HOPS, _PAYLOAD),
    "previous-null": raw(_P, CanonicalBlock(6, 3, b"\x82\x01\x00"), _PAYLOAD),
    "aged": raw(_primary(creation=CreationTimestamp(0, 0)), CanonicalBlock(7, 3, b"\x05"),
                _PAYLOAD),
    "anonymous": raw(_primary(source=DTN_NONE, flags=4), _PAYLOAD),
    "admin-record": raw(_primary(flags=2), CanonicalBlock(11, 3, b"", 1), _PAYLOAD),
    "hop-limit-255": raw(_P, CanonicalBlock(10, 2, b"\x82\x18\xff\x00"), _PAYLOAD),
    "hop-limit-1": raw(_P, CanonicalBlock(10, 2, b"\x82\x01\x00"), _PAYLOAD),
}


@pytest.mark.parametrize("name", sorted(ONE_RULE_BROKEN))
def test_each_rule_broken_alone_is_left_to_python(name: str) -> None:
    data = ONE_RULE_BROKEN[name]
    fast, slow = both_roads(data)
    assert fast == slow and fast[0] == "error"
    assert not walked(data)


@pytest.mark.parametrize("name", sorted(ALL_RULES_KEPT))
def test_their_valid_neighbours_are_walked(name: str) -> None:
    data = ALL_RULES_KEPT[name]
    fast, slow = both_roads(data)
    assert fast == slow and fast[0] == "ok"
    assert walked(data)


def test_a_fleets_eids_are_read_again_as_the_same_objects_and_more_replace_them() -> None:
    # A process simulating a fleet walks every agent's bundles, so the EIDs come in turn from
    # thousands of nodes: the cache holds a fleet's worth (a 64-entry one gave back almost
    # none of these), and past its size entries are replaced, never grown, with every EID
    # still read as its own value.
    limits = bundle_module.BUNDLE_LIMITS
    spec = bundle_module._walk_spec(limits.max_container_items, limits.max_string_length)
    assert spec is not None and accel.walk is not None
    walk = accel.walk

    def sources(nodes: range) -> list[IpnEid]:
        return [walk(spec, message(source=node, destination=1))[0].primary.source
                for node in nodes]  # fmt: skip

    fleet = range(1_000, 6_000)
    first = sources(fleet)
    again = sources(fleet)
    assert sum(a is b for a, b in zip(first, again, strict=True)) >= 0.9 * len(fleet)
    crowd = range(100_000, 140_000)  # more EIDs than entries: slots collide, entries go
    assert [eid.node for eid in sources(crowd)] == list(crowd)
    assert sources(fleet) == first  # equal values, rebuilt where their entries went


def test_eids_read_again_are_the_same_values_whatever_else_was_read_between() -> None:
    # The walk keeps the ipn EIDs it built by their CBOR (a bounded, direct-mapped cache):
    # many sources and services, read in turns so entries are replaced and slots collide,
    # each bundle still decodes as the Python road decodes it, EIDs equal field by field.
    sources = [(node, service) for node in (1, 2, 23, 24, 255, 256, 70_000, (1 << 32) - 1)
               for service in (0, 7, 8, 1 << 40)]  # fmt: skip
    for _ in range(2):
        for node, service in sources:
            data = encode_bundle(Bundle(
                PrimaryBlock(IpnEid(9, service), IpnEid(node, service), IpnEid(node, 0),
                             CreationTimestamp(1, 0), 1),
                (_HOPS, _PAYLOAD),
            ))  # fmt: skip
            assert walked(data)
            fast, slow = both_roads(data)
            assert fast == slow and fast[0] == "ok"
            primary = fast[1][0].primary
            for eid, (want_node, want_service) in (
                (primary.source, (node, service)), (primary.report_to, (node, 0)),
                (primary.destination, (9, service)),
            ):  # fmt: skip
                assert (eid.node, eid.service, eid.allocator, eid.elements) == (
                    want_node, want_service, 0, 2,
                )  # fmt: skip
                assert eid.wire == IpnEid(want_node, want_service).wire
