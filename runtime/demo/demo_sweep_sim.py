"""The scaling study's second engine: the discrete-event simulator, for fleets of 10,000 nodes.

Theory of operation
-------------------
The loopback engine (:mod:`.demo`) runs every node as a Trio task on a mock clock; its
scheduler bounds it to a few hundred nodes in a minute. ``fleetwire demo --sweep …
--engine sim`` runs each size on the sans-IO bundle agents of :mod:`.sim` instead: the same
signed messages, bundles, stores and routing, and the same lease roles (as agent handlers:
region, cell and member roles of ``protocol/coordination/lease_roles.py``), in virtual time
with no scheduler at all.

The fleet is the simulator's shape (:func:`~.sim.fleet.build_fleet`): cells of
:data:`CELL_SIZE` under coordinators under one region hub, always-up links (50 ms inside a
cell, 1.3 s to the hub). Every node sends :data:`PER_NODE_PER_DAY` messages a day of the
capability, commitment and exception families (:func:`~.sim.fleet.add_traffic`), and every
member's application wants, uses and releases its cell's shared resources through its lease
role (:func:`lease_work`, the simulator's own lease work with the wait from wanting a resource
to its first usable operation measured: the decision latency).

Each size gives a :class:`~.demo_sweep.Point`: bytes every node put on its links (the
simulator's ``on_transmit``) per node per second, fleet mean and the busiest node's busiest
hour; decision latency p50/p95; the lease invariant verdict over every grant and use; wall
time and peak memory.

With ``workers`` > 1 (``--workers``) each size runs split by cells across that many OS
processes (:mod:`.sim.parallel`); each part measures its own nodes and the figures are merged
(CPU time and peak memory summed over the processes).
"""

from __future__ import annotations

import functools
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fleetwire.protocol.coordination import invariants
from fleetwire.protocol.coordination.lease_holder import HolderState
from fleetwire.protocol.coordination.lease_roles import MemberRole
from fleetwire.runtime.sim.engine import Simulator
from fleetwire.runtime.sim.fleet import Fleet, LeaseSetup, add_traffic
from fleetwire.runtime.sim.parallel import run_fleet

from .demo_results import percentile
from .demo_sweep import Point, peak_rss_mib

START = 820_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
CELL_SIZE = 20
PER_NODE_PER_DAY = 16.0


def lease_work(fleet: Fleet, until: int, waits: list[int]) -> None:
    """Every member wants one of its cell's resources, uses it, releases it, rests, again;
    the time from wanting to the first usable operation goes into ``waits``."""
    leases = fleet.leases
    assert leases is not None
    sim, trace = fleet.sim, fleet.trace

    def work(
        member: int, role: MemberRole, rng: random.Random
    ) -> Callable[[Simulator], int | None]:
        cell = fleet.coordinator_of[member]
        resource = ""
        release_at = wanted_at = 0
        waiting = False

        def step(sim: Simulator) -> int | None:
            nonlocal resource, release_at, wanted_at, waiting
            now = sim.now
            role.notices.clear()  # this application learns by trying to use the lease
            if not resource:
                resource = f"dock/{cell}/{rng.randrange(leases.resources_per_cell)}"
                release_at = now + int(rng.expovariate(1 / leases.hold_ms))
                wanted_at, waiting = now, True
                sim.act(member, role, role.want(resource, leases.member_term_ms, now))
                at = now + leases.use_every_ms
            elif now >= release_at and role.holder.state(resource) is not HolderState.CLAIMING:
                sim.act(member, role, role.release(resource, now))
                resource = ""
                at = now + int(rng.expovariate(1 / leases.rest_ms))
            else:
                token = role.use(resource, now, leases.use_ms)
                if token is not None:
                    if waiting:
                        waits.append(now - wanted_at)
                        waiting = False
                    trace.append(
                        invariants.Used(resource, member, token, now, now + leases.use_ms, now)
                    )
                at = now + leases.use_every_ms
            return at if at <= until else None

        return step

    for member, role in sorted(fleet.holders.items()):
        rng = fleet.random_for("lease work", member)  # the same whichever process runs it
        first = sim.now + int(rng.expovariate(1 / leases.rest_ms))
        sim.every(first, work(member, role, rng))


def measure(fleet: Fleet, *, until: int) -> Callable[[], Any]:
    """One part's traffic, lease work and counters; collects its bytes by (node, hour), its
    waits and its members."""
    per_hour: dict[tuple[int, int], int] = defaultdict(int)

    def transmitted(node: int, size: int) -> None:
        per_hour[(node, (fleet.sim.now - START) // HOUR)] += size

    fleet.sim.on_transmit = transmitted
    add_traffic(fleet, per_node_per_day=PER_NODE_PER_DAY, until=until)
    waits: list[int] = []
    lease_work(fleet, until, waits)
    return lambda: (dict(per_hour), waits, len(fleet.holders), len(fleet.members))


def point(nodes: int, days: float, seed: int, workers: int = 1) -> Point:
    """Run a ``nodes``-node fleet for ``days`` (and an hour to drain) on ``workers``
    processes and measure it."""
    started, cpu = time.perf_counter(), time.process_time()
    until = START + round(days * DAY)
    end = until + HOUR
    run = run_fleet(
        workers, end, functools.partial(measure, until=until),
        nodes=nodes, seed=seed, start=START, cell_size=CELL_SIZE, leases=LeaseSetup(),
        bundle_lifetime_ms=DAY,
    )  # fmt: skip
    per_hour: dict[tuple[int, int], int] = {}
    waits: list[int] = []
    for part_hours, part_waits, _, _ in run.results:
        per_hour.update(part_hours)  # each part counts only its own nodes
        waits.extend(part_waits)
    verdict = invariants.check(run.trace)
    seconds = (end - START) / 1000
    if workers > 1:  # every process's share (this one's build and run included)
        cpu_seconds = sum(run.build_cpu_s) + sum(run.run_cpu_s)
        rss = sum(run.peak_rss_mib)
    else:
        cpu_seconds, rss = time.process_time() - cpu, peak_rss_mib()
    return Point(
        members=sum(result[2] for result in run.results),
        nodes=nodes,
        cells=run.results[0][3],
        bytes_per_node_per_s=round(sum(per_hour.values()) / nodes / seconds, 3),
        busiest_node_peak_bytes_per_s=round(max(per_hour.values(), default=0) / 3600, 3),
        decision_wait_ms_p50=percentile(waits, 0.5),
        decision_wait_ms_p95=percentile(waits, 0.95),
        grants=verdict.grants,
        verdict_ok=verdict.violations == 0 and verdict.uses > 0,
        wall_seconds=round(time.perf_counter() - started, 2),
        peak_rss_mib=round(rss, 1),
        engine="sim",
        cpu_seconds=round(cpu_seconds, 2),
    )
