"""Custody across a neighbour's death, over a real TCPCLv4 session on 127.0.0.1.

The receiving node's store commits a bundle and is slow to say so (a slow disk's fsync); the
sending neighbour dies meanwhile, so the receiver's session — and the custody task waiting in
``accept`` — goes. The sender, back up, sends the bundle again and is told "duplicate" (it
then deletes its copy). The receiver must still hand the message to its application, without
waiting for a restart or a sweep.

Real clock (the store and the sockets), every wait bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import trio
from fleetwire.protocol.agent.contacts import Clock, ContactPlan
from fleetwire.protocol.messages import Family
from fleetwire.runtime.links.cl_link import custody
from fleetwire.runtime.links.tcp import open_tcp_cl_link
from fleetwire.runtime.node.node import BundleRefused, NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.store import PutResult, StoredBundle

from .fleet import T0, node_key, trust_for
from .test_node_loopback import A, C, bundle_from_a, claim
from .test_tcp_links import LOCALHOST, serving, v4_layer


class SlowCommit(MemoryBundleStore):
    """Commits at once, returns ``delay`` seconds later (real time), the first time only."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.committed = trio.Event()

    async def put(self, bundle: StoredBundle) -> PutResult:
        result = await super().put(bundle)
        if not self.committed.is_set():
            self.committed.set()
            await trio.sleep(self.delay)
        return result


async def test_receiver_delivers_what_it_committed_when_the_sender_died_before_the_ack() -> None:
    store = SlowCommit(delay=1.0)
    config = NodeConfig(
        node=C,
        key=node_key(C),
        trust=trust_for([A, C]),
        contact_plan=ContactPlan(),
        expiry_interval_s=3600,  # no sweep during the test: the hand-off itself must hold
    )
    data = bundle_from_a(C)
    with trio.fail_after(30):
        async with (
            open_node(config, store, clock=Clock(trio.current_time(), T0)) as c,
            serving(v4_layer(C), accept=custody(c.accept, refusals=(BundleRefused,))) as server,
        ):
            inbox = c.subscribe(Family.LEASE)
            async with trio.open_nursery() as sender:  # the neighbour, until it dies

                async def send_once() -> None:
                    async with open_tcp_cl_link(LOCALHOST, server.port, v4_layer(A)) as link:
                        await link.send(data)

                sender.start_soon(send_once)
                await store.committed.wait()
                sender.cancel_scope.cancel()  # dies before the receiver acknowledged
            # Back up, it sends the bundle again: "duplicate", acknowledged, its copy deleted.
            async with open_tcp_cl_link(LOCALHOST, server.port, v4_layer(A)) as link:
                await link.send(data)
            with trio.fail_after(5):
                assert (await inbox.receive()).message == claim(1)
            assert (c.stats.accepted, c.stats.duplicates) == (1, 1)
