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

**Carrier.** Until the codec reads version 2, the version-2 fault messages (types 10–15 of
spec/v2/faults.md) travel as version-1 exception reports — severity 1, code "other", about their
issuer — with the draft message under extension key :data:`DRAFT_KEY` as ``[type, body]``, body
the standalone form the coordination module defines (a digest's CBOR, an isolation order's
COSE_Sign1). A version-1 reader keeps the key as an extension (v1 §5.3); :func:`read_carrier`
reads it back with typed, bounded checks. One private kind, :attr:`Draft.REHOME` (a commitment
re-homed, ``[old commitment, new terms]``), is proposed for the draft.

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
import enum
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    issue_order,
)
from fleetwire.protocol.coordination.lease_authority import LeaseAuthority
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.errors import FleetwireError, RemoteProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    CapabilityAdvertisement,
    Commitment,
    ExceptionCode,
    ExceptionReport,
    Family,
    Header,
    Message,
    Scope,
    Terms,
)
from fleetwire.protocol.trust import Role

from ..node import Node
from .lease import _Driver

__all__ = [
    "DRAFT_KEY",
    "LINEAGE_KEY",
    "CarrierInvalid",
    "CellFaults",
    "Draft",
    "FaultMember",
    "RegionFaults",
    "carrier",
    "read_carrier",
]

log = logging.getLogger("fleetwire.faults")

#: spec/v2/faults.md §0: the exception report's lineage key (an extension to a v1 reader).
LINEAGE_KEY: Final = 15
#: The extension key a carrier holds its draft message under (module docstring).
DRAFT_KEY: Final = 16
#: Whom a carrier is about when it is about nothing: its own issuer, advisory.
_CARRIER_SEVERITY: Final = 1
#: How many of the latest events of each kind a role keeps for reports and tests.
_KEEP: Final = 4096


class Draft(enum.IntEnum):
    """The version-2 draft messages a carrier holds (spec/v2/faults.md type codes)."""

    DIGEST = 10
    DETAIL_REQUEST = 11
    DETAIL_ANSWER = 12
    ESCALATION_ACK = 13
    ESCALATION_CLOSE = 14
    ISOLATION_ORDER = 15
    #: Proposed: ``[old commitment, new terms]``; the new promisor takes over, the old hands over.
    REHOME = 64


class CarrierInvalid(RemoteProtocolError):
    code = "fault-carrier-invalid"


def carrier(header: Header, kind: Draft, body: Any) -> ExceptionReport:
    """A version-1 exception report carrying draft message ``kind`` (module docstring)."""
    return ExceptionReport(
        header,
        code=ExceptionCode.OTHER,
        severity=_CARRIER_SEVERITY,
        scope=Scope.NODE,
        scope_id=header.issuer,
        detail=f"v2 {kind.name.lower().replace('_', '-')}",
        extensions=((DRAFT_KEY, [int(kind), body]),),
    )


def read_carrier(message: Message) -> tuple[Draft, Any] | None:
    """``(kind, body)`` of a carrier, None for any other message; :class:`CarrierInvalid` for
    a malformed one (the body's own reader checks the body)."""
    if not isinstance(message, ExceptionReport):
        return None
    value = dict(message.extensions).get(DRAFT_KEY)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or type(value[0]) is not int:
        raise CarrierInvalid("a carrier holds [type, body]")
    try:
        return Draft(value[0]), value[1]
    except ValueError:
        raise CarrierInvalid(f"unknown draft message type {value[0]}") from None


def lineage_of_report(message: ExceptionReport) -> str | None:
    """The lineage key of a report (§0), if present and text."""
    value = dict(message.extensions).get(LINEAGE_KEY)
    return value if isinstance(value, str) and 0 < len(value.encode()) <= 256 else None


def _cid(value: Any) -> ContentId:
    if not isinstance(value, bytes):
        raise CarrierInvalid("a content id is a byte string")
    return ContentId.from_bytes(value)


def _cids(value: Any) -> list[ContentId]:
    if not isinstance(value, list) or not 1 <= len(value) <= 64:
        raise CarrierInvalid("1..64 content ids")
    return [_cid(v) for v in value]


_TERMS_KEYS: Final = ("promisor", "promisee", "action", "quantity", "unit", "deadline")


def _terms_body(terms: Terms) -> dict[int, Any]:
    return {i: getattr(terms, name) for i, name in enumerate(_TERMS_KEYS)}


def _read_terms(value: Any) -> Terms:
    if not isinstance(value, dict) or set(value) != set(range(len(_TERMS_KEYS))):
        raise CarrierInvalid("terms are the map {0..5}")
    for key in (0, 1, 3, 5):
        if type(value[key]) is not int or value[key] < 0:
            raise CarrierInvalid(f"terms {_TERMS_KEYS[key]}: an unsigned integer")
    for key in (2, 4):
        if not isinstance(value[key], str) or not 0 < len(value[key].encode()) <= 256:
            raise CarrierInvalid(f"terms {_TERMS_KEYS[key]}: text of 1..256 bytes")
    return Terms(*(value[i] for i in range(len(_TERMS_KEYS))))


def install_boundary(node: Node, admits: Callable[[int], bool]) -> None:
    """Make ``node`` refuse, at delivery, messages from sources ``admits`` refuses: the hook of
    the agent's admission (``admit(boundary=...)``), wherever this node's admission runs."""
    agent = getattr(node, "agent", None)  # a node driving the sans-IO agent admits there
    if agent is not None:
        agent.boundary = admits
    else:
        node.admission.boundary = admits


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
        if boundary is not None:
            install_boundary(node, boundary.admits)

    def machines(self) -> Sequence[Any]:
        return ()  # no lease machines: the replay marks of _serve concern none of ours

    def deadlines(self) -> Iterable[int | None]:
        return ()

    def deadline(self) -> int | None:
        times = [t for t in self.deadlines() if t is not None]
        return min(times) if times else None

    async def loop(self, task_status: trio.TaskStatus[None]) -> None:
        async with self.node.subscribe(*self.families) as inbox:
            await self._serve(inbox, task_status)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.loop(task_status)

    def header(self, now: int, references: tuple[ContentId, ...] = ()) -> Header:
        return Header(self.node.node, now, self.next_sequence(), references=references)

    async def send(self, message: Message, to: int) -> SignedMessage:
        signed = await self.node.send(message, to, lifetime_ms=self.lifetime_ms)
        self.sent.append((signed, to))
        if self.on_send is not None:
            self.on_send(signed, to)
        return signed

    async def send_draft(self, kind: Draft, body: Any, to: int) -> SignedMessage:
        return await self.send(carrier(self.header(self.node.now()), kind, body), to)

    async def on_tick(self, now: int) -> None:
        pass

    async def on_message(self, signed: Any, now: int) -> None:
        try:
            draft = read_carrier(signed.message)
            if draft is None:
                await self.on_plain(signed, now)
            else:
                await self.on_draft(signed, draft[0], draft[1], now)
        except FleetwireError as exc:
            # A signed message we cannot use: logged with its code, never a crash.
            log.warning("node=%s event=fault-message-refused code=%s from=%s reason=%s",
                        self.node.node, exc.code, signed.message.header.issuer,
                        exc.message)  # fmt: skip

    async def on_plain(self, signed: SignedMessage, now: int) -> None:
        """A message that is not a carrier."""

    async def on_draft(self, signed: SignedMessage, kind: Draft, body: Any, now: int) -> None:
        if kind is Draft.ISOLATION_ORDER and self.boundary is not None:
            if not isinstance(body, bytes):
                raise CarrierInvalid("an isolation order is COSE_Sign1 bytes")
            await self.apply_order(body, now)

    async def apply_order(self, data: bytes, now: int) -> None:
        """Verify and apply a signed isolation order at this boundary."""
        assert self.boundary is not None
        try:
            actions = self.boundary.order(data, now)
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
    ) -> SignedMessage:
        """Report a fault of this node; ``affects`` defaults to its open commitments."""
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

    async def on_plain(self, signed: SignedMessage, now: int) -> None:
        message = signed.message
        if isinstance(message, Commitment):
            await self._commitment_actions(self.tracker.receive(message, now))

    async def on_draft(self, signed: SignedMessage, kind: Draft, body: Any, now: int) -> None:
        issuer = signed.message.header.issuer
        if kind is Draft.DETAIL_REQUEST and issuer == self.coordinator:
            for cid in _cids(body):
                data = self.keeper.fetch(cid)
                if data is not None:  # a chunk no longer kept goes unanswered; the puller gives up
                    await self.send_draft(Draft.DETAIL_ANSWER, [cid.raw, data], issuer)
                    self.details_answered += 1
        elif kind is Draft.REHOME and issuer == self.coordinator:
            if not isinstance(body, list) or len(body) != 2:
                raise CarrierInvalid("a re-home is [commitment, terms]")
            old, terms = _cid(body[0]), _read_terms(body[1])
            await self._rehome(old, terms, now)
        else:
            await super().on_draft(signed, kind, body, now)

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
                await self.send_draft(Draft.DIGEST, action.digest.to_cbor(), self.coordinator)
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

    async def on_plain(self, signed: SignedMessage, now: int) -> None:
        message = signed.message
        issuer = message.header.issuer
        if isinstance(message, CapabilityAdvertisement):
            self.containment.advertise(issuer, message.lineage, message.cell)  # bounded there
            self.lineages[issuer] = message.lineage
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

    async def on_draft(self, signed: SignedMessage, kind: Draft, body: Any, now: int) -> None:
        issuer = signed.message.header.issuer
        if kind is Draft.DIGEST:
            digest = Digest.from_cbor(body) if isinstance(body, bytes) else None
            if digest is None or digest.node != issuer:
                raise CarrierInvalid("a digest is the CBOR of its issuer's digest")
            self.digests.append(digest)
            await self._pulls(self.puller.digest(digest, now))
        elif kind is Draft.DETAIL_ANSWER:
            if not isinstance(body, list) or len(body) != 2 or not isinstance(body[1], bytes):
                raise CarrierInvalid("a detail answer is [content id, bytes]")
            await self._pulls(self.puller.answer(issuer, _cid(body[0]), body[1], now))
        elif kind is Draft.ESCALATION_ACK and issuer == self.region_coordinator:
            self.incidents.acknowledged += 1
            self.escalator.acknowledge(_cid(body), now)
        elif kind is Draft.ESCALATION_CLOSE and issuer == self.region_coordinator:
            if not isinstance(body, list) or len(body) != 2 or body[1] not in set(Resolution):
                raise CarrierInvalid("an escalation close is [content id, resolution]")
            closed = self.escalator.close_escalation(_cid(body[0]), now)
            self.incidents.closed += len(closed)
        else:
            await super().on_draft(signed, kind, body, now)

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
            body = [plan.commitment.raw, _terms_body(plan.terms)]
            await self.send_draft(Draft.REHOME, body, plan.to_node)
            await self.send_draft(Draft.REHOME, body, plan.from_node)

    async def _pulls(self, actions: list[Any]) -> None:
        asks: dict[int, list[bytes]] = collections.defaultdict(list)
        for action in actions:
            if isinstance(action, FetchDetail):
                asks[action.node].append(action.content_id.raw)
            elif isinstance(action, DetailReceived):
                self.details.append(action)
            elif isinstance(action, FetchFailed | DetailRefused):
                self.pull_failures.append(action)
        for node, cids in sorted(asks.items()):
            for start in range(0, len(cids), 64):
                await self.send_draft(Draft.DETAIL_REQUEST, cids[start : start + 64], node)


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
        await self.send_draft(
            Draft.ESCALATION_ACK, signed.content_id.raw, message.header.issuer
        )  # idempotent at the cell: a resend is acknowledged again

    async def close(self, incident: Incident, resolution: Resolution) -> None:
        """Close a region incident: every cell report it rests on is closed at its cell
        (spec/v2/faults.md §3, type 14), and the incident here."""
        now = self.node.now()
        issuers = dict(self.received)
        for cid in incident.reports:
            if cid in issuers:
                await self.send_draft(
                    Draft.ESCALATION_CLOSE, [cid.raw, int(resolution)], issuers[cid]
                )
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
    ) -> bytes:
        """Sign an isolation order, apply it here if this is a boundary, send it to
        ``boundaries``; return its bytes."""
        now = self.node.now()
        order = IsolationOrder(self.node.node, now, self.next_sequence(), action, target, reason)
        data = issue_order(order, self.node.config.key)
        if self.boundary is not None:
            await self.apply_order(data, now)
        for to in boundaries:
            if to != self.node.node:
                await self.send_draft(Draft.ISOLATION_ORDER, data, to)
        return data
