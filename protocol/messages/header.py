"""The header every message carries, and the codes that name message types and families.

Wire layout (spec/v1/fcp.cddl): a message is one CBOR map with small unsigned keys. Keys 0–7
are the header, the same in every family and every version; keys from 8 up are the body of
the message type named by key 0. Keys are written in ascending order (RFC 8949 §4.2.1).

======  ===============  ============================================================
key     field            meaning
======  ===============  ============================================================
0       type             :class:`MessageType` code
1       version          protocol version the writer wrote this message at
2       min_version      oldest protocol version that may read it (≤ version)
3       issuer           node id (ipn node number) of the signer
4       issued_at        DTN time, ms since 2000-01-01T00:00:00Z (RFC 9171 §4.2.6)
5       sequence         per-issuer counter; with issuer, orders one node's messages
6       references       content ids this message answers or builds on (omitted if none)
7       critical         body keys a reader must understand to act on it (omitted if none)
======  ===============  ============================================================
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from ..ids import ContentId
from .schema import CIDS, UINT, Field, ListOf

#: The newest protocol version this implementation writes and reads.
PROTOCOL_VERSION: Final = 1
#: The version window (N-2 policy, DESIGN.md "Versions and N-2").
OLDEST_READ_VERSION: Final = max(1, PROTOCOL_VERSION - 2)


class Family(enum.Enum):
    """The four intent families."""

    CAPABILITY = "capability"
    COMMITMENT = "commitment"
    EXCEPTION = "exception"
    LEASE = "lease"


class MessageType(enum.IntEnum):
    """Key 0 of every message."""

    CAPABILITY_ADVERTISEMENT = 1
    COMMITMENT = 2
    EXCEPTION_REPORT = 3
    LEASE_CLAIM = 4
    LEASE_GRANT = 5
    LEASE_RENEW = 6
    LEASE_RELEASE = 7
    LEASE_REVOKE = 8
    LEASE_EXPIRY = 9

    @property
    def family(self) -> Family:
        if self is MessageType.CAPABILITY_ADVERTISEMENT:
            return Family.CAPABILITY
        if self is MessageType.COMMITMENT:
            return Family.COMMITMENT
        if self is MessageType.EXCEPTION_REPORT:
            return Family.EXCEPTION
        return Family.LEASE


#: First body key; keys below it belong to the header.
FIRST_BODY_KEY: Final = 8


@attrs.frozen(slots=True)
class Header:
    """Who wrote a message, when, at which version, and what it refers to."""

    issuer: int
    issued_at: int
    sequence: int
    references: tuple[ContentId, ...] = ()
    version: int = PROTOCOL_VERSION
    min_version: int = OLDEST_READ_VERSION
    critical: tuple[int, ...] = ()


HEADER_FIELDS: Final = (
    Field(1, "version", UINT),
    Field(2, "min_version", UINT),
    Field(3, "issuer", UINT),
    Field(4, "issued_at", UINT),
    Field(5, "sequence", UINT),
    Field(6, "references", CIDS, optional=True),
    Field(7, "critical", ListOf(UINT, max_items=16), optional=True),
)
