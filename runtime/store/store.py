"""The bundle store: what a node holds between receiving a bundle and getting rid of it.

Theory of operation
-------------------
A bundle node keeps every bundle it has accepted until it is delivered, forwarded, or its lifetime
runs out (RFC 9171 §4.3.1, Lifetime: past *creation time + lifetime* the payload "will no longer be
useful" and the bundle SHOULD be deleted). The store is that holding area. It does not parse
bundles: the caller hands it the bytes plus the metadata it already decoded (:class:`StoredBundle`).

Two promises carry the rest of the runtime:

1. **Accepted means durable.** ``put`` returns :class:`Accepted` only after the bundle is on stable
   storage (for the SQLite store: after the commit that contains it was fsync'd). The node sends
   XFER_ACK (RFC 9174 §5.2.3) or tells the local application "sent" only after ``put`` returned,
   so a crash can lose an unacknowledged bundle (the sender still has it), never an acknowledged one.
2. **Nothing is lost silently.** A bundle the store cannot hold is answered :class:`Refused`, with
   the quota that would have been crossed, before it is acknowledged; an accepted bundle leaves only
   through ``delete`` or ``expire``.

Duplicates (same bundle id, or same content id: the same signed message in another bundle) are
answered :class:`Duplicate` and cost nothing. Deduplication covers the bundles held *now*: once a
bundle is deleted its id may be accepted again (loop suppression is the router's job).

Writes apply in the order they were submitted; a ``put`` that is cancelled while waiting has an
unknown outcome (it may already be committed), exactly like an unacknowledged transfer: the peer
resends and gets :class:`Duplicate`.

Times are DTN times (milliseconds since 2000-01-01T00:00:00Z, RFC 9171 §4.2.6) and are always passed
in: a store never reads a clock. A bundle is expired once ``now >= expires_at``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from fleetwire.protocol.agent.store import (  # the store's records, re-exported
    MAX_DTN_TIME,
    Accepted,
    Duplicate,
    DuplicateOf,
    NotABundleStore,
    PutResult,
    Quota,
    RefusalReason,
    Refused,
    SourceShares,
    StoreClosed,
    StoreCorrupt,
    StoredBundle,
    StoreError,
    check_quota,
)
from fleetwire.protocol.replay import Seen

__all__ = [
    "Accepted",
    "BundleStore",
    "MAX_DTN_TIME",
    "DuplicateOf",
    "Duplicate",
    "NotABundleStore",
    "PutResult",
    "Quota",
    "RefusalReason",
    "Refused",
    "SourceShares",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoredBundle",
    "check_quota",
]


class BundleStore(Protocol):
    """What the router and node need from a store; both stores implement it with equal semantics.

    Listing order is arrival order (the order ``put`` calls were submitted), oldest first.

    Besides bundles a store keeps the node's replay memory (:mod:`fleetwire.protocol.replay`):
    the records of accepted messages and the per-issuer floors, so that a restart does not make
    a replay acceptable again. ``durable`` says whether any of it survives the process.
    """

    @property
    def durable(self) -> bool:
        """Whether what the store holds survives the process (SQLite: yes, memory: no)."""
        ...

    async def remember(self, seen: Sequence[Seen], floors: Mapping[int, int]) -> None:
        """Keep replay records and raise per-issuer floors; durable (if the store is) on return."""
        ...

    async def remembered(self) -> tuple[list[Seen], dict[int, int]]:
        """Every replay record kept, and the per-issuer floors."""
        ...

    async def forget_seen(self, now: int) -> int:
        """Drop replay records with ``keep_until <= now``; return how many went."""
        ...

    async def put(self, bundle: StoredBundle) -> PutResult:
        """Hold ``bundle``; returns :class:`Accepted` only once it is durable."""
        ...

    async def put_many(self, bundles: Sequence[StoredBundle]) -> list[PutResult]:
        """``put`` each bundle in order; one result per bundle."""
        ...

    async def get(self, bundle_id: bytes) -> StoredBundle | None:
        """The held bundle with this id, or ``None``."""
        ...

    async def pending_for(self, next_hop: str | None, limit: int) -> list[StoredBundle]:
        """Up to ``limit`` bundles queued for ``next_hop`` (``None``: not yet routed)."""
        ...

    async def pending_for_destination(self, destination: str, limit: int) -> list[StoredBundle]:
        """Up to ``limit`` held bundles addressed to ``destination``, whatever their next hop."""
        ...

    async def pending_ids(self, next_hop: str | None, limit: int) -> list[bytes]:
        """Like :meth:`pending_for`, ids only: cheap enough for a periodic sweep."""
        ...

    async def assign_next_hop(self, bundle_id: bytes, next_hop: str | None) -> bool:
        """Queue the bundle for ``next_hop`` (``None``: back to unrouted); ``False`` if not held."""
        ...

    async def tombstone(
        self, bundle_id: bytes, next_hop: str, expires_at: int | None = None
    ) -> bool:
        """Keep only the record of a bundle that is done with (delivered, forwarded): its ids,
        endpoints and times stay, queued under ``next_hop``, so a duplicate is still recognised
        until it expires — at ``expires_at`` if that is earlier; its bytes go (``data`` becomes
        empty) and stop counting against the quota. ``False`` if it was not held."""
        ...

    async def delete(self, bundle_id: bytes) -> bool:
        """Drop a delivered or forwarded bundle; ``False`` if it was not held."""
        ...

    async def expire(self, now: int) -> list[bytes]:
        """Drop every bundle with ``expires_at <= now``; their ids, earliest expiry first."""
        ...

    async def count(self) -> int:
        """Number of bundles held."""
        ...

    async def bytes_used(self) -> int:
        """Sum of the sizes of the bundles held."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release resources; later calls raise :class:`StoreClosed`."""
        ...
