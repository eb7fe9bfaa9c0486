"""Fault roles on a running node: members that report and digest, coordinators that contain.

Theory of operation
-------------------
The sans-IO machines of :mod:`fleetwire.protocol.coordination` decide; these roles only carry
their inputs and actions between them and a :class:`~..node.Node`, the way the lease roles do
(:mod:`.lease`): verified messages from :meth:`Node.subscribe` go in with the node's ``now``,
actions go out through :meth:`Node.send`, and the role sleeps until the machines' next deadline.

- :class:`FaultMember` — a member node. It reports exceptions to its cell coordinator naming
  its software lineage (spec/v2/faults.md §0, key 15) and the commitments they affect; keeps its
  commitments in a :class:`CommitmentTracker` and copies every step to its coordinator (who
  observes, to re-home them); with ``digests`` on it sends a digest per period (and at a
  threshold crossing) instead of a telemetry stream, keeps the detail (:class:`DetailKeeper`)
  and answers detail requests by content id; and it takes over, or hands over, commitments
  its coordinator re-homes.
- :class:`CellFaults` — a cell coordinator. It learns lineages from capability advertisements
  (§6.1), runs the :class:`Escalator` (one incident per fault signature per window, sent to the
  region), :class:`Containment` (quarantine; its :meth:`~Containment.admits` is the gate the
  cell's lease authority consults: give it to :class:`~.lease.CellCoordinator` as ``admits``),
  re-homes the quarantined nodes' open commitments, and pulls the detail of anomalous digests
  (:class:`ForensicPuller`). The cluster goes up as the escalator's one report per (cell,
  signature); the containment's own cluster report is kept as :attr:`CellFaults.clusters`, so
  the region gets one report per cell rather than two.
- :class:`RegionFaults` — a region coordinator. It escalates its cells' reports into region
  incidents, acknowledges each report it took, and issues isolation orders (sever, lift),
  signed with its key, to the boundary nodes.
- Any of them is an **isolation boundary** when given an :class:`IsolationBoundary`: it applies
  orders (verified against the trust store, :mod:`~fleetwire.protocol.coordination.isolation`),
  installs the boundary's filter in the node's admission (``source-isolated``), and, given the
  node's lease authority, revokes the leases held by nodes of a severed target.

**Messages.** The version-2 fault content travels as the version-2 messages themselves
(spec/v2/faults.md types 10–15: :class:`~fleetwire.protocol.messages.v2.Digest`,
``DetailRequest``, ``DetailAnswer``, ``EscalationAck``, ``EscalationClose``,
``IsolationOrder``), mapped to and from the cores' values by :mod:`.fault_messages`. An isolation
order is signed in the node's own envelope, which the node verifies on delivery; the boundary
then checks the signer's role *now*, its authority and the order's freshness
(:meth:`IsolationBoundary.order_message`). A re-home is no new type (faults.md §5): the cell
coordinator's offer of terms it does not promise, referencing the commitment it replaces
(:func:`rehome_step`, :func:`rehome_of`).

**Versions.** A node writes to a peer at the newest version both read, learnt from the peer's
signed capability advertisement, and writes version 1 to a peer not heard from
(spec/v2/versions.md §2) — where no version-2 message can go. So each role tells the nodes
that write version-2 messages to it what it reads (:data:`READS`) as it starts
(:meth:`_FaultDriver.announce`): a member its coordinator, a cell coordinator its region
coordinator, an isolation boundary every region coordinator of its trust store; and any role
answers a peer's advertisement with its own, once, which is how a cell coordinator tells its
members.

**Switching digests on** (a fleet, the demo): give each member
``FaultMember(node, coordinator, lineage, lifetime_ms=..., digests=METRICS,
digest_period_ms=...)``, run it, and feed it samples with :meth:`FaultMember.observe`; its
cell coordinator's :class:`CellFaults` reads the digests, pulls the detail of anomalous ones
and keeps what it got (:attr:`CellFaults.digests`, :attr:`CellFaults.details`). What the
members put on their links is the traffic figure (``benchmarks/bench_digests.py`` measures a
cell of real nodes this way).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
import trio
from fleetwire.protocol.coordination import commitments as cm
from fleetwire.protocol.coordination.containment import (
    Containment,
    EscalateCluster,
    Quarantined,
    Rehome,
    Released,
)
from fleetwire.protocol.coordination.digests import (
    Digest,
    DigestBuilder,
    EmitDigest,
    KeepDetail,
    MetricSpec,
)
from fleetwire.protocol.coordination.escalation import (
    Escalate,
    EscalationPolicy,
    Escalator,
    Fault,
    Incident,
    Opened,
    Resolution,
)
from fleetwire.protocol.coordination.forensics import (
    DetailKeeper,
    DetailReceived,
    DetailRefused,
    FetchDetail,
    FetchFailed,
    ForensicPuller,
    PullPolicy,
)
from fleetwire.protocol.coordination.isolation import (
    IsolationBoundary,
    IsolationOrder,
    Lifted,
    OrderAction,
    ReclaimReservations,
    RevokeLeases,
    Severed,
    Target,
)
from fleetwire.protocol.coordination.lease_authority import LeaseAuthority
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Family,
    Header,
    Message,
    NotExpressible,
    Scope,
    Terms,
    v2,
)
from fleetwire.protocol.messages.header import PROTOCOL_VERSION
from fleetwire.protocol.trust import Role

from ..node.node import Node
from .fault_messages import digest_from_message, digest_message, order_from_message, order_message
from .lease import _Driver

__all__ = [
    "LINEAGE_KEY",
    "READS",
    "CellFaults",
    "FaultMember",
    "RegionFaults",
    "rehome_of",
    "rehome_step",
]

log = logging.getLogger("fleetwire.faults")

#: spec/v2/faults.md §0: the exception report's lineage key (an extension to a v1 reader).
LINEAGE_KEY: Final = 15
#: How many of the latest events of each kind a role keeps for reports and tests.
_KEEP: Final = 4096
#: The versions every fault role reads (spec/v2/versions.md §2): it advertises them to its peers.
READS: Final = (1, PROTOCOL_VERSION)


def rehome_step(header: Header, old: ContentId, terms: Terms) -> Commitment:
    """A re-home order in version 1's words: an offer of the new ``terms`` that its issuer (the
    coordinator) does not promise, referencing (v1 §4, ``references``) the commitment it
    replaces. The new promisor offers the terms in its own name; the old one hands over."""
    return Commitment(
        attrs.evolve(header, references=(old,)), state=CommitmentState.OFFERED, terms=terms
    )


def rehome_of(message: Commitment) -> ContentId | None:
    """The commitment a re-home order (:func:`rehome_step`) replaces; None for any other step."""
    refs = message.header.references
    if (
        message.state is not CommitmentState.OFFERED
        or message.terms is None
        or message.terms.promisor == message.header.issuer
        or len(refs) != 1
    ):
        return None
    return refs[0]


def lineage_of_report(message: ExceptionReport) -> str | None:
    """The lineage of a report (§0): its field when read at version 2, else the key kept as an
    extension by a version-1 reading; None if absent or not text."""
    value = (
        message.lineage
        if message.lineage is not None
        else dict(message.extensions).get(LINEAGE_KEY)
    )
    return value if isinstance(value, str) and 0 < len(value.encode()) <= 256 else None


def install_boundary(node: Node, admits: Callable[[int], bool]) -> None:
    """Make ``node`` refuse, at delivery, messages from sources ``admits`` refuses: the hook of
    the agent's admission (``admit(boundary=...)``)."""
    node.agent.boundary = admits


class _FaultDriver(_Driver):
    """The lease roles' driver, on other families, with the fault machines' deadlines."""

    families: tuple[Family, ...] = (Family.EXCEPTION,)

    def __init__(
        self,
        node: Node,
        lifetime_ms: int,
        on_send: Callable[[SignedMessage, int], None] | None = None,
        *,
        boundary: IsolationBoundary | None = None,
        authority: LeaseAuthority | None = None,
        on_reclaim: Callable[[Target], None] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send)
        self.boundary = boundary
        self.authority = authority
        self.on_reclaim = on_reclaim
        #: (DTN ms, action) of the latest isolation orders applied here (reports, tests).
        self.isolation_log: collections.deque[tuple[int, Severed | Lifted]] = collections.deque(
            maxlen=_KEEP
        )
        #: Orders refused, by stable code.
        self.orders_refused: collections.Counter[str] = collections.Counter()
        #: The peers told this node's versions (:meth:`announce`), once each.
        self.announced: set[int] = set()
        #: (message, peer) waiting for the peer's versions (:meth:`send`), oldest first.
        self.deferred: collections.deque[tuple[Message, int]] = collections.deque(maxlen=_KEEP)
        if boundary is not None:
            install_boundary(node, boundary.admits)

    def deadlines(self) -> Iterable[int | None]:
        return ()

    def deadline(self) -> int | None:
        times = [t for t in self.deadlines() if t is not None]
        return min(times) if times else None

    async def loop(self, task_status: trio.TaskStatus[None]) -> None:
        async with self.node.subscribe(*self.families) as inbox:
            await self.announce(self.peers())
            await self._serve(inbox, task_status)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.loop(task_status)

    def header(self, now: int, references: tuple[ContentId, ...] = ()) -> Header:
        return Header(self.node.node, now, self.next_sequence(), references=references)

    async def send(self, message: Message, to: int) -> SignedMessage | None:
        """Sign and send ``message`` to ``to``; None if it waits for ``to``'s versions.

        A peer not heard from is written at version 1 (spec/v2/versions.md §2), which has no
        words for a version-2 message: such a message waits in :attr:`deferred` instead of
        failing the role (a member's first digest may fall due before its coordinator's
        advertisement arrived), and goes, in order, with the first send after the node
        learnt that peer's versions.
        """
        if self.deferred:
            await self._send_deferred()
        try:
            return await self._send_now(message, to)
        except NotExpressible:
            if self.node.versions.versions_of(to) is not None:
                raise  # the peer said what it reads, and this is not in it: the caller's error
            if len(self.deferred) == self.deferred.maxlen:
                dropped, peer = self.deferred[0]
                log.warning("node=%s event=fault-message-dropped to=%s type=%s reason=%s",
                            self.node.node, peer, dropped.TYPE.name,
                            "too many messages wait for peers' versions")  # fmt: skip
            self.deferred.append((message, to))
            log.info("node=%s event=fault-message-deferred to=%s type=%s", self.node.node, to,
                     message.TYPE.name)  # fmt: skip
            return None

    async def _send_deferred(self) -> None:
        """Send what waited for peers whose versions the node has learnt since, in order."""
        known = self.node.versions.versions_of
        ready = [(m, to) for m, to in self.deferred if known(to) is not None]
        if not ready:
            return
        kept = [(m, to) for m, to in self.deferred if known(to) is None]
        self.deferred.clear()
        self.deferred.extend(kept)
        for message, to in ready:
            await self._send_now(message, to)

    async def _send_now(self, message: Message, to: int) -> SignedMessage:
        signed = await self.node.send(message, to, lifetime_ms=self.lifetime_ms)
        self.sent.append((signed, to))
        if self.on_send is not None:
            self.on_send(signed, to)
        return signed

    async def announce(self, peers: Iterable[int]) -> None:
        """Tell ``peers`` which versions this node reads (:data:`READS`, spec/v2/versions.md
        §2) in a signed capability advertisement, so that they write version-2 messages to it;
        each role does so as it starts, before any version-2 traffic."""
        now = self.node.now()
        advert = CapabilityAdvertisement(
            self.header(now), capabilities=(), versions=READS, lineage=self.lineage_name()
        )
        for peer in sorted(set(peers) - {self.node.node} - self.announced):
            self.announced.add(peer)
            await self.send(advert, peer)

    def lineage_name(self) -> str:
        return "-"

    def peers(self) -> Iterable[int]:
        """The nodes that write version-2 messages to this one (told :data:`READS` at start):
        for an isolation boundary, every node the trust store holds as a region coordinator
        now (only they may order it, §4)."""
        if self.boundary is None:
            return ()
        now = self.node.now()
        return {
            c.node
            for c in self.node.config.trust.credentials()
            if Role.REGION_COORDINATOR in c.roles and c.valid_at(now)
        }

    async def on_tick(self, now: int) -> None:
        pass

    async def on_message(self, signed: Any, now: int) -> None:
        try:
            await self.on_plain(signed, now)
        except FleetwireError as exc:
            # A signed message we cannot use: logged with its code, never a crash.
            log.warning("node=%s event=fault-message-refused code=%s from=%s reason=%s",
                        self.node.node, exc.code, signed.message.header.issuer,
                        exc.message)  # fmt: skip

    async def on_plain(self, signed: SignedMessage, now: int) -> None:
        """A verified message of the role's families."""
        message = signed.message
        if isinstance(message, v2.IsolationOrder) and self.boundary is not None:
            await self.apply_order(order_from_message(message), signed.kid, signed.content_id, now)
        if isinstance(message, CapabilityAdvertisement):
            # A peer that says what it reads hears what we read, once (versions.md §2), and
            # gets what waited for its versions, in order.
            await self.announce((message.header.issuer,))
            await self._send_deferred()

    async def apply_order(
        self, order: IsolationOrder, kid: bytes, order_id: ContentId, now: int
    ) -> None:
        """Apply an isolation order (type 15) at this boundary; the node verified its
        envelope, the boundary checks its signer's role, authority and freshness."""
        assert self.boundary is not None
        try:
            actions = self.boundary.order_message(order, kid, order_id, now)
        except FleetwireError as exc:
            self.orders_refused[exc.code] += 1
            log.warning("node=%s event=isolation-order-refused code=%s reason=%s",
                        self.node.node, exc.code, exc.message)  # fmt: skip
            return
        boundary = self.boundary
        for action in actions:
            if isinstance(action, Severed | Lifted):
                self.isolation_log.append((now, action))
                log.warning("node=%s event=isolation-%s target=%s", self.node.node,
                            type(action).__name__.lower(), action.target)  # fmt: skip
            elif isinstance(action, RevokeLeases) and self.authority is not None:
                authority = self.authority
                reason = f"isolated: {action.target.scope.name.lower()} {action.target.id}"
                await self.act(
                    authority.revoke_holders(lambda n: not boundary.admits(n), now, now, reason)
                )
            elif isinstance(action, ReclaimReservations) and self.on_reclaim is not None:
                self.on_reclaim(action.target)


class FaultMember(_FaultDriver):
    """A member node's exceptions, commitments, digests and detail (module docstring)."""

    families = (Family.EXCEPTION, Family.COMMITMENT)

    def __init__(
        self,
        node: Node,
        coordinator: int,
        lineage: str,
        *,
        lifetime_ms: int,
        digests: Mapping[str, MetricSpec] | None = None,
        digest_period_ms: int = 3_600_000,
        accept_offers: bool = True,
        detail_budget_bytes: int = 4 << 20,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send)
        self.coordinator = coordinator
        self.lineage = lineage
        self.accept_offers = accept_offers
        self.tracker = cm.CommitmentTracker(node.node, self.next_sequence)
        self.digests = (
            None
            if digests is None
            else DigestBuilder(node.node, digests, digest_period_ms, node.now())
        )
        self.keeper = DetailKeeper(detail_budget_bytes)
        #: Commitments taken over from another node: new id → the one it replaces.
        self.taken_over: dict[ContentId, ContentId] = {}
        #: Commitments handed over: old id → the node that took them.
        self.handed_over: dict[ContentId, int] = {}
        self.digests_sent = 0
        self.details_answered = 0

    def deadlines(self) -> Iterable[int | None]:
        yield self.tracker.next_deadline()
        if self.digests is not None:
            yield self.digests.next_deadline()

    # --- the application's side ---

    async def advertise(self, advert: CapabilityAdvertisement) -> None:
        await self.send(advert, self.coordinator)

    async def report(
        self,
        code: int,
        severity: int,
        *,
        affects: Iterable[ContentId] | None = None,
        detail: str | None = None,
    ) -> SignedMessage | None:
        """Report a fault of this node; ``affects`` defaults to its open commitments. None if
        the report waits for the coordinator's versions (:meth:`send`)."""
        now = self.node.now()
        if affects is None:
            affects = [
                cid
                for cid, state in self.tracker.commitments().items()
                if state in (cm.State.OFFERED, cm.State.ACCEPTED)
                and (terms := self.tracker.terms(cid)) is not None
                and terms.promisor == self.node.node
            ][:64]
        report = ExceptionReport(
            self.header(now),
            code=code,
            severity=severity,
            scope=Scope.NODE,
            scope_id=self.node.node,
            affects=tuple(affects),
            detail=detail,
            extensions=((LINEAGE_KEY, self.lineage),),
        )
        return await self.send(report, self.coordinator)

    async def offer(self, terms: Terms, references: tuple[ContentId, ...] = ()) -> ContentId:
        now = self.node.now()
        cid, actions = self.tracker.offer(terms, now, references=references)
        await self._commitment_actions(actions)
        self.poke()
        return cid

    async def observe(self, metric: str, value: int) -> None:
        """One telemetry sample (kept here; a digest summarises it)."""
        if self.digests is None:
            return
        await self._digest_actions(self.digests.observe(metric, value, self.node.now()))

    # --- the driver's side ---

    async def on_tick(self, now: int) -> None:
        await self._commitment_actions(self.tracker.tick(now))
        if self.digests is not None:
            await self._digest_actions(self.digests.tick(now))

    def lineage_name(self) -> str:
        return self.lineage

    def peers(self) -> Iterable[int]:
        return (
            *super().peers(),
            self.coordinator,
        )

    async def on_plain(self, signed: SignedMessage, now: int) -> None:
        message = signed.message
        issuer = message.header.issuer
        if (
            isinstance(message, Commitment)
            and issuer == self.coordinator
            and (old := rehome_of(message)) is not None
        ):
            assert message.terms is not None
            await self._rehome(old, message.terms, now)
        elif isinstance(message, Commitment):
            await self._commitment_actions(self.tracker.receive(message, now))
        elif isinstance(message, v2.DetailRequest) and issuer == self.coordinator:
            for cid in message.details:
                data = self.keeper.fetch(cid)
                if data is not None:  # a chunk no longer kept goes unanswered; the puller gives up
                    answer = v2.DetailAnswer(self.header(now), detail=cid, data=data)
                    await self.send(answer, issuer)
                    self.details_answered += 1
        else:
            await super().on_plain(signed, now)

    async def _rehome(self, old: ContentId, terms: Terms, now: int) -> None:
        mine = self.tracker.terms(old)
        if terms.promisor == self.node.node:
            if old in self.taken_over.values() or terms.deadline <= now:
                return  # taken over already (a duplicate), or too late to promise
            self.taken_over[await self.offer(terms, (old,))] = old
        elif mine is not None and mine.promisor == self.node.node and old not in self.handed_over:
            self.handed_over[old] = terms.promisor
            reason = f"re-homed to node {terms.promisor}"
            state = self.tracker.state(old)
            if state is cm.State.OFFERED:
                actions = self.tracker.withdraw(old, now, reason=reason)
            elif state is cm.State.ACCEPTED:
                # Handing over is no fault: the coordinator that ordered it needs no report.
                actions = [
                    a
                    for a in self.tracker.break_(old, now, reason=reason, severity=1)
                    if not isinstance(a, cm.Raise)
                ]
            else:
                return
            await self._commitment_actions(actions)

    async def _commitment_actions(self, actions: list[cm.Action]) -> None:
        for action in actions:
            if isinstance(action, cm.Send):
                await self.send(action.message, action.to)
                if action.to != self.coordinator:
                    await self.send(action.message, self.coordinator)  # the coordinator observes
            elif isinstance(action, cm.Raise):
                await self.send(action.report, self.coordinator)
            elif (
                isinstance(action, cm.Changed)
                and action.new is cm.State.OFFERED
                and self.accept_offers
                and (terms := self.tracker.terms(action.commitment)) is not None
                and terms.promisee == self.node.node
                and terms.deadline > self.node.now()
            ):
                await self._commitment_actions(
                    self.tracker.accept(action.commitment, self.node.now())
                )

    async def _digest_actions(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, KeepDetail):
                self.keeper.keep(action.content_id, action.data)
            elif isinstance(action, EmitDigest):
                header = self.header(self.node.now())
                await self.send(digest_message(header, action.digest), self.coordinator)
                self.digests_sent += 1


@attrs.define
class Incidents:
    """What a coordinator's escalation did, for reports and tests."""

    #: The latest incidents opened here (they close when their window is over).
    opened: collections.deque[Incident] = attrs.Factory(lambda: collections.deque(maxlen=_KEEP))
    #: The latest reports sent up, with the time each first went.
    escalated: collections.deque[tuple[int, ExceptionReport]] = attrs.Factory(
        lambda: collections.deque(maxlen=_KEEP)
    )
    acknowledged: int = 0
    closed: int = 0


class CellFaults(_FaultDriver):
    """A cell coordinator's escalation, containment, re-homing and forensic pull."""

    families = (Family.EXCEPTION, Family.CAPABILITY, Family.COMMITMENT)

    def __init__(
        self,
        node: Node,
        *,
        cell: int,
        region_coordinator: int,
        lifetime_ms: int,
        policy: EscalationPolicy | None = None,
        pull: PullPolicy | None = None,
        boundary: IsolationBoundary | None = None,
        authority: LeaseAuthority | None = None,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send, boundary=boundary, authority=authority)
        self.cell = cell
        self.region_coordinator = region_coordinator
        self.escalator = Escalator(node.node, Scope.CELL, cell, self.next_sequence, policy)
        self.containment = Containment(node.node, Scope.CELL, cell, self.next_sequence)
        self.observer = cm.CommitmentTracker(
            node.node, self.next_sequence, cm.TrackerConfig(observe_all=True)
        )
        self.puller = ForensicPuller(pull)
        self.lineages: dict[int, str] = {}
        self.incidents = Incidents()
        #: The containment's cluster reports (kept here: the escalator sends the cluster up).
        self.clusters: collections.deque[EscalateCluster] = collections.deque(maxlen=_KEEP)
        self.quarantines: collections.deque[tuple[int, Quarantined]] = collections.deque(
            maxlen=_KEEP
        )
        #: Commitments re-homed (bounded by the commitments the observer tracks).
        self.rehomed: dict[ContentId, Rehome] = {}
        #: The latest digests and detail received, and pulls that failed (bounded).
        self.digests: collections.deque[Digest] = collections.deque(maxlen=_KEEP)
        self.details: collections.deque[DetailReceived] = collections.deque(maxlen=_KEEP)
        self.pull_failures: collections.deque[FetchFailed | DetailRefused] = collections.deque(
            maxlen=_KEEP
        )

    def admits(self, node: int) -> bool:
        """The gate for the cell's lease authority (``CellCoordinator(admits=...)``)."""
        return self.containment.admits(node)

    def deadlines(self) -> Iterable[int | None]:
        yield self.escalator.next_deadline()
        yield self.puller.next_deadline()

    async def on_tick(self, now: int) -> None:
        self.containment.tick(now)
        await self._escalations(self.escalator.tick(now), now)
        await self._pulls(self.puller.tick(now))

    def peers(self) -> Iterable[int]:
        # The members hear it in answer to their own advertisements (:meth:`on_plain`).
        return (
            *super().peers(),
            self.region_coordinator,
        )

    async def on_plain(self, signed: SignedMessage, now: int) -> None:
        message = signed.message
        issuer = message.header.issuer
        if isinstance(message, v2.Digest):
            digest = digest_from_message(message)
            self.digests.append(digest)
            await self._pulls(self.puller.digest(digest, now))
        elif isinstance(message, v2.DetailAnswer):
            await self._pulls(self.puller.answer(issuer, message.detail, message.data, now))
        elif isinstance(message, v2.EscalationAck) and issuer == self.region_coordinator:
            self.incidents.acknowledged += 1
            self.escalator.acknowledge(message.escalation, now)
        elif isinstance(message, v2.EscalationClose) and issuer == self.region_coordinator:
            closed = self.escalator.close_escalation(message.escalation, now)
            self.incidents.closed += len(closed)
        elif isinstance(message, CapabilityAdvertisement):
            self.containment.advertise(issuer, message.lineage, message.cell)  # bounded there
            self.lineages[issuer] = message.lineage
            await self.announce((issuer,))  # a member that says what it reads hears ours
        elif isinstance(message, Commitment):
            self.observer.receive(message, now)  # observing: its actions are not ours to send
        elif (
            isinstance(message, ExceptionReport)
            and message.scope is Scope.NODE
            and message.scope_id == issuer
        ):
            # §0: the lineage is what we know of the node, never what its report says.
            lineage = self.lineages.get(issuer, "")
            fault = Fault(message, signed.content_id, lineage)
            await self._escalations(self.escalator.receive(fault, now), now)
            await self._contain(self.containment.anomaly(message, signed.content_id, now), now)
        else:
            await super().on_plain(signed, now)

    async def _escalations(self, actions: list[Any], now: int) -> None:
        for action in actions:
            if isinstance(action, Opened):
                self.incidents.opened.append(action.incident)
            elif isinstance(action, Escalate):
                await self.send(action.report, self.region_coordinator)
                if not action.resend:
                    self.incidents.escalated.append((now, action.report))

    async def _contain(self, actions: list[Any], now: int) -> None:
        quarantined = False
        for action in actions:
            if isinstance(action, Quarantined):
                self.quarantines.append((now, action))
                quarantined = True
            elif isinstance(action, EscalateCluster):
                self.clusters.append(action)
            elif isinstance(action, Released):
                pass
        if quarantined:
            await self.rehome()

    async def rehome(self) -> None:
        """Re-home the open commitments of quarantined nodes (once each)."""
        open_ = [
            (cid, terms, state)
            for cid, state in self.observer.commitments().items()
            if cid not in self.rehomed and (terms := self.observer.terms(cid)) is not None
        ]
        for plan in self.containment.rehome(open_):
            self.rehomed[plan.commitment] = plan
            step = rehome_step(self.header(self.node.now()), plan.commitment, plan.terms)
            await self.send(step, plan.to_node)
            await self.send(step, plan.from_node)

    async def _pulls(self, actions: list[Any]) -> None:
        asks: dict[int, list[ContentId]] = collections.defaultdict(list)
        for action in actions:
            if isinstance(action, FetchDetail):
                asks[action.node].append(action.content_id)
            elif isinstance(action, DetailReceived):
                self.details.append(action)
            elif isinstance(action, FetchFailed | DetailRefused):
                self.pull_failures.append(action)
        for node, cids in sorted(asks.items()):
            for start in range(0, len(cids), 64):
                ask = v2.DetailRequest(
                    self.header(self.node.now()), tuple(cids[start : start + 64])
                )
                await self.send(ask, node)


class RegionFaults(_FaultDriver):
    """A region coordinator's escalation and isolation orders (module docstring)."""

    families = (Family.EXCEPTION,)

    def __init__(
        self,
        node: Node,
        *,
        region: int,
        lifetime_ms: int,
        policy: EscalationPolicy | None = None,
        boundary: IsolationBoundary | None = None,
        authority: LeaseAuthority | None = None,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send, boundary=boundary, authority=authority)
        self.region = region
        self.escalator = Escalator(node.node, Scope.REGION, region, self.next_sequence, policy)
        self.incidents = Incidents()
        #: Cell-scope reports refused: not from the coordinator of the cell they are about.
        self.refused = 0
        #: The latest cell-scope reports taken (content id, issuer), oldest first (bounded).
        self.received: collections.deque[tuple[ContentId, int]] = collections.deque(maxlen=4096)

    def deadlines(self) -> Iterable[int | None]:
        yield self.escalator.next_deadline()

    async def on_tick(self, now: int) -> None:
        await self._escalations(self.escalator.tick(now), now)

    async def on_plain(self, signed: SignedMessage, now: int) -> None:
        message = signed.message
        if not isinstance(message, ExceptionReport) or message.scope is not Scope.CELL:
            await super().on_plain(signed, now)
            return
        # Only the coordinator of the cell a report is about may speak for it (§8 roles), and
        # only a cell of this region (when the credential names its region) is ours.
        try:
            signer = self.node.config.trust.key_for(signed.kid, now, Role.CELL_COORDINATOR)
            code = "not-its-cell"
            ours = signer.cell == message.scope_id and signer.region in (None, self.region)
        except FleetwireError as exc:
            code, ours = exc.code, False
        if not ours:
            self.refused += 1
            log.warning("node=%s event=cell-report-refused code=%s from=%s cell=%s",
                        self.node.node, code, message.header.issuer, message.scope_id)  # fmt: skip
            return
        # The cell coordinator's statement of its nodes' lineage (§0); signed by it.
        fault = Fault(message, signed.content_id, lineage_of_report(message) or "")
        self.received.append((signed.content_id, message.header.issuer))
        await self._escalations(self.escalator.receive(fault, now), now)
        ack = v2.EscalationAck(self.header(now), escalation=signed.content_id)
        await self.send(
            ack, message.header.issuer
        )  # idempotent at the cell: a resend is acked again

    async def close(self, incident: Incident, resolution: Resolution) -> None:
        """Close a region incident: every cell report it rests on is closed at its cell
        (spec/v2/faults.md §3, type 14), and the incident here."""
        now = self.node.now()
        issuers = dict(self.received)
        for cid in incident.reports:
            if cid in issuers:
                close = v2.EscalationClose(
                    self.header(now), escalation=cid, resolution=v2.Resolution(int(resolution))
                )
                await self.send(close, issuers[cid])
        await self._escalations(self.escalator.close(incident, now), now)

    async def _escalations(self, actions: list[Any], now: int) -> None:
        for action in actions:
            if isinstance(action, Opened):
                self.incidents.opened.append(action.incident)
            elif isinstance(action, Escalate) and not action.resend:
                # The fleet level above a region is an operator: the report stays here.
                self.incidents.escalated.append((now, action.report))

    async def order(
        self,
        action: OrderAction,
        target: Target,
        boundaries: Iterable[int],
        reason: str | None = None,
    ) -> IsolationOrder:
        """Sign an isolation order, apply it here if this is a boundary, send it to
        ``boundaries``; return its bytes."""
        now = self.node.now()
        header = self.header(now)
        order = IsolationOrder(header.issuer, now, header.sequence, action, target, reason)
        message = order_message(header, order)
        if self.boundary is not None:  # here first: the order's id is its core form's
            order_id = ContentId.of(order.to_payload())
            await self.apply_order(order, self.node.config.key.kid, order_id, now)
        for to in boundaries:
            if to != self.node.node:
                await self.send(message, to)
        return order
