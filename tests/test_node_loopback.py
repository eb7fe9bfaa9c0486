"""Nodes over simulated links: store-and-forward across a contact that opens later, restarts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from fleetwire.protocol.bpv7 import BundleFlags
from fleetwire.protocol.messages import Family, Header, LeaseClaim
from fleetwire.runtime.contacts import Clock, Contact, ContactPlan
from fleetwire.runtime.loopback import LoopbackNetwork
from fleetwire.runtime.memory_store import MemoryBundleStore
from fleetwire.runtime.node import Node, NodeConfig, open_node
from fleetwire.runtime.sqlite_store import open_sqlite_store

from .fleet import DAY, T0, node_key, trust_for

HOUR = 3_600_000
A, RELAY, C = 1, 2, 3


def config(node: int, trust, contact_plan: ContactPlan) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(node=node, key=node_key(node), trust=trust, contact_plan=contact_plan)


def claim(sequence: int) -> LeaseClaim:
    return LeaseClaim(
        header=Header(issuer=A, issued_at=T0, sequence=sequence), resource="dock/7", term_ms=HOUR
    )


def plan_with(relay_to_c: list[tuple[int, int, int]]) -> ContactPlan:
    """A ⇄ relay all day; relay ⇄ C over the given (start, end, rate_bps) windows."""
    contacts = [
        Contact(A, RELAY, T0, T0 + DAY, 1_000_000, 1000),
        Contact(RELAY, A, T0, T0 + DAY, 1_000_000, 1000),
    ]
    for start, end, rate in relay_to_c:
        contacts += [
            Contact(RELAY, C, T0 + start, T0 + end, rate, 1000),
            Contact(C, RELAY, T0 + start, T0 + end, rate, 1000),
        ]
    return ContactPlan(contacts)


@asynccontextmanager
async def three_nodes(contact_plan: ContactPlan, seed: int) -> AsyncIterator[Fleet]:
    """A, the relay and C with memory stores on a simulated network, in simulated time."""
    clock = Clock(0.0, T0)
    trust = trust_for([A, RELAY, C])
    network = LoopbackNetwork(contact_plan, clock, random.Random(seed))
    stores = {n: MemoryBundleStore() for n in (A, RELAY, C)}
    with trio.fail_after(DAY / 1000):  # simulated time: a hang fails instead of spinning
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            nursery.start_soon(network.run)
            nodes = {
                n: await stack.enter_async_context(
                    open_node(
                        config(n, trust, contact_plan),
                        stores[n],
                        links=network.links_of(n),
                        clock=clock,
                    )
                )
                for n in (A, RELAY, C)
            }
            yield Fleet(clock, nodes, stores)
            nursery.cancel_scope.cancel()


@attrs.frozen
class Fleet:
    clock: Clock
    nodes: dict[int, Node]
    stores: dict[int, MemoryBundleStore]

    def now(self) -> int:
        return self.clock.to_dtn(trio.current_time())


async def test_bundle_waits_at_the_relay_until_the_contact_opens(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with three_nodes(plan_with([(HOUR, 2 * HOUR, 1_000_000)]), seed=1) as fleet:
        a, c = fleet.nodes[A], fleet.nodes[C]
        inbox = c.subscribe(Family.LEASE)
        signed = await a.send(claim(1), to=C)
        await trio.sleep(600)  # ten minutes: at the relay, its contact to C not yet open
        assert await fleet.stores[RELAY].count() == 1
        received = await inbox.receive()
        arrived = fleet.now()
        assert received.content_id == signed.content_id
        assert received.message == claim(1)
        assert T0 + HOUR + 1000 <= arrived < T0 + HOUR + 5000
        await trio.sleep(1)
        assert await fleet.stores[RELAY].count() == 0
        assert c.stats.delivered == 1
        # At C the delivered bundle stays as a tombstone (a duplicate is still known), bytes gone.
        assert (await fleet.stores[C].count(), await fleet.stores[C].bytes_used()) == (1, 0)


async def test_status_reports_when_asked_for(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    asked = (
        BundleFlags.REPORT_FORWARDING
        | BundleFlags.REPORT_DELIVERY
        | BundleFlags.STATUS_TIME_REQUESTED
    )
    async with three_nodes(plan_with([(HOUR, 2 * HOUR, 1_000_000)]), seed=3) as fleet:
        a = fleet.nodes[A]
        reports = a.subscribe_status_reports()
        await a.send(claim(1), to=C, reports=asked)
        await a.send(claim(2), to=C)  # asks for nothing: no reports about it
        got = [await reports.receive() for _ in range(3)]
        await trio.sleep(2 * HOUR / 1000)
        assert a.stats.status_reports == 3  # A forwarded it, the relay forwarded it, C delivered it
        forwarded = [r for r in got if r.forwarded.asserted]
        delivered = [r for r in got if r.delivered.asserted]
        assert len(forwarded) == 2 and len(delivered) == 1
        assert delivered[0].delivered.time is not None
        assert delivered[0].delivered.time >= T0 + HOUR
        assert {r.subject.creation.sequence for r in got} == {0}


def short_plan(opens_ms: int) -> ContactPlan:
    # A ⇄ relay from the start; relay ⇄ C from ``opens_ms``; ten milliseconds of light time.
    return ContactPlan(
        [
            Contact(A, RELAY, T0, T0 + DAY, 10_000_000, 10),
            Contact(RELAY, A, T0, T0 + DAY, 10_000_000, 10),
            Contact(RELAY, C, T0 + opens_ms, T0 + DAY, 10_000_000, 10),
            Contact(C, RELAY, T0 + opens_ms, T0 + DAY, 10_000_000, 10),
        ]
    )


async def test_relay_restart_loses_nothing_and_delivers_once(tmp_path: Path) -> None:
    # Real time, not MockClock: SQLite commits in a worker thread, and MockClock's autojump
    # would move simulated time while it does. The contact opens 1.5 s in.
    opens_ms = 1500
    clock = Clock(trio.current_time(), T0)
    trust = trust_for([A, RELAY, C])
    network = LoopbackNetwork(short_plan(opens_ms), clock, random.Random(2))
    relay_path = tmp_path / "relay.sqlite3"

    def cfg(node: int) -> NodeConfig:
        return config(node, trust, short_plan(opens_ms))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(network.run)
            async with (
                open_node(cfg(A), MemoryBundleStore(), links=network.links_of(A), clock=clock) as a,
                open_node(cfg(C), MemoryBundleStore(), links=network.links_of(C), clock=clock) as c,
            ):
                inbox = c.subscribe()
                async with (
                    open_sqlite_store(relay_path) as store,
                    open_node(cfg(RELAY), store, links=network.links_of(RELAY), clock=clock),
                ):
                    sent = [await a.send(claim(n), to=C) for n in range(5)]
                    while await store.count() < 5:
                        await trio.sleep(0.01)
                    # the relay stops here holding five bundles, before its contact to C opens
                assert clock.to_dtn(trio.current_time()) < T0 + opens_ms
                async with open_sqlite_store(relay_path) as store:
                    assert await store.count() == 5
                    async with open_node(
                        cfg(RELAY), store, links=network.links_of(RELAY), clock=clock
                    ):
                        got = [await inbox.receive() for _ in range(5)]
                        assert clock.to_dtn(trio.current_time()) >= T0 + opens_ms
                        while await store.count() > 0:
                            await trio.sleep(0.01)
                        await trio.sleep(0.2)  # time for a duplicate to show up, if any did
                assert sorted(g.content_id for g in got) == sorted(s.content_id for s in sent)
                assert c.stats.delivered == 5
                assert c.stats.duplicates == 0
            nursery.cancel_scope.cancel()


async def test_bundle_that_cannot_arrive_in_time_waits_and_expires(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0

    async with three_nodes(plan_with([(2 * HOUR, 3 * HOUR, 1_000_000)]), seed=4) as fleet:
        a, c, stores = fleet.nodes[A], fleet.nodes[C], fleet.stores
        inbox = c.subscribe()
        # Lifetime one hour, first contact to C in two: contact-graph routing finds no route
        # that arrives in time, so A keeps the bundle (it does not burden the relay) until
        # it expires.
        await a.send(claim(1), to=C, lifetime_ms=HOUR)
        await trio.sleep(HOUR / 1000 / 2)
        assert await stores[A].count() == 1 and await stores[RELAY].count() == 0
        await trio.sleep(HOUR / 1000 + 120)  # past its lifetime, and an expiry sweep later
        assert await stores[A].count() == 0
        assert a.stats.expired == 1
        await trio.sleep(2 * HOUR / 1000)  # the contact to C came and went
        with pytest.raises(trio.WouldBlock):
            inbox.receive_nowait()
        assert c.stats.delivered == 0


async def test_transfer_cut_by_a_closing_window_is_sent_again_next_window(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    # The first window is one second at 1 kbit/s: too short for a bundle of a few hundred
    # bytes, so the transfer fails when it closes and the bundle goes in the second window.
    windows = [(HOUR, HOUR + 1000, 1000), (2 * HOUR, 3 * HOUR, 1_000_000)]

    async with three_nodes(plan_with(windows), seed=4) as fleet:
        a, relay, c = fleet.nodes[A], fleet.nodes[RELAY], fleet.nodes[C]
        inbox = c.subscribe()
        signed = await a.send(claim(1), to=C)
        received = await inbox.receive()
        assert received.content_id == signed.content_id
        assert fleet.now() >= T0 + 2 * HOUR
        await trio.sleep(1)  # let C's delivery task count it
        assert relay.stats.link_down >= 1  # the cut transfer
        assert relay.stats.forwarded == 1 and c.stats.delivered == 1
