"""The convergence-layer link over in-memory streams: custody, sending, ending, timers, backoff.

Real sessions (TCPCLv4, TCPCLv3, MTCP) on both ends; only the byte pipe is in memory, so these
runs are fast and deterministic, and ``MockClock`` drives the timers.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from fleetwire.protocol.tcpcl import v3, v4
from fleetwire.protocol.tcpcl.common import NEED_DATA, Role
from fleetwire.runtime.links.cl_link import (
    Accept,
    ClLink,
    ConvergenceLayer,
    CustodyRefused,
    LinkTimeouts,
    Mtcp,
    Refusal,
    TcpclV3,
    TcpclV4,
    TransferRefusedByPeer,
    open_cl_link,
)
from fleetwire.runtime.links.link import Link, LinkDown
from fleetwire.runtime.links.tcp import Backoff, Connector, open_connector


def v4_layer(node: int, **config: object) -> TcpclV4:
    return TcpclV4(v4.SessionConfig(node_id=f"ipn:{node}.0", **config))  # type: ignore[arg-type]


def v3_layer(node: int, **config: object) -> TcpclV3:
    return TcpclV3(v3.TcpclV3Config(f"ipn:{node}.0", **config))  # type: ignore[arg-type]


LAYERS = {
    "tcpclv4": (lambda: v4_layer(1), lambda: v4_layer(2)),
    "tcpclv3": (lambda: v3_layer(1), lambda: v3_layer(2)),
    "mtcp": (Mtcp, Mtcp),
}
ACKING = ["tcpclv4", "tcpclv3"]


class Collector:
    """An ``accept`` that keeps what it was given (the test's "store")."""

    def __init__(self) -> None:
        self.bundles: list[bytes] = []
        self.arrived = trio.Event()

    async def __call__(self, bundle: bytes, link: ClLink) -> None:
        self.bundles.append(bundle)
        self.arrived.set()
        self.arrived = trio.Event()


@asynccontextmanager
async def linked(
    layer_a: ConvergenceLayer,
    layer_b: ConvergenceLayer,
    *,
    accept_a: Accept | None = None,
    accept_b: Accept | None = None,
    timeouts: LinkTimeouts | None = None,
) -> AsyncIterator[tuple[ClLink, ClLink]]:
    """Two established links joined by an in-memory stream pair: ``a`` active, ``b`` passive."""
    stream_a, stream_b = trio.testing.memory_stream_pair()
    passive: list[ClLink] = []
    ready, release = trio.Event(), trio.Event()

    async def run_passive() -> None:
        async with open_cl_link(
            stream_b, layer_b, role=Role.PASSIVE, local=2, accept=accept_b, timeouts=timeouts
        ) as link:
            passive.append(link)
            ready.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_passive)
        async with open_cl_link(
            stream_a, layer_a, role=Role.ACTIVE, local=1, accept=accept_a, timeouts=timeouts
        ) as a:
            await ready.wait()
            yield a, passive[0]
        release.set()


SIZES = [1, 100, 65_536, 1_000_000]


@pytest.mark.parametrize("kind", list(LAYERS))
async def test_bundles_of_every_size_cross_both_ways_intact(kind: str) -> None:
    make_a, make_b = LAYERS[kind]
    at_a, at_b = Collector(), Collector()
    with trio.fail_after(10):
        async with linked(make_a(), make_b(), accept_a=at_a, accept_b=at_b) as (a, b):
            assert isinstance(a, Link) and a.is_up and b.is_up
            bundles = [bytes([n % 251]) * n for n in SIZES]
            for bundle in bundles:
                await a.send(bundle)
                await b.send(bundle[::-1])
            while len(at_a.bundles) < len(bundles) or len(at_b.bundles) < len(bundles):
                await (at_a if len(at_a.bundles) < len(bundles) else at_b).arrived.wait()
    assert at_b.bundles == bundles
    assert at_a.bundles == [x[::-1] for x in bundles]


async def test_peer_node_numbers_come_from_ipn_node_ids() -> None:
    async with linked(v4_layer(7), v4_layer(9), accept_b=Collector()) as (a, b):
        assert (a.local, a.peer, a.peer_node_id) == (1, 9, "ipn:9.0")
        assert (b.local, b.peer) == (2, 7)
        assert a.established is not None and a.established.keepalive_s == 60


@pytest.mark.parametrize("kind", ACKING)
async def test_final_ack_waits_until_accept_returned(kind: str) -> None:
    make_a, make_b = LAYERS[kind]
    release = trio.Event()
    entered = trio.Event()
    stored: list[bytes] = []

    async def slow_store(bundle: bytes, link: ClLink) -> None:
        entered.set()
        await release.wait()
        stored.append(bundle)

    with trio.fail_after(10):
        async with linked(make_a(), make_b(), accept_b=slow_store) as (a, b):
            done = trio.Event()

            async def sender() -> None:
                await a.send(b"custody" * 1000)
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                await entered.wait()
                await trio.testing.wait_all_tasks_blocked()
                # Everything that can run has run: the bundle is in accept, not acked.
                assert not done.is_set()
                assert b.session.awaiting_ack  # type: ignore[attr-defined]
                release.set()
                await done.wait()
            assert stored == [b"custody" * 1000]


@pytest.mark.parametrize("kind", ACKING)
async def test_refused_custody_makes_send_raise_and_the_link_stays_up(kind: str) -> None:
    make_a, make_b = LAYERS[kind]

    async def picky(bundle: bytes, link: ClLink) -> None:
        if bundle.startswith(b"no"):
            raise CustodyRefused(Refusal.NO_RESOURCES, "store full")

    with trio.fail_after(10):
        async with linked(make_a(), make_b(), accept_b=picky) as (a, _b):
            with pytest.raises(TransferRefusedByPeer) as refused:
                await a.send(b"no thanks")
            assert refused.value.reason == 2  # "No Resources" in both RFCs
            await a.send(b"yes please")
            assert a.is_up and a.bundles_sent == 1


async def test_v3_without_refusal_ends_the_session_instead() -> None:
    async def refuse_all(bundle: bytes, link: ClLink) -> None:
        raise CustodyRefused(Refusal.NOT_ACCEPTABLE)

    with trio.fail_after(10):
        async with linked(v3_layer(1), v3_layer(2, allow_refusal=False), accept_b=refuse_all) as (
            a,
            b,
        ):
            with pytest.raises(LinkDown):
                await a.send(b"bundle")
            await b.wait_down()
            assert "cannot refuse" in b.down_reason
            assert not a.is_up


async def test_mtcp_refusal_closes_the_connection_and_sends_complete_on_write() -> None:
    async def refuse_all(bundle: bytes, link: ClLink) -> None:
        raise CustodyRefused(Refusal.NO_RESOURCES)

    with trio.fail_after(10):
        async with linked(Mtcp(), Mtcp(), accept_b=refuse_all) as (a, b):
            await a.send(b"gone")  # MTCP cannot tell: "written to TCP" is all it knows
            await b.wait_down()
            await a.wait_down()
            with pytest.raises(LinkDown):
                await a.send(b"more")


async def test_incoming_channel_is_the_custody_without_accept() -> None:
    timeouts = LinkTimeouts(incoming_capacity=1)
    with trio.fail_after(10):
        async with linked(v4_layer(1), v4_layer(2), timeouts=timeouts) as (a, b):
            await a.send(b"first")  # queued in b.incoming: acked
            second_done = trio.Event()

            async def second() -> None:
                await a.send(b"second")
                second_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(second)
                await trio.testing.wait_all_tasks_blocked()
                assert not second_done.is_set()  # the channel is full: no custody, no ack
                assert await b.incoming.receive() == b"first"
                assert await b.incoming.receive() == b"second"
                await second_done.wait()


async def test_with_accept_the_incoming_channel_is_ended() -> None:
    async with linked(v4_layer(1), v4_layer(2), accept_b=Collector()) as (_a, b):
        with pytest.raises(trio.EndOfChannel):
            await b.incoming.receive()


@pytest.mark.parametrize("kind", list(LAYERS))
async def test_concurrent_sends_arrive_in_call_order(kind: str) -> None:
    make_a, make_b = LAYERS[kind]
    at_b = Collector()
    called: list[bytes] = []
    one_at_a_time = LinkTimeouts(
        custody_workers=1
    )  # several workers may start accepts out of order
    with trio.fail_after(10):
        async with linked(make_a(), make_b(), accept_b=at_b, timeouts=one_at_a_time) as (a, _b):

            async def send(n: int) -> None:
                bundle = n.to_bytes(2, "big") * (1 + n * 37)
                called.append(bundle)  # no checkpoint between this and send_bundle
                await a.send(bundle)

            async with trio.open_nursery() as nursery:
                for n in range(30):
                    nursery.start_soon(send, n)
            while len(at_b.bundles) < 30:
                await at_b.arrived.wait()
    assert at_b.bundles == called


async def test_a_cancelled_send_leaves_the_link_usable() -> None:
    release = trio.Event()
    stored: list[bytes] = []

    async def slow(bundle: bytes, link: ClLink) -> None:
        if bundle == b"slow":
            await release.wait()
        stored.append(bundle)

    with trio.fail_after(10):
        async with linked(v4_layer(1), v4_layer(2), accept_b=slow) as (a, _b):
            with trio.move_on_after(0.01) as gave_up:
                await a.send(b"slow")
            assert gave_up.cancelled_caught  # the caller stopped waiting; the transfer goes on
            release.set()
            await a.send(b"next")
            assert a.is_up
    assert stored == [b"slow", b"next"]


async def test_peer_termination_fails_queued_sends_and_later_sends_fast() -> None:
    with trio.fail_after(10):
        async with linked(v4_layer(1), v4_layer(2), accept_b=Collector()) as (a, b):
            await b.aclose()
            await a.wait_down()
            assert "peer terminated" in a.down_reason
            with pytest.raises(LinkDown, match="peer terminated"):
                await a.send(b"late")
            with pytest.raises(LinkDown):
                await a.wait_up()


async def test_abrupt_stream_loss_fails_pending_sends(autojump_clock: trio.abc.Clock) -> None:
    never = trio.Event()

    async def stuck(bundle: bytes, link: ClLink) -> None:
        await never.wait()

    async with (
        linked(v4_layer(1), v4_layer(2), accept_b=stuck) as (a, b),
        trio.open_nursery() as nursery,
    ):

        async def kill() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await trio.aclose_forcefully(b.stream)

        nursery.start_soon(kill)
        start = trio.current_time()
        with pytest.raises(LinkDown, match="closed"):
            await a.send(b"x" * 10_000)
        assert trio.current_time() - start < 1.0


async def test_silent_peer_is_dropped_after_the_idle_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A peer that completes SESS_INIT and then says nothing: down at 2x keepalive (§5.1.1)."""
    ours, theirs = trio.testing.memory_stream_pair()
    peer = v4.TcpclV4Session(Role.PASSIVE, v4.SessionConfig(node_id="ipn:2.0", keepalive_s=10), 0.0)

    async def half_dead_peer() -> None:
        # Answer the handshake once, then neither read nor write again.
        while not peer.established:
            peer.receive_data(await theirs.receive_some())
            while peer.next_event() is not NEED_DATA:
                pass
            await theirs.send_all(peer.data_to_send())
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(half_dead_peer)
        async with open_cl_link(ours, v4_layer(1, keepalive_s=10), role=Role.ACTIVE) as link:
            start = trio.current_time()
            await link.wait_down()
            elapsed = trio.current_time() - start
            assert 20.0 <= elapsed <= 21.0, elapsed
            assert "IDLE_TIMEOUT" in link.down_reason
        nursery.cancel_scope.cancel()


async def test_silent_tcpclv3_peer_is_dropped_after_twice_the_keepalive(
    autojump_clock: trio.abc.Clock,
) -> None:
    """RFC 7242 §5.6: no bytes for twice the keepalive interval ends the session."""
    ours, theirs = trio.testing.memory_stream_pair()
    peer = v3.TcpclV3Session(Role.PASSIVE, v3.TcpclV3Config("ipn:2.0", keepalive_s=5))

    async def half_dead_peer() -> None:
        await theirs.send_all(peer.data_to_send())  # its contact header, then silence
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(half_dead_peer)
        async with open_cl_link(ours, v3_layer(1, keepalive_s=5), role=Role.ACTIVE) as link:
            start = trio.current_time()
            await link.wait_down()
            assert 10.0 <= trio.current_time() - start <= 11.0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("make", [v4_layer, v3_layer], ids=["tcpclv4", "tcpclv3"])
async def test_keepalives_keep_a_quiet_session_up(
    autojump_clock: trio.abc.Clock, make: Callable[..., ConvergenceLayer]
) -> None:
    async with linked(make(1, keepalive_s=5), make(2, keepalive_s=5)) as (a, b):
        await trio.sleep(300)
        assert a.is_up and b.is_up
        await a.send(b"still here")


async def test_establishment_times_out_against_a_mute_peer(
    autojump_clock: trio.abc.Clock,
) -> None:
    ours, _mute = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(LinkDown, match="not established"):
        async with open_cl_link(
            ours, v4_layer(1), role=Role.ACTIVE, timeouts=LinkTimeouts(establish=7.0)
        ):
            pass  # pragma: no cover
    # 7 s to give up, then at most the linger waiting for the mute peer's EOF.
    assert 7.0 <= trio.current_time() - start <= 7.0 + LinkTimeouts().linger


async def test_version_mismatch_is_link_down_on_both_sides() -> None:
    stream_a, stream_b = trio.testing.memory_stream_pair()
    errors: list[BaseException] = []

    async def side(stream: trio.abc.Stream, layer: ConvergenceLayer, role: Role) -> None:
        try:
            async with open_cl_link(stream, layer, role=role):
                pass  # pragma: no cover
        except LinkDown as error:
            errors.append(error)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, stream_a, v4_layer(1), Role.ACTIVE)
            nursery.start_soon(side, stream_b, v3_layer(2), Role.PASSIVE)
    assert len(errors) == 2


async def test_accept_bug_propagates_after_refusing() -> None:
    async def broken(bundle: bytes, link: ClLink) -> None:
        raise ZeroDivisionError("bug in the store")

    with trio.fail_after(10), pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with linked(v4_layer(1), v4_layer(2), accept_b=broken) as (a, _b):
            with pytest.raises(LinkDown):
                await a.send(b"boom")
            await trio.sleep_forever()


# --- the connector ---------------------------------------------------------------------------


async def test_connector_backs_off_with_seeded_jitter_then_reconnects(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Three refused connects, a session, a drop, a refused connect, a session again."""
    refusals = [3, 1]
    passives: trio.MemorySendChannel[trio.abc.Stream]
    passives, streams = trio.open_memory_channel[trio.abc.Stream](4)
    attempts_at: list[float] = []

    async def connect() -> trio.abc.Stream:
        attempts_at.append(trio.current_time())
        if refusals[0]:
            refusals[0] -= 1
            raise ConnectionRefusedError("refused")
        refusals.pop(0)
        if not refusals:
            refusals.append(0)
        ours, theirs = trio.testing.memory_stream_pair()
        passives.send_nowait(theirs)
        return ours

    at_b = Collector()
    backoff = Backoff(initial=0.5, maximum=60.0)
    connector = Connector(connect, v4_layer(1), rng=random.Random(42), backoff=backoff)
    async with trio.open_nursery() as servers, open_connector(connector):

        async def serve() -> None:
            async for stream in streams:
                async with open_cl_link(
                    stream, v4_layer(2), role=Role.PASSIVE, accept=at_b
                ) as link:
                    await link.wait_down()

        servers.start_soon(serve)
        assert not connector.is_up
        with pytest.raises(LinkDown):
            await connector.send(b"too early")
        await connector.wait_up()
        await connector.send(b"one")
        assert connector.sessions == 1 and connector.attempts == 4
        expect = random.Random(42)
        assert connector.delays == [backoff.delay(n, expect) for n in range(3)]
        gaps = [t1 - t0 for t0, t1 in itertools.pairwise(attempts_at)]
        assert gaps == pytest.approx(connector.delays, abs=1e-6)

        assert connector.link is not None
        await connector.link.aclose()  # the session drops: the connector starts over
        await connector.wait_up()
        await connector.send(b"two")
        assert connector.sessions == 2 and connector.attempts == 6
        assert connector.delays[3:] == [backoff.delay(0, expect), backoff.delay(1, expect)]
        servers.cancel_scope.cancel()
    assert at_b.bundles == [b"one", b"two"]


async def test_connector_incoming_collects_bundles_across_sessions() -> None:
    """Without ``accept`` the connector's own channel is the custody for every session."""
    passives, streams = trio.open_memory_channel[trio.abc.Stream](4)

    async def connect() -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        passives.send_nowait(theirs)
        return ours

    connector = Connector(
        connect, v4_layer(1), rng=random.Random(3), backoff=Backoff(initial=0.01, maximum=0.01)
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as servers, open_connector(connector):

            async def serve() -> None:
                n = 0
                async for stream in streams:
                    async with open_cl_link(stream, v4_layer(2), role=Role.PASSIVE) as link:
                        n += 1
                        await link.send(f"session {n}".encode())
                        # end this session from the server side: the connector reconnects

            servers.start_soon(serve)
            assert await connector.incoming.receive() == b"session 1"
            assert await connector.incoming.receive() == b"session 2"
            assert connector.sessions >= 2
            servers.cancel_scope.cancel()


def test_backoff_is_bounded_and_jittered_downwards() -> None:
    backoff = Backoff(initial=0.5, maximum=60.0, jitter=0.5)
    rng = random.Random(1)
    for attempt in range(200):
        ceiling = min(60.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= backoff.delay(attempt, rng) <= ceiling
    assert Backoff(jitter=0.0).delay(3, rng) == 4.0
