"""The stores' ingress (custody first): runs held in one row each, read back in order and
split into their bundles, deleted by row, surviving a reopen; and the schema step 4 -> 5 that
adds it to a store written before it existed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fleetwire.runtime.store.ingress import pack_lengths, split_run
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.sqlite_store import SCHEMA, SCHEMA_VERSION, open_sqlite_store
from fleetwire.runtime.store.store import StoredBundle

RUN_A = [b"\x9f" + bytes([n]) * n for n in range(1, 6)]
RUN_B = [b"one", b"", b"three"]


def test_a_run_splits_back_into_its_bundles() -> None:
    assert split_run(pack_lengths(RUN_A), b"".join(RUN_A)) == tuple(RUN_A)
    assert split_run(pack_lengths([]), b"") == ()
    with pytest.raises(ValueError):
        split_run(pack_lengths(RUN_A), b"".join(RUN_A)[:-1])  # lengths and data disagree
    with pytest.raises(ValueError):
        split_run(b"\x01\x02\x03", b"abc")  # not whole lengths


async def test_sqlite_ingress_runs_come_back_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_sqlite_store(path) as store:
        first = await store.ingress_put(RUN_A, 7)
        second = await store.ingress_put(RUN_B, None)
        assert first < second
    async with open_sqlite_store(path) as store:
        runs = await store.ingress_runs(0, 10)
        assert [(r.seq, r.received_from, r.bundles) for r in runs] == [
            (first, 7, tuple(RUN_A)), (second, None, tuple(RUN_B)),
        ]  # fmt: skip
        assert [r.seq for r in await store.ingress_runs(first, 10)] == [second]
        assert [r.seq for r in await store.ingress_runs(0, 1)] == [first]
        await store.ingress_delete([first])
        assert await store.count() == 0  # the ingress is not the agent's store
    async with open_sqlite_store(path) as store:
        assert [r.seq for r in await store.ingress_runs(0, 10)] == [second]


async def test_a_damaged_row_comes_back_without_bundles(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_sqlite_store(path) as store:
        seq = await store.ingress_put(RUN_A, 7)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE ingress SET data = x'00' WHERE seq = ?", (seq,))
    conn.commit()
    conn.close()
    async with open_sqlite_store(path) as store:
        (run,) = await store.ingress_runs(0, 10)
        assert run.seq == seq and run.bundles == ()


async def test_memory_ingress_has_the_same_interface() -> None:
    store = MemoryBundleStore()
    first = await store.ingress_put(RUN_A, 7)
    second = await store.ingress_put(RUN_B, None)
    runs = await store.ingress_runs(0, 10)
    assert [(r.seq, r.received_from, r.bundles) for r in runs] == [
        (first, 7, tuple(RUN_A)), (second, None, tuple(RUN_B)),
    ]  # fmt: skip
    await store.ingress_delete([first])
    assert [r.seq for r in await store.ingress_runs(0, 10)] == [second]


async def test_a_version_4_store_gets_the_ingress_and_keeps_its_bundles(tmp_path: Path) -> None:
    # Version 5 is version 4 plus the ingress table: a store made now, with the table dropped
    # and the version set back, is byte for byte what the version-4 store wrote.
    path = tmp_path / "v4.db"
    bundle = StoredBundle(b"b1", None, "ipn:1.0", "ipn:2.0", 10**6, 0, b"data", "ipn:2.0")
    async with open_sqlite_store(path) as store:
        await store.put(bundle)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE ingress")
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    async with open_sqlite_store(path) as store:
        assert await store.get(b"b1") == bundle
        seq = await store.ingress_put(RUN_B, 3)
        assert [r.seq for r in await store.ingress_runs(0, 10)] == [seq]
        assert await store.integrity_check() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    query = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 2"
    fresh = sqlite3.connect(tmp_path / "new.db")
    fresh.executescript(SCHEMA)
    normal = [(t, n, " ".join((s or "").split())) for t, n, s in conn.execute(query)]
    assert normal == [(t, n, " ".join((s or "").split())) for t, n, s in fresh.execute(query)]
