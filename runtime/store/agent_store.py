"""The bundle agent's synchronous store, made durable by a runtime store behind it.

Theory of operation
-------------------
The sans-IO :class:`~fleetwire.protocol.agent.agent.BundleAgent` calls its store
synchronously; the runtime's stores (:mod:`.sqlite_store`, :mod:`.memory_store`) are async
and commit in worker threads. :class:`JournalledAgentStore` joins the two:

* every call is answered at once from an in-memory mirror
  (:class:`~fleetwire.protocol.agent.agent_store.MemoryAgentStore`, the same dedupe and quota
  rules as the runtime stores); every write that changed the mirror is also appended to a
  **journal**, in call order;
* one **writer** task replays the journal into the runtime store, everything queued at once
  as one submission (:meth:`~.sqlite_store.SQLiteBundleStore.apply_writes`: one transaction,
  one fsync, however many links fed it meanwhile — group commit);
* :meth:`commit` returns once every write journaled before the call is durable. The driver
  feeds the agent, commits, and only then carries out the actions — above all the link
  acknowledgements (``TransferAccepted``) and "sent" to the application — so *accepted means
  durable* holds exactly as before: a crash can lose an unacknowledged bundle (its sender
  still has it), never an acknowledged one.

The mirror is what the agent acts on, so the two must agree: the runtime store is filled
from nothing but the journal, in order, and at start the mirror is read back from it
(:func:`open_agent_store`). A write the runtime store answered differently from the mirror
(it cannot, short of a bug or a store shared with someone else) is logged.

Memory: the mirror holds the bytes of every held bundle — the agent holds them anyway (it
forwards from memory) — and a light record per tombstone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.bundling import DELIVERED, FORWARDED, LOCAL
from fleetwire.protocol.replay import Seen

from .store import (
    Accepted,
    BundleStore,
    PutResult,
    Quota,
    StoredBundle,
    StoreError,
    check_quota,
)

__all__ = ["JournalledAgentStore", "open_agent_store"]

log = logging.getLogger("fleetwire.store")

_Write = tuple[str, Any]


class JournalledAgentStore:
    """An :class:`~fleetwire.protocol.agent.agent_store.AgentStore` over a runtime store
    (module docstring); open it with :func:`open_agent_store`."""

    def __init__(self, backing: BundleStore, quota: Quota | None = None) -> None:
        self.backing = backing
        self.quota = quota
        #: (bundles, bytes, of them from this neighbour: bundles, bytes) held outside the
        #: mirror and counted against the quota: a node's ingress (``runtime/node/ingress``).
        self.waiting: Callable[[str | None], tuple[int, int, int, int]] | None = None
        self._mirror = MemoryAgentStore(quota)
        self._journal: list[_Write] = []
        self._journaled = 0  # writes ever journaled
        self._durable = 0  # writes ever made durable
        self._failure: BaseException | None = None
        self._work = trio.Event()
        self._progress = trio.Event()
        #: Submissions to the runtime store so far (fewer than commits: group commit).
        self.submissions = 0

    @property
    def durable(self) -> bool:
        return self.backing.durable

    # --- reads: the mirror ---------------------------------------------------------------

    def get(self, bundle_id: bytes) -> StoredBundle | None:
        return self._mirror.get(bundle_id)

    def pending_for(self, next_hop: str | None, limit: int) -> list[StoredBundle]:
        return self._mirror.pending_for(next_hop, limit)

    def next_expiry(self) -> int | None:
        return self._mirror.next_expiry()

    def remembered(self) -> tuple[list[Seen], dict[int, int]]:
        return self._mirror.remembered()

    def count(self) -> int:
        return self._mirror.count()

    def held_from(self, neighbour: str | None) -> tuple[int, int]:
        """(bundles, bytes) held from ``neighbour`` (as records name it, ``received_from``):
        its per-source share of the quota; (0, 0) for ``None`` (this node's own)."""
        # The mirror's per-source totals (its own quota check reads them).
        held: tuple[int, int] = self._mirror._shares.of(neighbour)
        return held

    def bytes_used(self) -> int:
        return self._mirror.bytes_used()

    # --- writes: the mirror, then the journal ----------------------------------------------

    def put(self, bundle: StoredBundle) -> PutResult:
        waiting = self.waiting
        if waiting is not None and self.quota is not None:
            # What a node's ingress holds counts against the quota too (custody first): a
            # bundle that fits the mirror but not the mirror and the ingress together is
            # refused here, so the ingress's own bundles always find room at adoption.
            bundles, size, from_bundles, from_bytes = waiting(bundle.received_from)
            if (bundles or size) and self._mirror.get(bundle.bundle_id) is None:
                held_bundles, held_bytes = self.held_from(bundle.received_from)
                refused = check_quota(
                    self.quota, self._mirror.count() + bundles,
                    self._mirror.bytes_used() + size, bundle,
                    (held_bundles + from_bundles, held_bytes + from_bytes),
                )  # fmt: skip
                if refused is not None:
                    return refused
        result = self._mirror.put(bundle)
        if isinstance(result, Accepted):
            self._write(("put", bundle))
        return result

    def tombstone(self, bundle_id: bytes, next_hop: str, expires_at: int | None = None) -> bool:
        done = self._mirror.tombstone(bundle_id, next_hop, expires_at)
        if done:
            self._write(("tombstone", (bundle_id, next_hop, expires_at)))
        return done

    def delete(self, bundle_id: bytes) -> bool:
        done = self._mirror.delete(bundle_id)
        if done:
            self._write(("delete", bundle_id))
        return done

    def expire(self, now: int) -> list[bytes]:
        gone = self._mirror.expire(now)
        if gone:
            self._write(("expire", now))
        return gone

    def remember(self, seen: Sequence[Seen], floors: Mapping[int, int]) -> None:
        self._mirror.remember(seen, floors)
        self._write(("remember", (list(seen), dict(floors))))

    def forget_seen(self, now: int) -> int:
        gone = self._mirror.forget_seen(now)
        if gone:
            self._write(("forget", now))
        return gone

    def _write(self, write: _Write) -> None:
        self._journal.append(write)
        self._journaled += 1
        self._work.set()

    # --- durability ------------------------------------------------------------------------

    async def commit(self) -> None:
        """Return once every write journaled before this call is durable (module docstring);
        :class:`~.store.StoreError` if the runtime store failed."""
        target = self._journaled
        while self._durable < target and self._failure is None:
            await self._progress.wait()
        if self._failure is not None:
            raise StoreError(f"bundle store write failed: {self._failure}") from self._failure
        if target == 0 or self._durable >= target:
            await trio.lowlevel.checkpoint()

    async def run_writer(self) -> None:
        """Replay the journal into the runtime store until cancelled (module docstring)."""
        while True:
            await self._work.wait()
            self._work = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Write everything journaled so far (the writer's step, and the last one at close)."""
        while self._journal and self._failure is None:
            writes, self._journal = self._journal, []
            try:
                # Shielded: once taken from the journal the writes must reach the store's
                # queue (a cancelled submission may or may not commit); the wait is one commit.
                with trio.CancelScope(shield=True):
                    results = await _apply(self.backing, writes)
            except Exception as exc:  # the runtime store failed (closed, disk): say so to all
                self._failure = exc
                self._wake()
                return
            self.submissions += 1
            for (kind, arg), result in zip(writes, results, strict=True):
                if kind == "put" and not isinstance(result, Accepted):
                    log.warning("event=store-diverged bundle=%s answer=%r", arg.bundle_id.hex(),
                                result)  # fmt: skip
            self._durable += len(writes)
            self._wake()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()


async def _apply(backing: BundleStore, writes: list[_Write]) -> list[Any]:
    apply_writes = getattr(backing, "apply_writes", None)
    if apply_writes is not None:
        results: list[Any] = await apply_writes(writes)
        return results
    # A store without the batch form (the in-memory one): one call each, in order.
    results = []
    for kind, arg in writes:
        if kind == "put":
            results.append(await backing.put(arg))
        elif kind == "tombstone":
            results.append(await backing.tombstone(*arg))
        elif kind == "delete":
            results.append(await backing.delete(arg))
        elif kind == "expire":
            results.append(await backing.expire(arg))
        elif kind == "remember":
            await backing.remember(*arg)
            results.append(None)
        else:
            results.append(await backing.forget_seen(arg))
    return results


@asynccontextmanager
async def open_agent_store(backing: BundleStore) -> AsyncIterator[JournalledAgentStore]:
    """Read ``backing`` back into a :class:`JournalledAgentStore` and run its writer until the
    block exits; then write what is still journaled (shielded: what the agent decided stays
    decided)."""
    store = JournalledAgentStore(backing, getattr(backing, "quota", None))
    for next_hop in (LOCAL, None, DELIVERED, FORWARDED):
        for record in await backing.pending_for(next_hop, 1 << 30):
            store._mirror.restore(record)
    seen, floors = await backing.remembered()
    store._mirror.remember(seen, floors)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run_writer)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.flush()  # a failure was recorded: nothing more can be made durable
