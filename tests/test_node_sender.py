"""The node's sender per neighbour: in order, many in flight, over a real TCPCLv4 session.

The neighbour (a plain :class:`ClLink` listener on 127.0.0.1) takes custody in batches, one
batch at a time, and is slow with its first: whatever the node sent meanwhile arrives as the
next batch. A sender that waits for each acknowledgement before the next bundle shows only
batches of one; an unordered one shows the bundles out of order.
"""

from __future__ import annotations

import trio
from fleetwire.protocol.agent.contacts import Clock, ContactPlan
from fleetwire.protocol.bpv7 import decode_bundle
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.runtime.links.cl_link import ClLink, LinkTimeouts, Refusal
from fleetwire.runtime.links.tcp import open_tcp_cl_link, serve_cl
from fleetwire.runtime.node.node import NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore

from .fleet import T0, node_key, trust_for
from .test_tcp_links import LOCALHOST, v4_layer

A, C = 1, 3
COUNT = 40


async def test_bundles_leave_in_order_without_waiting_for_each_acknowledgement() -> None:
    batches: list[list[tuple[int, int]]] = []
    first_taken = trio.Event()

    async def accept_many(datas: list[bytes], link: ClLink) -> list[Refusal | None]:
        batches.append([(b.primary.creation.time, b.primary.creation.sequence)
                        for b in map(decode_bundle, datas)])  # fmt: skip
        if len(batches) == 1:
            first_taken.set()
            await trio.sleep(0.5)  # a slow disk: the node's next bundles arrive meanwhile
        return [None] * len(datas)

    config = NodeConfig(node=A, key=node_key(A), trust=trust_for([A, C]), contact_plan=ContactPlan())
    one_at_a_time = LinkTimeouts(custody_batches=1)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: serve_cl(
                    None, 0, v4_layer(C), host=LOCALHOST, local=C, accept_many=accept_many,
                    timeouts=one_at_a_time, task_status=task_status,
                )
            )  # fmt: skip
            port = listeners[0].socket.getsockname()[1]
            async with (
                open_tcp_cl_link(LOCALHOST, port, v4_layer(A), local=A, peer=C) as link,
                open_node(config, MemoryBundleStore(), links=[link],
                          clock=Clock(trio.current_time(), T0)) as a,  # fmt: skip
            ):
                for sequence in range(1, COUNT + 1):
                    claim = LeaseClaim(
                        header=Header(issuer=A, issued_at=a.now(), sequence=sequence),
                        resource="dock/7", term_ms=60_000,
                    )  # fmt: skip
                    await a.send(claim, C)
                while sum(map(len, batches)) < COUNT:
                    await trio.sleep(0.01)
                assert a.stats.forwarded <= COUNT
            nursery.cancel_scope.cancel()
    arrived = [stamp for batch in batches for stamp in batch]
    assert arrived == sorted(arrived)  # the order the node made them in
    assert max(map(len, batches)) > 1  # sent while the first was still unacknowledged
