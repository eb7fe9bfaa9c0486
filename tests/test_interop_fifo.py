"""An HDTN-like sender pipelines bundles into a node with the SQLite store (issue: acks in order).

HDTN keeps a window of transfers unacknowledged and matches every XFER_ACK against a FIFO of
the segments it sent (:class:`tests.agents.FifoAckSender`); one ack out of place stalls it. The
node must ack in receive order *and* only once each bundle is durable: every bundle the sender
saw acknowledged is in the store afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX, Clock
from fleetwire.protocol.bpv7 import encode_bundle
from fleetwire.protocol.tcpcl import v4
from fleetwire.runtime.links.cl_link import TcpclV4, custody
from fleetwire.runtime.links.tcp import serve_cl
from fleetwire.runtime.node.node import BundleRefused, NodeConfig, open_node
from fleetwire.runtime.store.sqlite_store import open_sqlite_store

from .agents import FifoAckSender
from .fleet import node_key, trust_for

LOCALHOST = "127.0.0.1"
NODE, SENDER, NOWHERE = 2, 77, 99


def bundles(count: int, size: int) -> list[bytes]:
    """``count`` distinct bundles for a node nobody routes to (so they stay in the store)."""
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    return [
        encode_bundle(
            message_bundle(
                i.to_bytes(4, "big") * (size // 4),
                source=SENDER,
                destination=NOWHERE,
                created_at=now,
                sequence=i,
                lifetime_ms=3_600_000,
            )
        )
        for i in range(count)
    ]


async def pipeline(tmp_path: Path, count: int, size: int, segment: int, window: int) -> float:
    """Run the sender against a real node; returns seconds taken. Asserts order and storage."""
    data = bundles(count, size)
    config = NodeConfig(node=NODE, key=node_key(NODE), trust=trust_for([NODE]))
    clock = Clock.from_unix(trio.current_time(), time.time())
    layer = TcpclV4(v4.SessionConfig(node_id=f"ipn:{NODE}.0"))
    sender = FifoAckSender(window=window, segment_size=segment)
    async with open_sqlite_store(tmp_path / "node.sqlite3") as store:
        async with open_node(config, store, clock=clock) as node, trio.open_nursery() as nursery:
            accept = custody(node.accept, refusals=(BundleRefused,))
            listeners = await nursery.start(
                lambda task_status: serve_cl(
                    None, 0, layer, host=LOCALHOST, accept=accept, task_status=task_status
                )
            )
            port = listeners[0].socket.getsockname()[1]
            started = trio.current_time()
            with trio.fail_after(600):
                await sender.run(LOCALHOST, port, data)
            took = trio.current_time() - started
            nursery.cancel_scope.cancel()
        assert sender.acked_bundles == count
        assert await store.count() == count  # every acked bundle is durable here
    return took


@pytest.mark.parametrize(
    ("size", "segment"),
    [(200, 1 << 20), (3000, 1000)],
    ids=["single-segment", "segmented"],
)
async def test_fifo_sender_pipelines_into_sqlite_node_acks_in_order(
    tmp_path: Path, size: int, segment: int
) -> None:
    await pipeline(tmp_path, 400, size, segment, window=16)


@pytest.mark.soak
@pytest.mark.parametrize(
    ("size", "segment"),
    [(200, 1 << 20), (3000, 1000)],
    ids=["single-segment", "segmented"],
)
async def test_fifo_sender_pipelines_10000_bundles(
    tmp_path: Path, size: int, segment: int, capsys: pytest.CaptureFixture[str]
) -> None:
    took = await pipeline(tmp_path, 10_000, size, segment, window=16)
    with capsys.disabled():
        print(f"\n10000 bundles of {size} B, segments of {segment} B: {took:.1f} s")
