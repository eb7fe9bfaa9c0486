"""Protocol version 1: the four intent families (DESIGN.md; spec/v1/).

Every class is a frozen, slotted attrs value with a :class:`~.header.Header` and a body whose
wire form is the ``FIELDS`` table (map key, attribute, kind). Times are DTN time in
milliseconds; quantities are unsigned integers in the unit the message names (no floats on
the wire, so every value has exactly one encoding).

- capability: what a node can do — :class:`CapabilityAdvertisement`
- commitment: what it will do — :class:`Commitment`, one message per state change
  (offered → accepted → fulfilled / broken / withdrawn)
- exception: what went wrong — :class:`ExceptionReport`
- lease: what it needs or holds — claim → grant (term, fencing token) → renew / release /
  revoke / expiry notice (Gray & Cheriton 1989; fencing tokens only grow)
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Final

import attrs

from ..errors import MessageError
from ..ids import ContentId
from .header import Header, MessageType
from .schema import CID, CIDS, TEXT, UINT, EnumKind, Field, ListOf, Struct, in_range

# --- capability --------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Capability:
    """One thing a node can do, how much of it, and when."""

    kind: str  # e.g. "refine/carbonaceous"
    capacity: int  # per day, in ``unit``
    unit: str  # e.g. "kg"
    valid_from: int
    valid_until: int

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(0, "kind", TEXT),
        Field(1, "capacity", UINT),
        Field(2, "unit", TEXT),
        Field(3, "valid_from", UINT),
        Field(4, "valid_until", UINT),
    )


def _version_range(value: Any, path: str) -> None:
    if len(value) != 2 or not 1 <= value[0] <= value[1]:
        raise MessageError("must be [oldest, newest] with 1 <= oldest <= newest", path)


@attrs.frozen(slots=True)
class CapabilityAdvertisement:
    """A node's signed statement of its capabilities, protocol versions and software lineage.

    Peers learn which versions to write to this node from ``versions`` (there is no handshake
    in a DTN); the newest advertisement by issuer and sequence replaces older ones.
    """

    header: Header
    capabilities: tuple[Capability, ...]
    versions: tuple[int, ...]  # (oldest, newest) protocol version the node reads
    lineage: str  # software lineage, e.g. "B"
    cell: int | None = None
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.CAPABILITY_ADVERTISEMENT
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "capabilities", ListOf(Struct(Capability, "capability"))),
        Field(9, "versions", ListOf(UINT, max_items=2), check=_version_range),
        Field(10, "lineage", TEXT),
        Field(11, "cell", UINT, optional=True),
    )


# --- commitment --------------------------------------------------------------------------


class CommitmentState(enum.IntEnum):
    OFFERED = 0
    ACCEPTED = 1
    FULFILLED = 2
    BROKEN = 3
    WITHDRAWN = 4


@attrs.frozen(slots=True)
class Terms:
    """What is promised: ``promisor`` will ``action`` ``quantity`` ``unit`` for ``promisee`` by ``deadline``."""

    promisor: int
    promisee: int
    action: str  # e.g. "deliver/refined-carbon"
    quantity: int
    unit: str
    deadline: int
    rests_on: tuple[ContentId, ...] = ()  # capabilities or leases the promise depends on

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(0, "promisor", UINT),
        Field(1, "promisee", UINT),
        Field(2, "action", TEXT),
        Field(3, "quantity", UINT),
        Field(4, "unit", TEXT),
        Field(5, "deadline", UINT),
        Field(6, "rests_on", CIDS, optional=True),
    )


@attrs.frozen(slots=True)
class Commitment:
    """One step in the life of a commitment.

    The offer carries the ``terms``; every later step names the offer by its content id in
    ``commitment`` and carries no terms, so a commitment is identified by its offer's bytes.
    """

    header: Header
    state: CommitmentState
    terms: Terms | None = None
    commitment: ContentId | None = None
    reason: str | None = None
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.COMMITMENT
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "state", EnumKind(CommitmentState)),
        Field(9, "terms", Struct(Terms, "terms"), optional=True),
        Field(10, "commitment", CID, optional=True),
        Field(11, "reason", TEXT, optional=True),
    )

    def check(self) -> None:
        # The field named is the one whose absence or presence breaks the rule (§6.2).
        if self.state is CommitmentState.OFFERED:
            if self.terms is None:
                raise MessageError("an offer carries terms", "terms")
            if self.commitment is not None:
                raise MessageError("an offer names no commitment: it is the commitment", "commitment")
        elif self.commitment is None:
            raise MessageError("a state change names the offer it is about", "commitment")
        elif self.terms is not None:
            raise MessageError("only the offer carries terms, not a state change", "terms")


# --- exception ---------------------------------------------------------------------------


class Scope(enum.IntEnum):
    """How far an exception reaches; escalation moves it up (cell → region)."""

    NODE = 0
    CELL = 1
    REGION = 2


class ExceptionCode(enum.IntEnum):
    """What kind of thing went wrong. Readers keep unknown codes as plain integers."""

    OTHER = 0
    THERMAL = 1
    POWER = 2
    FEEDSTOCK_QUALITY = 3
    COMMUNICATION = 4
    SOFTWARE = 5
    STRUCTURAL = 6
    PRODUCTION_QUALITY = 7


#: Severity 1 (advisory) .. 5 (loss of node or worse).
MAX_SEVERITY: Final = 5


@attrs.frozen(slots=True)
class ExceptionReport:
    """What went wrong, how badly, where, and which commitments or leases it affects."""

    header: Header
    code: int
    severity: int
    scope: Scope
    scope_id: int  # node, cell or region id per ``scope``
    affects: tuple[ContentId, ...] = ()
    digest: ContentId | None = None  # telemetry digest that backs the report
    detail: str | None = None
    #: Software lineage of the node(s) the report is about (version 2, spec/v2/faults.md §0);
    #: a version-1 reader keeps key 15 as an extension.
    lineage: str | None = None
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.EXCEPTION_REPORT
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "code", UINT),
        Field(9, "severity", UINT, check=in_range(1, MAX_SEVERITY)),
        Field(10, "scope", EnumKind(Scope)),
        Field(11, "scope_id", UINT),
        Field(12, "affects", CIDS, optional=True),
        Field(13, "digest", CID, optional=True),
        Field(14, "detail", TEXT, optional=True),
        Field(15, "lineage", TEXT, optional=True, since=2),
    )


# --- lease -------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class LeaseClaim:
    """A request for a resource for ``term_ms`` (exclusive use of one physical resource)."""

    header: Header
    resource: str  # e.g. "feedstock/2026-XY/volume-3"
    term_ms: int
    priority: int = 0
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.LEASE_CLAIM
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "resource", TEXT),
        Field(9, "term_ms", UINT),
        Field(10, "priority", UINT),
    )


@attrs.frozen(slots=True)
class LeaseGrant:
    """The authority's grant: ``holder`` may use ``resource`` until ``expires_at``.

    ``fencing_token`` is strictly greater than every token the authority issued before for the
    resource; a renewal is a new grant with the same token and a later ``expires_at``. The holder
    stops using the resource ``max_drift`` before expiry by its own clock (Gray & Cheriton).
    """

    header: Header
    resource: str
    holder: int
    claim: ContentId
    fencing_token: int
    term_ms: int
    expires_at: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.LEASE_GRANT
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "resource", TEXT),
        Field(9, "holder", UINT),
        Field(10, "claim", CID),
        Field(11, "fencing_token", UINT),
        Field(12, "term_ms", UINT),
        Field(13, "expires_at", UINT),
    )


@attrs.frozen(slots=True)
class LeaseRenew:
    """The holder asks to extend the grant named by ``grant`` for another ``term_ms``."""

    header: Header
    resource: str
    fencing_token: int
    grant: ContentId
    term_ms: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.LEASE_RENEW
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "resource", TEXT),
        Field(9, "fencing_token", UINT),
        Field(10, "grant", CID),
        Field(11, "term_ms", UINT),
    )


@attrs.frozen(slots=True)
class LeaseRelease:
    """The holder gives the resource back before expiry."""

    header: Header
    resource: str
    fencing_token: int
    grant: ContentId
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.LEASE_RELEASE
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "resource", TEXT),
        Field(9, "fencing_token", UINT),
        Field(10, "grant", CID),
    )


@attrs.frozen(slots=True)
class LeaseRevoke:
    """The authority withdraws a grant from ``effective_at`` on (the holder must stop by then)."""

    header: Header
    resource: str
    fencing_token: int
    holder: int
    effective_at: int
    reason: str | None = None
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.LEASE_REVOKE
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "resource", TEXT),
        Field(9, "fencing_token", UINT),
        Field(10, "holder", UINT),
        Field(11, "effective_at", UINT),
        Field(12, "reason", TEXT, optional=True),
    )


@attrs.frozen(slots=True)
class LeaseExpiry:
    """Notice that the grant with ``fencing_token`` lapsed at ``expired_at`` without renewal."""

    header: Header
    resource: str
    fencing_token: int
    holder: int
    expired_at: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 1
    TYPE: ClassVar = MessageType.LEASE_EXPIRY
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "resource", TEXT),
        Field(9, "fencing_token", UINT),
        Field(10, "holder", UINT),
        Field(11, "expired_at", UINT),
    )


Message = (
    CapabilityAdvertisement
    | Commitment
    | ExceptionReport
    | LeaseClaim
    | LeaseGrant
    | LeaseRenew
    | LeaseRelease
    | LeaseRevoke
    | LeaseExpiry
)

#: Message classes of version 1 by type code (every version's: :data:`.registry.MESSAGE_CLASSES`).
V1_MESSAGE_CLASSES: Final[dict[MessageType, type[Message]]] = {
    cls.TYPE: cls
    for cls in (
        CapabilityAdvertisement,
        Commitment,
        ExceptionReport,
        LeaseClaim,
        LeaseGrant,
        LeaseRenew,
        LeaseRelease,
        LeaseRevoke,
        LeaseExpiry,
    )
}

#: Kept for code written before versions 2 and 3: the version-1 classes.
MESSAGE_CLASSES: Final = V1_MESSAGE_CLASSES
