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
from fleetwire.protocol.agent.bundling import (
    FORWARDED,
    LOCAL,
    for_next_hop,
    inspect_bundle,
    message_bundle,
    stored,
)
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.bpv7 import BundleFlags, accel, decode_bundle
from fleetwire.protocol.envelope import seal
from fleetwire.protocol.messages import Family, Header, LeaseClaim
from fleetwire.runtime.links.loopback import LoopbackNetwork
from fleetwire.runtime.node.node import Node, NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.sqlite_store import open_sqlite_store
from fleetwire.runtime.store.store import PutResult, StoredBundle

from .fleet import DAY, T0, node_key, trust_for

HOUR = 3_600_000
A, RELAY, C = 1, 2, 3


def config(node: int, trust, contact_plan: ContactPlan, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(node=node, key=node_key(node), trust=trust, contact_plan=contact_plan, **kw)


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
async def three_nodes(
    contact_plan: ContactPlan, seed: int, stores: dict[int, MemoryBundleStore] | None = None
) -> AsyncIterator[Fleet]:
    """A, the relay and C with memory stores on a simulated network, in simulated time."""
    clock = Clock(0.0, T0)
    trust = trust_for([A, RELAY, C])
    network = LoopbackNetwork(contact_plan, clock, random.Random(seed))
    stores = {n: MemoryBundleStore() for n in (A, RELAY, C)} | (stores or {})
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
        # The relay keeps a tombstone of what it forwarded (a resend is a duplicate), no bytes.
        assert (await fleet.stores[RELAY].count(), await fleet.stores[RELAY].bytes_used()) == (1, 0)
        assert len(await fleet.stores[RELAY].pending_ids(FORWARDED, 10)) == 1
        assert c.stats.delivered == 1
        # Handed over, not yet acknowledged: C still holds the whole bundle.
        assert await fleet.stores[C].bytes_used() > 0
        inbox.acknowledge()
        await trio.sleep(1)
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
        inbox = fleet.nodes[C].subscribe()  # C's application: it acknowledges both messages
        await a.send(claim(1), to=C, reports=asked)
        await a.send(claim(2), to=C)  # asks for nothing: no reports about it
        await inbox.receive()
        await inbox.receive()
        inbox.acknowledge()  # delivered, for the report, means acknowledged by the application
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
                        while await store.pending_ids(None, 10):  # all five forwarded
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


# --- nothing stuck between the store and the application ---------------------------------


class SlowCommit(MemoryBundleStore):
    """A store whose ``put`` commits at once and returns a second later, as on a slow disk."""

    def __init__(self) -> None:
        super().__init__()
        self.committed = trio.Event()
        self.slow = True

    async def put(self, bundle: StoredBundle) -> PutResult:
        result = await super().put(bundle)
        if self.slow:
            self.committed.set()
            await trio.sleep(1)
        return result


def bundle_from_a(to: int, sequence: int = 1) -> bytes:
    """A's claim in a bundle to ``to``, as A's sender puts it on the wire to its next hop."""
    signed = seal(claim(sequence), node_key(A))
    bundle = message_bundle(
        signed.envelope, source=A, destination=to, created_at=T0, sequence=sequence,
        lifetime_ms=DAY,
    )  # fmt: skip
    return for_next_hop(bundle, A)


async def accept_then_sender_dies(node: Node, store: SlowCommit, data: bytes) -> None:
    """The link task that received ``data`` is cancelled after the store committed it and
    before it was acknowledged; the sender, back up, sends it again and is told "duplicate"."""
    async with trio.open_nursery() as link_task:
        link_task.start_soon(node.accept, data, A)
        await store.committed.wait()
        link_task.cancel_scope.cancel()  # the neighbour died: its session's tasks go
    store.slow = False
    duplicates = node.stats.duplicates
    await node.accept(data, A)  # the resend after the sender's restart
    assert node.stats.duplicates == duplicates + 1


async def test_destination_delivers_a_bundle_whose_accept_was_cancelled_after_commit(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    store = SlowCommit()
    # Expiry (and with it the sweep) far off: the hand-off itself must survive the cancel.
    cfg = config(C, trust_for([A, RELAY, C]), ContactPlan(), expiry_interval_s=DAY / 1000)
    async with open_node(cfg, store, clock=Clock(0.0, T0)) as c:
        inbox = c.subscribe()
        await accept_then_sender_dies(c, store, bundle_from_a(C))
        with trio.fail_after(600):
            got = await inbox.receive()
        assert got.message == claim(1)


async def test_relay_forwards_a_bundle_whose_accept_was_cancelled_after_commit(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    relay_store = SlowCommit()
    plan = plan_with([(0, DAY, 1_000_000)])
    async with three_nodes(plan, seed=5, stores={RELAY: relay_store}) as fleet:
        inbox = fleet.nodes[C].subscribe()
        await accept_then_sender_dies(fleet.nodes[RELAY], relay_store, bundle_from_a(C))
        with trio.fail_after(30):  # well before the relay's first expiry pass and sweep (60 s)
            got = await inbox.receive()
        assert got.message == claim(1)
        assert fleet.nodes[RELAY].stats.forwarded == 1


async def held_behind_the_nodes_back(store: MemoryBundleStore, data: bytes, local: bool) -> None:
    """Put ``data`` in ``store`` as a node would, before that node starts (held from a run
    that ended before it could deliver or forward it)."""
    bundle = decode_bundle(data)
    await store.put(stored(bundle, data, T0, inspect_bundle(bundle, T0), LOCAL if local else None))


async def test_a_resend_of_a_bundle_held_from_before_is_a_duplicate_and_delivered_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    store = MemoryBundleStore()
    data = bundle_from_a(C)
    await held_behind_the_nodes_back(store, data, local=True)
    cfg = config(C, trust_for([A, RELAY, C]), ContactPlan(), expiry_interval_s=DAY / 1000)
    async with open_node(cfg, store, clock=Clock(0.0, T0)) as c:
        inbox = c.subscribe()
        await c.accept(data, A)  # the sender never had our acknowledgement: it sends again
        assert c.stats.duplicates == 1
        with trio.fail_after(600):
            assert (await inbox.receive()).message == claim(1)
        await trio.sleep(60)
        with pytest.raises(trio.WouldBlock):
            inbox.receive_nowait()  # once, not once per copy


async def test_relay_forwards_a_bundle_held_from_before_its_start(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    relay_store = MemoryBundleStore()
    await held_behind_the_nodes_back(relay_store, bundle_from_a(C), local=False)
    async with three_nodes(plan_with([(0, DAY, 1_000_000)]), 6, {RELAY: relay_store}) as fleet:
        inbox = fleet.nodes[C].subscribe()
        with trio.fail_after(30):  # at once, not at some later pass over the store
            assert (await inbox.receive()).message == claim(1)
        assert fleet.nodes[RELAY].stats.forwarded == 1


# --- delivered means: the application acknowledged it --------------------------------------


def c_config(**kw: float) -> NodeConfig:
    return config(C, trust_for([A, RELAY, C]), ContactPlan(), **kw)


async def test_message_handed_over_but_not_acknowledged_comes_again_after_restart(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    store = MemoryBundleStore()  # outlives the node: a restart with the same store
    clock = Clock(0.0, T0)
    async with open_node(c_config(), store, clock=clock) as c:
        inbox = c.subscribe()
        await c.accept(bundle_from_a(C), A)
        first = await inbox.receive()
        await trio.sleep(10)
        # the application dies here, before it asked for the next message or acknowledged
    async with open_node(c_config(), store, clock=clock) as c:
        inbox = c.subscribe()
        with trio.fail_after(10):
            again = await inbox.receive()
        assert again.content_id == first.content_id
        inbox.acknowledge()
    async with open_node(c_config(), store, clock=clock) as c:
        inbox = c.subscribe()
        await trio.sleep(10)
        with pytest.raises(trio.WouldBlock):
            inbox.receive_nowait()  # acknowledged: a tombstone, never delivered again
    assert (await store.count(), await store.bytes_used()) == (1, 0)


async def test_asking_for_the_next_message_acknowledges_the_one_before(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    store = MemoryBundleStore()
    async with open_node(c_config(), store, clock=Clock(0.0, T0)) as c:
        inbox = c.subscribe()
        for n in (1, 2):
            await c.accept(bundle_from_a(C, n), A)
        await inbox.receive()
        assert c.stats.acknowledged == 0
        await inbox.receive()
        await trio.sleep(1)
        assert c.stats.acknowledged == 1
        assert await store.bytes_used() == len(bundle_from_a(C, 2))  # the second one, held
        inbox.acknowledge()
        await trio.sleep(1)
        assert (c.stats.acknowledged, await store.bytes_used()) == (2, 0)


async def test_closing_a_subscription_gives_its_unacknowledged_messages_back(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with open_node(c_config(), MemoryBundleStore(), clock=Clock(0.0, T0)) as c:
        async with c.subscribe(Family.LEASE) as first:
            await c.accept(bundle_from_a(C), A)
            got = await first.receive()
        second = c.subscribe(Family.LEASE)
        with trio.fail_after(10):
            assert (await second.receive()).content_id == got.content_id
        # handed over once, then again to the second subscription
        assert (c.stats.delivered, c.stats.redelivered) == (1, 1)


async def test_held_messages_wait_for_a_subscriber_after_restart(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    store = MemoryBundleStore()
    await held_behind_the_nodes_back(store, bundle_from_a(C), local=True)  # from before
    async with open_node(c_config(), store, clock=Clock(0.0, T0)) as c:
        await trio.sleep(60)  # the application is slow to subscribe
        inbox = c.subscribe(Family.LEASE)
        with trio.fail_after(10):
            assert (await inbox.receive()).message == claim(1)


async def test_a_resend_of_a_forwarded_bundle_is_a_duplicate_not_forwarded_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    # A gave the relay a bundle, the relay forwarded it to C, and A — killed before it deleted
    # its copy, or never told of the relay's acknowledgement — sends it again.
    mock_clock.autojump_threshold = 0
    async with three_nodes(plan_with([(0, DAY, 1_000_000)]), seed=7) as fleet:
        relay, c = fleet.nodes[RELAY], fleet.nodes[C]
        inbox = c.subscribe()
        data = bundle_from_a(C)
        await relay.accept(data, A)
        assert (await inbox.receive()).message == claim(1)
        await trio.sleep(10)
        assert relay.stats.forwarded == 1
        await relay.accept(data, A)  # the resend, a minute later
        await trio.sleep(60)
        assert (relay.stats.accepted, relay.stats.duplicates) == (1, 1)
        assert relay.stats.forwarded == 1 and c.stats.duplicates == 0
        # Remembered for forwarded_memory_ms (15 min), then forgotten.
        await trio.sleep(15 * 60)
        assert await fleet.stores[RELAY].count() == 0


async def test_accept_many_takes_a_batch_in_one_commit_and_refuses_only_the_bad_one(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    store = MemoryBundleStore()
    async with open_node(c_config(), store, clock=Clock(0.0, T0)) as c:
        inbox = c.subscribe()
        good = [bundle_from_a(C, n) for n in (1, 2)]
        outcomes = await c.accept_many([good[0], b"\x00not a bundle", good[1]], A)
        assert [type(o).__name__ for o in outcomes] == ["NoneType", "BundleRefused", "NoneType"]
        # Durable on return, both of them: in the ingress (custody first) when the C walk can
        # vouch for them, else straight through the agent (the pure-Python road); then the agent's.
        assert c.ingress is not None
        held = 2 if accel.walk is not None else 0
        assert c.ingress.received == held and c.ingress.dropped == 0
        await c.ingress.wait_settled()
        assert await store.count() == 2
        assert [(await inbox.receive()).message for _ in good] == [claim(1), claim(2)]
