"""Protocol version 2: digests, forensic pull, escalation, isolation, hierarchical reservations.

The messages of spec/v2/faults.md (types 10–15; and key 15, ``lineage``, added to version 1's
exception report, which lives in :mod:`.v1` with ``since=2`` on its field) and of
spec/v2/reservations.md (types 16–19). Header, encoding and envelope are version 1's; every
type here is written with ``min_version`` 2 at least, because a version-1 reader cannot act
on it (the codec refuses to write one with less, :func:`.codec.encode_message`).

Each class is a frozen, slotted attrs value with the same shape as :mod:`.v1`'s: a header, a
body as a ``FIELDS`` table, unknown keys kept as ``extensions``. The coordination logic that
produces and consumes them lives in :mod:`fleetwire.protocol.coordination` (``digests``,
``forensics``, ``escalation``, ``isolation``, ``reservations``).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Final

import attrs

from ..errors import MessageError
from ..ids import ContentId
from .header import Header, MessageType
from .schema import (
    BYTES,
    CID,
    CIDS,
    INT64,
    TEXT,
    UINT,
    UINT64_MAX,
    EnumKind,
    Field,
    ListOf,
    MapOf,
    Struct,
    in_range,
)

#: faults.md §1: at most 64 metrics, of at most 64 histogram buckets, named in 1..64 bytes.
MAX_METRICS: Final = 64
MAX_BUCKETS: Final = 64
MAX_METRIC_NAME: Final = 64

_AT_LEAST_ONE: Final = in_range(1, UINT64_MAX)


def _non_empty(value: Any, path: str) -> None:
    if not value:
        raise MessageError("must not be empty", path)


# --- digests and forensic pull (faults.md §1, §2) -----------------------------------------


class Trigger(enum.IntEnum):
    """Why a digest was sent."""

    PERIODIC = 0
    THRESHOLD = 1


@attrs.frozen(slots=True)
class Stats:
    """One metric over a digest's period; means and sigmas in thousandths (faults.md §1)."""

    count: int
    mean: int
    sigma: int
    minimum: int
    maximum: int
    histogram: tuple[int, ...]
    out_of_control: int
    anomaly: int

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(0, "count", UINT),
        Field(1, "mean", INT64),
        Field(2, "sigma", UINT),
        Field(3, "minimum", INT64),
        Field(4, "maximum", INT64),
        Field(5, "histogram", ListOf(UINT, max_items=MAX_BUCKETS), check=_non_empty),
        Field(6, "out_of_control", UINT),
        Field(7, "anomaly", UINT),
    )


@attrs.frozen(slots=True)
class Digest:
    """A node's statistics of its telemetry over ``[period_start, period_end]`` (type 10)."""

    header: Header
    period_start: int
    period_end: int
    trigger: Trigger
    metrics: tuple[tuple[str, Stats], ...]
    details: tuple[ContentId, ...] = ()
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.DIGEST
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "period_start", UINT),
        Field(9, "period_end", UINT),
        Field(10, "trigger", EnumKind(Trigger)),
        Field(11, "metrics", MapOf(Struct(Stats, "stats"), MAX_METRICS, MAX_METRIC_NAME)),
        Field(12, "details", CIDS, optional=True),
    )

    def check(self) -> None:
        if self.period_end < self.period_start:
            raise MessageError("the period ends before it starts", "period_end")


@attrs.frozen(slots=True)
class DetailRequest:
    """A coordinator asks a node for detail chunks by content id (type 11)."""

    header: Header
    details: tuple[ContentId, ...]
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.DETAIL_REQUEST
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(8, "details", CIDS, check=_non_empty),)


@attrs.frozen(slots=True)
class DetailAnswer:
    """One detail chunk, named by its content id (type 12). A reader checks that ``data``
    hashes to ``detail`` before it decodes ``data`` (faults.md §2): that is the receiving
    coordinator's rule, not the codec's, which only carries the bytes."""

    header: Header
    detail: ContentId
    data: bytes
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.DETAIL_ANSWER
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(8, "detail", CID), Field(9, "data", BYTES))


# --- escalation (faults.md §3) ---------------------------------------------------------------


class Resolution(enum.IntEnum):
    RESOLVED = 0
    CONTAINED = 1
    SUPERSEDED = 2


@attrs.frozen(slots=True)
class EscalationAck:
    """The level above acknowledges an escalated report by its content id (type 13)."""

    header: Header
    escalation: ContentId
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.ESCALATION_ACK
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(8, "escalation", CID),)


@attrs.frozen(slots=True)
class EscalationClose:
    """The level above closes an escalated incident (type 14)."""

    header: Header
    escalation: ContentId
    resolution: Resolution
    detail: str | None = None
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.ESCALATION_CLOSE
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "escalation", CID),
        Field(9, "resolution", EnumKind(Resolution)),
        Field(10, "detail", TEXT, optional=True),
    )


# --- isolation (faults.md §4) ----------------------------------------------------------------


class IsolationAction(enum.IntEnum):
    SEVER = 0
    LIFT = 1


class IsolationScope(enum.IntEnum):
    CELL = 1
    REGION = 2


@attrs.frozen(slots=True)
class IsolationOrder:
    """A region coordinator severs, or lifts the severing of, a cell or a region (type 15)."""

    header: Header
    action: IsolationAction
    scope: IsolationScope
    target: int
    reason: str | None = None
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.ISOLATION_ORDER
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "action", EnumKind(IsolationAction)),
        Field(9, "scope", EnumKind(IsolationScope)),
        Field(10, "target", UINT),
        Field(11, "reason", TEXT, optional=True, check=_non_empty),
    )


# --- hierarchical reservations (reservations.md) ---------------------------------------------


@attrs.frozen(slots=True)
class BlockRequest:
    """A cell coordinator asks its region for ``amount`` units of ``pool`` (type 16)."""

    header: Header
    pool: str
    amount: int
    term_ms: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.BLOCK_REQUEST
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "pool", TEXT),
        Field(9, "amount", UINT, check=_AT_LEAST_ONE),
        Field(10, "term_ms", UINT),
    )


@attrs.frozen(slots=True)
class BlockGrant:
    """The region leases ``amount`` units of ``pool`` to ``cell`` as ``block`` (type 17)."""

    header: Header
    pool: str
    block: str
    cell: int
    amount: int
    fencing_token: int
    expires_at: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.BLOCK_GRANT
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "pool", TEXT),
        Field(9, "block", TEXT),
        Field(10, "cell", UINT),
        Field(11, "amount", UINT, check=_AT_LEAST_ONE),
        Field(12, "fencing_token", UINT),
        Field(13, "expires_at", UINT),
    )


@attrs.frozen(slots=True)
class BlockRenew:
    """The cell asks to extend ``block`` for another ``term_ms`` (type 18)."""

    header: Header
    pool: str
    block: str
    fencing_token: int
    term_ms: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.BLOCK_RENEW
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "pool", TEXT),
        Field(9, "block", TEXT),
        Field(10, "fencing_token", UINT),
        Field(11, "term_ms", UINT),
    )


@attrs.frozen(slots=True)
class BlockRelease:
    """The cell gives ``block`` back before it expires (type 19)."""

    header: Header
    pool: str
    block: str
    fencing_token: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 2
    TYPE: ClassVar = MessageType.BLOCK_RELEASE
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "pool", TEXT),
        Field(9, "block", TEXT),
        Field(10, "fencing_token", UINT),
    )


V2_MESSAGE_CLASSES: Final = {
    cls.TYPE: cls
    for cls in (
        Digest,
        DetailRequest,
        DetailAnswer,
        EscalationAck,
        EscalationClose,
        IsolationOrder,
        BlockRequest,
        BlockGrant,
        BlockRenew,
        BlockRelease,
    )
}
