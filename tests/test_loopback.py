"""Simulated loopback links under ``MockClock``: exact timing, windows, medium statistics."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.runtime.links.link import Link, LinkDown
from fleetwire.runtime.links.loopback import LinkModel, LoopbackNetwork

DAY_MS = 86_400_000


def both_ways(a: int, b: int, start: int, end: int, rate: int, owlt: int) -> list[Contact]:
    return [Contact(a, b, start, end, rate, owlt), Contact(b, a, start, end, rate, owlt)]


@pytest.fixture
async def network_factory(nursery: trio.Nursery) -> AsyncIterator[object]:
    """Build a network pinned at Trio time 0 = DTN time 0, with its scheduler running.

    Tests take ``autojump_clock`` themselves: pytest-trio only uses a clock the test requests.
    """

    def build(
        contacts: list[Contact], model: LinkModel | None = None, seed: int = 1
    ) -> LoopbackNetwork:
        net = LoopbackNetwork(ContactPlan(contacts), Clock(0.0, 0), random.Random(seed), model)
        nursery.start_soon(net.run)
        return net

    yield build


async def test_delay_and_bandwidth_are_exact(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    # 8000 bit/s: 1000 bytes take exactly 1 s to send; the light time adds 1.5 s.
    net = network_factory(both_ways(1, 2, 0, DAY_MS, 8_000, 1_500))
    a, b = net.link(1, 2), net.link(2, 1)
    assert isinstance(a, Link)
    arrivals: list[tuple[float, bytes]] = []

    async def receiver() -> None:
        async for bundle in b.incoming:
            arrivals.append((trio.current_time(), bundle))

    async with trio.open_nursery() as inner:
        inner.start_soon(receiver)
        await a.send(b"x" * 1_000)
        assert trio.current_time() == 1.0  # send returns when the last bit has left
        await a.send(b"y" * 500)
        assert trio.current_time() == 1.5
        await trio.sleep(10)
        inner.cancel_scope.cancel()
    assert arrivals == [(2.5, b"x" * 1_000), (3.0, b"y" * 500)]
    assert net.stats.sent == 2 and net.stats.delivered == 2


async def test_concurrent_sends_queue_behind_each_other(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    net = network_factory(both_ways(1, 2, 0, DAY_MS, 8_000, 0))
    a = net.link(1, 2)
    done: dict[int, float] = {}

    async def send(i: int) -> None:
        await a.send(bytes(250))
        done[i] = trio.current_time()

    async with trio.open_nursery() as inner:
        for i in range(4):
            inner.start_soon(send, i)
    assert sorted(done.values()) == [0.25, 0.5, 0.75, 1.0]


async def test_contact_windows_open_and_close(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    # 1 -> 2 is open over [10 s, 20 s) and [30 s, 40 s); the reverse direction never.
    net = network_factory(
        [Contact(1, 2, 10_000, 20_000, 8_000, 2_000), Contact(1, 2, 30_000, 40_000, 8_000, 0)]
    )
    a, b = net.link(1, 2), net.link(2, 1)
    assert not a.is_up and not b.is_up
    with pytest.raises(LinkDown):
        await a.send(b"early")
    assert trio.current_time() == 0.0  # refused at once: the store keeps the bundle
    await a.wait_up()
    assert trio.current_time() == 10.0 and a.is_up
    await a.wait_up()  # already up: returns at once
    await a.wait_down()
    assert trio.current_time() == 20.0 and not a.is_up
    await a.wait_down()
    await a.wait_up()
    assert trio.current_time() == 30.0
    await a.wait_down()
    assert trio.current_time() == 40.0
    with trio.move_on_after(DAY_MS) as scope:  # no window ever again
        await a.wait_up()
    assert scope.cancelled_caught


async def test_bundle_in_flight_when_window_closes_still_arrives(
    network_factory, autojump_clock
) -> None:  # type: ignore[no-untyped-def]
    net = network_factory([Contact(1, 2, 0, 1_000, 8_000, 5_000)])
    a, b = net.link(1, 2), net.link(2, 1)
    await trio.sleep(0.5)
    await a.send(bytes(250))  # leaves at 0.75 s, before the close at 1 s
    assert trio.current_time() == 0.75
    await a.wait_down()
    assert await b.incoming.receive() == bytes(250)
    assert trio.current_time() == 5.75


async def test_transfer_that_overruns_the_window_fails_at_the_close(
    network_factory, autojump_clock
) -> None:  # type: ignore[no-untyped-def]
    net = network_factory([Contact(1, 2, 0, 1_000, 8_000, 0)])
    a, b = net.link(1, 2), net.link(2, 1)
    await a.send(bytes(600))  # 0.6 s
    with pytest.raises(LinkDown, match="closed during"):
        await a.send(bytes(600))  # would need until 1.2 s
    assert trio.current_time() == 1.0
    await trio.sleep(5)
    assert net.stats.sent == 1 and b.incoming.statistics().current_buffer_used == 1


async def test_queue_longer_than_the_window_fails_at_the_close(
    network_factory, autojump_clock
) -> None:  # type: ignore[no-untyped-def]
    net = network_factory([Contact(1, 2, 0, 1_000, 8_000, 0)])
    a = net.link(1, 2)
    outcomes: list[tuple[str, float]] = []

    async def send(n: int) -> None:
        try:
            await a.send(bytes(n))
            outcomes.append(("ok", trio.current_time()))
        except LinkDown:
            outcomes.append(("down", trio.current_time()))

    async with trio.open_nursery() as inner:
        inner.start_soon(send, 1_000)  # fills the window exactly
        await trio.testing.wait_all_tasks_blocked()
        inner.start_soon(send, 1)
    assert sorted(outcomes) == [("down", 1.0), ("ok", 1.0)]  # both end at the close


async def test_touching_contacts_form_one_window(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    net = network_factory(
        [Contact(1, 2, 0, 1_000, 8_000, 0), Contact(1, 2, 1_000, 2_000, 16_000, 0)]
    )
    a = net.link(1, 2)
    await a.wait_down()
    assert trio.current_time() == 2.0


async def test_rate_of_the_contact_open_when_the_transfer_starts(
    network_factory, autojump_clock
) -> None:  # type: ignore[no-untyped-def]
    net = network_factory(
        [Contact(1, 2, 0, 1_000, 8_000, 0), Contact(1, 2, 1_000, 3_000, 16_000, 0)]
    )
    a = net.link(1, 2)
    await trio.sleep(1.5)
    await a.send(bytes(1_000))
    assert trio.current_time() == 2.0


async def test_loss_and_duplication_rates(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    # Ten links sending in step, so the mock clock jumps once per round, not once per bundle.
    model = LinkModel(loss=0.2, duplicate=0.1)
    contacts = [c for peer in range(2, 12) for c in both_ways(1, peer, 0, DAY_MS, 8_000_000, 10)]
    net = network_factory(contacts, model, seed=7)
    inbox = net.open_inbox(1)
    rounds = 200
    n = rounds * 10

    async def sender(peer: int) -> None:
        for i in range(rounds):
            await net.link(peer, 1).send(i.to_bytes(4, "big"))

    async with trio.open_nursery() as inner:
        for peer in range(2, 12):
            inner.start_soon(sender, peer)
    await trio.sleep(1)
    received: dict[int, list[int]] = {peer: [] for peer in range(2, 12)}
    while True:
        try:
            peer, bundle = inbox.receive_nowait()
        except trio.WouldBlock:
            break
        received[peer].append(int.from_bytes(bundle, "big"))
    stats = net.stats
    assert stats.sent == n
    # Binomial bounds at about 4.5 standard deviations (deterministic for the seed).
    assert abs(stats.lost - 0.2 * n) < 81
    assert abs(stats.duplicated - 0.1 * 0.8 * n) < 55
    total = sum(len(x) for x in received.values())
    assert total == n - stats.lost + stats.duplicated == stats.delivered
    assert sum(len(set(x)) for x in received.values()) == n - stats.lost
    for got in received.values():
        assert got == sorted(got)  # no jitter: FIFO per link, duplicates right behind


def test_jitter_reorders_and_seed_reproduces() -> None:
    async def run(seed: int) -> list[int]:
        out: list[tuple[float, int]] = []
        net = LoopbackNetwork(
            ContactPlan(both_ways(1, 2, 0, DAY_MS, 8_000_000, 100)),
            Clock(0.0, 0),
            random.Random(seed),
            LinkModel(jitter_ms=50, duplicate=0.05),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(net.run)
            for i in range(200):
                await net.link(1, 2).send(i.to_bytes(2, "big"))
                await trio.sleep(0.005)
            await trio.sleep(1)
            inbox = net.link(2, 1).incoming
            while True:
                try:
                    bundle = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                out.append((trio.current_time(), int.from_bytes(bundle, "big")))
            nursery.cancel_scope.cancel()
        return [x for _, x in out]

    def in_mock_time(seed: int) -> list[int]:
        return trio.run(run, seed, clock=trio.testing.MockClock(autojump_threshold=0))

    first, again, other = in_mock_time(3), in_mock_time(3), in_mock_time(4)
    assert first == again and first != other
    inversions = sum(1 for x, y in itertools.pairwise(first) if x > y)
    assert inversions > 30  # 50 ms of jitter over 5 ms spacing reorders a lot
    assert sorted(set(first)) == list(range(200))


async def test_inbox_collects_from_all_links(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    contacts = both_ways(1, 9, 0, DAY_MS, 8_000, 100) + both_ways(2, 9, 0, DAY_MS, 8_000, 200)
    net = network_factory(contacts)
    inbox = net.open_inbox(9)
    with pytest.raises(RuntimeError):
        net.open_inbox(9)
    assert set(net.links_of(9)) == {1, 2}
    await net.link(2, 9).send(b"b")
    await net.link(1, 9).send(b"a")
    assert await inbox.receive() == (1, b"a")
    assert await inbox.receive() == (2, b"b")


async def test_closed_end_refuses_sends_and_drops_deliveries(
    network_factory, autojump_clock
) -> None:  # type: ignore[no-untyped-def]
    net = network_factory(both_ways(1, 2, 0, DAY_MS, 8_000, 100))
    a, b = net.link(1, 2), net.link(2, 1)
    await b.aclose()
    assert not b.is_up
    await b.wait_down()
    with pytest.raises(LinkDown, match="closed"):
        await b.send(b"x")
    with pytest.raises(LinkDown):
        await b.wait_up()
    assert [x async for x in b.incoming] == []
    await a.send(b"lost")
    await trio.sleep(1)
    assert net.stats.dropped_closed == 1 and net.stats.delivered == 0


async def test_thirty_days_of_daily_contacts(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    # One 10-minute window per day for 30 days; one bundle per window.
    contacts = [Contact(1, 2, d * DAY_MS, d * DAY_MS + 600_000, 8_000, 1_300) for d in range(30)]
    net = network_factory(contacts)
    a, b = net.link(1, 2), net.link(2, 1)
    for day in range(30):
        await a.wait_up()
        assert trio.current_time() == day * 86_400
        await a.send(day.to_bytes(1, "big"))
        await a.wait_down()
    await trio.sleep(2)
    got = [b.incoming.receive_nowait()[0] for _ in range(30)]
    assert got == list(range(30))
    assert trio.current_time() > 29 * 86_400


def test_link_model_validates() -> None:
    with pytest.raises(ValueError):
        LinkModel(loss=1.5)
    with pytest.raises(ValueError):
        LinkModel(jitter_ms=-1)


async def test_cancelled_send_delivers_nothing(network_factory, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    net = network_factory(both_ways(1, 2, 0, DAY_MS, 8_000, 0))
    a, b = net.link(1, 2), net.link(2, 1)
    with trio.move_on_after(0.5):
        await a.send(bytes(1_000))  # needs 1 s
    await a.send(b"next")  # queued behind the abandoned transfer's reserved time
    assert trio.current_time() == 1.004
    await trio.sleep(1)
    assert b.incoming.receive_nowait() == b"next"
    with pytest.raises(trio.WouldBlock):
        b.incoming.receive_nowait()
    assert net.stats.sent == 1
