"""Custody first (``runtime/node/ingress.py``): a run from an accepted session is durable in the
ingress when ``accept_many`` returns and the agent adopts it afterwards; rows a crash left are
adopted at the next start before anything new; a bundle the agent refuses at adoption is
dropped with a log line; a full ingress (or store) sends runs the agent's way at once; hostile
bundles are refused before the acknowledgement exactly as without the ingress."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from fleetwire.protocol.agent.contacts import Clock, ContactPlan
from fleetwire.protocol.bpv7 import accel
from fleetwire.runtime.node.node import BundleRefused, NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.sqlite_store import open_sqlite_store
from fleetwire.runtime.store.store import Quota

from .fleet import T0, node_key, trust_for
from .test_node_loopback import A, C, bundle_from_a, claim


@pytest.fixture(autouse=True)
def _the_walk_vouches() -> None:
    # The ingress holds only what the C walk vouches for; on the pure-Python road every run goes
    # the agent's way at once (test_node_loopback checks that road).
    if accel.walk is None:
        pytest.skip("the ingress needs the C walk (switched off by --pure-python)")


def c_config(**kw: int) -> NodeConfig:
    return NodeConfig(node=C, key=node_key(C), trust=trust_for([A, C]),
                      contact_plan=ContactPlan(), **kw)  # type: ignore[arg-type]  # fmt: skip


def clock() -> Clock:
    return Clock(trio.current_time(), T0)  # the claims were issued at T0


async def test_a_run_is_durable_in_the_ingress_on_return_and_adopted_afterwards(
    tmp_path: Path,
) -> None:
    async with open_sqlite_store(tmp_path / "c.db") as store:
        async with open_node(c_config(), store, clock=clock()) as c:
            assert c.ingress is not None
            inbox = c.subscribe()
            run = [bundle_from_a(C, n) for n in (1, 2, 3)]
            with trio.fail_after(10):
                assert await c.accept_many(run, A) == [None, None, None]
                assert c.ingress.received == 3
                messages = [(await inbox.receive()).message for _ in run]
                assert messages == [claim(1), claim(2), claim(3)]
                await c.ingress.wait_settled()
            assert c.ingress.adopted == 3 and c.ingress.dropped == 0
            assert c.stats.accepted == 3
        assert await store.ingress_runs(0, 10) == []  # adopted: the rows went


async def test_rows_left_at_a_crash_are_adopted_at_start_before_new_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "c.db"
    # What a node killed after acknowledging two runs and before adopting them left behind.
    async with open_sqlite_store(path) as store:
        await store.ingress_put([bundle_from_a(C, 1), bundle_from_a(C, 2)], A)
        await store.ingress_put([bundle_from_a(C, 3)], A)
    async with open_sqlite_store(path) as store:
        async with open_node(c_config(), store, clock=clock()) as c:
            assert c.ingress is not None and c.ingress.held_bundles == 3
            inbox = c.subscribe()
            with trio.fail_after(10):
                assert await c.accept_many([bundle_from_a(C, 4)], A) == [None]
                messages = [(await inbox.receive()).message for _ in range(4)]
                await c.ingress.wait_settled()
            assert messages == [claim(1), claim(2), claim(3), claim(4)]  # the old ones first
            assert c.stats.accepted == 4 and c.ingress.dropped == 0
        assert await store.ingress_runs(0, 10) == []
    assert any("event=ingress-restart runs=2 bundles=3" in r.message for r in caplog.records)


async def test_a_row_adopted_before_a_crash_and_fed_again_is_a_harmless_duplicate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    data = bundle_from_a(C, 1)
    async with open_sqlite_store(path) as store:
        async with open_node(c_config(), store, clock=clock()) as c:
            assert c.ingress is not None
            await c.accept_many([data], A)
            await c.ingress.wait_settled()
            assert c.stats.accepted == 1
        # The crash between the agent's commit and the row's delete: the row is back.
        await store.ingress_put([data], A)
    async with open_sqlite_store(path) as store:
        async with open_node(c_config(), store, clock=clock()) as c:
            assert c.ingress is not None
            with trio.fail_after(10):
                await c.ingress.wait_settled()
            assert (c.stats.accepted, c.stats.duplicates, c.ingress.dropped) == (0, 1, 0)
        assert await store.ingress_runs(0, 10) == []


async def test_a_bundle_the_agent_refuses_at_adoption_is_dropped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "c.db"
    async with open_sqlite_store(path) as store:  # a row the C walk never vouched for
        await store.ingress_put([bundle_from_a(C, 1), b"\x00not a bundle", bundle_from_a(C, 2)], A)
    async with open_sqlite_store(path) as store:
        async with open_node(c_config(), store, clock=clock()) as c:
            assert c.ingress is not None
            inbox = c.subscribe()
            with trio.fail_after(10):
                messages = [(await inbox.receive()).message for _ in range(2)]
                await c.ingress.wait_settled()
            assert messages == [claim(1), claim(2)]  # the others went on
            assert (c.ingress.adopted, c.ingress.dropped) == (2, 1)
        assert await store.ingress_runs(0, 10) == []
    dropped = [r.message for r in caplog.records if "event=ingress-dropped" in r.message]
    assert len(dropped) == 1 and "not-indefinite-array" in dropped[0]


async def test_a_full_ingress_sends_runs_the_agents_way_at_once() -> None:
    store = MemoryBundleStore()
    async with open_node(c_config(ingress_max_bundles=2), store, clock=clock()) as c:
        assert c.ingress is not None
        run = [bundle_from_a(C, n) for n in (1, 2, 3)]
        assert await c.accept_many(run, A) == [None, None, None]
        assert c.ingress.received == 0  # did not fit: the agent took them before returning
        assert c.stats.accepted == 3 and await store.count() == 3


async def test_a_full_store_refuses_as_before_counting_what_the_ingress_holds() -> None:
    store = MemoryBundleStore(Quota(max_bundles=2))
    async with open_node(c_config(), store, clock=clock()) as c:
        assert c.ingress is not None
        assert await c.accept_many([bundle_from_a(C, 1)], A) == [None]
        assert c.ingress.received == 1
        # One held (in the ingress or the agent) + two > the quota of two: the ingress is
        # adopted first, then the run goes the agent's way, which refuses the one too many.
        outcomes = await c.accept_many([bundle_from_a(C, 2), bundle_from_a(C, 3)], A)
        assert outcomes[0] is None
        refused = outcomes[1]
        assert isinstance(refused, BundleRefused) and refused.store_full
        assert c.ingress.received == 1 and c.ingress.held_bundles == 0
        assert c.stats.accepted == 2 and await store.count() == 2


async def test_what_the_ingress_holds_counts_against_the_quota_on_every_path() -> None:
    store = MemoryBundleStore(Quota(max_bundles=2))
    async with open_node(c_config(), store, clock=clock()) as c:
        assert c.ingress is not None
        assert await c.accept_many([bundle_from_a(C, 1)], A) == [None]
        await c.accept(bundle_from_a(C, 2), A)  # one in the ingress (or adopted) + one: room
        with pytest.raises(BundleRefused) as refused:  # a dialled session's bundle: no room
            await c.accept(bundle_from_a(C, 3), A)
        assert refused.value.store_full
        with trio.fail_after(10):
            await c.ingress.wait_settled()
        assert c.ingress.dropped == 0 and c.stats.accepted == 2


def _hostile() -> list[bytes]:
    good = bundle_from_a(C, 1)
    broken_crc = bytearray(bundle_from_a(C, 2))
    broken_crc[len(broken_crc) // 2] ^= 0x01
    return [good, bytes(broken_crc), bundle_from_a(C, 3)[:-7], b"", bundle_from_a(C, 4)]


async def test_hostile_bundles_in_a_run_are_refused_before_the_ack_exactly_as_without(
    tmp_path: Path,
) -> None:
    answers = []
    for bound in (200_000, 0):  # with the ingress, and without it (the reference)
        config = c_config(ingress_max_bundles=bound)
        async with (
            open_sqlite_store(tmp_path / f"c{bound}.db") as store,
            open_node(config, store, clock=clock()) as c,
        ):
            assert (c.ingress is not None) == (bound > 0)
            outcomes = await c.accept_many(_hostile(), A)
            answers.append([None if o is None else (str(o), o.store_full) for o in outcomes])
            if c.ingress is not None:
                assert c.ingress.received == 2  # only what the C walk vouched for
                with trio.fail_after(10):
                    await c.ingress.wait_settled()
                assert c.ingress.dropped == 0
            assert c.stats.accepted == 2 and c.stats.malformed == 3
    with_ingress, without = answers
    assert with_ingress == without
    assert [a is None for a in with_ingress] == [True, False, False, False, True]
