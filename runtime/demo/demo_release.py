"""The release scenario: a staged release to lineage B, its canary cell, and the rollback.

Theory of operation
-------------------
The release machinery decides (``protocol/release``: manifest, rollout, authority table, fetch
planner); :mod:`.roles.release` moves its bytes between real nodes. This module wires them into
the loopback demo (:mod:`.demo`) and reads off what the report shows.

**Who.** A release pipeline node, :data:`RELEASE_NODE`, holds the fleet root's credential with the
release role (spec v3 release §8: only that role signs manifests and stage orders); it sees every
region coordinator an hour every six hours, between the regions' contacts with their cells. The
release concerns lineage B: every lineage-B member runs B :data:`PREVIOUS` with authority and a
:class:`~.roles.release.ReleaseRole` for its cell; cell and region coordinators run one as the
gateways that cache the release for the cells they serve (the cell-cache rule). Lineage-A
members run none and never see a release bundle. Each role keeps its chunks in its own
disk-backed :class:`~.artifact_store.ArtifactStore` (in a temporary folder for the run).

**What.** At :data:`PUBLISH_AT` the pipeline signs the manifest of B :data:`NEW` (a small
artifact, :data:`ARTIFACT_BYTES` in :data:`CHUNK_BYTES` chunks, so the run stays fast), floods it
and starts the rollout: the canary cell (the last cell; not cell 0, which the partition scenario
cuts off) installs in shadow, fetching chunks hop by hop (pipeline → region → cell coordinator →
member), and reports; once its shadow runs agree and its interaction cases pass the pipeline
grants it authority. Then the scenario's defect shows: the new release's health digests go out
of control once it holds authority (:func:`judge`), the pipeline's rollout rolls the canary back
to B :data:`PREVIOUS` and halts, so no other cell ever runs B :data:`NEW`.

**Figures** (:class:`~.demo_results.ReleaseFigures`): lineage-B members by what they run
(previous active, new in shadow, new active) at every sampling step; the stage orders over time
(the rollout's own history); release bytes on the links, chunk answers apart (every bundle to
the release service, counted on each hop); refusals.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio
from fleetwire.protocol.agent.contacts import Contact
from fleetwire.protocol.bpv7 import BundleError, IpnEid, decode_bundle
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.authority import Mode
from fleetwire.protocol.release.carriage import RELEASE_SERVICE, Kind, decode_carriage
from fleetwire.protocol.release.census import VersionCensus
from fleetwire.protocol.release.fetch import FetchConfig, LinkKind
from fleetwire.protocol.release.manifest import Manifest, Version, chunk_artifact
from fleetwire.protocol.release.rollout import (
    GrantAuthority,
    InstallShadow,
    RollBack,
    RolloutHalted,
    RolloutPlan,
)
from fleetwire.protocol.trust import TrustStore

from ..links.link import Link, LinkWrapper
from ..node.node import Node
from ..roles.release import ReleaseAuthority, ReleaseConfig, ReleaseRole, ServiceSplit, Verdict
from ..store.artifact_store import ArtifactStore
from .demo_results import Event, ReleaseFigures

if TYPE_CHECKING:
    from .demo import Scenario
    from .demo_behaviour import Tally

MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
#: The release pipeline's node number (above every coordinator, below every member).
RELEASE_NODE: Final = 900
LINEAGE: Final = "B"
PREVIOUS: Final = Version(2, 4, 1)
NEW: Final = Version(3, 0, 0)
PUBLISH_AT: Final = 6 * HOUR
ARTIFACT_BYTES: Final = 4 * 1024
CHUNK_BYTES: Final = 1024
#: Healthy time a stage must show with authority before the next one starts.
SOAK: Final = DAY
#: Agreeing shadow comparisons each node's shadow run reports.
AGREED_PER_NODE: Final = 10
#: Above the slowest round trip: a member's request may wait 2.5 h for its next contact.
REQUEST_TIMEOUT: Final = 6 * HOUR


def judge(manifest: Manifest, artifact: bytes, canary: bool, authority: bool) -> Verdict:
    """The application's verdict on a release it runs: B :data:`NEW` agrees in shadow and
    passes the canary gate, then degrades once it holds authority (the scenario's defect)."""
    bad = manifest.version == NEW
    return Verdict(
        agreed=AGREED_PER_NODE, passed=1 if canary else 0, healthy=not (bad and authority)
    )


def artifact(version: Version, size: int) -> bytes:
    """A release's bytes, the same for every run (SHA-256 in counter mode over the version)."""
    seed, out, counter = str(version).encode(), bytearray(), 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])


def release_contacts(scenario: Scenario, start: int, end: int) -> list[Contact]:
    """The pipeline ⇄ each region coordinator, an hour every 6 h, 30 s of light time."""
    contacts = []
    for r in range(scenario.regions):
        region = 1 + r
        for t in range(start + 3 * HOUR, end, 6 * HOUR):
            contacts.append(Contact(RELEASE_NODE, region, t, t + HOUR, 2_000_000, 30_000))
            contacts.append(Contact(region, RELEASE_NODE, t, t + HOUR, 2_000_000, 30_000))
    return contacts


class ReleaseCountingLink(LinkWrapper):
    """Counts the bundles its node puts on the link for a release service (any hop)."""

    def __init__(self, link: Link, counts: Counter[str]) -> None:
        super().__init__(link)
        self._counts = counts

    async def send(self, bundle: bytes) -> None:
        await self._link.send(bundle)
        try:
            decoded = decode_bundle(bundle)
        except BundleError:
            return
        dest = decoded.primary.destination
        if not isinstance(dest, IpnEid) or dest.service != RELEASE_SERVICE:
            return
        self._counts["bytes"] += len(bundle)
        self._counts["bundles"] += 1
        try:
            kind, _ = decode_carriage(decoded.payload)
        except FleetwireError:
            return
        if kind is Kind.CHUNK_ANSWER:
            self._counts["chunk_bytes"] += len(bundle)


class ReleaseDemo:
    """The release scenario's nodes, roles and figures (module docstring)."""

    def __init__(self, scenario: Scenario, trust: TrustStore, start: int) -> None:
        self.scenario = scenario
        self.trust = trust
        self.t0 = start
        members = scenario.members()
        self.cells = scenario.all_cells
        self.canary = self.cells - 1
        self.waves = (frozenset(range(self.cells - 1)),) if self.cells > 1 else ()
        #: Lineage-B members by cell: the nodes that report for their cell.
        self.cell_nodes: dict[int, list[int]] = {c: [] for c in range(self.cells)}
        for member, cell in sorted(members.items()):
            if scenario.lineage(member) == LINEAGE:
                self.cell_nodes[cell].append(member)
        self.counts: Counter[str] = Counter()
        self.roles: dict[int, ReleaseRole] = {}
        self.splits: dict[int, ServiceSplit] = {}
        self.timeline: list[tuple[int, tuple[tuple[str, int], ...]]] = []
        self.previous, _ = self._release(PREVIOUS, 1024)
        self.manifest, self.blobs = self._release(NEW, ARTIFACT_BYTES)
        self._stack = ExitStack()
        self._folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory()))

    def close(self) -> None:
        self._stack.close()

    def _release(self, version: Version, size: int) -> tuple[Manifest, dict[ContentId, bytes]]:
        refs, blobs = chunk_artifact(artifact(version, size), CHUNK_BYTES)
        manifest = Manifest(
            lineage=LINEAGE, version=version, chunks=refs, min_peer_version=1,
            max_peer_version=3, issuer=RELEASE_NODE, issued_at=self.t0,
        )  # fmt: skip
        return manifest, blobs

    # --- the fleet's shape ---------------------------------------------------------------

    def neighbours(self, node: int) -> dict[int, LinkKind]:
        """Release neighbours: pipeline ⇄ regions ⇄ their cell coordinators ⇄ lineage B."""
        s = self.scenario
        regions = [1 + r for r in range(s.regions)]
        if node == RELEASE_NODE:
            return {r: LinkKind.REGION for r in regions}
        if node in regions:
            below = [s.cell_coordinator(c) for c in range(self.cells) if s.region_of(c) == node]
            return {RELEASE_NODE: LinkKind.REGION} | {c: LinkKind.REGION for c in below}
        cell = s.cell_of_coordinator(node)
        if cell is not None:
            return {s.region_of(cell): LinkKind.REGION} | {
                m: LinkKind.CELL for m in self.cell_nodes[cell]
            }
        cell = s.members()[node]
        return {s.cell_coordinator(cell): LinkKind.CELL}

    def runs_role(self, node: int) -> bool:
        s = self.scenario
        if node == RELEASE_NODE or node < 1 + s.regions or s.cell_of_coordinator(node) is not None:
            return True
        cell = s.members().get(node)
        return cell is not None and node in self.cell_nodes[cell]

    def _config(self, node: int) -> ReleaseConfig:
        s = self.scenario
        cell = s.members().get(node)
        served: frozenset[int]
        if cell is not None:
            served = frozenset({cell})
        elif (coordinated := s.cell_of_coordinator(node)) is not None:
            served = frozenset({coordinated})
        elif node == RELEASE_NODE:
            served = frozenset()
        else:
            served = frozenset(c for c in range(self.cells) if s.region_of(c) == node)
        return ReleaseConfig(
            authority=RELEASE_NODE, neighbours=self.neighbours(node), cell=cell, serves=served,
            fetch=FetchConfig(request_timeout=REQUEST_TIMEOUT), health_interval_ms=3 * HOUR,
        )  # fmt: skip

    def inbox(
        self, node: int, inbox: trio.MemoryReceiveChannel[tuple[int, bytes]]
    ) -> trio.MemoryReceiveChannel[tuple[int, bytes]]:
        """The node's own inbox: release-service bundles split off for its role."""
        if not self.runs_role(node):
            return inbox
        self.splits[node] = ServiceSplit(node, inbox)
        return self.splits[node].for_node

    def links(self, links: Mapping[int, Link]) -> dict[int, Link]:
        return {peer: ReleaseCountingLink(link, self.counts) for peer, link in links.items()}

    # --- running -------------------------------------------------------------------------

    async def start(self, node: Node, nursery: trio.Nursery) -> None:
        """Start ``node``'s release role (once the node runs)."""
        number = node.node
        if number not in self.splits:
            return
        nursery.start_soon(self.splits[number].run)
        # Many stores on one disk for a simulation: no fsync per commit (the store's own
        # tests reopen a durable one).
        store = ArtifactStore.open(self._folder / f"artifacts-{number}.db", self.trust,
                                   durable=False)  # fmt: skip
        self._stack.callback(store.close)
        config = self._config(number)
        split = self.splits[number]
        role: ReleaseRole
        if number == RELEASE_NODE:
            role = ReleaseAuthority(
                node, store, config, split.for_release, key=node.config.key,
                cells={c: nodes for c, nodes in self.cell_nodes.items() if nodes},
            )  # fmt: skip
        else:
            preinstalled = [self.previous] if config.cell is not None else []
            role = ReleaseRole(node, store, config, split.for_release, judge=judge,
                               preinstalled=preinstalled)  # fmt: skip
        self.roles[number] = role
        await nursery.start(role.run)

    @property
    def authority(self) -> ReleaseAuthority:
        role = self.roles[RELEASE_NODE]
        assert isinstance(role, ReleaseAuthority)
        return role

    async def publish(self, tally: Tally) -> None:
        """At :data:`PUBLISH_AT`: sign and flood the manifest, start the rollout."""
        authority = self.authority
        await trio.sleep_until(authority.node.clock.to_trio(self.t0 + PUBLISH_AT))
        await authority.publish(self.manifest, self.blobs)
        tally.events.append(
            Event(PUBLISH_AT, "release-published", f"lineage {LINEAGE} {NEW} "
                  f"({self.manifest.size} B in {len(self.manifest.chunks)} chunks)")
        )  # fmt: skip
        census = VersionCensus()
        s = self.scenario
        for cell, nodes in self.cell_nodes.items():
            for node in nodes:
                census.observe(node, s.region_of(cell), cell, [(LINEAGE, PREVIOUS.major)])
        samples = AGREED_PER_NODE * max(1, len(self.cell_nodes[self.canary]))
        plan = RolloutPlan(
            release_id=self.manifest.release_id, lineage=LINEAGE, version=NEW,
            previous=PREVIOUS, canary=self.canary, waves=self.waves, soak=SOAK,
            shadow_samples=samples,
        )  # fmt: skip
        await authority.start(plan, census)

    def sample(self, at_ms: int) -> None:
        """Lineage-B members by what they run, at run time ``at_ms``."""
        counts: Counter[str] = Counter()
        for nodes in self.cell_nodes.values():
            for node in nodes:
                role = self.roles.get(node)
                if role is None:
                    continue
                active = role.table.active(LINEAGE)
                counts[f"{active.version} active" if active else "none active"] += 1
                for release in role.table.installed().values():
                    if release.version == NEW and release.mode is Mode.SHADOW:
                        counts[f"{NEW} in shadow"] += 1
        self.timeline.append((at_ms, tuple(sorted(counts.items()))))

    def figures(self) -> ReleaseFigures:
        stages: list[tuple[int, str, tuple[int, ...]]] = []
        authority = self.roles.get(RELEASE_NODE)
        rollout = authority.rollout if isinstance(authority, ReleaseAuthority) else None
        history = authority.history if isinstance(authority, ReleaseAuthority) else []
        for at, action in history:
            at_ms = at - self.t0
            if isinstance(action, InstallShadow):
                stages.append((at_ms, "install-shadow", tuple(sorted(action.cells))))
            elif isinstance(action, GrantAuthority):
                stages.append((at_ms, "grant-authority", tuple(sorted(action.cells))))
            elif isinstance(action, RollBack):
                stages.append((at_ms, f"roll-back to {action.to}", tuple(sorted(action.cells))))
            elif isinstance(action, RolloutHalted):
                stages.append((at_ms, "halted", ()))
        ever_new = sum(
            1
            for nodes in self.cell_nodes.values()
            for node in nodes
            if node in self.roles and self.manifest.release_id in self.roles[node].installed_at
        )
        return ReleaseFigures(
            lineage=LINEAGE,
            previous=str(PREVIOUS),
            version=str(NEW),
            canary=self.canary,
            waves=tuple(tuple(sorted(w)) for w in self.waves),
            artifact_bytes=self.manifest.size,
            state="not started" if rollout is None else rollout.state.value,
            reason=None if rollout is None else rollout.reason,
            stages=tuple(stages),
            timeline=tuple(self.timeline),
            bytes=self.counts["bytes"],
            chunk_bytes=self.counts["chunk_bytes"],
            bundles=self.counts["bundles"],
            nodes_installed_new=ever_new,
            refusals=sum(len(role.refusals) for role in self.roles.values()),
        )


__all__ = ["RELEASE_NODE", "ReleaseDemo", "judge", "release_contacts"]
