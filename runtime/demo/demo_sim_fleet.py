"""The demo's fleet on the discrete-event simulator: regions of cells, scheduled links, roles.

Theory of operation
-------------------
The simulator engine of ``fleetwire demo`` (:mod:`.demo_sim`) plays the loopback engine's
fleet (:mod:`.demo`) on sans-IO bundle agents (:class:`~.sim.engine.Simulator`) instead of
Trio nodes. This module builds that fleet; it takes from the loopback engine everything that
is not Trio, so the two engines run the same shape:

- **Nodes and keys**: :func:`.demo.fleet_keys` — region coordinators ``1…R``, cell
  coordinators ``10 + cell``, members ``1000 + i`` spread over the cells, each with its
  root-signed credential (region, cell coordinator or node role) in one trust store.
- **Links**: :func:`.demo.contact_plan` — members ⇄ their cell coordinator 30 minutes every
  3 hours (0.5–4 s of light time), cell coordinators ⇄ their region coordinator an hour every
  6 hours (20–35 s), and, for the partition scenario, no contacts between cell 0 and its
  region over the cut. Every ``(from, to)`` pair of the plan becomes one directed simulator
  link whose :class:`~.sim.engine.LinkModel` has the plan's windows, light time and rate,
  and the run's loss.
- **Routing**: the fleet tree (member → cell coordinator → region coordinator) as one shared
  :class:`~fleetwire.protocol.agent.routing.Hierarchy`. It has one root per region — the
  smallest extension of :func:`.sim.fleet.build_fleet`'s single hub: several region hubs, not
  linked to each other, since no default scenario sends anything between regions (the
  isolation scenario, which does, stays on the loopback engine).
- **Roles**: the lease roles of ``protocol/coordination/lease_roles.py`` as agent handlers,
  with the loopback engine's timing (:class:`.demo_behaviour.Timing`): each region
  coordinator a :class:`RegionRole`, each cell coordinator a :class:`CellRole` (the cell's
  dock authority while it holds its authority lease), each member a :class:`MemberRole`.
  The roles here are thin subclasses that tell the engine of every lease message they take
  (:attr:`SimFleet.on_handled`), so it counts deliveries and latencies for the lease family
  as it does for the others.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable

import attrs
from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.handlers import Outgoing
from fleetwire.protocol.agent.routing import Hierarchy
from fleetwire.protocol.coordination.lease_roles import CellRole, MemberRole, RegionRole
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.replay import ReplayPolicy

from ..sim.engine import LinkModel, Simulator
from .demo import START, Scenario, contact_plan, fleet_keys
from .demo_behaviour import HOUR, LIFETIME, Timing

__all__ = ["OnHandled", "SimFleet", "build"]

#: ``(node, signed message, now)``: a role took a lease message addressed to ``node``.
OnHandled = Callable[[int, SignedMessage, int], None]


class _Counted:
    """Mixin for the lease roles: report every message taken, then act as the role."""

    node: int
    report: OnHandled | None = None

    def on_message(self, signed: SignedMessage, now: int) -> list[Outgoing]:
        if self.report is not None:
            self.report(self.node, signed, now)
        return super().on_message(signed, now)  # type: ignore[misc, no-any-return]


class SimRegionRole(_Counted, RegionRole):
    def __init__(self, node: int, *args: object, **kwargs: object) -> None:
        self.node = node
        super().__init__(node, *args, **kwargs)  # type: ignore[arg-type]


class SimCellRole(_Counted, CellRole):
    def __init__(self, node: int, **kwargs: object) -> None:
        self.node = node
        super().__init__(node, **kwargs)  # type: ignore[arg-type]


class SimMemberRole(_Counted, MemberRole):
    def __init__(self, node: int, *args: object) -> None:
        self.node = node
        super().__init__(node, *args)  # type: ignore[arg-type]


@attrs.define
class SimFleet:
    """The built fleet: the simulator, the roles by node, and the tree."""

    sim: Simulator
    scenario: Scenario
    regions: dict[int, SimRegionRole]
    cells: dict[int, SimCellRole]  # by cell number (not node)
    members: dict[int, SimMemberRole]  # by member node
    cell_of: dict[int, int]  # member node → cell
    parents: dict[int, int]
    owlt_max_ms: int


def _links(
    scenario: Scenario, rng: random.Random, light_scale: float
) -> dict[tuple[int, int], LinkModel]:
    """The loopback engine's contact plan as one simulator link per direction, its light
    times times ``light_scale``."""
    windows: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    shape: dict[tuple[int, int], tuple[int, int]] = {}
    for contact in sorted(contact_plan(scenario, rng), key=lambda c: c.sort_key()):
        pair = (contact.from_node, contact.to_node)
        windows[pair].append((contact.start, contact.end))
        shape[pair] = (contact.owlt_ms, contact.rate_bps)
    return {
        pair: LinkModel(
            owlt_ms=round(shape[pair][0] * light_scale),
            rate_bps=shape[pair][1],
            loss=scenario.loss,
            windows=tuple(spans),
        )
        for pair, spans in sorted(windows.items())
    }


def build(
    scenario: Scenario,
    timing: Timing | None = None,
    *,
    region: int | None = None,
    light_scale: float = 1.0,
    watch: Callable[[Simulator], None] | None = None,
    on_handled: OnHandled | None = None,
) -> SimFleet:
    """The agents, links and roles of ``scenario``'s fleet on a fresh simulator.

    ``region`` (0, 1, …; ``None``: all): build only that region — its coordinator, cells
    and members, and the links among them (the regions share no link; module docstring), on
    a simulator seeded for that region. ``light_scale`` multiplies every link's light time.
    ``watch(sim)`` is called before any agent starts (to set the simulator's callbacks, which
    then see the roles' first claims too); ``on_handled`` is told of every lease message a
    role takes."""
    timing = timing or Timing()
    rng = random.Random(scenario.seed)
    # The same draws in the same order as the loopback engine: the same plan and keys.
    links = _links(scenario, rng, light_scale)
    keys, trust = fleet_keys(scenario, rng)
    all_cells = range(scenario.all_cells)
    cell_numbers = [c for c in all_cells if region is None or c // scenario.cells == region]
    members = {m: c for m, c in scenario.members().items() if c in cell_numbers}
    parents = {m: scenario.cell_coordinator(c) for m, c in members.items()}
    parents |= {scenario.cell_coordinator(c): scenario.region_of(c) for c in cell_numbers}
    region_nodes = sorted({scenario.region_of(c) for c in cell_numbers})
    here = set(parents) | set(region_nodes)
    keys = {node: key for node, key in keys.items() if node in here}
    links = {pair: model for pair, model in links.items() if here.issuperset(pair)}
    hierarchy = Hierarchy(parents)
    owlt_max = max((model.owlt_ms for model in links.values()), default=0)
    replay = ReplayPolicy().widened(owlt_max)
    # Each region draws (loss, jitter) from its own stream: a run does not depend on how
    # the regions were spread over processes.
    sim = Simulator(seed=scenario.seed * 1_000_003 + (region or 0), start=START)
    if watch is not None:
        watch(sim)
    for node in sorted(keys):
        config = AgentConfig(
            node=node, key=keys[node], trust=trust, hierarchy=hierarchy,
            bundle_lifetime_ms=LIFETIME, expiry_granularity_ms=HOUR, replay=replay,
        )  # fmt: skip
        sim.add(BundleAgent(config, MemoryAgentStore()))
    for (a, b), model in links.items():
        sim.connect(a, b, model, both_ways=False)
    regions: dict[int, SimRegionRole] = {}
    for node in region_nodes:
        regions[node] = SimRegionRole(node, timing.region_authority())
        regions[node].report = on_handled
        sim.attach(node, regions[node])
    cells: dict[int, SimCellRole] = {}
    for c in cell_numbers:
        node = scenario.cell_coordinator(c)
        prefix = f"cell-{c}/"
        cells[c] = SimCellRole(
            node, cell=c, region=scenario.region_of(c),
            authority_config=timing.cell_authority(), holder_config=timing.coordinator_lease(),
            authority_term_ms=timing.authority_term,
            owns=lambda resource, prefix=prefix: resource.startswith(prefix),
            last_epoch=0,  # a first start: it acted in no epoch before
        )  # fmt: skip
        cells[c].report = on_handled
        sim.attach(node, cells[c])
    roles: dict[int, SimMemberRole] = {}
    for member, c in sorted(members.items()):
        roles[member] = SimMemberRole(
            member, (scenario.cell_coordinator(c),), timing.member_leases()
        )
        roles[member].report = on_handled
        sim.attach(member, roles[member])
    return SimFleet(sim, scenario, regions, cells, roles, members, parents, owlt_max)
