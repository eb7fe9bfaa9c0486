"""The durable bundle store: SQLite in WAL mode, with group commit.

Theory of operation
-------------------
``put`` must not return before its bundle is on stable storage (see :mod:`.store`), and one fsync'd
transaction per bundle caps a disk at a few thousand bundles a second. So writes are *grouped*:
every write (put, next-hop change, delete, expire) joins the newest open batch on a queue; a single
committer task takes the oldest batch, applies it in one transaction on a worker thread, commits
(one fsync for the whole batch), then wakes every waiter of the batch at once. While a batch
commits, the next one gathers, so the batch size follows the load without a timer: one producer gets
one-row transactions and no added latency, a thousand producers share each fsync. A batch is capped
at half the writes in flight (and at ``max_batch`` rows, ``max_batch_bytes``), so two batches
alternate: one on the disk while the producers of the other, just woken, refill it. Producers wait
(back-pressure) once ``4 * max_batch`` writes are in flight.

A batch that fails to commit (disk full, I/O error) is rolled back whole, and every waiter gets
:class:`~.store.StoreError`: no one is told ``Accepted`` for a bundle that is not on disk.

Inside a batch, runs of puts take a fast path: multi-row ``INSERT .. ON CONFLICT DO NOTHING``
statements when the quota has room for the whole run; if any row was skipped (a duplicate), the run
is rolled back to a savepoint and replayed row by row to say which bundle repeated which.

All SQLite work happens off the Trio thread, on worker threads from Trio's cache (reads through
``trio.to_thread.run_sync``, batches through ``trio.lowlevel.start_thread_soon``: see
``_in_worker``), on one connection that a ``CapacityLimiter`` of 1 keeps to one thread at a time;
a read waits for the batch being committed. The file is opened in exclusive locking mode: a second
process opening the same store is refused instead of silently sharing it (the committer keeps the
count and byte totals in memory).

Recovery: after a crash SQLite replays or discards the WAL on open, so the file holds exactly the
committed transactions; opening then checks the file is ours (``application_id``), its schema
version (``user_version``), and runs ``PRAGMA quick_check``.

Disk use: the write-ahead log is copied into the database (a checkpoint) whenever it passes
``wal_limit`` bytes, and truncated back to that size, so under load the log stays near the
limit; once the store has been idle for ``idle_tidy_s`` the committer gives freed pages back
(``incremental_vacuum``: a store created with ``auto_vacuum = INCREMENTAL``) and checkpoints
with ``TRUNCATE``, so a store at rest is its database file alone — about the size of what it
holds. Both are ordinary SQLite transactions and checkpoints: a crash in either loses nothing
committed (the WAL is replayed on open), so the durability promise is unchanged.

The ingress (:mod:`.ingress`, custody first for a node's accepted sessions): ``ingress_put``
writes a run of received bundles as one row through the same queue (so it shares the group
commit), ``ingress_runs`` reads rows back in order and ``ingress_delete`` drops adopted ones.
Its rows are not bundles of the store: ``count`` and the quota checks here do not see them
(the node counts them against the quota itself).

Modules: this one is the store's Trio side (the queue, the committer, the reads);
:mod:`.sqlite_writes` applies a batch on the worker thread; :mod:`.sqlite_schema` is the file
(schema, migrations, opening and its checks). The names this package exported before are all
importable from here.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import math
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from fleetwire.protocol.replay import Seen

from . import store_eids
from .ingress import IngressRun, pack_lengths, split_run
from .sqlite_schema import (
    _COLUMNS,
    _SELECT,
    APPLICATION_ID,
    DEFAULT_WAL_LIMIT,
    SCHEMA,
    SCHEMA_VERSION,
    TUNING,
    _connect,
    wal_pragmas,
)
from .sqlite_writes import (
    _DELETE,
    _EXPIRE,
    _FORGET,
    _HOP,
    _INGRESS_DELETE,
    _INGRESS_PUT,
    _PUTS,
    _REMEMBER,
    _ROWS_PER_INSERT,
    _TOMBSTONE,
    _apply_batch,
    _bytes_of,
    _Op,
    _Run,
    _tidy,
)
from .store import (
    MAX_DTN_TIME,
    Accepted,
    PutResult,
    Quota,
    SourceShares,
    StoreClosed,
    StoreCorrupt,
    StoredBundle,
    StoreError,
)
from .store_eids import EidTable

__all__ = [
    "APPLICATION_ID",
    "SCHEMA",
    "SCHEMA_VERSION",
    "DEFAULT_WAL_LIMIT",
    "TUNING",
    "SQLiteBundleStore",
    "open_sqlite_store",
    "wal_pragmas",
]

#: Seconds without a write after which the committer checkpoints the WAL away (see the module
#: docstring).
DEFAULT_IDLE_TIDY_S = 1.0

#: Default batch caps: enough rows to amortise an fsync, few enough bytes to bound a transaction.
DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024
#: Smallest batch cap the in-flight rule may choose (see ``_submit``).
_MIN_BATCH = 32
#: Producers wait once this many full batches of writes are in flight.
_QUEUE_DEPTH = 4

_T = TypeVar("_T")


class _Batch:
    """Writes that commit in one transaction, and the event all their waiters park on."""

    __slots__ = ("done", "error", "ops", "size", "writes")

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.size = 0
        self.writes = 0
        self.error: BaseException | None = None
        self.done = trio.Event()


def _records(names: Mapping[int | None, str | None], rows: list[Any]) -> list[StoredBundle]:
    """Rows of ``_SELECT`` as records (on the worker thread: see ``_read``)."""
    make = StoredBundle.checked_by_caller
    # source and destination are NOT NULL columns, so their names are never None; the mapping
    # is read as Any here rather than paying a cast per row on the read path.
    named: Mapping[int | None, Any] = names
    try:
        return [
            make(bundle_id, content_id, named[source], named[destination], expires_at,
                 received_at, data, names[next_hop], names[received_from])
            for (bundle_id, content_id, source, destination, next_hop, received_from, expires_at,
                 received_at, data) in rows
        ]  # fmt: skip
    except KeyError as exc:
        raise StoreCorrupt(
            f"a stored bundle names EID id {exc.args[0]}, which is unknown"
        ) from None


class SQLiteBundleStore:
    """A durable :class:`~.store.BundleStore`; open it with :func:`open_sqlite_store`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        quota: Quota,
        count: int,
        used: int,
        shares: SourceShares | None = None,
        eids: EidTable | None = None,
        max_batch: int,
        max_batch_bytes: int,
        idle_tidy_s: float = DEFAULT_IDLE_TIDY_S,
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._idle_tidy_s = idle_tidy_s
        self._untidy = True  # written since the last idle checkpoint (or just opened)
        self._quota = quota
        self._count = count
        self._bytes = used
        self._shares = shares or SourceShares()
        self._eids = eids or EidTable()
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._limiter = trio.CapacityLimiter(1)
        # Batches not yet started, oldest first; only the newest one takes more writes.
        self._batches: deque[_Batch] = deque()
        self._committing: list[_Batch] = []
        self._work = trio.Event()  # set when a batch is queued (or on close)
        self._space = trio.lowlevel.ParkingLot()  # producers waiting for the queue to drain
        self._committer_done = trio.Event()
        self._in_flight = 0  # writes submitted and not yet committed
        self._max_in_flight = _QUEUE_DEPTH * max_batch
        self._closed = False
        #: Transactions committed so far (a group commit shows as fewer batches than writes).
        self.batches_committed = 0
        #: Idle tidy-ups done (vacuum freed pages, checkpoint and truncate the WAL).
        self.tidied = 0

    #: What the store holds survives the process (see :class:`~.store.BundleStore`).
    durable = True

    # -- writes: queued for the committer --------------------------------------------------

    def _rows(self, bundles: Sequence[StoredBundle]) -> list[tuple[Any, ...]]:
        """The rows ``_insert_rows`` binds: EIDs as ids (a new EID gets one here), blobs as
        bytearray and "none" as 0, the types sqlite3 binds without its adapter lookup
        (``_VALUES``)."""
        ids = self._eids.ids
        return [
            (bytearray(b.bundle_id), bytearray(c) if (c := b.content_id) is not None else 0,
             ids[b.source], ids[b.destination], ids[b.next_hop], ids[b.received_from],
             b.expires_at, b.received_at, bytearray(b.data))
            for b in bundles
        ]  # fmt: skip

    async def put(self, bundle: StoredBundle) -> PutResult:
        op = _Op(_PUTS, (self._rows([bundle]), [bundle]), bundle.size)
        await self._submit([op])
        result: PutResult = op.result[0] if op.result else Accepted(bundle.bundle_id)
        return result

    async def put_many(self, bundles: Sequence[StoredBundle]) -> list[PutResult]:
        # Groups of one multi-row INSERT each: the per-bundle cost here is the row tuple.
        rows = self._rows(bundles)
        ops = []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            end = start + _ROWS_PER_INSERT
            chunk = rows[start:end]
            ops.append(_Op(_PUTS, (chunk, bundles[start:end]), _bytes_of(chunk), len(chunk)))
        results: list[PutResult] = []
        for op in await self._submit(ops):
            group = op.arg[1]
            if op.result is None:  # the common case: every bundle of the group went in
                results += [Accepted(b.bundle_id) for b in group]
            else:
                results += [
                    r or Accepted(b.bundle_id) for r, b in zip(op.result, group, strict=True)
                ]
        return results

    async def put_run(
        self,
        bundle_ids: Sequence[bytes],
        data: Sequence[bytes],
        *,
        source: str,
        destination: str,
        expires_at: int,
        received_at: int,
        received_from: str | None = None,
        next_hop: str | None = None,
    ) -> list[PutResult | None]:
        """:meth:`put_many` for a run of bundles that share everything but their ids and
        bytes (a link's run from one neighbour, say), without a record per bundle: one
        ``None`` per bundle accepted (durable, as :class:`~.store.Accepted` says), else what
        :meth:`put` would have answered for it. The records the duplicate and quota checks
        need are only made when one of the run is refused or repeats."""
        if len(bundle_ids) != len(data):
            raise ValueError(f"{len(bundle_ids)} bundle ids for {len(data)} bundles")
        if not bundle_ids:
            return []
        if not set(map(type, bundle_ids)) <= {bytes} or not all(bundle_ids):
            raise TypeError("bundle ids must be non-empty bytes")
        if not set(map(type, data)) <= {bytes}:
            raise TypeError("bundle data must be bytes")
        # The shared fields are checked (and the times clamped) once, as a record checks them.
        first = StoredBundle(
            bundle_ids[0], None, source, destination, expires_at, received_at, data[0],
            next_hop, received_from,
        )  # fmt: skip
        run = _Run(list(bundle_ids), list(data), first)
        ids = self._eids.ids
        repeat = itertools.repeat
        rows = list(zip(
            map(bytearray, run.bundle_ids), repeat(0), repeat(ids[source]),
            repeat(ids[destination]), repeat(ids[next_hop]), repeat(ids[received_from]),
            repeat(first.expires_at), repeat(first.received_at), map(bytearray, run.data),
            strict=False,  # the repeats are endless; ids and data have one length
        ))  # fmt: skip
        ops = []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            end = start + _ROWS_PER_INSERT
            chunk = rows[start:end]
            ops.append(_Op(_PUTS, (chunk, run[start:end]), _bytes_of(chunk), len(chunk)))
        results: list[PutResult | None] = []
        for op in await self._submit(ops):
            results += op.result or [None] * op.writes
        return results

    async def assign_next_hop(self, bundle_id: bytes, next_hop: str | None) -> bool:
        op = _Op(_HOP, (bundle_id, self._eids.ids[next_hop]))
        await self._submit([op])
        return bool(op.result)

    async def tombstone(
        self, bundle_id: bytes, next_hop: str, expires_at: int | None = None
    ) -> bool:
        until = MAX_DTN_TIME if expires_at is None else expires_at
        until = max(-MAX_DTN_TIME - 1, min(until, MAX_DTN_TIME))
        op = _Op(_TOMBSTONE, (bundle_id, self._eids.ids[next_hop], until))
        await self._submit([op])
        return bool(op.result)

    async def delete(self, bundle_id: bytes) -> bool:
        op = _Op(_DELETE, bundle_id)
        await self._submit([op])
        return bool(op.result)

    async def delete_many(self, bundle_ids: Sequence[bytes]) -> list[bool]:
        """:meth:`delete` for many bundles in one batch (one commit for a drained page)."""
        ops = [_Op(_DELETE, bundle_id) for bundle_id in bundle_ids]
        await self._submit(ops)
        return [bool(op.result) for op in ops]

    async def expire(self, now: int) -> list[bytes]:
        op = _Op(_EXPIRE, now)
        await self._submit([op])
        expired: list[bytes] = op.result
        return expired

    async def remember(self, seen: Sequence[Seen], floors: Mapping[int, int]) -> None:
        rows = [(r.issuer, r.sequence, r.issued_at, r.content_id, r.keep_until) for r in seen]
        await self._submit([_Op(_REMEMBER, (rows, list(floors.items())))])

    async def forget_seen(self, now: int) -> int:
        op = _Op(_FORGET, now)
        await self._submit([op])
        return int(op.result)

    async def remembered(self) -> tuple[list[Seen], dict[int, int]]:
        seen = await self._read(
            "SELECT issuer, sequence, issued_at, content_id, keep_until FROM replay_seen", ()
        )
        floors = await self._read("SELECT issuer, floor FROM replay_floor", ())
        return [Seen(*row) for row in seen], {issuer: floor for issuer, floor in floors}

    async def _submit(self, ops: list[_Op]) -> list[_Op]:
        """Queue ``ops`` and wait for their commit; returns them as queued (a group of puts
        split at a batch's cap becomes two groups), in order."""
        self._live()
        # Back-pressure: producers faster than the disk wait here, not in an unbounded queue (a
        # put_many larger than the bound still goes through, alone).
        writes = sum(op.writes for op in ops)
        while self._in_flight and self._in_flight + writes > self._max_in_flight:
            await self._space.park()
            self._live()
        if not ops:
            await trio.lowlevel.checkpoint()
            return ops
        # Cap each batch at half the writes in flight: while one half commits, the other half's
        # producers (woken by the previous commit) fill the next batch, so the disk and the Trio
        # thread work at the same time instead of taking turns.
        self._in_flight += writes
        cap = min(self._max_batch, max(_MIN_BATCH, self._in_flight // 2))
        batches: list[_Batch] = []
        queued: list[_Op] = []
        todo = collections.deque(ops)
        while todo:
            op = todo.popleft()
            batch = self._batches[-1] if self._batches else None
            if batch is None or batch.writes >= cap or batch.size >= self._max_batch_bytes:
                batch = _Batch()
                self._batches.append(batch)
            room = cap - batch.writes
            if op.writes > room:  # only a group can be: its rest opens the next batch
                rows, bundles = op.arg
                rest = bundles[room:]
                rest_rows = rows[room:]
                todo.appendleft(_Op(_PUTS, (rest_rows, rest), _bytes_of(rest_rows), len(rest)))
                op = _Op(_PUTS, (rows[:room], bundles[:room]), op.size - todo[0].size, room)
            if not batches or batches[-1] is not batch:
                batches.append(batch)
            batch.ops.append(op)
            batch.size += op.size
            batch.writes += op.writes
            queued.append(op)
        self._work.set()
        # Batches commit in queue order, so the last one done means all of them are.
        await batches[-1].done.wait()
        for batch in batches:
            if isinstance(batch.error, StoreClosed):
                raise StoreClosed(batch.error.message) from batch.error
            if batch.error is not None:
                raise StoreError(f"bundle store write failed: {batch.error}") from batch.error
        return queued

    # -- the ingress (custody first: :mod:`.ingress`) ---------------------------------------

    async def ingress_put(self, bundles: Sequence[bytes], received_from: int | None) -> int:
        """Hold a run of received bundles in the ingress, one row, durable on return (it
        commits with whatever else is queued: group commit); returns the row's ``seq``."""
        data = b"".join(bundles)
        # One write (one row) for the batch caps, however many bundles the run holds.
        op = _Op(_INGRESS_PUT, (received_from, len(bundles), pack_lengths(bundles), data),
                 len(data))  # fmt: skip
        await self._submit([op])
        return int(op.result)

    async def ingress_runs(self, after: int, limit: int) -> list[IngressRun]:
        """Up to ``limit`` ingress rows with ``seq > after``, oldest first. A row whose lengths
        do not match its data (damage) comes back with no bundles: the caller drops it."""
        rows = await self._read(
            "SELECT seq, received_from, lengths, data FROM ingress WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (after, limit),
        )
        runs = []
        for seq, received_from, lengths, data in rows:
            try:
                bundles = split_run(bytes(lengths), bytes(data))
            except (ValueError, TypeError):
                bundles = ()
            runs.append(IngressRun(seq, received_from, bundles))
        return runs

    async def ingress_delete(self, seqs: Sequence[int]) -> None:
        """Drop ingress rows (adopted by the agent, whose writes committed before)."""
        if seqs:
            await self._submit([_Op(_INGRESS_DELETE, list(seqs))])

    async def apply_writes(self, writes: Sequence[tuple[str, Any]]) -> list[Any]:
        """Writes of any kind, applied in the order given as one submission (so they commit
        together, group commit) — a journal of a synchronous store's writes replayed here.

        Each write is ``("put", bundle)``, ``("tombstone", (bundle_id, next_hop, until))``,
        ``("delete", bundle_id)``, ``("expire", now)``, ``("remember", (seen, floors))`` or
        ``("forget", now)``; one result each, as the single-write method returns it.
        """
        ops: list[_Op] = []
        for kind, arg in writes:
            if kind == "put":
                ops.append(_Op(_PUTS, (self._rows([arg]), [arg]), arg.size))
            elif kind == "tombstone":
                bundle_id, next_hop, until = arg
                until = MAX_DTN_TIME if until is None else until
                until = max(-MAX_DTN_TIME - 1, min(until, MAX_DTN_TIME))
                ops.append(_Op(_TOMBSTONE, (bundle_id, self._eids.ids[next_hop], until)))
            elif kind == "delete":
                ops.append(_Op(_DELETE, arg))
            elif kind == "expire":
                ops.append(_Op(_EXPIRE, arg))
            elif kind == "remember":
                seen, floors = arg
                rows = [(r.issuer, r.sequence, r.issued_at, r.content_id, r.keep_until)
                        for r in seen]  # fmt: skip
                ops.append(_Op(_REMEMBER, (rows, list(floors.items()))))
            elif kind == "forget":
                ops.append(_Op(_FORGET, arg))
            else:
                raise ValueError(f"unknown store write {kind!r}")
        await self._submit(ops)
        results: list[Any] = []
        for (kind, arg), op in zip(writes, ops, strict=True):
            if kind == "put":
                results.append(op.result[0] if op.result else Accepted(arg.bundle_id))
            else:
                results.append(op.result)
        return results

    @property
    def quota(self) -> Quota:
        """The bounds this store enforces."""
        return self._quota

    # -- reads: straight to the connection ---------------------------------------------------

    async def get(self, bundle_id: bytes) -> StoredBundle | None:
        found = await self._read_records(f"{_SELECT} WHERE bundle_id = ?", (bundle_id,))
        return found[0] if found else None

    async def pending_for(self, next_hop: str | None, limit: int) -> list[StoredBundle]:
        found: list[StoredBundle] = await self._read_records(
            f"{_SELECT} WHERE next_hop IS ? ORDER BY seq LIMIT ?",
            (self._eids.query_id(next_hop), max(limit, 0)),
        )
        return found

    async def pending_ids(self, next_hop: str | None, limit: int) -> list[bytes]:
        rows = await self._read(
            "SELECT bundle_id FROM bundles WHERE next_hop IS ? ORDER BY seq LIMIT ?",
            (self._eids.query_id(next_hop), max(limit, 0)),
        )
        return [r[0] for r in rows]

    async def pending_page(
        self, next_hop: str | None, limit: int, after: int = -1
    ) -> tuple[list[StoredBundle], int]:
        """Up to ``limit`` bundles waiting for ``next_hop`` stored after position ``after``
        (oldest first), and the position to continue from: a drain reads page after page
        while earlier pages are still in flight, never reading a bundle twice."""
        page: list[StoredBundle] = []
        last = await self._read_records(
            f"SELECT {_COLUMNS}, seq FROM bundles WHERE next_hop IS ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (self._eids.query_id(next_hop), after, max(limit, 0)),
            into=page,
        )
        return page, after if last is None else last

    async def pending_for_destination(self, destination: str, limit: int) -> list[StoredBundle]:
        found: list[StoredBundle] = await self._read_records(
            f"{_SELECT} WHERE destination = ? ORDER BY seq LIMIT ?",
            (self._eids.query_id(destination), max(limit, 0)),
        )
        return found

    async def count(self) -> int:
        await self._checkpoint()
        return self._count

    async def bytes_used(self) -> int:
        await self._checkpoint()
        return self._bytes

    async def integrity_check(self) -> list[str]:
        """Run the full ``PRAGMA integrity_check``; an empty list means the file is sound."""
        rows = await self._read("PRAGMA integrity_check", ())
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

    async def _read_records(
        self, sql: str, params: tuple[Any, ...], into: list[StoredBundle] | None = None
    ) -> Any:
        """Records of a ``_SELECT``-shaped query, made on the worker thread while it holds the
        connection (so no EID prune can come between the rows and their names). With ``into``
        the query has the position (``seq``) as an extra last column: the records are appended
        there and the last row's position returned (None if there was no row)."""
        conn = self._live()
        names = self._eids.names

        def run() -> Any:
            rows = conn.execute(sql, params).fetchall()
            if into is None:
                return _records(names, rows)
            into.extend(_records(names, [row[:-1] for row in rows]))
            return rows[-1][-1] if rows else None

        try:
            return await trio.to_thread.run_sync(run, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"bundle store read failed: {exc}") from exc

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._live()

        def run() -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        try:
            return await trio.to_thread.run_sync(run, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"bundle store read failed: {exc}") from exc

    async def _checkpoint(self) -> None:
        self._live()
        await trio.lowlevel.checkpoint()

    def _live(self) -> sqlite3.Connection:
        if self._closed or self._conn is None:
            raise StoreClosed("bundle store is closed")
        return self._conn

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what is queued, stop the committer, close the file. Idempotent."""
        self._closed = True
        self._work.set()
        self._space.unpark_all()
        await self._committer_done.wait()
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    # -- the committer -----------------------------------------------------------------------

    async def _run_committer(self) -> None:
        try:
            while True:
                if not self._batches:
                    if self._closed:
                        return
                    with trio.move_on_after(self._idle_tidy_s if self._untidy else math.inf):
                        await self._work.wait()
                    if not self._work.is_set():  # idle since the last write: tidy up
                        await self._tidy()
                        continue
                    self._work = trio.Event()
                    continue
                self._committing = self._next_batches()  # they take no more writes now
                await self._commit(self._committing)
                self._committing = []
                if self._eids.due_for_prune():
                    await self._prune_eids()
        finally:
            # Cancelled with writes still queued: their waiters must not hang.
            for batch in [*self._committing, *self._batches]:
                self._in_flight -= batch.writes
                batch.error = StoreClosed("bundle store closed before this write was committed")
                batch.done.set()
            self._batches.clear()
            self._committer_done.set()

    def _next_batches(self) -> list[_Batch]:
        """The queued batches the next transaction commits: the oldest, and those after it
        while the caps allow. The half-in-flight cap of ``_submit`` splits a burst before the
        disk is free; once it is, everything waiting goes in one fsync (group commit), or a
        steady stream settles at two half-size commits where one would do."""
        batches = [self._batches.popleft()]
        writes, size = batches[0].writes, batches[0].size
        while self._batches:
            following = self._batches[0]
            writes, size = writes + following.writes, size + following.size
            if writes > self._max_batch or size > self._max_batch_bytes:
                break
            batches.append(self._batches.popleft())
        return batches

    async def _in_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on a worker thread that holds the connection, for the committer.

        Unlike ``trio.to_thread.run_sync``, this starts the thread without a scheduling pass when
        the connection is free: the committer starts the next batch while the producers it just
        woke run, instead of after them (measured: the disk idled a third of the time).
        """
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            await self._limiter.acquire()
        try:
            token = trio.lowlevel.current_trio_token()
            finished = trio.Event()
            results: list[Any] = []

            def deliver(result: Any) -> None:  # on the worker thread
                results.append(result)
                token.run_sync_soon(finished.set)

            trio.lowlevel.start_thread_soon(functools.partial(fn, *args), deliver)
            with trio.CancelScope(shield=True):  # the thread has the connection: wait it out
                await finished.wait()
        finally:
            self._limiter.release()
        value: _T = results[0].unwrap()
        return value

    async def _tidy(self) -> None:
        conn = self._conn
        assert conn is not None
        self._untidy = False
        # Not fatal: a failed checkpoint leaves the WAL as it was, and the next one retries.
        with contextlib.suppress(sqlite3.Error):
            await self._in_worker(_tidy, conn)
        self.tidied += 1

    async def _prune_eids(self) -> None:
        """Drop the ids no bundle refers to any more (see :mod:`.store_eids`: race-free
        because the ids are dropped from memory with no await between the check of the
        queued rows and the drop)."""
        conn = self._conn
        assert conn is not None
        try:
            unreferenced = await self._in_worker(store_eids.unreferenced, conn)
        except sqlite3.Error:
            return  # not fatal: the table stays as it is until the next prune
        in_use: set[int | None] = set()
        for batch in self._batches:
            for op in batch.ops:
                if op.kind == _PUTS:
                    for row in op.arg[0]:
                        in_use.update(row[2:6])
                elif op.kind in (_HOP, _TOMBSTONE):
                    in_use.add(op.arg[1])
        dropped = self._eids.drop(unreferenced, in_use)
        if dropped:
            # Not fatal either: an id left in the file is replaced when its EID is next
            # written (INSERT OR REPLACE on the unique text), and pruned at the next open.
            with contextlib.suppress(sqlite3.Error):
                await self._in_worker(store_eids.delete, conn, dropped)

    async def _commit(self, batches: list[_Batch]) -> None:
        """Commit ``batches`` in one transaction (all or none), then wake their waiters."""
        conn = self._conn
        assert conn is not None  # closed only after the committer is done
        shares = SourceShares()
        shares.held = dict(self._shares.held)  # the batch may roll back: work on a copy
        ops = batches[0].ops if len(batches) == 1 else [op for b in batches for op in b.ops]
        # Every EID a row of these batches uses was assigned before the row was queued, so it
        # is pending now or was committed before.
        new_eids = dict(self._eids.pending)
        error: Exception | None = None
        try:
            count, used = await self._in_worker(
                _apply_batch, conn, ops, self._quota, self._count, self._bytes, shares,
                new_eids, self._eids.names,
            )  # fmt: skip
        except Exception as exc:  # the whole transaction was rolled back
            error = exc
        else:
            self._eids.committed(new_eids)
            self._count, self._bytes, self._shares = count, used, shares
            self.batches_committed += 1
            self._untidy = True
        for batch in batches:
            batch.error = error
            self._in_flight -= batch.writes
            batch.done.set()
        self._space.unpark_all()


@asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    quota: Quota | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    verify: bool = True,
    wal_limit: int = DEFAULT_WAL_LIMIT,
    idle_tidy_s: float = DEFAULT_IDLE_TIDY_S,
) -> AsyncIterator[SQLiteBundleStore]:
    """Open (creating if absent) the store at ``path``, running its committer until exit.

    ``verify`` runs ``PRAGMA quick_check`` on an existing file (linear in its size).
    ``wal_limit`` (bytes) bounds the write-ahead log under load; after ``idle_tidy_s`` seconds
    without writes the log is emptied and freed pages are returned (module docstring). Raises
    :class:`~.store.NotABundleStore` for a file that is not ours, :class:`~.store.StoreCorrupt`
    for one that fails the check, :class:`~.store.StoreError` if another process holds it.
    """
    if max_batch < 1 or max_batch_bytes < 1 or wal_limit < 1:
        raise ValueError("max_batch, max_batch_bytes and wal_limit must be positive")
    if not idle_tidy_s > 0:
        raise ValueError("idle_tidy_s must be positive")
    conn, count, used, shares, eids = await trio.to_thread.run_sync(
        _connect, os.fspath(path), verify, wal_limit
    )
    store = SQLiteBundleStore(
        conn,
        quota=quota or Quota(),
        count=count,
        used=used,
        shares=shares,
        eids=eids,
        max_batch=max_batch,
        max_batch_bytes=max_batch_bytes,
        idle_tidy_s=idle_tidy_s,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._run_committer)
            try:
                yield store
            finally:
                with trio.CancelScope(shield=True):
                    await store.close()
    finally:
        with trio.CancelScope(shield=True):
            await store.close()
