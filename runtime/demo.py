"""The loopback fleet demo: cells of nodes coordinating over delayed, scheduled, partitioned links.

One process, simulated time (Trio's ``MockClock``): every node is a real :class:`~.node.Node`
with its own key, credential and store; every message is signed, carried in a BPv7 bundle over
a simulated link with light time and contact windows, routed over the contact graph, and
verified on arrival. What the nodes *say* is deliberately simple — the coordination roles
(lease authority with fencing, reservations, escalation policy) are the protocol's next
layer — but every byte of it goes through the real stack.

Fleet shape: one region coordinator, ``cells`` cell coordinators, members spread over the cells.
Members see their coordinator in short windows every few hours; coordinators see the region
coordinator less often, with longer light time. One cell is cut off from the region for a
stretch of the run (a partition): its traffic waits in the stores and flows when it heals.

Traffic: every member advertises its capabilities, claims a lease on a cell resource now and
then (the coordinator answers with a grant: a growing fencing token per resource), offers
commitments to a neighbour (who accepts), and reports exceptions; severe ones are escalated by
the coordinator to the region.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import attrs
import trio
import trio.testing
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Family,
    Header,
    LeaseClaim,
    LeaseGrant,
    Message,
    Scope,
    Terms,
)
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

from .bundling import DELIVERED
from .contacts import Clock, Contact, ContactPlan
from .loopback import LinkModel, LoopbackNetwork
from .memory_store import MemoryBundleStore
from .node import Node, NodeConfig, open_node

HOUR = 3_600_000
DAY = 24 * HOUR
START = 820_000_000_000  # DTN ms, a fixed day so runs are reproducible
REGION = 1


@attrs.frozen
class Scenario:
    nodes: int = 200
    cells: int = 4
    days: float = 3.0
    seed: int = 1
    loss: float = 0.0
    partition_days: tuple[float, float] = (0.5, 1.5)  # cell 0 cut off from the region

    def cell_coordinator(self, cell: int) -> int:
        return 10 + cell

    def members(self) -> dict[int, int]:
        """member node id → cell."""
        count = max(self.nodes - self.cells - 1, 0)
        return {1000 + i: i % self.cells for i in range(count)}


@attrs.define
class Observations:
    """What the demo measured; the report is made from this."""

    sent: Counter[str] = attrs.field(factory=Counter)
    delivered: Counter[str] = attrs.field(factory=Counter)
    latency_ms: dict[str, list[int]] = attrs.field(factory=lambda: defaultdict(list))
    stored_samples: list[tuple[int, int]] = attrs.field(factory=list)  # (day ms, bundles held)
    grants: int = 0
    escalations: int = 0
    partition_waiting: list[int] = attrs.field(factory=list)
    wall_seconds: float = 0.0


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
    cut_from = START + round(scenario.partition_days[0] * DAY)
    cut_to = START + round(scenario.partition_days[1] * DAY)
    for cell in range(scenario.cells):
        t = START
        while t < end:
            partitioned = cell == 0 and cut_from <= t < cut_to
            if not partitioned:
                both(
                    scenario.cell_coordinator(cell),
                    REGION,
                    t,
                    HOUR,
                    20_000 + 5_000 * cell,
                    2_000_000,
                )
            t += 6 * HOUR
    return ContactPlan(contacts)


def fleet_keys(scenario: Scenario, rng: random.Random) -> tuple[dict[int, SigningKey], TrustStore]:
    root = SigningKey.from_seed(rng.randbytes(32))
    trust = TrustStore([root.public])
    keys: dict[int, SigningKey] = {}
    nodes: list[tuple[int, list[Role], int | None]] = [
        (REGION, [Role.NODE, Role.REGION_COORDINATOR], None)
    ]
    nodes += [
        (scenario.cell_coordinator(c), [Role.NODE, Role.CELL_COORDINATOR], c)
        for c in range(scenario.cells)
    ]
    nodes += [(m, [Role.NODE], None) for m in scenario.members()]
    for serial, (node, roles, cell) in enumerate(nodes, 1):
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
                region=0 if Role.REGION_COORDINATOR in roles else None,
            ),
            START,
        )
    return keys, trust


async def run_demo(
    scenario: Scenario, progress: Callable[[float], None] | None = None
) -> Observations:
    """Run the scenario in simulated time; call ``progress(fraction)`` as days pass."""
    rng = random.Random(scenario.seed)
    plan = contact_plan(scenario, rng)
    keys, trust = fleet_keys(scenario, rng)
    clock = Clock(trio.current_time(), START)
    network = LoopbackNetwork(
        plan, clock, random.Random(scenario.seed), LinkModel(loss=scenario.loss)
    )
    members = scenario.members()
    parents = {m: scenario.cell_coordinator(c) for m, c in members.items()}
    parents |= {scenario.cell_coordinator(c): REGION for c in range(scenario.cells)}
    seen = Observations()
    nodes: dict[int, Node] = {}
    stores: dict[int, MemoryBundleStore] = {}

    def now() -> int:
        return clock.to_dtn(trio.current_time())

    def header(node: int, refs: tuple[ContentId, ...] = ()) -> Header:
        # One sequence per node across all its tasks (spec §4): readers refuse a reused one.
        sequence = nodes[node].next_message_sequence()
        return Header(issuer=node, issued_at=now(), sequence=sequence, references=refs)

    async def send(node: int, message: Message, to: int) -> None:
        await nodes[node].send(message, to, lifetime_ms=7 * DAY)
        seen.sent[message.TYPE.family.value] += 1

    async def listen(node: int) -> None:
        inbox = nodes[node].subscribe()
        tokens: Counter[str] = Counter()
        async for signed in inbox:
            message = signed.message
            family = message.TYPE.family.value
            seen.delivered[family] += 1
            seen.latency_ms[family].append(now() - message.header.issued_at)
            if isinstance(message, LeaseClaim):
                tokens[message.resource] += 1
                grant = LeaseGrant(
                    header=header(node, (signed.content_id,)),
                    resource=message.resource,
                    holder=message.header.issuer,
                    claim=signed.content_id,
                    fencing_token=tokens[message.resource],
                    term_ms=message.term_ms,
                    expires_at=now() + message.term_ms,
                )
                seen.grants += 1
                await send(node, grant, message.header.issuer)
            elif isinstance(message, Commitment) and message.state is CommitmentState.OFFERED:
                assert message.terms is not None
                accept = Commitment(
                    header=header(node, (signed.content_id,)),
                    state=CommitmentState.ACCEPTED,
                    commitment=signed.content_id,
                )
                await send(node, accept, message.header.issuer)
            elif isinstance(message, ExceptionReport) and message.severity >= 3 and node != REGION:
                seen.escalations += 1
                escalated = ExceptionReport(
                    header=header(node, (signed.content_id,)),
                    code=message.code,
                    severity=message.severity,
                    scope=Scope.CELL,
                    scope_id=node,
                    affects=message.affects,
                    detail=f"escalated from node {message.header.issuer}",
                )
                await send(node, escalated, REGION)

    async def member(node: int, cell: int) -> None:
        local = random.Random(scenario.seed * 7919 + node)
        coordinator = scenario.cell_coordinator(cell)
        await trio.sleep(local.uniform(0, 3600))
        advert = CapabilityAdvertisement(
            header=header(node),
            capabilities=(
                Capability(
                    "refine/carbonaceous",
                    local.randrange(10_000, 50_000),
                    "kg",
                    now(),
                    now() + 30 * DAY,
                ),
            ),
            versions=(1, 1),
            lineage="AB"[node % 2],
            cell=cell,
        )
        await send(node, advert, coordinator)
        while True:
            await trio.sleep(local.uniform(4, 12) * 3600)
            roll = local.random()
            if roll < 0.5:
                claim = LeaseClaim(
                    header=header(node),
                    resource=f"cell-{cell}/dock-{local.randrange(4)}",
                    term_ms=2 * HOUR,
                )
                await send(node, claim, coordinator)
            elif roll < 0.8:
                peers = [m for m, c in members.items() if c == cell and m != node]
                if peers:
                    offer = Commitment(
                        header=header(node),
                        state=CommitmentState.OFFERED,
                        terms=Terms(
                            node,
                            local.choice(peers),
                            "deliver/refined-carbon",
                            1200,
                            "kg",
                            now() + 5 * DAY,
                        ),
                    )
                    await send(node, offer, offer.terms.promisee)  # type: ignore[union-attr]
            else:
                report = ExceptionReport(
                    header=header(node),
                    code=local.randrange(1, 7),
                    severity=local.randrange(1, 6),
                    scope=Scope.NODE,
                    scope_id=node,
                )
                await send(node, report, coordinator)

    async def sample() -> None:
        total_ms = scenario.days * DAY
        cut = (START + scenario.partition_days[0] * DAY, START + scenario.partition_days[1] * DAY)
        while True:
            await trio.sleep(1800)
            # Bundles still on their way: delivered ones stay in the stores as tombstones
            # (duplicate suppression) until they expire, and do not count here.
            held = 0
            for store in stores.values():
                held += await store.count() - len(await store.pending_for(DELIVERED, 1 << 30))
            t = now()
            seen.stored_samples.append((t - START, held))
            if cut[0] <= t < cut[1]:
                coordinator = stores[scenario.cell_coordinator(0)]
                waiting = await coordinator.count() - len(
                    await coordinator.pending_for(DELIVERED, 1 << 30)
                )
                seen.partition_waiting.append(waiting)
            if progress is not None:
                progress(min((t - START) / (total_ms + DAY), 1.0))

    all_nodes = [REGION, *(scenario.cell_coordinator(c) for c in range(scenario.cells)), *members]
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
        )
        async with open_node(
            config,
            stores[node],
            links=network.links_of(node),
            inbox=network.open_inbox(node),
            clock=clock,
        ) as running:
            nodes[node] = running
            task_status.started()
            await listen(node)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        for node in all_nodes:
            await nursery.start(run_node, node)
        nursery.start_soon(sample)
        async with trio.open_nursery() as traffic:
            for node, cell in members.items():
                traffic.start_soon(member, node, cell)
            await trio.sleep(scenario.days * DAY / 1000)
            traffic.cancel_scope.cancel()
        # No new traffic; one more simulated day lets what is under way arrive.
        await trio.sleep(DAY / 1000)
        nursery.cancel_scope.cancel()
    return seen


def run(scenario: Scenario, progress: Callable[[float], None] | None = None) -> Observations:
    """Run the demo to completion in a fresh Trio run with a mock clock."""
    import time

    started = time.perf_counter()
    seen = trio.run(
        run_demo, scenario, progress, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    seen.wall_seconds = time.perf_counter() - started
    return seen


def summary(seen: Observations) -> dict[str, Any]:
    """The figures of a run, JSON-friendly."""
    families = [family.value for family in Family]
    return {
        "families": {
            family: {
                "sent": seen.sent[family],
                "delivered": seen.delivered[family],
                "latency_ms_median": statistics.median(seen.latency_ms[family])
                if seen.latency_ms[family]
                else None,
                "latency_ms_p95": _percentile(seen.latency_ms[family], 0.95),
            }
            for family in families
        },
        "grants": seen.grants,
        "escalations": seen.escalations,
        "max_bundles_held": max((held for _, held in seen.stored_samples), default=0),
        "max_waiting_at_partitioned_coordinator": max(seen.partition_waiting, default=0),
        "wall_seconds": round(seen.wall_seconds, 2),
    }


def _percentile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]
