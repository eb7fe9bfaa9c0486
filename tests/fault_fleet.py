"""A loopback fleet of real Trio nodes for the fault scenarios: regions of cells of members.

Every node is a :class:`~fleetwire.runtime.node.node.Node` with its own key, root-issued credential
(roles, cell, region, lineage) and store, over :class:`LoopbackNetwork` links that are always
open (light time: 1 s member ⇄ cell coordinator, 5 s cell ⇄ region coordinator, 20 s between
region coordinators, the gateways), on Trio's ``MockClock``. Every bundle a node puts on a link
is tapped (:class:`TapLink`), so a test counts real link traffic by the message it carries.

Node numbers: region coordinator of region ``r`` is ``1 + r``; cell coordinator of cell ``c``
is ``10 + c`` (cells ``2r, 2r+1`` in region ``r``); member ``i`` of cell ``c`` is
``1000 + 100c + i``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import trio
from fleetwire.protocol import cose
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.bpv7 import decode_bundle
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import Message, decode_message
from fleetwire.protocol.trust import Role, TrustStore, issue_credential
from fleetwire.runtime.links.link import Link
from fleetwire.runtime.links.loopback import LoopbackNetwork
from fleetwire.runtime.node.node import Node, NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore

START = 820_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
MINUTE = 60_000


@attrs.frozen
class Shape:
    regions: int = 3
    cells_per_region: int = 2
    members_per_cell: int = 20
    #: The first ``b_per_cell`` members of a full cell run lineage "B" (the same share of a
    #: lighter one), the rest "A".
    b_per_cell: int = 15
    #: Members per cell outside region 0, when fewer (a lighter fleet around the one watched).
    members_elsewhere: int | None = None

    def region_coordinator(self, region: int) -> int:
        return 1 + region

    def cell_coordinator(self, cell: int) -> int:
        return 10 + cell

    def region_of_cell(self, cell: int) -> int:
        return cell // self.cells_per_region

    @property
    def cells(self) -> range:
        return range(self.regions * self.cells_per_region)

    def members(self, cell: int) -> list[int]:
        count = self.members_per_cell
        if self.members_elsewhere is not None and self.region_of_cell(cell) != 0:
            count = self.members_elsewhere
        return [1000 + 100 * cell + i for i in range(count)]

    def cell_of(self, node: int) -> int:
        if node >= 1000:
            return (node - 1000) // 100
        if node >= 10:
            return node - 10
        raise ValueError(f"node {node} is a region coordinator, in no cell")

    def region_of(self, node: int) -> int:
        return node - 1 if node < 10 else self.region_of_cell(self.cell_of(node))

    def lineage(self, node: int) -> str:
        if node < 1000:
            return "A"
        cell, index = divmod(node - 1000, 100)
        share = self.b_per_cell * len(self.members(cell)) // self.members_per_cell
        return "B" if index < share else "A"

    def all_nodes(self) -> list[int]:
        nodes = [self.region_coordinator(r) for r in range(self.regions)]
        nodes += [self.cell_coordinator(c) for c in self.cells]
        return nodes + [m for c in self.cells for m in self.members(c)]


class TapLink:
    """A link that records every bundle its node puts on it: (DTN ms, from, to, bytes)."""

    def __init__(self, link: Link, tap: list[tuple[int, int, int, bytes]], now: Callable[[], int]):
        self._link = link
        self._tap = tap
        self._now = now

    local = property(lambda self: self._link.local)
    peer = property(lambda self: self._link.peer)
    is_up = property(lambda self: self._link.is_up)
    incoming = property(lambda self: self._link.incoming)

    async def send(self, bundle: bytes) -> None:
        await self._link.send(bundle)
        self._tap.append((self._now(), self._link.local, self._link.peer, bundle))

    async def wait_up(self) -> None:
        await self._link.wait_up()

    async def wait_down(self) -> None:
        await self._link.wait_down()

    async def aclose(self) -> None:
        await self._link.aclose()


def carried(bundle: bytes) -> Message | None:
    """The message a tapped bundle carries (unverified: the tap only counts), or None."""
    try:
        envelope = cose.parse_sign1(decode_bundle(bundle).payload)
        assert isinstance(envelope.payload, bytes)
        return decode_message(envelope.payload)
    except Exception:
        return None  # a status report or anything that is not a message


@attrs.define
class Fleet:
    shape: Shape
    clock: Clock
    trust: TrustStore
    keys: dict[int, SigningKey]
    nodes: dict[int, Node] = attrs.Factory(dict)
    tap: list[tuple[int, int, int, bytes]] = attrs.Factory(list)

    def now(self) -> int:
        return self.clock.to_dtn(trio.current_time())

    async def until(self, dtn_ms: int) -> None:
        await trio.sleep_until(self.clock.to_trio(dtn_ms))


def _credentials(shape: Shape, rng: random.Random) -> tuple[dict[int, SigningKey], TrustStore]:
    root = SigningKey.from_seed(rng.randbytes(32))
    trust = TrustStore([root.public])
    keys: dict[int, SigningKey] = {}
    for serial, node in enumerate(shape.all_nodes(), 1):
        keys[node] = SigningKey.from_seed(rng.randbytes(32))
        if node < 10:
            roles, cell, region = [Role.NODE, Role.REGION_COORDINATOR], None, node - 1
        elif node < 1000:
            cell = node - 10
            roles, region = [Role.NODE, Role.CELL_COORDINATOR], shape.region_of_cell(cell)
        else:
            roles, cell, region = [Role.NODE], None, None
        trust.add_credential(
            issue_credential(
                root, node=node, public_key=keys[node].public, roles=roles,
                not_before=START - DAY, not_after=START + 400 * DAY, serial=serial,
                lineage=shape.lineage(node), cell=cell, region=region,
            ),
            START,
        )  # fmt: skip
    return keys, trust


def _plan(shape: Shape) -> tuple[ContactPlan, dict[int, int]]:
    end = START + 30 * DAY
    contacts: list[Contact] = []
    parents: dict[int, int] = {}

    def both(a: int, b: int, owlt: int) -> None:
        contacts.append(Contact(a, b, START, end, 10_000_000, owlt))
        contacts.append(Contact(b, a, START, end, 10_000_000, owlt))

    for cell in shape.cells:
        coordinator = shape.cell_coordinator(cell)
        region = shape.region_coordinator(shape.region_of_cell(cell))
        both(coordinator, region, 5_000)
        parents[coordinator] = region
        for member in shape.members(cell):
            both(member, coordinator, 1_000)
            parents[member] = coordinator
    for a in range(shape.regions):
        for b in range(a + 1, shape.regions):
            both(shape.region_coordinator(a), shape.region_coordinator(b), 20_000)
    return ContactPlan(contacts), parents


@contextlib.asynccontextmanager
async def open_fleet(shape: Shape, seed: int = 9) -> AsyncIterator[Fleet]:
    """Run every node of ``shape`` until the block exits (call inside a MockClock run)."""
    rng = random.Random(seed)
    keys, trust = _credentials(shape, rng)
    plan, parents = _plan(shape)
    clock = Clock(trio.current_time(), START)
    network = LoopbackNetwork(plan, clock, random.Random(seed))
    fleet = Fleet(shape, clock, trust, keys)

    async def run_node(node: int, *, task_status: Any) -> None:
        config = NodeConfig(
            node=node, key=keys[node], trust=trust, contact_plan=plan, parents=parents,
            expiry_interval_s=3600,
        )  # fmt: skip
        links = {
            peer: TapLink(link, fleet.tap, fleet.now)
            for peer, link in network.links_of(node).items()
        }
        async with open_node(
            config, MemoryBundleStore(), links=links, inbox=network.open_inbox(node), clock=clock
        ) as running:
            fleet.nodes[node] = running
            task_status.started()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        for node in shape.all_nodes():
            await nursery.start(run_node, node)
        yield fleet
        nursery.cancel_scope.cancel()
