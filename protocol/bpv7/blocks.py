"""Primary and canonical blocks (RFC 9171 §4.3) and their CBOR with CRC.

Theory of operation
-------------------
A block is a definite-length CBOR array whose last item, when the CRC type is not 0, is the CRC
as a 2- or 4-byte byte string (§4.2.2). The CRC covers every byte of the block with that field's
content zeroed (§4.3.1, §4.3.2), so the encoder builds the block's bytes up to the CRC field,
runs the CRC over them and over the zeroed field, and appends the real field — no generic CBOR
pass and no second copy of the block. The decoder reads the heads directly
(:mod:`fleetwire.protocol.bpv7.wire`), remembers where the CRC field starts, and checks the CRC
over the bytes it was given.

These classes hold *values*; rules that need the whole bundle (block numbers, the payload's
place, extension-block counts, flags that depend on the source) live in
:mod:`fleetwire.protocol.bpv7.bundle`. Field ranges are checked when a block is encoded, not
when the value is built, so decoding stays cheap: the decoder only builds values it checked.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from .crc import (
    ZERO_FIELD,
    CrcType,
    crc32c,
    x25_finish,
    x25_update,
)
from .eid import DtnEid, Eid, IpnEid, NullEid, read_eid
from .errors import BlockRef, BundleError, EidError, InvalidBundle, InvalidEid
from .wire import UINT64_MAX, WireError, head, read_bytes, read_head, read_uint, uint

__all__ = [
    "BundleFlags",
    "BlockFlags",
    "BlockType",
    "CreationTimestamp",
    "PrimaryBlock",
    "CanonicalBlock",
    "encode_primary_block",
    "encode_canonical_block",
    "decode_primary_block",
    "decode_canonical_block",
    "read_primary_block",
    "read_canonical_block",
    "MAX_EID_LENGTH",
    "BP_VERSION",
]

BP_VERSION: Final = 7
#: Longest EID SSP text we accept (bytes); a bound against hostile input, far above real names.
MAX_EID_LENGTH: Final = 1024

_RULE_PRIMARY: Final = "RFC 9171 §4.3.1"
_RULE_CANONICAL: Final = "RFC 9171 §4.3.2"
_RULE_CRC: Final = "RFC 9171 §4.2.2"
_RULE_DETERMINISTIC: Final = "RFC 9171 §4.1 (RFC 8949 §4.2.1)"


class BundleFlags(enum.IntFlag):
    """Bundle processing control flags (§4.2.3); unknown bits are kept and ignored."""

    NONE = 0
    IS_FRAGMENT = 0x000001
    ADMIN_RECORD = 0x000002
    MUST_NOT_FRAGMENT = 0x000004
    ACK_REQUESTED = 0x000020
    STATUS_TIME_REQUESTED = 0x000040
    REPORT_RECEPTION = 0x004000
    REPORT_FORWARDING = 0x010000
    REPORT_DELIVERY = 0x020000
    REPORT_DELETION = 0x040000


#: All status report request flags (§4.2.3).
STATUS_REPORT_REQUESTS: Final = (
    BundleFlags.REPORT_RECEPTION
    | BundleFlags.REPORT_FORWARDING
    | BundleFlags.REPORT_DELIVERY
    | BundleFlags.REPORT_DELETION
)


class BlockFlags(enum.IntFlag):
    """Block processing control flags (§4.2.4); unknown bits are kept and ignored."""

    NONE = 0
    REPLICATE = 0x01
    REPORT_IF_UNPROCESSABLE = 0x02
    DELETE_BUNDLE_IF_UNPROCESSABLE = 0x04
    DISCARD_IF_UNPROCESSABLE = 0x10


class BlockType(enum.IntEnum):
    """Block type codes this codec knows (§4.3.2, §4.4, §9.1; RFC 9172 §3.3)."""

    PAYLOAD = 1
    PREVIOUS_NODE = 6
    BUNDLE_AGE = 7
    HOP_COUNT = 10
    BIB = 11  # Block Integrity Block (BPSec), kept opaque
    BCB = 12  # Block Confidentiality Block (BPSec), kept opaque


@attrs.frozen(slots=True, order=True)
class CreationTimestamp:
    """Creation time (DTN time: ms since 2000-01-01T00:00:00Z, 0 = unknown) and sequence (§4.2.7)."""

    time: int
    sequence: int = 0


# Plain ints: ``int & IntFlag`` goes through the enum machinery and costs a microsecond.
_IS_FRAGMENT: Final = int(BundleFlags.IS_FRAGMENT)
_ADMIN_RECORD: Final = int(BundleFlags.ADMIN_RECORD)


@attrs.frozen(slots=True)
class PrimaryBlock:
    """The primary block (§4.3.1). Fragment fields are present iff the IS_FRAGMENT flag is set."""

    destination: Eid
    source: Eid
    report_to: Eid
    creation: CreationTimestamp
    lifetime: int
    #: :class:`BundleFlags` bits; kept as the int received, unknown bits included (§4.2.3).
    flags: int = BundleFlags.NONE
    crc_type: CrcType = CrcType.CRC32C
    fragment_offset: int | None = None
    total_adu_length: int | None = None

    @property
    def is_fragment(self) -> bool:
        return bool(int(self.flags) & _IS_FRAGMENT)

    @property
    def is_admin_record(self) -> bool:
        return bool(int(self.flags) & _ADMIN_RECORD)


@attrs.frozen(slots=True)
class CanonicalBlock:
    """A canonical block (§4.3.2): payload, extension or security block; ``data`` is its bstr."""

    block_type: int
    number: int
    data: bytes
    #: :class:`BlockFlags` bits; kept as the int received, unknown bits included (§4.2.4).
    flags: int = BlockFlags.NONE
    crc_type: CrcType = CrcType.CRC32C


# --- encoding ----------------------------------------------------------------------------


def _crc_field(body_parts: list[bytes], crc_type: CrcType) -> bytes:
    """The CRC field for a block whose bytes before the field are ``body_parts``."""
    zeroed = ZERO_FIELD[crc_type]
    if crc_type == CrcType.CRC32C:
        value = 0
        for part in body_parts:
            value = crc32c(part, value)
        return b"\x44" + crc32c(zeroed, value).to_bytes(4, "big")
    register = x25_update(b"".join(body_parts) + zeroed)
    return b"\x42" + x25_finish(register).to_bytes(2, "big")


def _check_uint(value: object, what: str, block: BlockRef, rule: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT64_MAX:
        raise InvalidBundle("field-range", f"{what} {value!r} is not a CBOR unsigned integer",
                            block=block, rule=rule)


def _check_crc_type(crc_type: int, block: BlockRef) -> CrcType:
    try:
        return CrcType(crc_type)
    except ValueError:
        raise InvalidBundle("crc-type", f"CRC type {crc_type!r} is not 0, 1 or 2", block=block,
                            rule="RFC 9171 §4.2.1") from None


def primary_block_parts(block: PrimaryBlock) -> list[bytes]:
    """The CBOR of ``block`` as a list of byte strings (CRC included); checks field ranges."""
    crc_type = _check_crc_type(block.crc_type, 0)
    flags = int(block.flags)
    creation = block.creation
    for value, what in (
        (flags, "bundle processing flags"),
        (creation.time, "creation time"),
        (creation.sequence, "sequence number"),
        (block.lifetime, "lifetime"),
    ):
        _check_uint(value, what, 0, _RULE_PRIMARY)
    for eid, what in ((block.destination, "destination"), (block.source, "source"),
                      (block.report_to, "report-to")):
        if not isinstance(eid, (NullEid, DtnEid, IpnEid)):
            raise InvalidBundle("eid-type", f"{what} is not an EID value", block=0, rule=_RULE_PRIMARY)
    parts = [b""]
    parts += (b"\x07", uint(flags), uint(crc_type), block.destination.wire, block.source.wire,
              block.report_to.wire, b"\x82", uint(creation.time), uint(creation.sequence),
              uint(block.lifetime))
    count = 8
    if flags & 1:  # BundleFlags.IS_FRAGMENT
        if block.fragment_offset is None or block.total_adu_length is None:
            raise InvalidBundle("fragment-fields", "a fragment needs fragment offset and total ADU length",
                                block=0, rule=_RULE_PRIMARY)
        _check_uint(block.fragment_offset, "fragment offset", 0, _RULE_PRIMARY)
        _check_uint(block.total_adu_length, "total ADU length", 0, _RULE_PRIMARY)
        parts += (uint(block.fragment_offset), uint(block.total_adu_length))
        count = 10
    elif block.fragment_offset is not None or block.total_adu_length is not None:
        raise InvalidBundle("fragment-fields", "fragment fields without the is-fragment flag",
                            block=0, rule=_RULE_PRIMARY)
    if crc_type:
        count += 1
    parts[0] = _SMALL_ARRAY[count]
    if crc_type:
        parts.append(_crc_field(parts, crc_type))
    return parts


def canonical_block_parts(block: CanonicalBlock) -> list[bytes]:
    """The CBOR of ``block`` as a list of byte strings (CRC included); checks field ranges."""
    crc_type = _check_crc_type(block.crc_type, block.number)
    flags = int(block.flags)
    _check_uint(block.block_type, "block type", block.number, _RULE_CANONICAL)
    _check_uint(block.number, "block number", block.number, _RULE_CANONICAL)
    _check_uint(flags, "block processing flags", block.number, _RULE_CANONICAL)
    data = block.data
    if type(data) is not bytes:
        if not isinstance(data, (bytearray, memoryview)):
            raise InvalidBundle("block-data", "block data must be bytes", block=block.number,
                                rule=_RULE_CANONICAL)
        data = bytes(data)
    prefix = (
        (b"\x86" if crc_type else b"\x85")
        + uint(block.block_type) + uint(block.number) + uint(flags) + uint(crc_type)
        + head(2, len(data))
    )
    if not crc_type:
        return [prefix, data]
    if crc_type == CrcType.CRC32C:
        value = crc32c(b"\x44\x00\x00\x00\x00", crc32c(data, crc32c(prefix)))
        return [prefix, data, b"\x44" + value.to_bytes(4, "big")]
    register = x25_update(b"\x42\x00\x00", x25_update(data, x25_update(prefix)))
    return [prefix, data, b"\x42" + x25_finish(register).to_bytes(2, "big")]


_SMALL_ARRAY: Final = tuple(bytes((0x80 | n,)) for n in range(24))
_CRC_TYPES: Final = tuple(CrcType)


def encode_primary_block(block: PrimaryBlock) -> bytes:
    """The CBOR of a primary block with its CRC (§4.3.1)."""
    return b"".join(primary_block_parts(block))


def encode_canonical_block(block: CanonicalBlock) -> bytes:
    """The CBOR of a canonical block with its CRC (§4.3.2)."""
    return b"".join(canonical_block_parts(block))


# --- decoding ----------------------------------------------------------------------------


def _fail(exc: WireError | InvalidEid, block: BlockRef, rule: str) -> BundleError:
    if isinstance(exc, InvalidEid):
        return EidError(exc.code, exc.detail, block=block, rule=exc.rule)
    if exc.code == "not-deterministic":
        rule = _RULE_DETERMINISTIC
    elif exc.code == "indefinite":  # allowed by §4.1, not (yet) accepted inside blocks here
        rule = "RFC 9171 §4.1 allows it; this codec takes indefinite length only for the bundle"
    return BundleError(exc.code, exc.message, block=block, rule=rule)


def _check_crc(data: bytes, start: int, pos: int, end: int, crc_type: int, block: BlockRef,
               verify: bool) -> int:
    """Check the CRC field at ``pos`` of the block that starts at ``start``; return its end."""
    size = 2 * crc_type  # CRC_SIZE: 2 bytes for type 1, 4 for type 2
    if pos >= end or data[pos] != 0x40 | size:
        raise BundleError("crc-field", f"CRC must be a byte string of {size} bytes", block=block,
                          rule=_RULE_CRC)
    after = pos + 1 + size
    if after > end:
        raise BundleError("truncated", "CRC field runs past the end", block=block, rule=_RULE_CRC)
    if verify:
        if crc_type == CrcType.CRC32C:
            computed = crc32c(b"\x00\x00\x00\x00", crc32c(memoryview(data)[start : pos + 1]))
        else:
            computed = x25_finish(x25_update(b"\x00\x00", x25_update(data[start : pos + 1])))
        received = int.from_bytes(data[pos + 1 : after], "big")
        if computed != received:
            raise BundleError(
                "crc-mismatch",
                f"CRC {received:#0{2 * size + 2}x} received, {computed:#0{2 * size + 2}x} computed",
                block=block, rule="RFC 9171 §4.3, §5.6 step 3",
            )
    return after


def read_primary_block(data: bytes, pos: int, end: int, verify_crc: bool = True
                       ) -> tuple[PrimaryBlock, int]:
    """Decode the primary block at ``pos``; return it and the offset after it."""
    start = pos
    try:
        count, pos = read_head(data, pos, end, 4)
        version, pos = read_uint(data, pos, end)
        if version != BP_VERSION:
            raise BundleError("version", f"version {version}, not 7", block=0, rule=_RULE_PRIMARY)
        flags, pos = read_uint(data, pos, end)
        crc_type, pos = read_uint(data, pos, end)
        if crc_type > 2:
            raise BundleError("crc-type", f"CRC type {crc_type} is not 0, 1 or 2", block=0,
                              rule="RFC 9171 §4.2.1")
        fragment = flags & 1  # BundleFlags.IS_FRAGMENT (a plain int: IntFlag ops are slow)
        expected = 8 + (2 if fragment else 0) + (1 if crc_type else 0)
        if count != expected:
            raise BundleError("block-length", f"{count} items; flags and CRC type call for {expected}",
                              block=0, rule=_RULE_PRIMARY)
        destination, pos = read_eid(data, pos, end, MAX_EID_LENGTH)
        source, pos = read_eid(data, pos, end, MAX_EID_LENGTH)
        report_to, pos = read_eid(data, pos, end, MAX_EID_LENGTH)
        pair, pos = read_head(data, pos, end, 4)
        if pair != 2:
            raise BundleError("creation-timestamp", f"creation timestamp of {pair} items, not 2",
                              block=0, rule="RFC 9171 §4.2.7")
        time, pos = read_uint(data, pos, end)
        sequence, pos = read_uint(data, pos, end)
        lifetime, pos = read_uint(data, pos, end)
        offset = total = None
        if fragment:
            offset, pos = read_uint(data, pos, end)
            total, pos = read_uint(data, pos, end)
    except (WireError, InvalidEid) as exc:
        raise _fail(exc, 0, _RULE_PRIMARY) from None
    if crc_type:
        pos = _check_crc(data, start, pos, end, crc_type, 0, verify_crc)
    block = PrimaryBlock(
        destination, source, report_to, CreationTimestamp(time, sequence), lifetime,
        flags, _CRC_TYPES[crc_type], offset, total,
    )
    return block, pos


def read_canonical_block(data: bytes, pos: int, end: int, max_data: int, index: int = 0,
                         verify_crc: bool = True) -> tuple[CanonicalBlock, int]:
    """Decode the canonical block at ``pos`` (the ``index``-th block, for messages)."""
    start = pos
    where: BlockRef = f"#{index}"
    try:
        count, pos = read_head(data, pos, end, 4)
        block_type, pos = read_uint(data, pos, end)
        number, pos = read_uint(data, pos, end)
        where = number
        flags, pos = read_uint(data, pos, end)
        crc_type, pos = read_uint(data, pos, end)
        if crc_type > 2:
            raise BundleError("crc-type", f"CRC type {crc_type} is not 0, 1 or 2", block=where,
                              rule="RFC 9171 §4.2.1")
        if count != (6 if crc_type else 5):
            raise BundleError("block-length", f"{count} items with CRC type {crc_type}",
                              block=where, rule=_RULE_CANONICAL)
    except WireError as exc:
        raise _fail(exc, where, _RULE_CANONICAL) from None
    try:
        begin, pos = read_bytes(data, pos, end, max_data)
    except WireError as exc:
        if exc.code in ("wrong-type", "indefinite"):
            raise BundleError("block-data", "block-type-specific data must be a definite byte string",
                              block=where, rule=_RULE_CANONICAL) from None
        raise _fail(exc, where, _RULE_CANONICAL) from None
    stop = pos
    if crc_type:
        pos = _check_crc(data, start, pos, end, crc_type, where, verify_crc)
    block = CanonicalBlock(block_type, number, data[begin:stop], flags, _CRC_TYPES[crc_type])
    return block, pos


# --- the common shapes in one pass --------------------------------------------------------
#
# Nearly every block a fleet node reads has one-byte fields and a CRC-32C. These readers take
# exactly that shape in one pass and return None for anything else — another shape, a CRC that
# does not match, a truncation — so that the general readers above decide it, errors included:
# the result is the same either way (tests/test_agent_fast_paths.py).

_ZERO_CRC: Final = b"\x00\x00\x00\x00"


def read_primary_block_common(data: bytes, pos: int, end: int
                              ) -> tuple[PrimaryBlock, int] | None:  # fmt: skip
    """:func:`read_primary_block` of a CRC-32C, non-fragment primary block with flags below
    24 (no status reports asked), or None."""
    if pos + 4 > end or data[pos] != 0x89 or data[pos + 1] != 7 or data[pos + 3] != 2:
        return None
    flags = data[pos + 2]
    if flags >= 24 or flags & 1:
        return None
    try:
        destination, at = read_eid(data, pos + 4, end, MAX_EID_LENGTH)
        source, at = read_eid(data, at, end, MAX_EID_LENGTH)
        report_to, at = read_eid(data, at, end, MAX_EID_LENGTH)
        if at >= end or data[at] != 0x82:
            return None
        time, at = read_uint(data, at + 1, end)
        sequence, at = read_uint(data, at, end)
        lifetime, at = read_uint(data, at, end)
    except (WireError, InvalidEid):
        return None
    if at + 5 > end or data[at] != 0x44:
        return None
    if crc32c(_ZERO_CRC, crc32c(memoryview(data)[pos : at + 1])) != int.from_bytes(
        data[at + 1 : at + 5], "big"
    ):
        return None
    block = PrimaryBlock(destination, source, report_to, CreationTimestamp(time, sequence),
                         lifetime, flags, CrcType.CRC32C)  # fmt: skip
    return block, at + 5


def read_canonical_block_common(data: bytes, pos: int, end: int, max_data: int
                                ) -> tuple[CanonicalBlock, int] | None:  # fmt: skip
    """:func:`read_canonical_block` of a CRC-32C block whose type, number and flags are
    below 24 and whose data is shorter than 64 KiB, or None."""
    if pos + 6 > end or data[pos] != 0x86 or data[pos + 4] != 2:
        return None
    block_type, number, flags = data[pos + 1], data[pos + 2], data[pos + 3]
    if block_type >= 24 or number >= 24 or flags >= 24:
        return None
    initial = data[pos + 5]
    if 0x40 <= initial < 0x58:
        length, begin = initial - 0x40, pos + 6
    elif initial == 0x58 and pos + 7 <= end and data[pos + 6] >= 24:
        length, begin = data[pos + 6], pos + 7
    elif initial == 0x59 and pos + 8 <= end:
        length, begin = int.from_bytes(data[pos + 6 : pos + 8], "big"), pos + 8
        if length < 0x100:
            return None
    else:
        return None
    stop = begin + length
    if length > max_data or stop + 5 > end or data[stop] != 0x44:
        return None
    if crc32c(_ZERO_CRC, crc32c(memoryview(data)[pos : stop + 1])) != int.from_bytes(
        data[stop + 1 : stop + 5], "big"
    ):
        return None
    return CanonicalBlock(block_type, number, data[begin:stop], flags, CrcType.CRC32C), stop + 5


def _whole(data: bytes | bytearray | memoryview) -> bytes:
    return data if type(data) is bytes else bytes(data)


def decode_primary_block(data: bytes, verify_crc: bool = True) -> PrimaryBlock:
    """Decode exactly one primary block (no bundle around it)."""
    data = _whole(data)
    block, pos = read_primary_block(data, 0, len(data), verify_crc)
    if pos != len(data):
        raise BundleError("trailing-bytes", f"{len(data) - pos} bytes after the block", block=0,
                          rule=_RULE_PRIMARY)
    return block


def decode_canonical_block(data: bytes, max_data: int = 1 << 26, verify_crc: bool = True
                           ) -> CanonicalBlock:
    """Decode exactly one canonical block (no bundle around it)."""
    data = _whole(data)
    block, pos = read_canonical_block(data, 0, len(data), max_data, 0, verify_crc)
    if pos != len(data):
        raise BundleError("trailing-bytes", f"{len(data) - pos} bytes after the block",
                          block=block.number, rule=_RULE_CANONICAL)
    return block


__all__ += ["STATUS_REPORT_REQUESTS", "primary_block_parts", "canonical_block_parts",
            "read_canonical_block_common", "read_primary_block_common"]
