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

from .store import (
    MAX_DTN_TIME,
    Accepted,
    Duplicate,
    DuplicateOf,
    NotABundleStore,
    PutResult,
    Quota,
    SourceShares,
    StoreClosed,
    StoreCorrupt,
    StoredBundle,
    StoreError,
    check_quota,
)

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

#: ``PRAGMA application_id`` of our files ("FWBS"), so we never adopt someone else's database.
APPLICATION_ID = 0x46574253
#: ``PRAGMA user_version``; bump with a migration when the schema changes.
SCHEMA_VERSION = 3

_REPLAY_SCHEMA = """
CREATE TABLE replay_seen (
    issuer      INTEGER NOT NULL,
    sequence    INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    content_id  BLOB NOT NULL,
    keep_until  INTEGER NOT NULL,
    PRIMARY KEY (issuer, sequence)
) WITHOUT ROWID;
CREATE INDEX replay_seen_by_keep_until ON replay_seen (keep_until);
CREATE TABLE replay_floor (issuer INTEGER PRIMARY KEY, floor INTEGER NOT NULL);
"""
# bundle_id is the key (NOT NULL UNIQUE). The INTEGER PRIMARY KEY is the arrival order the listings
# promise; an explicit alias, because VACUUM may renumber a hidden rowid.
#
# Every index is paid for by every put; each one here answers a query of the hot path, and no
# other index is kept (``test_store_schema`` checks each query's plan):
#   bundle_id (UNIQUE)          get, delete, tombstone, assign_next_hop; duplicate by bundle id
#   content_id (UNIQUE, partial) duplicate by content (the put's ON CONFLICT); NULL content ids
#                               are never compared (NULL is distinct from NULL), so they are
#                               not indexed: bundles without a content id cost no entry
#   next_hop (+ seq, implicit)   pending_for, pending_ids, pending_page: in arrival order
#   expires_at                   expire: the periodic sweep reads only what is due
# ``pending_for_destination`` (an operator's or a test's question, not the node's) scans.
_BUNDLES_TABLE = """
CREATE TABLE {name} (
    seq         INTEGER PRIMARY KEY,
    bundle_id   BLOB NOT NULL UNIQUE,
    content_id  BLOB,
    source      TEXT NOT NULL,
    destination TEXT NOT NULL,
    next_hop    TEXT,
    expires_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    received_from TEXT
);
"""
_BUNDLES_INDEXES = """
CREATE UNIQUE INDEX bundles_by_content_id ON bundles (content_id) WHERE content_id IS NOT NULL;
CREATE INDEX bundles_by_next_hop ON bundles (next_hop);
CREATE INDEX bundles_by_expiry ON bundles (expires_at);
"""
SCHEMA = _BUNDLES_TABLE.format(name="bundles") + _BUNDLES_INDEXES + _REPLAY_SCHEMA

#: Version 1 → 2: the neighbour each bundle came from (per-source quota share) and the replay
#: memory (:mod:`fleetwire.protocol.replay`).
_MIGRATE_1_TO_2 = "ALTER TABLE bundles ADD COLUMN received_from TEXT;" + _REPLAY_SCHEMA
#: Version 2 → 3: the index by destination goes (no query of the node used it) and content ids
#: are indexed only where present. A column constraint cannot be changed in place, so the table
#: is copied (every column, ``seq`` included: the arrival order stays) inside the migration's
#: one transaction: a crash leaves the version-2 file as it was.
_MIGRATE_2_TO_3 = (
    _BUNDLES_TABLE.format(name="bundles_v3")
    + """
INSERT INTO bundles_v3 (seq, bundle_id, content_id, source, destination, next_hop, expires_at,
    received_at, size, data, received_from)
SELECT seq, bundle_id, content_id, source, destination, next_hop, expires_at,
    received_at, size, data, received_from FROM bundles;
DROP TABLE bundles;
ALTER TABLE bundles_v3 RENAME TO bundles;
"""
    + _BUNDLES_INDEXES
)

_COLUMNS = (
    "bundle_id, content_id, source, destination, next_hop, expires_at, received_at, size, data, "
    "received_from"
)
_INSERT = f"INSERT INTO bundles ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT = f"SELECT {_COLUMNS} FROM bundles"

#: Rows per multi-row INSERT. Each statement step releases and retakes the GIL; one step per row
#: (``executemany``) lets the busy Trio thread stall the writer at every row, one step per 64
#: rows does not. 64 x 10 parameters stays far below SQLite's 32766 limit.
_ROWS_PER_INSERT = 64


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_rows(n: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    return f"INSERT INTO bundles ({_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING"


#: Per-connection settings after ``journal_mode = WAL`` (the benchmark applies them to its raw
#: SQLite baseline too, so the ratios show the store's own overhead).
TUNING = (
    "PRAGMA synchronous = FULL",  # see _prepare: fsync the WAL at every commit
    "PRAGMA fullfsync = ON",  # macOS: fsync() alone does not flush the disk cache
    "PRAGMA checkpoint_fullfsync = ON",
    "PRAGMA cache_size = -16384",  # 16 MiB: keep the id indexes in memory
)

#: Default WAL size limit (bytes): a checkpoint whenever the log passes it, and the log truncated
#: back to it. A larger limit writes back index pages that many batches touched less often (at
#: 64 MiB, ~25% fewer bytes written per bundle under sustained load) but keeps that much disk
#: for the log of every store, however little it holds: 4 MiB suits the small stores of a fleet.
DEFAULT_WAL_LIMIT = 4 * 1024 * 1024
#: Seconds without a write after which the committer checkpoints the WAL away (see the module
#: docstring).
DEFAULT_IDLE_TIDY_S = 1.0


def wal_pragmas(wal_limit: int, page_size: int = 4096) -> tuple[str, ...]:
    """The pragmas that keep the WAL near ``wal_limit`` bytes (checkpoint, then truncate)."""
    return (
        f"PRAGMA wal_autocheckpoint = {max(1, wal_limit // page_size)}",
        f"PRAGMA journal_size_limit = {wal_limit}",
    )


#: Default batch caps: enough rows to amortise an fsync, few enough bytes to bound a transaction.
DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024
#: Smallest batch cap the in-flight rule may choose (see ``_submit``).
_MIN_BATCH = 32
#: Producers wait once this many full batches of writes are in flight.
_QUEUE_DEPTH = 4

_PUT, _HOP, _DELETE, _EXPIRE, _TOMBSTONE, _REMEMBER, _FORGET, _PUTS = range(8)
_T = TypeVar("_T")


class _Op:
    """One queued write, or (``_PUTS``) a group of puts; ``result`` is filled in by the worker
    thread. ``writes`` is how many writes it stands for (batch caps count writes, not ops)."""

    __slots__ = ("arg", "kind", "result", "size", "writes")

    def __init__(self, kind: int, arg: Any, size: int = 0, writes: int = 1) -> None:
        self.kind = kind
        # A put: the row tuple, built here on the Trio thread; _PUTS: a list of them.
        self.arg = arg
        self.size = size
        self.writes = writes
        # A put: None means accepted. _PUTS: None if all were, else one result per row.
        self.result: Any = None


class _Batch:
    """Writes that commit in one transaction, and the event all their waiters park on."""

    __slots__ = ("done", "error", "ops", "size", "writes")

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.size = 0
        self.writes = 0
        self.error: BaseException | None = None
        self.done = trio.Event()


def _row(b: StoredBundle) -> tuple[Any, ...]:
    return (b.bundle_id, b.content_id, b.source, b.destination, b.next_hop, b.expires_at,
            b.received_at, b.size, b.data, b.received_from)  # fmt: skip


def _bundle(row: tuple[Any, ...]) -> StoredBundle:
    (bundle_id, content_id, source, destination, next_hop, expires_at, received_at, _, data,
     received_from) = row  # fmt: skip
    return StoredBundle(
        bundle_id, content_id, source, destination, expires_at, received_at, data, next_hop,
        received_from,
    )  # fmt: skip


def _connect(
    path: str, verify: bool, wal_limit: int
) -> tuple[sqlite3.Connection, int, int, SourceShares]:
    """Open (or create) the store file; returns the connection, bundle count and bytes held,
    and what each neighbour's bundles hold (the per-source quota share)."""
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. timeout=0: a store held by another
        # process fails at once instead of waiting.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open bundle store {path!r}: {exc}") from exc
    try:
        _prepare(conn, path, verify)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        for pragma in wal_pragmas(wal_limit, page_size):
            conn.execute(pragma)
        count, used = conn.execute("SELECT count(*), total(size) FROM bundles").fetchone()
        shares = SourceShares()
        for source, n, size in conn.execute(
            "SELECT received_from, count(*), total(size) FROM bundles "
            "WHERE received_from IS NOT NULL GROUP BY received_from"
        ):
            shares.add(source, n, int(size))
        return conn, count, int(used), shares
    except sqlite3.DatabaseError as exc:  # past the header checks: the file is ours, but broken
        conn.close()
        raise StoreCorrupt(f"bundle store {path!r} is corrupt: {exc}") from exc
    except BaseException:
        conn.close()
        raise


def _prepare(conn: sqlite3.Connection, path: str, verify: bool) -> None:
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.OperationalError as exc:
        raise StoreError(f"bundle store {path!r} is unavailable: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise NotABundleStore(f"{path!r} is not a fleetwire bundle store: {exc}") from exc
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    fresh = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    if app_id == 0 and version == 0 and fresh:
        pass  # an empty (new) file: the schema is created below
    elif app_id != APPLICATION_ID:
        raise NotABundleStore(
            f"{path!r} is an SQLite database of another application (application_id={app_id:#x})"
        )
    elif version > SCHEMA_VERSION:
        raise NotABundleStore(
            f"{path!r} has bundle store schema version {version}, newer than this fleetwire "
            f"supports ({SCHEMA_VERSION}); upgrade fleetwire"
        )
    elif version < 1:
        raise StoreCorrupt(f"{path!r} is marked as a bundle store but has no schema version")
    else:
        _migrate(conn, version)
    # WAL: a commit appends to the log and fsyncs the log only (one sequential write), and readers
    # never see a half-written transaction; after a crash the log is replayed up to its last
    # complete commit. synchronous=FULL: fsync the WAL at every commit, so a committed bundle
    # survives power loss too (NORMAL, the usual WAL pairing, syncs only at checkpoints and may
    # drop the last commits on power loss — which would break "accepted means durable").
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"bundle store {path!r} cannot use WAL journaling (got {mode!r})")
    for pragma in TUNING:
        conn.execute(pragma)
    if fresh:
        # Before the first table: lets the committer hand freed pages back to the file system
        # when idle (stores created before this stay at their largest size).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.executescript(f"""
            BEGIN IMMEDIATE;
            {SCHEMA}
            PRAGMA application_id = {APPLICATION_ID};
            PRAGMA user_version = {SCHEMA_VERSION};
            COMMIT;
        """)
    elif verify:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise StoreCorrupt(f"bundle store {path!r} failed its integrity check: {problems[:5]}")


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a store of an older schema ``version`` up to :data:`SCHEMA_VERSION`, one step per
    transaction (each step's crash leaves the file at the step before)."""
    steps = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3}
    while version < SCHEMA_VERSION:
        try:
            conn.executescript(f"""
                BEGIN IMMEDIATE;
                {steps[version]}
                PRAGMA user_version = {version + 1};
                COMMIT;
            """)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version += 1


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
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._limiter = trio.CapacityLimiter(1)
        # Batches not yet started, oldest first; only the newest one takes more writes.
        self._batches: deque[_Batch] = deque()
        self._committing: _Batch | None = None
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

    async def put(self, bundle: StoredBundle) -> PutResult:
        op = _Op(_PUT, _row(bundle), bundle.size)
        await self._submit([op])
        result: PutResult = op.result or Accepted(bundle.bundle_id)
        return result

    async def put_many(self, bundles: Sequence[StoredBundle]) -> list[PutResult]:
        # Groups of one multi-row INSERT each: the per-bundle cost here is the row tuple.
        rows = [
            (b.bundle_id, b.content_id, b.source, b.destination, b.next_hop, b.expires_at,
             b.received_at, len(b.data), b.data, b.received_from)
            for b in bundles
        ]  # fmt: skip
        ops = []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            group = rows[start : start + _ROWS_PER_INSERT]
            ops.append(_Op(_PUTS, group, sum(row[7] for row in group), len(group)))
        results: list[PutResult] = []
        for op in await self._submit(ops):
            if op.result is None:  # the common case: every bundle of the group went in
                results += [Accepted(row[0]) for row in op.arg]
            else:
                results += [r or Accepted(row[0]) for r, row in zip(op.result, op.arg, strict=True)]
        return results

    async def assign_next_hop(self, bundle_id: bytes, next_hop: str | None) -> bool:
        op = _Op(_HOP, (bundle_id, next_hop))
        await self._submit([op])
        return bool(op.result)

    async def tombstone(
        self, bundle_id: bytes, next_hop: str, expires_at: int | None = None
    ) -> bool:
        until = MAX_DTN_TIME if expires_at is None else expires_at
        until = max(-MAX_DTN_TIME - 1, min(until, MAX_DTN_TIME))
        op = _Op(_TOMBSTONE, (bundle_id, next_hop, until))
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
                rows = op.arg
                rest = rows[room:]
                todo.appendleft(_Op(_PUTS, rest, sum(row[7] for row in rest), len(rest)))
                op = _Op(_PUTS, rows[:room], op.size - todo[0].size, room)
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

    # -- reads: straight to the connection ---------------------------------------------------

    async def get(self, bundle_id: bytes) -> StoredBundle | None:
        rows = await self._read(f"{_SELECT} WHERE bundle_id = ?", (bundle_id,))
        return _bundle(rows[0]) if rows else None

    async def pending_for(self, next_hop: str | None, limit: int) -> list[StoredBundle]:
        rows = await self._read(
            f"{_SELECT} WHERE next_hop IS ? ORDER BY seq LIMIT ?", (next_hop, max(limit, 0))
        )
        return [_bundle(r) for r in rows]

    async def pending_ids(self, next_hop: str | None, limit: int) -> list[bytes]:
        rows = await self._read(
            "SELECT bundle_id FROM bundles WHERE next_hop IS ? ORDER BY seq LIMIT ?",
            (next_hop, max(limit, 0)),
        )
        return [r[0] for r in rows]

    async def pending_page(
        self, next_hop: str | None, limit: int, after: int = -1
    ) -> tuple[list[StoredBundle], int]:
        """Up to ``limit`` bundles waiting for ``next_hop`` stored after position ``after``
        (oldest first), and the position to continue from: a drain reads page after page
        while earlier pages are still in flight, never reading a bundle twice."""
        rows = await self._read(
            f"SELECT seq, {_COLUMNS} FROM bundles WHERE next_hop IS ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (next_hop, after, max(limit, 0)),
        )
        if not rows:
            return [], after
        return [_bundle(r[1:]) for r in rows], int(rows[-1][0])

    async def pending_for_destination(self, destination: str, limit: int) -> list[StoredBundle]:
        rows = await self._read(
            f"{_SELECT} WHERE destination = ? ORDER BY seq LIMIT ?", (destination, max(limit, 0))
        )
        return [_bundle(r) for r in rows]

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
                self._committing = self._batches.popleft()  # it takes no more writes now
                await self._commit(self._committing)
                self._committing = None
        finally:
            # Cancelled with writes still queued: their waiters must not hang.
            unfinished = [self._committing] if self._committing else []
            for batch in [*unfinished, *self._batches]:
                self._in_flight -= batch.writes
                batch.error = StoreClosed("bundle store closed before this write was committed")
                batch.done.set()
            self._batches.clear()
            self._committer_done.set()

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

    async def _commit(self, batch: _Batch) -> None:
        conn = self._conn
        assert conn is not None  # closed only after the committer is done
        shares = SourceShares()
        shares.held = dict(self._shares.held)  # the batch may roll back: work on a copy
        try:
            count, used = await self._in_worker(
                _apply_batch, conn, batch.ops, self._quota, self._count, self._bytes, shares
            )
        except Exception as exc:  # the whole batch was rolled back
            batch.error = exc
        else:
            self._count, self._bytes, self._shares = count, used, shares
            self.batches_committed += 1
            self._untidy = True
        self._in_flight -= batch.writes
        batch.done.set()
        self._space.unpark_all()


# -- worker-thread side: one transaction per batch ----------------------------------------------


def _tidy(conn: sqlite3.Connection) -> None:
    """Give freed pages back to the file system, then empty the WAL (see the module docstring)."""
    if conn.execute("PRAGMA freelist_count").fetchone()[0]:
        conn.execute("PRAGMA incremental_vacuum").fetchall()  # no-op unless auto_vacuum is on
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _apply_batch(
    conn: sqlite3.Connection,
    batch: list[_Op],
    quota: Quota,
    count: int,
    used: int,
    shares: SourceShares,
) -> tuple[int, int]:
    """Apply ``batch`` in order in one transaction; returns the new (count, bytes) totals
    (and updates ``shares``, the per-neighbour totals, in place)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        i = 0
        while i < len(batch):
            if batch[i].kind in _PUT_KINDS:
                j = i
                while j < len(batch) and batch[j].kind in _PUT_KINDS:
                    j += 1
                count, used = _put_run(conn, batch[i:j], quota, count, used, shares)
                i = j
                continue
            op = batch[i]
            if op.kind == _HOP:
                bundle_id, hop = op.arg
                cur = conn.execute(
                    "UPDATE bundles SET next_hop = ? WHERE bundle_id = ?", (hop, bundle_id)
                )
                op.result = cur.rowcount == 1
            elif op.kind == _TOMBSTONE:
                bundle_id, hop, until = op.arg
                row = conn.execute(
                    "SELECT seq, size, received_from FROM bundles WHERE bundle_id = ?",
                    (bundle_id,),
                ).fetchone()
                if row is not None:
                    # A tombstone leaves its neighbour's share: it is our own bookkeeping, and
                    # counting it would throttle an honest neighbour by what it already
                    # delivered, for as long as the bundle lives.
                    conn.execute(
                        "UPDATE bundles SET next_hop = ?, size = 0, data = x'', "
                        "received_from = NULL, expires_at = min(expires_at, ?) WHERE seq = ?",
                        (hop, until, row[0]),
                    )
                    used -= row[1]
                    shares.add(row[2], -1, -row[1])
                op.result = row is not None
            elif op.kind == _DELETE:
                row = conn.execute(
                    "SELECT seq, size, received_from FROM bundles WHERE bundle_id = ?", (op.arg,)
                ).fetchone()
                if row is not None:
                    conn.execute("DELETE FROM bundles WHERE seq = ?", (row[0],))
                    count, used = count - 1, used - row[1]
                    shares.add(row[2], -1, -row[1])
                op.result = row is not None
            elif op.kind == _REMEMBER:
                seen, floors = op.arg
                conn.executemany("INSERT OR REPLACE INTO replay_seen VALUES (?, ?, ?, ?, ?)", seen)
                for issuer, floor in floors:
                    conn.execute(
                        "INSERT INTO replay_floor VALUES (?, ?) ON CONFLICT (issuer) "
                        "DO UPDATE SET floor = max(floor, excluded.floor)",
                        (issuer, floor),
                    )
                    conn.execute(
                        "DELETE FROM replay_seen WHERE issuer = ? AND sequence <= ?",
                        (issuer, floor),
                    )
            elif op.kind == _FORGET:
                op.result = conn.execute(
                    "DELETE FROM replay_seen WHERE keep_until <= ?", (op.arg,)
                ).rowcount
            else:  # _EXPIRE
                rows = conn.execute(
                    "SELECT seq, bundle_id, size, received_from FROM bundles WHERE expires_at <= ? "
                    "ORDER BY expires_at, seq",
                    (op.arg,),
                ).fetchall()
                conn.executemany("DELETE FROM bundles WHERE seq = ?", [(r[0],) for r in rows])
                count, used = count - len(rows), used - sum(r[2] for r in rows)
                for r in rows:
                    shares.add(r[3], -1, -r[2])
                op.result = [r[1] for r in rows]
            i += 1
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return count, used


_PUT_KINDS = (_PUT, _PUTS)


def _room_for_all(
    rows: list[tuple[Any, ...]], quota: Quota, count: int, used: int, shares: SourceShares
) -> bool:
    """Whether every put of the run fits the quota, per-source shares included."""
    if quota.max_bundles is not None and count + len(rows) > quota.max_bundles:
        return False
    if quota.max_bytes is not None and used + sum(row[7] for row in rows) > quota.max_bytes:
        return False
    share_bundles = quota.share_of(quota.max_bundles)
    share_bytes = quota.share_of(quota.max_bytes)
    if share_bundles is None and share_bytes is None:
        return True
    after: dict[str, tuple[int, int]] = {}
    for row in rows:
        source = row[9]
        if source is not None:
            n, size = after.get(source) or shares.of(source)
            after[source] = (n + 1, size + row[7])
    return all(
        (share_bundles is None or n <= share_bundles) and (share_bytes is None or b <= share_bytes)
        for n, b in after.values()
    )


def _put_run(
    conn: sqlite3.Connection,
    ops: list[_Op],
    quota: Quota,
    count: int,
    used: int,
    shares: SourceShares,
) -> tuple[int, int]:
    """Insert a run of puts (single ones and groups); leaves ``op.result`` None for each
    accepted put and each group whose puts were all accepted."""
    rows: list[tuple[Any, ...]] = []
    for op in ops:
        if op.kind == _PUTS:
            rows += op.arg
        else:
            rows.append(op.arg)
    if _room_for_all(rows, quota, count, used, shares):
        conn.execute("SAVEPOINT put_run")
        inserted = 0
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            params = list(itertools.chain.from_iterable(chunk))
            inserted += conn.execute(_insert_rows(len(chunk)), params).rowcount
        if inserted == len(rows):  # no duplicates: every row went in
            conn.execute("RELEASE put_run")
            for row in rows:
                if row[9] is not None:
                    shares.add(row[9], 1, row[7])
            return count + len(rows), used + sum(row[7] for row in rows)
        conn.execute("ROLLBACK TO put_run")
        conn.execute("RELEASE put_run")
    results: list[PutResult | None] = []
    for row in rows:
        bundle = _bundle(row)
        result = _duplicate_of(conn, bundle) or check_quota(
            quota, count, used, bundle, shares.of(bundle.received_from)
        )
        results.append(result)
        if result is None:
            conn.execute(_INSERT, row)
            count, used = count + 1, used + row[7]
            shares.add(bundle.received_from, 1, row[7])
    at = 0
    for op in ops:
        if op.kind == _PUTS:
            mine = results[at : at + op.writes]
            op.result = None if not any(mine) else mine
            at += op.writes
        else:
            op.result = results[at]
            at += 1
    return count, used


def _duplicate_of(conn: sqlite3.Connection, b: StoredBundle) -> Duplicate | None:
    if conn.execute("SELECT 1 FROM bundles WHERE bundle_id = ?", (b.bundle_id,)).fetchone():
        return Duplicate(b.bundle_id, DuplicateOf.BUNDLE_ID, b.bundle_id)
    if b.content_id is not None:
        row = conn.execute(
            "SELECT bundle_id FROM bundles WHERE content_id = ?", (b.content_id,)
        ).fetchone()
        if row is not None:
            return Duplicate(b.bundle_id, DuplicateOf.CONTENT_ID, row[0])
    return None


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
    conn, count, used, shares = await trio.to_thread.run_sync(
        _connect, os.fspath(path), verify, wal_limit
    )
    store = SQLiteBundleStore(
        conn,
        quota=quota or Quota(),
        count=count,
        used=used,
        shares=shares,
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
