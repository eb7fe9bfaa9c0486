"""Bundles (RFC 9171 §4.1): encode, decode, the §4 validity rules, and bundle identity.

Theory of operation
-------------------
A bundle is an indefinite-length CBOR array: ``0x9f``, the primary block, one or more canonical
blocks of which the last is the payload, ``0xff`` (§4.1). :func:`encode_bundle` checks the rules
below and concatenates the blocks' bytes (each block builds its own CRC, see
:mod:`fleetwire.protocol.bpv7.blocks`); :func:`decode_bundle` walks the same structure with the
bounded head readers of :mod:`fleetwire.protocol.bpv7.wire` — never a generic CBOR decoder on
unchecked bytes — verifies every CRC, then applies the same rules. A decoded bundle re-encodes to
the bytes it came from.

The rules, each refused with its own ``code`` (:class:`BundleError` from the wire,
:class:`InvalidBundle` from a caller):

========================  ========================================================================
code                      rule
========================  ========================================================================
not-indefinite-array      §4.1 the bundle is an indefinite-length array
too-few-blocks            §4.1 a primary block and at least one canonical block
trailing-bytes            §4.1 the break ends the bundle
block-number-zero         §4.1 canonical blocks have non-zero numbers (0 is the primary block)
duplicate-block-number    §4.1 block numbers are unique
block-type-reserved       §9.1 block type 0 is reserved
payload-missing           §4.1 the last block is the payload block
payload-not-last          §4.1 exactly one payload block, and it is the last
payload-number            §4.1 the payload block's number is 1
primary-crc-missing       §4.3.1 CRC type 0 on the primary only if a BIB targets block 0
extension-duplicate       §4.4.1–§4.4.3 at most one Previous Node, Bundle Age, Hop Count block
bundle-age-missing        §4.4.2 creation time 0 requires a Bundle Age block
admin-record-reports      §4.2.3 an administrative record requests no status reports
anonymous-flags           §4.2.3 a null source: must-not-fragment set, no status reports
block-report-flag         §4.2.4 admin/anonymous bundles: no "report if unprocessable" flags
fragment-range            §3.1, §5.8 a fragment's payload is a non-empty part of the ADU
========================  ========================================================================

Block-level rules (array lengths, version, CRC type and field, CRC value, EID syntax, extension
data, deterministic CBOR, size limits) are refused by the block readers with their own codes.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Final

import attrs

from ..cbor import WIRE_LIMITS, Limits
from . import accel as _accel
from .blocks import (
    STATUS_REPORT_REQUESTS,
    BlockFlags,
    BlockType,
    BundleFlags,
    CanonicalBlock,
    CreationTimestamp,
    PrimaryBlock,
    canonical_block_parts,
    primary_block_parts,
    read_canonical_block,
    read_canonical_block_common,
    read_primary_block,
    read_primary_block_common,
)
from .crc import CrcType
from .eid import Eid, IpnEid, read_eid
from .errors import BundleError, InvalidBundle, InvalidEid
from .extensions import HopCount, decode_bundle_age, decode_hop_count, decode_previous_node
from .wire import WireError, read_head, read_uint, uint

__all__ = [
    "Bundle",
    "BundleId",
    "BUNDLE_LIMITS",
    "KNOWN_BLOCK_TYPES",
    "ReceptionOutcome",
    "encode_bundle",
    "decode_bundle",
    "decode_bundle_offsets",
    "check_bundle",
    "process_unprocessable_blocks",
]

#: Bounds for received bundles: the codec's wire limits; ``max_container_items`` bounds blocks.
BUNDLE_LIMITS: Final = attrs.evolve(WIRE_LIMITS, max_container_items=1024)
#: Block types this codec can process (§4.4: every BPA must process types 6, 7 and 10).
KNOWN_BLOCK_TYPES: Final = frozenset(
    {BlockType.PAYLOAD, BlockType.PREVIOUS_NODE, BlockType.BUNDLE_AGE, BlockType.HOP_COUNT}
)

_Fail = Callable[..., Exception]
# Plain ints: ``int & IntFlag`` goes through the enum machinery and costs a microsecond.
_IS_FRAGMENT: Final = int(BundleFlags.IS_FRAGMENT)
_ADMIN_RECORD: Final = int(BundleFlags.ADMIN_RECORD)
_MUST_NOT_FRAGMENT: Final = int(BundleFlags.MUST_NOT_FRAGMENT)
_REPORT_REQUESTS: Final = int(STATUS_REPORT_REQUESTS)
_REPORT_IF_UNPROCESSABLE: Final = int(BlockFlags.REPORT_IF_UNPROCESSABLE)
_DELETE_IF_UNPROCESSABLE: Final = int(BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE)
_DISCARD_IF_UNPROCESSABLE: Final = int(BlockFlags.DISCARD_IF_UNPROCESSABLE)


@attrs.frozen(slots=True, order=True)
class BundleId:
    """What identifies a bundle (§4.3.1, §4.2.7): source node ID, creation timestamp and, for a
    fragment, fragment offset and payload length (§5.9 tells fragments of one ADU apart this way).

    :meth:`key` is a compact, deterministic byte form — the CBOR array of those fields with the
    source in its canonical encoding — usable as a database key; :meth:`from_key` reads it back.
    """

    source: Eid = attrs.field(order=False)
    creation: CreationTimestamp
    fragment_offset: int | None = None
    payload_length: int | None = None

    @property
    def is_fragment(self) -> bool:
        return self.fragment_offset is not None

    def key(self) -> bytes:
        source = self.source
        if isinstance(source, IpnEid) and source.elements != (3 if source.allocator else 2):
            source = IpnEid(source.node, source.service, source.allocator)
        parts = [b"\x85" if self.is_fragment else b"\x83", source.wire,
                 uint(self.creation.time), uint(self.creation.sequence)]
        if self.fragment_offset is not None:
            parts += (uint(self.fragment_offset), uint(self.payload_length or 0))
        return b"".join(parts)

    @classmethod
    def from_key(cls, key: bytes) -> BundleId:
        end = len(key)
        try:
            count, pos = read_head(key, 0, end, 4)
            if count not in (3, 5):
                raise WireError("bundle-id", f"{count} items")
            source, pos = read_eid(key, pos, end, 1024)
            numbers = []
            for _ in range(count - 1):
                number, pos = read_uint(key, pos, end)
                numbers.append(number)
        except (WireError, InvalidEid) as exc:
            raise BundleError("bundle-id", f"not a bundle id key: {exc}", rule="BundleId.key") from None
        if pos != end:
            raise BundleError("bundle-id", "bytes after the key", rule="BundleId.key")
        creation = CreationTimestamp(numbers[0], numbers[1])
        if count == 5:
            return cls(source, creation, numbers[2], numbers[3])
        return cls(source, creation)


@attrs.frozen(slots=True)
class Bundle:
    """A bundle: its primary block and canonical blocks in wire order (payload last)."""

    primary: PrimaryBlock
    blocks: tuple[CanonicalBlock, ...]

    @property
    def payload_block(self) -> CanonicalBlock:
        return self.blocks[-1]

    @property
    def payload(self) -> bytes:
        return self.blocks[-1].data

    @property
    def id(self) -> BundleId:
        primary = self.primary
        if int(primary.flags) & _IS_FRAGMENT:
            return BundleId(primary.source, primary.creation, primary.fragment_offset,
                            len(self.blocks[-1].data))
        return BundleId(primary.source, primary.creation)

    def block(self, number: int) -> CanonicalBlock | None:
        for block in self.blocks:
            if block.number == number:
                return block
        return None

    def first_of_type(self, block_type: int) -> CanonicalBlock | None:
        for block in self.blocks:
            if block.block_type == block_type:
                return block
        return None

    @property
    def previous_node(self) -> Eid | None:
        block = self.first_of_type(BlockType.PREVIOUS_NODE)
        return None if block is None else decode_previous_node(block.data, block.number)

    @property
    def bundle_age(self) -> int | None:
        block = self.first_of_type(BlockType.BUNDLE_AGE)
        return None if block is None else decode_bundle_age(block.data, block.number)

    @property
    def hop_count(self) -> HopCount | None:
        block = self.first_of_type(BlockType.HOP_COUNT)
        return None if block is None else decode_hop_count(block.data, block.number)

    def without_block(self, number: int) -> Bundle:
        """This bundle less the block numbered ``number`` (§5.6 step 4 discards, §5.4 step 4)."""
        return Bundle(self.primary, tuple(b for b in self.blocks if b.number != number))

    def with_block(self, block: CanonicalBlock) -> Bundle:
        """Replace the block with ``block``'s number, or insert ``block`` before the payload."""
        if any(b.number == block.number for b in self.blocks):
            return Bundle(self.primary,
                          tuple(block if b.number == block.number else b for b in self.blocks))
        return Bundle(self.primary, (*self.blocks[:-1], block, self.blocks[-1]))

    def next_block_number(self) -> int:
        """A free block number for a new extension block."""
        return max(b.number for b in self.blocks) + 1 if self.blocks else 2


# --- rules -------------------------------------------------------------------------------


def _bib_targets_primary(block: CanonicalBlock) -> bool:
    """Whether a BIB's security targets (the first ASB item, RFC 9172 §3.6) include block 0.

    A BIB whose data does not open with a target list is taken not to target the primary block:
    it is encrypted — and a BCB may only encrypt a BIB whose targets it also covers, never the
    primary block (RFC 9172 §3.8, §3.9) — or malformed, which BPSec processing refuses.
    """
    data = block.data
    end = len(data)
    try:
        count, pos = read_head(data, 0, end, 4)
        for _ in range(min(count, end)):
            target, pos = read_uint(data, pos, end)
            if target == 0:
                return True
    except WireError:
        return False
    return False


def check_bundle(bundle: Bundle, fail: _Fail = InvalidBundle) -> None:
    """Apply the bundle-wide rules of RFC 9171 §4 (table in the module docstring)."""
    blocks = bundle.blocks
    if not blocks:
        raise fail("too-few-blocks", "no canonical blocks", rule="RFC 9171 §4.1")
    seen: set[int] = set()
    singles: dict[int, int] = {}
    last = len(blocks) - 1
    for index, block in enumerate(blocks):
        number = block.number
        if number == 0:
            raise fail("block-number-zero", "canonical block numbered 0", block=f"#{index + 1}",
                       rule="RFC 9171 §4.1: the primary block is implicitly number zero")
        if number in seen:
            raise fail("duplicate-block-number", "block number used twice", block=number,
                       rule="RFC 9171 §4.1: the block number uniquely identifies the block")
        seen.add(number)
        kind = block.block_type
        if kind == BlockType.PAYLOAD:
            if index != last:
                raise fail("payload-not-last", "a payload block that is not the last block",
                           block=number, rule="RFC 9171 §4.1: exactly one payload block, the last")
            if number != 1:
                raise fail("payload-number", f"payload block numbered {number}", block=number,
                           rule="RFC 9171 §4.1: the block number of the payload block is always 1")
        elif kind == 0:
            raise fail("block-type-reserved", "block type 0", block=number, rule="RFC 9171 §9.1")
        elif kind in (BlockType.PREVIOUS_NODE, BlockType.BUNDLE_AGE, BlockType.HOP_COUNT):
            if kind in singles:
                raise fail("extension-duplicate", f"second block of type {kind}", block=number,
                           rule=f"RFC 9171 §4.4.{(6, 7, 10).index(kind) + 1}: at most one")
            singles[kind] = number
            _check_extension_data(block, fail)
    if blocks[last].block_type != BlockType.PAYLOAD:
        raise fail("payload-missing", "the last block is not a payload block",
                   block=blocks[last].number, rule="RFC 9171 §4.1: the last block is the payload")
    _check_primary_rules(bundle, singles, fail)


def _check_extension_data(block: CanonicalBlock, fail: _Fail) -> None:
    try:
        if block.block_type == BlockType.PREVIOUS_NODE:
            decode_previous_node(block.data, block.number)
        elif block.block_type == BlockType.BUNDLE_AGE:
            decode_bundle_age(block.data, block.number)
        else:
            decode_hop_count(block.data, block.number)
    except BundleError as exc:
        if fail is BundleError:
            raise
        raise fail(exc.code, exc.detail, block=exc.block, rule=exc.rule) from None


def _check_primary_rules(bundle: Bundle, singles: dict[int, int], fail: _Fail) -> None:
    primary = bundle.primary
    flags = int(primary.flags)
    if primary.crc_type == CrcType.NONE and not any(
        b.block_type == BlockType.BIB and _bib_targets_primary(b) for b in bundle.blocks
    ):
        raise fail("primary-crc-missing", "CRC type 0 and no BIB targets the primary block",
                   block=0, rule="RFC 9171 §4.3.1: a CRC SHALL be present unless a BIB targets it")
    if primary.creation.time == 0 and BlockType.BUNDLE_AGE not in singles:
        raise fail("bundle-age-missing", "creation time 0 without a Bundle Age block", block=None,
                   rule="RFC 9171 §4.4.2: creation time zero requires exactly one Bundle Age block")
    anonymous = primary.source.is_null
    if flags & _ADMIN_RECORD and flags & _REPORT_REQUESTS:
        raise fail("admin-record-reports", "administrative record requesting status reports",
                   block=0, rule="RFC 9171 §4.2.3: all status report request flags MUST be zero")
    if anonymous and (flags & _REPORT_REQUESTS or not flags & _MUST_NOT_FRAGMENT):
        raise fail("anonymous-flags", "null source needs must-not-fragment and no report requests",
                   block=0, rule="RFC 9171 §4.2.3: anonymous bundles are not identifiable")
    if anonymous or flags & _ADMIN_RECORD:
        for block in bundle.blocks:
            if int(block.flags) & _REPORT_IF_UNPROCESSABLE:
                raise fail("block-report-flag", "report-if-unprocessable set on an admin or "
                           "anonymous bundle", block=block.number,
                           rule="RFC 9171 §4.2.4: that flag MUST be zero in such bundles")
    if flags & _IS_FRAGMENT:
        offset = primary.fragment_offset or 0
        length = len(bundle.blocks[-1].data)
        total = primary.total_adu_length or 0
        if length == 0 or offset + length > total:
            raise fail("fragment-range", f"payload of {length} bytes at offset {offset} in an ADU "
                       f"of {total}", block=0,
                       rule="RFC 9171 §3.1, §5.8: a fragment carries a non-empty part of the ADU")


# --- codec -------------------------------------------------------------------------------


def encode_bundle(bundle: Bundle) -> bytes:
    """The bytes of ``bundle`` (§4.1); raises :class:`InvalidBundle` if it breaks a §4 rule."""
    check_bundle(bundle, InvalidBundle)
    parts = [b"\x9f"]
    parts += primary_block_parts(bundle.primary)
    for block in bundle.blocks:
        parts += canonical_block_parts(block)
    parts.append(b"\xff")
    return b"".join(parts)


def decode_bundle(data: bytes, *, limits: Limits = BUNDLE_LIMITS, verify_crc: bool = True
                  ) -> Bundle:
    """Decode and check a received bundle; raise :class:`BundleError` (naming block and rule)."""
    return decode_bundle_offsets(data, limits=limits, verify_crc=verify_crc)[0]


def decode_bundle_offsets(data: bytes, *, limits: Limits = BUNDLE_LIMITS, verify_crc: bool = True,
                          common: bool = True) -> tuple[Bundle, tuple[int, ...]]:
    """:func:`decode_bundle`, and where each block starts in ``data``: the primary block's
    offset, each canonical block's, then the break's (so block ``i`` spans
    ``offsets[i]:offsets[i + 1]``). A forwarding node copies the blocks it does not change
    from these spans instead of scanning the bytes again.

    ``common``: read blocks of the common shape with the one-pass readers (same result;
    anything else, errors included, goes to the general readers)."""
    if type(data) is not bytes:
        data = bytes(data)
    end = len(data)
    if end > limits.max_size:
        raise BundleError("limit", f"{end} bytes (limit {limits.max_size})", rule="bundle limits")
    common = common and verify_crc
    walk = _accel.walk
    if common and walk is not None:
        # The common shape in one C pass (bpv7/accel.py); None: the Python readers decide
        # (the walk takes only bytes starting 0x9f, so the check below still names that).
        spec = (
            _DEFAULT_WALK_SPEC if limits is BUNDLE_LIMITS
            else _walk_spec(limits.max_container_items, limits.max_string_length)
        )  # fmt: skip
        walked = walk(spec, data) if spec is not None else None
        if walked is not None:  # the §4 rules were checked there too
            return walked  # type: ignore[no-any-return]
    if not end or data[0] != 0x9F:
        raise BundleError("not-indefinite-array", "a bundle starts with 0x9f",
                          rule="RFC 9171 §4.1: a CBOR indefinite-length array")
    found = read_primary_block_common(data, 1, end) if common else None
    primary, pos = found if found is not None else read_primary_block(data, 1, end, verify_crc)
    offsets = [1, pos]
    blocks: list[CanonicalBlock] = []
    max_blocks = limits.max_container_items
    max_data = limits.max_string_length
    while True:
        if pos >= end:
            raise BundleError("truncated", "the bundle has no break stop code", rule="RFC 9171 §4.1")
        if data[pos] == 0xFF:
            pos += 1
            break
        if len(blocks) >= max_blocks:
            raise BundleError("limit", f"more than {max_blocks} blocks", rule="bundle limits")
        read = read_canonical_block_common(data, pos, end, max_data) if common else None
        if read is None:
            read = read_canonical_block(data, pos, end, max_data, len(blocks) + 1, verify_crc)
        block, pos = read
        blocks.append(block)
        offsets.append(pos)
    if pos != end:
        raise BundleError("trailing-bytes", f"{end - pos} bytes after the break",
                          rule="RFC 9171 §4.1: the break terminates the bundle")
    if not blocks:
        raise BundleError("too-few-blocks", "no canonical blocks", rule="RFC 9171 §4.1")
    bundle = Bundle(primary, tuple(blocks))
    check_bundle(bundle, BundleError)
    return bundle, tuple(offsets)


#: The C walk's specs by (max blocks, max data) — one in practice (BUNDLE_LIMITS); bounded.
_WALK_SPECS: dict[tuple[int, int], tuple[object, ...] | None] = {}


def _walk_spec(max_blocks: int, max_data: int) -> tuple[object, ...] | None:
    key = (max_blocks, max_data)
    try:
        return _WALK_SPECS[key]
    except KeyError:
        spec = _accel.spec_for(Bundle, max_blocks, max_data)
        if len(_WALK_SPECS) < 16:
            _WALK_SPECS[key] = spec
        return spec


#: The spec for :data:`BUNDLE_LIMITS`, every node's (taken without a call on each decode).
_DEFAULT_WALK_SPEC: Final = _walk_spec(
    BUNDLE_LIMITS.max_container_items, BUNDLE_LIMITS.max_string_length
)


# --- reception (§5.6 step 4) ---------------------------------------------------------------


@attrs.frozen(slots=True)
class ReceptionOutcome:
    """The result of §5.6 step 4 over the blocks a node cannot process.

    ``bundle`` is what to keep (with discarded blocks removed), or ``None`` if the bundle must be
    deleted for reason "block unsupported" (11); ``report`` says a reception status report with
    that reason is asked for; ``discarded`` lists the numbers of blocks removed.
    """

    bundle: Bundle | None
    report: bool
    discarded: tuple[int, ...] = ()

    @property
    def delete(self) -> bool:
        return self.bundle is None


def process_unprocessable_blocks(bundle: Bundle, processable: Container[int] = KNOWN_BLOCK_TYPES
                                 ) -> ReceptionOutcome:
    """Apply the block processing control flags (§4.2.4) as §5.6 step 4 orders."""
    report = False
    discarded: list[int] = []
    for block in bundle.blocks:
        if block.block_type in processable:
            continue
        flags = int(block.flags)
        report = report or bool(flags & _REPORT_IF_UNPROCESSABLE)
        if flags & _DELETE_IF_UNPROCESSABLE:
            return ReceptionOutcome(None, report, tuple(discarded))
        if flags & _DISCARD_IF_UNPROCESSABLE:
            discarded.append(block.number)
    if discarded:
        gone = set(discarded)
        bundle = Bundle(bundle.primary, tuple(b for b in bundle.blocks if b.number not in gone))
    return ReceptionOutcome(bundle, report, tuple(discarded))

