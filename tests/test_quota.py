"""The store quota of a node: bytes, bundles, and each neighbour's share of them.

Store level (both stores, same semantics): a neighbour (``received_from``) may fill only its
``source_share`` of the quota; deleting, expiring or tombstoning gives the room back; the
SQLite store keeps the shares across a reopen and migrates a version-1 file. Node level: a
real ``fleetwire node`` store, flooded over TCPCLv4 by one neighbour with bundles for a node
that cannot be reached, refuses the excess with "No Resources" (RFC 9174 §5.2.4) and a log
line with its code, keeps every bundle it accepted, and still takes another neighbour's.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from fleetwire.protocol.tcpcl import v4
from fleetwire.runtime.links.cl_link import TransferRefusedByPeer
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.sqlite_store import SCHEMA_VERSION, open_sqlite_store
from fleetwire.runtime.store.store import (
    Accepted,
    Quota,
    RefusalReason,
    Refused,
    StoredBundle,
    check_quota,
)
from hypothesis import given
from hypothesis import strategies as st

from .hostile import Fleet, attacker, bundle_of, claim, receive_until

Opener = Callable[..., AbstractAsyncContextManager[Any]]


def held(n: int, source: str | None, size: int = 10) -> StoredBundle:
    bid = f"b{n}".encode()
    return StoredBundle(bid, None, "ipn:1.7", "ipn:9.7", 10**9, 0, b"x" * size, None, source)


@pytest.fixture(params=["memory", "sqlite"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    def opener(quota: Quota | None = None) -> AbstractAsyncContextManager[Any]:
        if request.param == "memory":
            return MemoryBundleStore(quota)
        return open_sqlite_store(tmp_path / "bundles.db", quota=quota)

    return opener


async def test_one_neighbour_fills_only_its_share(open_store: Opener) -> None:
    async with open_store(Quota(max_bundles=10, source_share=0.3)) as store:
        results = [await store.put(held(n, "ipn:5.0")) for n in range(5)]
        assert [type(r) for r in results] == [Accepted] * 3 + [Refused] * 2
        refused = results[-1]
        assert refused.reason is RefusalReason.SOURCE_SHARE and "ipn:5.0" in refused.message
        # Another neighbour, and bundles made here, still get in.
        assert isinstance(await store.put(held(10, "ipn:6.0")), Accepted)
        assert isinstance(await store.put(held(11, None)), Accepted)
        # Room comes back when one of the neighbour's bundles goes.
        assert await store.delete(b"b0")
        assert isinstance(await store.put(held(20, "ipn:5.0")), Accepted)


async def test_the_share_counts_bytes_and_tombstones_free_them(open_store: Opener) -> None:
    async with open_store(Quota(max_bytes=1000, source_share=0.5)) as store:
        assert isinstance(await store.put(held(1, "ipn:5.0", size=400)), Accepted)
        refused = await store.put(held(2, "ipn:5.0", size=200))
        assert isinstance(refused, Refused) and refused.reason is RefusalReason.SOURCE_SHARE
        assert await store.tombstone(b"b1", "delivered")
        assert isinstance(await store.put(held(2, "ipn:5.0", size=200)), Accepted)


async def test_a_batch_keeps_the_share(open_store: Opener) -> None:
    async with open_store(Quota(max_bundles=100, source_share=0.05)) as store:
        results = await store.put_many([held(n, "ipn:5.0") for n in range(8)])
        assert sum(isinstance(r, Accepted) for r in results) == 5


async def test_sqlite_keeps_the_shares_across_a_reopen(tmp_path: Path) -> None:
    quota = Quota(max_bundles=10, source_share=0.3)
    async with open_sqlite_store(tmp_path / "b.db", quota=quota) as store:
        for n in range(3):
            assert isinstance(await store.put(held(n, "ipn:5.0")), Accepted)
    async with open_sqlite_store(tmp_path / "b.db", quota=quota) as store:
        assert isinstance(await store.put(held(3, "ipn:5.0")), Refused)
        assert (await store.get(b"b1")).received_from == "ipn:5.0"  # type: ignore[union-attr]


async def test_sqlite_migrates_a_version_1_store(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE bundles (seq INTEGER PRIMARY KEY, bundle_id BLOB NOT NULL UNIQUE,
            content_id BLOB UNIQUE, source TEXT NOT NULL, destination TEXT NOT NULL,
            next_hop TEXT, expires_at INTEGER NOT NULL, received_at INTEGER NOT NULL,
            size INTEGER NOT NULL, data BLOB NOT NULL);
        INSERT INTO bundles VALUES (1, x'01', NULL, 'ipn:1.7', 'ipn:2.7', NULL, 5, 0, 3, x'aabbcc');
        PRAGMA application_id = 1180123731;
        PRAGMA user_version = 1;
    """)
    conn.close()
    async with open_sqlite_store(path) as store:
        old = await store.get(b"\x01")
        assert old is not None and old.data == b"\xaa\xbb\xcc" and old.received_from is None
        assert await store.remembered() == ([], {})
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_flooding_neighbour_is_refused_no_resources_and_nothing_accepted_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet(tmp_path)
    for node in (1, 2, 3):
        fleet.add(node)
    quota = "[quota]\nmax_bundles = 40\nmax_bytes = 10000000\nsource_share = 0.25\n"
    accepted = 0
    with trio.fail_after(30), caplog.at_level(logging.WARNING, logger="fleetwire.node"):
        async with fleet.running(3, extra=quota) as c:
            inbox = c.subscribe()
            # A fleet member (node 2 holds a credential), so [node] accept_from lets it relay:
            # the quota must stop even a known neighbour from filling the store.
            async with attacker(fleet.ports[3], claims=2) as eve:
                with pytest.raises(TransferRefusedByPeer) as refused:
                    for _ in range(100):  # 4 KiB each, for node 77, which nobody can reach
                        await eve.send(bundle_of(bytes(4096), source=99, destination=77))
                        accepted += 1
            assert accepted == 10  # a quarter of 40
            assert refused.value.reason == v4.RefuseReason.NO_RESOURCES  # RFC 9174 §5.2.4
            assert "code=store-source-share" in caplog.text and "from=2" in caplog.text
            assert await c.store.count() == 10  # every accepted bundle is held
            async with attacker(fleet.ports[3], claims=98) as other:
                marker = fleet.sign(1, claim(1, 1, issued_at=c.now()))
                await other.send(bundle_of(marker.envelope, source=1, destination=3))
                got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [marker.content_id]


@pytest.mark.soak
async def test_the_reviews_flood_against_the_default_quota(tmp_path: Path) -> None:
    """The review's attack on a config without ``[quota]``: 20,000 × 4 KiB bundles for a node
    nobody can reach, from one neighbour. The default share (a quarter of 50,000) stops it."""
    fleet = Fleet(tmp_path)
    fleet.add(3)
    fleet.add(2)  # the flooding neighbour is a fleet member: accept_from lets it relay
    accepted = 0
    with trio.fail_after(600):
        async with fleet.running(3) as c, attacker(fleet.ports[3], claims=2) as eve:
            with pytest.raises(TransferRefusedByPeer):
                for _ in range(20_000):
                    await eve.send(bundle_of(bytes(4096), source=99, destination=77))
                    accepted += 1
            assert accepted == 12_500
            assert await c.store.count() == accepted


async def test_replay_memory_in_both_stores(open_store: Opener) -> None:
    from fleetwire.protocol.replay import Seen

    async with open_store() as store:
        records = [Seen(1, s, 100, b"c%d" % s, 1000 + s) for s in (5, 6, 9)]
        await store.remember(records, {})
        await store.remember([Seen(2, 1, 100, b"x", 5000)], {1: 6})  # floor 6 drops 5 and 6
        seen, floors = await store.remembered()
        assert sorted((r.issuer, r.sequence) for r in seen) == [(1, 9), (2, 1)]
        assert floors == {1: 6}
        await store.remember([], {1: 3})  # a floor never goes down
        assert (await store.remembered())[1] == {1: 6}
        assert await store.forget_seen(1009) == 1  # keep_until 1009 <= now
        assert [(r.issuer, r.sequence) for r in (await store.remembered())[0]] == [(2, 1)]


@given(
    max_bundles=st.none() | st.integers(0, 20),
    max_bytes=st.none() | st.integers(0, 400),
    share=st.none() | st.floats(0.05, 1.0),
    count=st.integers(0, 25),
    used=st.integers(0, 500),
    from_source=st.tuples(st.integers(0, 25), st.integers(0, 500)),
    size=st.integers(0, 60),
    source=st.none() | st.just("ipn:5.0"),
)
def test_admits_a_run_where_check_quota_admits_one_bundle(
    max_bundles: int | None,
    max_bytes: int | None,
    share: float | None,
    count: int,
    used: int,
    from_source: tuple[int, int],
    size: int,
    source: str | None,
) -> None:
    """``Quota.admits`` (the ingress's check for a whole run) agrees with ``check_quota`` (the
    stores' check, bundle by bundle) on a run of one bundle."""
    quota = Quota(max_bundles=max_bundles, max_bytes=max_bytes, source_share=share)
    bundle = held(0, source, size)
    refused = check_quota(quota, count, used, bundle, from_source)
    after = (from_source[0] + 1, from_source[1] + size) if source is not None else None
    assert quota.admits(count + 1, used + size, after) == (refused is None)
