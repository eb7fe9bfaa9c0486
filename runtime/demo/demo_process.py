"""One node of ``fleetwire demo --processes``: a real ``fleetwire node`` playing its demo part.

Theory of operation
-------------------
A node's configuration file with a ``[demo]`` table (written by :mod:`.demo_processes`) makes
``fleetwire node`` play that node's part of the demo instead of printing what it receives:

1. the node runs as usual (TCPCLv4 on 127.0.0.1, SQLite store, real clock) and says
   ``node N running`` on standard error;
2. it reads one line ``start <DTN ms>`` from standard input — the run's time 0, the same for
   every process, sent once all of them are up — and waits for it;
3. it starts its lease role and, for a member, the traffic script of
   :class:`~.demo_behaviour.NodeBehaviour`, with every duration divided by ``scale``
   (:class:`~.demo_behaviour.Timing`); it samples its own counters once per scaled hour;
4. after ``days`` of traffic and one more day to drain it writes its :class:`Tally` and its
   samples to ``tally`` as JSON, and the node closes; the parent merges the files.

The bytes the node puts on its links are counted through the node's ``on_transmitted`` hook
(the loopback engine wraps its links in :class:`~.demo.CountingLink` instead), including
sessions that neighbours open to it later.

``[demo]`` keys: ``role`` (``region``, ``cell`` or ``member``), ``members``, ``regions``,
``cells``, ``days``, ``seed``, ``scenarios`` (list), ``scale``, ``tally`` (where to write the
tally; a relative path is taken from the working directory). A missing or mistyped key is a
:class:`~.config.ConfigError` naming it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.lowlevel
from fleetwire.protocol.coordination.containment import Containment
from fleetwire.protocol.messages import Scope

from ..node.config import ConfigError, FileConfig
from ..node.node import Node
from ..roles.lease import CellCoordinator, Member
from .demo import Scenario, on_their_way, start_roles
from .demo_behaviour import DAY, HOUR, NodeBehaviour, Tally, Timing
from .demo_results import SCENARIOS

ROLES = ("region", "cell", "member")


@attrs.frozen
class Part:
    """What the ``[demo]`` table says this node plays."""

    role: str
    scenario: Scenario
    scale: int
    tally: Path


def part_of(table: dict[str, Any], base: Path) -> Part:
    """Check a ``[demo]`` table (module docstring)."""

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        value = table.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            name = "a number" if isinstance(kind, tuple) else kind.__name__
            raise ConfigError(
                f"[demo] needs `{key}` as {name}",
                hint="this table is written by `fleetwire demo --processes`",
            )
        return value

    role = need("role", str)
    if role not in ROLES:
        raise ConfigError(f"[demo] role must be one of {', '.join(ROLES)}, not {role!r}")
    scenarios = tuple(need("scenarios", list))
    for name in scenarios:
        if name not in SCENARIOS:
            raise ConfigError(f"[demo] unknown scenario {name!r}")
    scenario = Scenario(
        nodes=need("members", int),
        regions=need("regions", int),
        cells=need("cells", int),
        days=float(need("days", (int, float))),
        seed=need("seed", int),
        scenarios=scenarios,
    )
    scale = need("scale", int)
    if scale < 1:
        raise ConfigError("[demo] scale must be at least 1")
    return Part(role, scenario, scale, base / need("tally", str))


def count_bytes(node: Node, counts: dict[int, int]) -> None:
    """Count the bytes ``node``'s links take from it, on every link, including sessions that
    neighbours open later (the node's ``on_transmitted`` hook)."""
    number = node.node

    def counted(peer: int, size: int) -> None:
        counts[number] = counts.get(number, 0) + size

    node.on_transmitted = counted


async def read_start() -> int:
    """The run's time 0 from standard input: one line ``start <DTN ms>``."""
    stream = trio.lowlevel.FdStream(sys.stdin.fileno())
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(64)
        if not chunk:
            break
        data += chunk
    words = data.decode("ascii", "replace").split()
    if len(words) != 2 or words[0] != "start" or not words[1].isdigit():
        raise ConfigError(f"expected `start <DTN ms>` on standard input, got {data[:40]!r}")
    return int(words[1])


async def play(node: Node, config: FileConfig) -> None:
    """Play this node's part of the demo on ``node`` (module docstring); write the tally."""
    assert config.demo is not None
    part = part_of(config.demo, Path("."))
    scenario, timing = part.scenario, Timing(part.scale)
    tally = Tally()
    count_bytes(node, tally.node_bytes)
    start = await read_start()
    await trio.sleep_until(node.clock.to_trio(start))
    number = node.node
    cell = scenario.cell_of_coordinator(number)
    behaviour = NodeBehaviour(
        node, scenario, tally, start=start, timing=timing,
        parent=scenario.region_of(cell) if cell is not None else None,
        containment=Containment(number, Scope.CELL, cell, node.next_message_sequence)
        if "fault" in scenario.scenarios and cell is not None
        else None,
    )  # fmt: skip
    node.on_refused = behaviour.on_refused
    roles: dict[int, Member] = {}
    coordinators: dict[int, CellCoordinator] = {}
    samples: list[dict[str, Any]] = []
    end = start + timing.ms(scenario.days * DAY)
    drained = start + timing.ms((scenario.days + 1) * DAY)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(behaviour.listen)
        async with trio.open_nursery() as traffic:
            await start_roles(
                scenario, {number: node}, {number: behaviour}, timing, traffic, roles, coordinators
            )
            nursery.start_soon(sample, node, behaviour, roles, coordinators, samples, start)
            if peers := behaviour.version_peers():
                traffic.start_soon(behaviour.advertise_versions, peers)
            if number in roles:
                member_cell = scenario.members()[number]
                traffic.start_soon(
                    behaviour.member,
                    member_cell,
                    scenario.cell_coordinator(member_cell),
                    roles[number],
                )
            await trio.sleep_until(node.clock.to_trio(end))
            traffic.cancel_scope.cancel()
        await trio.sleep_until(node.clock.to_trio(drained) + 0.05)
        nursery.cancel_scope.cancel()
    part.tally.write_text(json.dumps(to_json(tally, samples)), encoding="utf-8")


async def sample(
    node: Node,
    behaviour: NodeBehaviour,
    roles: dict[int, Member],
    coordinators: dict[int, CellCoordinator],
    samples: list[dict[str, Any]],
    start: int,
) -> None:
    """Once per scaled hour: this node's counters, as the loopback engine's sampler keeps."""
    seen, timing, scenario = behaviour.seen, behaviour.timing, behaviour.scenario
    hours = math.ceil((scenario.days + 1) * 24)
    for k in range(1, hours + 1):
        await trio.sleep_until(node.clock.to_trio(start + timing.ms(k * HOUR)))
        role = roles.get(node.node)
        member_cell = scenario.members().get(node.node)
        coordinator = coordinators.get(node.node)
        samples.append(
            {
                "bytes": sum(seen.node_bytes.values()),
                "in_flight": await on_their_way(node.store),
                "leases_held": 0
                if role is None or member_cell is None
                else sum(
                    1
                    for d in range(scenario.docks_per_cell)
                    if role.use(f"cell-{member_cell}/dock-{d}") is not None
                ),
                "dock_use_ms": seen.dock_use_ms,
                "cell0_dock_use_ms": seen.cut_cell_dock_use_ms,
                "exceptions_open": seen.exceptions_open,
                "authority": None if coordinator is None else coordinator.active(),
                "quarantined": 0
                if behaviour.containment is None
                else len(behaviour.containment.quarantined()),
            }
        )
        if behaviour.containment is not None:
            behaviour.containment.tick(node.now())
        seen.node_bytes.clear()
        seen.dock_use_ms = seen.cut_cell_dock_use_ms = 0


def to_json(tally: Tally, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A tally as plain JSON (:func:`~.demo_processes.merge` reads it back)."""
    trace = [[type(r).__name__, *attrs.astuple(r)] for r in tally.lease_trace]
    return {
        "sent": dict(tally.sent),
        "delivered": dict(tally.delivered),
        "latency_ms": {k: v for k, v in tally.latency_ms.items()},
        "grants": tally.grants,
        "lease_trace": trace,
        "waits_ms": tally.waits_ms,
        "given_up": tally.given_up,
        "escalations": tally.escalations,
        "cluster_escalations": tally.cluster_escalations,
        "quarantined": dict(tally.quarantined),
        "quarantined_faulty": tally.quarantined_faulty,
        "quarantined_healthy": tally.quarantined_healthy,
        "events": [attrs.astuple(e) for e in tally.events],
        "digests": dict(tally.digests),
        "digest_bytes": tally.digest_bytes,
        "digests_anomalous": tally.digests_anomalous,
        "digests_refused": tally.digests_refused,
        "digests_unwritable": tally.digests_unwritable,
        "samples": tally.samples,
        "detail_bytes": tally.detail_bytes,
        "versions": dict(tally.versions),
        "intervals": samples,
    }
