"""A fleet of real Trio nodes moving a release over loopback links, in MockClock time.

Shape: the release pipeline (node 900, the release authority) feeds region 0's gateway; three
regions in a chain (gateway 100 — 101 — 102, the inter-region links), four cells per region
(cells ``10 * region + k``), each a coordinator (``200 + cell``) linked to its gateway and two
members (``300 + 2 * cell + j``) linked to the coordinator and to each other. One stray
inter-region link joins a member of cell 0 (first wave) to a member of the canary cell 21: when
the first wave starts, that neighbour is the only holder a cell-0 member has, and the cell-cache
rule says it must wait for its coordinator instead — the link carries no chunk. Every node is a :class:`~fleetwire.runtime.node.node.Node` with a memory
bundle store, a disk-backed :class:`~fleetwire.runtime.store.artifact_store.ArtifactStore` and a
:class:`~fleetwire.runtime.roles.release.ReleaseRole`; every bundle crosses a
:class:`~fleetwire.runtime.links.loopback.LoopbackNetwork` link, and every chunk answer put on an
inter-region link is counted from the bytes sent (:class:`WatchedLink`).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import trio
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.bpv7 import IpnEid, decode_bundle, encode_bundle
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.carriage import (
    RELEASE_SERVICE,
    Kind,
    decode_carriage,
    encode_carriage,
)
from fleetwire.protocol.release.census import VersionCensus
from fleetwire.protocol.release.fetch import FetchConfig, LinkKind
from fleetwire.protocol.release.manifest import Manifest, Version
from fleetwire.protocol.release.messages import ChunkAnswer
from fleetwire.protocol.release.rollout import RolloutPlan
from fleetwire.protocol.trust import Role, TrustStore, issue_credential
from fleetwire.runtime.links.link import Link, LinkWrapper
from fleetwire.runtime.links.loopback import LoopbackNetwork
from fleetwire.runtime.node.node import Node, NodeConfig, open_node
from fleetwire.runtime.roles.release import (
    ReleaseAuthority,
    ReleaseConfig,
    ReleaseRole,
    ServiceSplit,
    Verdict,
)
from fleetwire.runtime.store.artifact_store import ArtifactStore
from fleetwire.runtime.store.memory_store import MemoryBundleStore

from .fleet import DAY, ROOT, T0, node_key
from .release_support import PIPELINE, make_release, release_trust

HOUR = 3_600_000
REGIONS = 3
CELLS = 4
MEMBERS = 2
#: An operator's key with the release role whose credential ends six days in.
OPERATOR = 901
OPERATOR_UNTIL = T0 + 6 * DAY
CANARY = 21  # region 2: the release crosses both inter-region links for the canary
WAVES = (frozenset({0, 1, 10, 11}), frozenset({2, 3, 12, 13, 20, 22, 23}))
SOAK = DAY
PREVIOUS = Version(2, 4, 1)
NEW = Version(3, 0, 0)


def gateway(region: int) -> int:
    return 100 + region


def coordinator(cell: int) -> int:
    return 200 + cell


def members(cell: int) -> list[int]:
    return [300 + 2 * cell + j for j in range(MEMBERS)]


def cells() -> list[int]:
    return [10 * r + k for r in range(REGIONS) for k in range(CELLS)]


def cell_nodes(cell: int) -> list[int]:
    return [coordinator(cell), *members(cell)]


STRAY = (members(0)[0], members(CANARY)[0])


@functools.cache
def links() -> dict[frozenset[int], LinkKind]:
    out = {frozenset((PIPELINE, gateway(0))): LinkKind.REGION}
    for region in range(1, REGIONS):
        out[frozenset((gateway(region - 1), gateway(region)))] = LinkKind.INTER_REGION
    for cell in cells():
        out[frozenset((gateway(cell // 10), coordinator(cell)))] = LinkKind.REGION
        for a, b in itertools.combinations(cell_nodes(cell), 2):
            out[frozenset((a, b))] = LinkKind.CELL
    out[frozenset(STRAY)] = LinkKind.INTER_REGION
    return out


def all_nodes() -> list[int]:
    return [
        PIPELINE,
        *(gateway(r) for r in range(REGIONS)),
        *(n for c in cells() for n in cell_nodes(c)),
    ]


def parents() -> dict[int, int]:
    out = {gateway(0): PIPELINE}
    out |= {gateway(r): gateway(r - 1) for r in range(1, REGIONS)}
    for cell in cells():
        out[coordinator(cell)] = gateway(cell // 10)
        out |= {m: coordinator(cell) for m in members(cell)}
    return out


def serves(node: int) -> tuple[int | None, frozenset[int]]:
    for cell in cells():
        if node in cell_nodes(cell):
            return cell, frozenset({cell})
    if node == PIPELINE:
        return None, frozenset()
    region = node - 100
    return None, frozenset(c for c in cells() if c // 10 >= region)  # its region and beyond


def contact_plan(cuts: Iterable[tuple[int, int, int, int]], rng: random.Random) -> ContactPlan:
    """Every link up for 60 days but for ``cuts`` (a, b, from, to); light time 1-5 s."""
    end = T0 + 60 * DAY
    contacts = []
    cut = list(cuts)
    for pair in sorted(links(), key=sorted):
        a, b = sorted(pair)
        owlt = rng.randrange(1000, 5000)
        windows = [(T0, end)]
        for x, y, start, stop in cut:
            if {x, y} == {a, b}:
                windows = [w for s, e in windows for w in ((s, min(e, start)), (max(s, stop), e))]
        for s, e in windows:
            if e > s:
                contacts.append(Contact(a, b, s, e, 10_000_000, owlt))
                contacts.append(Contact(b, a, s, e, 10_000_000, owlt))
    return ContactPlan(contacts)


def fleet_trust() -> TrustStore:
    trust = release_trust([n for n in all_nodes() if n != PIPELINE])
    trust.add_credential(
        issue_credential(
            ROOT, node=OPERATOR, public_key=node_key(OPERATOR).public,
            roles=[Role.NODE, Role.RELEASE], not_before=T0 - DAY, not_after=OPERATOR_UNTIL,
            serial=OPERATOR,
        ),
        T0,
    )  # fmt: skip
    return trust


class WatchedLink(LinkWrapper):
    """A link that counts every chunk answer its node puts on it, and may corrupt one."""

    def __init__(self, link: Link, fleet: LoopbackFleet) -> None:
        super().__init__(link)
        self._fleet = fleet

    async def send(self, bundle: bytes) -> None:
        data, chunk = self._fleet.watch(self.local, self.peer, bundle)
        await self._link.send(data)
        if chunk is not None:  # counted once the link took it (LinkDown: not traffic)
            self._fleet.crossings[self.local, self.peer, chunk] += 1


def judge_for(fault: str | None) -> Callable[[Manifest, bytes, bool, bool], Verdict]:
    """The application's verdict: the new release agrees in shadow and stays healthy, unless
    ``fault`` is "diverges" (shadow outputs differ) or "degrades" (its digests go out of
    control once it holds authority)."""

    def judge(manifest: Manifest, artifact: bytes, canary: bool, authority: bool) -> Verdict:
        bad = manifest.version == NEW and fault is not None
        return Verdict(
            agreed=10,
            diverged=3 if bad and fault == "diverges" else 0,
            passed=1 if canary else 0,
            healthy=not (bad and fault == "degrades" and authority),
        )

    return judge


@attrs.define
class LoopbackFleet:
    clock: Clock
    nodes: dict[int, Node]
    roles: dict[int, ReleaseRole]
    stores: dict[int, ArtifactStore]
    manifest: Manifest
    blobs: dict[ContentId, bytes]
    previous: Manifest
    #: (sender, receiver, chunk) -> chunk answers put on an inter-region link.
    crossings: Counter[tuple[int, int, ContentId]] = attrs.Factory(Counter)
    #: (sender, receiver) whose next chunk answer is corrupted (one flipped bit).
    corrupt_next: set[tuple[int, int]] = attrs.Factory(set)
    corrupted: list[tuple[int, int, ContentId]] = attrs.Factory(list)

    @property
    def authority(self) -> ReleaseAuthority:
        role = self.roles[PIPELINE]
        assert isinstance(role, ReleaseAuthority)
        return role

    def now(self) -> int:
        return self.clock.to_dtn(trio.current_time())

    def watch(self, a: int, b: int, data: bytes) -> tuple[bytes, ContentId | None]:
        """The bytes to put on the link ``a -> b``, and the chunk to count if it is an
        inter-region link carrying a chunk answer."""
        kind = links()[frozenset((a, b))]
        if kind is not LinkKind.INTER_REGION and (a, b) not in self.corrupt_next:
            return data, None
        bundle = decode_bundle(data)
        dest = bundle.primary.destination
        if not isinstance(dest, IpnEid) or dest.service != RELEASE_SERVICE:
            return data, None
        carried, body = decode_carriage(bundle.payload)
        if carried is not Kind.CHUNK_ANSWER:
            return data, None
        answer = ChunkAnswer.from_payload(body)
        counted = answer.chunk if kind is LinkKind.INTER_REGION else None
        if (a, b) not in self.corrupt_next:
            return data, counted
        self.corrupt_next.discard((a, b))
        self.corrupted.append((a, b, answer.chunk))
        bad = ChunkAnswer(answer.chunk, bytes([answer.data[0] ^ 1]) + answer.data[1:])
        payload = attrs.evolve(
            bundle.blocks[-1], data=encode_carriage(Kind.CHUNK_ANSWER, bad.to_payload())
        )
        return encode_bundle(attrs.evolve(bundle, blocks=(*bundle.blocks[:-1], payload))), counted

    def plan(self) -> RolloutPlan:
        return RolloutPlan(
            release_id=self.manifest.release_id, lineage="B", version=NEW, previous=PREVIOUS,
            canary=CANARY, waves=WAVES, soak=SOAK, shadow_samples=10 * (1 + MEMBERS),
        )  # fmt: skip

    def census(self) -> VersionCensus:
        census = VersionCensus()
        for cell in cells():
            for node in cell_nodes(cell):
                census.observe(node, cell // 10, cell, [("B", PREVIOUS.major)])
        return census

    def active(self, node: int) -> Version | None:
        release = self.roles[node].table.active("B")
        return None if release is None else release.version

    def ever_granted(self, node: int, release_id: ContentId) -> bool:
        return any(r == release_id and granted for _, r, granted in self.roles[node].authority_log)


@asynccontextmanager
async def loopback_fleet(
    tmp_path: Path,
    *,
    cuts: Iterable[tuple[int, int, int, int]] = (),
    fault: str | None = None,
    seed: int = 7,
) -> AsyncIterator[LoopbackFleet]:
    """The fleet, running; every node runs B 2.4.1 with authority, the pipeline holds B 3.0.0."""
    rng = random.Random(seed)
    plan = contact_plan(cuts, rng)
    clock = Clock(trio.current_time(), T0)
    network = LoopbackNetwork(plan, clock, random.Random(seed))
    trust = fleet_trust()
    previous, _ = make_release(version=PREVIOUS, seed=b"B 2.4.1")
    manifest, blobs = make_release(version=NEW, size=8 * 1024, seed=b"B 3.0.0")
    every = links()
    fleet = LoopbackFleet(clock, {}, {}, {}, manifest, blobs, previous)
    judge = judge_for(fault)
    fetch = FetchConfig(request_timeout=HOUR)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        nursery.start_soon(network.run)
        for node in all_nodes():
            split = ServiceSplit(node, network.open_inbox(node))
            nursery.start_soon(split.run)
            config = NodeConfig(
                node=node,
                key=node_key(node),
                trust=trust,
                parents=parents(),
                expiry_interval_s=6 * 3600,
            )
            watched = {p: WatchedLink(link, fleet) for p, link in network.links_of(node).items()}
            fleet.nodes[node] = await stack.enter_async_context(
                open_node(config, MemoryBundleStore(), links=watched, inbox=split.for_node,
                          clock=clock)
            )  # fmt: skip
            # Forty stores on one disk: no fsync per commit (test_artifact_store reopens a
            # durable one); every other path is the one a node in service takes.
            store = ArtifactStore.open(tmp_path / f"artifacts-{node}.db", trust, durable=False)
            stack.callback(store.close)
            fleet.stores[node] = store
            cell, served = serves(node)
            neighbours = {
                other: kind for pair, kind in every.items() if node in pair
                for other in pair - {node}
            }  # fmt: skip
            release_config = ReleaseConfig(
                authority=PIPELINE, neighbours=neighbours, cell=cell, serves=served,
                fetch=attrs.evolve(fetch, may_cross_region=100 <= node < 100 + REGIONS),
            )  # fmt: skip
            role: ReleaseRole
            if node == PIPELINE:
                role = ReleaseAuthority(
                    fleet.nodes[node], store, release_config, split.for_release,
                    key=node_key(PIPELINE), cells={c: cell_nodes(c) for c in cells()},
                )  # fmt: skip
            else:
                role = ReleaseRole(
                    fleet.nodes[node], store, release_config, split.for_release, judge=judge,
                    preinstalled=[previous],
                )  # fmt: skip
            fleet.roles[node] = role
            await nursery.start(role.run)
        await fleet.authority.publish(manifest, blobs)
        yield fleet
        nursery.cancel_scope.cancel()
