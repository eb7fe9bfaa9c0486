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

import itertools
from collections.abc import Sequence
from typing import Final

import attrs

from .. import cose
from ..bpv7 import (
    DTN_NONE,
    BlockFlags,
    BlockType,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    CreationTimestamp,
    Eid,
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
from ..bpv7 import accel as bundle_accel
from ..bpv7.blocks import canonical_block_parts, primary_block_parts
from ..bpv7.bundle import _DEFAULT_WALK_SPEC, BUNDLE_LIMITS
from ..bpv7.crc import CrcType, crc32c
from ..bpv7.eid import DtnEid, NullEid
from ..bpv7.wire import head as _head
from ..bpv7.wire import uint
from ..errors import FleetwireError
from ..ids import ContentId, sha256_digest
from ..messages import accel as init_accel
from ..replay import Accept, Seen
from .admission import Admitted
from .store import Accepted, Duplicate, StoredBundle

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
        destination=_ipn(destination, service),
        source=_ipn(source, service),
        report_to=_ipn(source, 0) if reports else DTN_NONE,
        creation=CreationTimestamp(created_at, sequence),
        lifetime=lifetime_ms,
        flags=reports,
    )
    return Bundle(primary, (_NEW_HOPS, payload_block(envelope)))


def new_message(
    envelope: bytes,
    *,
    source: int,
    destination: int,
    created_at: int,
    sequence: int,
    lifetime_ms: int,
    service: int = FCP_SERVICE,
    reports: BundleFlags = BundleFlags.NONE,
) -> tuple[Bundle, bytes, tuple[int, ...]]:
    """:func:`message_bundle` and :func:`encode_message_bundle` of it in one step: the bundle
    the agent sends a message in, its bytes and its block offsets.

    Every message a node sends goes through here, so the bytes come from the accelerator's
    one-pass writer (:data:`~fleetwire.protocol.bpv7.accel.message_bytes`) when there is one:
    the bundle's shape is known (primary, Hop Count, payload; RFC 9171 §4.1), only its fields
    vary. Where the writer refuses an input (a range, a §4 rule) the Python encoder runs and
    raises the :class:`~fleetwire.protocol.bpv7.InvalidBundle` that names the rule.
    """
    destination_eid = _ipn(destination, service)
    source_eid = _ipn(source, service)
    report_to: Eid = _ipn(source, 0) if reports else DTN_NONE
    bundle = Bundle(
        PrimaryBlock(destination_eid, source_eid, report_to,
                     CreationTimestamp(created_at, sequence), lifetime_ms, reports),
        (_NEW_HOPS, CanonicalBlock(_PAYLOAD, 1, envelope)),
    )  # fmt: skip
    write = bundle_accel.message_bytes
    if write is not None:
        try:
            data, offsets = write(
                reports, destination_eid.wire, source_eid.wire, report_to.wire, created_at,
                sequence, lifetime_ms, HOP_LIMIT, envelope,
            )  # fmt: skip
        except (TypeError, ValueError):
            pass  # refused: the Python road below raises the error that names the rule
        else:
            return bundle, data, offsets
    data, offsets = _encode_message_bundle_python(bundle)
    return bundle, data, offsets


def encode_message_bundle(bundle: Bundle) -> tuple[bytes, tuple[int, ...]]:
    """:func:`~fleetwire.protocol.bpv7.encode_bundle` of a bundle :func:`message_bundle`
    made, and where its blocks start (as :func:`~fleetwire.protocol.bpv7.decode_bundle_offsets`
    gives them): the same bytes, from the accelerator's one-pass writer when the bundle has
    exactly the shape it writes (Hop Count block, then the payload block — type 1, number 1,
    no flags, CRC-32C — and a CRC-32C primary block that is not a fragment), else from
    Python without checking the §4 rules again (that function builds only valid bundles)."""
    write = bundle_accel.message_bytes
    blocks, primary = bundle.blocks, bundle.primary
    if write is not None and len(blocks) == 2 and blocks[0] is _NEW_HOPS:
        payload = blocks[1]
        if (
            _plain_payload(payload)
            and primary.crc_type == CrcType.CRC32C and primary.fragment_offset is None
            and primary.total_adu_length is None and type(primary.destination) in _EID_TYPES
            and type(primary.source) in _EID_TYPES and type(primary.report_to) in _EID_TYPES
        ):  # fmt: skip
            creation = primary.creation
            try:
                return write(
                    primary.flags, primary.destination.wire, primary.source.wire,
                    primary.report_to.wire, creation.time, creation.sequence, primary.lifetime,
                    HOP_LIMIT, payload.data,
                )  # fmt: skip
            except (TypeError, ValueError):
                pass  # refused: the Python roads below refuse it too, naming the rule
    return _encode_message_bundle_python(bundle)


def _encode_message_bundle_python(bundle: Bundle) -> tuple[bytes, tuple[int, ...]]:
    """:func:`encode_message_bundle` without the accelerator (the reference for its bytes)."""
    blocks, primary_block = bundle.blocks, bundle.primary
    if (
        len(blocks) != 2 or blocks[0] is not _NEW_HOPS
        or not primary_block.creation.time or primary_block.source.is_null
        or int(primary_block.flags) & ~_REPORT_FLAGS
    ):  # fmt: skip
        # Not one of the bundles the fast road knows valid: the full road (checks, refuses).
        data = encode_bundle(bundle)
        return data, _offsets(data)
    primary = _message_primary(primary_block)
    payload = blocks[1]
    data = payload.data
    if not _plain_payload(payload):
        if payload.block_type != BlockType.PAYLOAD or payload.number != 1:
            data = encode_bundle(bundle)  # not a payload block where it must be: the §4 checks
            return data, _offsets(data)
        payload_bytes = b"".join(canonical_block_parts(payload))
    else:  # type 1, number 1, no flags, CRC-32C (§4.3.2): the CRC covers the zeroed field
        prefix = _PAYLOAD_PREFIX + _head(2, len(data))
        crc = crc32c(_ZERO_CRC32C, crc32c(data, crc32c(prefix)))
        payload_bytes = b"".join((prefix, data, b"\x44", crc.to_bytes(4, "big")))
    hops_end = 1 + len(primary) + len(_NEW_HOPS_BYTES)
    whole = b"".join((b"\x9f", primary, _NEW_HOPS_BYTES, payload_bytes, b"\xff"))
    return whole, (1, 1 + len(primary), hops_end, hops_end + len(payload_bytes))


def _plain_payload(block: CanonicalBlock) -> bool:
    """Whether ``block`` is the payload block (type 1, number 1: RFC 9171 §4.1) with no
    flags and CRC-32C, its fields of the types the encoder reads as they are (so ``True``
    or ``1.0`` for a 1, or ``None`` for no flags, go to the encoder, which refuses them)."""
    return (
        block.block_type == _PAYLOAD and type(block.block_type) in _PAYLOAD_TYPES
        and block.number == 1 and type(block.number) is int
        and type(block.flags) in _FLAG_TYPES and not block.flags
        and block.crc_type == CrcType.CRC32C and type(block.data) is bytes
    )  # fmt: skip


def _message_primary(primary: PrimaryBlock) -> bytes:
    """The primary block of a message bundle (§4.3.1): ipn or null EIDs, not a fragment,
    CRC-32C — as :func:`~fleetwire.protocol.bpv7.blocks.primary_block_parts` writes it."""
    creation = primary.creation
    if (
        primary.crc_type != CrcType.CRC32C or primary.fragment_offset is not None
        or primary.total_adu_length is not None
        or max(int(primary.flags), creation.time, creation.sequence, primary.lifetime) > _U64
        or min(int(primary.flags), creation.time, creation.sequence, primary.lifetime) < 0
    ):  # fmt: skip
        return b"".join(primary_block_parts(primary))  # its checks refuse what is wrong
    body = b"".join((
        b"\x89\x07", uint(int(primary.flags)), b"\x02", primary.destination.wire,
        primary.source.wire, primary.report_to.wire, b"\x82", uint(creation.time),
        uint(creation.sequence), uint(primary.lifetime),
    ))  # fmt: skip
    return body + b"\x44" + crc32c(_ZERO_CRC32C, crc32c(body)).to_bytes(4, "big")


_U64: Final = (1 << 64) - 1
_PAYLOAD: Final = BlockType.PAYLOAD
_EID_TYPES: Final = (IpnEid, NullEid, DtnEid)
#: What the encoder takes as a block type or number equal to 1 (not True, not 1.0).
_PAYLOAD_TYPES: Final = (int, BlockType)
#: Block flags the encoder reads as the int they are (not None, not 0.0).
_FLAG_TYPES: Final = (int, BlockFlags)
_PAYLOAD_PREFIX: Final = b"\x86\x01\x01\x00\x02"
_ZERO_CRC32C: Final = b"\x44\x00\x00\x00\x00"


def _offsets(data: bytes) -> tuple[int, ...]:
    spans = _top_level_spans(data)
    return (*(start for start, _ in spans), spans[-1][1]) if spans else ()


_REPORT_FLAGS: Final = int(
    BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_FORWARDING | BundleFlags.REPORT_DELIVERY
    | BundleFlags.REPORT_DELETION | BundleFlags.STATUS_TIME_REQUESTED
)  # fmt: skip
#: The Hop Count block every new bundle starts with, and its encoding.
_NEW_HOPS: Final = hop_count_block(_HOP_BLOCK, HopCount(HOP_LIMIT))
_NEW_HOPS_BYTES: Final = b"".join(canonical_block_parts(_NEW_HOPS))
#: ipn EIDs by service, then node: frozen, and a node names the same few again and again.
#: Keyed by plain ints, not a (node, service) tuple: no tuple to build and hash per call,
#: and a lookup that compares ints, not a stored tuple's items (a process simulating a
#: fleet names ten thousand nodes, so the table is large and mostly out of cache). At most
#: _EIDS_MAX kept in all.
_EIDS: dict[int, dict[int, IpnEid]] = {}
_EIDS_MAX: Final = 65_536
_eids_kept = 0


def _ipn(node: int, service: int) -> IpnEid:
    global _eids_kept
    by_node = _EIDS.get(service)
    if by_node is not None:
        eid = by_node.get(node)
        if eid is not None:
            return eid
    eid = IpnEid(node, service)
    if _eids_kept < _EIDS_MAX:
        if by_node is None:
            by_node = _EIDS[service] = {}
        by_node[node] = eid
        _eids_kept += 1
    return eid


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


def forward_bytes(
    bundle: Bundle, data: bytes, this_node: int, offsets: Sequence[int] | None = None
) -> bytes:
    """:func:`for_next_hop` for a bundle whose encoding ``data`` we hold: the same bytes,
    but only the Hop Count and Previous Node blocks are encoded again — every other block,
    the primary block included, is copied as received (its CRC still holds: RFC 9171 §4.2.1
    covers each block alone). A relay forwards every bundle it takes, so this is its
    commonest encoding; re-encoding the whole bundle would cost several times as much.

    ``data`` must be the encoding ``bundle`` was decoded from (or made into); ``offsets``,
    if given, where its blocks start (:func:`~fleetwire.protocol.bpv7.decode_bundle_offsets`),
    saves scanning it again; with them the accelerator writes the commonest shapes in one
    pass (:data:`~fleetwire.protocol.bpv7.accel.relay_forward`: the same bytes as below, or
    ``None`` for anything else, which this Python road, the reference, then takes).
    """
    relay = bundle_accel.relay_forward
    if relay is not None and type(offsets) is tuple:
        written = relay(data, offsets, this_node)
        if written is not None:
            return written
    hops = bundle.hop_count
    if hops is not None and hops.count + 1 > hops.limit:
        raise HopLimitExceeded(f"hop limit {hops.limit} reached")
    blocks = bundle.blocks
    if offsets is not None and len(blocks) == 2 and len(offsets) == 4 and hops is not None:
        # The commonest shape, a bundle on its first hop: Hop Count, then the payload; the new
        # Previous Node block goes between them (what the loop below does, in one step).
        hop_block, payload = blocks
        if hop_block.block_type == BlockType.HOP_COUNT and payload.block_type == BlockType.PAYLOAD:
            return b"".join((
                b"\x9f", data[offsets[0] : offsets[1]],
                _encoded(1, hop_block.number, hops.limit, hops.count + 1),
                _encoded(2, max(hop_block.number, payload.number) + 1, this_node, 0),
                data[offsets[2] : offsets[3]], b"\xff",
            ))  # fmt: skip
    if offsets is not None and len(blocks) == 3 and len(offsets) == 5 and hops is not None:
        # A relayed bundle: Hop Count, Previous Node, payload; both extensions rewritten.
        hop_block, previous, payload = blocks
        if (hop_block.block_type == BlockType.HOP_COUNT
                and previous.block_type == BlockType.PREVIOUS_NODE
                and payload.block_type == BlockType.PAYLOAD):  # fmt: skip
            return b"".join((
                b"\x9f", data[offsets[0] : offsets[1]],
                _encoded(1, hop_block.number, hops.limit, hops.count + 1),
                _encoded(2, previous.number, this_node, 0),
                data[offsets[3] : offsets[4]], b"\xff",
            ))  # fmt: skip
    if offsets is not None and len(offsets) == len(blocks) + 2:
        spans = list(itertools.pairwise(offsets))
    else:
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
    #: The payload parsed as a COSE_Sign1 (default limits), if it is one and was parsed here:
    #: the agent hands it on to delivery, which need not parse it again.
    sign1: cose.Sign1 | None = attrs.field(default=None, eq=False, repr=False)


def inspect_bundle(
    bundle: Bundle, now: int, *, content_id: bool = True, sealed_here: bool = False
) -> Envelope:
    """Destination node, expiry and carried content id (if the payload is a COSE_Sign1).

    ``content_id=False`` leaves the (log-only) content id out: the agent, which inspects
    every bundle on every hop, does not log it. ``sealed_here``: the caller made the payload
    with :func:`fleetwire.protocol.envelope.seal` just now, so it is a COSE_Sign1 and is not
    parsed again (only its digest is taken)."""
    primary = bundle.primary
    destination = primary.destination
    if isinstance(destination, IpnEid):
        node: int | None = destination.node
        service: int | None = destination.service
    else:
        node = service = None
    if primary.creation.time:
        expires_at = primary.creation.time + primary.lifetime
    else:  # no clock at the source: the Bundle Age block says how old it is (§4.2.6, §4.4.2)
        expires_at = now - (bundle.bundle_age or 0) + primary.lifetime
    content: ContentId | None = None
    digest: bytes | None = None
    sign1: cose.Sign1 | None = None
    payload = bundle.payload
    if sealed_here and not content_id:
        digest = sha256_digest(payload)
    else:
        try:
            sign1 = cose.parse_sign1(payload)
            if content_id:
                content = ContentId.of(sign1.payload)
            digest = sha256_digest(payload)
        except FleetwireError:
            pass  # not one of ours, or damaged: the signature check will say so on delivery
    return Envelope(node, expires_at, content, digest, service, sign1)


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
    # The agent's hot path takes accept_record, which does this and inspect_bundle in one
    # step (and is held to them by a test): here each rule is written once, plainly.
    primary = bundle.primary
    source, destination = primary.source, primary.destination
    destination_wire = destination.wire
    # The store drops a second bundle with the same content key. One message may rightly go
    # to several destinations (an advertisement to every neighbour), so the key is the
    # envelope digest *for this destination*.
    envelope_digest = envelope.envelope_digest
    digest = envelope_digest or sha256_digest(bundle.payload)
    payload_tag = digest[:_PAYLOAD_TAG]
    content_key = None if envelope_digest is None else envelope_digest + destination_wire
    id_key = _id_key(bundle)
    return StoredBundle.checked_by_caller(
        id_key + payload_tag,
        content_key,
        _TEXT.get(source.wire) or _text_of(source),
        _TEXT.get(destination_wire) or _text_of(destination),
        envelope.expires_at,
        now,
        data,
        next_hop,
        None if received_from is None else _NEIGHBOURS.get(received_from)
        or _neighbour_name(received_from),
    )


def accept_record(
    bundle: Bundle,
    data: bytes,
    now: int,
    this_node: int,
    received_from: int | None = None,
    *,
    sealed_here: bool = False,
) -> tuple[StoredBundle, int, bool, cose.Sign1 | None]:
    """:func:`inspect_bundle` (``content_id=False``) and :func:`stored` in one step, for the
    agent, which takes every bundle on every hop through both: ``(record, expires_at, local,
    sign1)``, where ``local`` says the destination is ``ipn:this_node.*`` (the record is then
    kept under :data:`LOCAL`, else under no next hop) and ``sign1`` is the payload parsed as a
    COSE_Sign1, if it is one (``None`` with ``sealed_here``, as there).

    The same values as the two-step road (a test holds them together), without building the
    :class:`Envelope` between them and with each field of the primary block read once."""
    primary = bundle.primary
    source, destination = primary.source, primary.destination
    destination_wire = destination.wire
    local = isinstance(destination, IpnEid) and destination.node == this_node
    creation = primary.creation
    time = creation.time
    if time:
        expires_at = time + primary.lifetime
    else:  # no clock at the source: the Bundle Age block says how old it is (§4.2.6, §4.4.2)
        expires_at = now - (bundle.bundle_age or 0) + primary.lifetime
    payload = bundle.blocks[-1].data
    sign1: cose.Sign1 | None = None
    # The content key: the envelope's digest for this destination, if the payload is one
    # (module docstring); the bundle key's tag is that digest too, or the payload's.
    if sealed_here:
        digest = sha256_digest(payload)
        content_key: bytes | None = digest + destination_wire
    else:
        try:
            sign1 = cose.parse_sign1(payload)
        except FleetwireError:  # not one of ours, or damaged: delivery's check will say so
            content_key = None
            digest = sha256_digest(payload)
        else:
            digest = sha256_digest(payload)
            content_key = digest + destination_wire
    if (type(source) is IpnEid and not int(primary.flags) & _IS_FRAGMENT
            and not source.allocator and source.elements == 2):  # fmt: skip
        id_key = b"".join((
            b"\x83", source.wire,
            b"\x1b" + time.to_bytes(8, "big") if time >= 0x100000000 else uint(time),
            uint(creation.sequence),
        ))  # fmt: skip
    else:
        id_key = _id_key(bundle)
    neighbour = None
    if received_from is not None:
        neighbour = _NEIGHBOURS.get(received_from) or _neighbour_name(received_from)
    record = StoredBundle.of_decoded(
        id_key + digest[:_PAYLOAD_TAG],
        content_key,
        _TEXT.get(source.wire) or _text_of(source),
        _TEXT.get(destination_wire) or _text_of(destination),
        expires_at,
        now,
        data,
        LOCAL if local else None,
        neighbour,
    )
    return record, expires_at, local, sign1


#: What :func:`accept_received` gives: the bundle, its block offsets, the store's record,
#: expires_at, local, sign1, whether the hop count is over its limit (§4.4.3), and the
#: neighbours routing must leave out (the previous node, §4.4.1).
Received = tuple[
    Bundle, tuple[int, ...], StoredBundle, int, bool, cose.Sign1 | None, bool, tuple[int, ...]
]


def accept_received(
    data: bytes, now: int, this_node: int, received_from: int | None = None
) -> Received | None:
    """A received bundle's decoding (:func:`~fleetwire.protocol.bpv7.decode_bundle_offsets`),
    :func:`accept_record`'s values, its hop count's verdict (``count > limit``, as
    :attr:`Bundle.hop_count` reads it) and the node its Previous Node block names, in one
    step, from the accelerator's walk (:data:`~fleetwire.protocol.bpv7.accel.walk_facts`),
    which reads them in the pass that decodes the bundle; ``None`` for anything it does not
    take — or without it — and the caller runs those functions, the reference, which decide
    (errors included). A node takes every bundle on every hop this way: some twenty Python
    calls fewer each time. What stays here is what only Python knows: whether the payload
    parses as a COSE_Sign1 (the content key is kept only then) and the neighbour's name; a
    bundle without a creation time (its expiry from a Bundle Age block) takes the reference."""
    walk = bundle_accel.walk_facts
    if walk is None or _DEFAULT_WALK_SPEC is None or type(data) is not bytes:
        return None
    if len(data) > _MAX_BUNDLE:  # decode_bundle_offsets refuses it, before any walk
        return None
    walked = walk(_DEFAULT_WALK_SPEC, data, _PAYLOAD_TAG, this_node)
    if walked is None:
        return None
    (bundle, offsets, bundle_key, content_key, source_text, destination_text, local,
     expires_at, hop_over, exclude) = walked  # fmt: skip
    if expires_at is None:  # no creation time (a Bundle Age block says, §4.2.6): rare, and
        return None  # accept_record reckons it, where that rule is written once
    sign1: cose.Sign1 | None = None
    try:
        sign1 = cose.parse_sign1(bundle.blocks[-1].data)
    except FleetwireError:  # not one of ours, or damaged: no content key (module docstring)
        content_key = None
    neighbour = None
    if received_from is not None:
        neighbour = _NEIGHBOURS.get(received_from) or _neighbour_name(received_from)
    record = StoredBundle.of_decoded(
        bundle_key, content_key, source_text, destination_text, expires_at, now, data,
        LOCAL if local else None, neighbour,
    )  # fmt: skip
    return bundle, offsets, record, expires_at, local, sign1, hop_over, exclude


_MAX_BUNDLE: Final = BUNDLE_LIMITS.max_size


def _id_key(bundle: Bundle) -> bytes:
    """``bundle.id.key()`` (:meth:`~fleetwire.protocol.bpv7.BundleId.key`) without building
    the id: for a non-fragment from a 2-element ipn source (every bundle a fleet node makes)
    the key is the source's own CBOR and the creation timestamp."""
    primary = bundle.primary
    source = primary.source
    if (int(primary.flags) & _IS_FRAGMENT or type(source) is not IpnEid or source.allocator
            or source.elements != 2):  # fmt: skip
        return bundle.id.key()
    creation = primary.creation
    return b"".join((b"\x83", source.wire, uint(creation.time), uint(creation.sequence)))


_IS_FRAGMENT: Final = int(BundleFlags.IS_FRAGMENT)


#: EIDs' text by their CBOR, and neighbours' names by node number: the store keeps text, and
#: a node writes the same few again and again (bounded: hostile EIDs cannot grow them).
_TEXT: dict[bytes, str] = {}
_NEIGHBOURS: dict[int, str] = {}


def _text_of(eid: Eid) -> str:
    wire = eid.wire
    text = _TEXT.get(wire)
    if text is None:
        text = str(eid)
        if len(_TEXT) < 65_536:
            _TEXT[wire] = text
    return text


def _neighbour_name(node: int) -> str:
    name = _NEIGHBOURS.get(node)
    if name is None:
        name = f"ipn:{node}.0"
        if len(_NEIGHBOURS) < 65_536:
            _NEIGHBOURS[node] = name
            _NEIGHBOUR_NODES[name] = node
    return name


#: The inverse of _NEIGHBOURS, for :func:`neighbour_node` (every delivery reads one back).
_NEIGHBOUR_NODES: dict[str, int] = {}


#: Which status item each request flag asks for (RFC 9171 §4.2.3, §6.1.1).
REPORT_ITEMS: Final = {
    BundleFlags.REPORT_RECEPTION: "received",
    BundleFlags.REPORT_FORWARDING: "forwarded",
    BundleFlags.REPORT_DELIVERY: "delivered",
    BundleFlags.REPORT_DELETION: "deleted",
}


def neighbour_node(received_from: str | None) -> int | None:
    """The node number in a neighbour name as :func:`stored` keeps it (``ipn:N.0``), if any."""
    if received_from is None:
        return None
    known = _NEIGHBOUR_NODES.get(received_from)
    if known is not None:
        return known
    if not received_from.startswith("ipn:"):
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


#: Classes every message sent builds objects of: with the accelerator their ``__init__`` is
#: the C one that stores straight into the slots
#: (:func:`fleetwire.protocol.messages.accel.install_fast_init`; a no-op without it, and undone
#: on the pure-Python road).
FAST_INIT_CLASSES: Final = (
    Bundle, PrimaryBlock, CanonicalBlock, CreationTimestamp, Envelope,
    # and every bundle received: the store's answer, the replay record, the admission
    Accepted, Duplicate, Seen, Accept, Admitted,
)  # fmt: skip
for _cls in FAST_INIT_CLASSES:
    init_accel.install_fast_init(_cls)
