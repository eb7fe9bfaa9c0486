"""Endpoint ids (EIDs) as small integers in the SQLite bundle store (schema 4).

Theory of operation
-------------------
Every stored bundle names up to four EIDs (source, destination, next hop, the neighbour it came
from), and a fleet has few distinct ones: each is written once into the ``eids`` table and the
bundle rows hold its integer id. An integer column costs SQLite less to bind, encode and index
than text (and an integer next hop makes the ``bundles_by_next_hop`` index smaller), which is
most of what a small bundle's row costs.

The store keeps the table in memory both ways (:class:`EidTable`): ``ids`` (EID → id; a miss
assigns the next id) on the Trio thread, where rows are built, and ``names`` (id → EID), also
read by the worker thread that turns rows back into records. A new EID is *pending* until the
transaction of the first batch that could use it committed: the committer writes the pending
ones at the start of every transaction (``INSERT OR REPLACE``, so a batch that rolled back
simply writes them again with the next one), then forgets those it wrote once the commit
succeeded. ``None`` (no next hop, made here) has id 0 in rows being written (see the store's
``_VALUES``: 0 binds faster than ``None``) and is NULL in the file.

Bounded memory (a peer can name a new EID in every bundle): ids no bundle refers to any more
are pruned whenever the table has doubled since the last prune. The prune is race-free because
only the Trio thread hands out ids: the committer asks the worker which ids no committed row
uses, keeps those that a queued (uncommitted) row uses, drops the rest from both maps without
awaiting in between — from then on that EID would get a new id — and deletes them from the
table. An EID pruned from the maps but not (yet) from the table is replaced by its new id on
its next use (``INSERT OR REPLACE`` on the unique text), so the table never names one EID
twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

__all__ = ["EIDS_SCHEMA", "EidTable", "PRUNE_SLACK"]

EIDS_SCHEMA = "CREATE TABLE eids (id INTEGER PRIMARY KEY, eid TEXT NOT NULL UNIQUE);\n"

#: A prune runs once the table has grown by this many ids past twice its size after the last
#: prune: amortised, a few rows scanned per new EID, and at most twice the live EIDs (plus this)
#: held in memory.
PRUNE_SLACK = 4096

#: The ids no row of ``bundles`` refers to (every EID column, each read off the table once).
#: The NULLs stay out of the list: ``x NOT IN (..., NULL)`` is never true.
_UNREFERENCED = """
SELECT id FROM eids WHERE id NOT IN (
    SELECT source FROM bundles UNION SELECT destination FROM bundles
    UNION SELECT next_hop FROM bundles WHERE next_hop IS NOT NULL
    UNION SELECT received_from FROM bundles WHERE received_from IS NOT NULL
)
"""


class _Ids(dict[str | None, int]):
    """EID → id; looking up an unknown EID assigns it the next id (on the Trio thread)."""

    __slots__ = ("table",)

    def __init__(self, table: EidTable) -> None:
        super().__init__({None: 0})
        self.table = table

    def __missing__(self, eid: str | None) -> int:
        return self.table.assign(eid)  # type: ignore[arg-type]  # None is always present


class EidTable:
    """The store's EIDs and their ids, in memory (module docstring)."""

    __slots__ = ("ids", "names", "next_id", "pending", "prune_at")

    def __init__(self, rows: Iterable[tuple[int, str]] = ()) -> None:
        self.ids = _Ids(self)
        #: id → EID; NULL (read back) and 0 (being written) are no EID.
        self.names: dict[int | None, str | None] = {None: None, 0: None}
        self.next_id = 1
        #: Assigned and not yet known to be committed: (id, eid), oldest first.
        self.pending: dict[int, str] = {}
        for eid_id, eid in rows:
            self.ids[eid] = eid_id
            self.names[eid_id] = eid
            self.next_id = max(self.next_id, eid_id + 1)
        self.prune_at = 2 * len(self.names) + PRUNE_SLACK

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> EidTable:
        """The table as the file holds it, after dropping ids no bundle refers to (opening
        is the one moment nothing is queued, so a plain delete is safe)."""
        conn.execute(f"DELETE FROM eids WHERE id IN ({_UNREFERENCED})")
        return cls(conn.execute("SELECT id, eid FROM eids"))

    def __len__(self) -> int:
        return len(self.names) - 2  # None and 0 are no EID

    def assign(self, eid: str) -> int:
        if not isinstance(eid, str):
            raise TypeError(f"an EID must be str, not {type(eid).__name__}")
        eid_id = self.next_id
        self.next_id += 1
        self.ids[eid] = eid_id
        self.names[eid_id] = eid
        self.pending[eid_id] = eid
        return eid_id

    def query_id(self, eid: str | None) -> int | None:
        """``eid`` as a query compares it (reads must not assign ids): None for None, -1
        (no row has it) for an EID without an id."""
        return None if eid is None else dict.get(self.ids, eid, -1)

    def committed(self, written: dict[int, str]) -> None:
        """The ids of ``written`` (the pending ones a transaction wrote) are on disk now."""
        pending = self.pending
        for eid_id in written:
            pending.pop(eid_id, None)

    def due_for_prune(self) -> bool:
        return len(self.names) >= self.prune_at

    def drop(self, unreferenced: Iterable[int], in_use: set[int | None]) -> list[int]:
        """Forget the ``unreferenced`` ids no queued row uses (``in_use``); returns them, for
        the table's delete. Runs on the Trio thread with no await, so no row can take one of
        them meanwhile."""
        dropped = []
        for eid_id in unreferenced:
            if eid_id in in_use or eid_id in self.pending:
                continue
            eid = self.names.pop(eid_id, None)
            if eid is not None:
                del self.ids[eid]
                dropped.append(eid_id)
        self.prune_at = 2 * len(self.names) + PRUNE_SLACK
        return dropped


def write_pending(conn: sqlite3.Connection, pending: dict[int, str]) -> None:
    """Write ``pending`` ids inside the caller's transaction (worker thread)."""
    if pending:
        conn.executemany("INSERT OR REPLACE INTO eids (id, eid) VALUES (?, ?)", pending.items())


def unreferenced(conn: sqlite3.Connection) -> list[int]:
    """Ids no committed bundle refers to (worker thread)."""
    return [row[0] for row in conn.execute(_UNREFERENCED)]


def delete(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Delete ``ids`` from the table in one transaction (worker thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(ids), 512):
            chunk = ids[start : start + 512]
            conn.execute(f"DELETE FROM eids WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
