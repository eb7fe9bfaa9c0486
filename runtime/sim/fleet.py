"""A simulated fleet: cells of nodes under coordinators, under one region hub, with traffic.

Theory of operation
-------------------
:func:`build_fleet` makes ``nodes`` agents in a two-level tree (DESIGN.md "Fleet shape"):
node ``1`` is the region coordinator (the hub); cells of ``cell_size`` nodes each have their
first node as cell coordinator. Members link to their coordinator, coordinators to the hub,
over :class:`~.engine.LinkModel` s; every agent routes by the one shared hierarchy (member →
cell coordinator → hub and down again), so a message inside a cell takes one or two hops and
one to another cell four.

Keys come from the seed (a fleet root and one Ed25519 key per node), every node has a
root-signed credential (coordinators the coordinator role), and all agents share one trust
store — in one process they would all hold the same one; a fleet of separate machines holds a
copy each.

:func:`add_traffic` gives every node a Poisson stream of ``per_node_per_day`` messages of
all four families (capability advertisements, commitment offers, exception reports, lease
claims), most to its own coordinator (or, for a coordinator, to a member), the rest to a
random node of another cell.

Randomness is per node: each node's traffic and each member's lease work draw from their own
``random.Random`` seeded by (seed, purpose, node) (:meth:`Fleet.random_for`), so what a node
does depends on the seed and its own history, not on the order in which other nodes' events
ran.

**Partitions** (``build_fleet(..., part=Part(index, count))``, for :mod:`.parallel`): the
fleet's cells are split into ``count`` contiguous runs, the hub going with part 0 (counted as
``hub_weight`` cells); a cell never straddles two parts. Everything every part must agree on
is made in full — the tree, every node's key and credential, the trust store — but only the
part's own agents, links and roles are built. A link from a held node to one held elsewhere is
connected one way (its transfers run here) and heard the other way (only its light time, for
acknowledgements). With ``part=None`` (or one part) the whole fleet is held, as before.

**Coordination roles** (``build_fleet(..., leases=LeaseSetup())``): the lease roles of
:mod:`fleetwire.protocol.coordination.lease_roles` run inside the agents as handlers — the
hub a :class:`RegionRole` granting each cell's authority lease, each coordinator a
:class:`CellRole` (holding that lease from the hub and, while it does, its cell's lease
authority), each member a :class:`MemberRole`. :func:`add_lease_work` is the members'
application: each in turn wants one of its cell's few shared resources (so members queue for
them), uses it in short operations under the fencing token it is given, and releases it after
a while. Every grant the authorities send and every use a member makes is recorded in
``Fleet.trace`` for :func:`fleetwire.protocol.coordination.invariants.check`; with leases on,
:func:`add_traffic` leaves the lease family to the roles (its stream carries the other three).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import attrs
from fleetwire.protocol.agent.actions import Sent
from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.routing import Hierarchy
from fleetwire.protocol.coordination import invariants
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig
from fleetwire.protocol.coordination.lease_holder import HolderConfig, HolderState
from fleetwire.protocol.coordination.lease_roles import CellRole, MemberRole, RegionRole
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionCode,
    ExceptionReport,
    Header,
    LeaseClaim,
    LeaseGrant,
    Message,
    Scope,
    Terms,
)
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

from .engine import LinkModel, Simulator

__all__ = [
    "Fleet",
    "LeaseSetup",
    "Part",
    "add_lease_work",
    "add_traffic",
    "build_fleet",
    "share_cells",
]

DAY_MS = 86_400_000
HUB = 1


@attrs.frozen
class LeaseSetup:
    """The lease roles' timing in a simulated fleet (all DTN ms)."""

    #: Bound on clock error between nodes (spec §6.4); the simulator's clocks agree, but
    #: the holders still stop this long before a grant's end.
    max_drift_ms: int = 1_000
    #: A member's lease term (renewed while it holds the resource).
    member_term_ms: int = 3_600_000
    #: The cell coordinators' authority lease term (renewed while they live).
    authority_term_ms: int = 6 * 3_600_000
    #: Shared resources per cell: members queue for them.
    resources_per_cell: int = 8
    #: A member holds a resource this long (on average) before releasing it, and rests this
    #: long (on average) before wanting one again.
    hold_ms: int = 3_600_000
    rest_ms: int = 2 * 3_600_000
    #: While it holds a resource, a member runs an operation this often, this long.
    use_every_ms: int = 20 * 60_000
    use_ms: int = 60_000
    #: A holder resends an unanswered claim or renewal this often. A queued claim is not
    #: answered until its turn, so this paces a waiting member's resends (hours of waiting
    #: at one round trip apart would be thousands of claims).
    retry_ms: int = 15 * 60_000
    #: Renew this long before a grant's usable end (two retries fit in it).
    renew_lead_ms: int = 40 * 60_000


@attrs.frozen
class Part:
    """Which share of a fleet split across processes this build holds (module docstring)."""

    index: int
    count: int
    #: The hub's load counted in cells, when the cells are shared out.
    hub_weight: float = 1.0


def share_cells(coordinators: list[int], count: int, hub_weight: float = 1.0) -> dict[int, int]:
    """Coordinator → part index: contiguous runs of cells of about equal weight, the hub
    (weighing ``hub_weight`` cells) in part 0."""
    total = len(coordinators) + hub_weight
    shares: dict[int, int] = {}
    weight = hub_weight
    for coordinator in coordinators:
        shares[coordinator] = min(count - 1, int((weight + 0.5) * count / total))
        weight += 1
    return shares


@attrs.define
class Fleet:
    """A built fleet: the simulator, every node's key, the tree, and (with leases) the roles
    and the trace of grants and uses."""

    sim: Simulator
    keys: dict[int, SigningKey]
    coordinator_of: dict[int, int]
    members: dict[int, list[int]]
    trust: TrustStore
    leases: LeaseSetup | None = None
    region: RegionRole | None = None
    cells: dict[int, CellRole] = attrs.field(factory=dict)
    holders: dict[int, MemberRole] = attrs.field(factory=dict)
    trace: list[invariants.Record] = attrs.field(factory=list)
    seed: int = 0
    #: Every node of the fleet, held here or not.
    nodes: list[int] = attrs.field(factory=list)
    #: Node → the part holding it (all 0 when the fleet is not split).
    part_of: dict[int, int] = attrs.field(factory=dict)
    #: The part built here (``None``: the whole fleet).
    part: Part | None = None

    def random_for(self, purpose: str, node: int) -> random.Random:
        """The draws of one node's ``purpose`` (traffic, lease work…), the same whichever
        part holds it."""
        return random.Random(f"{purpose} {self.seed} {node}")

    def holds(self, node: int) -> bool:
        """Whether this build holds ``node``'s agent."""
        return node in self.sim.agents

    def check_leases(self) -> invariants.Report:
        """The invariant checker's verdict on the trace (mutual exclusion, token order…)."""
        return invariants.check(self.trace)


def _key(seed: int, node: int) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"sim %d node %d" % (seed, node)).digest())


def build_fleet(
    nodes: int,
    *,
    seed: int,
    start: int,
    cell_size: int = 20,
    member_link: LinkModel | None = None,
    backbone_link: LinkModel | None = None,
    bundle_lifetime_ms: int = DAY_MS,
    expiry_granularity_ms: int = 3_600_000,
    leases: LeaseSetup | None = None,
    part: Part | None = None,
) -> Fleet:
    """Build the agents and links of a ``nodes``-node fleet (module docstring); with
    ``leases``, the lease roles run in the agents; with ``part``, only that part's."""
    member_link = member_link or LinkModel(owlt_ms=50, rate_bps=1_000_000)
    backbone_link = backbone_link or LinkModel(owlt_ms=1_300, rate_bps=10_000_000)
    root = SigningKey.from_seed(hashlib.sha256(b"sim %d root" % seed).digest())
    trust = TrustStore([root.public])
    keys = {node: _key(seed, node) for node in range(1, nodes + 1)}
    coordinator_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    parents: dict[int, int] = {}
    others = list(range(2, nodes + 1))
    for first in range(0, len(others), cell_size):
        cell = others[first : first + cell_size]
        coordinator = cell[0]
        parents[coordinator] = HUB
        members[coordinator] = cell[1:]
        for member in cell[1:]:
            coordinator_of[member] = coordinator
            parents[member] = coordinator
    for node, key in keys.items():
        if node == HUB:
            roles = [Role.NODE, Role.REGION_COORDINATOR]
        elif node in members:
            roles = [Role.NODE, Role.CELL_COORDINATOR]
        else:
            roles = [Role.NODE]
        trust.add_credential(
            issue_credential(
                root, node=node, public_key=key.public, roles=roles, not_before=start - DAY_MS,
                not_after=start + 365 * DAY_MS, serial=node,
                cell=node if node in members else coordinator_of.get(node),
                region=1,
            ),
            start,
        )  # fmt: skip
    hierarchy = Hierarchy(parents)
    shares = share_cells(list(members), part.count, part.hub_weight) if part else {}
    part_of = {node: shares.get(node, shares.get(parents.get(node, 0), 0)) for node in keys}
    here = part.index if part else 0
    sim = Simulator(seed=seed, start=start)
    for node, key in keys.items():
        if part_of[node] != here:
            continue
        config = AgentConfig(
            node=node, key=key, trust=trust, hierarchy=hierarchy,
            bundle_lifetime_ms=bundle_lifetime_ms, expiry_granularity_ms=expiry_granularity_ms,
        )  # fmt: skip
        sim.add(BundleAgent(config, MemoryAgentStore()))
    for coordinator, cell in members.items():
        if part_of[coordinator] == part_of[HUB] == here:
            sim.connect(coordinator, HUB, backbone_link)
        elif part_of[coordinator] == here:  # the hub is held elsewhere
            sim.connect(coordinator, HUB, backbone_link, both_ways=False)
            sim.hear_from(HUB, coordinator, backbone_link)
        elif part_of[HUB] == here:  # the cell is held elsewhere
            sim.connect(HUB, coordinator, backbone_link, both_ways=False)
            sim.hear_from(coordinator, HUB, backbone_link)
        if part_of[coordinator] == here:
            for member in cell:
                sim.connect(member, coordinator, member_link)
    fleet = Fleet(
        sim, keys, coordinator_of, members, trust, leases,
        seed=seed, nodes=sorted(keys), part_of=part_of, part=part,
    )  # fmt: skip
    if leases is not None:
        _attach_lease_roles(fleet, leases, member_link, backbone_link)
    return fleet


def _attach_lease_roles(
    fleet: Fleet, leases: LeaseSetup, member_link: LinkModel, backbone_link: LinkModel
) -> None:
    sim, drift = fleet.sim, leases.max_drift_ms
    # A round trip to the authority is far shorter than the retry period on either link.
    assert 2 * max(member_link.owlt_ms, backbone_link.owlt_ms) < leases.retry_ms
    holding = HolderConfig(
        max_drift_ms=drift, renew_lead_ms=leases.renew_lead_ms, retry_ms=leases.retry_ms
    )
    region = fleet.region = RegionRole(
        HUB, AuthorityConfig(max_drift_ms=drift, max_term_ms=leases.authority_term_ms)
    )
    if fleet.holds(HUB):
        sim.attach(HUB, region)
    for coordinator in fleet.members:
        if not fleet.holds(coordinator):
            continue
        role = fleet.cells[coordinator] = CellRole(
            coordinator, cell=coordinator, region=HUB,
            authority_config=AuthorityConfig(max_drift_ms=drift,
                                             max_term_ms=leases.member_term_ms),
            holder_config=holding,
            authority_term_ms=leases.authority_term_ms,
            last_epoch=0,  # a first start: it never acted in any epoch
        )  # fmt: skip
        sim.attach(coordinator, role)
    for member, coordinator in fleet.coordinator_of.items():
        if not fleet.holds(member):
            continue
        holder = fleet.holders[member] = MemberRole(member, (coordinator,), holding)
        sim.attach(member, holder)
    trace = fleet.trace

    def on_sent(sim: Simulator, node: int, sent: Sent) -> None:
        message = sent.message.message
        if isinstance(message, LeaseGrant):
            trace.append(invariants.Granted(
                message.resource, message.holder, message.fencing_token, message.expires_at,
                node, sim.now, sim.now,
            ))  # fmt: skip

    sim.on_sent = on_sent


def add_lease_work(fleet: Fleet, *, until: int) -> None:
    """Every member's application (module docstring): want, use, release, rest, again."""
    leases = fleet.leases
    if leases is None:
        raise ValueError("the fleet was built without leases")
    sim, trace = fleet.sim, fleet.trace

    def work(
        member: int, role: MemberRole, rng: random.Random
    ) -> Callable[[Simulator], int | None]:
        cell = fleet.coordinator_of[member]
        resource = ""
        release_at = 0

        def step(sim: Simulator) -> int | None:
            nonlocal resource, release_at
            now = sim.now
            role.notices.clear()  # this application learns by trying to use the lease
            if not resource:  # resting: want one of the cell's resources
                resource = f"dock/{cell}/{rng.randrange(leases.resources_per_cell)}"
                release_at = now + int(rng.expovariate(1 / leases.hold_ms))
                sim.act(member, role, role.want(resource, leases.member_term_ms, now))
                at = now + leases.use_every_ms
            elif now >= release_at and role.holder.state(resource) is not HolderState.CLAIMING:
                sim.act(member, role, role.release(resource, now))
                resource = ""
                at = now + int(rng.expovariate(1 / leases.rest_ms))
            else:
                token = role.use(resource, now, leases.use_ms)
                if token is not None:
                    trace.append(invariants.Used(
                        resource, member, token, now, now + leases.use_ms, now
                    ))  # fmt: skip
                at = now + leases.use_every_ms
            return at if at <= until else None

        return step

    for member, role in sorted(fleet.holders.items()):
        rng = fleet.random_for("lease work", member)
        first = sim.now + int(rng.expovariate(1 / leases.rest_ms))
        sim.every(first, work(member, role, rng))


def _message(kind: int, node: int, now: int, sequence: int, to: int) -> Message:
    header = Header(issuer=node, issued_at=now, sequence=sequence)
    if kind == 0:
        return CapabilityAdvertisement(
            header=header, capabilities=(Capability("refine", 40, "t/day", now, now + DAY_MS),),
            versions=(1, 1), lineage="B",
        )  # fmt: skip
    if kind == 1:
        return Commitment(
            header=header, state=CommitmentState.OFFERED,
            terms=Terms(node, to, "deliver/refined-carbon", 120, "t", now + DAY_MS),
        )  # fmt: skip
    if kind == 2:
        return ExceptionReport(
            header=header, code=ExceptionCode.THERMAL, severity=3, scope=Scope.NODE,
            scope_id=node,
        )  # fmt: skip
    return LeaseClaim(header=header, resource=f"dock/{to}", term_ms=3_600_000)


def add_traffic(
    fleet: Fleet, *, per_node_per_day: float, until: int, local_share: float = 0.8
) -> Callable[[], int]:
    """Schedule every node's message stream up to ``until`` (module docstring); returns a
    function giving the number of messages scheduled so far."""
    sim = fleet.sim
    nodes = fleet.nodes or sorted(sim.agents)
    rate = per_node_per_day / DAY_MS  # messages per ms
    made = [0]

    # With the lease roles on, the lease family is theirs (a claim from nowhere would be
    # granted to a holder that never wanted it).
    families = 3 if fleet.leases is not None else 4

    def stream(node: int, rng: random.Random) -> Callable[[Simulator], int | None]:
        kind = node % families
        # Looked up once, not per message: the tree does not change once built.
        coordinator = fleet.coordinator_of.get(node)  # None: a coordinator or the hub
        own_cell = fleet.members.get(node)

        def next_message(sim: Simulator) -> int | None:
            nonlocal kind
            now = sim.now
            agent = sim.agents[node]
            if rng.random() < local_share:
                if coordinator is not None:
                    to = coordinator
                else:
                    cell = own_cell or [fleet.members[min(fleet.members)][0]]
                    to = cell[rng.randrange(len(cell))] if cell else HUB
            else:
                to = nodes[rng.randrange(len(nodes))]
            if to == node:
                to = HUB if node != HUB else nodes[-1]
            sequence = agent.next_message_sequence(now)
            sim.send_now(node, to, _message(kind, node, now, sequence, to))
            made[0] += 1
            kind = (kind + 1) % families
            at = now + max(1, int(rng.expovariate(rate)))
            return at if at <= until else None

        return next_message

    for node in sorted(sim.agents):
        rng = fleet.random_for("traffic", node)
        first = sim.now + int(rng.expovariate(rate))
        if first <= until:
            sim.every(first, stream(node, rng))
    return lambda: made[0]
