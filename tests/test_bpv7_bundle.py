"""Bundle codec (RFC 9171 §4): roundtrips, every validity rule, hostile bytes."""

from __future__ import annotations

import time

import attrs
import pytest
from fleetwire.protocol.bpv7 import (
    DTN_NONE,
    BlockFlags,
    BlockType,
    Bundle,
    BundleError,
    BundleFlags,
    BundleId,
    CanonicalBlock,
    CrcType,
    CreationTimestamp,
    DtnEid,
    HopCount,
    InvalidBundle,
    IpnEid,
    PrimaryBlock,
    bundle_age_block,
    decode_bundle,
    encode_bundle,
    hop_count_block,
    parse_eid,
    payload_block,
    previous_node_block,
    process_unprocessable_blocks,
    unprocessable_block_action,
)
from fleetwire.protocol.bpv7.blocks import canonical_block_parts, primary_block_parts
from fleetwire.protocol.cbor import Limits
from hypothesis import given
from hypothesis import strategies as st

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1

# --- strategies ---------------------------------------------------------------------------

_NODE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;="
_VCHARS = "".join(chr(c) for c in range(0x21, 0x7F))

uint64 = st.one_of(st.integers(0, 30), st.integers(0, U64))
dtn_eids = st.builds(DtnEid, st.text(_NODE_CHARS, min_size=1, max_size=20),
                     st.text(_VCHARS, max_size=20))
ipn_eids = st.builds(
    IpnEid,
    node=st.one_of(st.integers(0, 300), st.integers(0, U32)),
    service=uint64,
    allocator=st.one_of(st.just(0), st.integers(0, U32)),
)
eids = st.one_of(st.just(DTN_NONE), dtn_eids, ipn_eids)
node_eids = st.one_of(dtn_eids, ipn_eids.filter(lambda e: not e.is_null))
crc_types = st.sampled_from(list(CrcType))
block_crc_types = st.sampled_from([CrcType.NONE, CrcType.CRC16, CrcType.CRC32C])
opaque_types = st.integers(2, 400).filter(lambda t: t not in (6, 7, 10))


@st.composite
def bundles(draw: st.DrawFn) -> Bundle:
    """Arbitrary bundles that satisfy every §4 rule."""
    source = draw(st.one_of(node_eids, eids))
    flags = draw(st.one_of(st.integers(0, 0x7FFFFF), uint64)) & ~1
    admin = bool(flags & BundleFlags.ADMIN_RECORD)
    if admin or source.is_null:
        flags &= ~int(BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_FORWARDING
                      | BundleFlags.REPORT_DELIVERY | BundleFlags.REPORT_DELETION)
    if source.is_null:
        flags |= BundleFlags.MUST_NOT_FRAGMENT
    payload = draw(st.binary(max_size=300))
    fragment_offset = total = None
    if payload and draw(st.booleans()):
        flags |= BundleFlags.IS_FRAGMENT
        fragment_offset = draw(st.integers(0, 1 << 40))
        total = fragment_offset + len(payload) + draw(st.integers(0, 1 << 20))
    creation = CreationTimestamp(draw(st.one_of(st.just(0), uint64)), draw(uint64))
    no_report = admin or source.is_null

    def block_flags() -> int:
        value = draw(st.integers(0, 0xFF))
        return value & ~0x02 if no_report else value

    numbers = iter(draw(st.lists(st.integers(2, 1 << 20), min_size=8, max_size=8, unique=True)))
    extensions: list[CanonicalBlock] = []
    if draw(st.booleans()):
        extensions.append(previous_node_block(next(numbers), draw(node_eids), draw(block_crc_types),
                                              block_flags()))
    if creation.time == 0 or draw(st.booleans()):
        extensions.append(bundle_age_block(next(numbers), draw(uint64), draw(block_crc_types),
                                           block_flags()))
    if draw(st.booleans()):
        hops = HopCount(draw(st.integers(1, 255)), draw(uint64))
        extensions.append(hop_count_block(next(numbers), hops, draw(block_crc_types), block_flags()))
    for _ in range(draw(st.integers(0, 2))):
        extensions.append(CanonicalBlock(draw(opaque_types), next(numbers),
                                         draw(st.binary(max_size=40)), block_flags(),
                                         draw(block_crc_types)))
    primary_crc = draw(crc_types)
    if primary_crc == CrcType.NONE:  # allowed only with a BIB that targets the primary block
        extensions.append(CanonicalBlock(BlockType.BIB, next(numbers), b"\x81\x00" + b"\x01\x01",
                                         block_flags(), draw(block_crc_types)))
    extensions = draw(st.permutations(extensions))
    primary = PrimaryBlock(draw(eids), source, draw(eids), creation, draw(uint64), flags,
                           primary_crc, fragment_offset, total)
    payload_flags = block_flags()
    return Bundle(primary, (*extensions, payload_block(payload, draw(block_crc_types), payload_flags)))


def raw(primary: PrimaryBlock, *blocks: CanonicalBlock) -> bytes:
    """Bundle bytes without the bundle-level checks, to build invalid examples."""
    parts = [b"\x9f", *primary_block_parts(primary)]
    for block in blocks:
        parts += canonical_block_parts(block)
    return b"".join(parts) + b"\xff"


SRC = parse_eid("ipn:1.1")
DST = parse_eid("dtn://ground/fleet")
PRIMARY = PrimaryBlock(DST, SRC, SRC, CreationTimestamp(800_000_000_000, 7), 3_600_000)
PAYLOAD = payload_block(b"signed intent")


# --- roundtrips ---------------------------------------------------------------------------


@given(bundles())
def test_roundtrip_decode_equal_and_reencode_identical(bundle: Bundle) -> None:
    data = encode_bundle(bundle)
    decoded = decode_bundle(data)
    assert decoded == bundle
    assert encode_bundle(decoded) == data
    ident = decoded.id
    assert ident == bundle.id and ident.source == bundle.primary.source
    assert ident.is_fragment == bundle.primary.is_fragment
    if ident.is_fragment:
        assert ident.payload_length == len(bundle.payload)


def test_simple_bundle_bytes_and_accessors() -> None:
    bundle = Bundle(PRIMARY, (hop_count_block(2, HopCount(30, 1)),
                              previous_node_block(3, parse_eid("ipn:9.0")),
                              bundle_age_block(4, 1500), PAYLOAD))
    data = encode_bundle(bundle)
    assert data[0] == 0x9F and data[-1] == 0xFF
    decoded = decode_bundle(data)
    assert decoded.payload == b"signed intent"
    assert decoded.hop_count == HopCount(30, 1)
    assert decoded.previous_node == parse_eid("ipn:9.0")
    assert decoded.bundle_age == 1500
    assert decoded.block(3) == bundle.blocks[1] and decoded.block(99) is None
    assert decoded.next_block_number() == 5
    bumped = decoded.with_block(hop_count_block(2, decoded.hop_count.next_hop()))
    assert decode_bundle(encode_bundle(bumped)).hop_count == HopCount(30, 2)
    assert decoded.without_block(3).previous_node is None


def test_three_element_ipn_keeps_its_form_on_the_wire() -> None:
    # [2, [0, 5, 1]]: RFC 9758 3-element form with allocator 0; decoded and re-encoded as received.
    three = IpnEid(5, 1, 0, elements=3)
    bundle = Bundle(attrs.evolve(PRIMARY, destination=three), (PAYLOAD,))
    data = encode_bundle(bundle)
    assert b"\x82\x02\x83\x00\x05\x01" in data
    decoded = decode_bundle(data)
    assert decoded.primary.destination == IpnEid(5, 1)  # the same endpoint
    assert encode_bundle(decoded) == data


# --- bundle identity ----------------------------------------------------------------------


bundle_ids = st.builds(
    lambda source, time, sequence, fragment: BundleId(
        source, CreationTimestamp(time, sequence), *(fragment or (None, None))),
    eids, uint64, uint64, st.one_of(st.none(), st.tuples(uint64, uint64)),
)


@given(bundle_ids, bundle_ids)
def test_bundle_id_key_is_injective_and_reversible(a: BundleId, b: BundleId) -> None:
    assert BundleId.from_key(a.key()) == a
    assert (a.key() == b.key()) == (a == b)


def test_bundle_id_of_fragment_uses_payload_length() -> None:
    primary = attrs.evolve(PRIMARY, flags=BundleFlags.IS_FRAGMENT, fragment_offset=10,
                           total_adu_length=100)
    bundle = Bundle(primary, (payload_block(b"x" * 20),))
    assert bundle.id == BundleId(SRC, PRIMARY.creation, 10, 20)
    assert bundle.id != Bundle(PRIMARY, (PAYLOAD,)).id
    # The same endpoint in either ipn form gives the same key.
    assert (BundleId(IpnEid(1, 1, 0, elements=3), PRIMARY.creation).key()
            == BundleId(SRC, PRIMARY.creation).key())


# --- every validity rule has a failing example ----------------------------------------------

AGE = bundle_age_block(5, 10)
BIB_TARGETS_PAYLOAD = CanonicalBlock(BlockType.BIB, 3, b"\x81\x01\x01\x01")
REPORTS = BundleFlags.REPORT_DELIVERY
ANON = attrs.evolve(PRIMARY, source=DTN_NONE, flags=BundleFlags.MUST_NOT_FRAGMENT)

BAD_BUNDLES = {
    "too-few-blocks": raw(PRIMARY),
    "block-number-zero": raw(PRIMARY, CanonicalBlock(200, 0, b""), PAYLOAD),
    "duplicate-block-number": raw(PRIMARY, CanonicalBlock(200, 4, b""), CanonicalBlock(201, 4, b""),
                                  PAYLOAD),
    "block-type-reserved": raw(PRIMARY, CanonicalBlock(0, 4, b""), PAYLOAD),
    "payload-missing": raw(PRIMARY, CanonicalBlock(200, 4, b"")),
    "payload-not-last": raw(PRIMARY, PAYLOAD, CanonicalBlock(1, 2, b"")),
    "payload-number": raw(PRIMARY, CanonicalBlock(1, 2, b"abc")),
    "primary-crc-missing": raw(attrs.evolve(PRIMARY, crc_type=CrcType.NONE),
                               BIB_TARGETS_PAYLOAD, PAYLOAD),
    "extension-duplicate": raw(PRIMARY, hop_count_block(2, HopCount(3)),
                               hop_count_block(3, HopCount(3)), PAYLOAD),
    "bundle-age-missing": raw(attrs.evolve(PRIMARY, creation=CreationTimestamp(0, 5)), PAYLOAD),
    "admin-record-reports": raw(attrs.evolve(PRIMARY, flags=BundleFlags.ADMIN_RECORD | REPORTS),
                                PAYLOAD),
    "anonymous-flags": raw(attrs.evolve(ANON, flags=0), PAYLOAD),
    "block-report-flag": raw(ANON, payload_block(b"x", flags=BlockFlags.REPORT_IF_UNPROCESSABLE)),
    "fragment-range": raw(attrs.evolve(PRIMARY, flags=BundleFlags.IS_FRAGMENT, fragment_offset=95,
                                       total_adu_length=100), payload_block(b"x" * 10)),
    "extension-data": raw(PRIMARY, CanonicalBlock(BlockType.BUNDLE_AGE, 2, b"\x41\x00"), PAYLOAD),
    "hop-limit": raw(PRIMARY, CanonicalBlock(BlockType.HOP_COUNT, 2, b"\x82\x00\x00"), PAYLOAD),
}


@pytest.mark.parametrize("code", sorted(BAD_BUNDLES))
def test_bundle_rule_is_refused_with_its_code(code: str) -> None:
    with pytest.raises(BundleError) as info:
        decode_bundle(BAD_BUNDLES[code])
    assert info.value.code == code
    assert info.value.rule.startswith("RFC 9171")


def test_more_rule_variants() -> None:
    for data, code in [
        (raw(attrs.evolve(ANON, flags=BundleFlags.MUST_NOT_FRAGMENT | REPORTS), PAYLOAD),
         "anonymous-flags"),
        (raw(PRIMARY, previous_node_block(2, SRC), previous_node_block(3, SRC), PAYLOAD),
         "extension-duplicate"),
        (raw(attrs.evolve(PRIMARY, creation=CreationTimestamp(0, 5)), AGE, AGE, PAYLOAD),
         "duplicate-block-number"),
        (raw(PRIMARY, CanonicalBlock(BlockType.HOP_COUNT, 2, b"\x82\x19\x01\x00\x00"), PAYLOAD),
         "hop-limit"),
        (raw(PRIMARY, CanonicalBlock(BlockType.PREVIOUS_NODE, 2, b"\x82\x01\x00\x00"), PAYLOAD),
         "extension-data"),
        (raw(attrs.evolve(PRIMARY, flags=BundleFlags.ADMIN_RECORD),
             payload_block(b"x", flags=BlockFlags.REPORT_IF_UNPROCESSABLE)), "block-report-flag"),
    ]:
        with pytest.raises(BundleError) as info:
            decode_bundle(data)
        assert info.value.code == code


def test_primary_without_crc_is_accepted_when_a_bib_targets_it() -> None:
    bib = CanonicalBlock(BlockType.BIB, 3, b"\x82\x00\x01\x01\x01")
    bundle = Bundle(attrs.evolve(PRIMARY, crc_type=CrcType.NONE), (bib, PAYLOAD))
    assert decode_bundle(encode_bundle(bundle)) == bundle


@pytest.mark.parametrize("code", sorted(BAD_BUNDLES))
def test_encoder_refuses_the_same_rules(code: str) -> None:
    if code == "too-few-blocks":
        bundle = Bundle(PRIMARY, ())
    else:
        decoded = _decode_unchecked(BAD_BUNDLES[code])
        bundle = Bundle(decoded[0], tuple(decoded[1:]))
    with pytest.raises(InvalidBundle) as info:
        encode_bundle(bundle)
    assert info.value.code == code


def _decode_unchecked(data: bytes) -> list:
    from fleetwire.protocol.bpv7.blocks import read_canonical_block, read_primary_block

    primary, pos = read_primary_block(data, 1, len(data))
    out: list = [primary]
    while data[pos] != 0xFF:
        block, pos = read_canonical_block(data, pos, len(data), 1 << 20)
        out.append(block)
    return out


def _block(data: bytes) -> bytes:
    return b"\x9f" + b"".join(primary_block_parts(PRIMARY)) + data + b"".join(
        canonical_block_parts(PAYLOAD)) + b"\xff"


def _primary(fields: bytes, count: int = 8) -> bytes:
    return b"\x9f" + bytes((0x80 | count,)) + fields + b"".join(canonical_block_parts(PAYLOAD)) + b"\xff"


EIDS = b"\x82\x02\x82\x01\x01" * 3
BLOCK_FAULTS = {
    "not-indefinite-array": b"\x82" + encode_bundle(Bundle(PRIMARY, (PAYLOAD,)))[1:-1],
    "trailing-bytes": encode_bundle(Bundle(PRIMARY, (PAYLOAD,))) + b"\x00",
    "truncated": encode_bundle(Bundle(PRIMARY, (PAYLOAD,)))[:-1],
    "version": _primary(b"\x06\x00\x00" + EIDS + b"\x82\x01\x00\x01"),
    "crc-type": _primary(b"\x07\x00\x03" + EIDS + b"\x82\x01\x00\x01"),
    "block-length": _primary(b"\x07\x00\x00" + EIDS + b"\x82\x01\x00\x01\x00", 9),
    "creation-timestamp": _primary(b"\x07\x00\x00" + EIDS + b"\x83\x01\x00\x00\x01"),
    "not-deterministic": _primary(b"\x07\x18\x00\x00" + EIDS + b"\x82\x01\x00\x01"),
    "indefinite": _primary(b"\x07\x00\x00" + EIDS + b"\x9f\x01\x00\xff\x01"),
    "wrong-type": _primary(b"\x07\x20\x00" + EIDS + b"\x82\x01\x00\x01"),
    "crc-field": _block(b"\x86\x18\xc8\x02\x00\x01\x40\x43\x00\x00\x00"),
    "block-data": _block(b"\x85\x18\xc8\x02\x00\x00\x60"),
    "dtn-node-name": _primary(b"\x07\x00\x00\x82\x01\x65//a^/" + EIDS[5:] + b"\x82\x01\x00\x01"),
    "dtn-ssp": _primary(b"\x07\x00\x00\x82\x01\x64none" + EIDS[5:] + b"\x82\x01\x00\x01"),
    "ipn-ssp": _primary(b"\x07\x00\x00\x82\x02\x84\x00\x01\x01\x01" + EIDS[5:] + b"\x82\x01\x00\x01"),
    "ipn-node": _primary(b"\x07\x00\x00\x82\x02\x83\x00\x1b" + (1 << 32).to_bytes(8, "big")
                         + b"\x01" + EIDS[5:] + b"\x82\x01\x00\x01"),
    "eid-scheme": _primary(b"\x07\x00\x00\x82\x03\x00" + EIDS[5:] + b"\x82\x01\x00\x01"),
    "eid-structure": _primary(b"\x07\x00\x00\x83\x01\x00\x00" + EIDS[5:] + b"\x82\x01\x00\x01"),
}


@pytest.mark.parametrize("code", sorted(BLOCK_FAULTS))
def test_block_level_faults_are_refused_with_their_code(code: str) -> None:
    with pytest.raises(BundleError) as info:
        decode_bundle(BLOCK_FAULTS[code], verify_crc=code != "crc-field")
    assert info.value.code == code, info.value


@pytest.mark.parametrize("crc_type", [CrcType.CRC16, CrcType.CRC32C])
def test_every_crc_mismatch_names_its_block(crc_type: CrcType) -> None:
    from fleetwire.protocol.bpv7.blocks import read_canonical_block, read_primary_block

    bundle = Bundle(attrs.evolve(PRIMARY, crc_type=crc_type),
                    (bundle_age_block(2, 5, crc_type), payload_block(b"abc", crc_type)))
    data = encode_bundle(bundle)
    _, pos = read_primary_block(data, 1, len(data))
    ends = {0: pos}
    for _ in range(2):
        block, pos = read_canonical_block(data, pos, len(data), 100)
        ends[block.number] = pos
    for number, end in ends.items():
        for where in (end - 1, end - 3):  # inside the CRC value, and just before it
            broken = bytearray(data)
            broken[where] ^= 0x01 if where == end - 1 else 0x00
            if where == end - 3 and crc_type == CrcType.CRC32C:
                broken[where] ^= 0x01  # still inside the 4-byte value
            elif where == end - 3:
                continue  # for CRC-16 that byte is the field's head; covered by crc-field
            with pytest.raises(BundleError) as info:
                decode_bundle(bytes(broken))
            assert (info.value.code, info.value.block) == ("crc-mismatch", number)
            assert decode_bundle(bytes(broken), verify_crc=False).primary == bundle.primary
    # A flipped payload byte is caught by the payload block's CRC.
    broken = bytearray(data)
    broken[data.index(b"abc")] ^= 0x20
    with pytest.raises(BundleError) as info:
        decode_bundle(bytes(broken))
    assert (info.value.code, info.value.block) == ("crc-mismatch", 1)


def test_limits_bound_blocks_and_strings() -> None:
    bundle = Bundle(PRIMARY, (*(CanonicalBlock(200, n, b"") for n in range(2, 10)),
                              payload_block(b"x" * 100)))
    data = encode_bundle(bundle)
    with pytest.raises(BundleError) as info:
        decode_bundle(data, limits=Limits(max_container_items=4))
    assert info.value.code == "limit"
    with pytest.raises(BundleError) as info:
        decode_bundle(data, limits=Limits(max_string_length=50))
    assert info.value.code == "limit"
    with pytest.raises(BundleError) as info:
        decode_bundle(data, limits=Limits(max_size=len(data) - 1))
    assert info.value.code == "limit"


# --- hostile bytes ------------------------------------------------------------------------


def _decode_or_typed_error(data: bytes) -> None:
    started = time.perf_counter()
    try:
        bundle = decode_bundle(data)
    except BundleError:
        pass
    else:
        assert encode_bundle(bundle) == data  # what we accept, we reproduce exactly
    assert time.perf_counter() - started < 0.5


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    _decode_or_typed_error(data)
    _decode_or_typed_error(b"\x9f" + data)


@given(bundles(), st.data())
def test_mutated_bundles_raise_only_typed_errors(bundle: Bundle, data: st.DataObject) -> None:
    encoded = bytearray(encode_bundle(bundle))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(encoded) - 1, 0)))
        if action == "flip" and encoded:
            encoded[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set" and encoded:
            encoded[at] = data.draw(st.sampled_from([0x00, 0x18, 0x1B, 0x5B, 0x7F, 0x9F, 0xBF, 0xFF]))
        elif action == "insert":
            encoded[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        elif action == "delete" and encoded:
            del encoded[at]
        else:
            del encoded[at:]
    _decode_or_typed_error(bytes(encoded))


def test_huge_declared_lengths_fail_fast() -> None:
    head = b"\x9f" + b"".join(primary_block_parts(PRIMARY))
    for evil in (b"\x86\x01\x01\x00\x02\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
                 b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x86\x01\x01\x00\x02\x5a\x7f\xff\xff\xff"):
        _decode_or_typed_error(head + evil)
    with pytest.raises(BundleError):
        decode_bundle(b"\x9f" + b"\x9f" * 100_000)


# --- blocks a node cannot process (§4.2.4, §5.6 step 4) -------------------------------------


def test_unprocessable_block_actions_follow_the_flags() -> None:
    def action(flags: int) -> tuple[bool, bool, bool]:
        got = unprocessable_block_action(CanonicalBlock(200, 3, b"", flags))
        return got.report, got.delete_bundle, got.discard_block

    assert action(0) == (False, False, False)
    assert action(BlockFlags.REPORT_IF_UNPROCESSABLE) == (True, False, False)
    assert action(BlockFlags.DISCARD_IF_UNPROCESSABLE) == (False, False, True)
    both = BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE | BlockFlags.DISCARD_IF_UNPROCESSABLE
    assert action(both) == (False, True, False)  # deletion wins over discarding
    assert action(BlockFlags.REPLICATE | 0x80) == (False, False, False)  # unknown bits ignored


def test_reception_applies_flags_in_order() -> None:
    keep = CanonicalBlock(200, 2, b"k")
    drop = CanonicalBlock(201, 3, b"d", BlockFlags.DISCARD_IF_UNPROCESSABLE
                          | BlockFlags.REPORT_IF_UNPROCESSABLE)
    kill = CanonicalBlock(202, 4, b"x", BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE)
    bundle = Bundle(PRIMARY, (keep, drop, hop_count_block(5, HopCount(9)), PAYLOAD))
    outcome = process_unprocessable_blocks(bundle)
    assert not outcome.delete and outcome.report and outcome.discarded == (3,)
    assert outcome.bundle == bundle.without_block(3)
    assert process_unprocessable_blocks(bundle, {1, 10, 200, 201}).bundle == bundle
    deleted = process_unprocessable_blocks(Bundle(PRIMARY, (kill, PAYLOAD)))
    assert deleted.delete and deleted.bundle is None and not deleted.report


def test_caller_mistakes_are_local_errors() -> None:
    with pytest.raises(InvalidBundle):
        encode_bundle(Bundle(attrs.evolve(PRIMARY, lifetime=-1), (PAYLOAD,)))
    with pytest.raises(InvalidBundle):
        encode_bundle(Bundle(attrs.evolve(PRIMARY, flags=BundleFlags.IS_FRAGMENT), (PAYLOAD,)))
    with pytest.raises(InvalidBundle):
        encode_bundle(Bundle(attrs.evolve(PRIMARY, fragment_offset=3), (PAYLOAD,)))
    with pytest.raises(InvalidBundle):
        encode_bundle(Bundle(attrs.evolve(PRIMARY, crc_type=5), (PAYLOAD,)))  # type: ignore[arg-type]
    with pytest.raises(InvalidBundle):
        hop_count_block(2, HopCount(0))
    with pytest.raises(InvalidBundle):
        encode_bundle(Bundle(PRIMARY, (CanonicalBlock(1, 1, "text"),)))  # type: ignore[arg-type]


def test_hop_count_exceeded_after_the_limit() -> None:
    hops = HopCount(2)
    assert not hops.exceeded and not hops.next_hop().next_hop().exceeded
    assert hops.next_hop().next_hop().next_hop().exceeded  # count 3 > limit 2 (§4.4.3)
