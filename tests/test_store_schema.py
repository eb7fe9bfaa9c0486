"""The SQLite store's schema: every query of the node's hot path is answered by an index, no
index is kept that no such query uses, and a store written by the previous schema version
opens with everything it held.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fleetwire.protocol.replay import Seen
from fleetwire.runtime.sqlite_store import SCHEMA, SCHEMA_VERSION, open_sqlite_store
from fleetwire.runtime.store import Accepted, Duplicate, DuplicateOf, StoredBundle

#: The store's queries that run per bundle or per sweep, and the index each must use.
HOT_QUERIES = {
    "get": ("SELECT data FROM bundles WHERE bundle_id = ?", (b"x",), "bundle_id"),
    "duplicate by content": (
        "SELECT bundle_id FROM bundles WHERE content_id = ?",
        (b"c",),
        "bundles_by_content_id",
    ),
    "pending_for": (
        "SELECT data FROM bundles WHERE next_hop IS ? ORDER BY seq LIMIT ?",
        ("ipn:2.0", 10),
        "bundles_by_next_hop",
    ),
    "pending_for unrouted": (
        "SELECT data FROM bundles WHERE next_hop IS ? ORDER BY seq LIMIT ?",
        (None, 10),
        "bundles_by_next_hop",
    ),
    "pending_page": (
        "SELECT seq, data FROM bundles WHERE next_hop IS ? AND seq > ? ORDER BY seq LIMIT ?",
        ("ipn:2.0", 5, 10),
        "bundles_by_next_hop",
    ),
    "expire": (
        "SELECT seq FROM bundles WHERE expires_at <= ? ORDER BY expires_at, seq",
        (5,),
        "bundles_by_expiry",
    ),
    "delete": ("SELECT seq, size FROM bundles WHERE bundle_id = ?", (b"x",), "bundle_id"),
}


def _plan(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def _fresh(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    return conn


@pytest.mark.parametrize("name", sorted(HOT_QUERIES))
def test_each_hot_query_uses_its_index(tmp_path: Path, name: str) -> None:
    conn = _fresh(tmp_path / "s.db")
    sql, params, index = HOT_QUERIES[name]
    plan = _plan(conn, sql, params)
    assert "USING" in plan and "SCAN bundles" not in plan, plan
    if index == "bundle_id":  # the UNIQUE constraint's own index
        assert "sqlite_autoindex_bundles" in plan, plan
    else:
        assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # arrival order read off the index, not sorted


def test_no_index_is_kept_that_no_hot_query_uses(tmp_path: Path) -> None:
    conn = _fresh(tmp_path / "s.db")
    indexes = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'bundles'"
        )
    }
    used = set()
    for sql, params, _ in HOT_QUERIES.values():
        plan = _plan(conn, sql, params)
        used |= {name for name in indexes if name in plan}
    assert indexes == used


# The version-2 schema as that release created it (its DDL, verbatim in effect).
_V2 = """
CREATE TABLE bundles (
    seq INTEGER PRIMARY KEY, bundle_id BLOB NOT NULL UNIQUE, content_id BLOB UNIQUE,
    source TEXT NOT NULL, destination TEXT NOT NULL, next_hop TEXT,
    expires_at INTEGER NOT NULL, received_at INTEGER NOT NULL, size INTEGER NOT NULL,
    data BLOB NOT NULL, received_from TEXT
);
CREATE INDEX bundles_by_destination ON bundles (destination);
CREATE INDEX bundles_by_next_hop ON bundles (next_hop);
CREATE INDEX bundles_by_expiry ON bundles (expires_at);
CREATE TABLE replay_seen (
    issuer INTEGER NOT NULL, sequence INTEGER NOT NULL, issued_at INTEGER NOT NULL,
    content_id BLOB NOT NULL, keep_until INTEGER NOT NULL, PRIMARY KEY (issuer, sequence)
) WITHOUT ROWID;
CREATE INDEX replay_seen_by_keep_until ON replay_seen (keep_until);
CREATE TABLE replay_floor (issuer INTEGER PRIMARY KEY, floor INTEGER NOT NULL);
"""


def _version_2_store(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_V2)
    rows = [
        # seq, bundle_id, content_id, source, destination, next_hop, expires, received, size,
        # data, received_from; seq gaps (deleted bundles) must survive as they are.
        (3, b"b3", b"c3", "ipn:1.0", "ipn:9.0", "ipn:2.0", 500, 1, 3, b"abc", "ipn:1.0"),
        (7, b"b7", None, "ipn:1.0", "ipn:9.0", "ipn:2.0", 400, 2, 2, b"de", None),
        (8, b"b8", b"c8", "ipn:4.0", "ipn:5.0", None, 300, 3, 0, b"", None),  # a tombstone
        (12, b"b12", None, "ipn:4.0", "ipn:9.0", "ipn:2.0", 900, 4, 1, b"f", "ipn:4.0"),
    ]
    conn.executemany("INSERT INTO bundles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO replay_seen VALUES (4711, 42, 10, x'aa', 99)")
    conn.execute("INSERT INTO replay_floor VALUES (4711, 40)")
    conn.execute("PRAGMA application_id = 1180123731")
    conn.execute("PRAGMA user_version = 2")
    conn.close()


async def test_a_version_2_store_opens_with_everything_it_held(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _version_2_store(path)
    async with open_sqlite_store(path) as store:
        assert await store.count() == 4
        assert await store.bytes_used() == 6
        page, last = await store.pending_page("ipn:2.0", 10)
        assert [b.bundle_id for b in page] == [b"b3", b"b7", b"b12"] and last == 12
        assert [b.data for b in page] == [b"abc", b"de", b"f"]
        assert page[0].received_from == "ipn:1.0" and page[1].content_id is None
        assert [b.bundle_id for b in await store.pending_for(None, 10)] == [b"b8"]
        assert [b.bundle_id for b in await store.pending_for_destination("ipn:9.0", 10)] == [
            b"b3",
            b"b7",
            b"b12",
        ]
        assert await store.expire(450) == [b"b8", b"b7"]
        # Content ids still deduplicate, the tombstone's too; new rows follow the old order.
        dup = await store.put(StoredBundle(b"n1", b"c3", "ipn:1.0", "ipn:2.0", 10**6, 5, b"x"))
        assert isinstance(dup, Duplicate) and dup.of is DuplicateOf.CONTENT_ID
        fresh = StoredBundle(b"n2", None, "ipn:1.0", "ipn:2.0", 10**6, 5, b"y", "ipn:2.0")
        assert isinstance(await store.put(fresh), Accepted)
        page, last = await store.pending_page("ipn:2.0", 10, 3)
        assert [b.bundle_id for b in page] == [b"b12", b"n2"] and last > 12
        assert await store.remembered() == ([Seen(4711, 42, 10, b"\xaa", 99)], {4711: 40})
        assert await store.integrity_check() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "bundles_by_destination" not in names and "bundles_by_content_id" in names
    # The migrated file has the schema a new store is created with (RENAME quotes the name).
    query = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 2"
    migrated = [(t, n, _normal(sql)) for t, n, sql in conn.execute(query)]
    expected = [(t, n, _normal(sql)) for t, n, sql in _fresh(tmp_path / "new.db").execute(query)]
    assert migrated == expected


def _normal(sql: str | None) -> str:
    return " ".join((sql or "").replace('"bundles"', "bundles").split())
