"""Batches on the link: ``send_many`` and batch custody (``accept_many``).

Real sessions on both ends over an in-memory stream pair: each bundle of a batch has its own
outcome, refusals come back for exactly the refused ones, and the acknowledgements still
follow the commits and the receive order.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing
from fleetwire.protocol.tcpcl.common import Role
from fleetwire.runtime.links.cl_link import (
    ClLink,
    LinkTimeouts,
    Mtcp,
    Refusal,
    TransferRefusedByPeer,
    open_cl_link,
)

from tests.test_cl_link import LAYERS, linked, v4_layer


class BatchStore:
    """An ``accept_many`` that keeps what it was given, one list per call, refusing b"\\xff..."."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.held: list[bytes] = []
        self.commit = trio.Event()  # the test decides when a batch is "durable"
        self.committed = 0

    async def __call__(self, bundles: list[bytes], link: ClLink) -> Sequence[Refusal | None]:
        self.calls.append(bundles)
        await self.commit.wait()
        outcomes: list[Refusal | None] = []
        for bundle in bundles:
            if bundle.startswith(b"\xff"):
                outcomes.append(Refusal.NOT_ACCEPTABLE)
            else:
                self.held.append(bundle)
                outcomes.append(None)
        self.committed += len(bundles)
        return outcomes


async def run_pair(layer_a: object, layer_b: object, store: BatchStore, body: object) -> None:
    stream_a, stream_b = trio.testing.memory_stream_pair()
    timeouts = LinkTimeouts(custody_batch=16, custody_batches=2)
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def passive() -> None:
            async with open_cl_link(
                stream_b, layer_b, role=Role.PASSIVE, accept_many=store, timeouts=timeouts  # type: ignore[arg-type]
            ):
                await done.wait()

        nursery.start_soon(passive)
        async with open_cl_link(stream_a, layer_a, role=Role.ACTIVE, timeouts=timeouts) as a:  # type: ignore[arg-type]
            await body(a)  # type: ignore[operator]
        done.set()


async def test_send_many_gets_one_outcome_per_bundle_and_acks_wait_for_the_commit() -> None:
    store = BatchStore()
    bundles = [bytes([i]) * 30 if i % 7 else b"\xff" + bytes(29) for i in range(1, 101)]
    results: list[object] = []

    async def body(a: ClLink) -> None:
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                results.extend(await a.send_many(bundles))

            nursery.start_soon(send)
            while sum(map(len, store.calls)) < 32:  # two batches of 16 are in custody ...
                await trio.testing.wait_all_tasks_blocked()
            assert results == [] and store.committed == 0  # ... and nothing is acked yet
            store.commit.set()

    with trio.fail_after(10):
        await run_pair(v4_layer(1), v4_layer(2), store, body)
    assert max(map(len, store.calls)) <= 16  # LinkTimeouts.custody_batch
    assert len(results) == 100
    for bundle, outcome in zip(bundles, results, strict=True):
        if bundle.startswith(b"\xff"):
            assert isinstance(outcome, TransferRefusedByPeer)
        else:
            assert outcome is None
    # Batches commit concurrently, in any order; each bundle once.
    assert sorted(store.held) == sorted(b for b in bundles if not b.startswith(b"\xff"))


@pytest.mark.parametrize("kind", ["tcpclv3", "mtcp"])
async def test_batches_cross_the_other_layers(kind: str) -> None:
    store = BatchStore()
    store.commit.set()
    make_a, make_b = LAYERS[kind]
    bundles = [bytes([i]) * (i * 50) for i in range(1, 60)]
    outcomes: list[object] = []

    async def body(a: ClLink) -> None:
        outcomes.extend(await a.send_many(bundles))
        while len(store.held) < len(bundles):  # MTCP: "sent" is all a sender learns
            await trio.sleep(0.001)

    with trio.fail_after(10):
        await run_pair(make_a(), make_b(), store, body)
    assert outcomes == [None] * len(bundles)
    assert sorted(store.held) == sorted(bundles)
    assert isinstance(make_a(), Mtcp) or store.committed == len(bundles)


async def test_send_many_on_a_link_going_down_fails_the_unacknowledged_ones() -> None:
    store = BatchStore()  # never commits: nothing is ever acknowledged

    async def body(a: ClLink) -> None:
        async with trio.open_nursery() as nursery:
            results: list[object] = []

            async def send() -> None:
                results.extend(await a.send_many([b"x" * 10] * 20))

            nursery.start_soon(send)
            while not store.calls:
                await trio.testing.wait_all_tasks_blocked()
            await a.aclose()
        assert len(results) == 20 and all(r is not None for r in results)
        assert a.bundles_sent == 0

    with trio.fail_after(10):
        await run_pair(v4_layer(1), v4_layer(2), store, body)


async def test_custody_backlog_is_bounded_in_bytes_as_well_as_in_bundles() -> None:
    entered = 0
    release = trio.Event()

    async def accept(bundle: bytes, link: ClLink) -> None:
        nonlocal entered
        entered += 1
        await release.wait()

    # Small reads, so "what one read held" is less than one bundle.
    timeouts = LinkTimeouts(max_custody_bytes=30_000, read_size=4096)
    outcomes: list[object] = []
    with trio.fail_after(10):
        async with (
            linked(v4_layer(1), v4_layer(2), accept_b=accept, timeouts=timeouts) as (a, _),
            trio.open_nursery() as nursery,
        ):

            async def send() -> None:
                outcomes.extend(await a.send_many([bytes(10_000)] * 20))

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            # 30,000 bytes in custody: the reader stopped; the rest waits in TCP's place.
            assert entered == 3
            release.set()
    assert outcomes == [None] * 20 and entered == 20
