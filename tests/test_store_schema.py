"""The SQLite store's schema: every query of the node's hot path is answered by an index, no
index is kept that no such query uses, a store written by an earlier schema version opens with
everything it held, and the EID table stays as small as what the bundles name.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from fleetwire.protocol.replay import Seen
from fleetwire.runtime.store import store_eids
from fleetwire.runtime.store.sqlite_store import SCHEMA, SCHEMA_VERSION, open_sqlite_store
from fleetwire.runtime.store.store import (
    Accepted,
    Duplicate,
    DuplicateOf,
    StoreCorrupt,
    StoredBundle,
)

DATA = Path(__file__).parent / "data"

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
    "delete": (
        "SELECT length(data), received_from FROM bundles WHERE bundle_id IN (?, ?)",
        (b"x", b"y"),
        "bundle_id",
    ),
    "tombstone": (
        "SELECT seq, length(data) FROM bundles WHERE bundle_id = ?",
        (b"x",),
        "bundle_id",
    ),
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
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "bundles_by_destination" not in names and "bundles_by_content_id" in names
    # The migrated file has the schema a new store is created with (RENAME quotes the name).
    query = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 2"
    migrated = [(t, n, _normal(sql)) for t, n, sql in conn.execute(query)]
    expected = [(t, n, _normal(sql)) for t, n, sql in _fresh(tmp_path / "new.db").execute(query)]
    assert migrated == expected


def _normal(sql: str | None) -> str:
    return " ".join((sql or "").replace('"bundles"', "bundles").split())


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    query = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 2"
    return [(t, n, _normal(sql)) for t, n, sql in conn.execute(query)]


async def test_a_version_3_store_made_by_that_release_opens_with_everything_it_held(
    tmp_path: Path,
) -> None:
    # store-schema-3.db was written by the schema-3 store itself (put_many of six bundles,
    # one deleted, one tombstoned, a replay memory), so the step 3 -> 4 meets a real file.
    path = tmp_path / "v3.db"
    shutil.copy(DATA / "store-schema-3.db", path)
    before = sqlite3.connect(path)
    assert before.execute("PRAGMA user_version").fetchone()[0] == 3
    old_rows = before.execute(
        "SELECT seq, bundle_id, content_id, source, destination, next_hop, expires_at, "
        "received_at, data, received_from FROM bundles ORDER BY seq"
    ).fetchall()
    before.close()
    assert len(old_rows) == 5
    async with open_sqlite_store(path) as store:
        assert await store.count() == 5
        assert await store.bytes_used() == 3 + 2 + 0 + 1 + 3  # b3 is a tombstone
        for seq, bundle_id, content, source, dest, hop, expires, at, data, came in old_rows:
            record = await store.get(bundle_id)
            assert record == StoredBundle(
                bundle_id, content, source, dest, expires, at, data, hop, came
            ), seq
        page, last = await store.pending_page("ipn:2.0", 10)
        assert [b.bundle_id for b in page] == [b"b1", b"b2", b"b4"] and last == 4
        assert [b.bundle_id for b in await store.pending_for("ipn:8.0", 10)] == [b"b3"]
        assert [b.bundle_id for b in await store.pending_for_destination("ipn:9.0", 10)] == [
            b"b1",
            b"b2",
            b"b4",
            b"b5",
        ]
        assert store._shares.of("ipn:1.0") == (1, 3) and store._shares.of("ipn:4.0") == (1, 1)
        # Content ids still deduplicate (the tombstone's too); new rows follow the old order.
        for content in (b"c1", b"c3"):
            dup = await store.put(
                StoredBundle(b"n-" + content, content, "ipn:1.0", "ipn:2.0", 10**6, 5, b"x")
            )
            assert isinstance(dup, Duplicate) and dup.of is DuplicateOf.CONTENT_ID
        fresh = StoredBundle(b"n2", None, "ipn:6.0", "ipn:2.0", 10**6, 5, b"y", "ipn:2.0")
        assert isinstance(await store.put(fresh), Accepted)
        page, last = await store.pending_page("ipn:2.0", 10, 2)
        assert [b.bundle_id for b in page] == [b"b4", b"n2"] and last > 5
        assert await store.expire(450) == [b"b3", b"b2"]
        assert await store.remembered() == ([Seen(4711, 42, 10, b"\xaa", 99)], {4711: 40})
        assert await store.integrity_check() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert _schema(conn) == _schema(_fresh(tmp_path / "new.db"))
    # Each EID once; the deleted bundle's EID (ipn:7.0) was never carried over.
    eids = sorted(r[0] for r in conn.execute("SELECT eid FROM eids"))
    assert len(eids) == len(set(eids)) and "ipn:7.0" not in eids and "dtn://far/x" in eids
    conn.close()
    async with open_sqlite_store(path) as store:  # and again, as the current schema
        assert (await store.get(b"n2")) == fresh and await store.count() == 4


def _bundle(n: int, source: str) -> StoredBundle:
    return StoredBundle(n.to_bytes(4, "big"), None, source, "ipn:2.0", 10**6, 0, b"d", "ipn:2.0")


async def test_eids_no_bundle_names_are_pruned_and_come_back_with_a_new_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_eids, "PRUNE_SLACK", 8)
    path = tmp_path / "b.db"
    async with open_sqlite_store(path) as store:
        # A neighbour naming a new source in every bundle, each deleted once forwarded.
        for round_ in range(20):
            batch = [_bundle(round_ * 10 + i, f"ipn:{round_ * 10 + i + 100}.0") for i in range(10)]
            await store.put_many(batch)
            await store.delete_many([b.bundle_id for b in batch[1:]])
        # What memory holds stays near what the bundles name (20 sources + ipn:2.0).
        assert len(store._eids) <= 2 * 21 + 8 + 10
        for n in range(0, 200, 10):  # the one bundle of each round still held
            record = await store.get(n.to_bytes(4, "big"))
            assert record is not None and record.source == f"ipn:{n + 100}.0"
        # A pruned EID named again gets a new id; the file never names one EID twice.
        again = _bundle(10_000, "ipn:105.0")
        assert isinstance(await store.put(again), Accepted)
        assert await store.get(again.bundle_id) == again
    conn = sqlite3.connect(path)
    eids = [r[0] for r in conn.execute("SELECT eid FROM eids")]
    assert len(eids) == len(set(eids)) and len(eids) <= 2 * 22 + 8 + 10
    assert conn.execute("SELECT count(*) FROM eids WHERE eid = 'ipn:105.0'").fetchone()[0] == 1
    conn.close()
    async with open_sqlite_store(path) as store:  # opening drops every unnamed one
        assert len(store._eids) == 22
        assert await store.get(again.bundle_id) == again


def test_a_prune_keeps_the_ids_a_queued_row_uses() -> None:
    table = store_eids.EidTable([(1, "ipn:1.0"), (2, "ipn:2.0"), (3, "ipn:3.0")])
    new = table.ids["ipn:4.0"]  # assigned, not yet committed: never dropped
    assert table.drop([1, 2, 3], in_use={2}) == [1, 3]
    assert table.ids["ipn:2.0"] == 2 and table.names[new] == "ipn:4.0"
    assert table.ids["ipn:1.0"] not in (1, 3, new)  # a dropped EID comes back as a new id


async def test_a_row_naming_an_unknown_eid_id_is_reported_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with open_sqlite_store(path) as store:
        await store.put(_bundle(1, "ipn:1.0"))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE bundles SET source = 999")
    conn.commit()
    conn.close()
    async with open_sqlite_store(path) as store:
        with pytest.raises(StoreCorrupt, match="EID id 999"):
            await store.get((1).to_bytes(4, "big"))
