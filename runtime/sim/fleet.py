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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import attrs
from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.routing import Hierarchy
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
    Message,
    Scope,
    Terms,
)
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

from .engine import LinkModel, Simulator

__all__ = ["Fleet", "add_traffic", "build_fleet"]

DAY_MS = 86_400_000
HUB = 1


@attrs.define
class Fleet:
    sim: Simulator
    keys: dict[int, SigningKey]
    coordinator_of: dict[int, int]
    members: dict[int, list[int]]
    trust: TrustStore


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
) -> Fleet:
    """Build the agents and links of a ``nodes``-node fleet (module docstring)."""
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
    sim = Simulator(seed=seed, start=start)
    for node, key in keys.items():
        config = AgentConfig(
            node=node, key=key, trust=trust, hierarchy=hierarchy,
            bundle_lifetime_ms=bundle_lifetime_ms, expiry_granularity_ms=expiry_granularity_ms,
        )  # fmt: skip
        sim.add(BundleAgent(config, MemoryAgentStore()))
    for coordinator, cell in members.items():
        sim.connect(coordinator, HUB, backbone_link)
        for member in cell:
            sim.connect(member, coordinator, member_link)
    return Fleet(sim, keys, coordinator_of, members, trust)


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
    rng = sim.random
    nodes = sorted(sim.agents)
    rate = per_node_per_day / DAY_MS  # messages per ms
    made = [0]

    def stream(node: int) -> Callable[[Simulator], int | None]:
        kind = node % 4

        def next_message(sim: Simulator) -> int | None:
            nonlocal kind
            now = sim.now
            agent = sim.agents[node]
            if rng.random() < local_share:
                if node in fleet.coordinator_of:
                    to = fleet.coordinator_of[node]
                else:
                    cell = fleet.members.get(node) or [fleet.members[min(fleet.members)][0]]
                    to = cell[rng.randrange(len(cell))] if cell else HUB
            else:
                to = nodes[rng.randrange(len(nodes))]
            if to == node:
                to = HUB if node != HUB else nodes[-1]
            sequence = agent.next_message_sequence(now)
            sim.send_at(now, node, to, _message(kind, node, now, sequence, to))
            made[0] += 1
            kind = (kind + 1) % 4
            at = now + max(1, int(rng.expovariate(rate)))
            return at if at <= until else None

        return next_message

    for node in nodes:
        first = sim.now + int(rng.expovariate(rate))
        if first <= until:
            sim.every(first, stream(node))
    return lambda: made[0]
