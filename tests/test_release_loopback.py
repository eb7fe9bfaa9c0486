"""The issue's scenarios on real nodes: Trio nodes on loopback links in MockClock time, every
release object a bundle, every chunk verified and kept on disk (release_loopback.py)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from fleetwire.protocol.release.authority import Mode
from fleetwire.protocol.release.rollout import (
    GrantAuthority,
    InstallShadow,
    RollBack,
    RolloutState,
)

from .fleet import DAY, T0
from .release_loopback import (
    CANARY,
    HOUR,
    NEW,
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
            assert len(grants) == 3 and all(b - a >= DAY for a, b in zip(grants, grants[1:]))
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
