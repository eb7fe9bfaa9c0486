"""An in-memory bundle store for simulations: the semantics of the SQLite store, without a disk.

Same promises as :mod:`fleetwire.runtime.store.store` (dedupe by bundle id and content id, quotas
answered with :class:`~fleetwire.runtime.store.store.Refused`, expiry by a passed-in ``now``,
arrival-order listings), except durability: everything is gone when the process ends. Use it for
large simulated fleets, where thousands of nodes each need a store and none must survive a crash.

Layout: one dict of held bundles by id, one by content id, per-hop and per-destination queues kept
sorted by arrival sequence (``bisect``: appends are the common case), and a min-heap of
``(expires_at, seq, bundle_id)`` with lazy deletion so ``expire`` costs O(k log n) for k expired.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping, Sequence
from typing import TypeVar

import attrs
import trio
from fleetwire.protocol.replay import Seen

from .ingress import IngressRun
from .store import (
    Accepted,
    Duplicate,
    DuplicateOf,
    PutResult,
    Quota,
    SourceShares,
    StoreClosed,
    StoredBundle,
    check_quota,
)

__all__ = ["MemoryBundleStore"]

_K = TypeVar("_K")


class _Queue:
    """Bundle ids in arrival order: a sorted list of sequence numbers plus a seq -> id map."""

    __slots__ = ("ids", "seqs")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.ids: dict[int, bytes] = {}

    def add(self, seq: int, bundle_id: bytes) -> None:
        if not self.seqs or seq > self.seqs[-1]:
            self.seqs.append(seq)
        else:
            bisect.insort(self.seqs, seq)
        self.ids[seq] = bundle_id

    def remove(self, seq: int) -> None:
        del self.seqs[bisect.bisect_left(self.seqs, seq)]
        del self.ids[seq]

    def first(self, limit: int) -> list[bytes]:
        return [self.ids[s] for s in self.seqs[: max(limit, 0)]]


class MemoryBundleStore:
    """A :class:`~fleetwire.runtime.store.store.BundleStore` held in dicts; see the module docstring."""

    def __init__(self, quota: Quota | None = None) -> None:
        self._quota = quota or Quota()
        self._held: dict[bytes, tuple[int, StoredBundle]] = {}  # bundle id -> (seq, bundle)
        self._by_content: dict[bytes, bytes] = {}
        self._by_hop: dict[str | None, _Queue] = {}
        self._by_destination: dict[str, _Queue] = {}
        self._expiry: list[tuple[int, int, bytes]] = []
        self._seq = 0
        self._bytes = 0
        self._shares = SourceShares()
        self._seen: dict[tuple[int, int], Seen] = {}
        self._floors: dict[int, int] = {}
        self._ingress: dict[int, IngressRun] = {}  # seq -> run, in insertion (seq) order
        self._ingress_seq = 0
        self._closed = False

    #: Nothing survives the process (see :class:`~fleetwire.runtime.store.store.BundleStore`).
    durable = False

    async def __aenter__(self) -> MemoryBundleStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def quota(self) -> Quota:
        """The bounds this store enforces."""
        return self._quota

    # -- writes ---------------------------------------------------------------------------

    # -- the ingress (:mod:`.ingress`; the same interface as the SQLite store's) -----------

    async def ingress_put(self, bundles: Sequence[bytes], received_from: int | None) -> int:
        await self._checkpoint()
        self._ingress_seq += 1
        self._ingress[self._ingress_seq] = IngressRun(
            self._ingress_seq, received_from, tuple(bundles)
        )
        return self._ingress_seq

    async def ingress_runs(self, after: int, limit: int) -> list[IngressRun]:
        await self._checkpoint()
        return [run for seq, run in self._ingress.items() if seq > after][:limit]

    async def ingress_delete(self, seqs: Sequence[int]) -> None:
        await self._checkpoint()
        for seq in seqs:
            self._ingress.pop(seq, None)

    async def put(self, bundle: StoredBundle) -> PutResult:
        await self._checkpoint()
        return self._put(bundle)

    async def put_many(self, bundles: Sequence[StoredBundle]) -> list[PutResult]:
        await self._checkpoint()
        return [self._put(b) for b in bundles]

    async def assign_next_hop(self, bundle_id: bytes, next_hop: str | None) -> bool:
        await self._checkpoint()
        entry = self._held.get(bundle_id)
        if entry is None:
            return False
        seq, bundle = entry
        self._queue(self._by_hop, bundle.next_hop).remove(seq)
        self._forget_empty(self._by_hop, bundle.next_hop)
        bundle = attrs.evolve(bundle, next_hop=next_hop)
        self._held[bundle_id] = (seq, bundle)
        self._queue(self._by_hop, next_hop).add(seq, bundle_id)
        return True

    async def tombstone(
        self, bundle_id: bytes, next_hop: str, expires_at: int | None = None
    ) -> bool:
        if not await self.assign_next_hop(bundle_id, next_hop):
            return False
        seq, bundle = self._held[bundle_id]
        self._bytes -= bundle.size
        # A tombstone leaves its neighbour's share (see the SQLite store's tombstone).
        self._shares.add(bundle.received_from, -1, -bundle.size)
        bundle = attrs.evolve(bundle, data=b"", received_from=None)
        if expires_at is not None and expires_at < bundle.expires_at:
            bundle = attrs.evolve(bundle, expires_at=expires_at)
            # The later heap entry goes stale: expire() finds the bundle gone by then.
            heapq.heappush(self._expiry, (bundle.expires_at, seq, bundle_id))
        self._held[bundle_id] = (seq, bundle)
        return True

    # -- replay memory --------------------------------------------------------------------

    async def remember(self, seen: Sequence[Seen], floors: Mapping[int, int]) -> None:
        await self._checkpoint()
        for record in seen:
            self._seen[record.issuer, record.sequence] = record
        for issuer, floor in floors.items():
            self._floors[issuer] = max(floor, self._floors.get(issuer, floor))
            for key in [k for k in self._seen if k[0] == issuer and k[1] <= floor]:
                del self._seen[key]

    async def remembered(self) -> tuple[list[Seen], dict[int, int]]:
        await self._checkpoint()
        return list(self._seen.values()), dict(self._floors)

    async def forget_seen(self, now: int) -> int:
        await self._checkpoint()
        stale = [key for key, record in self._seen.items() if record.keep_until <= now]
        for key in stale:
            del self._seen[key]
        return len(stale)

    async def delete(self, bundle_id: bytes) -> bool:
        await self._checkpoint()
        return self._remove(bundle_id)

    async def expire(self, now: int) -> list[bytes]:
        await self._checkpoint()
        expired: list[bytes] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, bundle_id = heapq.heappop(self._expiry)
            entry = self._held.get(bundle_id)
            if entry is not None and entry[0] == seq:  # else: a stale heap entry
                self._remove(bundle_id)
                expired.append(bundle_id)
        return expired

    # -- reads ----------------------------------------------------------------------------

    async def get(self, bundle_id: bytes) -> StoredBundle | None:
        await self._checkpoint()
        entry = self._held.get(bundle_id)
        return None if entry is None else entry[1]

    async def pending_for(self, next_hop: str | None, limit: int) -> list[StoredBundle]:
        await self._checkpoint()
        queue = self._by_hop.get(next_hop)
        return [] if queue is None else [self._held[i][1] for i in queue.first(limit)]

    async def pending_ids(self, next_hop: str | None, limit: int) -> list[bytes]:
        await self._checkpoint()
        queue = self._by_hop.get(next_hop)
        return [] if queue is None else queue.first(limit)

    async def pending_for_destination(self, destination: str, limit: int) -> list[StoredBundle]:
        await self._checkpoint()
        queue = self._by_destination.get(destination)
        return [] if queue is None else [self._held[i][1] for i in queue.first(limit)]

    async def count(self) -> int:
        await self._checkpoint()
        return len(self._held)

    async def bytes_used(self) -> int:
        await self._checkpoint()
        return self._bytes

    async def close(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()

    # -- internals ------------------------------------------------------------------------

    async def _checkpoint(self) -> None:
        # Every store call is a Trio checkpoint, as with the SQLite store, so code written against
        # one behaves the same (cancellation, scheduling) against the other.
        if self._closed:
            raise StoreClosed("bundle store is closed")
        await trio.lowlevel.checkpoint()

    def _put(self, bundle: StoredBundle) -> PutResult:
        if self._closed:
            raise StoreClosed("bundle store is closed")
        if bundle.bundle_id in self._held:
            return Duplicate(bundle.bundle_id, DuplicateOf.BUNDLE_ID, bundle.bundle_id)
        if bundle.content_id is not None:
            existing = self._by_content.get(bundle.content_id)
            if existing is not None:
                return Duplicate(bundle.bundle_id, DuplicateOf.CONTENT_ID, existing)
        refused = check_quota(
            self._quota, len(self._held), self._bytes, bundle, self._shares.of(bundle.received_from)
        )
        if refused is not None:
            return refused
        self._seq += 1
        seq = self._seq
        self._held[bundle.bundle_id] = (seq, bundle)
        if bundle.content_id is not None:
            self._by_content[bundle.content_id] = bundle.bundle_id
        self._queue(self._by_hop, bundle.next_hop).add(seq, bundle.bundle_id)
        self._queue(self._by_destination, bundle.destination).add(seq, bundle.bundle_id)
        heapq.heappush(self._expiry, (bundle.expires_at, seq, bundle.bundle_id))
        self._bytes += bundle.size
        self._shares.add(bundle.received_from, 1, bundle.size)
        return Accepted(bundle.bundle_id)

    def _remove(self, bundle_id: bytes) -> bool:
        entry = self._held.pop(bundle_id, None)
        if entry is None:
            return False
        seq, bundle = entry
        if bundle.content_id is not None:
            del self._by_content[bundle.content_id]
        self._by_hop[bundle.next_hop].remove(seq)
        self._forget_empty(self._by_hop, bundle.next_hop)
        self._by_destination[bundle.destination].remove(seq)
        self._forget_empty(self._by_destination, bundle.destination)
        self._bytes -= bundle.size
        self._shares.add(bundle.received_from, -1, -bundle.size)
        # Deleted bundles leave stale heap entries; rebuild once they outnumber the live ones.
        if len(self._expiry) > 64 and len(self._expiry) > 2 * len(self._held):
            self._expiry = [(b.expires_at, s, i) for i, (s, b) in self._held.items()]
            heapq.heapify(self._expiry)
        return True

    @staticmethod
    def _queue(index: dict[_K, _Queue], key: _K) -> _Queue:
        queue = index.get(key)
        if queue is None:
            queue = index[key] = _Queue()
        return queue

    @staticmethod
    def _forget_empty(index: dict[_K, _Queue], key: _K) -> None:
        if not index[key].seqs:
            del index[key]
