"""A node relaying FCP bundles over TCPCLv4 on 127.0.0.1, as a ratio to the link alone.

    python benchmarks/bench_relay.py [--count N] [--repeat R] [--window W] [--memory]

Three parties in one Trio run, each with its own TCPCLv4 sessions on 127.0.0.1:

* a **source** sends ``--count`` distinct FCP bundles (signed lease claims in BPv7 bundles,
  about 250 bytes, node 1 → node 3), ``send_many`` in chunks of 64 with ``--window`` in
  flight;
* the **relay** (node 2) is a real :func:`~fleetwire.runtime.node.node.open_node` with a SQLite
  store (``--memory``: the in-memory store): it takes custody (the transfer is acknowledged
  only once the bundle is durable), routes, forwards to node 3 over its own session and keeps
  a ``forwarded`` tombstone;
* a **sink** (node 3) takes custody of what arrives without storing it (batch custody that
  acknowledges at once).

Reported: bundles per second from the first send until the sink holds the last bundle, and,
as the limit measured in the same run, the same bundles sent by the source straight to the
sink (the link alone, no relay). The ratio relay/direct is the relay's cost in link units
(a relay does two sessions' work and a commit per batch, so well under 1). Modes alternate,
best of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import trio
from fleetwire.protocol.agent.bundling import for_next_hop, message_bundle
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX, Clock
from fleetwire.protocol.envelope import seal
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.protocol.tcpcl import v4
from fleetwire.protocol.trust import Role, TrustStore, issue_credential
from fleetwire.runtime.links.cl_link import ClLink, Refusal, TcpclV4, custody
from fleetwire.runtime.links.tcp import open_tcp_cl_link, serve_cl
from fleetwire.runtime.node.node import BundleRefused, Node, NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.sqlite_store import open_sqlite_store

HOST = "127.0.0.1"
SOURCE, RELAY, SINK = 1, 2, 3
CHUNK = 64
ROOT = SigningKey.from_seed(b"\x01" * 32)
DAY = 86_400_000


def key(node: int) -> SigningKey:
    return SigningKey.from_seed(bytes([node]) * 32)


def layer(node: int) -> TcpclV4:
    return TcpclV4(v4.SessionConfig(node_id=f"ipn:{node}.0"))


def bundles(count: int, now: int) -> list[bytes]:
    """``count`` distinct FCP bundles from the source to the sink, as the source sends them."""
    source_key = key(SOURCE)
    out = []
    for sequence in range(1, count + 1):
        claim = LeaseClaim(
            header=Header(issuer=SOURCE, issued_at=now, sequence=sequence),
            resource="cell-3/dock-2", term_ms=7_200_000,
        )  # fmt: skip
        bundle = message_bundle(
            seal(claim, source_key).envelope, source=SOURCE, destination=SINK, created_at=now,
            sequence=sequence, lifetime_ms=DAY,
        )  # fmt: skip
        out.append(for_next_hop(bundle, SOURCE))
    return out


class Sink:
    """Node 3: takes custody at once and counts; ``done`` when ``expected`` arrived."""

    def __init__(self) -> None:
        self.received = 0
        self.expected = math.inf
        self.done = trio.Event()

    async def accept_many(self, datas: Sequence[bytes], link: ClLink) -> list[Refusal | None]:
        self.received += len(datas)
        if self.received >= self.expected:
            self.done.set()
        return [None] * len(datas)

    def expect(self, count: int) -> None:
        self.received, self.expected, self.done = 0, count, trio.Event()


@asynccontextmanager
async def listening(nursery: trio.Nursery, **kw: object) -> AsyncIterator[int]:
    listeners = await nursery.start(partial(serve_cl, None, 0, host=HOST, **kw))  # type: ignore[arg-type]
    yield listeners[0].socket.getsockname()[1]


async def batch_custody(relay: Node, datas: list[bytes], link: ClLink) -> list[Refusal | None]:
    refusals = await relay.accept_many(datas, link.peer)
    return [None if refusal is None else Refusal.NO_RESOURCES for refusal in refusals]


async def push(port: int, data: list[bytes], window: int, sink: Sink) -> float:
    """Send ``data`` to the node at ``port``; seconds until the sink holds all of it."""
    sink.expect(len(data))
    async with open_tcp_cl_link(HOST, port, layer(SOURCE), local=SOURCE) as link:
        position = 0

        async def worker() -> None:
            nonlocal position
            while position < len(data):
                batch = data[position : position + CHUNK]
                position += len(batch)
                errors = await link.send_many(batch)
                if any(errors):
                    raise SystemExit(f"send failed: {next(e for e in errors if e)}")

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(max(1, window // CHUNK)):
                nursery.start_soon(worker)
            await sink.done.wait()
        return time.perf_counter() - start


async def run(args: argparse.Namespace) -> None:
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    trust = TrustStore([ROOT.public])
    for node in (SOURCE, RELAY, SINK):
        trust.add_credential(
            issue_credential(ROOT, node=node, public_key=key(node).public, roles=[Role.NODE],
                             not_before=now - DAY, not_after=now + DAY, serial=node),
            now,
        )  # fmt: skip
    sink = Sink()
    best = {"direct": math.inf, "relay": math.inf}
    with tempfile.TemporaryDirectory() as folder:
        async with trio.open_nursery() as nursery:
            async with listening(nursery, layer=layer(SINK), local=SINK,
                                 accept_many=sink.accept_many) as sink_port:  # fmt: skip
                for round_ in range(args.repeat):
                    data = bundles(args.count, now + round_)  # distinct every round
                    best["direct"] = min(best["direct"], await push(sink_port, data, args.window, sink))
                    async with AsyncExitStack() as stack:
                        if args.memory:
                            store = MemoryBundleStore()
                        else:
                            path = Path(folder) / f"relay-{round_}.sqlite3"
                            store = await stack.enter_async_context(open_sqlite_store(path))
                        config = NodeConfig(node=RELAY, key=key(RELAY), trust=trust)
                        clock = Clock.from_unix(trio.current_time(), time.time())
                        relay = await stack.enter_async_context(open_node(config, store, clock=clock))
                        out = await stack.enter_async_context(
                            open_tcp_cl_link(HOST, sink_port, layer(RELAY), local=RELAY, peer=SINK)
                        )
                        relay.add_link(out)
                        custody_kw: dict[str, object]
                        if args.batch_custody:
                            custody_kw = {"accept_many": partial(batch_custody, relay)}
                        else:
                            custody_kw = {"accept": custody(relay.accept, refusals=(BundleRefused,))}
                        relay_port = await stack.enter_async_context(
                            listening(nursery, layer=layer(RELAY), local=RELAY, **custody_kw)
                        )
                        best["relay"] = min(best["relay"], await push(relay_port, data, args.window, sink))
                        assert relay.stats.forwarded == args.count, relay.stats
            nursery.cancel_scope.cancel()
    direct, relay_rate = args.count / best["direct"], args.count / best["relay"]
    store_name = "memory" if args.memory else "sqlite"
    print(f"{args.count} FCP bundles ({len(data[0])} B), window {args.window}, best of {args.repeat}")
    print(f"  direct (source → sink, the link alone): {direct:10.0f} bundles/s")
    print(f"  relay  (source → node, {store_name} → sink):  {relay_rate:10.0f} bundles/s")
    print(f"  ratio relay/direct: {relay_rate / direct:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=1024, help="source's bundles in flight")
    parser.add_argument("--memory", action="store_true", help="the relay's store in memory")
    parser.add_argument("--batch-custody", action="store_true",
                        help="the relay takes custody in batches (node.accept_many)")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
