"""The release role on a running node: fetch, install, obey rollout orders and revocations.

Theory of operation
-------------------
The sans-IO release machinery (:mod:`fleetwire.protocol.release`) decides; this module moves
bytes. Each node runs a :class:`ReleaseRole` beside its :class:`~..node.Node`:

* **carriage** — release objects travel as bundles to the release service
  (:data:`~fleetwire.protocol.release.carriage.RELEASE_SERVICE`) of a neighbour or of the
  release authority. Outgoing bundles are handed to the node with :meth:`Node.accept`, so they
  are stored durably, routed and forwarded like any bundle (a bundle for a cut-off neighbour
  waits in the store for the contact). Incoming ones addressed to this node's release service
  are taken off the node's inbox by :class:`ServiceSplit` — the demultiplexing a bundle agent
  does by service number — and everything else goes on to the node unchanged.
* **flooding** — signed objects (manifests, rollout stages, revocations, policy tables) go to
  every neighbour but the one they came from, the first time a node sees them (by content id),
  so they cross the fleet hop by hop and wait out partitions in the stores on the way, as
  revocation lists do (spec v1 §10).
* **fetching** — a :class:`~fleetwire.protocol.release.fetch.FetchPlanner` per node, with the
  node's links classified by the :class:`~fleetwire.protocol.release.fetch.LinkKind` they
  cross. A node wants a release when an install-in-shadow stage names a cell it serves (its own
  cell; a gateway serves the cells its region carries the release to — the cell-cache rule).
  Chunks are committed to the disk-backed :class:`~..artifact_store.ArtifactStore` before the
  node tells its neighbours it holds them.
* **installing** — a complete release is assembled from its chunks (each hashed again as it is
  read), installed in shadow mode in the :class:`~fleetwire.protocol.release.authority.AuthorityTable`,
  judged by the application's :data:`Judge` (its shadow comparisons, the canary gate's cases),
  and reported to the release authority in a signed node report; while it holds authority it
  reports its health every ``health_interval_ms``.
* **orders** — a verified order is journalled in the artifact store before it acts, then
  applied: stages for the node's own cell, revocations at once on arrival, policy tables in
  serial order. A grant that arrives before the release is installed waits for the install.
  Every refusal is kept in :attr:`ReleaseRole.refusals` with its stable code and logged.

:class:`ReleaseAuthority` is the release pipeline's node: a :class:`ReleaseRole` that holds every
chunk, runs the :class:`~fleetwire.protocol.release.rollout.Rollout`, turns node reports into its
cell events, and signs and floods the stage orders it asks for.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs
import trio
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.bpv7 import Bundle, BundleError, IpnEid, decode_bundle, encode_bundle
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.release.authority import AuthorityGranted, AuthorityTable, Mode
from fleetwire.protocol.release.carriage import (
    RELEASE_SERVICE,
    Holdings,
    Kind,
    NodeReport,
    decode_carriage,
    encode_carriage,
    verify_report,
)
from fleetwire.protocol.release.census import VersionCensus
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
from fleetwire.protocol.release.manifest import Manifest, assemble, verify_manifest
from fleetwire.protocol.release.messages import (
    MAX_REQUESTED,
    ChunkAnswer,
    ChunkRequest,
    RolloutStage,
    StageAction,
    stage_order,
    verify_rollout_stage,
)
from fleetwire.protocol.release.orders import (
    PolicyTable,
    RevocationOrder,
    verify_policy,
    verify_revocation,
)
from fleetwire.protocol.release.rollout import (
    CellInstalled,
    GrantAuthority,
    HealthDigest,
    InstallShadow,
    InteractionCases,
    RollBack,
    Rollout,
    RolloutPlan,
    RolloutState,
    ShadowReport,
    Start,
)
from fleetwire.protocol.release.rollout import Tick as RolloutTick
from fleetwire.protocol.release.wire import ReleaseKeyResolver

from ..node.node import Node
from ..store.artifact_store import ArtifactStore

log = logging.getLogger("fleetwire.release")

__all__ = [
    "Judge",
    "ReleaseAuthority",
    "ReleaseConfig",
    "ReleaseRole",
    "ServiceSplit",
    "Verdict",
]

#: Lateness allowed when waking for a deadline (Trio time to DTN ms rounds to the ms).
_SLACK_S = 0.001


@attrs.frozen(slots=True)
class Verdict:
    """What the application found running a release in shadow mode, and then with authority."""

    agreed: int
    diverged: int = 0
    passed: int = 0  # cross-version interaction cases (the canary gate), run in the canary cell
    failed: int = 0
    healthy: bool = True


#: Judges a release this node installed: (manifest, artifact bytes, in the canary cell?, holds
#: authority?) -> what it showed (its shadow run before the grant, its health after).
Judge = Callable[[Manifest, bytes, bool, bool], Verdict]


@attrs.frozen(slots=True)
class ReleaseConfig:
    #: Who the release authority is (node reports go there).
    authority: int
    #: The kind of link to each neighbour (cell, region, inter-region).
    neighbours: Mapping[int, LinkKind]
    #: This node's cell (None: a gateway or the pipeline, in no cell).
    cell: int | None = None
    #: Cells whose install orders make this node fetch the release (its own cell; for a
    #: region gateway, the cells its region carries releases to).
    serves: frozenset[int] = frozenset()
    fetch: FetchConfig = attrs.field(factory=FetchConfig)
    lifetime_ms: int = 30 * 86_400_000
    health_interval_ms: int = 6 * 3_600_000
    #: Health reports sent per grant (they stop once the soak is surely over).
    health_reports: int = 8


@attrs.frozen(slots=True)
class Refusal:
    at: int
    kind: str
    code: str
    reason: str


class ServiceSplit:
    """Takes release-service bundles for ``node`` off a ``(peer, bundle)`` inbox; passes the rest
    on to the node, in order. Malformed bundles go to the node, which counts and refuses them."""

    def __init__(self, node: int, inbox: trio.abc.ReceiveChannel[tuple[int, bytes]]) -> None:
        self.node = node
        self._inbox = inbox
        self._to_node, self.for_node = trio.open_memory_channel[tuple[int, bytes]](math.inf)
        self._to_release, self.for_release = trio.open_memory_channel[tuple[int, Bundle]](math.inf)

    async def run(self) -> None:
        async with self._to_node, self._to_release:
            async for peer, data in self._inbox:
                try:
                    bundle = decode_bundle(data)
                except BundleError:
                    await self._to_node.send((peer, data))
                    continue
                dest = bundle.primary.destination
                if isinstance(dest, IpnEid) and (dest.node, dest.service) == (
                    self.node,
                    RELEASE_SERVICE,
                ):
                    await self._to_release.send((peer, bundle))
                else:
                    await self._to_node.send((peer, data))


class ReleaseRole:
    """One node's side of releases (module docstring)."""

    def __init__(
        self,
        node: Node,
        store: ArtifactStore,
        config: ReleaseConfig,
        inbox: trio.abc.ReceiveChannel[tuple[int, Bundle]],
        *,
        judge: Judge | None = None,
        preinstalled: Collection[Manifest] = (),
    ) -> None:
        self.node = node
        self.store = store
        self.config = config
        self.trust: ReleaseKeyResolver = node.config.trust
        self.judge = judge
        self._inbox = inbox
        self.table = AuthorityTable()
        self.planner = FetchPlanner(config.neighbours, store.ledger, config.fetch)
        self._preinstalled = tuple(preinstalled)
        self._seen: set[ContentId] = set()  # signed objects flooded already
        self._heard: set[int] = set()  # neighbours whose holdings we had since we started
        self._manifests: dict[ContentId, tuple[Manifest, bytes]] = {}
        self._wanted: set[ContentId] = set()  # release ids an install order asked us to fetch
        self._pending: list[RolloutStage] = []  # grants waiting for their release's install
        self._health: dict[ContentId, tuple[int, int]] = {}  # release -> (next at, reports left)
        self._canary: set[ContentId] = set()  # releases whose canary cell is ours
        self._created = (-1, 0)
        #: The latest refusals, with their codes (bounded: a neighbour can send junk forever).
        self.refusals: collections.deque[Refusal] = collections.deque(maxlen=1024)
        #: When authority changed here: (time, release id, granted?).
        self.authority_log: list[tuple[int, ContentId, bool]] = []
        #: Releases this node installed, and when.
        self.installed_at: dict[ContentId, int] = {}

    # --- sending -----------------------------------------------------------------------

    async def _send(self, kind: Kind, body: bytes, to: int) -> None:
        now = self.node.now()
        last, seq = self._created
        seq = seq + 1 if now == last else 0  # creation timestamps unique per source (§4.2.7)
        self._created = (now, seq)
        bundle = message_bundle(
            encode_carriage(kind, body), source=self.node.node, destination=to, created_at=now,
            sequence=seq, lifetime_ms=self.config.lifetime_ms, service=RELEASE_SERVICE,
        )  # fmt: skip
        # The node stores it durably, routes it and forwards it when a contact carries it.
        await self.node.accept(encode_bundle(bundle))

    async def _flood(self, kind: Kind, envelope: bytes, came_from: int | None) -> None:
        for neighbour in sorted(self.config.neighbours):
            if neighbour != came_from:
                await self._send(kind, envelope, neighbour)

    def _refuse(self, kind: str, exc: FleetwireError, now: int) -> None:
        self.refusals.append(Refusal(now, kind, exc.code, exc.message))
        log.warning("node=%s event=release-refused kind=%s code=%s reason=%s",
                    self.node.node, kind, exc.code, exc.message)  # fmt: skip

    # --- the loop ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._restore()
        task_status.started()
        while True:
            wake = self._next_wake()
            item = None
            with trio.move_on_at(
                math.inf if wake is None else self.node.clock.to_trio(wake) + _SLACK_S
            ):
                item = await self._inbox.receive()
            now = self.node.now()
            if item is not None:
                await self._receive(item[1], now)
            try:
                await self._act(self.planner.handle(Tick(), now))
                await self._due(now)
            except FleetwireError as exc:  # a chunk gone bad on disk, found as it was read
                self._refuse("tick", exc, now)

    def _next_wake(self) -> int | None:
        times = [request.deadline for request in self.planner.in_flight().values()]
        times += [at for at, _ in self._health.values()]
        return min(times) if times else None

    async def _restore(self) -> None:
        """Rebuild the authority table: what was installed before the role ran, the complete
        releases the store holds, then every journalled order again, in arrival order."""
        now = self.node.now()
        for manifest in self._preinstalled:
            self.table.install(manifest, now)
            self.table.grant(manifest.release_id, now)
        for release_id, manifest in self.store.manifests().items():
            envelope = self.store.envelope(release_id)
            assert envelope is not None
            self._manifests[release_id] = (manifest, envelope)
            self._seen.add(ContentId.of(envelope))
            self._wanted.add(release_id)
            if self.store.ledger.complete(release_id):
                self.table.install(manifest, now)
                self.installed_at[release_id] = now
        for kind, envelope, arrived_at in self.store.orders(self._verify_at):
            self._seen.add(ContentId.of(envelope))
            await self._obey(kind, envelope, arrived_at, came_from=None, journal=False)
        # Tell every neighbour what we hold, even nothing: each answers once with what it
        # holds, so a node that restarted knows again whom to ask (spec v3 release §5.5).
        body = Holdings(self.store.held()).to_payload()
        for neighbour in sorted(self.config.neighbours):
            await self._send(Kind.HOLDINGS, body, neighbour)

    def _verify_at(self, kind: Kind, envelope: bytes, at: int) -> object:
        verifiers: dict[Kind, Callable[[bytes, ReleaseKeyResolver, int], object]] = {
            Kind.MANIFEST: verify_manifest,
            Kind.ROLLOUT_STAGE: verify_rollout_stage,
            Kind.AUTHORITY_REVOCATION: verify_revocation,
            Kind.POLICY_TABLE: verify_policy,
        }
        return verifiers[kind](envelope, self.trust, at)

    async def _receive(self, bundle: Bundle, now: int) -> None:
        source = bundle.primary.source
        sender = source.node if isinstance(source, IpnEid) else -1
        try:
            kind, body = decode_carriage(bundle.payload)
        except FleetwireError as exc:
            self._refuse("carriage", exc, now)
            return
        try:
            if kind is Kind.HOLDINGS:
                held = Holdings.from_payload(body).chunks
                await self._act(self.planner.handle(HolderAnnounced(sender, held), now))
                if sender in self.config.neighbours and sender not in self._heard:
                    self._heard.add(sender)
                    mine = self.store.held()
                    if mine:
                        await self._send(Kind.HOLDINGS, Holdings(mine).to_payload(), sender)
            elif kind is Kind.CHUNK_REQUEST:
                await self._answer(sender, ChunkRequest.from_payload(body))
            elif kind is Kind.CHUNK_ANSWER:
                answer = ChunkAnswer.from_payload(body)
                event = ChunkReceived(sender, answer.chunk, answer.data)
                await self._act(self.planner.handle(event, now))
            elif kind is Kind.NODE_REPORT:
                await self._on_report(verify_report(body, self.trust, now), now)
            else:
                await self._obey(kind, body, now, came_from=sender, journal=True)
        except FleetwireError as exc:
            self._refuse(kind.name.lower(), exc, now)

    async def _answer(self, neighbour: int, request: ChunkRequest) -> None:
        if neighbour not in self.config.neighbours:
            return  # we serve neighbours only: bounded work for strangers
        for chunk in request.chunks:
            try:
                data = self.store.get_chunk(chunk)
            except FleetwireError as exc:
                self._refuse("stored-chunk", exc, self.node.now())
                continue
            if data is not None:
                await self._send(
                    Kind.CHUNK_ANSWER, ChunkAnswer(chunk, data).to_payload(), neighbour
                )

    async def _on_report(self, report: NodeReport, now: int) -> None:
        """Only the release authority reads node reports (:class:`ReleaseAuthority`)."""

    # --- signed orders -----------------------------------------------------------------

    async def _obey(
        self, kind: Kind, envelope: bytes, now: int, *, came_from: int | None, journal: bool
    ) -> None:
        """Verify, journal (before acting), act, and flood a signed object seen the first time."""
        name = ContentId.of(envelope)
        if journal and name in self._seen:
            return
        obj = self._verify_at(kind, envelope, now)  # raises: nothing kept, nothing flooded
        if isinstance(obj, PolicyTable):
            actions = self.table.apply_policy(obj, now)  # policy-stale: refused, not kept
            self._log_authority(actions, now)
        if journal:
            self.store.journal(kind, envelope, now)
            self._seen.add(name)
        try:
            if isinstance(obj, Manifest):
                self._manifests[obj.release_id] = (obj, envelope)
                await self._maybe_want(obj.release_id, now)
            elif isinstance(obj, RolloutStage):
                await self._on_stage(obj, now)
            elif isinstance(obj, RevocationOrder):
                # On arrival, whatever its age (spec v3 release §5.3).
                self._log_authority(self.table.revoke(obj, now), now)
        except FleetwireError as exc:
            # Refused here (a stale stage, no room for the release): others may still need it.
            self._refuse(kind.name.lower(), exc, now)
        if journal:
            await self._flood(kind, envelope, came_from)

    def _log_authority(self, actions: list[Any], now: int) -> None:
        for action in actions:
            granted = isinstance(action, AuthorityGranted)
            self.authority_log.append((now, action.release_id, granted))
            log.info("node=%s event=authority-%s release=%s", self.node.node,
                     "granted" if granted else "withdrawn", action.release_id.short())  # fmt: skip

    async def _on_stage(self, order: RolloutStage, now: int) -> None:
        if order.action is StageAction.INSTALL_SHADOW:
            if self.config.serves & set(order.cells):
                self._wanted.add(order.release)
                if order.stage == 0 and self.config.cell in order.cells:
                    self._canary.add(order.release)
                await self._maybe_want(order.release, now)
            return
        if self.config.cell is None or self.config.cell not in order.cells:
            return
        if order.action is StageAction.GRANT_AUTHORITY and order.release not in self.installed_at:
            self._pending.append(order)  # applied once the release is installed
            return
        actions = self.table.apply_stage(order, self.config.cell, now)
        self._log_authority(actions, now)
        if order.action is StageAction.GRANT_AUTHORITY and actions:
            self._health[order.release] = (
                now + self.config.health_interval_ms,
                self.config.health_reports,
            )
        elif order.action is StageAction.ROLL_BACK:
            self._health.pop(order.release, None)
            self._pending = [p for p in self._pending if p.release != order.release]

    async def _maybe_want(self, release_id: ContentId, now: int) -> None:
        known = self._manifests.get(release_id)
        if known is None or release_id not in self._wanted:
            return
        manifest, envelope = known
        if self.store.envelope(release_id) is None:
            self.store.admit(manifest, envelope, now)  # QuotaExceeded: refused, nothing lost
        await self._act(self.planner.handle(ReleaseWanted(manifest), now))

    # --- fetch actions -----------------------------------------------------------------

    async def _act(self, actions: list[Any]) -> None:
        requests: dict[int, list[ContentId]] = {}
        for action in actions:
            if isinstance(action, RequestChunk):
                requests.setdefault(action.neighbour, []).append(action.chunk)
            elif isinstance(action, StoreChunk):
                self.store.write_chunk(action.chunk, action.data)  # durable before announced
            elif isinstance(action, AnnounceHeld):
                body = Holdings(action.chunks).to_payload()
                for neighbour in sorted(self.config.neighbours):
                    await self._send(Kind.HOLDINGS, body, neighbour)
            elif isinstance(action, ChunkRefused):
                self.refusals.append(Refusal(self.node.now(), "chunk", action.code, action.reason))
                log.warning("node=%s event=release-refused kind=chunk code=%s from=%s",
                            self.node.node, action.code, action.neighbour)  # fmt: skip
            elif isinstance(action, ReleaseComplete):
                await self._install(action.release_id)
        for neighbour, chunks in requests.items():
            for start in range(0, len(chunks), MAX_REQUESTED):
                part = tuple(chunks[start : start + MAX_REQUESTED])
                release = min(self.store.ledger.releases_naming(part[0]))
                body = ChunkRequest(release, part).to_payload()
                await self._send(Kind.CHUNK_REQUEST, body, neighbour)

    async def _install(self, release_id: ContentId) -> None:
        now = self.node.now()
        manifest, _ = self._manifests[release_id]
        chunks = {}
        for ref in manifest.distinct_chunks().values():
            data = self.store.get_chunk(ref.id)  # hashed again as read
            assert data is not None
            chunks[ref.id] = data
        artifact = assemble(manifest, chunks)
        self.table.install(manifest, now)
        self.installed_at[release_id] = now
        log.info("node=%s event=installed release=%s mode=%s", self.node.node,
                 release_id.short(), self.table.installed()[release_id].mode.value)  # fmt: skip
        if self.config.cell is not None and self.judge is not None:
            verdict = self.judge(manifest, artifact, release_id in self._canary, False)
            await self._report(release_id, verdict, installed=True)
        pending, self._pending = self._pending, []
        for order in pending:
            await self._on_stage(order, now)

    async def _report(self, release_id: ContentId, verdict: Verdict, *, installed: bool) -> None:
        assert self.config.cell is not None
        report = NodeReport(
            issuer=self.node.node, issued_at=self.node.now(), release=release_id,
            cell=self.config.cell, installed=installed, agreed=verdict.agreed,
            diverged=verdict.diverged, passed=verdict.passed, failed=verdict.failed,
            healthy=verdict.healthy,
        )  # fmt: skip
        await self._send(Kind.NODE_REPORT, report.sign(self.node.config.key), self.config.authority)

    async def _due(self, now: int) -> None:
        """Health reports of the releases holding authority here."""
        for release_id, (at, left) in sorted(self._health.items()):
            if at > now:
                continue
            release = self.table.installed().get(release_id)
            if left <= 0 or release is None or release.mode is not Mode.ACTIVE:
                del self._health[release_id]
                continue
            self._health[release_id] = (now + self.config.health_interval_ms, left - 1)
            if self.judge is not None:
                manifest, _ = self._manifests[release_id]
                chunks = {
                    cid: self.store.get_chunk(cid) or b"" for cid in manifest.distinct_chunks()
                }
                verdict = self.judge(manifest, assemble(manifest, chunks), False, True)
                await self._report(release_id, verdict, installed=True)


class ReleaseAuthority(ReleaseRole):
    """The release pipeline's node: holds the release, runs its rollout, signs stage orders."""

    def __init__(
        self,
        node: Node,
        store: ArtifactStore,
        config: ReleaseConfig,
        inbox: trio.abc.ReceiveChannel[tuple[int, Bundle]],
        *,
        key: SigningKey,
        cells: Mapping[int, Collection[int]],
    ) -> None:
        super().__init__(node, store, config, inbox)
        self.key = key
        self.cells = {cell: frozenset(nodes) for cell, nodes in cells.items()}
        self.rollout: Rollout | None = None
        self._serial = 0
        self._reports: dict[int, NodeReport] = {}  # node -> its latest report
        self._healthy_at: dict[int, int] = {}  # node -> latest healthy observation
        self._soak_end: int | None = None
        #: (time, action) of every rollout action taken.
        self.history: list[tuple[int, Any]] = []

    async def publish(self, manifest: Manifest, chunks: Mapping[ContentId, bytes]) -> bytes:
        """Keep a release (manifest and every chunk) and flood its signed manifest."""
        now = self.node.now()
        envelope = manifest.sign(self.key)
        self.store.admit(manifest, envelope, now)
        self._manifests[manifest.release_id] = (manifest, envelope)
        self._seen.add(ContentId.of(envelope))
        self.planner.handle(ReleaseWanted(manifest), now)
        for cid in manifest.distinct_chunks():
            self.planner.handle(ChunkReceived(-1, cid, chunks[cid]), now)  # verified on the way
            self.store.write_chunk(cid, chunks[cid])
        await self._flood(Kind.MANIFEST, envelope, None)
        body = Holdings(frozenset(manifest.distinct_chunks())).to_payload()
        for neighbour in sorted(self.config.neighbours):
            await self._send(Kind.HOLDINGS, body, neighbour)
        return envelope

    async def start(self, plan: RolloutPlan, census: VersionCensus) -> None:
        """Start the rollout (``major-versions-exceeded`` and other refusals raise here)."""
        self.rollout = Rollout(plan)
        await self._carry_out(self.rollout.handle(Start(census), self.node.now()))

    async def order(self, kind: Kind, envelope: bytes) -> None:
        """Flood an order signed elsewhere (a revocation, a policy table) through the fleet."""
        self._seen.add(ContentId.of(envelope))
        await self._flood(kind, envelope, None)

    async def send_to(self, node: int, kind: Kind, envelope: bytes) -> None:
        """Send a signed object to one node only (routed through the fleet, not flooded)."""
        await self._send(kind, envelope, node)

    async def _carry_out(self, actions: list[Any]) -> None:
        assert self.rollout is not None
        now = self.node.now()
        for action in actions:
            self.history.append((now, action))
            log.info("node=%s event=rollout action=%s", self.node.node, action)
            if isinstance(action, InstallShadow | GrantAuthority | RollBack):
                self._serial += 1
                order = stage_order(action, self.rollout.plan, serial=self._serial,
                                    issuer=self.node.node, now=now)  # fmt: skip
                if isinstance(action, GrantAuthority):
                    self._soak_end = now + self.rollout.plan.soak
                envelope = order.sign(self.key)
                self._seen.add(ContentId.of(envelope))
                await self._flood(Kind.ROLLOUT_STAGE, envelope, None)

    def _next_wake(self) -> int | None:
        wake = super()._next_wake()
        end = self._soak_end
        soaking = self.rollout is not None and self.rollout.state is RolloutState.SOAKING
        if soaking and end is not None and end >= self.node.now():  # the soak's end: check
            wake = end if wake is None else min(wake, end)
        return wake

    async def _due(self, now: int) -> None:
        if self.rollout is not None:
            await self._carry_out(self.rollout.handle(RolloutTick(), now))

    async def _on_report(self, report: NodeReport, now: int) -> None:
        rollout = self.rollout
        if rollout is None or report.release != rollout.plan.release_id:
            return
        cell = report.cell
        if report.issuer not in self.cells.get(cell, ()):
            return  # a node reporting for a cell it is not in
        self._reports[report.issuer] = report
        nodes = self.cells[cell]
        reports = [self._reports[n] for n in nodes if n in self._reports]
        events: list[Any] = []
        if len(reports) == len(nodes) and all(r.installed for r in reports):
            events.append(CellInstalled(cell))
        events.append(
            ShadowReport(cell, sum(r.agreed for r in reports), sum(r.diverged for r in reports))
        )
        events.append(
            InteractionCases(cell, sum(r.passed for r in reports), sum(r.failed for r in reports))
        )
        if not report.healthy:
            events.append(HealthDigest(cell, False, report.issued_at))
        else:
            self._healthy_at[report.issuer] = max(
                self._healthy_at.get(report.issuer, 0), report.issued_at
            )
            if all(n in self._healthy_at for n in nodes):
                events.append(HealthDigest(cell, True, min(self._healthy_at[n] for n in nodes)))
        for event in events:
            await self._carry_out(rollout.handle(event, now))
