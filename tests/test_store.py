"""The bundle stores: one suite run against both, plus what only the SQLite store promises.

The parametrized tests pin the shared semantics (dedupe, quotas, expiry, queues, delete); a
hypothesis state machine drives both stores and a ten-line model through random operation
sequences, including closing and reopening the SQLite file.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from fleetwire.protocol.agent import store as store_module
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.sqlite_store import SQLiteBundleStore, open_sqlite_store
from fleetwire.runtime.store.store import (
    MAX_DTN_TIME,
    Accepted,
    BundleStore,
    Duplicate,
    DuplicateOf,
    NotABundleStore,
    PutResult,
    Quota,
    RefusalReason,
    Refused,
    StoreClosed,
    StoreCorrupt,
    StoredBundle,
    StoreError,
)
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

Opener = Callable[..., AbstractAsyncContextManager[Any]]


def bundle(
    n: int | str,
    *,
    cid: bytes | str | None = "auto",
    dest: str = "ipn:2.1",
    expires: int = 1_000_000,
    size: int = 10,
    hop: str | None = None,
) -> StoredBundle:
    bid = f"ipn:1.1/{n}".encode()
    return StoredBundle(
        bundle_id=bid,
        content_id=b"cid-" + bid if cid == "auto" else cid,  # type: ignore[arg-type]
        source="ipn:1.1",
        destination=dest,
        expires_at=expires,
        received_at=0,
        data=bytes([len(bid) % 256]) * size,
        next_hop=hop,
    )


@pytest.fixture(params=["memory", "sqlite"])
def open_store(request: pytest.FixtureRequest, tmp_path: Any) -> Opener:
    def opener(quota: Quota | None = None) -> AbstractAsyncContextManager[Any]:
        if request.param == "memory":
            return MemoryBundleStore(quota)
        return open_sqlite_store(tmp_path / "bundles.db", quota=quota)

    return opener


def ids(bundles: list[StoredBundle]) -> list[bytes]:
    return [b.bundle_id for b in bundles]


# -- shared semantics ---------------------------------------------------------------------------


async def test_put_then_get_returns_the_same_bundle(open_store: Opener) -> None:
    async with open_store() as store:
        b = bundle(1, size=100, hop="ipn:9.0")
        assert await store.put(b) == Accepted(b.bundle_id)
        assert await store.get(b.bundle_id) == b
        assert await store.get(b"nope") is None
        assert (await store.count(), await store.bytes_used()) == (1, 100)


async def test_same_bundle_id_is_a_duplicate(open_store: Opener) -> None:
    async with open_store() as store:
        first = bundle(1, size=5)
        await store.put(first)
        again = bundle(1, size=50, cid=b"other")
        assert await store.put(again) == Duplicate(
            again.bundle_id, DuplicateOf.BUNDLE_ID, first.bundle_id
        )
        assert await store.get(first.bundle_id) == first  # the held copy is untouched
        assert (await store.count(), await store.bytes_used()) == (1, 5)


async def test_same_content_id_is_a_duplicate_but_none_never_collides(open_store: Opener) -> None:
    async with open_store() as store:
        await store.put(bundle(1, cid=b"msg"))
        rewrapped = bundle(2, cid=b"msg")
        assert await store.put(rewrapped) == Duplicate(
            rewrapped.bundle_id, DuplicateOf.CONTENT_ID, bundle(1).bundle_id
        )
        assert isinstance(await store.put(bundle(3, cid=None)), Accepted)
        assert isinstance(await store.put(bundle(4, cid=None)), Accepted)
        assert await store.count() == 3


async def test_put_many_dedupes_inside_one_call(open_store: Opener) -> None:
    async with open_store() as store:
        results = await store.put_many(
            [bundle(1), bundle(1), bundle(2, cid=bundle(1).content_id), bundle(3)]
        )
        assert [type(r) for r in results] == [Accepted, Duplicate, Duplicate, Accepted]
        assert results[2].of is DuplicateOf.CONTENT_ID
        assert await store.put_many([]) == []
        assert await store.count() == 2


async def test_max_bundles_refuses_with_a_clear_message(open_store: Opener) -> None:
    async with open_store(Quota(max_bundles=3)) as store:
        for i in range(3):
            assert isinstance(await store.put(bundle(i)), Accepted)
        refused = await store.put(bundle(3))
        assert isinstance(refused, Refused)
        assert refused.reason is RefusalReason.MAX_BUNDLES
        assert "max_bundles=3" in refused.message and "holds 3 bundles" in refused.message
        # A duplicate of a held bundle is still reported as such when the store is full.
        assert isinstance(await store.put(bundle(0)), Duplicate)
        assert await store.delete(bundle(0).bundle_id)
        assert isinstance(await store.put(bundle(3)), Accepted)
        assert await store.count() == 3


async def test_max_bytes_counts_payload_bytes(open_store: Opener) -> None:
    async with open_store(Quota(max_bytes=100)) as store:
        assert isinstance(await store.put(bundle(1, size=60)), Accepted)
        refused = await store.put(bundle(2, size=50))
        assert isinstance(refused, Refused) and refused.reason is RefusalReason.MAX_BYTES
        assert "max_bytes=100" in refused.message
        assert isinstance(await store.put(bundle(3, size=40)), Accepted)
        assert await store.bytes_used() == 100
        assert isinstance(await store.put(bundle(4, size=0)), Accepted)  # empty fits a full store


async def test_quota_applies_inside_one_batch(open_store: Opener) -> None:
    async with open_store(Quota(max_bundles=5)) as store:
        results = await store.put_many([bundle(i) for i in range(8)])
        assert [type(r) for r in results] == [Accepted] * 5 + [Refused] * 3
        assert await store.count() == 5
        assert ids(await store.pending_for(None, 100)) == [bundle(i).bundle_id for i in range(5)]


async def test_expire_uses_the_passed_in_now(open_store: Opener) -> None:
    async with open_store() as store:
        await store.put_many(
            [bundle("late", expires=30), bundle("a", expires=10), bundle("b", expires=20)]
        )
        assert await store.expire(9) == []
        # expires_at == now counts as expired (RFC 9171 §4.3.1: lifetime is when usefulness ends).
        assert await store.expire(20) == [bundle("a").bundle_id, bundle("b").bundle_id]
        assert await store.expire(20) == []
        assert ids(await store.pending_for(None, 10)) == [bundle("late").bundle_id]
        assert (await store.count(), await store.bytes_used()) == (1, 10)
        assert isinstance(await store.put(bundle("a", expires=10)), Accepted)  # gone means gone


async def test_absurd_times_are_clamped_not_fatal(open_store: Opener) -> None:
    # creation time + lifetime from a hostile bundle can exceed what SQLite stores (2**63 - 1).
    async with open_store() as store:
        far = bundle("far", expires=2**65)
        assert far.expires_at == MAX_DTN_TIME
        results = await store.put_many([bundle("near"), far, bundle("past", expires=-(2**70))])
        assert all(isinstance(r, Accepted) for r in results)
        assert (await store.get(far.bundle_id)) == far
        assert await store.expire(0) == [bundle("past").bundle_id]
        assert await store.expire(MAX_DTN_TIME - 1) == [bundle("near").bundle_id]


def test_stored_bundle_refuses_what_a_store_could_not_write() -> None:
    with pytest.raises(ValueError, match="destination is not valid Unicode"):
        bundle(1, dest="ipn:\ud800")
    with pytest.raises(ValueError, match="bundle_id must not be empty"):
        StoredBundle(b"", None, "s", "d", 0, 0, b"")
    with pytest.raises(TypeError):
        StoredBundle(b"x", None, "s", "d", 0, 0, "not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        (b"id", None, "ipn:1.0", "ipn:2.0", 5, 6, b"data"),
        (b"id", b"cid", "ipn:1.0", "dtn://a/", 2**65, -(2**70), b"", "ipn:3.0", "ipn:4.0"),
        (b"id", None, "ipn:1.0", "ipn:2.0", 2**63 - 1, -(2**63), b"d"),
        (b"id", None, "ipn:1.0", "ipn:2.0", 2**63, -(2**63) - 1, b"d"),
        (b"id", None, "ipn:1.0", "ipn:2.0", -(2**63) - 1, 2**63, b"d"),
    ],
)
@pytest.mark.parametrize("road", ["c", "setters"])
def test_stored_bundle_checked_by_caller_equals_the_checked_record(
    fields: tuple[Any, ...], road: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receive path's unchecked constructor must build exactly what the checked one does,
    # absurd times clamped alike (a hostile lifetime), so stores cannot tell them apart: by
    # the accelerator's one call that fills the slots, and by the slots' setters.
    if road == "setters":
        monkeypatch.setattr(store_module, "_FILL", None)
    elif store_module._FILL is None:
        pytest.skip("the C accelerator is not built")
    checked, trusted = StoredBundle(*fields), StoredBundle.checked_by_caller(*fields)
    assert trusted == checked and hash(trusted) == hash(checked) and repr(trusted) == repr(checked)
    assert trusted.expires_at <= MAX_DTN_TIME and trusted.received_at >= -MAX_DTN_TIME - 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        trusted.data = b"other"  # type: ignore[misc]


async def test_sqlite_merges_queued_batches_into_one_commit(tmp_path: Any) -> None:
    # Group commit: batches split by the in-flight cap while the disk was busy go in one
    # transaction once it is free (up to max_batch), not one fsync each.
    async with open_sqlite_store(tmp_path / "b.db", max_batch=64) as store:
        assert isinstance(store, SQLiteBundleStore)
        async with trio.open_nursery() as nursery:
            await store._limiter.acquire()  # the disk is busy (the committer waits for it)
            nursery.start_soon(store.put_many, [bundle(f"first-{i}") for i in range(8)])
            await trio.testing.wait_all_tasks_blocked()  # the first batch is taken
            for n in range(7):
                nursery.start_soon(store.put_many, [bundle(f"{n}-{i}") for i in range(8)])
            await trio.testing.wait_all_tasks_blocked()
            assert len(store._batches) >= 2  # the in-flight cap split them
            store._limiter.release()
        assert await store.count() == 64
        assert store.batches_committed == 2  # the first, then all that waited


async def test_pending_for_lists_each_hop_in_arrival_order(open_store: Opener) -> None:
    async with open_store() as store:
        a, b, c, d = (bundle(x) for x in "abcd")
        await store.put_many([a, b, c, d])
        assert ids(await store.pending_for(None, 10)) == ids([a, b, c, d])
        assert await store.assign_next_hop(c.bundle_id, "ipn:5.0")
        assert await store.assign_next_hop(a.bundle_id, "ipn:5.0")
        assert await store.assign_next_hop(b.bundle_id, "ipn:6.0")
        assert not await store.assign_next_hop(b"unknown", "ipn:5.0")
        assert ids(await store.pending_for("ipn:5.0", 10)) == ids([a, c])  # arrival, not assignment
        assert ids(await store.pending_for("ipn:5.0", 1)) == ids([a])
        assert ids(await store.pending_for("ipn:5.0", 0)) == []
        assert ids(await store.pending_for(None, 10)) == ids([d])
        assert (await store.get(a.bundle_id)).next_hop == "ipn:5.0"
        assert await store.assign_next_hop(a.bundle_id, None)  # e.g. the contact was lost
        assert ids(await store.pending_for(None, 10)) == ids([a, d])
        assert await store.pending_for("ipn:7.0", 10) == []
        for hop in (None, "ipn:5.0", "ipn:6.0", "ipn:7.0"):  # the ids alone, the same order
            assert await store.pending_ids(hop, 10) == ids(await store.pending_for(hop, 10))
        assert await store.pending_ids(None, 1) == ids([a])


async def test_put_with_a_next_hop_is_queued_for_it(open_store: Opener) -> None:
    async with open_store() as store:
        await store.put(bundle(1, hop="ipn:5.0"))
        assert ids(await store.pending_for("ipn:5.0", 10)) == [bundle(1).bundle_id]
        assert await store.pending_for(None, 10) == []


async def test_pending_for_destination_ignores_the_hop(open_store: Opener) -> None:
    async with open_store() as store:
        await store.put_many(
            [
                bundle(1, dest="ipn:2.1"),
                bundle(2, dest="ipn:3.1", hop="x"),
                bundle(3, dest="ipn:2.1", hop="y"),
                bundle(4, dest="ipn:2.1"),
            ]
        )
        assert ids(await store.pending_for_destination("ipn:2.1", 10)) == ids(
            [bundle(1), bundle(3), bundle(4)]
        )
        assert ids(await store.pending_for_destination("ipn:2.1", 2)) == ids([bundle(1), bundle(3)])
        assert await store.pending_for_destination("ipn:4.1", 10) == []


async def test_delete_frees_the_ids_and_the_quota(open_store: Opener) -> None:
    async with open_store(Quota(max_bundles=1)) as store:
        await store.put(bundle(1, cid=b"m", size=7))
        assert await store.delete(bundle(1).bundle_id)
        assert not await store.delete(bundle(1).bundle_id)
        assert await store.get(bundle(1).bundle_id) is None
        assert (await store.count(), await store.bytes_used()) == (0, 0)
        assert isinstance(await store.put(bundle(2, cid=b"m")), Accepted)


async def test_a_tombstone_keeps_the_ids_and_frees_the_bytes(open_store: Opener) -> None:
    async with open_store(Quota(max_bytes=10)) as store:
        await store.put(bundle(1, cid=b"m", size=10, hop="local"))
        assert await store.tombstone(bundle(1).bundle_id, "delivered")
        assert not await store.tombstone(b"unknown", "delivered")
        held = await store.get(bundle(1).bundle_id)
        assert held is not None and held.data == b"" and held.next_hop == "delivered"
        assert (await store.count(), await store.bytes_used()) == (1, 0)
        assert ids(await store.pending_for("delivered", 10)) == ids([bundle(1)])
        assert await store.pending_for("local", 10) == []
        # still a duplicate, by bundle id and by content id, until it expires
        assert isinstance(await store.put(bundle(1, cid=b"m")), Duplicate)
        assert isinstance(await store.put(bundle(2, cid=b"m")), Duplicate)
        assert isinstance(await store.put(bundle(3, size=10)), Accepted)  # its bytes are free


async def test_a_tombstone_may_be_kept_for_less_than_the_bundles_lifetime(
    open_store: Opener,
) -> None:
    async with open_store() as store:
        await store.put_many([bundle(n, expires=1000) for n in (1, 2, 3)])
        assert await store.tombstone(bundle(1).bundle_id, "forwarded", 100)  # remembered briefly
        assert await store.tombstone(bundle(2).bundle_id, "forwarded", 5000)  # never past expiry
        assert await store.tombstone(bundle(3).bundle_id, "forwarded")
        assert [(await store.get(bundle(n).bundle_id)).expires_at for n in (1, 2, 3)] == [
            100, 1000, 1000,
        ]  # fmt: skip
        assert await store.expire(99) == []
        assert await store.expire(100) == [bundle(1).bundle_id]
        assert await store.expire(1000) == ids([bundle(2), bundle(3)])
        assert await store.count() == 0


async def test_a_closed_store_refuses_work(open_store: Opener) -> None:
    async with open_store() as store:
        await store.put(bundle(1))
    with pytest.raises(StoreClosed):
        await store.put(bundle(2))
    with pytest.raises(StoreClosed):
        await store.get(bundle(1).bundle_id)
    await store.close()  # idempotent


async def test_many_concurrent_puts_lose_nothing(open_store: Opener) -> None:
    # 400 producers, 1200 puts, every content id used twice: 600 accepted, 600 duplicates.
    async with open_store() as store:
        results: dict[bytes, PutResult] = {}

        async def producer(k: int) -> None:
            for i in range(3):
                n = k * 3 + i
                b = bundle(n, cid=b"m%d" % (n % 600), size=n % 50)
                results[b.bundle_id] = await store.put(b)

        async with trio.open_nursery() as nursery:
            for k in range(400):
                nursery.start_soon(producer, k)
        accepted = [i for i, r in results.items() if isinstance(r, Accepted)]
        duplicates = [r for r in results.values() if isinstance(r, Duplicate)]
        assert len(accepted) == 600 and len(duplicates) == 600
        held = [await store.get(bundle_id) for bundle_id in accepted]
        assert None not in held
        for dup in duplicates:
            assert dup.existing in accepted
        assert await store.count() == 600
        assert await store.bytes_used() == sum(len(b.data) for b in held)


async def test_concurrent_puts_respect_the_quota_exactly(open_store: Opener) -> None:
    async with open_store(Quota(max_bundles=50)) as store:
        results: list[PutResult] = []

        async def put(n: int) -> None:
            results.append(await store.put(bundle(n)))

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(put, n)
        assert sum(isinstance(r, Accepted) for r in results) == 50
        assert sum(isinstance(r, Refused) for r in results) == 150
        assert await store.count() == 50


def test_both_stores_implement_every_protocol_method() -> None:
    wanted = {name for name in vars(BundleStore) if not name.startswith("_")}
    assert {"put", "put_many", "expire", "close"} <= wanted
    for cls in (MemoryBundleStore, SQLiteBundleStore):
        assert wanted - set(dir(cls)) == set(), cls


# -- SQLite only ----------------------------------------------------------------------------------


async def test_sqlite_reopen_keeps_bundles_order_and_totals(tmp_path: Any) -> None:
    path = tmp_path / "b.db"
    async with open_sqlite_store(path, quota=Quota(max_bundles=4)) as store:
        await store.put_many([bundle(i, size=i) for i in range(4)])
        await store.assign_next_hop(bundle(2).bundle_id, "ipn:5.0")
        await store.delete(bundle(1).bundle_id)
    async with open_sqlite_store(path, quota=Quota(max_bundles=4)) as store:
        assert (await store.count(), await store.bytes_used()) == (3, 0 + 2 + 3)
        assert ids(await store.pending_for(None, 10)) == [bundle(0).bundle_id, bundle(3).bundle_id]
        assert await store.get(bundle(2).bundle_id) == bundle(2, size=2, hop="ipn:5.0")
        assert isinstance(await store.put(bundle(9)), Accepted)
        assert isinstance(await store.put(bundle(10)), Refused)  # totals were reloaded
        assert isinstance(await store.put(bundle(0)), Duplicate)
        assert await store.integrity_check() == []


async def test_sqlite_groups_concurrent_puts_into_few_commits(tmp_path: Any) -> None:
    async with open_sqlite_store(tmp_path / "b.db") as store:
        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(store.put, bundle(n))
        assert await store.count() == 300
        assert 1 <= store.batches_committed <= 10


async def test_sqlite_batch_caps_split_big_groups(tmp_path: Any) -> None:
    async with open_sqlite_store(tmp_path / "b.db", max_batch=16) as store:
        await store.put_many([bundle(n) for n in range(100)])
        assert store.batches_committed == 7  # ceil(100 / 16)


async def test_sqlite_back_pressure_delays_but_keeps_every_put(tmp_path: Any) -> None:
    # max_batch=4: at most 16 writes in flight; 100 producers and a put_many of 30 must wait
    # their turn, not fail, and nothing may be lost.
    async with open_sqlite_store(tmp_path / "b.db", max_batch=4) as store:
        results: list[PutResult] = []

        async def put(n: int) -> None:
            results.append(await store.put(bundle(n)))

        async def put_many() -> None:
            results.extend(await store.put_many([bundle(f"many{n}") for n in range(30)]))

        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(put, n)
            nursery.start_soon(put_many)
        assert len(results) == 130 and all(isinstance(r, Accepted) for r in results)
        assert await store.count() == 130
        assert store.batches_committed >= 130 // 4


async def test_sqlite_close_commits_what_is_queued(tmp_path: Any) -> None:
    path = tmp_path / "b.db"
    results: list[PutResult] = []
    async with open_sqlite_store(path) as store:

        async def put(n: int) -> None:
            results.append(await store.put(bundle(n)))

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(put, n)
            await trio.testing.wait_all_tasks_blocked()
            await store.close()
    assert len(results) == 50 and all(isinstance(r, Accepted) for r in results)
    async with open_sqlite_store(path) as store:
        assert await store.count() == 50


async def test_sqlite_cancelled_mid_stream_answers_every_waiter(tmp_path: Any) -> None:
    # The producers live outside the store's cancel scope: cancelling the store while several
    # batches are queued must answer each of them (Accepted or StoreClosed), never leave one
    # waiting, and exactly the Accepted ones must be on disk.
    path = tmp_path / "b.db"
    outcomes: dict[bytes, object] = {}

    async def put(store: Any, n: int) -> None:
        try:
            outcomes[bundle(n).bundle_id] = await store.put(bundle(n))
        except StoreClosed as exc:
            outcomes[bundle(n).bundle_id] = exc

    with trio.fail_after(20):
        async with trio.open_nursery() as producers:
            with trio.CancelScope() as scope:
                async with open_sqlite_store(path) as store:
                    for n in range(300):
                        producers.start_soon(put, store, n)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
    assert len(outcomes) == 300
    accepted = {i for i, o in outcomes.items() if isinstance(o, Accepted)}
    assert all(isinstance(o, (Accepted, StoreClosed)) for o in outcomes.values())
    async with open_sqlite_store(path) as store:
        assert await store.count() == len(accepted)
        assert {b.bundle_id for b in await store.pending_for(None, 1000)} == accepted
        assert await store.integrity_check() == []


async def test_sqlite_failed_commit_is_an_error_not_an_acceptance(tmp_path: Any) -> None:
    # A real SQLITE_FULL: cap the file's page count, then write more than fits.
    async with open_sqlite_store(tmp_path / "b.db") as store:
        await store.put(bundle("small"))
        conn = store._conn  # fault injection on the real connection
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreError, match="full"):
            await store.put_many([bundle(n, size=4000) for n in range(10)])
        assert (await store.count(), await store.bytes_used()) == (1, 10)
        assert await store.get(bundle(0).bundle_id) is None
        assert isinstance(await store.put(bundle("tiny", size=1)), Accepted)  # still usable
        assert await store.integrity_check() == []


async def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Any) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(NotABundleStore, match="not a fleetwire bundle store"):
        async with open_sqlite_store(path):
            pass


async def test_sqlite_refuses_another_applications_database(tmp_path: Any) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(NotABundleStore, match="another application"):
        async with open_sqlite_store(path):
            pass


async def test_sqlite_refuses_a_newer_schema(tmp_path: Any) -> None:
    path = tmp_path / "b.db"
    async with open_sqlite_store(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(NotABundleStore, match="newer"):
        async with open_sqlite_store(path):
            pass


async def test_sqlite_detects_a_corrupted_file(tmp_path: Any) -> None:
    path = tmp_path / "b.db"
    async with open_sqlite_store(path) as store:
        await store.put_many([bundle(n, size=1000) for n in range(200)])
    raw = bytearray(path.read_bytes())
    assert len(raw) > 40 * 4096
    raw[8 * 4096 : 30 * 4096] = os.urandom(22 * 4096)  # pages of the table and its indexes
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreCorrupt):
        async with open_sqlite_store(path):
            pass


async def test_sqlite_store_is_not_shared_between_openers(tmp_path: Any) -> None:
    path = tmp_path / "b.db"
    async with open_sqlite_store(path) as store:
        await store.put(bundle(1))
        with pytest.raises(StoreError, match=r"unavailable|locked"):
            async with open_sqlite_store(path):
                pass
        assert await store.count() == 1


# -- model-based: both stores against a simple model ----------------------------------------------


class Model:
    """The store semantics in the plainest form: an insertion-ordered dict scanned linearly."""

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        self.held: dict[bytes, StoredBundle] = {}

    def put(self, b: StoredBundle) -> tuple[type, object]:
        if b.bundle_id in self.held:
            return Duplicate, DuplicateOf.BUNDLE_ID
        if b.content_id is not None and any(
            h.content_id == b.content_id for h in self.held.values()
        ):
            return Duplicate, DuplicateOf.CONTENT_ID
        if self.quota.max_bundles is not None and len(self.held) >= self.quota.max_bundles:
            return Refused, RefusalReason.MAX_BUNDLES
        used = sum(len(h.data) for h in self.held.values())
        if self.quota.max_bytes is not None and used + len(b.data) > self.quota.max_bytes:
            return Refused, RefusalReason.MAX_BYTES
        self.held[b.bundle_id] = b
        return Accepted, None

    def expire(self, now: int) -> list[bytes]:
        order = list(self.held)
        gone = sorted((b for b in self.held.values() if b.expires_at <= now),
                      key=lambda b: (b.expires_at, order.index(b.bundle_id)))  # fmt: skip
        for b in gone:
            del self.held[b.bundle_id]
        return [b.bundle_id for b in gone]


def shape(result: PutResult) -> tuple[type, object]:
    if isinstance(result, Duplicate):
        return Duplicate, result.of
    if isinstance(result, Refused):
        return Refused, result.reason
    return Accepted, None


class TrioStores:
    """Both stores open inside a Trio loop on a thread, so synchronous rules can call them."""

    def __init__(self, path: str, quota: Quota) -> None:
        self.path, self.quota = path, quota
        self.memory: MemoryBundleStore
        self.sqlite: Any
        self._ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        async with MemoryBundleStore(self.quota) as self.memory:
            while not self._stopping:
                self._cycle = trio.Event()
                async with open_sqlite_store(self.path, quota=self.quota) as self.sqlite:
                    self._ready.set()
                    await self._cycle.wait()

    def call(self, afn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def reopen_sqlite(self) -> None:
        self._ready.clear()
        trio.from_thread.run_sync(self._cycle.set, trio_token=self.token)
        self._ready.wait()

    def stop(self) -> None:
        self._stopping = True
        trio.from_thread.run_sync(self._cycle.set, trio_token=self.token)
        self._thread.join()


POOL = [f"ipn:1.1/{i}".encode() for i in range(8)]
HOPS = [None, "ipn:5.0", "ipn:6.0"]
DESTS = ["ipn:2.1", "ipn:3.1"]

bundles = st.builds(
    StoredBundle,
    bundle_id=st.sampled_from(POOL),
    content_id=st.sampled_from([None, b"m1", b"m2", b"m3", b"m4", b"m5"]),
    source=st.just("ipn:1.1"),
    destination=st.sampled_from(DESTS),
    expires_at=st.integers(0, 60),
    received_at=st.just(0),
    data=st.binary(max_size=40),
    next_hop=st.sampled_from(HOPS),
)

# Each step commits to a real fsync'd file: keep the default run short, scale it up under --soak.
_EXAMPLES = max(15, settings.default.max_examples // 13)


@settings(max_examples=_EXAMPLES, stateful_step_count=20, deadline=None)
class StoresMatchTheModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        quota = Quota(max_bundles=6, max_bytes=150)
        self.model = Model(quota)
        self.trio = TrioStores(os.path.join(self.tmp.name, "b.db"), quota)

    def teardown(self) -> None:
        self.trio.stop()
        self.tmp.cleanup()

    def both(self, name: str, *args: Any) -> Any:
        """Call ``name`` on both stores; they must agree, and that answer is returned."""

        async def run() -> tuple[Any, Any]:
            return (await getattr(self.trio.memory, name)(*args),
                    await getattr(self.trio.sqlite, name)(*args))  # fmt: skip

        memory, sqlite = self.trio.call(run)
        assert memory == sqlite, (name, args)
        return memory

    @rule(b=bundles)
    def put(self, b: StoredBundle) -> None:
        assert shape(self.both("put", b)) == self.model.put(b)

    @rule(bs=st.lists(bundles, max_size=5))
    def put_many(self, bs: list[StoredBundle]) -> None:
        assert [shape(r) for r in self.both("put_many", bs)] == [self.model.put(b) for b in bs]

    @rule(bundle_id=st.sampled_from(POOL), hop=st.sampled_from(HOPS))
    def assign_next_hop(self, bundle_id: bytes, hop: str | None) -> None:
        held = bundle_id in self.model.held
        assert self.both("assign_next_hop", bundle_id, hop) is held
        if held:
            self.model.held[bundle_id] = attrs.evolve(self.model.held[bundle_id], next_hop=hop)

    @rule(bundle_id=st.sampled_from(POOL), hop=st.sampled_from(HOPS[1:]))
    def tombstone(self, bundle_id: bytes, hop: str) -> None:
        held = bundle_id in self.model.held
        assert self.both("tombstone", bundle_id, hop) is held
        if held:
            tomb = attrs.evolve(self.model.held[bundle_id], next_hop=hop, data=b"")
            self.model.held[bundle_id] = tomb

    @rule(bundle_id=st.sampled_from(POOL))
    def delete(self, bundle_id: bytes) -> None:
        assert self.both("delete", bundle_id) is (self.model.held.pop(bundle_id, None) is not None)

    @rule(now=st.integers(0, 60))
    def expire(self, now: int) -> None:
        assert self.both("expire", now) == self.model.expire(now)

    @rule()
    def reopen(self) -> None:
        self.trio.reopen_sqlite()

    @invariant()
    def listings_match(self) -> None:
        async def listings(store: BundleStore) -> list[Any]:
            return [
                await store.count(),
                await store.bytes_used(),
                *[await store.pending_for(hop, 4) for hop in HOPS],
                *[await store.pending_for_destination(dest, 10) for dest in DESTS],
                *[await store.get(bundle_id) for bundle_id in POOL[:3]],
            ]

        async def both() -> list[list[Any]]:
            return [await listings(self.trio.memory), await listings(self.trio.sqlite)]

        held = list(self.model.held.values())
        expected = [
            len(held),
            sum(len(b.data) for b in held),
            *[[b for b in held if b.next_hop == hop][:4] for hop in HOPS],
            *[[b for b in held if b.destination == dest] for dest in DESTS],
            *[self.model.held.get(bundle_id) for bundle_id in POOL[:3]],
        ]
        memory, sqlite = self.trio.call(both)
        assert memory == expected
        assert sqlite == expected


TestStoresMatchTheModel = StoresMatchTheModel.TestCase


async def test_sqlite_disk_use_stays_bounded_and_shrinks_at_rest(tmp_path: Any) -> None:
    # 16 MB of bundles pass through (a relay's day), a few hundred KB stay. Under load the WAL
    # stays near its limit; at rest the store is its database file, about what it holds.
    path = tmp_path / "b.db"
    wal = tmp_path / "b.db-wal"
    limit = 1024 * 1024
    size = 8192
    largest_wal = 0
    with trio.fail_after(60):
        async with open_sqlite_store(path, wal_limit=limit, idle_tidy_s=0.05) as store:
            for start in range(0, 2000, 50):
                batch = [bundle(n, size=size) for n in range(start, start + 50)]
                await store.put_many(batch)
                for held in batch[: 49 if start < 1950 else 13]:
                    await store.delete(held.bundle_id)
                largest_wal = max(largest_wal, os.path.getsize(wal))
            assert await store.count() == 39 + 37  # 608 KB
            assert 0 < await store.bytes_used() < 1024 * 1024
            tidied = store.tidied
            while store.tidied == tidied:  # at rest: the committer tidies up once idle
                await trio.sleep(0.01)
            at_rest = os.path.getsize(path) + os.path.getsize(wal)
            assert len(await store.pending_for(None, 1000)) == 76  # nothing lost on the way
    assert largest_wal <= limit + 1024 * 1024  # the limit plus about one batch
    assert at_rest <= 2 * 1024 * 1024, at_rest


async def test_sqlite_put_many_groups_split_at_batch_caps_keep_each_bundles_answer(
    tmp_path: Any,
) -> None:
    # Groups of puts are cut where a batch is full (max_batch 5): every bundle must still get
    # its own answer, in order, whichever piece of which group it ended up in.
    async with open_sqlite_store(tmp_path / "b.db", max_batch=5) as store:
        assert isinstance(await store.put(bundle(3)), Accepted)
        batch = [bundle(n) for n in range(23)]
        batch[12] = bundle(100, cid=b"cid-" + bundle(2).bundle_id)  # same content as #2
        results = await store.put_many(batch)
        kinds = [type(r).__name__ for r in results]
        assert kinds == ["Accepted"] * 3 + ["Duplicate"] + ["Accepted"] * 8 + ["Duplicate"] + [
            "Accepted"
        ] * 10
        assert results[3].of is DuplicateOf.BUNDLE_ID  # type: ignore[union-attr]
        assert results[12].of is DuplicateOf.CONTENT_ID  # type: ignore[union-attr]
        assert [r.bundle_id for r in results] == [b.bundle_id for b in batch]
        assert await store.count() == 22
        assert store.batches_committed >= 1 + 23 // 5


async def test_sqlite_delete_many_in_one_statement_keeps_every_total(tmp_path: Any) -> None:
    # A drained page is deleted as one run (DELETE .. IN .. RETURNING): results, count,
    # bytes and per-neighbour shares must come out as a delete per bundle would leave them.
    records = [
        StoredBundle(
            i.to_bytes(4, "big"), None, "ipn:1.0", "ipn:9.0", 10**6, 0, b"x" * (1 + i % 7),
            "ipn:9.0", f"ipn:{2 + i % 2}.0",
        )
        for i in range(700)
    ]  # fmt: skip
    async with open_sqlite_store(tmp_path / "b.db") as store:
        await store.put_many(records)
        gone = records[:600]
        asked = [b.bundle_id for b in gone] + [gone[0].bundle_id, b"absent"]
        assert await store.delete_many(asked) == [True] * 600 + [False, False]
        left = records[600:]
        assert await store.count() == 100
        assert await store.bytes_used() == sum(b.size for b in left)
        for source in ("ipn:2.0", "ipn:3.0"):
            mine = [b for b in left if b.received_from == source]
            assert store._shares.of(source) == (len(mine), sum(b.size for b in mine))
        # In one batch with other writes, order still holds: delete, put again, delete.
        again = records[0]
        out = await store.apply_writes(
            [("delete", left[0].bundle_id), ("put", again), ("delete", again.bundle_id)]
        )
        assert out[0] is True and isinstance(out[1], Accepted) and out[2] is True
        assert await store.get(again.bundle_id) is None and await store.count() == 99


# -- put_run: a run without a record per bundle --------------------------------------------------


def _run_records(ids_: list[bytes], data: list[bytes], **shared: Any) -> list[StoredBundle]:
    return [StoredBundle(bundle_id=i, content_id=None, data=d, **shared) for i, d in zip(
        ids_, data, strict=True)]  # fmt: skip


@pytest.mark.parametrize(
    ("quota", "held", "max_batch"),
    [
        (None, 0, 1024),  # the fast path: one multi-row INSERT
        (None, 4, 5),  # two of the run already held (duplicates), groups cut at batch caps
        (Quota(max_bundles=9), 2, 1024),  # the quota runs out inside the run
        (Quota(max_bundles=40, source_share=0.25), 0, 3),  # the sender's share runs out
    ],
)
async def test_sqlite_put_run_answers_and_stores_as_put_many(
    tmp_path: Any, quota: Quota | None, held: int, max_batch: int
) -> None:
    # put_run must leave the store, its totals and per-neighbour shares, and every answer
    # exactly as put_many of the records the run stands for (None where that says Accepted).
    shared: dict[str, Any] = dict(
        source="ipn:7.0", destination="ipn:2.1", expires_at=MAX_DTN_TIME + 5, received_at=3,
        received_from="ipn:7.0",
    )  # fmt: skip
    run_ids = [f"run/{n % 17}".encode() for n in range(20)]  # 17 distinct: repeats inside too
    data = [bytes([n]) * (n + 1) for n in range(20)]
    earlier = _run_records(run_ids[:held], data[:held], **shared)
    found = []
    for name, put in (("many", False), ("run", True)):
        async with open_sqlite_store(tmp_path / f"{name}.db", quota=quota,
                                     max_batch=max_batch) as store:  # fmt: skip
            await store.put_many(earlier)
            if put:
                answers = await store.put_run(run_ids, data, **shared)
            else:
                answers = [
                    None if isinstance(r, Accepted) else r
                    for r in await store.put_many(_run_records(run_ids, data, **shared))
                ]
            found.append((answers, await store.count(), await store.bytes_used(),
                          dict(store._shares.held)))  # fmt: skip
        async with open_sqlite_store(tmp_path / f"{name}.db") as store:
            found.append(await store.pending_for(None, 100))
    assert found[0] == found[2] and found[1] == found[3]
    assert any(a is None for a in found[0][0])
    if quota is not None or held:
        assert any(a is not None for a in found[0][0])  # the slow path was taken


async def test_sqlite_put_run_refuses_what_a_record_would(tmp_path: Any) -> None:
    shared: dict[str, Any] = dict(
        source="ipn:7.0", destination="ipn:2.1", expires_at=9, received_at=3
    )
    async with open_sqlite_store(tmp_path / "b.db") as store:
        assert await store.put_run([], [], **shared) == []
        with pytest.raises(ValueError, match="bundle ids for"):
            await store.put_run([b"a"], [], **shared)
        with pytest.raises(TypeError, match="non-empty bytes"):
            await store.put_run([b""], [b"x"], **shared)
        with pytest.raises(TypeError, match="non-empty bytes"):
            await store.put_run(["a"], [b"x"], **shared)  # type: ignore[list-item]
        with pytest.raises(TypeError, match="data must be bytes"):
            await store.put_run([b"a"], [bytearray(b"x")], **shared)  # type: ignore[list-item]
        with pytest.raises(TypeError):
            await store.put_run([b"a"], [b"x"], **{**shared, "source": 5})
        assert await store.count() == 0
