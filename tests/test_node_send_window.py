"""A node keeps many transfers in flight to one neighbour, so the neighbour's store commits
them in batches: a backlog drains at a batch per fsync, not a bundle per fsync.

A real node (``open_configured_node``) dials a TCPCLv4 neighbour on 127.0.0.1 whose batch
custody records how many bundles each call got and takes a while per call (a slow disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio
from fleetwire.protocol.tcpcl import v4
from fleetwire.runtime.cl_link import ClLink, Refusal, TcpclV4
from fleetwire.runtime.tcp import serve_cl

from .test_node_links import LOCALHOST, A, C, claim, keys, node_from  # noqa: F401

BUNDLES = 200


async def test_a_backlog_for_one_neighbour_leaves_many_transfers_at_a_time(
    tmp_path: Path, keys: Path  # noqa: F811
) -> None:
    batches: list[int] = []

    async def accept_many(bundles: list[bytes], link: ClLink) -> Sequence[Refusal | None]:
        batches.append(len(bundles))
        await trio.sleep(0.02)  # the neighbour's fsync
        return [None] * len(bundles)

    layer = TcpclV4(v4.SessionConfig(node_id=f"ipn:{C}.0", keepalive_s=0))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve_cl, None, 0, layer, host=LOCALHOST, accept_many=accept_many)
        )
        port = listeners[0].socket.getsockname()[1]
        config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[peer]]\nnode = {C}\nport = {port}\n'
        with trio.fail_after(30):
            async with node_from(tmp_path, "a", config) as a:
                for _ in range(BUNDLES):
                    await a.send(claim(a, A), C)
                while sum(batches) < BUNDLES:
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert sum(batches) == BUNDLES
    # One transfer at a time would give batches of one, 200 fsyncs in a row.
    assert max(batches) >= 8, batches
