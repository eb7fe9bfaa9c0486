"""Fault scenarios on a loopback fleet of real Trio nodes (tests/fault_fleet.py), in virtual time.

1. A lineage-correlated fault in 30 nodes of one region: one incident per cell, one at the
   region; the 30 nodes quarantined (and no other); their commitments re-homed to nodes of
   another lineage; their lease claims refused; and no exception report crosses a gateway link
   to another region (counted on the links).
2. A region isolated by a signed order: within one auction cycle of the order (virtual time,
   order to the last bundle a gateway accepted from it) nothing from it is accepted at any
   gateway, its leases are revoked, its reservations reclaimed; lifting restores its traffic.
"""

from __future__ import annotations

import functools

import trio
import trio.testing
from fleetwire.protocol.coordination.escalation import EscalationPolicy, Resolution, Signature
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.isolation import IsolationBoundary, OrderAction, Target
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig, ResourceState
from fleetwire.protocol.coordination.lease_holder import HolderConfig
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    ExceptionCode,
    ExceptionReport,
    Family,
    Header,
    LeaseRevoke,
    Scope,
    Terms,
)
from fleetwire.runtime.roles.faults import CellFaults, FaultMember, RegionFaults
from fleetwire.runtime.roles.lease import CellCoordinator, Member, RegionCoordinator

from .fault_fleet import DAY, HOUR, MINUTE, START, Fleet, Shape, carried, open_fleet

LIFETIME = 2 * DAY
#: The shortest auction cycle (protocol/coordination/auction.py: 4-8 h for feedstock).
AUCTION_CYCLE_MS = 4 * HOUR
WINDOW = FreshnessWindow(max_age_ms=DAY, max_skew_ms=1_000)
CELL_AUTHORITY = AuthorityConfig(max_drift_ms=1_000, max_term_ms=4 * HOUR, freshness=WINDOW)
REGION_AUTHORITY = AuthorityConfig(max_drift_ms=1_000, max_term_ms=DAY, freshness=WINDOW)
HOLDER = HolderConfig(max_drift_ms=1_000, renew_lead_ms=HOUR, retry_ms=HOUR, freshness=WINDOW)
COORDINATOR_HOLDER = HolderConfig(
    max_drift_ms=1_000, renew_lead_ms=4 * HOUR, retry_ms=10 * MINUTE, freshness=WINDOW
)
#: A hold long enough for a burst arriving over a few minutes to go up as one report.
POLICY = EscalationPolicy(hold_ms=10 * MINUTE)
#: Reports of the defect per faulty node, ten minutes apart.
REPORTS = 4


def run(test):  # type: ignore[no-untyped-def]
    @functools.wraps(test)
    def wrapper() -> None:
        trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))

    return wrapper


def advert(fleet: Fleet, node: int) -> CapabilityAdvertisement:
    now = fleet.now()
    return CapabilityAdvertisement(
        Header(node, now, fleet.nodes[node].next_message_sequence()),
        capabilities=(Capability("refine/carbonaceous", 20_000, "kg", now, now + 30 * DAY),),
        versions=(1, 3),
        lineage=fleet.shape.lineage(node),
        cell=fleet.shape.cell_of(node) if node >= 10 else None,
    )


async def start_leases(fleet: Fleet, nursery: trio.Nursery, cells: list[int], gates: dict) -> dict:  # type: ignore[type-arg]
    """Region and cell lease roles for ``cells``; the cell authorities consult ``gates``."""
    shape = fleet.shape
    coordinators = {}
    for region in sorted({shape.region_of_cell(c) for c in cells}):
        node = fleet.nodes[shape.region_coordinator(region)]
        await nursery.start(RegionCoordinator(node, REGION_AUTHORITY, lifetime_ms=LIFETIME).run)
    for cell in cells:
        node = fleet.nodes[shape.cell_coordinator(cell)]
        coordinators[cell] = CellCoordinator(
            node, cell=cell, region=shape.region_coordinator(shape.region_of_cell(cell)),
            authority_config=CELL_AUTHORITY, holder_config=COORDINATOR_HOLDER,
            lifetime_ms=LIFETIME, authority_term_ms=DAY, last_epoch=0,
            owns=lambda r, c=cell: r.startswith(f"cell-{c}/"), admits=gates.get(cell),
        )  # fmt: skip
        await nursery.start(coordinators[cell].run)
    return coordinators


def exception_reports(fleet: Fleet, crossing: bool) -> list[ExceptionReport]:
    """Exception reports (carriers excluded) tapped on links between regions, or within."""
    shape, found = fleet.shape, []
    for _at, a, b, bundle in fleet.tap:
        if (shape.region_of(a) != shape.region_of(b)) != crossing:
            continue
        message = carried(bundle)
        if isinstance(message, ExceptionReport) and type(message).__name__ == "ExceptionReport":
            found.append(message)
    return found


@run
async def test_a_lineage_fault_in_30_nodes_of_one_region_is_one_incident_and_stays_there() -> None:
    # Region 0: two cells of 15 lineage-B and 3 lineage-A members; elsewhere 4 a cell, both.
    shape = Shape(members_per_cell=18, members_elsewhere=4)
    async with open_fleet(shape) as fleet, trio.open_nursery() as nursery:
        regions = {
            r: RegionFaults(
                fleet.nodes[shape.region_coordinator(r)], region=r, lifetime_ms=LIFETIME,
                policy=POLICY,
            )
            for r in range(shape.regions)
        }  # fmt: skip
        cells = {
            c: CellFaults(
                fleet.nodes[shape.cell_coordinator(c)], cell=c, lifetime_ms=LIFETIME,
                region_coordinator=shape.region_coordinator(shape.region_of_cell(c)),
                policy=POLICY,
            )
            for c in shape.cells
        }  # fmt: skip
        members = {
            m: FaultMember(
                fleet.nodes[m], shape.cell_coordinator(c), shape.lineage(m), lifetime_ms=LIFETIME
            )
            for c in shape.cells
            for m in shape.members(c)
        }
        for role in [*regions.values(), *cells.values(), *members.values()]:
            await nursery.start(role.run)
        # Region 0's cell 0 runs its lease authority behind the containment gate.
        coordinators = await start_leases(fleet, nursery, [0], {0: cells[0].admits})
        for m, role in members.items():
            await role.advertise(advert(fleet, m))
        for r in range(shape.regions):  # gateways talk to each other: the tap sees traffic
            for other in range(shape.regions):
                if other != r:
                    gateway = shape.region_coordinator(r)
                    await fleet.nodes[gateway].send(
                        advert(fleet, gateway), shape.region_coordinator(other)
                    )
        # Every node of lineage B promises something to a lineage-A node of its cell.
        promises = {}
        for c in shape.cells:
            a_nodes = [m for m in shape.members(c) if shape.lineage(m) == "A"]
            for i, m in enumerate(m for m in shape.members(c) if shape.lineage(m) == "B"):
                terms = Terms(m, a_nodes[i % len(a_nodes)], "deliver/refined-carbon", 1200, "kg",
                              fleet.now() + 5 * DAY)  # fmt: skip
                promises[m] = await members[m].offer(terms)
        await fleet.until(START + HOUR)

        # The defect: every lineage-B node of region 0 (30 nodes) reports the same software
        # fault every 10 minutes, REPORTS times, first reports spread over 5 minutes; elsewhere,
        # ordinary unrelated faults.
        faulty = [m for c in (0, 1) for m in shape.members(c) if shape.lineage(m) == "B"]
        assert len(faulty) == 30

        async def defect(node: int, offset_ms: int) -> None:
            await fleet.until(START + HOUR + offset_ms)
            for _ in range(REPORTS):
                await members[node].report(ExceptionCode.SOFTWARE, 3, detail="assessment drift")
                await trio.sleep(600)

        async with trio.open_nursery() as bursts:
            for i, node in enumerate(faulty):
                bursts.start_soon(defect, node, (i * 10_000) % (5 * MINUTE))
            for c in range(2, len(shape.cells)):
                bursts.start_soon(members[shape.members(c)[-1]].report, ExceptionCode.THERMAL, 2)
        await fleet.until(START + HOUR + 40 * MINUTE)
        # The region has dealt with it: its incident closed, and with it the cells' (type 14).
        (incident,) = regions[0].incidents.opened
        await regions[0].close(incident, Resolution.CONTAINED)
        await fleet.until(START + 3 * HOUR)
        assert [cells[c].incidents.closed for c in shape.cells] == [1, 1, 0, 0, 0, 0]

        # One incident per cell, listing all 15 of its faulty nodes; one at the region.
        signature = Signature(int(ExceptionCode.SOFTWARE), "B")
        for c in (0, 1):
            escalated = [r for _, r in cells[c].incidents.escalated]
            assert [(r.code, r.scope, r.scope_id) for r in escalated] == [
                (ExceptionCode.SOFTWARE, Scope.CELL, c)
            ]
            (incident,) = [i for i in cells[c].incidents.opened if i.signature == signature]
            assert incident.node_count == 15
            assert sorted(incident.nodes) == sorted(m for m in faulty if shape.cell_of(m) == c)
            assert cells[c].incidents.acknowledged >= 1  # the region acknowledged it
        (incident,) = regions[0].incidents.opened
        assert incident.signature == signature and sorted(incident.nodes) == [0, 1]
        # Quarantined: exactly the 30, and they are the ones re-homed away from.
        quarantined = cells[0].containment.quarantined() | cells[1].containment.quarantined()
        assert quarantined == set(faulty)
        for c in range(2, len(shape.cells)):
            assert cells[c].containment.quarantined() == set()
        # Their commitments re-homed: a lineage-A node of the cell took each one over, the
        # promisee accepted the new promise, and the old one is closed at the promisee too.
        for node in faulty:
            old = promises[node]
            plan = cells[shape.cell_of(node)].rehomed[old]
            assert plan.from_node == node and shape.lineage(plan.to_node) == "A"
            taker = members[plan.to_node]
            (new,) = [n for n, o in taker.taken_over.items() if o == old]
            promisee = members[plan.terms.promisee]
            assert promisee.tracker.state(new).name == "ACCEPTED"
            assert promisee.tracker.state(old).name in ("BROKEN", "WITHDRAWN")
            assert members[node].handed_over[old] == plan.to_node
        # Their claims refused; a healthy node's granted.
        sick, healthy = shape.members(0)[0], shape.members(0)[-1]
        holders = {}
        for n in (sick, healthy):
            holders[n] = Member(
                fleet.nodes[n], (shape.cell_coordinator(0),), HOLDER, lifetime_ms=LIFETIME
            )
            await nursery.start(holders[n].run)
            await holders[n].want(f"cell-0/dock-{n}", 3 * HOUR)
        await fleet.until(START + 4 * HOUR)
        assert holders[healthy].use(f"cell-0/dock-{healthy}") is not None
        assert holders[sick].use(f"cell-0/dock-{sick}") is None
        assert coordinators[0].authority.state(f"cell-0/dock-{sick}") is ResourceState.FREE

        # On the links: exception reports inside region 0, none between regions, though the
        # gateway links carried other traffic.
        inside = exception_reports(fleet, crossing=False)
        assert sum(1 for r in inside if r.header.issuer in faulty) == 30 * REPORTS
        assert exception_reports(fleet, crossing=True) == []
        assert any(shape.region_of(a) != shape.region_of(b) for _, a, b, _bundle in fleet.tap)
        for r in (1, 2):
            assert all(shape.region_of(i) == r for _, i in regions[r].received)
        nursery.cancel_scope.cancel()


def boundary_for(fleet: Fleet) -> IsolationBoundary:
    """An isolation boundary that places every node of the fleet (from configuration)."""
    shape = fleet.shape
    boundary = IsolationBoundary(
        fleet.trust, {c: shape.region_of_cell(c) for c in shape.cells}, max_age_ms=HOUR
    )
    for region in range(shape.regions):
        boundary.place_in_region(shape.region_coordinator(region), region)
    for cell in shape.cells:
        boundary.place(shape.cell_coordinator(cell), cell)
        for member in shape.members(cell):
            boundary.place(member, cell)
    return boundary


@run
async def test_a_region_is_cut_off_within_one_cycle_at_every_gateway_and_lifting_restores() -> None:
    shape = Shape(regions=3, cells_per_region=1, members_per_cell=4, b_per_cell=0)
    suspect, gateways = 1, (shape.region_coordinator(0), shape.region_coordinator(2))
    dock_authority = shape.cell_coordinator(0)  # region 0's cell 0: leases docks to anyone
    async with open_fleet(shape) as fleet, trio.open_nursery() as nursery:
        boundaries = {n: boundary_for(fleet) for n in (*gateways, dock_authority)}
        reclaimed: list[tuple[int, Target]] = []
        faults = {}
        cell_faults = CellFaults(
            fleet.nodes[dock_authority], cell=0, region_coordinator=gateways[0],
            lifetime_ms=LIFETIME, boundary=boundaries[dock_authority],
        )  # fmt: skip
        gate = {0: lambda n: cell_faults.admits(n) and boundaries[dock_authority].admits(n)}
        coordinators = await start_leases(fleet, nursery, [0], gate)
        cell_faults.authority = coordinators[0].authority
        cell_faults.on_reclaim = lambda t: reclaimed.append((dock_authority, t))
        await nursery.start(cell_faults.run)
        for region, gateway in ((0, gateways[0]), (2, gateways[1])):
            faults[gateway] = RegionFaults(
                fleet.nodes[gateway], region=region, lifetime_ms=LIFETIME,
                boundary=boundaries[gateway],
            )  # fmt: skip
            faults[gateway].on_reclaim = lambda t, g=gateway: reclaimed.append((g, t))
            await nursery.start(faults[gateway].run)

        # What each gateway accepts (delivered after admission): (DTN ms, issuer).
        accepted: dict[int, list[tuple[int, int]]] = {g: [] for g in gateways}

        async def listen(gateway: int) -> None:
            async with fleet.nodes[gateway].subscribe(Family.CAPABILITY) as inbox:
                async for signed in inbox:
                    accepted[gateway].append((fleet.now(), signed.message.header.issuer))

        # Members of the suspect region and of region 2 advertise to both gateways every
        # 5 minutes, every 10 seconds around the order and the lift (so that bundles are on
        # their way while the order travels); one suspect member holds a lease on a dock of
        # region 0.
        order_at, lift_at = START + 2 * HOUR, START + 4 * HOUR
        busy = [(t - MINUTE, t + 2 * MINUTE) for t in (order_at, lift_at)]

        async def chatter(node: int) -> None:
            while True:
                for gateway in gateways:
                    await fleet.nodes[node].send(advert(fleet, node), gateway)
                now = fleet.now()
                if any(a <= now < b for a, b in busy):
                    await trio.sleep(10)
                else:
                    await fleet.until(min([now + 5 * MINUTE] + [a for a, _ in busy if a > now]))

        for gateway in gateways:
            nursery.start_soon(listen, gateway)
        talkers = shape.members(suspect) + shape.members(2)
        for node in talkers:
            nursery.start_soon(chatter, node)
        lessee = shape.members(suspect)[0]
        holder = Member(fleet.nodes[lessee], (dock_authority,), HOLDER, lifetime_ms=LIFETIME)
        await nursery.start(holder.run)
        await fleet.until(START + 10 * MINUTE)
        await holder.want("cell-0/dock-0", 3 * HOUR)
        await fleet.until(order_at)
        assert holder.use("cell-0/dock-0") is not None  # granted across the gateways

        target = Target(Scope.REGION, suspect)
        severed_at = fleet.now()
        await faults[gateways[0]].order(
            OrderAction.SEVER, target, [gateways[1], dock_authority], "suspect lineage rollout"
        )
        await fleet.until(lift_at)
        lifted_at = fleet.now()
        await faults[gateways[0]].order(OrderAction.LIFT, target, [gateways[1], dock_authority])
        await fleet.until(START + 5 * HOUR)

        region_of = shape.region_of
        from_suspect = sorted(
            t for g in gateways for t, n in accepted[g] if region_of(n) == suspect
        )
        before_lift = [t for t in from_suspect if t < lifted_at]
        last = max(before_lift)
        # Cut off within one auction cycle of the order at every gateway (in fact within the
        # light time of the gateway links), and nothing accepted after until the lift.
        assert last - severed_at <= AUCTION_CYCLE_MS
        assert 0 < last - severed_at <= 2 * MINUTE  # bundles were on their way meanwhile
        assert all(t <= last or t >= lifted_at for t in from_suspect)
        assert [t for t in from_suspect if severed_at + 2 * MINUTE < t < lifted_at] == []
        for gateway in gateways:
            assert fleet.nodes[gateway].stats.rejected > 0  # it kept coming, and was refused
            kinds = [type(a).__name__ for _, a in faults[gateway].isolation_log]
            assert kinds == ["Severed", "Lifted"]
        # The rest undisturbed: region 2's members were accepted all along at both gateways.
        for gateway in gateways:
            during = [t for t, n in accepted[gateway] if region_of(n) == 2]
            assert any(severed_at + 2 * MINUTE < t < lifted_at for t in during)
        # Lifting restores the suspect region's traffic at both gateways.
        for gateway in gateways:
            assert any(t > lifted_at and region_of(n) == suspect for t, n in accepted[gateway])
        # Its lease revoked at the dock authority, its reservations reclaimed at each boundary.
        revokes = [
            (m.message, to) for m, to in cell_faults.sent if isinstance(m.message, LeaseRevoke)
        ]
        assert [(m.resource, to) for m, to in revokes] == [("cell-0/dock-0", lessee)]
        assert revokes[0][0].header.issued_at - severed_at <= 2 * MINUTE
        assert coordinators[0].authority.state("cell-0/dock-0") is not ResourceState.HELD
        assert sorted(g for g, t in reclaimed if t == target) == sorted((*gateways, dock_authority))
        nursery.cancel_scope.cancel()
