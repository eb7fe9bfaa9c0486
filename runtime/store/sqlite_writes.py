"""The SQLite bundle store's worker-thread side: one transaction per batch of writes.

Theory of operation
-------------------
The committer of :mod:`.sqlite_store` hands a batch of queued writes (:class:`_Op`) to
:func:`_apply_batch` on the worker thread that holds the connection; it applies them in order
in one transaction (all or none) and fills in each op's ``result``.

Runs of puts take a fast path: multi-row ``INSERT .. ON CONFLICT DO NOTHING`` statements when
the quota has room for the whole run; if any row was skipped (a duplicate), the run is rolled
back to a savepoint and replayed row by row to say which bundle repeated which. Runs of
deletes go by id, a statement per up to :data:`_IDS_PER_DELETE`.
"""

from __future__ import annotations

import functools
import itertools
import operator
import sqlite3
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from . import store_eids
from .sqlite_schema import _COLUMNS
from .store import (
    Duplicate,
    DuplicateOf,
    PutResult,
    Quota,
    SourceShares,
    StoredBundle,
    check_quota,
)

#: One row's values, in ``_COLUMNS`` order, as :meth:`SQLiteBundleStore._rows` builds them. Why
#: 0 for "none" and bytearray for blobs: Python's sqlite3 binds int, float, str and bytearray
#: directly, but passes ``bytes`` and ``None`` through its adapter lookup first, which (on
#: CPython 3.11) looks up and fails ``__adapt__`` and ``__conform__``, formatting an error
#: message each time — measured, half of the whole insert of a small bundle. ``NULLIF`` turns
#: the 0 back into NULL inside SQLite.
_VALUES = "(?, NULLIF(?, 0), ?, ?, NULLIF(?, 0), NULLIF(?, 0), ?, ?, ?)"

#: Rows per group of ``put_many`` (the unit a batch cap may split at).
_ROWS_PER_INSERT = 64
#: Rows per multi-row INSERT, at most. Each statement step releases and retakes the GIL, and
#: retaking it waits until the Trio thread lets go — up to the interpreter's switch interval
#: (5 ms) while it parses a long read: one step per row (``executemany``) stalls the writer at
#: every row, one per 64 rows still several times a batch. A shorter tail goes in power-of-two
#: statements, so at most a dozen distinct ones are compiled and cached. 1024 x 9 parameters
#: stay below SQLite's 32766.
ROWS_PER_STATEMENT = 1024


@functools.lru_cache(maxsize=32)
def _insert_rows(n: int) -> str:
    values = ", ".join([_VALUES] * n)
    return f"INSERT INTO bundles ({_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING"


def _statement_sizes(n: int) -> list[int]:
    """``n`` rows as statement sizes: full ones, then the tail's powers of two."""
    full, tail = divmod(n, ROWS_PER_STATEMENT)
    return [ROWS_PER_STATEMENT] * full + [
        1 << b for b in reversed(range(tail.bit_length())) if tail >> b & 1
    ]


_HOP, _DELETE, _EXPIRE, _TOMBSTONE, _REMEMBER, _FORGET, _PUTS, _INGRESS_PUT, _INGRESS_DELETE = (
    range(9)
)


class _Op:
    """One queued write, or (``_PUTS``) a group of puts; ``result`` is filled in by the worker
    thread. ``writes`` is how many writes it stands for (batch caps count writes, not ops)."""

    __slots__ = ("arg", "kind", "result", "size", "writes")

    def __init__(self, kind: int, arg: Any, size: int = 0, writes: int = 1) -> None:
        self.kind = kind
        # _PUTS: (rows, bundles), each row as ``_insert_rows`` binds it (built on the Trio
        # thread, see ``SQLiteBundleStore._rows``) and its record, for results and the slow path.
        self.arg = arg
        self.size = size
        self.writes = writes
        # _PUTS: None if every put was accepted, else one result (None: accepted) per row.
        self.result: Any = None


class _Run(Sequence[StoredBundle]):
    """The records of a ``put_run``, made one by one only when asked for (the slow path);
    the fast path reads its count, bytes and shared source without them."""

    __slots__ = ("bundle_ids", "data", "first", "size")

    def __init__(self, bundle_ids: list[bytes], data: list[bytes], first: StoredBundle) -> None:
        self.bundle_ids = bundle_ids
        self.data = data
        self.first = first  # the shared fields, checked
        self.size = sum(map(len, data))

    @property
    def received_from(self) -> str | None:
        return self.first.received_from

    def __len__(self) -> int:
        return len(self.bundle_ids)

    @typing.overload
    def __getitem__(self, index: int) -> StoredBundle: ...

    @typing.overload
    def __getitem__(self, index: slice) -> _Run: ...

    def __getitem__(self, index: int | slice) -> StoredBundle | _Run:
        if isinstance(index, slice):
            return _Run(self.bundle_ids[index], self.data[index], self.first)
        f = self.first
        return StoredBundle.checked_by_caller(
            self.bundle_ids[index], None, f.source, f.destination, f.expires_at,
            f.received_at, self.data[index], f.next_hop, f.received_from,
        )  # fmt: skip



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
    new_eids: dict[int, str],
    names: Mapping[int | None, str | None],
) -> tuple[int, int]:
    """Apply ``batch`` in order in one transaction, after writing the ``new_eids`` its rows may
    use; returns the new (count, bytes) totals (and updates ``shares``, the per-neighbour
    totals, in place; ``names`` gives each id's EID)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        store_eids.write_pending(conn, new_eids)
        i = 0
        while i < len(batch):
            kind = batch[i].kind
            if kind in (_PUTS, _DELETE):
                j = i
                while j < len(batch) and batch[j].kind == kind:
                    j += 1
                if kind == _PUTS:
                    count, used = _put_run(conn, batch[i:j], quota, count, used, shares)
                else:
                    count, used = _delete_run(conn, batch[i:j], count, used, shares, names)
                i = j
                continue
            op = batch[i]
            if op.kind == _HOP:
                bundle_id, hop = op.arg
                cur = conn.execute(
                    "UPDATE bundles SET next_hop = NULLIF(?, 0) WHERE bundle_id = ?",
                    (hop, bundle_id),
                )
                op.result = cur.rowcount == 1
            elif op.kind == _TOMBSTONE:
                bundle_id, hop, until = op.arg
                row = conn.execute(
                    "SELECT seq, length(data), received_from FROM bundles WHERE bundle_id = ?",
                    (bundle_id,),
                ).fetchone()
                if row is not None:
                    # A tombstone leaves its neighbour's share: it is our own bookkeeping, and
                    # counting it would throttle an honest neighbour by what it already
                    # delivered, for as long as the bundle lives.
                    conn.execute(
                        "UPDATE bundles SET next_hop = NULLIF(?, 0), data = x'', "
                        "received_from = NULL, expires_at = min(expires_at, ?) WHERE seq = ?",
                        (hop, until, row[0]),
                    )
                    used -= row[1]
                    shares.add(names[row[2]], -1, -row[1])
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
            elif op.kind == _INGRESS_PUT:  # one row per run (the schema's ingress table)
                received_from, bundles, lengths, data = op.arg
                op.result = conn.execute(
                    "INSERT INTO ingress (received_from, bundles, lengths, data) "
                    "VALUES (?, ?, ?, ?)",
                    (received_from, bundles, lengths, data),
                ).lastrowid
            elif op.kind == _INGRESS_DELETE:
                conn.executemany("DELETE FROM ingress WHERE seq = ?", [(seq,) for seq in op.arg])
            elif op.kind == _FORGET:
                op.result = conn.execute(
                    "DELETE FROM replay_seen WHERE keep_until <= ?", (op.arg,)
                ).rowcount
            else:  # _EXPIRE
                rows = conn.execute(
                    "SELECT seq, bundle_id, length(data), received_from FROM bundles "
                    "WHERE expires_at <= ? ORDER BY expires_at, seq",
                    (op.arg,),
                ).fetchall()
                conn.executemany("DELETE FROM bundles WHERE seq = ?", [(r[0],) for r in rows])
                count, used = count - len(rows), used - sum(r[2] for r in rows)
                for r in rows:
                    shares.add(names[r[3]], -1, -r[2])
                op.result = [r[1] for r in rows]
            i += 1
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return count, used


#: Bundle ids per DELETE at most (a run of deletes goes in power-of-two statements, as puts).
_IDS_PER_DELETE = 512


@functools.lru_cache(maxsize=16)
def _delete_ids(n: int) -> str:
    ids = ", ".join("?" * n)
    return (
        f"DELETE FROM bundles WHERE bundle_id IN ({ids}) "
        "RETURNING bundle_id, length(data), received_from"
    )


def _delete_run(
    conn: sqlite3.Connection,
    ops: list[_Op],
    count: int,
    used: int,
    shares: SourceShares,
    names: Mapping[int | None, str | None],
) -> tuple[int, int]:
    """Delete a run of bundles by id, a statement per up to ``_IDS_PER_DELETE`` (one
    statement, not a lookup and a delete per bundle: a drained page is a run of 1,024); each
    op's result says whether its bundle was there (an id named twice: the first)."""
    ids = [bytearray(op.arg) for op in ops]  # bound without sqlite3's adapter lookup
    gone: dict[bytes, tuple[int, int | None]] = {}
    start = 0
    while start < len(ids):
        left = min(len(ids) - start, _IDS_PER_DELETE)
        size = 1 << (left.bit_length() - 1)
        for bundle_id, length, source in conn.execute(_delete_ids(size), ids[start : start + size]):
            gone[bundle_id] = (length, source)
        start += size
    for op in ops:
        hit = gone.pop(op.arg, None)
        op.result = hit is not None
        if hit is not None:
            count, used = count - 1, used - hit[0]
            shares.add(names[hit[1]], -1, -hit[0])
    return count, used


def _bytes_of(rows: list[tuple[Any, ...]]) -> int:
    """The bundle bytes of ``rows`` (C loops only: this runs for every group of puts)."""
    return sum(map(len, map(_DATA, rows)))


_DATA = operator.itemgetter(8)  # a row's data (``_COLUMNS``)


def _by_source(group: Sequence[StoredBundle]) -> list[tuple[str | None, int, int]]:
    """(received_from, bundles, bytes) of a group of puts: one entry for a run (``_Run``),
    one per bundle with a source otherwise."""
    if isinstance(group, _Run):
        return [(group.received_from, len(group), group.size)]
    return [(b.received_from, 1, len(b.data)) for b in group if b.received_from is not None]


def _room_for_all(
    n: int,
    size: int,
    tallies: list[tuple[str | None, int, int]],
    quota: Quota,
    count: int,
    used: int,
    shares: SourceShares,
) -> bool:
    """Whether every put of the run (``n`` bundles, ``size`` bytes, ``tallies`` by source)
    fits the quota, per-source shares included."""
    if quota.max_bundles is not None and count + n > quota.max_bundles:
        return False
    if quota.max_bytes is not None and used + size > quota.max_bytes:
        return False
    share_bundles = quota.share_of(quota.max_bundles)
    share_bytes = quota.share_of(quota.max_bytes)
    if share_bundles is None and share_bytes is None:
        return True
    after: dict[str, tuple[int, int]] = {}
    for source, k, b in tallies:
        if source is not None:
            had, held = after.get(source) or shares.of(source)
            after[source] = (had + k, held + b)
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
    """Insert a run of put groups; leaves ``op.result`` None for each group whose puts were
    all accepted, else one result per put (None: accepted)."""
    if len(ops) == 1:
        rows = ops[0].arg[0]
    else:
        rows = []
        for op in ops:
            rows += op.arg[0]
    tallies = [t for op in ops for t in _by_source(op.arg[1])]
    run_bytes = _bytes_of(rows)
    if _room_for_all(len(rows), run_bytes, tallies, quota, count, used, shares):
        conn.execute("SAVEPOINT put_run")
        inserted = 0
        start = 0
        for size in _statement_sizes(len(rows)):
            params = list(itertools.chain.from_iterable(rows[start : start + size]))
            inserted += conn.execute(_insert_rows(size), params).rowcount
            start += size
        if inserted == len(rows):  # no duplicates: every row went in
            conn.execute("RELEASE put_run")
            for source, k, b in tallies:
                if source is not None:
                    shares.add(source, k, b)
            return count + len(rows), used + run_bytes
        conn.execute("ROLLBACK TO put_run")
        conn.execute("RELEASE put_run")
    # The slow path judges bundle by bundle: a run's records are made here, only here.
    bundles = list(itertools.chain.from_iterable(op.arg[1] for op in ops))
    results: list[PutResult | None] = []
    insert_one = _insert_rows(1)
    for row, bundle in zip(rows, bundles, strict=True):
        result = _duplicate_of(conn, bundle) or check_quota(
            quota, count, used, bundle, shares.of(bundle.received_from)
        )
        results.append(result)
        if result is None:
            conn.execute(insert_one, row)
            count, used = count + 1, used + bundle.size
            shares.add(bundle.received_from, 1, bundle.size)
    at = 0
    for op in ops:
        mine = results[at : at + op.writes]
        op.result = None if not any(mine) else mine
        at += op.writes
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

