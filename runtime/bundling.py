"""Moved to :mod:`fleetwire.protocol.agent.bundling` (pure: the bundle agent uses it); the
names stay importable from here."""

from fleetwire.protocol.agent.bundling import (  # noqa: F401
    _HOP_BLOCK,
    _PAYLOAD_TAG,
    DELIVERED,
    DONE,
    FCP_SERVICE,
    FORWARDED,
    HOP_LIMIT,
    LOCAL,
    REPORT_ITEMS,
    TRUST_SERVICE,
    Envelope,
    HopLimitExceeded,
    for_next_hop,
    inspect_bundle,
    message_bundle,
    neighbour_node,
    status_report_for,
    stored,
)

__all__ = [
    "DELIVERED",
    "DONE",
    "FCP_SERVICE",
    "FORWARDED",
    "HOP_LIMIT",
    "LOCAL",
    "REPORT_ITEMS",
    "TRUST_SERVICE",
    "Envelope",
    "HopLimitExceeded",
    "for_next_hop",
    "inspect_bundle",
    "message_bundle",
    "neighbour_node",
    "status_report_for",
    "stored",
]
