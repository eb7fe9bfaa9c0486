"""Bundle Protocol version 7 (RFC 9171), pure code: EIDs, blocks, CRCs, bundles, status reports.

Build a bundle from a :class:`PrimaryBlock` and canonical blocks (payload last), turn it into
bytes with :func:`encode_bundle`, read received bytes with :func:`decode_bundle`. Every refusal is
a :class:`BundleError` (from the wire) or :class:`InvalidBundle` (from the caller) naming the
block and the RFC rule. Times are DTN times: milliseconds since 2000-01-01T00:00:00Z (§4.2.6).
"""

from .admin import (
    AdminRecordType,
    StatusAssertion,
    StatusReason,
    StatusReport,
    UnknownAdminRecord,
    admin_record_of,
    decode_admin_record,
    status_report_bundle,
)
from .blocks import (
    BlockFlags,
    BlockType,
    BundleFlags,
    CanonicalBlock,
    CreationTimestamp,
    PrimaryBlock,
    decode_canonical_block,
    decode_primary_block,
    encode_canonical_block,
    encode_primary_block,
)
from .bundle import (
    BUNDLE_LIMITS,
    KNOWN_BLOCK_TYPES,
    Bundle,
    BundleId,
    ReceptionOutcome,
    check_bundle,
    decode_bundle,
    decode_bundle_offsets,
    encode_bundle,
    process_unprocessable_blocks,
)
from .crc import CrcType, crc16_x25, crc32c
from .eid import DTN_NONE, DtnEid, Eid, IpnEid, NullEid, eid_from_cbor, parse_eid
from .errors import BundleError, EidError, InvalidBundle, InvalidEid
from .extensions import (
    HopCount,
    UnprocessableAction,
    bundle_age_block,
    hop_count_block,
    payload_block,
    previous_node_block,
    unprocessable_block_action,
)

__all__ = [
    "BUNDLE_LIMITS",
    "DTN_NONE",
    "KNOWN_BLOCK_TYPES",
    "AdminRecordType",
    "BlockFlags",
    "BlockType",
    "Bundle",
    "BundleError",
    "BundleFlags",
    "BundleId",
    "CanonicalBlock",
    "CrcType",
    "CreationTimestamp",
    "DtnEid",
    "Eid",
    "EidError",
    "HopCount",
    "InvalidBundle",
    "InvalidEid",
    "IpnEid",
    "NullEid",
    "PrimaryBlock",
    "ReceptionOutcome",
    "StatusAssertion",
    "StatusReason",
    "StatusReport",
    "UnknownAdminRecord",
    "UnprocessableAction",
    "admin_record_of",
    "bundle_age_block",
    "check_bundle",
    "crc16_x25",
    "crc32c",
    "decode_admin_record",
    "decode_bundle",
    "decode_bundle_offsets",
    "decode_canonical_block",
    "decode_primary_block",
    "eid_from_cbor",
    "encode_bundle",
    "encode_canonical_block",
    "encode_primary_block",
    "hop_count_block",
    "parse_eid",
    "payload_block",
    "previous_node_block",
    "process_unprocessable_blocks",
    "status_report_bundle",
    "unprocessable_block_action",
]
