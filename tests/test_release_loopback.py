"""The issue's scenarios on real nodes: Trio nodes on loopback links in MockClock time, every
release object a bundle, every chunk verified and kept on disk (release_loopback.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import trio
import trio.testing
from fleetwire.protocol.release.authority import Mode
from fleetwire.protocol.release.carriage import Kind
from fleetwire.protocol.release.manifest import Version
from fleetwire.protocol.release.orders import PolicyTable, RevocationOrder
from fleetwire.protocol.release.rollout import (
    GrantAuthority,
    InstallShadow,
    RollBack,
    RolloutState,
)

from .fleet import DAY, T0, node_key
from .release_loopback import (
    CANARY,
    HOUR,
    NEW,
    OPERATOR,
    OPERATOR_UNTIL,
    PREVIOUS,
    STRAY,
    WAVES,
    LoopbackFleet,
    cell_nodes,
    cells,
    coordinator,
    gateway,
    loopback_fleet,
    members,
)
from .release_support import PIPELINE, make_release

#: A hang fails instead of spinning: far more simulated seconds than any scenario needs.
LIMIT_S = 40 * DAY / 1000


async def run_until(fleet: LoopbackFleet, done: object, limit_ms: int) -> None:
    """Let simulated time pass until ``done()`` or ``limit_ms`` after T0."""
    assert callable(done)
    while not done() and fleet.now() < T0 + limit_ms:
        await trio.sleep(3600)


def finished(fleet: LoopbackFleet) -> bool:
    rollout = fleet.authority.rollout
    return rollout is not None and rollout.state in (
        RolloutState.COMPLETE, RolloutState.ROLLED_BACK,
    )  # fmt: skip


def everyone(fleet: LoopbackFleet) -> list[int]:
    return [n for c in cells() for n in cell_nodes(c)]


async def test_a_release_reaches_every_node_through_a_canary_cell_and_two_waves(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    with trio.fail_after(LIMIT_S):
        async with loopback_fleet(tmp_path) as fleet:
            await fleet.authority.start(fleet.plan(), fleet.census())
            await run_until(fleet, lambda: finished(fleet), 10 * DAY)
            rollout = fleet.authority.rollout
            assert rollout is not None and rollout.state is RolloutState.COMPLETE, rollout.reason
            # Canary first, then the two waves, each installed before it was granted.
            stages = [a for _, a in fleet.authority.history if isinstance(a, InstallShadow)]
            assert [s.cells for s in stages] == [frozenset({CANARY}), *WAVES]
            grants = [at for at, a in fleet.authority.history if isinstance(a, GrantAuthority)]
            assert len(grants) == 3 and all(b - a >= DAY for a, b in itertools.pairwise(grants))
            manifest = fleet.manifest
            for node in everyone(fleet):
                assert fleet.active(node) == NEW, node
                assert fleet.roles[node].table.installed()[manifest.release_id].mode is Mode.ACTIVE
                # Every chunk is on the node's disk and hashes to its id as it is read back.
                for cid, data in fleet.blobs.items():
                    assert fleet.stores[node].get_chunk(cid) == data
            # Each chunk crossed each inter-region link between gateways exactly once, and the
            # stray member-to-member link between regions carried none.
            for a, b in ((gateway(0), gateway(1)), (gateway(1), gateway(2))):
                for cid in fleet.blobs:
                    assert fleet.crossings[a, b, cid] == 1, (a, b, cid.short())
            assert sum(fleet.crossings.values()) == 2 * len(fleet.blobs)
            assert not any(fleet.crossings[x, y, c] for x, y in (STRAY, STRAY[::-1])
                           for c in fleet.blobs)  # fmt: skip
            assert not [r for n in everyone(fleet) for r in fleet.roles[n].refusals]


async def test_a_node_partitioned_during_the_rollout_catches_up_when_it_heals(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    node, other = members(12)  # cell 12 is in the second wave
    cut, heal = T0 + 12 * HOUR, T0 + 4 * DAY
    cuts = [(node, coordinator(12), cut, heal), (node, other, cut, heal)]
    with trio.fail_after(LIMIT_S):
        async with loopback_fleet(tmp_path, cuts=cuts) as fleet:
            await fleet.authority.start(fleet.plan(), fleet.census())
            await run_until(fleet, lambda: finished(fleet), 10 * DAY)
            rollout = fleet.authority.rollout
            assert rollout is not None and rollout.state is RolloutState.COMPLETE, rollout.reason
            release_id = fleet.manifest.release_id
            # The cut-off node fetched nothing before the heal, caught up after it, and its cell
            # (a silent node holds its stage) was granted authority only then.
            installed = fleet.roles[node].installed_at[release_id]
            assert heal <= installed < heal + HOUR
            wave_two = [at for at, a in fleet.authority.history
                        if isinstance(a, GrantAuthority) and 12 in a.cells]  # fmt: skip
            assert wave_two and wave_two[0] > installed
            for cid, data in fleet.blobs.items():
                assert fleet.stores[node].get_chunk(cid) == data
            assert all(fleet.active(n) == NEW for n in everyone(fleet))
            # The partition did not make any chunk cross a region link twice.
            assert sum(fleet.crossings.values()) == 2 * len(fleet.blobs)


async def test_a_canary_whose_digests_degrade_is_rolled_back_and_no_other_cell_runs_it(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    with trio.fail_after(LIMIT_S):
        async with loopback_fleet(tmp_path, fault="degrades") as fleet:
            await fleet.authority.start(fleet.plan(), fleet.census())
            await run_until(fleet, lambda: finished(fleet), 10 * DAY)
            rollout = fleet.authority.rollout
            assert rollout is not None and rollout.state is RolloutState.ROLLED_BACK
            assert "unhealthy digest" in rollout.reason
            (rollback,) = [a for _, a in fleet.authority.history if isinstance(a, RollBack)]
            assert rollback.cells == frozenset({CANARY}) and rollback.to == PREVIOUS
            await trio.sleep(3 * DAY / 1000)  # nothing more happens afterwards
            release_id = fleet.manifest.release_id
            for node in cell_nodes(CANARY):
                assert fleet.ever_granted(node, release_id)  # it did run with authority...
                assert fleet.active(node) == PREVIOUS  # ... and was rolled back
                assert fleet.roles[node].table.installed()[release_id].mode is Mode.SHADOW
            outside = [n for n in everyone(fleet) if n not in cell_nodes(CANARY)]
            for node in outside:
                assert not fleet.ever_granted(node, release_id), node
                assert release_id not in fleet.roles[node].installed_at
                assert fleet.active(node) == PREVIOUS


async def test_a_release_whose_shadow_outputs_diverge_never_gets_authority(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    with trio.fail_after(LIMIT_S):
        async with loopback_fleet(tmp_path, fault="diverges") as fleet:
            await fleet.authority.start(fleet.plan(), fleet.census())
            await run_until(fleet, lambda: finished(fleet), 10 * DAY)
            rollout = fleet.authority.rollout
            assert rollout is not None and rollout.state is RolloutState.ROLLED_BACK
            assert "diverged" in rollout.reason
            assert not [a for _, a in fleet.authority.history if isinstance(a, GrantAuthority)]
            release_id = fleet.manifest.release_id
            for node in everyone(fleet):
                assert not fleet.ever_granted(node, release_id), node
                assert fleet.active(node) == PREVIOUS


async def test_a_revocation_reaching_a_cell_ten_days_into_a_partition_acts_on_arrival(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """The order is signed by an operator key that expires while the cell is cut off: it is
    accepted on arrival because the key was good when the order was issued (spec v3 release
    §5.3), and the cell's authority falls back to the standby release at once."""
    mock_clock.autojump_threshold = 0
    cell = 3
    cut, heal = T0 + 4 * DAY, T0 + 14 * DAY
    with trio.fail_after(LIMIT_S):
        async with loopback_fleet(
            tmp_path, cuts=[(coordinator(cell), gateway(0), cut, heal)]
        ) as fleet:
            await fleet.authority.start(fleet.plan(), fleet.census())
            await run_until(fleet, lambda: finished(fleet), 4 * DAY)
            rollout = fleet.authority.rollout
            assert rollout is not None and rollout.state is RolloutState.COMPLETE
            await run_until(fleet, lambda: False, 5 * DAY)
            order = RevocationOrder(
                serial=1, issued_at=fleet.now(), issuer=OPERATOR, lineage="B", version=NEW,
                reason="control loop oscillates under load",
            )  # fmt: skip
            assert fleet.now() < OPERATOR_UNTIL < heal
            await fleet.authority.order(Kind.AUTHORITY_REVOCATION, order.sign(node_key(OPERATOR)))
            await run_until(fleet, lambda: False, 6 * DAY)
            release_id = fleet.manifest.release_id
            outside = [n for n in everyone(fleet) if n not in cell_nodes(cell)]
            for node in outside:
                assert fleet.active(node) == PREVIOUS, node
            for node in cell_nodes(cell):  # cut off: still running the release
                assert fleet.active(node) == NEW
            await run_until(fleet, lambda: False, 15 * DAY)
            for node in cell_nodes(cell):
                withdrawn = [at for at, r, granted in fleet.roles[node].authority_log
                             if r == release_id and not granted]  # fmt: skip
                assert len(withdrawn) == 1 and heal <= withdrawn[0] < heal + 60_000, node
                assert fleet.active(node) == PREVIOUS  # the standby release took over
                mode = fleet.roles[node].table.installed()[release_id].mode
                assert mode is Mode.REVOKED
                assert not fleet.roles[node].refusals  # key-expired would have been refused
                for cid, data in fleet.blobs.items():  # the bits stay installed
                    assert fleet.stores[node].get_chunk(cid) == data


async def test_a_bad_chunk_a_manifest_without_the_release_role_and_an_older_policy_are_refused(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    target = members(CANARY)[0]
    with trio.fail_after(LIMIT_S):
        async with loopback_fleet(tmp_path) as fleet:
            # The canary's coordinator sends one chunk with a flipped bit to a member.
            fleet.corrupt_next.add((coordinator(CANARY), target))
            await fleet.authority.start(fleet.plan(), fleet.census())
            await run_until(fleet, lambda: finished(fleet), 10 * DAY)
            rollout = fleet.authority.rollout
            assert rollout is not None and rollout.state is RolloutState.COMPLETE
            ((_, _, bad),) = fleet.corrupted
            codes = [r.code for r in fleet.roles[target].refusals]
            assert codes == ["chunk-hash-mismatch"]
            assert fleet.stores[target].get_chunk(bad) == fleet.blobs[bad]  # fetched again
            release_id = fleet.manifest.release_id
            role = fleet.roles[target]
            before = (role.table.installed(), fleet.stores[target].held(), fleet.active(target))
            # A manifest signed by a node whose credential lacks the release role.
            rogue = members(0)[1]
            manifest, _ = make_release(version=Version(4, 0, 0), seed=b"rogue", issuer=rogue)
            await fleet.authority.send_to(target, Kind.MANIFEST, manifest.sign(node_key(rogue)))
            # A policy table, then an older one.
            newer = PolicyTable(serial=2, issued_at=fleet.now(), issuer=PIPELINE,
                                flags={"wide-search": True})  # fmt: skip
            older = PolicyTable(serial=1, issued_at=fleet.now(), issuer=PIPELINE,
                                flags={"wide-search": False})  # fmt: skip
            await fleet.authority.send_to(target, Kind.POLICY_TABLE, newer.sign(node_key(PIPELINE)))
            await trio.sleep(HOUR / 1000)
            await fleet.authority.send_to(target, Kind.POLICY_TABLE, older.sign(node_key(PIPELINE)))
            await trio.sleep(HOUR / 1000)
            codes = [r.code for r in role.refusals]
            assert codes == ["chunk-hash-mismatch", "release-signer-unauthorised", "policy-stale"]
            assert role.table.flag("wide-search") and role.table.policy is not None
            assert role.table.policy.serial == 2
            # Nothing installed was lost, nothing of the refused objects was kept.
            assert (role.table.installed(), fleet.stores[target].held(), fleet.active(target)) \
                == before  # fmt: skip
            assert manifest.release_id not in fleet.stores[target].manifests()
            assert release_id in fleet.stores[target].manifests()
