"""The issue's scenarios in virtual time, sans-IO end to end: the release authority's rollout,
every node's manifest check, fetch planner and authority table, over the fleet model of
release_fleet.py (3 regions x 4 cells of a coordinator and three members).

What the runtime will do over real links is done here by a small driver: an InstallShadow
makes the nodes of those cells (and the gateways on the way) want the release; grants and roll
backs go to the nodes as signed rollout-stage orders, verified and applied; a cell reports
installed once all its nodes hold it, verified; shadow agreement, the canary gate and health
digests come from the test's idea of whether the release is good.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable

import attrs
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.authority import AuthorityTable, Mode
from fleetwire.protocol.release.census import VersionCensus
from fleetwire.protocol.release.fetch import LinkKind
from fleetwire.protocol.release.manifest import Manifest, Version, assemble, verify_manifest
from fleetwire.protocol.release.messages import stage_order, verify_rollout_stage
from fleetwire.protocol.release.orders import RevocationOrder, verify_revocation
from fleetwire.protocol.release.rollout import (
    CellInstalled,
    GrantAuthority,
    HealthDigest,
    InstallShadow,
    InteractionCases,
    RollBack,
    Rollout,
    RolloutComplete,
    RolloutHalted,
    RolloutPlan,
    ShadowReport,
    Start,
)

from .fleet import DAY, T0, node_key
from .release_fleet import ChunkNetwork, Fleet, build_fleet
from .release_support import PIPELINE, make_release, release_trust

SOAK = 2 * DAY
CANARY = 21  # a cell of region 2: the release crosses both inter-region links for the canary
WAVES = (frozenset({0, 1, 10, 11}), frozenset({2, 3, 12, 13, 20, 22, 23}))


@attrs.define
class Outcome:
    network: ChunkNetwork
    tables: dict[int, AuthorityTable]
    actions: list[object]
    granted: dict[int, set[ContentId]]  # node -> releases it ever gave authority to
    installed_at: dict[int, int]  # cell -> when it reported installed
    now: int


def scenario(
    *,
    shadow_diverges: bool = False,
    canary_degrades: bool = False,
    partitioned: tuple[int, int, int] | None = None,
) -> tuple[Fleet, Manifest, dict[ContentId, bytes], Outcome]:
    fleet = build_fleet(3, 4, 3, random.Random(11), region_edges=[(0, 1), (1, 2)], stray_links=8)
    nodes = [n for n in fleet.region_of if n]
    trust = release_trust(nodes)
    previous, _ = make_release(version=Version(2, 4, 1), seed=b"B 2.4.1")
    manifest, blobs = make_release(version=Version(3, 0, 0), size=8 * 1024, seed=b"B 3.0.0")
    envelope = manifest.sign(node_key(PIPELINE))
    # Every node runs B 2.4.1 with authority before the rollout.
    tables = {node: AuthorityTable() for node in nodes}
    census = VersionCensus()
    for table in tables.values():
        table.install(previous, T0)
        table.grant(previous.release_id, T0)
    for cell, members in fleet.members.items():
        for node in [fleet.coordinators[cell], *members]:
            census.observe(node, cell // 10, cell, [("B", 2)])
    network = ChunkNetwork(fleet, blobs, partitions=[partitioned] if partitioned else [])
    plan = RolloutPlan(
        release_id=manifest.release_id,
        lineage="B",
        version=manifest.version,
        previous=previous.version,
        canary=CANARY,
        waves=WAVES,
        soak=SOAK,
        shadow_samples=200,
        interaction_cases=12,
    )
    rollout = Rollout(plan)
    serials = itertools.count(1)

    def sign_stage(action: GrantAuthority | RollBack, at: int) -> bytes:
        """The release authority's signed rollout-stage order for ``action``."""
        order = stage_order(action, plan, serial=next(serials), issuer=PIPELINE, now=at)
        return order.sign(node_key(PIPELINE))

    now = T0
    wanted: set[int] = set()
    granted: dict[int, set[ContentId]] = {n: {previous.release_id} for n in nodes}
    installed_at: dict[int, int] = {}
    log: list[object] = []
    pending = deque(rollout.handle(Start(census), now))
    while pending:
        action = pending.popleft()
        log.append(action)
        if isinstance(action, InstallShadow):
            for cell in sorted(action.cells):
                path = [fleet.gateways[r] for r in fleet.region_path(cell // 10)]
                for node in [*path, *fleet.cell_nodes(cell)]:
                    if node not in wanted:
                        wanted.add(node)
                        # Each node checks the signed manifest itself before fetching.
                        network.want(node, verify_manifest(envelope, trust, now), now - T0)
            stage_nodes = [n for cell in action.cells for n in fleet.cell_nodes(cell)]
            now = max(now, T0 + network.run(until=_all_hold(network, stage_nodes, manifest)))
            for cell in sorted(action.cells):
                for node in fleet.cell_nodes(cell):
                    planner = network.planners[node]
                    assert planner.ledger.complete(manifest.release_id)
                    assert tables[node].install(manifest, now).mode is Mode.SHADOW
                installed_at[cell] = max(
                    network.completed[n, manifest.release_id] for n in fleet.cell_nodes(cell)
                )
                pending += rollout.handle(CellInstalled(cell), now)
            if action.stage == 0:
                pending += rollout.handle(InteractionCases(CANARY, passed=12, failed=0), now)
            for cell in sorted(action.cells):
                diverged = 3 if shadow_diverges else 0
                pending += rollout.handle(ShadowReport(cell, 200, diverged), now)
        elif isinstance(action, GrantAuthority):
            order = sign_stage(action, now)
            for cell in action.cells:
                for node in fleet.cell_nodes(cell):
                    tables[node].apply_stage(verify_rollout_stage(order, trust, now), cell, now)
                    granted[node].add(manifest.release_id)
            now += SOAK // 2
            for cell in sorted(action.cells):
                healthy = not (canary_degrades and cell == CANARY)
                pending += rollout.handle(HealthDigest(cell, healthy, now), now)
            now += SOAK // 2
            for cell in sorted(action.cells):
                pending += rollout.handle(HealthDigest(cell, True, now), now)
        elif isinstance(action, RollBack):
            order = sign_stage(action, now)
            for cell in action.cells:
                for node in fleet.cell_nodes(cell):
                    tables[node].apply_stage(verify_rollout_stage(order, trust, now), cell, now)  # type: ignore[arg-type]
    outcome = Outcome(network, tables, log, granted, installed_at, now)
    return fleet, manifest, blobs, outcome


def _all_hold(network: ChunkNetwork, nodes: list[int], manifest: Manifest) -> Callable[[], bool]:
    return lambda: all((n, manifest.release_id) in network.completed for n in nodes)


def _outside(fleet: Fleet, cell: int) -> list[int]:
    return [n for n in fleet.region_of if n and n not in fleet.cell_nodes(cell)]


def test_a_release_reaches_every_node_through_a_canary_cell_and_two_waves() -> None:
    fleet, manifest, blobs, outcome = scenario()
    network = outcome.network
    stages = [a for a in outcome.actions if isinstance(a, InstallShadow)]
    assert [s.cells for s in stages] == [frozenset({CANARY}), *WAVES]
    assert isinstance(outcome.actions[-1], RolloutComplete)
    artifact = assemble(manifest, blobs)
    for cell in fleet.members:
        for node in fleet.cell_nodes(cell):
            ledger = network.planners[node].ledger
            assert ledger.complete(manifest.release_id)
            held = {chunk: network.store[node][chunk] for chunk in manifest.distinct_chunks()}
            assert assemble(manifest, held) == artifact  # every chunk verified again
            assert outcome.tables[node].active("B").version == Version(3, 0, 0)  # type: ignore[union-attr]
    gateway_links = [
        pair
        for pair, (kind, _) in fleet.links.items()
        if kind is LinkKind.INTER_REGION and pair <= set(fleet.gateways.values())
    ]
    assert len(gateway_links) == 2
    for pair in gateway_links:
        for chunk in blobs:
            assert network.crossings[pair, chunk] == 1
    assert sum(network.crossings.values()) == 2 * len(blobs)  # stray links never used
    assert not network.refused
    assert all(p.duplicates == 0 for p in network.planners.values())


def test_a_node_partitioned_during_the_rollout_catches_up_and_its_cell_waits_for_it() -> None:
    fleet, _, _, first = scenario()
    # Cut a member of a second-wave cell off during the canary's soak, until long after its
    # wave would have started (about four days in).
    cell = 22
    member = fleet.members[cell][1]
    cut, heal = DAY, 20 * DAY
    fleet, manifest, blobs, outcome = scenario(partitioned=(member, cut, heal))
    assert isinstance(outcome.actions[-1], RolloutComplete)
    done = outcome.network.completed[member, manifest.release_id]
    assert done >= heal
    others = [n for n in fleet.cell_nodes(cell) if n != member]
    assert all(outcome.network.completed[n, manifest.release_id] < 5 * DAY for n in others)
    assert outcome.installed_at[cell] == done  # the cell reported only when it caught up
    assert outcome.tables[member].active("B").version == Version(3, 0, 0)  # type: ignore[union-attr]
    for chunk in blobs:
        assert outcome.network.deliveries[member, chunk] == 1
    assert sum(outcome.network.crossings.values()) == 2 * len(blobs)
    assert first.now < outcome.now


def test_a_release_whose_shadow_outputs_diverge_is_halted_in_the_canary_and_never_has_authority() -> (
    None
):
    fleet, manifest, _, outcome = scenario(shadow_diverges=True)
    assert [type(a) for a in outcome.actions] == [InstallShadow, RollBack, RolloutHalted]
    for node, releases in outcome.granted.items():
        assert manifest.release_id not in releases, node
    for node in _outside(fleet, CANARY):
        assert manifest.release_id not in outcome.tables[node].installed()
    for node in fleet.cell_nodes(CANARY):
        assert outcome.tables[node].active("B").version == Version(2, 4, 1)  # type: ignore[union-attr]


def test_a_canary_whose_digests_degrade_is_rolled_back_and_no_other_cell_ever_runs_it() -> None:
    fleet, manifest, _, outcome = scenario(canary_degrades=True)
    kinds = [type(a) for a in outcome.actions]
    assert kinds == [InstallShadow, GrantAuthority, RollBack, RolloutHalted]
    rollback = outcome.actions[2]
    assert isinstance(rollback, RollBack) and rollback.cells == {CANARY}
    for node in _outside(fleet, CANARY):
        assert manifest.release_id not in outcome.granted[node]
        assert manifest.release_id not in outcome.tables[node].installed()
    for node in fleet.cell_nodes(CANARY):
        table = outcome.tables[node]
        assert manifest.release_id in outcome.granted[node]  # it ran, in the canary only
        assert table.active("B").version == Version(2, 4, 1)  # type: ignore[union-attr]
        assert table.installed()[manifest.release_id].mode is Mode.SHADOW  # bits kept


def test_after_a_halt_a_revocation_reaches_a_partitioned_cell_ten_days_late() -> None:
    """The release authority follows the halt with a revocation order; a canary node cut off
    for ten days gets it when it heals and applies it on arrival."""
    fleet, manifest, _, outcome = scenario(canary_degrades=True)
    nodes = [n for n in fleet.region_of if n]
    trust = release_trust(nodes)
    order = RevocationOrder(1, outcome.now, PIPELINE, "B", Version(3, 0, 0), "canary degraded")
    envelope = order.sign(node_key(PIPELINE))
    arrival = outcome.now + 10 * DAY
    for node in fleet.cell_nodes(CANARY):
        table = outcome.tables[node]
        table.revoke(verify_revocation(envelope, trust, arrival), arrival)
        assert table.installed()[manifest.release_id].mode is Mode.REVOKED
        assert table.active("B").version == Version(2, 4, 1)  # type: ignore[union-attr]
