"""The loopback fleet demo: regions of cells of nodes coordinating over delayed, scheduled links.

Theory of operation
-------------------
One process, simulated time (Trio's ``MockClock``): every node is a real :class:`~.node.Node`
with its own key, credential and store; every message is signed, carried in a BPv7 bundle over
a simulated link with light time and contact windows, routed over the contact graph, and
verified on arrival. Leases run through the coordination roles (``roles.lease``): each region
coordinator grants its cell coordinators their authority leases, a cell coordinator is the
lease authority of its cell's docks while its lease lasts, and members claim, use (with the
fencing token), renew and release; every grant and use goes into the invariant checker
(``protocol/coordination/invariants.py``), whose verdict is in the report.

Fleet shape: ``regions`` region coordinators, ``cells`` cell coordinators under each, members
spread over the cells. Members see their coordinator in short windows every few hours;
coordinators see their region coordinator less often, with longer light time.

Traffic (:mod:`.demo_behaviour`, shared with the process engine): every member advertises its
capabilities, claims a lease on a cell's dock now and then and uses it for a few hours once
granted, offers commitments to a neighbour (who accepts), reports exceptions (severe ones are
escalated by the coordinator to its region), and digests its telemetry (a digest every 3 hours
and one at once on a threshold crossing, :mod:`.demo_digests`). Bundles live for the autonomy
window, 30 days.

Scenarios (``demo_results.SCENARIOS``): *contention* halves the docks and doubles the claim
rate; *partition* cuts cell 0 off from its region from day 1, heals it a day before traffic
stops, and shows the authority lease lapsing (the cell stops granting) and the backlog draining;
*fault* makes lineage B of region 0 report one anomaly for 12 hours, and every cell coordinator
runs the containment machine (``protocol/coordination/containment.py``) on what it receives;
*isolation* has the last region flood the first, which severs it with a signed isolation order
and lifts it later (:mod:`.demo_isolation`); *skew* pins some nodes at protocol versions 1 and 2;
*release* adds a release pipeline node that stages a release to a canary cell, which is rolled
back (:mod:`.demo_release`).

Measurement: each node's links count the bytes it sends (:class:`CountingLink`); once per
``interval_ms`` of virtual time a sampler records an :class:`~.demo_results.Interval` and hands it
to the caller's callback (the live view). The run ends in a :class:`~.demo_results.Results`,
the plain object the report reads, so another engine can feed the same report.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable

import attrs
import trio
import trio.testing
from fleetwire.protocol.agent.bundling import DONE
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.coordination.containment import Containment
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import Scope
from fleetwire.protocol.messages.header import PROTOCOL_VERSION
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

from ..links.link import Link, LinkWrapper
from ..links.loopback import LinkModel, LoopbackNetwork
from ..node.node import Node, NodeConfig, open_node
from ..roles.lease import CellCoordinator, Member, RegionCoordinator
from ..store.memory_store import MemoryBundleStore
from ..store.store import BundleStore
from .demo_behaviour import (
    DAY,
    FAULT_FOR,
    FAULT_FROM,
    FAULTY_LINEAGE,
    HOUR,
    LIFETIME,
    MINUTE,
    NodeBehaviour,
    Tally,
    Timing,
)
from .demo_digests import stream_bytes_per_s
from .demo_isolation import IsolationTally, RegionGuard, flood
from .demo_release import RELEASE_NODE, ReleaseDemo, release_contacts
from .demo_results import (
    Event,
    Interval,
    Results,
    Setup,
)

__all__ = [
    "DAY",
    "FAULT_FOR",
    "FAULT_FROM",
    "HOUR",
    "LIFETIME",
    "MINUTE",
    "START",
    "Scenario",
    "run",
    "run_demo",
]

START = 820_000_000_000  # DTN ms, a fixed day so runs are reproducible
REGION = 1
#: The loopback engine runs on simulated time: durations as they are.
TIMING = Timing()
_Tally = Tally  # the name the tests used


@attrs.frozen
class Scenario:
    """The fleet's shape, the run's length and the scenarios it plays (``demo_results.SCENARIOS``)."""

    # Member nodes; coordinators come on top. The issue asks for 300 (3 × 4 × 25) in under a
    # minute; the loopback engine runs 300 members for a week in about 100 s of CPU, so the
    # default is 10 per cell (about 30 s). ``--nodes 300`` runs the larger fleet.
    nodes: int = 120
    regions: int = 3
    cells: int = 4  # per region
    days: float = 7.0
    seed: int = 1
    loss: float = 0.0
    scenarios: tuple[str, ...] = ("contention", "partition")
    cut_days: float = 30.0  # how long the partition scenario cuts a cell off (clipped to the run)
    interval_ms: int = HOUR

    @property
    def all_cells(self) -> int:
        return self.regions * self.cells

    @property
    def docks_per_cell(self) -> int:
        return 2 if "contention" in self.scenarios else 4

    @property
    def partition_days(self) -> tuple[float, float] | None:
        """(from, to) in run days: from day 1, as long as ``cut_days`` but healed a day before
        traffic ends, so the run shows the reconciliation."""
        if "partition" not in self.scenarios or self.days < 3:
            return None
        return (1.0, 1.0 + min(self.cut_days, self.days - 2))

    def region_of(self, cell: int) -> int:
        return REGION + cell // self.cells

    def cell_coordinator(self, cell: int) -> int:
        return 10 + cell

    @property
    def isolating(self) -> bool:
        """Whether the isolation scenario plays (it needs a second region to sever)."""
        return "isolation" in self.scenarios and self.regions >= 2

    def cell_of_coordinator(self, node: int) -> int | None:
        """The cell ``node`` coordinates, or None if it is no cell coordinator."""
        cell = node - 10
        return cell if 0 <= cell < self.all_cells else None

    def members(self) -> dict[int, int]:
        """member node id → cell."""
        return {1000 + i: i % self.all_cells for i in range(self.nodes)}

    @property
    def releasing(self) -> bool:
        """Whether the release scenario plays: its pipeline node comes on top."""
        return "release" in self.scenarios

    @property
    def total_nodes(self) -> int:
        return self.nodes + self.all_cells + self.regions + (1 if self.releasing else 0)

    def lineage(self, node: int) -> str:
        """A member's software lineage: both lineages in every cell (the seeds' diversity)."""
        return "AB"[(node // self.all_cells) % 2]

    def faulty(self, node: int) -> bool:
        """Whether the fault scenario's defect shows in ``node`` (lineage B in region 0)."""
        cell = self.members().get(node)
        return (
            "fault" in self.scenarios
            and cell is not None
            and self.region_of(cell) == REGION
            and self.lineage(node) == FAULTY_LINEAGE
        )

    def version_of(self, node: int) -> int:
        """The protocol version ``node`` speaks: the skew scenario pins cell 0's members at 1
        and the last region's cell coordinators at 2; everyone else speaks the newest."""
        if "skew" not in self.scenarios:
            return PROTOCOL_VERSION
        if self.members().get(node) == 0:
            return 1
        cell = self.cell_of_coordinator(node)
        if cell is not None and self.region_of(cell) == REGION + self.regions - 1:
            return 2
        return PROTOCOL_VERSION

    def command(self) -> str:
        """The command line that runs exactly this scenario."""
        scenarios = ",".join(self.scenarios) or "none"
        parts = [
            f"fleetwire demo --nodes {self.nodes} --regions {self.regions} --cells {self.cells}",
            f"--days {self.days:g} --seed {self.seed} --scenario {scenarios}",
        ]
        if self.loss:
            parts.append(f"--loss {self.loss:g}")
        if "partition" in self.scenarios and self.cut_days != 30.0:
            parts.append(f"--cut-days {self.cut_days:g}")
        return " ".join(parts)


class CountingLink(LinkWrapper):
    """A link that counts the bytes its node puts on it (a :class:`~.link.Link`)."""

    def __init__(self, link: Link, counts: dict[int, int]) -> None:
        super().__init__(link)
        self._counts = counts

    async def send(self, bundle: bytes) -> None:
        await self._link.send(bundle)
        # Counted once the link took it: a transfer cut off by the window's end is not traffic.
        self._counts[self._link.local] += len(bundle)


def contact_plan(scenario: Scenario, rng: random.Random) -> ContactPlan:
    """Members ⇄ coordinator 30 min every 3 h; coordinators ⇄ region 1 h every 6 h."""
    contacts: list[Contact] = []
    end = START + math.ceil(scenario.days * DAY) + DAY

    def both(a: int, b: int, start: int, length: int, owlt: int, rate: int) -> None:
        contacts.append(Contact(a, b, start, start + length, rate, owlt))
        contacts.append(Contact(b, a, start, start + length, rate, owlt))

    for member, cell in scenario.members().items():
        offset = rng.randrange(0, 3 * HOUR)
        owlt = rng.randrange(500, 4000)
        t = START + offset - 3 * HOUR
        while t < end:
            both(member, scenario.cell_coordinator(cell), max(t, START), 30 * 60_000, owlt, 256_000)
            t += 3 * HOUR
    cut = scenario.partition_days
    cut_from = START + round(cut[0] * DAY) if cut else 0
    cut_to = START + round(cut[1] * DAY) if cut else 0
    if scenario.isolating:
        # The regions see each other an hour every 6 hours, a minute of light time apart.
        for a in range(scenario.regions):
            for b in range(a + 1, scenario.regions):
                for t in range(START, end, 6 * HOUR):
                    both(REGION + a, REGION + b, t + 3 * HOUR, HOUR, 60_000, 2_000_000)
    for cell in range(scenario.all_cells):
        t = START
        while t < end:
            partitioned = cell == 0 and cut_from <= t < cut_to
            if not partitioned:
                both(
                    scenario.cell_coordinator(cell),
                    scenario.region_of(cell),
                    t,
                    HOUR,
                    20_000 + 5_000 * (cell % scenario.cells),
                    2_000_000,
                )
            t += 6 * HOUR
    if scenario.releasing:
        contacts += release_contacts(scenario, START, end)
    return ContactPlan(contacts)


def fleet_keys(scenario: Scenario, rng: random.Random) -> tuple[dict[int, SigningKey], TrustStore]:
    root = SigningKey.from_seed(rng.randbytes(32))
    trust = TrustStore([root.public])
    keys: dict[int, SigningKey] = {}
    nodes: list[tuple[int, list[Role], int | None, int | None]] = [
        (REGION + r, [Role.NODE, Role.REGION_COORDINATOR], None, r) for r in range(scenario.regions)
    ]
    nodes += [
        (scenario.cell_coordinator(c), [Role.NODE, Role.CELL_COORDINATOR], c, None)
        for c in range(scenario.all_cells)
    ]
    nodes += [(m, [Role.NODE], None, None) for m in scenario.members()]
    if scenario.releasing:  # last: the other keys stay what they are without it
        nodes.append((RELEASE_NODE, [Role.NODE, Role.RELEASE], None, None))
    for serial, (node, roles, cell, region) in enumerate(nodes, 1):
        keys[node] = SigningKey.from_seed(rng.randbytes(32))
        trust.add_credential(
            issue_credential(
                root,
                node=node,
                public_key=keys[node].public,
                roles=roles,
                not_before=START - DAY,
                not_after=START + 400 * DAY,
                serial=serial,
                cell=cell,
                region=region,
            ),
            START,
        )
    return keys, trust


def _in_cell(cell: int, resource: str) -> bool:
    return resource.startswith(f"cell-{cell}/")


async def on_their_way(store: BundleStore) -> int:
    """Bundles a store holds that are not tombstones (of delivered or forwarded bundles).

    Each store call is a Trio checkpoint, so the node may tombstone or expire a bundle between
    the reads; the count is clamped at zero rather than show a negative backlog.
    """
    done = 0
    for hop in DONE:
        done += len(await store.pending_ids(hop, 1 << 30))
    return max(0, await store.count() - done)



async def run_demo(
    scenario: Scenario, on_interval: Callable[[Interval, Scenario], None] | None = None
) -> Results:
    """Run the scenario in simulated time; call ``on_interval`` after each sampling step."""
    rng = random.Random(scenario.seed)
    plan = contact_plan(scenario, rng)
    keys, trust = fleet_keys(scenario, rng)
    clock = Clock(trio.current_time(), START)
    network = LoopbackNetwork(
        plan, clock, random.Random(scenario.seed), LinkModel(loss=scenario.loss)
    )
    members = scenario.members()
    regions = [REGION + r for r in range(scenario.regions)]
    parents = {m: scenario.cell_coordinator(c) for m, c in members.items()}
    parents |= {
        scenario.cell_coordinator(c): scenario.region_of(c) for c in range(scenario.all_cells)
    }
    seen = Tally()
    isolation = IsolationTally()
    nodes: dict[int, Node] = {}
    behaviours: dict[int, NodeBehaviour] = {}
    stores: dict[int, MemoryBundleStore] = {}
    fault = "fault" in scenario.scenarios
    roles: dict[int, Member] = {}
    coordinators: dict[int, CellCoordinator] = {}
    cut = scenario.partition_days
    cut_cell = scenario.cell_coordinator(0)
    release = ReleaseDemo(scenario, trust, START) if scenario.releasing else None
    if release is not None:
        # Reports and other release bundles for the pipeline go up through the regions.
        parents |= {region: RELEASE_NODE for region in regions}

    def now() -> int:
        return clock.to_dtn(trio.current_time())

    async def sample() -> None:
        step = scenario.interval_ms
        end = round((scenario.days + 1) * DAY)
        had_authority = [False] * scenario.all_cells
        ever_granted: set[int] = set()
        t0 = 0
        while t0 < end:
            t1 = t0 + step
            await trio.sleep_until(clock.to_trio(START + t1))
            # Bundles still on their way: delivered and forwarded ones stay in the stores as
            # tombstones (duplicate suppression) for a while, and do not count here.
            in_flight = 0
            for store in stores.values():
                in_flight += await on_their_way(store)
            waiting = await on_their_way(stores[cut_cell]) if cut else 0
            authority = [
                coordinators[scenario.cell_coordinator(c)].active()
                for c in range(scenario.all_cells)
            ]
            authority_events(seen, t1, had_authority, authority, ever_granted)
            had_authority = authority
            if cut:
                for at, kind in ((cut[0], "partition-cut"), (cut[1], "partition-healed")):
                    if t0 < round(at * DAY) <= t1:
                        seen.events.append(Event(round(at * DAY), kind, "cell 0 ⇄ its region"))
            containments = [b.containment for b in behaviours.values() if b.containment]
            if release is not None:
                release.sample(t1)
            interval = Interval(
                start_ms=t0,
                end_ms=t1,
                bytes_sent=sum(seen.node_bytes.values()),
                busiest_node_bytes=max(seen.node_bytes.values(), default=0),
                bundles_in_flight=in_flight,
                leases_held=sum(
                    1
                    for node, role in roles.items()
                    for d in range(scenario.docks_per_cell)
                    if role.use(f"cell-{members[node]}/dock-{d}") is not None
                ),
                dock_use_ms=seen.dock_use_ms,
                cell0_dock_use_ms=seen.cut_cell_dock_use_ms,
                exceptions_open=seen.exceptions_open,
                cells_with_authority=sum(authority),
                waiting_at_cut_cell=waiting,
                quarantined=sum(len(c.quarantined()) for c in containments),
            )
            for containment in containments:
                containment.tick(now())
            seen.node_bytes.clear()
            seen.dock_use_ms = 0
            seen.cut_cell_dock_use_ms = 0
            seen.intervals.append(interval)
            if on_interval is not None:
                on_interval(interval, scenario)
            t0 = t1

    all_nodes = [
        *regions,
        *(scenario.cell_coordinator(c) for c in range(scenario.all_cells)),
        *members,
        *([RELEASE_NODE] if release is not None else []),
    ]

    async def run_node(node: int, *, task_status: trio.TaskStatus[None]) -> None:
        # One task per node, side by side: a thousand nodes nested inside each other's
        # context managers would make a thousand nested cancel scopes.
        stores[node] = MemoryBundleStore()
        config = NodeConfig(
            node=node,
            key=keys[node],
            trust=trust,
            contact_plan=plan,
            parents=parents,
            expiry_interval_s=6 * 3600,
            protocol_version=scenario.version_of(node),
        )
        links: dict[int, Link] = {
            peer: CountingLink(link, seen.node_bytes)
            for peer, link in network.links_of(node).items()
        }
        inbox = network.open_inbox(node)
        if release is not None:
            links = release.links(links)
            inbox = release.inbox(node, inbox)
        async with open_node(
            config,
            stores[node],
            links=links,
            inbox=inbox,
            clock=clock,
        ) as running, trio.open_nursery() as own:
            nodes[node] = running
            coordinated = scenario.cell_of_coordinator(node)
            behaviours[node] = NodeBehaviour(
                running, scenario, seen, start=START, timing=TIMING,
                parent=scenario.region_of(coordinated) if coordinated is not None else None,
                containment=Containment(node, Scope.CELL, coordinated, running.next_message_sequence)
                if fault and coordinated is not None
                else None,
            )  # fmt: skip
            running.on_refused = behaviours[node].on_refused
            if release is not None:
                await release.start(running, own)
            task_status.started()
            await behaviours[node].listen()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(network.run)
            for node in all_nodes:
                await nursery.start(run_node, node)
            async with trio.open_nursery() as traffic:
                await start_roles(scenario, nodes, behaviours, TIMING, traffic, roles, coordinators)
                if scenario.isolating:
                    start_isolation(scenario, behaviours, isolation, traffic)
                for behaviour in behaviours.values():
                    if peers := behaviour.version_peers():
                        traffic.start_soon(behaviour.advertise_versions, peers)
                if release is not None:
                    traffic.start_soon(release.publish, seen)
                sampled = trio.Event()

                async def sample_all() -> None:
                    await sample()
                    sampled.set()

                nursery.start_soon(sample_all)
                for node, cell in members.items():
                    traffic.start_soon(
                        behaviours[node].member, cell, scenario.cell_coordinator(cell), roles[node]
                    )
                await trio.sleep_until(clock.to_trio(START + round(scenario.days * DAY)))
                traffic.cancel_scope.cancel()
            # No new traffic; one more simulated day lets what is under way arrive (the sampler
            # ends with it, and with it the run).
            await sampled.wait()
            nursery.cancel_scope.cancel()
        figures = None if release is None else release.figures()
    finally:
        if release is not None:
            release.close()
    if figures is None:
        return _results(scenario, seen, isolation)
    for at_ms, order, cells in figures.stages:
        where = ", ".join(f"cell {c}" for c in cells) or "the rollout"
        seen.events.append(Event(at_ms, f"release-{order.split(' ')[0]}", f"{order}: {where}"))
    return attrs.evolve(_results(scenario, seen, isolation), release=figures)


def start_isolation(
    scenario: Scenario,
    behaviours: dict[int, NodeBehaviour],
    tally: IsolationTally,
    nursery: trio.Nursery,
) -> None:
    """Guards on every region coordinator; the last region's cell coordinators misbehave."""
    for r in range(scenario.regions):
        behaviour = behaviours[REGION + r]
        behaviour.guard = RegionGuard(behaviour, r, tally)
        nursery.start_soon(behaviour.guard.watch)
    for c in range(scenario.all_cells):
        if scenario.region_of(c) == REGION + scenario.regions - 1:
            nursery.start_soon(flood, behaviours[scenario.cell_coordinator(c)], REGION, tally)


def authority_events(
    seen: Tally,
    at_ms: int,
    had: list[bool],
    has: list[bool],
    ever_granted: set[int],
) -> None:
    """Note each cell whose coordinator gained or lost its authority lease since the last look."""
    for c, (was, now_) in enumerate(zip(had, has, strict=True)):
        if was != now_:
            kind = "authority-lost" if was else "authority-regained"
            if c not in ever_granted:
                kind = "authority-granted"
                ever_granted.add(c)
            seen.events.append(Event(at_ms, kind, f"cell {c}"))


async def start_roles(
    scenario: Scenario,
    nodes: dict[int, Node],
    behaviours: dict[int, NodeBehaviour],
    timing: Timing,
    nursery: trio.Nursery,
    roles: dict[int, Member],
    coordinators: dict[int, CellCoordinator],
) -> None:
    """Start the lease role of each node in ``nodes``: regions, then cells, then members."""
    for node in sorted(nodes):
        if node == RELEASE_NODE and scenario.releasing:
            continue  # the release pipeline runs no lease role
        on_send = behaviours[node].on_send
        cell = scenario.cell_of_coordinator(node)
        if node < REGION + scenario.regions:
            region = RegionCoordinator(
                nodes[node], timing.region_authority(), lifetime_ms=LIFETIME, on_send=on_send
            )
            await nursery.start(region.run)
        elif cell is not None:
            coordinators[node] = CellCoordinator(
                nodes[node],
                cell=cell,
                region=scenario.region_of(cell),
                authority_config=timing.cell_authority(),
                holder_config=timing.coordinator_lease(),
                lifetime_ms=LIFETIME,
                authority_term_ms=timing.authority_term,
                owns=functools.partial(_in_cell, cell),
                last_epoch=0,  # a first start: it acted in no epoch before
                on_send=on_send,
            )
            await nursery.start(coordinators[node].run)
        else:
            roles[node] = Member(
                nodes[node],
                (scenario.cell_coordinator(scenario.members()[node]),),
                timing.member_leases(),
                lifetime_ms=LIFETIME,
                on_send=on_send,
            )
            await nursery.start(roles[node].run)


def _results(
    scenario: Scenario, seen: _Tally, isolation: IsolationTally | None = None
) -> Results:
    families = seen.family_figures()
    verdict = seen.lease_verdict()
    setup = Setup(
        nodes=scenario.total_nodes,
        regions=scenario.regions,
        cells=scenario.all_cells,
        members=scenario.nodes,
        docks_per_cell=scenario.docks_per_cell,
        days=scenario.days,
        seed=scenario.seed,
        loss=scenario.loss,
        scenarios=scenario.scenarios,
        partition_days=scenario.partition_days,
        interval_ms=scenario.interval_ms,
        command=scenario.command(),
        engine="loopback: Trio MockClock, real nodes, stores and signatures",
        lifetime_days=LIFETIME / DAY,
    )
    return Results(
        setup=setup,
        intervals=tuple(seen.intervals),
        events=tuple(sorted(seen.events, key=lambda e: (e.at_ms, e.kind, e.detail))),
        verdicts=(verdict,),
        families=families,
        lease_waits_ms=tuple(seen.waits_ms),
        claims_given_up=seen.given_up,
        grants=seen.grants,
        escalations=seen.escalations,
        cluster_escalations=seen.cluster_escalations,
        faulty_nodes=sum(1 for m in scenario.members() if scenario.faulty(m)),
        quarantined_faulty=seen.quarantined_faulty,
        quarantined_healthy=seen.quarantined_healthy,
        quarantined_by_lineage=tuple(sorted(seen.quarantined.items())),
        digests_periodic=seen.digests["periodic"],
        digests_event_driven=seen.digests["threshold"],
        digest_bytes=seen.digest_bytes,
        digests_anomalous=seen.digests_anomalous,
        digests_refused=seen.digests_refused,
        digests_unwritable=seen.digests_unwritable,
        stream_baseline_bytes_per_node_per_s=stream_bytes_per_s(seen.samples, seen.detail_bytes),
        isolation=None
        if isolation is None or not scenario.isolating
        else tuple(sorted(attrs.asdict(isolation).items())),
        skew=_skew_counts(scenario, seen) if "skew" in scenario.scenarios else None,
    )


def _skew_counts(scenario: Scenario, seen: _Tally) -> tuple[tuple[str, int], ...]:
    nodes: dict[str, int] = {}
    for node in (
        *(REGION + r for r in range(scenario.regions)),
        *(scenario.cell_coordinator(c) for c in range(scenario.all_cells)),
        *scenario.members(),
    ):
        key = f"nodes v{scenario.version_of(node)}"
        nodes[key] = nodes.get(key, 0) + 1
    return tuple(sorted({**nodes, **seen.versions}.items()))


def run(
    scenario: Scenario, on_interval: Callable[[Interval, Scenario], None] | None = None
) -> Results:
    """Run the demo to completion in a fresh Trio run with a mock clock."""
    started = time.perf_counter()
    results = trio.run(
        run_demo, scenario, on_interval, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    return attrs.evolve(results, wall_seconds=time.perf_counter() - started)
