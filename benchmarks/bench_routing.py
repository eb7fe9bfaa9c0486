"""Route computation and the loopback network at fleet scale, against raw limits.

    python benchmarks/bench_routing.py [--nodes 1000 5000] [--queries 300] [--bundles 20000]

The fleet: cells of 50 nodes (a coordinator and 49 members), regions of 20 cells, one day of
contacts. A member sees its coordinator 10 minutes every 90 (phases staggered), a coordinator
its region coordinator 20 minutes every hour, region coordinators each other 30 minutes every
2 hours; every contact exists in both directions.

Routing: µs per route for random member-to-member pairs, with a cold cache (a fresh
``Router`` per query) and a warm one (the same queries again, time moved on by a minute), and
the cost per destination when one node routes to every other. Raw limit: a plain heap
Dijkstra over a dict graph with the same nodes and neighbour pairs and static weights (what
any earliest-arrival search must at least do).

Loopback: members send bundles to their coordinators during their windows under
``MockClock``; figure is delivered bundles per second of wall time. Raw limit: a bare
``heapq`` push/pop loop over the same number of timed events (one transfer end plus one
delivery per bundle).
"""

from __future__ import annotations

import argparse
import heapq
import random
import time

import trio
import trio.testing
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.agent.routing import Router
from fleetwire.runtime.links.loopback import LinkModel, LoopbackNetwork

CELL = 50
REGION_CELLS = 20
DAY_MS = 86_400_000
MIN_MS = 60_000


def periodic(
    a: int, b: int, period: int, length: int, phase: int, rate: int, owlt: int
) -> list[Contact]:
    out = []
    start = phase % period
    while start + length <= DAY_MS:
        out.append(Contact(a, b, start, start + length, rate, owlt))
        out.append(Contact(b, a, start, start + length, rate, owlt))
        start += period
    return out


def fleet_plan(nodes: int) -> tuple[ContactPlan, list[int]]:
    """The plan, and the member node ids."""
    contacts: list[Contact] = []
    members: list[int] = []
    coordinators = list(range(1, nodes + 1, CELL))
    regions = coordinators[::REGION_CELLS]
    for cell, coord in enumerate(coordinators):
        for i, member in enumerate(range(coord + 1, min(coord + CELL, nodes + 1))):
            members.append(member)
            contacts += periodic(member, coord, 90 * MIN_MS, 10 * MIN_MS, i * 97_000, 1_000_000, 50)
        region = regions[cell // REGION_CELLS]
        if coord != region:
            contacts += periodic(
                coord, region, 60 * MIN_MS, 20 * MIN_MS, cell * 131_000, 10**7, 2_000
            )
    for i, r1 in enumerate(regions):
        for r2 in regions[i + 1 :]:
            contacts += periodic(r1, r2, 120 * MIN_MS, 30 * MIN_MS, r1 * 7_000, 5 * 10**7, 20_000)
    return ContactPlan(contacts), members


def raw_dijkstra(graph: dict[int, list[tuple[int, int]]], source: int, dest: int) -> int | None:
    dist = {source: 0}
    heap = [(0, source)]
    done = set()
    while heap:
        d, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        if u == dest:
            return d
        for v, w in graph.get(u, ()):
            nd = d + w
            if v not in done and nd < dist.get(v, 1 << 62):
                dist[v] = nd
                heapq.heappush(heap, (nd, v))
    return None


def bench_routing(nodes: int, queries: int) -> None:
    t0 = time.perf_counter()
    plan, members = fleet_plan(nodes)
    build = time.perf_counter() - t0
    rng = random.Random(nodes)
    pairs = [tuple(rng.sample(members, 2)) for _ in range(queries)]
    now = 3 * 3_600_000
    print(f"\n== {nodes} nodes, {len(plan)} contacts (plan built in {build:.2f} s)")

    t0 = time.perf_counter()
    for node in plan.nodes():  # per plan version, not per route: built lazily otherwise
        plan.adjacency(node)
    index = time.perf_counter() - t0

    graph: dict[int, list[tuple[int, int]]] = {}
    for c in plan:
        graph.setdefault(c.from_node, [])
    for a in graph:
        graph[a] = [(b, plan.between(a, b)[0].owlt_ms) for b in plan.neighbours(a)]
    t0 = time.perf_counter()
    for src, dst in pairs:
        raw_dijkstra(graph, src, dst)
    raw = (time.perf_counter() - t0) / queries * 1e6

    routers = [Router(src, plan) for src, _ in pairs]  # cold: nothing cached
    t0 = time.perf_counter()
    found = 0
    for router, (_, dst) in zip(routers, pairs, strict=True):
        found += router.best_route(dst, now, size=1_000) is not None
    cold = (time.perf_counter() - t0) / queries * 1e6

    t0 = time.perf_counter()
    for router, (_, dst) in zip(routers, pairs, strict=True):
        router.best_route(dst, now, size=1_000)
    warm = (time.perf_counter() - t0) / queries * 1e6
    hits_warm = sum(r.hits for r in routers)

    t0 = time.perf_counter()
    for router, (_, dst) in zip(routers, pairs, strict=True):
        router.best_route(dst, now + MIN_MS, size=1_000)
    later = (time.perf_counter() - t0) / queries * 1e6
    hits_later = sum(r.hits for r in routers) - hits_warm

    one = Router(members[0], plan)
    t0 = time.perf_counter()
    for dst in range(1, nodes + 1):
        if dst != one.node:
            one.best_route(dst, now, size=1_000)
    fan = (time.perf_counter() - t0) / (nodes - 1) * 1e6

    print(f"plan indexes (once per plan version) {index * 1e3:9.1f} ms")
    print(f"raw dict Dijkstra (static weights)   {raw:9.1f} µs/route")
    print(f"contact graph route, cold cache      {cold:9.1f} µs/route  ({cold / raw:.2f}x raw)")
    print(
        f"contact graph route, warm cache      {warm:9.1f} µs/route  ({warm / raw:.4f}x raw,"
        f" {hits_warm}/{queries} cache hits)"
    )
    print(
        f"same, one minute later               {later:9.1f} µs/route  ({later / raw:.4f}x raw,"
        f" {hits_later}/{queries} cache hits)"
    )
    print(
        f"one node to all {nodes - 1} others          {fan:9.1f} µs/route  ({fan / raw:.3f}x raw,"
        f" {one.searches} searches)"
    )
    hub = Router(members[0], plan)
    t0 = time.perf_counter()
    hub.prefetch(now)
    for dst in range(1, nodes + 1):
        if dst != hub.node:
            hub.best_route(dst, now, size=1_000)
    prefetched = (time.perf_counter() - t0) / (nodes - 1) * 1e6
    print(
        f"same after one prefetch (full tree)  {prefetched:9.1f} µs/route  "
        f"({prefetched / raw:.3f}x raw, {hub.searches} searches)"
    )
    print(f"routes found: {found}/{queries}")


def bench_loopback(nodes: int, bundles: int) -> None:
    plan, members = fleet_plan(nodes)
    per_member = max(1, bundles // len(members))
    total = per_member * len(members)

    async def main() -> tuple[int, float]:
        net = LoopbackNetwork(plan, Clock(0.0, 0), random.Random(1), LinkModel(jitter_ms=5))
        coordinators = range(1, nodes + 1, CELL)
        inboxes = {c: net.open_inbox(c) for c in coordinators}
        received = 0

        async def drain(c: int) -> None:
            nonlocal received
            async for _ in inboxes[c]:
                received += 1

        async def member(m: int) -> None:
            link = net.link(m, (m - 1) // CELL * CELL + 1)
            payload = bytes(500)
            sent = 0
            while sent < per_member:
                await link.wait_up()
                try:
                    await link.send(payload)
                    sent += 1
                except Exception:  # LinkDown at a window close: try the next window
                    pass

        wall = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(net.run)
            for c in coordinators:
                nursery.start_soon(drain, c)
            async with trio.open_nursery() as senders:
                for m in members:
                    senders.start_soon(member, m)
            await trio.sleep(60)  # the last ones in flight
            nursery.cancel_scope.cancel()
        return received, time.perf_counter() - wall

    received, wall = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    events = 2 * total
    t0 = time.perf_counter()
    heap: list[tuple[float, int]] = []
    r = random.Random(2)
    for i in range(events):
        heapq.heappush(heap, (r.random(), i))
    while heap:
        heapq.heappop(heap)
    raw = events / (time.perf_counter() - t0) / 2  # bundles/s at two events per bundle

    async def sleeper() -> float:
        # Trio's own floor: one task sleeping until each of the same number of distinct times.
        wall = time.perf_counter()
        for i in range(events):
            await trio.sleep_until(i * 0.001)
        return time.perf_counter() - wall

    floor = events / trio.run(sleeper, clock=trio.testing.MockClock(autojump_threshold=0)) / 2
    rate = received / wall
    print(
        f"\n== loopback, {nodes} nodes, {total} bundles members -> coordinators under MockClock\n"
        f"delivered {received} in {wall:.2f} s wall: {rate:,.0f} bundles/s\n"
        f"raw heapq push/pop limit      {raw:12,.0f} bundles/s  (loopback at {rate / raw:.3f}x)\n"
        f"bare trio.sleep_until floor   {floor:12,.0f} bundles/s  (loopback at {rate / floor:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--bundles", type=int, default=20_000)
    args = parser.parse_args()
    for n in args.nodes:
        bench_routing(n, args.queries)
    bench_loopback(args.nodes[0], args.bundles)


if __name__ == "__main__":
    main()
