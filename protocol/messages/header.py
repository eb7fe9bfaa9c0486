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
PROTOCOL_VERSION: Final = 3
#: How many versions back a reader reads (N-2 policy, DESIGN.md "Versions and N-2";
#: protocol.md §5.1).
WINDOW: Final = 2
#: The oldest version a reader of :data:`PROTOCOL_VERSION` reads.
OLDEST_READ_VERSION: Final = max(1, PROTOCOL_VERSION - WINDOW)
#: The version a header is written at unless its writer names one: the oldest of the window,
#: which is what a node writes to a peer whose versions it does not know (protocol.md §5.1).
#: Messages of later types are written at their version by :func:`.versions.convert`.
DEFAULT_WRITE_VERSION: Final = OLDEST_READ_VERSION


class Family(enum.Enum):
    """The four intent families. Later types join one: the fault messages of version 2
    (digests, forensic pull, escalation, isolation) are exceptions; reservations and the
    market of version 3 are leases."""

    CAPABILITY = "capability"
    COMMITMENT = "commitment"
    EXCEPTION = "exception"
    LEASE = "lease"

    # Members are singletons, so identity hashes them (as agent.states does): Enum's own hash
    # runs Python code on every delivery (the agent finds a role's handler by family). Sets of
    # families iterate in another order, as they did already under str hash randomisation.
    __hash__ = object.__hash__


class MessageType(enum.IntEnum):
    """Key 0 of every message. Codes are never reused (protocol.md §5.5); the version that
    introduced each type is its class's ``SINCE`` (:mod:`.registry`)."""

    CAPABILITY_ADVERTISEMENT = 1
    COMMITMENT = 2
    EXCEPTION_REPORT = 3
    LEASE_CLAIM = 4
    LEASE_GRANT = 5
    LEASE_RENEW = 6
    LEASE_RELEASE = 7
    LEASE_REVOKE = 8
    LEASE_EXPIRY = 9
    # version 2 (spec/v2/faults.md, spec/v2/reservations.md)
    DIGEST = 10
    DETAIL_REQUEST = 11
    DETAIL_ANSWER = 12
    ESCALATION_ACK = 13
    ESCALATION_CLOSE = 14
    ISOLATION_ORDER = 15
    BLOCK_REQUEST = 16
    BLOCK_GRANT = 17
    BLOCK_RENEW = 18
    BLOCK_RELEASE = 19
    # version 3 (spec/v3/market.md); 20-23 are kept free for the release objects' version
    BID = 24
    ASK = 25
    AWARD = 26

    @property
    def family(self) -> Family:
        return _FAMILIES.get(self, _LEASE)


# Read per message as a global, not off the enum: in Python 3.11 an enum's class attribute
# goes through EnumType's __getattr__ hook (hundreds of instructions a read, a global a few).
_LEASE: Final = Family.LEASE
_FAMILIES: Final = {
    MessageType.CAPABILITY_ADVERTISEMENT: Family.CAPABILITY,
    MessageType.COMMITMENT: Family.COMMITMENT,
    MessageType.EXCEPTION_REPORT: Family.EXCEPTION,
    MessageType.DIGEST: Family.EXCEPTION,
    MessageType.DETAIL_REQUEST: Family.EXCEPTION,
    MessageType.DETAIL_ANSWER: Family.EXCEPTION,
    MessageType.ESCALATION_ACK: Family.EXCEPTION,
    MessageType.ESCALATION_CLOSE: Family.EXCEPTION,
    MessageType.ISOLATION_ORDER: Family.EXCEPTION,
}


#: First body key; keys below it belong to the header.
FIRST_BODY_KEY: Final = 8


@attrs.frozen(slots=True)
class Header:
    """Who wrote a message, when, at which version, and what it refers to."""

    issuer: int
    issued_at: int
    sequence: int
    references: tuple[ContentId, ...] = ()
    version: int = DEFAULT_WRITE_VERSION
    min_version: int = DEFAULT_WRITE_VERSION
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
