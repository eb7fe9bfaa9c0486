"""Coordination messages in and out of BPv7 bundles, and what the store keeps about each.

Pure helpers between :mod:`fleetwire.protocol.bpv7` and the node: no Trio, no I/O. A signed
message travels as the payload of a bundle from ``ipn:<issuer>.<service>`` to
``ipn:<destination>.<service>`` with a Hop Count block (RFC 9171 §4.4.3) and CRC-32C on every
block (§4.2.1); a node forwarding it adds or replaces a Previous Node block (§4.4.1) and
counts the hop.

What the store dedupes on is chosen so that **no unverified copy can suppress a genuine one**
(spec §10, "Forgery"): a relay does not verify signatures, and the destination verifies only
at delivery, after the store has taken the bundle. So both store keys cover the bytes that a
forger cannot reproduce without the signing key:

* the bundle key is the bundle id (source, creation timestamp, RFC 9171 §5.4) *plus a digest
  of the payload*: a forged bundle that reuses a genuine bundle's id (ids are predictable) is
  another bundle to the store, not a duplicate of the genuine one, wherever it arrives first;
* the content key is the digest of the *whole* COSE_Sign1 envelope, signature included, for
  this destination: the same signed message in another bundle is a duplicate, while a copy
  with another signature (a zeroed one, say) is not — it is stored, fails verification at
  delivery and is dropped, and the genuine envelope still goes through.

Delivery deduplicates on the verified message alone (:mod:`fleetwire.protocol.replay`).
"""

from __future__ import annotations

import hashlib
from typing import Final

import attrs

from .. import cose
from ..bpv7 import (
    DTN_NONE,
    BlockType,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    CreationTimestamp,
    HopCount,
    IpnEid,
    PrimaryBlock,
    StatusAssertion,
    StatusReason,
    StatusReport,
    encode_bundle,
    hop_count_block,
    payload_block,
    previous_node_block,
    status_report_bundle,
)
from ..bpv7.blocks import canonical_block_parts
from ..errors import FleetwireError
from ..ids import ContentId
from .store import StoredBundle

#: ipn service number of the Fleet Coordination Protocol on every node (configurable).
FCP_SERVICE: Final = 7
#: ipn service number revocation lists (root-signed, spec §10) travel to, node to node.
TRUST_SERVICE: Final = 8
#: Hop limit of bundles we create: far above any fleet path (node → cell → region → …).
HOP_LIMIT: Final = 32
_HOP_BLOCK: Final = 2
#: ``next_hop`` values the node keeps in the store besides ``ipn:N`` neighbours.
LOCAL: Final = "local"  # addressed to this node, not yet handed to the application
DELIVERED: Final = "delivered"  # handed over; kept until expiry so duplicates are dropped
#: Forwarded (the next hop took custody); kept a while so that a resend is answered "duplicate"
#: instead of being taken, and forwarded, a second time.
FORWARDED: Final = "forwarded"
#: The ``next_hop`` values of tombstones: records of bundles this node is done with.
DONE: Final = (DELIVERED, FORWARDED)


def message_bundle(
    envelope: bytes,
    *,
    source: int,
    destination: int,
    created_at: int,
    sequence: int,
    lifetime_ms: int,
    service: int = FCP_SERVICE,
    reports: BundleFlags = BundleFlags.NONE,
) -> Bundle:
    """A bundle carrying one signed message (COSE_Sign1 bytes) as its payload.

    ``reports`` are status report request flags (RFC 9171 §4.2.3); when any is set, reports go
    to the source node's administrative endpoint ``ipn:<source>.0``.
    """
    primary = PrimaryBlock(
        destination=IpnEid(destination, service),
        source=IpnEid(source, service),
        report_to=IpnEid(source, 0) if reports else DTN_NONE,
        creation=CreationTimestamp(created_at, sequence),
        lifetime=lifetime_ms,
        flags=reports,
    )
    return Bundle(
        primary, (hop_count_block(_HOP_BLOCK, HopCount(HOP_LIMIT)), payload_block(envelope))
    )


class HopLimitExceeded(FleetwireError):
    """The bundle has used up its hop limit (RFC 9171 §4.4.3): it must be deleted."""

    code = "hop-limit-exceeded"


def for_next_hop(bundle: Bundle, this_node: int, service: int = FCP_SERVICE) -> bytes:
    """The bytes to transmit: hop counted, Previous Node set to this node (§4.4.1, §5.4)."""
    hops = bundle.hop_count
    if hops is not None:
        if hops.count + 1 > hops.limit:
            raise HopLimitExceeded(f"hop limit {hops.limit} reached")
        hop_block = bundle.first_of_type(BlockType.HOP_COUNT)
        assert hop_block is not None
        bundle = bundle.with_block(
            hop_count_block(hop_block.number, HopCount(hops.limit, hops.count + 1))
        )
    previous = bundle.first_of_type(BlockType.PREVIOUS_NODE)
    number = previous.number if previous is not None else bundle.next_block_number()
    bundle = bundle.with_block(previous_node_block(number, IpnEid(this_node, 0)))
    return encode_bundle(bundle)


def forward_bytes(bundle: Bundle, data: bytes, this_node: int) -> bytes:
    """:func:`for_next_hop` for a bundle whose encoding ``data`` we hold: the same bytes,
    but only the Hop Count and Previous Node blocks are encoded again — every other block,
    the primary block included, is copied as received (its CRC still holds: RFC 9171 §4.2.1
    covers each block alone). A relay forwards every bundle it takes, so this is its
    commonest encoding; re-encoding the whole bundle would cost several times as much.

    ``data`` must be the encoding ``bundle`` was decoded from (or made into).
    """
    hops = bundle.hop_count
    if hops is not None and hops.count + 1 > hops.limit:
        raise HopLimitExceeded(f"hop limit {hops.limit} reached")
    blocks = bundle.blocks
    spans = _top_level_spans(data)
    if len(spans) != len(blocks) + 1:  # not the encoding of this bundle: encode it whole
        return for_next_hop(bundle, this_node)
    start, end = spans[0]
    parts = [b"\x9f", data[start:end]]
    hop_done = previous_done = False
    for block, (start, end) in zip(blocks, spans[1:], strict=True):
        kind = block.block_type
        if kind == BlockType.HOP_COUNT and hops is not None and not hop_done:
            hop_done = True  # the first one counts (as ``Bundle.hop_count`` reads it)
            parts.append(_encoded(1, block.number, hops.limit, hops.count + 1))
        elif kind == BlockType.PREVIOUS_NODE and not previous_done:
            previous_done = True
            parts.append(_encoded(2, block.number, this_node, 0))
        else:
            if block is blocks[-1] and not previous_done:  # a new one goes before the payload
                parts.append(_encoded(2, bundle.next_block_number(), this_node, 0))
            parts.append(data[start:end])
    parts.append(b"\xff")
    return b"".join(parts)


def _top_level_spans(data: bytes) -> list[tuple[int, int]]:
    """Start and end of each block in an encoded bundle (an indefinite array, §4.1)."""
    spans: list[tuple[int, int]] = []
    pos, end = 1, len(data)
    while pos < end and data[pos] != 0xFF:
        after = _skip(data, pos)
        spans.append((pos, after))
        pos = after
    return spans


def _skip(data: bytes, pos: int) -> int:
    """The position after the CBOR item at ``pos`` (definite lengths: what the decoder took).

    Iterative: ``pending`` counts the items still to skip in the open arrays and maps.
    """
    pending = 1
    while pending:
        pending -= 1
        initial = data[pos]
        major, info = initial >> 5, initial & 31
        if info < 24:
            arg = info
            pos += 1
        else:
            width = 1 << (info - 24)
            arg = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            pos += 1 + width
        if major == 2 or major == 3:
            pos += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            pending += 1
    return pos


#: Encoded Hop Count and Previous Node blocks by their fields: a node writes the same few
#: again and again (bounded, so hostile block numbers cannot grow it).
_BLOCK_CACHE: dict[tuple[int, int, int, int], bytes] = {}
_BLOCK_CACHE_MAX: Final = 4096


def _encoded(kind: int, number: int, a: int, b: int) -> bytes:
    """A Hop Count block (``kind`` 1: limit ``a``, count ``b``) or a Previous Node block
    (``kind`` 2: node ``a``), encoded as :func:`for_next_hop` encodes it."""
    key = (kind, number, a, b)
    found = _BLOCK_CACHE.get(key)
    if found is None:
        block: CanonicalBlock = (
            hop_count_block(number, HopCount(a, b)) if kind == 1
            else previous_node_block(number, IpnEid(a, 0))
        )  # fmt: skip
        found = b"".join(canonical_block_parts(block))
        if len(_BLOCK_CACHE) < _BLOCK_CACHE_MAX:
            _BLOCK_CACHE[key] = found
    return found


@attrs.frozen(slots=True)
class Envelope:
    """What the node learns of a bundle without verifying anything.

    ``content_id`` is the content id the payload *claims* to carry (unverified: for logs only);
    ``envelope_digest`` names the payload bytes whole, signature included (the store's key).
    """

    destination_node: int | None
    expires_at: int
    content_id: ContentId | None
    envelope_digest: bytes | None = None
    destination_service: int | None = None


def inspect_bundle(bundle: Bundle, now: int) -> Envelope:
    """Destination node, expiry and carried content id (if the payload is a COSE_Sign1)."""
    primary = bundle.primary
    destination = primary.destination
    node = destination.node if isinstance(destination, IpnEid) else None
    service = destination.service if isinstance(destination, IpnEid) else None
    if primary.creation.time:
        expires_at = primary.creation.time + primary.lifetime
    else:  # no clock at the source: the Bundle Age block says how old it is (§4.2.6, §4.4.2)
        expires_at = now - (bundle.bundle_age or 0) + primary.lifetime
    content: ContentId | None = None
    digest: bytes | None = None
    try:
        content = ContentId.of(cose.parse_sign1(bundle.payload).payload)
        digest = hashlib.sha256(bundle.payload).digest()
    except FleetwireError:
        pass  # not one of ours, or damaged: the signature check will say so on delivery
    return Envelope(node, expires_at, content, digest, service)


#: Bytes of the payload digest appended to the bundle id to make the store's bundle key.
_PAYLOAD_TAG: Final = 16


def stored(
    bundle: Bundle,
    data: bytes,
    now: int,
    envelope: Envelope,
    next_hop: str | None,
    received_from: int | None = None,
) -> StoredBundle:
    """The store's record of ``bundle`` (``data`` is its encoding as received or created).

    Keys: see the module docstring. ``received_from`` is the neighbour that handed the bundle
    over (its per-source share of the store quota); ``None`` for a bundle made here.
    """
    primary = bundle.primary
    # The store drops a second bundle with the same content key. One message may rightly go
    # to several destinations (an advertisement to every neighbour), so the key is the
    # envelope digest *for this destination*.
    destination = primary.destination.wire
    digest = envelope.envelope_digest or hashlib.sha256(bundle.payload).digest()
    payload_tag = digest[:_PAYLOAD_TAG]
    # Every field below comes from the decoded bundle or this node: no need to check it again.
    return StoredBundle.from_decoded(
        bundle_id=bundle.id.key() + payload_tag,
        content_id=None if envelope.envelope_digest is None else envelope.envelope_digest + destination,
        source=str(primary.source),
        destination=str(primary.destination),
        expires_at=envelope.expires_at,
        received_at=now,
        data=data,
        next_hop=next_hop,
        received_from=None if received_from is None else f"ipn:{received_from}.0",
    )


#: Which status item each request flag asks for (RFC 9171 §4.2.3, §6.1.1).
REPORT_ITEMS: Final = {
    BundleFlags.REPORT_RECEPTION: "received",
    BundleFlags.REPORT_FORWARDING: "forwarded",
    BundleFlags.REPORT_DELIVERY: "delivered",
    BundleFlags.REPORT_DELETION: "deleted",
}


def neighbour_node(received_from: str | None) -> int | None:
    """The node number in a neighbour name as :func:`stored` keeps it (``ipn:N.0``), if any."""
    if received_from is None or not received_from.startswith("ipn:"):
        return None
    number = received_from[4:].partition(".")[0]
    return int(number) if number.isdigit() else None


def status_report_for(
    bundle: Bundle,
    request: BundleFlags,
    *,
    this_node: int,
    now: int,
    sequence: int,
    lifetime_ms: int,
    reason: int = StatusReason.NO_INFO,
) -> Bundle | None:
    """The status report ``bundle`` asked for with ``request``, or None if it did not ask.

    RFC 9171 §5.1: no reports about administrative records, and none to ``dtn:none``.
    """
    primary = bundle.primary
    if not int(primary.flags) & request or primary.is_admin_record or primary.report_to.is_null:
        return None
    timed = bool(int(primary.flags) & BundleFlags.STATUS_TIME_REQUESTED)
    assertion = StatusAssertion(True, now if timed else None)
    report = StatusReport(subject=bundle.id, reason=reason, **{REPORT_ITEMS[request]: assertion})
    return status_report_bundle(
        report,
        source=IpnEid(this_node, 0),
        destination=primary.report_to,
        creation=CreationTimestamp(now, sequence),
        lifetime=lifetime_ms,
    )
