"""What each node of the demo fleet does, on whichever engine runs it.

Theory of operation
-------------------
A :class:`NodeBehaviour` drives one running :class:`~.node.Node`: it listens to what arrives
(counting it, accepting commitments offered, escalating severe exceptions, feeding a cell's
containment machine), and for a member it plays the traffic script — capabilities once, then
now and then a dock claim through its lease role, a commitment offered to a neighbour, or an
exception report — beside its telemetry, digested and sent (``demo_digests``). What happened
goes into a :class:`Tally`; the engine turns tallies into the report's
:class:`~.demo_results.Results`.

Two engines use it. The loopback engine (:mod:`.demo`) runs every node in one process on
Trio's ``MockClock`` with one shared tally; the process engine (:mod:`.demo_processes`) runs one
node per OS process on the real clock, each with its own tally, merged at the end. So that a
run on the real clock ends in minutes, :class:`Timing` divides every duration of the script and
of the lease parameters by ``scale`` (3600: a virtual hour is a real second); what the tally
records — dock use, waits, latencies — it records in virtual time again, so the two engines'
reports read alike.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio
from fleetwire.protocol.coordination import invariants
from fleetwire.protocol.coordination.containment import (
    Containment,
    EscalateCluster,
    Quarantined,
)
from fleetwire.protocol.coordination.digests import Digest, Trigger
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig
from fleetwire.protocol.coordination.lease_holder import HolderConfig, HolderState
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionCode,
    ExceptionReport,
    Family,
    Header,
    LeaseGrant,
    Message,
    Scope,
    Terms,
    v2,
)
from fleetwire.protocol.messages.versions import NotExpressible, window
from fleetwire.protocol.replay import DEFAULT_BUNDLE_LIFETIME_MS

from ..node.node import Node
from ..roles.fault_messages import digest_from_message, digest_message
from ..roles.lease import Member
from .demo_digests import HELD_DIGESTS, Telemetry, writable
from .demo_results import Event, FamilyFigures, Interval, Verdict, percentile

if TYPE_CHECKING:
    from .demo import Scenario
    from .demo_isolation import RegionGuard

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
#: Bundles live as long as the autonomy window (the nodes' default): a cell cut off for the
#: 30 days it is designed for still delivers its backlog when it heals.
LIFETIME = DEFAULT_BUNDLE_LIFETIME_MS
#: The lineage coordinators' own advertisements name (the skew scenario has them advertise).
COORDINATOR_LINEAGE = "C"
#: The fault scenario: when the defect shows, for how long, in which lineage. The cells run the
#: containment module's own cell policy (``THRESHOLDS``), unchanged.
FAULT_FROM = 2 * DAY
FAULT_FOR = 12 * HOUR
FAULTY_LINEAGE = "B"
#: Members sample telemetry continuously and wake to digest it every half hour.
TELEMETRY_WAKE_MS = 30 * MINUTE
#: The figures' name for digests (the version-2 digest message; ``demo_digests``).
DIGEST = "digest"
#: Dock operations are this long; a claim not usable after ``GIVE_UP`` is abandoned.
STEP = 15 * MINUTE
GIVE_UP = 12 * HOUR


@attrs.frozen
class Timing:
    """Durations of the script and the lease parameters, divided by ``scale`` (module doc).

    Lease parameters are for links that open for 30 minutes every 3 hours (members) and an
    hour every 6 hours (coordinators), with seconds of light time; clocks agree to a second.
    """

    scale: int = 1

    def ms(self, virtual_ms: float) -> int:
        """Real ms for a virtual duration (at least 1)."""
        return max(1, round(virtual_ms / self.scale))

    def s(self, virtual_ms: float) -> float:
        """Real seconds for a virtual duration, for ``trio.sleep``."""
        return virtual_ms / self.scale / 1000

    def virtual(self, real_ms: int) -> int:
        return real_ms * self.scale

    @property
    def dock_term(self) -> int:
        return self.ms(8 * HOUR)

    @property
    def authority_term(self) -> int:
        return self.ms(3 * DAY)

    def _window(self) -> FreshnessWindow:
        return FreshnessWindow(max_age_ms=self.ms(3 * DAY), max_skew_ms=self.ms(1_000))

    def cell_authority(self) -> AuthorityConfig:
        return AuthorityConfig(
            max_drift_ms=self.ms(1_000), max_term_ms=self.dock_term, min_term_ms=self.ms(HOUR),
            freshness=self._window(),
        )  # fmt: skip

    def region_authority(self) -> AuthorityConfig:
        return AuthorityConfig(
            max_drift_ms=self.ms(1_000), max_term_ms=self.authority_term, freshness=self._window()
        )

    def member_leases(self) -> HolderConfig:
        return HolderConfig(
            max_drift_ms=self.ms(1_000), renew_lead_ms=self.ms(4 * HOUR),
            retry_ms=self.ms(3 * HOUR), min_use_ms=self.ms(HOUR), freshness=self._window(),
        )  # fmt: skip

    def coordinator_lease(self) -> HolderConfig:
        return HolderConfig(
            max_drift_ms=self.ms(1_000), renew_lead_ms=self.ms(2 * DAY),
            retry_ms=self.ms(6 * HOUR), freshness=self._window(),
        )  # fmt: skip


@attrs.define
class Tally:
    """Running counts; the engine's sampler turns them into intervals."""

    sent: Counter[str] = attrs.field(factory=Counter)
    delivered: Counter[str] = attrs.field(factory=Counter)
    latency_ms: dict[str, list[int]] = attrs.field(factory=lambda: defaultdict(list))
    node_bytes: dict[int, int] = attrs.field(factory=lambda: defaultdict(int))
    grants: int = 0
    lease_trace: list[invariants.Record] = attrs.field(factory=list)
    dock_use_ms: int = 0
    cut_cell_dock_use_ms: int = 0
    waits_ms: list[int] = attrs.field(factory=list)
    given_up: int = 0
    escalations: int = 0
    exceptions_open: int = 0
    cluster_escalations: int = 0
    quarantined: Counter[str] = attrs.field(factory=Counter)
    quarantined_faulty: int = 0
    quarantined_healthy: int = 0
    intervals: list[Interval] = attrs.field(factory=list)
    events: list[Event] = attrs.field(factory=list)
    digests: Counter[str] = attrs.field(factory=Counter)  # by trigger: periodic, threshold
    digest_bytes: int = 0  # the carrying messages' signed envelopes (COSE_Sign1) in bytes
    digests_anomalous: int = 0  # received by a coordinator with samples out of control
    digests_refused: int = 0  # received malformed (never, unless a node is broken)
    #: Digests a member could not write: it speaks version 1, or its coordinator's versions
    #: were still unknown when more than ``HELD_DIGESTS`` waited (``demo_digests``).
    digests_unwritable: int = 0
    samples: int = 0  # telemetry samples taken on the members
    detail_bytes: int = 0  # their encoded size, kept on the nodes
    #: Version skew: messages by ``v<writer node>->v<reader node>``, by ``written at v<n>``
    #: (the version on the wire), and ``refused <code>`` (not writable, or refused on arrival).
    versions: Counter[str] = attrs.field(factory=Counter)

    def family_figures(self) -> tuple[FamilyFigures, ...]:
        """Sent, delivered and latency per family (the four, then digests), as every engine
        reports them."""
        return tuple(
            FamilyFigures(
                family,
                self.sent[family],
                self.delivered[family],
                percentile(self.latency_ms[family], 0.5),
                percentile(self.latency_ms[family], 0.95),
            )
            for family in [f.value for f in Family] + [DIGEST]
        )

    def lease_verdict(self) -> Verdict:
        """The invariant checker's verdict over every grant and use the run recorded."""
        lease = invariants.check(self.lease_trace)
        return Verdict(
            checker="lease invariants (protocol/coordination/invariants.py): no overlapping uses",
            ok=lease.violations == 0,
            checked=lease.uses,
            violations=lease.violations,
            first_violation=None if lease.violation is None else str(lease.violation),
        )


class NodeBehaviour:
    """One node's part in the demo (module docstring)."""

    def __init__(
        self,
        node: Node,
        scenario: Scenario,
        tally: Tally,
        *,
        start: int,
        timing: Timing = Timing(),
        parent: int | None = None,
        containment: Containment | None = None,
    ) -> None:
        self.node = node
        self.scenario = scenario
        self.seen = tally
        self.start = start  # DTN ms of run time 0
        self.timing = timing
        self.parent = parent
        self.containment = containment
        self.role: Member | None = None
        #: A region coordinator's isolation boundary (the isolation scenario; ``demo_isolation``).
        self.guard: RegionGuard | None = None

    @property
    def number(self) -> int:
        return self.node.node

    def now(self) -> int:
        return self.node.now()

    def run_ms(self) -> int:
        """Virtual time since the run began."""
        return self.timing.virtual(self.now() - self.start)

    def header(self, refs: tuple[ContentId, ...] = ()) -> Header:
        # One sequence per node across all its tasks (spec §4): readers refuse a reused one.
        sequence = self.node.next_message_sequence()
        return Header(issuer=self.number, issued_at=self.now(), sequence=sequence, references=refs)

    async def send(self, message: Message, to: int, family: str | None = None) -> SignedMessage:
        # Shielded: once the node holds the message it will go, so a run's end that cancels
        # this task while the send waits for its commit must not leave it uncounted.
        with trio.CancelScope(shield=True):
            try:
                signed = await self.node.send(message, to, lifetime_ms=LIFETIME)
            except NotExpressible as e:
                # The reader's version cannot say it (spec/v2/versions.md): counted, and the
                # run goes on — the skew scenario's figures expect none while the window holds.
                self.seen.versions[f"refused {e.code}"] += 1
                raise
        self.seen.sent[family or message.TYPE.family.value] += 1
        self.count_versions(signed, to)
        return signed

    def on_refused(self, code: str) -> None:
        """The node's hook: a message refused on arrival, by code."""
        self.seen.versions[f"refused {code}"] += 1

    async def advertise_versions(self, to: tuple[int, ...]) -> None:
        """A coordinator's capability advertisement: no capabilities, the versions it reads,
        so that its peers write to it at the newest version both read (§6.1)."""
        for peer in to:
            advert = CapabilityAdvertisement(
                header=self.header(), capabilities=(), versions=self.versions_read(),
                lineage=COORDINATOR_LINEAGE,
            )
            await self.send(advert, peer)

    def version_peers(self) -> tuple[int, ...]:
        """Whom a coordinator tells the versions it reads (:meth:`advertise_versions`): its
        parent and the nodes below it, whose digests and replies are written for it; and in
        the isolation scenario a region's peers, which send it version-2 isolation orders."""
        s, number = self.scenario, self.number
        cell = s.cell_of_coordinator(number)
        if cell is not None:
            return (s.region_of(cell), *(m for m, c in s.members().items() if c == cell))
        regions = range(1, 1 + s.regions)  # region r's coordinator is node 1 + r
        if number not in regions:
            return ()
        below = tuple(s.cell_coordinator(c) for c in range(s.all_cells) if s.region_of(c) == number)
        return below + (tuple(r for r in regions if r != number) if s.isolating else ())

    def versions_read(self) -> tuple[int, int]:
        """(oldest, newest) version this node reads: the window of the version it speaks."""
        speaks = window(self.node.config.protocol_version)
        return (speaks.start, speaks.stop - 1)

    def count_versions(self, signed: SignedMessage, to: int) -> None:
        """Tally a sent message by writer → reader version and by the version on the wire."""
        reader = self.scenario.version_of(to)
        self.seen.versions[f"v{self.node.config.protocol_version}->v{reader}"] += 1
        self.seen.versions[f"written at v{signed.message.header.version}"] += 1

    def on_send(self, signed: SignedMessage, to: int) -> None:
        """The lease roles' sends: counted, and grants go into the invariant checker's trace."""
        message = signed.message
        self.seen.sent[message.TYPE.family.value] += 1
        self.count_versions(signed, to)
        if isinstance(message, LeaseGrant) and not message.resource.startswith("authority/"):
            if message.header.references == (message.claim,):  # a first grant, not a renewal
                self.seen.grants += 1
            t = self.now()
            self.seen.lease_trace.append(
                invariants.Granted(
                    message.resource, to, message.fencing_token, message.expires_at,
                    self.number, t, t,
                )
            )  # fmt: skip

    # --- what arrives ---------------------------------------------------------------------

    async def listen(self) -> None:
        seen = self.seen
        async for signed in self.node.subscribe():
            message = signed.message
            family = message.TYPE.family.value
            if self.guard is not None and not await self.guard.on_message(signed):
                seen.delivered[family] += 1  # delivered, and refused at the boundary
                if isinstance(message, ExceptionReport):
                    seen.exceptions_open -= 1
                continue
            if isinstance(message, v2.Digest):
                family = DIGEST
                try:
                    digest = digest_from_message(message)
                except FleetwireError:  # the codec checked it; the core's own rules may not hold
                    seen.digests_refused += 1
                else:
                    if any(m.out_of_control for m in digest.metrics.values()):
                        seen.digests_anomalous += 1
            seen.delivered[family] += 1
            seen.latency_ms[family].append(
                self.timing.virtual(self.now() - message.header.issued_at)
            )
            if self.containment is not None:
                await self.contain(signed)
            if isinstance(message, Commitment) and message.state is CommitmentState.OFFERED:
                accept = Commitment(
                    header=self.header((signed.content_id,)),
                    state=CommitmentState.ACCEPTED,
                    commitment=signed.content_id,
                )
                await self.send(accept, message.header.issuer)
            elif isinstance(message, ExceptionReport):
                if self.parent is None or message.severity < 3:
                    seen.exceptions_open -= 1  # it reached the node that handles it
                else:
                    seen.escalations += 1
                    escalated = ExceptionReport(
                        header=self.header((signed.content_id,)),
                        code=message.code,
                        severity=message.severity,
                        scope=Scope.CELL,
                        scope_id=self.number,
                        affects=message.affects,
                        detail=f"escalated from node {message.header.issuer}",
                    )
                    await self.send(escalated, self.parent)

    async def contain(self, signed: SignedMessage) -> None:
        """Feed the cell's containment machine; act on what it decides."""
        message, containment, seen = signed.message, self.containment, self.seen
        assert containment is not None
        if isinstance(message, CapabilityAdvertisement) and message.capabilities:
            # (A coordinator's advertisement, with no capabilities, is no member's lineage.)
            containment.advertise(message.header.issuer, message.lineage, message.cell)
        elif isinstance(message, ExceptionReport) and message.scope is Scope.NODE:
            for action in containment.anomaly(message, signed.content_id, self.now()):
                if isinstance(action, Quarantined):
                    seen.quarantined[action.lineage] += 1
                    if self.scenario.faulty(action.node):
                        seen.quarantined_faulty += 1
                    else:
                        seen.quarantined_healthy += 1
                    seen.events.append(
                        Event(
                            self.run_ms(),
                            "quarantine",
                            f"cell {containment.scope_id}: node {action.node} "
                            f"(lineage {action.lineage})",
                        )
                    )
                elif isinstance(action, EscalateCluster):
                    seen.cluster_escalations += 1
                    seen.exceptions_open += 1  # until the region has it
                    seen.events.append(
                        Event(self.run_ms(), "cluster-escalated", action.report.detail or "")
                    )
                    assert self.parent is not None
                    await self.send(action.report, self.parent)

    # --- a member's script ------------------------------------------------------------------

    def defect(self) -> Callable[[int], bool]:
        """Whether the fault scenario's defect shows in this node at DTN time ``t``."""
        shows, t0, timing = self.scenario.faulty(self.number), self.start, self.timing
        return lambda t: shows and FAULT_FROM <= timing.virtual(t - t0) < FAULT_FROM + FAULT_FOR

    async def member(self, cell: int, coordinator: int, role: Member) -> None:
        """Advertise, then claim docks, offer commitments and report exceptions now and then."""
        scenario, timing, node = self.scenario, self.timing, self.number
        self.role = role
        local = random.Random(scenario.seed * 7919 + node)
        contention = "contention" in scenario.scenarios
        await trio.sleep(timing.s(local.uniform(0, HOUR)))
        advert = CapabilityAdvertisement(
            header=self.header(),
            capabilities=(
                Capability(
                    "refine/carbonaceous",
                    local.randrange(10_000, 50_000),
                    "kg",
                    self.now(),
                    self.now() + timing.ms(30 * DAY),
                ),
            ),
            versions=self.versions_read(),
            lineage=scenario.lineage(node),
            cell=cell,
        )
        await self.send(advert, coordinator)
        peers = [m for m, c in scenario.members().items() if c == cell and m != node]
        async with trio.open_nursery() as holding:
            holding.start_soon(self.telemetry, coordinator)
            if scenario.faulty(node):
                holding.start_soon(self.faulty, coordinator)
            while True:
                await trio.sleep(timing.s(local.uniform(*((2, 6) if contention else (4, 12))) * HOUR))
                roll = local.random()
                if roll < 0.5:
                    dock = f"cell-{cell}/dock-{local.randrange(scenario.docks_per_cell)}"
                    if role.holder.state(dock) is HolderState.IDLE:
                        holding.start_soon(self.hold, dock, local.uniform(2, 6) * HOUR)
                elif roll < 0.8:
                    if peers:
                        offer = Commitment(
                            header=self.header(),
                            state=CommitmentState.OFFERED,
                            terms=Terms(
                                node,
                                local.choice(peers),
                                "deliver/refined-carbon",
                                1200,
                                "kg",
                                self.now() + timing.ms(5 * DAY),
                            ),
                        )
                        await self.send(offer, offer.terms.promisee)  # type: ignore[union-attr]
                else:
                    report = ExceptionReport(
                        header=self.header(),
                        code=local.randrange(1, 7),
                        severity=local.randrange(1, 6),
                        scope=Scope.NODE,
                        scope_id=node,
                    )
                    self.seen.exceptions_open += 1
                    await self.send(report, coordinator)

    async def hold(self, dock: str, hold_ms: float) -> None:
        """Claim ``dock``; once granted, use it in 15-minute operations, then release it."""
        role, seen, timing = self.role, self.seen, self.timing
        assert role is not None
        claimed = self.run_ms()
        await role.want(dock, timing.dock_term)
        while role.use(dock) is None and self.run_ms() - claimed < GIVE_UP:
            await trio.sleep(timing.s(10 * MINUTE))
        if role.use(dock) is None:
            seen.given_up += 1
        else:
            seen.waits_ms.append(self.run_ms() - claimed)
        started = self.run_ms()
        step = timing.ms(STEP)
        while role.use(dock) is not None and self.run_ms() - started < hold_ms:
            token = role.use(dock, step)
            if token is not None:
                t = self.now()
                seen.lease_trace.append(invariants.Used(dock, self.number, token, t, t + step, t))
                seen.dock_use_ms += STEP
                if dock.startswith("cell-0/"):
                    seen.cut_cell_dock_use_ms += STEP
            await trio.sleep(timing.s(STEP))
        await role.release(dock)

    async def telemetry(self, coordinator: int) -> None:
        """Sample, digest, and send each digest as the version-2 message once the coordinator
        reads it; until then up to ``HELD_DIGESTS`` wait (``demo_digests``)."""
        sampled = Telemetry(self.number, self.scenario.seed, self.now(), self.timing.scale)
        shows = self.defect()
        held: list[Digest] = []
        try:
            while True:
                # Wake every half hour: a threshold crossing goes out at most that late,
                # and no sooner than the builder's gap between event-driven digests allows.
                await trio.sleep(self.timing.s(TELEMETRY_WAKE_MS))
                held += sampled.advance(self.now(), shows)
                if not writable(self.node.versions, coordinator):
                    self.seen.digests_unwritable += max(0, len(held) - HELD_DIGESTS)
                    del held[:-HELD_DIGESTS]
                    continue
                while held:
                    await self.send_digest(coordinator, held.pop(0))
        finally:
            self.seen.samples += sampled.samples
            self.seen.detail_bytes += sampled.detail_bytes
            self.seen.digests_unwritable += len(held)

    async def send_digest(self, coordinator: int, digest: Digest) -> None:
        message = digest_message(self.header(), digest)
        signed = await self.send(message, coordinator, DIGEST)
        self.seen.digests["threshold" if digest.trigger is Trigger.THRESHOLD else "periodic"] += 1
        self.seen.digest_bytes += len(signed.envelope)

    async def faulty(self, coordinator: int) -> None:
        """A defect of lineage B: the same anomaly every half hour for ``FAULT_FOR``."""
        scenario, timing = self.scenario, self.timing
        local = random.Random(scenario.seed * 104_729 + self.number)
        await trio.sleep_until(
            trio.current_time()
            + max(0.0, timing.s(FAULT_FROM + local.randrange(0, HOUR) - self.run_ms()))
        )
        until = self.run_ms() + FAULT_FOR
        while self.run_ms() < until:
            self.seen.exceptions_open += 1
            report = ExceptionReport(
                header=self.header(),
                code=ExceptionCode.FEEDSTOCK_QUALITY,
                severity=3,
                scope=Scope.NODE,
                scope_id=self.number,
                detail="feedstock assessment drift",
            )
            await self.send(report, coordinator)
            await trio.sleep(timing.s(30 * MINUTE))
