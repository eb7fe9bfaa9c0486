"""Extension blocks of RFC 9171 §4.4 and what to do with blocks we cannot process (§4.2.4, §5.6).

Previous Node (type 6) carries a node ID, Bundle Age (type 7) an unsigned count of milliseconds,
Hop Count (type 10) ``[hop limit, hop count]``; each block-type-specific data field is the CBOR of
that value (§4.2.8). The readers here refuse anything but exactly that CBOR, in deterministic form.

Blocks of any other type are carried as opaque :class:`~.blocks.CanonicalBlock` values (BPSec's
BIB and BCB included). When a node cannot process one, its block processing control flags say
what to do (§4.2.4, applied by §5.6 step 4): :func:`unprocessable_block_action` reads them.
"""

from __future__ import annotations

from typing import Final

import attrs

from .blocks import BlockFlags, BlockType, CanonicalBlock
from .crc import CrcType
from .eid import Eid, read_eid
from .errors import BlockRef, BundleError, EidError, InvalidBundle, InvalidEid
from .wire import WireError, read_head, read_uint, uint

__all__ = [
    "HopCount",
    "UnprocessableAction",
    "payload_block",
    "previous_node_block",
    "bundle_age_block",
    "hop_count_block",
    "decode_previous_node",
    "decode_bundle_age",
    "decode_hop_count",
    "unprocessable_block_action",
]

_RULE_PREVIOUS: Final = "RFC 9171 §4.4.1"
_RULE_AGE: Final = "RFC 9171 §4.4.2"
_RULE_HOPS: Final = "RFC 9171 §4.4.3"
_MAX_EID: Final = 1024


@attrs.frozen(slots=True)
class HopCount:
    """Hop limit (1..255, §4.4.3) and the hops taken so far."""

    limit: int
    count: int = 0

    @property
    def exceeded(self) -> bool:
        """True when the bundle should be deleted for "hop limit exceeded" (§4.4.3)."""
        return self.count > self.limit

    def next_hop(self) -> HopCount:
        """The value to carry after one more hop (§4.4.3: count increases by 1 per hop)."""
        return HopCount(self.limit, self.count + 1)


def payload_block(data: bytes, crc_type: CrcType = CrcType.CRC32C,
                  flags: BlockFlags = BlockFlags.NONE) -> CanonicalBlock:
    """The payload block: type 1, number 1 (§4.1, §4.3.2)."""
    return CanonicalBlock(BlockType.PAYLOAD, 1, data, flags, crc_type)


def previous_node_block(number: int, node: Eid, crc_type: CrcType = CrcType.CRC32C,
                        flags: BlockFlags = BlockFlags.NONE) -> CanonicalBlock:
    """A Previous Node block naming the forwarding node (§4.4.1)."""
    return CanonicalBlock(BlockType.PREVIOUS_NODE, number, node.wire, flags, crc_type)


def bundle_age_block(number: int, age_ms: int, crc_type: CrcType = CrcType.CRC32C,
                     flags: BlockFlags = BlockFlags.NONE) -> CanonicalBlock:
    """A Bundle Age block (§4.4.2): milliseconds since creation."""
    if type(age_ms) is not int or age_ms < 0 or age_ms >> 64:
        raise InvalidBundle("extension-data", f"bundle age {age_ms!r}", block=number, rule=_RULE_AGE)
    return CanonicalBlock(BlockType.BUNDLE_AGE, number, uint(age_ms), flags, crc_type)


def hop_count_block(number: int, hops: HopCount, crc_type: CrcType = CrcType.CRC32C,
                    flags: BlockFlags = BlockFlags.NONE) -> CanonicalBlock:
    """A Hop Count block (§4.4.3)."""
    if type(hops.limit) is not int or not 1 <= hops.limit <= 255:
        raise InvalidBundle("hop-limit", f"hop limit {hops.limit!r} not in 1..255", block=number,
                            rule=_RULE_HOPS)
    if type(hops.count) is not int or hops.count < 0 or hops.count >> 64:
        raise InvalidBundle("extension-data", f"hop count {hops.count!r}", block=number,
                            rule=_RULE_HOPS)
    return CanonicalBlock(BlockType.HOP_COUNT, number, b"\x82" + uint(hops.limit) + uint(hops.count),
                          flags, crc_type)


def _bad(block: BlockRef, rule: str, exc: WireError | InvalidEid | None = None,
         message: str = "") -> BundleError:
    if isinstance(exc, InvalidEid):
        return EidError(exc.code, exc.detail, block=block, rule=exc.rule)
    detail = exc.message if exc is not None else message
    return BundleError("extension-data", detail, block=block, rule=rule)


#: Decoded Previous Node and Hop Count data by their bytes. A node reads the same few values
#: again and again (a neighbour's node ID, a count below the limit): the results are frozen,
#: so one decoding serves every bundle that carries the same bytes. Bounded, so hostile input
#: cannot grow them; faults are never cached (each is raised again, with its block).
_PREVIOUS_MEMO: dict[bytes, Eid] = {}
_HOPS_MEMO: dict[bytes, HopCount] = {}
_MEMO_MAX: Final = 4096


def decode_previous_node(data: bytes, block: BlockRef = None) -> Eid:
    """The node ID in a Previous Node block's data (§4.4.1)."""
    found = _PREVIOUS_MEMO.get(data) if type(data) is bytes else None
    if found is not None:
        return found
    node = _decode_previous_node(data, block)
    if len(_PREVIOUS_MEMO) < _MEMO_MAX and type(data) is bytes:
        _PREVIOUS_MEMO[data] = node
    return node


def _decode_previous_node(data: bytes, block: BlockRef) -> Eid:
    try:
        node, pos = read_eid(data, 0, len(data), _MAX_EID)
    except (WireError, InvalidEid) as exc:
        raise _bad(block, _RULE_PREVIOUS, exc) from None
    if pos != len(data):
        raise _bad(block, _RULE_PREVIOUS, message="bytes after the node ID")
    return node


def decode_bundle_age(data: bytes, block: BlockRef = None) -> int:
    """The age in milliseconds in a Bundle Age block's data (§4.4.2)."""
    try:
        age, pos = read_uint(data, 0, len(data))
    except WireError as exc:
        raise _bad(block, _RULE_AGE, exc) from None
    if pos != len(data):
        raise _bad(block, _RULE_AGE, message="bytes after the age")
    return age


def decode_hop_count(data: bytes, block: BlockRef = None) -> HopCount:
    """The hop limit and count in a Hop Count block's data (§4.4.3)."""
    found = _HOPS_MEMO.get(data) if type(data) is bytes else None
    if found is not None:
        return found
    hops = _decode_hop_count(data, block)
    if len(_HOPS_MEMO) < _MEMO_MAX and type(data) is bytes:
        _HOPS_MEMO[data] = hops
    return hops


def _decode_hop_count(data: bytes, block: BlockRef) -> HopCount:
    end = len(data)
    try:
        items, pos = read_head(data, 0, end, 4)
        if items != 2:
            raise _bad(block, _RULE_HOPS, message=f"hop count array of {items} items, not 2")
        limit, pos = read_uint(data, pos, end)
        count, pos = read_uint(data, pos, end)
    except WireError as exc:
        raise _bad(block, _RULE_HOPS, exc) from None
    if pos != end:
        raise _bad(block, _RULE_HOPS, message="bytes after the hop count")
    if not 1 <= limit <= 255:
        raise BundleError("hop-limit", f"hop limit {limit} not in 1..255", block=block,
                          rule=_RULE_HOPS)
    return HopCount(limit, count)


@attrs.frozen(slots=True)
class UnprocessableAction:
    """What §5.6 step 4 asks for when this node cannot process a block, per its flags (§4.2.4).

    ``report``: send a reception status report with reason "block unsupported" (if status
    reporting is enabled). ``delete_bundle``: delete the bundle for "block unsupported".
    ``discard_block``: remove the block and go on (only when the bundle is not deleted).
    Otherwise the block is kept and forwarded as it is.
    """

    report: bool
    delete_bundle: bool
    discard_block: bool


def unprocessable_block_action(block: CanonicalBlock) -> UnprocessableAction:
    """Apply §4.2.4 to a block this node cannot process."""
    flags = int(block.flags)
    delete = bool(flags & BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE)
    return UnprocessableAction(
        report=bool(flags & BlockFlags.REPORT_IF_UNPROCESSABLE),
        delete_bundle=delete,
        discard_block=not delete and bool(flags & BlockFlags.DISCARD_IF_UNPROCESSABLE),
    )
