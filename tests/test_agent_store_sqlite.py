"""The agent's journalled store over the SQLite store: durable on commit, read back whole,
many commits in one transaction. Real SQLite files in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from fleetwire.protocol.agent.bundling import FORWARDED, LOCAL
from fleetwire.protocol.replay import Seen
from fleetwire.runtime.store.agent_store import open_agent_store
from fleetwire.runtime.store.sqlite_store import open_sqlite_store
from fleetwire.runtime.store.store import Accepted, Duplicate, Quota, Refused, StoreError

from .test_store import bundle


async def test_what_was_committed_is_read_back_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "bundles.db"
    seen = Seen(issuer=7, sequence=3, issued_at=100, content_id=b"c" * 32, keep_until=10_000)
    async with open_sqlite_store(path) as backing, open_agent_store(backing) as store:
        assert isinstance(store.put(bundle(1)), Accepted)
        assert isinstance(store.put(bundle(2, hop=LOCAL)), Accepted)
        assert isinstance(store.put(bundle(3)), Accepted)
        assert store.tombstone(bundle(1).bundle_id, FORWARDED, 5_000)
        assert store.delete(bundle(3).bundle_id)
        store.remember([seen], {7: 2})
        await store.commit()
        # Durable now: the SQLite store itself has it, not only the mirror.
        assert (await backing.get(bundle(2).bundle_id)) == bundle(2, hop=LOCAL)
        assert await backing.get(bundle(3).bundle_id) is None
    async with open_sqlite_store(path) as backing, open_agent_store(backing) as store:
        tombstone = store.get(bundle(1).bundle_id)
        assert tombstone is not None and (tombstone.next_hop, tombstone.data) == (FORWARDED, b"")
        assert tombstone.expires_at == 5_000
        assert isinstance(store.put(bundle(1)), Duplicate)  # a late copy is still known
        assert store.pending_for(LOCAL, 10) == [bundle(2, hop=LOCAL)]
        assert store.get(bundle(3).bundle_id) is None
        assert store.remembered() == ([seen], {7: 2})
        assert store.next_expiry() == 5_000


async def test_writes_not_committed_by_a_caller_are_still_written_at_close(tmp_path: Path) -> None:
    path = tmp_path / "bundles.db"
    async with open_sqlite_store(path) as backing:
        async with open_agent_store(backing) as store:
            store.put(bundle(1))  # e.g. an acknowledgement's tombstone: nobody waits for it
        assert await backing.get(bundle(1).bundle_id) == bundle(1)


async def test_concurrent_commits_share_transactions(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "bundles.db") as backing, open_agent_store(backing) as store:
        committed = 0

        async def take(n: int) -> None:
            nonlocal committed
            store.put(bundle(n))
            await store.commit()
            committed += 1

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(take, n)
        assert committed == 200 and await backing.count() == 200
        assert store.submissions <= 20, store.submissions  # group commit, not one each
        assert backing.batches_committed <= 20


async def test_a_smaller_quota_after_a_restart_loses_nothing_held(tmp_path: Path) -> None:
    path = tmp_path / "bundles.db"
    async with open_sqlite_store(path) as backing, open_agent_store(backing) as store:
        for n in range(5):
            store.put(bundle(n))
        await store.commit()
    async with (
        open_sqlite_store(path, quota=Quota(max_bundles=2)) as backing,
        open_agent_store(backing) as store,
    ):
        assert [store.get(bundle(n).bundle_id) for n in range(5)] == [bundle(n) for n in range(5)]
        assert isinstance(store.put(bundle(9)), Refused)  # but nothing more comes in


async def test_a_failed_store_fails_the_commit_instead_of_acknowledging(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "bundles.db") as backing, open_agent_store(backing) as store:
        await backing.close()  # the disk went away under the node
        store.put(bundle(1))
        with pytest.raises(StoreError):
            await store.commit()
