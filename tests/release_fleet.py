"""A virtual-time model of a fleet moving release chunks: regions of cells of nodes, links
with light time, partitions, every node running the real fetch planner.

Node 0 is the release pipeline in region 0 and holds every chunk. Each region has a gateway
(the only node allowed across inter-region links); each cell a coordinator linked to the
gateway, and members linked to the coordinator and to each other. A message sent over a link
arrives after the link's delay unless a partition cuts the link when it is sent or when it
arrives; when a partition ends, the two sides tell each other what they hold (a contact
resumes). Every chunk delivered over an inter-region link is counted.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable

import attrs
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.fetch import (
    AnnounceHeld,
    ChunkReceived,
    ChunkRefused,
    FetchConfig,
    FetchPlanner,
    HolderAnnounced,
    LinkKind,
    ReleaseComplete,
    ReleaseWanted,
    RequestChunk,
    StoreChunk,
    Tick,
)
from fleetwire.protocol.release.ledger import ArtifactLedger
from fleetwire.protocol.release.manifest import Manifest


@attrs.define
class Fleet:
    region_of: dict[int, int] = attrs.Factory(dict)
    links: dict[frozenset[int], tuple[LinkKind, int]] = attrs.Factory(dict)  # kind, delay ms
    gateways: dict[int, int] = attrs.Factory(dict)  # region -> gateway
    coordinators: dict[int, int] = attrs.Factory(dict)  # cell -> coordinator
    members: dict[int, list[int]] = attrs.Factory(dict)  # cell -> members
    region_edges: list[tuple[int, int]] = attrs.Factory(list)

    def link(self, a: int, b: int, kind: LinkKind, delay: int) -> None:
        self.links[frozenset((a, b))] = (kind, delay)

    def neighbours(self, node: int) -> dict[int, LinkKind]:
        out = {}
        for pair, (kind, _) in self.links.items():
            if node in pair:
                (other,) = pair - {node}
                out[other] = kind
        return out

    def cell_nodes(self, cell: int) -> list[int]:
        return [self.coordinators[cell], *self.members[cell]]

    def region_path(self, region: int) -> list[int]:
        """Regions from region 0 to ``region`` over the inter-region edges (a tree path)."""
        paths = {0: [0]}
        frontier = [0]
        while frontier:
            here = frontier.pop()
            for a, b in self.region_edges:
                for x, y in ((a, b), (b, a)):
                    if x == here and y not in paths:
                        paths[y] = [*paths[here], y]
                        frontier.append(y)
        return paths[region]


def build_fleet(
    regions: int,
    cells: int,
    members: int,
    rng: random.Random,
    *,
    region_edges: Iterable[tuple[int, int]],
    stray_links: int = 0,
) -> Fleet:
    """Cells are numbered ``10 * region + k``."""
    fleet = Fleet()
    ids = itertools.count(1)
    fleet.region_of[0] = 0
    delay = lambda: rng.randint(500, 20_000)  # noqa: E731 - light time, ms
    for region in range(regions):
        gateway = next(ids)
        fleet.gateways[region] = gateway
        fleet.region_of[gateway] = region
        for k in range(cells):
            cell = 10 * region + k
            coordinator = next(ids)
            fleet.coordinators[cell] = coordinator
            fleet.region_of[coordinator] = region
            fleet.link(gateway, coordinator, LinkKind.REGION, delay())
            fleet.members[cell] = [next(ids) for _ in range(members)]
            for member in fleet.members[cell]:
                fleet.region_of[member] = region
                fleet.link(coordinator, member, LinkKind.CELL, delay())
            for a, b in itertools.combinations(fleet.members[cell], 2):
                fleet.link(a, b, LinkKind.CELL, delay())
    fleet.link(0, fleet.gateways[0], LinkKind.REGION, delay())
    fleet.region_edges = list(region_edges)
    for a, b in fleet.region_edges:
        fleet.link(fleet.gateways[a], fleet.gateways[b], LinkKind.INTER_REGION, delay())
    # Members with a direct link into another region: the rule says they must not use it.
    everyone = [m for cell in fleet.members.values() for m in cell]
    for _ in range(stray_links):
        a, b = rng.sample(everyone, 2)
        if fleet.region_of[a] != fleet.region_of[b]:
            fleet.link(a, b, LinkKind.INTER_REGION, delay())
    return fleet


class ChunkNetwork:
    """Every node's fetch planner over the fleet's links, in virtual time."""

    def __init__(
        self,
        fleet: Fleet,
        blobs: dict[ContentId, bytes],
        *,
        partitions: Iterable[tuple[int, int, int]] = (),  # node, start, end: its links down
        corrupt: Iterable[int] = (),  # nodes that serve flipped bytes once per chunk
    ) -> None:
        self.fleet = fleet
        max_delay = max(delay for _, delay in fleet.links.values())
        config = FetchConfig(request_timeout=2 * max_delay + 1)
        self.planners: dict[int, FetchPlanner] = {}
        self.store: dict[int, dict[ContentId, bytes]] = {0: dict(blobs)}
        gateways = set(fleet.gateways.values())
        for node in fleet.region_of:
            if node:
                self.planners[node] = FetchPlanner(
                    fleet.neighbours(node),
                    ArtifactLedger(),
                    attrs.evolve(config, may_cross_region=node in gateways),
                )
                self.store[node] = {}
        self.down = list(partitions)
        self.corrupting = set(corrupt)
        self._corrupted: set[tuple[int, ContentId]] = set()
        self._heap: list[tuple[int, int, tuple[object, ...]]] = []
        self._seq = itertools.count()
        self.now = 0
        self.crossings: Counter[tuple[frozenset[int], ContentId]] = Counter()
        self.entries: Counter[tuple[int, ContentId]] = Counter()
        self.deliveries: Counter[tuple[int, ContentId]] = Counter()
        self.refused: list[ChunkRefused] = []
        self.completed: dict[tuple[int, ContentId], int] = {}  # (node, release) -> when
        self.on_complete: Callable[[int, ContentId, int], None] | None = None
        self._announce(0, 0, frozenset(blobs))
        for node, _, end in self.down:
            self._push(end, (node, node, "heal"))

    def want(self, node: int, manifest: Manifest, at: int) -> None:
        self._push(at, (node, node, "wanted", manifest))

    def _push(self, at: int, item: tuple[object, ...]) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), item))

    def _cut(self, a: int, b: int, at: int) -> bool:
        return any(n in (a, b) and s <= at < e for n, s, e in self.down)

    def _send(self, at: int, src: int, dst: int, message: tuple[object, ...]) -> None:
        if self._cut(src, dst, at):
            return
        _, delay = self.fleet.links[frozenset((src, dst))]
        self._push(at + delay, (src, dst, *message))

    def _announce(self, at: int, node: int, chunks: frozenset[ContentId]) -> None:
        for other in self.fleet.neighbours(node):
            self._send(at, node, other, ("have", chunks))

    def _carry_out(self, at: int, node: int, actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, RequestChunk):
                self._send(at, node, action.neighbour, ("want", action.chunk))
                self._push(action.deadline, (node, node, "tick"))
            elif isinstance(action, StoreChunk):
                self.store[node][action.chunk] = action.data
            elif isinstance(action, AnnounceHeld):
                self._announce(at, node, action.chunks)
            elif isinstance(action, ChunkRefused):
                self.refused.append(action)
            elif isinstance(action, ReleaseComplete):
                self.completed[node, action.release_id] = at
                if self.on_complete is not None:
                    self.on_complete(node, action.release_id, at)

    def run(self, until: Callable[[], bool] | None = None) -> int:
        """Deliver everything (or until ``until()`` holds); return the virtual time."""
        while self._heap and not (until is not None and until()):
            self.now, _, (src, dst, kind, *rest) = heapq.heappop(self._heap)
            self._step(src, dst, kind, rest)
        return self.now

    def _step(self, src: int, dst: int, kind: str, rest: list[object]) -> None:
        now = self.now
        if kind == "wanted":
            (manifest,) = rest
            self._carry_out(now, dst, self.planners[dst].handle(ReleaseWanted(manifest), now))
        elif kind == "tick":
            self._carry_out(now, dst, self.planners[dst].handle(Tick(), now))
        elif kind == "heal":
            for other in self.fleet.neighbours(dst):
                for a, b in ((dst, other), (other, dst)):
                    if self.store[a]:
                        self._send(now, a, b, ("have", frozenset(self.store[a])))
        elif self._cut(src, dst, now):
            return  # lost in flight
        elif kind == "have":
            (chunks,) = rest
            if dst in self.planners:
                event = HolderAnnounced(src, chunks)
                self._carry_out(now, dst, self.planners[dst].handle(event, now))
        elif kind == "want":
            (chunk,) = rest
            data = self.store[dst].get(chunk)
            assert data is not None, "asked a neighbour that never announced the chunk"
            if dst in self.corrupting and (dst, chunk) not in self._corrupted:
                self._corrupted.add((dst, chunk))
                data = bytes([data[0] ^ 1]) + data[1:]
            self._send(now, dst, src, ("chunk", chunk, data))
        elif kind == "chunk":
            chunk, data = rest
            link = frozenset((src, dst))
            if self.fleet.links[link][0] is LinkKind.INTER_REGION:
                self.crossings[link, chunk] += 1
                self.entries[self.fleet.region_of[dst], chunk] += 1
            self.deliveries[dst, chunk] += 1
            event = ChunkReceived(src, chunk, data)
            self._carry_out(now, dst, self.planners[dst].handle(event, now))
