"""Exception escalation: node → cell → region, deduplicated, rate-limited, acknowledged, closed.

Theory of operation
-------------------
One :class:`Escalator` runs in each coordinator (spec §6.3): a cell coordinator takes the
node-scope reports of its cell, a region coordinator the cell-scope reports of its region. Each
report comes in as a :class:`Fault` — the verified report, its content id, and the software
lineage of the node it is about, which the coordinator knows from that node's credential (§8)
or capability advertisement (§6.1), never from the report (spec/v2/faults.md §0). The
escalator groups faults into **incidents**: one per *fault signature* — ``(code, lineage)``,
the same kind of fault in the same software — per window.

An incident's life is the table :data:`TRANSITIONS`::

    OPEN --escalate--> HELD --send--> ESCALATED --acknowledge--> ACKNOWLEDGED --close--> CLOSED
      `--close (window over, contained)----------------------------------------------'

- **Open.** The first fault of a signature opens an incident for ``window_ms``. Every later
  fault of that signature inside the window joins it (its node is listed, its report referenced)
  instead of opening another: the same fault from forty nodes of one lineage is *one* incident.
  A report already seen (by content id) is ignored, as §6.3 asks.
- **Escalate.** The coordinator cannot contain the incident when a fault in it is severe
  (severity ≥ ``escalate_severity``, §6.3: 4 major fault, 5 loss) or when it reaches
  ``cluster_nodes`` distinct nodes (a common-mode fault nobody can re-plan around). It then
  **holds** the incident ``hold_ms`` (zero for severity ≥ ``immediate_severity``) so a burst
  arriving together is listed in one report.
- **Send.** A held incident is sent upward as one :class:`~..messages.ExceptionReport` with this
  coordinator's scope, a severity no lower than any fault in it, ``references`` naming the
  reports it escalates and ``affects`` the union of theirs (at most 64 each, §2). Sending is
  rate-limited: at most ``max_escalations`` per ``rate_window_ms``, the most severe first, so a
  burst — 10–100× the normal exception rate (the seeds) — stays inside the cell or region.
- **Acknowledge / close.** The upper level acknowledges the escalated report by content id;
  until it does, the report (the identical message) is re-sent every ``ack_timeout_ms``
  (doubling). An incident closes when the caller closes it, or when its window has passed and it
  was contained (never escalated) or acknowledged.

So for every (coordinator scope, fault signature) at most one report goes up per window —
property-tested — and every severe fault is listed in one that does. The escalator does no I/O
and reads no clock: :meth:`Escalator.tick` takes ``now``; :meth:`Escalator.next_deadline` says
when it next wants it. Memory is bounded by ``max_incidents`` and ``max_seen``.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from ..messages import ExceptionCode, ExceptionReport, Header, Scope, content_id

__all__ = [
    "DRAFT_WIRE",
    "TRANSITIONS",
    "Action",
    "Closed",
    "Escalate",
    "EscalationPolicy",
    "Escalator",
    "Fault",
    "Incident",
    "IncidentState",
    "Opened",
    "Resolution",
    "Signature",
]

MAX_REFERENCES: Final = 64  # §2: arrays of content ids hold at most 64
MAX_DETAIL_BYTES: Final = 256
#: spec/v2/faults.md §0: the exception report's lineage key.
LINEAGE_KEY: Final = 15
KNOWN_CODES: Final = frozenset(int(code) for code in ExceptionCode)


class IncidentState(enum.Enum):
    OPEN = "open"
    HELD = "held"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class Move(enum.Enum):
    ESCALATE = "escalate"
    SEND = "send"
    ACKNOWLEDGE = "acknowledge"
    CLOSE = "close"


_I = IncidentState
#: The whole life of an incident; a move with no entry is refused (:class:`LocalProtocolError`).
TRANSITIONS: Final[dict[IncidentState, dict[Move, IncidentState]]] = {
    _I.OPEN: {Move.ESCALATE: _I.HELD, Move.CLOSE: _I.CLOSED},
    _I.HELD: {Move.SEND: _I.ESCALATED, Move.CLOSE: _I.CLOSED},
    _I.ESCALATED: {Move.ACKNOWLEDGE: _I.ACKNOWLEDGED, Move.CLOSE: _I.CLOSED},
    _I.ACKNOWLEDGED: {Move.CLOSE: _I.CLOSED},
    _I.CLOSED: {},
}


class Resolution(enum.IntEnum):
    """How the level above closed an escalated incident (draft version-2 close message)."""

    RESOLVED = 0
    CONTAINED = 1
    SUPERSEDED = 2


#: The proposed version-2 messages (spec/v2/faults.md, a draft): type code and body keys.
DRAFT_WIRE: Final[dict[str, tuple[int, tuple[tuple[int, str], ...]]]] = {
    # Version 1's report with the lineage added: the fault signature travels with the report.
    "exception-report": (
        3,
        (
            (8, "code"),
            (9, "severity"),
            (10, "scope"),
            (11, "scope_id"),
            (12, "affects"),
            (13, "digest"),
            (14, "detail"),
            (15, "lineage"),
        ),
    ),
    "escalation-ack": (13, ((8, "escalation"),)),
    "escalation-close": (14, ((8, "escalation"), (9, "resolution"), (10, "detail"))),
}


@attrs.frozen(slots=True)
class EscalationPolicy:
    """The documented thresholds (times in milliseconds)."""

    #: §6.3: a cell coordinator escalates severity 4 (major fault) and 5 (loss).
    escalate_severity: int = 4
    #: Severity sent without the hold (a loss does not wait for company).
    immediate_severity: int = 5
    #: Distinct nodes with one fault signature in one window: a common-mode fault.
    cluster_nodes: int = 3
    #: How long an incident gathers the faults of its signature.
    window_ms: int = 3_600_000
    #: Wait after the trigger so a burst is listed in one report.
    hold_ms: int = 30_000
    #: Escalations sent per ``rate_window_ms``, at most.
    max_escalations: int = 10
    rate_window_ms: int = 3_600_000
    #: Re-send an unacknowledged escalation after this long (then doubling, up to 8×).
    ack_timeout_ms: int = 600_000
    max_incidents: int = 4_096
    max_seen: int = 65_536
    max_nodes_listed: int = 1_024


@attrs.frozen(slots=True)
class Signature:
    """What makes two faults "the same": the kind of fault and the software it happened in."""

    code: int
    lineage: str


@attrs.frozen(slots=True)
class Fault:
    """An exception report that reached this coordinator, with the lineage of its subject."""

    report: ExceptionReport
    content_id: ContentId
    lineage: str

    @property
    def signature(self) -> Signature:
        # §6.3: a code the reader does not know is treated as 0 (other); this also bounds how
        # many signatures a hostile reporter can make.
        code = self.report.code if self.report.code in KNOWN_CODES else ExceptionCode.OTHER
        return Signature(int(code), self.lineage)

    @property
    def node(self) -> int:
        """The node (or, at a region, the cell) the fault is in."""
        return self.report.scope_id


@attrs.define(slots=True)
class Incident:
    """One fault signature in one window: the faults that joined it and where it stands."""

    number: int
    signature: Signature
    opened_at: int
    state: IncidentState = IncidentState.OPEN
    severity: int = 0
    nodes: list[int] = attrs.Factory(list)
    node_count: int = 0
    reports: list[ContentId] = attrs.Factory(list)
    affects: list[ContentId] = attrs.Factory(list)
    send_at: int | None = None
    escalation: ExceptionReport | None = None
    escalation_id: ContentId | None = None
    resend_at: int | None = None
    resend_every: int = 0

    def __contains__(self, node: int) -> bool:
        return node in self.nodes


# --- actions -----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Opened:
    incident: Incident


@attrs.frozen(slots=True)
class Escalate:
    """Seal ``report`` and send it to the next level up (a re-send carries the same message)."""

    report: ExceptionReport
    incident: Incident
    #: A re-send of an unacknowledged escalation: the identical message again.
    resend: bool = False


@attrs.frozen(slots=True)
class Closed:
    incident: Incident
    escalated: bool


Action = Opened | Escalate | Closed


# --- the escalator -----------------------------------------------------------------------


class Escalator:
    """A coordinator's exception escalation (module docstring)."""

    def __init__(
        self,
        node: int,
        scope: Scope,
        scope_id: int,
        next_sequence: Callable[[], int],
        policy: EscalationPolicy | None = None,
    ) -> None:
        if scope is Scope.NODE:
            raise LocalProtocolError("escalation runs in a cell or region coordinator")
        self.node = node
        self.scope = scope
        self.scope_id = scope_id
        self.policy = policy or EscalationPolicy()
        self._next_sequence = next_sequence
        #: Incidents not closed, by signature (or, once their window is over, by a retired key).
        self._open: dict[Signature | _Retired, Incident] = {}
        self._by_escalation: dict[ContentId, Incident] = {}
        self._seen: collections.OrderedDict[ContentId, int] = collections.OrderedDict()
        self._sent_at: collections.deque[int] = collections.deque()
        self._numbers = 0
        #: The latest incidents escalated here (bounded), with the time each report first went up.
        self.escalations: collections.deque[tuple[int, Incident]] = collections.deque(
            maxlen=self.policy.max_incidents
        )

    def incidents(self) -> list[Incident]:
        return list(self._open.values())

    # --- inputs ---

    def receive(self, fault: Fault, now: int) -> list[Action]:
        """A verified exception report about one node (or cell) below this coordinator."""
        if fault.content_id in self._seen:
            return []  # the same report again: §6.3, never escalate one twice
        if len(self._seen) >= self.policy.max_seen:
            self._seen.popitem(last=False)
        self._seen[fault.content_id] = now
        actions: list[Action] = []
        incident = self._open.get(fault.signature)
        if incident is not None and now >= incident.opened_at + self.policy.window_ms:
            actions.extend(self._close_if_done(incident, now, window_over=True))
            incident = self._open.get(fault.signature)
        if incident is None:
            if len(self._open) >= self.policy.max_incidents:
                actions.extend(self._make_room(now))
            self._numbers += 1
            incident = Incident(self._numbers, fault.signature, now)
            self._open[fault.signature] = incident
            actions.append(Opened(incident))
        self._join(incident, fault)
        if incident.state is IncidentState.OPEN and self._cannot_contain(incident):
            self._move(incident, Move.ESCALATE)
            hold = 0 if incident.severity >= self.policy.immediate_severity else self.policy.hold_ms
            incident.send_at = now + hold
        elif (
            incident.state is IncidentState.HELD
            and incident.severity >= self.policy.immediate_severity
        ):
            incident.send_at = now
        actions.extend(self.tick(now))
        return actions

    def acknowledge(self, escalation: ContentId, now: int) -> list[Action]:
        """The level above acknowledged the report with content id ``escalation``."""
        incident = self._by_escalation.get(escalation)
        if incident is None or incident.state is not IncidentState.ESCALATED:
            return []  # unknown, duplicate, or already closed: acknowledgements are idempotent
        self._move(incident, Move.ACKNOWLEDGE)
        incident.resend_at = None
        return self._close_if_done(incident, now, window_over=False)

    def close(self, incident: Incident, now: int) -> list[Action]:
        """Close ``incident`` (the level above, or an operator, says it is dealt with)."""
        if incident.state is IncidentState.CLOSED:
            return []
        return self._finish(incident)

    def close_escalation(self, escalation: ContentId, now: int) -> list[Action]:
        """The level above closed the report with content id ``escalation`` (spec/v2/faults.md
        §3, type 14); unknown or already closed: nothing (closes are idempotent)."""
        incident = self._by_escalation.get(escalation)
        return [] if incident is None else self.close(incident, now)

    def tick(self, now: int) -> list[Action]:
        actions: list[Action] = []
        while self._sent_at and now - self._sent_at[0] >= self.policy.rate_window_ms:
            self._sent_at.popleft()
        due = sorted(
            (
                i
                for i in self._open.values()
                if i.state is IncidentState.HELD and i.send_at is not None and now >= i.send_at
            ),
            key=lambda i: (-i.severity, i.send_at, i.number),
        )
        for incident in due:
            if len(self._sent_at) >= self.policy.max_escalations:
                break  # rate limit: it waits, most severe first
            actions.append(self._send(incident, now))
        for incident in list(self._open.values()):
            if (
                incident.state is IncidentState.ESCALATED
                and incident.resend_at is not None
                and now >= incident.resend_at
            ):
                assert incident.escalation is not None
                incident.resend_every = min(
                    incident.resend_every * 2, 8 * self.policy.ack_timeout_ms
                )
                incident.resend_at = now + incident.resend_every
                actions.append(Escalate(incident.escalation, incident, resend=True))
            if now >= incident.opened_at + self.policy.window_ms:
                actions.extend(self._close_if_done(incident, now, window_over=True))
        return actions

    def next_deadline(self) -> int | None:
        times: list[int] = []
        for incident in self._open.values():
            if incident.state is IncidentState.HELD and incident.send_at is not None:
                times.append(max(incident.send_at, self._rate_free_at()))
            if incident.resend_at is not None:
                times.append(incident.resend_at)
            if incident.state in (IncidentState.OPEN, IncidentState.ACKNOWLEDGED):
                times.append(incident.opened_at + self.policy.window_ms)
        return min(times, default=None)

    # --- internals ---

    def _rate_free_at(self) -> int:
        if len(self._sent_at) < self.policy.max_escalations:
            return 0
        return self._sent_at[0] + self.policy.rate_window_ms

    def _join(self, incident: Incident, fault: Fault) -> None:
        incident.severity = max(incident.severity, fault.report.severity)
        if fault.node not in incident.nodes:
            incident.node_count += 1
            if len(incident.nodes) < self.policy.max_nodes_listed:
                incident.nodes.append(fault.node)
        if len(incident.reports) < MAX_REFERENCES:
            incident.reports.append(fault.content_id)
        for cid in fault.report.affects:
            if cid not in incident.affects and len(incident.affects) < MAX_REFERENCES:
                incident.affects.append(cid)

    def _cannot_contain(self, incident: Incident) -> bool:
        return (
            incident.severity >= self.policy.escalate_severity
            or incident.node_count >= self.policy.cluster_nodes
        )

    def _send(self, incident: Incident, now: int) -> Escalate:
        signature = incident.signature
        listed = ", ".join(str(n) for n in sorted(incident.nodes))
        what = "cells" if self.scope is Scope.REGION else "nodes"
        detail = f"{incident.node_count} {what} of lineage {signature.lineage!r}: {listed}"
        report = ExceptionReport(
            Header(self.node, now, self._next_sequence(), references=tuple(incident.reports)),
            code=signature.code,
            severity=incident.severity,
            scope=self.scope,
            scope_id=self.scope_id,
            affects=tuple(incident.affects),
            detail=_truncate(detail),
            # spec/v2/faults.md §0: the report names the lineage of the nodes it lists, so the
            # level above groups it by the same fault signature (a v1 reader keeps key 15).
            extensions=((LINEAGE_KEY, signature.lineage),) if signature.lineage else (),
        )
        self._move(incident, Move.SEND)
        incident.escalation = report
        incident.escalation_id = content_id(report)
        self._by_escalation[incident.escalation_id] = incident
        incident.resend_every = self.policy.ack_timeout_ms
        incident.resend_at = now + incident.resend_every
        self._sent_at.append(now)
        self.escalations.append((now, incident))
        return Escalate(report, incident)

    def _close_if_done(self, incident: Incident, now: int, *, window_over: bool) -> list[Action]:
        over = window_over or now >= incident.opened_at + self.policy.window_ms
        if over and incident.state in (IncidentState.OPEN, IncidentState.ACKNOWLEDGED):
            return self._finish(incident)
        if over and self._open.get(incident.signature) is incident:
            # Held or awaiting acknowledgement: it lives on, but the window is over, so a new
            # fault of the same signature opens a new incident.
            del self._open[incident.signature]
            self._open[_Retired(incident.number, incident.signature)] = incident
        return []

    def _finish(self, incident: Incident) -> list[Action]:
        escalated = incident.escalation is not None
        self._move(incident, Move.CLOSE)
        incident.resend_at = None
        for key, value in list(self._open.items()):
            if value is incident:
                del self._open[key]
        if incident.escalation_id is not None:
            self._by_escalation.pop(incident.escalation_id, None)
        return [Closed(incident, escalated)]

    def _make_room(self, now: int) -> list[Action]:
        """At the bound, close the oldest contained incident, or failing that the oldest of all."""
        oldest = sorted(
            self._open.values(), key=lambda i: (i.state is not IncidentState.OPEN, i.opened_at)
        )
        return self._finish(oldest[0])

    @staticmethod
    def _move(incident: Incident, move: Move) -> None:
        new = TRANSITIONS[incident.state].get(move)
        if new is None:
            raise LocalProtocolError(
                f"cannot {move.value} an incident that is {incident.state.value}"
            )
        incident.state = new


@attrs.frozen(slots=True)
class _Retired:
    """Key of an incident whose window is over but that still awaits sending or acknowledgement."""

    number: int
    signature: Signature


def _truncate(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_DETAIL_BYTES:
        return text
    return data[: MAX_DETAIL_BYTES - 3].decode(errors="ignore") + "..."
