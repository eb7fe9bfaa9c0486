"""The commitment tracker: one node's view of the promises it makes, receives or watches (spec §6.2).

Theory of operation
-------------------
A commitment is named by the content id of its offer. Its life is the table
:data:`TRANSITIONS` (``{state: {step: new state}}``), the same for every party::

    OFFERED --accept--> ACCEPTED --fulfil--> FULFILLED
       |                   |------break----> BROKEN
       |                   `----withdraw---> WITHDRAWN   (the promisor withdrew before it saw the accept)
       |--fulfil/break/withdraw--> final     (an observer may see a final step before the accept)
       `--lapse--> WITHDRAWN                 (nobody accepted before the deadline)

Who may take which step is :data:`SENDER` (the spec's table: the promisee accepts, the promisor
does everything else). A step from anyone else, or one the table has no move for — anything after
a final state, an accept after a withdraw — is ignored, as §6.2 requires, and changes nothing.

**Why the two views converge.** Only the promisor writes final steps, and it writes exactly one
per commitment, so a promisee or observer that receives it lands in the same final state. What
remains is loss: a DTN may drop the one message that settles it. The tracker therefore does its
own anti-entropy, without acknowledgements: a party whose view is still open re-sends its latest
step (the identical message, so the same content id and no new sequence number) with backoff, and
a party whose view is final answers any step about that commitment by re-sending its final step.
So as long as messages flow at all, the open side keeps asking until the final answer arrives.

**Deadlines.** The tracker is given ``now`` by :meth:`CommitmentTracker.tick` (and meets the
deadlines of a commitment before applying a step received for it, so outcomes do not depend on
when ``tick`` last ran):

- promisor, offer not accepted by the deadline: it withdraws ("offer lapsed");
- promisor, accepted but not fulfilled by the deadline: it breaks the commitment and raises an
  exception report naming it in ``affects`` (the break step references that report, §6.2);
- promisee, offer it did not accept by ``deadline + grace``: it lapses locally (the promisor
  withdraws at its own deadline; ``grace`` covers clock drift);
- promisee, accepted and still open at ``deadline + grace``: the commitment is *late*, and it
  raises an exception report naming it, once (the promisor may be silent);
- observer, still open at ``deadline + grace``: late. It cannot tell "nobody accepted" from "I
  missed the accept", so it does not lapse the offer; the promisor's final step settles it.

**Figures.** :meth:`CommitmentTracker.figures` puts each known commitment in exactly one bucket —
open, late, fulfilled, broken, withdrawn — grouped by promisor, and by cell through a
``cell_of`` map; commitments forgotten after ``retain_ms`` stay counted.

Bounds: at most ``max_commitments`` tracked (further offers are refused, ignored), at most
``max_pending`` steps that arrived before their offer (oldest dropped), each asking for the offer
with :class:`FetchOffer` (again with backoff until it comes, as a fetch may be lost too). Nothing here reads a clock or does I/O; the runtime seals and
sends what :class:`Send` and :class:`Raise` carry.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from ..messages import (
    Commitment,
    CommitmentState,
    ExceptionCode,
    ExceptionReport,
    Header,
    Scope,
    Terms,
    content_id,
)

__all__ = [
    "SENDER",
    "TRANSITIONS",
    "Action",
    "Changed",
    "CommitmentTracker",
    "FetchOffer",
    "Figures",
    "Ignored",
    "Party",
    "Raise",
    "Send",
    "Step",
    "TrackerConfig",
    "diagram",
]

State = CommitmentState


class Step(enum.Enum):
    """What moves a commitment: the four wire steps after the offer, and the deadline passing."""

    ACCEPT = "accept"
    FULFIL = "fulfil"
    BREAK = "break"
    WITHDRAW = "withdraw"
    LAPSE = "lapse"  # the deadline passed with the offer not accepted (local, never sent)


class Party(enum.Enum):
    PROMISOR = "promisor"
    PROMISEE = "promisee"
    OBSERVER = "observer"


#: The whole life of a commitment (§6.2); a step with no entry is ignored.
TRANSITIONS: Final[dict[State, dict[Step, State]]] = {
    State.OFFERED: {
        Step.ACCEPT: State.ACCEPTED,
        Step.FULFIL: State.FULFILLED,
        Step.BREAK: State.BROKEN,
        Step.WITHDRAW: State.WITHDRAWN,
        Step.LAPSE: State.WITHDRAWN,
    },
    State.ACCEPTED: {
        Step.FULFIL: State.FULFILLED,
        Step.BREAK: State.BROKEN,
        Step.WITHDRAW: State.WITHDRAWN,
    },
    State.FULFILLED: {},
    State.BROKEN: {},
    State.WITHDRAWN: {},
}

#: Who writes each step (§6.2 table); from anyone else a step is ignored.
SENDER: Final[dict[Step, Party]] = {
    Step.ACCEPT: Party.PROMISEE,
    Step.FULFIL: Party.PROMISOR,
    Step.BREAK: Party.PROMISOR,
    Step.WITHDRAW: Party.PROMISOR,
}

#: Where a party may itself take a step: the promisor fulfils or breaks only what was accepted
#: and withdraws only what was not (the receive table is wider, for reordered observers).
LOCAL_FROM: Final[dict[Step, State]] = {
    Step.ACCEPT: State.OFFERED,
    Step.FULFIL: State.ACCEPTED,
    Step.BREAK: State.ACCEPTED,
    Step.WITHDRAW: State.OFFERED,
}

_STEP_OF_STATE: Final = {
    State.ACCEPTED: Step.ACCEPT,
    State.FULFILLED: Step.FULFIL,
    State.BROKEN: Step.BREAK,
    State.WITHDRAWN: Step.WITHDRAW,
}
_STATE_OF_STEP: Final = {step: state for state, step in _STEP_OF_STATE.items()}
FINAL: Final = frozenset({State.FULFILLED, State.BROKEN, State.WITHDRAWN})


def diagram() -> str:
    """The transition table as a Mermaid state diagram (the table is the source of truth)."""
    lines = ["stateDiagram-v2", "    [*] --> offered"]
    for state, moves in TRANSITIONS.items():
        for step, target in moves.items():
            lines.append(f"    {state.name.lower()} --> {target.name.lower()}: {step.value}")
    lines.extend(f"    {state.name.lower()} --> [*]" for state in FINAL)
    return "\n".join(lines)


# --- actions -----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Send:
    """Seal and send ``message`` to node ``to`` (a re-send carries the identical message)."""

    message: Commitment
    to: int


@attrs.frozen(slots=True)
class Raise:
    """Seal ``report`` and hand it to exception handling (the cell coordinator, escalation)."""

    report: ExceptionReport


@attrs.frozen(slots=True)
class Changed:
    """The commitment ``commitment`` moved from ``old`` to ``new`` in this node's view."""

    commitment: ContentId
    old: State | None
    new: State


@attrs.frozen(slots=True)
class FetchOffer:
    """A step arrived for an offer this node lacks: ask for it by content id (§6.2)."""

    commitment: ContentId
    source: int


class IgnoreReason(enum.Enum):
    WRONG_ISSUER = "the step's issuer is not the party that may send it"
    NO_MOVE = "no move from the current state (after a final step, or an accept after a withdraw)"
    NOT_A_PARTY = "this node is neither party and does not observe"
    FULL = "too many commitments tracked"
    MALFORMED = "an offer whose terms do not match its issuer"


@attrs.frozen(slots=True)
class Ignored:
    """A received step changed nothing, and why (for logs and counters)."""

    commitment: ContentId
    reason: IgnoreReason


Action = Send | Raise | Changed | FetchOffer | Ignored


# --- configuration and figures -----------------------------------------------------------


@attrs.frozen(slots=True)
class TrackerConfig:
    """Tunables; times in milliseconds of DTN time."""

    #: Covers clock drift and light time: how long after a deadline a non-promisor waits.
    grace_ms: int = 60_000
    #: First re-send of an unsettled step; doubles each time up to ``max_resend_ms``.
    resend_ms: int = 10_000
    max_resend_ms: int = 3_600_000
    #: How long a settled commitment is kept to answer duplicates before it is forgotten.
    retain_ms: int = 7 * 86_400_000
    max_commitments: int = 100_000
    max_pending: int = 1_024
    #: Track commitments between other nodes too (a cell coordinator's view).
    observe_all: bool = False
    #: Severity of the report raised for a commitment broken at its deadline (§6.3: fault).
    break_severity: int = 3


@attrs.frozen(slots=True)
class Figures:
    """Counts of commitments by outcome; each commitment is in exactly one bucket."""

    open: int = 0
    late: int = 0
    fulfilled: int = 0
    broken: int = 0
    withdrawn: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            *(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True))
        )


# --- the tracker -------------------------------------------------------------------------


@attrs.define(slots=True)
class _Entry:
    offer: Commitment
    party: Party
    state: State
    mine: Commitment | None = None  # the last step this node sent (re-sent while unsettled)
    next_resend: int | None = None
    resend_every: int = 0
    late_reported: bool = False
    settled_at: int | None = None
    last_answer: int | None = None

    @property
    def terms(self) -> Terms:
        assert self.offer.terms is not None
        return self.offer.terms


class CommitmentTracker:
    """One node's view of commitments (module docstring). Not thread-safe; no I/O."""

    def __init__(
        self,
        node: int,
        next_sequence: Callable[[], int],
        config: TrackerConfig | None = None,
    ) -> None:
        self.node = node
        self.config = config or TrackerConfig()
        #: The node's per-issuer counter (§4: one counter across all message types, kept by the
        #: runtime durably), lent to the tracker so its messages fit the node's sequence.
        self._next_sequence = next_sequence
        self._entries: dict[ContentId, _Entry] = {}
        self._pending: collections.OrderedDict[ContentId, list[Commitment]] = (
            collections.OrderedDict()
        )
        #: Offers asked for by content id: cid -> [next ask, interval, node to ask].
        self._fetch: dict[ContentId, list[int]] = {}
        self._forgotten: dict[int, Figures] = collections.defaultdict(Figures)

    # --- queries ---

    def state(self, commitment: ContentId) -> State | None:
        entry = self._entries.get(commitment)
        return None if entry is None else entry.state

    def terms(self, commitment: ContentId) -> Terms | None:
        entry = self._entries.get(commitment)
        return None if entry is None else entry.terms

    def offer_message(self, commitment: ContentId) -> Commitment | None:
        """The offer that names ``commitment``, to answer a fetch by content id."""
        entry = self._entries.get(commitment)
        return None if entry is None else entry.offer

    def commitments(self) -> dict[ContentId, State]:
        return {cid: entry.state for cid, entry in self._entries.items()}

    def is_late(self, commitment: ContentId, now: int) -> bool:
        entry = self._entries[commitment]
        return entry.state not in FINAL and now >= entry.terms.deadline + self.config.grace_ms

    def figures(self, now: int) -> dict[int, Figures]:
        """Figures by promisor."""
        out: dict[int, Figures] = collections.defaultdict(Figures, self._forgotten)
        for cid, entry in self._entries.items():
            out[entry.terms.promisor] += _bucket(entry.state, self.is_late(cid, now))
        return dict(out)

    def cell_figures(self, now: int, cell_of: Mapping[int, int]) -> dict[int | None, Figures]:
        """Figures by the promisor's cell (``None`` for nodes ``cell_of`` does not place)."""
        out: dict[int | None, Figures] = collections.defaultdict(Figures)
        for node, figures in self.figures(now).items():
            out[cell_of.get(node)] += figures
        return dict(out)

    # --- local intents ---

    def offer(
        self, terms: Terms, now: int, *, references: Iterable[ContentId] = ()
    ) -> tuple[ContentId, list[Action]]:
        """Offer ``terms`` (this node is the promisor); return the commitment's id and actions."""
        if terms.promisor != self.node:
            raise LocalProtocolError(f"node {self.node} cannot offer for promisor {terms.promisor}")
        if terms.deadline <= now:
            raise LocalProtocolError("the deadline of an offer must lie in the future")
        if len(self._entries) >= self.config.max_commitments:
            raise LocalProtocolError(f"{len(self._entries)} commitments tracked (the limit)")
        message = Commitment(self._header(now, tuple(references)), State.OFFERED, terms=terms)
        cid = content_id(message)
        entry = _Entry(message, Party.PROMISOR, State.OFFERED, mine=message)
        self._entries[cid] = entry
        self._arm_resend(entry, now)
        actions: list[Action] = [Changed(cid, None, State.OFFERED), Send(message, terms.promisee)]
        self._fetch.pop(cid, None)
        for step in self._pending.pop(cid, ()):  # unlikely, but an echo may precede our own offer
            actions.extend(self._apply_remote(cid, entry, step, now))
        return cid, actions

    def accept(self, commitment: ContentId, now: int) -> list[Action]:
        """Take up an offer made to this node."""
        entry = self._local(commitment, Step.ACCEPT, now)
        if now >= entry.terms.deadline:
            raise LocalProtocolError("the offer's deadline has passed")
        return self._take(commitment, entry, Step.ACCEPT, now)

    def fulfil(self, commitment: ContentId, now: int, *, reason: str | None = None) -> list[Action]:
        return self._take(
            commitment, self._local(commitment, Step.FULFIL, now), Step.FULFIL, now, reason
        )

    def withdraw(
        self, commitment: ContentId, now: int, *, reason: str | None = None
    ) -> list[Action]:
        return self._take(
            commitment, self._local(commitment, Step.WITHDRAW, now), Step.WITHDRAW, now, reason
        )

    def break_(
        self,
        commitment: ContentId,
        now: int,
        *,
        reason: str | None = None,
        report: ExceptionReport | None = None,
        code: int = ExceptionCode.OTHER,
        severity: int | None = None,
    ) -> list[Action]:
        """Break an accepted commitment; ``report`` (or one raised here) names it in ``affects``."""
        entry = self._local(commitment, Step.BREAK, now)
        actions: list[Action] = []
        if report is None:
            report = ExceptionReport(
                self._header(now, (commitment,)),
                code=int(code),
                severity=severity or self.config.break_severity,
                scope=Scope.NODE,
                scope_id=self.node,
                affects=(commitment,),
                detail=reason,
            )
        elif commitment not in report.affects:
            raise LocalProtocolError("the exception report must name the commitment it breaks")
        actions.append(Raise(report))
        actions.extend(
            self._take(commitment, entry, Step.BREAK, now, reason, extra_ref=content_id(report))
        )
        return actions

    # --- received steps and time ---

    def receive(self, message: Commitment, now: int) -> list[Action]:
        """Apply a verified commitment message (its signer is ``message.header.issuer``)."""
        if message.state is State.OFFERED:
            return self._receive_offer(message, now)
        assert message.commitment is not None  # Commitment.check, run by the decoder
        cid = message.commitment
        entry = self._entries.get(cid)
        if entry is None:
            return self._park(cid, message, now)
        # Deadlines first, so the outcome does not depend on when tick() last ran: an accept
        # that reaches the promisor after its deadline finds the offer already lapsed.
        actions = self._deadline(cid, entry, now)
        return [*actions, *self._apply_remote(cid, entry, message, now)]

    def tick(self, now: int) -> list[Action]:
        """Deadlines, re-sends and forgetting, as of ``now``."""
        actions: list[Action] = []
        for cid, entry in list(self._entries.items()):
            actions.extend(self._deadline(cid, entry, now))
            if (
                entry.next_resend is not None
                and now >= entry.next_resend
                and entry.mine is not None
            ):
                actions.append(Send(entry.mine, self._counterparty(entry)))
                entry.resend_every = min(entry.resend_every * 2, self.config.max_resend_ms)
                entry.next_resend = now + entry.resend_every
            if entry.settled_at is not None and now - entry.settled_at >= self.config.retain_ms:
                del self._entries[cid]
                self._forgotten[entry.terms.promisor] += _bucket(entry.state, late=False)
        for cid, fetch in self._fetch.items():
            if now >= fetch[0]:
                fetch[1] = min(fetch[1] * 2, self.config.max_resend_ms)
                fetch[0] = now + fetch[1]
                actions.append(FetchOffer(cid, fetch[2]))
        return actions

    def next_deadline(self) -> int | None:
        """The earliest ``now`` at which :meth:`tick` has something to do."""
        times: list[int] = []
        grace = self.config.grace_ms
        for entry in self._entries.values():
            if entry.state not in FINAL:
                if entry.party is Party.PROMISOR:
                    times.append(entry.terms.deadline)
                elif entry.party is Party.PROMISEE and not entry.late_reported:
                    times.append(entry.terms.deadline + grace)
            if entry.next_resend is not None:
                times.append(entry.next_resend)
            if entry.settled_at is not None:
                times.append(entry.settled_at + self.config.retain_ms)
        times.extend(fetch[0] for fetch in self._fetch.values())
        return min(times, default=None)

    # --- internals ---

    def _header(self, now: int, references: tuple[ContentId, ...]) -> Header:
        return Header(
            issuer=self.node, issued_at=now, sequence=self._next_sequence(), references=references
        )

    def _party(self, terms: Terms) -> Party | None:
        if terms.promisor == self.node:
            return Party.PROMISOR
        if terms.promisee == self.node:
            return Party.PROMISEE
        return Party.OBSERVER if self.config.observe_all else None

    def _counterparty(self, entry: _Entry) -> int:
        terms = entry.terms
        return terms.promisee if entry.party is Party.PROMISOR else terms.promisor

    def _local(self, commitment: ContentId, step: Step, now: int) -> _Entry:
        entry = self._entries.get(commitment)
        if entry is None:
            raise LocalProtocolError(f"unknown commitment {commitment.short()}")
        if entry.party is not SENDER[step]:
            raise LocalProtocolError(
                f"the {SENDER[step].value} takes the {step.value} step, not us"
            )
        if entry.state is not LOCAL_FROM[step]:
            raise LocalProtocolError(
                f"cannot {step.value} a commitment that is {entry.state.name.lower()}"
            )
        return entry

    def _take(
        self,
        cid: ContentId,
        entry: _Entry,
        step: Step,
        now: int,
        reason: str | None = None,
        extra_ref: ContentId | None = None,
    ) -> list[Action]:
        references = (cid,) if extra_ref is None else (cid, extra_ref)
        message = Commitment(
            self._header(now, references), _STATE_OF_STEP[step], commitment=cid, reason=reason
        )
        entry.mine = message
        old = entry.state
        self._move(entry, TRANSITIONS[old][step], now)
        if entry.state in FINAL:
            entry.next_resend = None  # a final step is re-sent only as an answer,
            entry.last_answer = now  # and not at once: it has just gone out
        else:
            self._arm_resend(entry, now)
        return [Changed(cid, old, entry.state), Send(message, self._counterparty(entry))]

    def _move(self, entry: _Entry, new: State, now: int) -> None:
        entry.state = new
        if new in FINAL:
            entry.settled_at = now
            if entry.party is not Party.PROMISOR:
                entry.next_resend = None  # the answer came; stop asking

    def _arm_resend(self, entry: _Entry, now: int) -> None:
        entry.resend_every = self.config.resend_ms
        entry.next_resend = now + entry.resend_every

    def _receive_offer(self, message: Commitment, now: int) -> list[Action]:
        terms = message.terms
        assert terms is not None
        cid = content_id(message)
        if message.header.issuer != terms.promisor:
            return [Ignored(cid, IgnoreReason.MALFORMED)]
        entry = self._entries.get(cid)
        if entry is not None:
            return self._answer(cid, entry, now)  # a duplicate: the sender is still asking
        party = self._party(terms)
        if (
            party is None
            or party is Party.PROMISOR
            or len(self._entries) >= self.config.max_commitments
        ):
            self._fetch.pop(cid, None)  # nothing parked for it will ever apply
            self._pending.pop(cid, None)
            full = party is Party.PROMISEE or party is Party.OBSERVER
            return [Ignored(cid, IgnoreReason.FULL if full else IgnoreReason.NOT_A_PARTY)]
        entry = _Entry(message, party, State.OFFERED)
        self._entries[cid] = entry
        actions: list[Action] = [Changed(cid, None, State.OFFERED)]
        self._fetch.pop(cid, None)
        for step in self._pending.pop(cid, ()):
            actions.extend(self._apply_remote(cid, entry, step, now))
        return actions

    def _apply_remote(
        self, cid: ContentId, entry: _Entry, message: Commitment, now: int
    ) -> list[Action]:
        step = _STEP_OF_STATE[message.state]
        sender = entry.terms.promisee if SENDER[step] is Party.PROMISEE else entry.terms.promisor
        if message.header.issuer != sender or sender == self.node:
            return [Ignored(cid, IgnoreReason.WRONG_ISSUER)]
        new = TRANSITIONS[entry.state].get(step)
        if new is None:
            # Nothing to apply. If our view is final, the sender is still asking: tell it.
            answer = self._answer(cid, entry, now) if entry.state in FINAL else []
            return [Ignored(cid, IgnoreReason.NO_MOVE), *answer]
        old = entry.state
        self._move(entry, new, now)
        if entry.party is Party.PROMISOR and old is State.OFFERED:
            entry.next_resend = None  # the accept shows the offer arrived
        return [Changed(cid, old, new)]

    def _answer(self, cid: ContentId, entry: _Entry, now: int) -> list[Action]:
        """Re-send our latest step to a counterparty that is evidently behind (rate-limited)."""
        if entry.mine is None or entry.party is Party.OBSERVER:
            return []
        if entry.last_answer is not None and now - entry.last_answer < self.config.resend_ms:
            return []
        entry.last_answer = now
        return [Send(entry.mine, self._counterparty(entry))]

    def _park(self, cid: ContentId, message: Commitment, now: int) -> list[Action]:
        steps = self._pending.get(cid)
        fetch = steps is None
        if steps is None:
            if len(self._pending) >= self.config.max_pending:
                dropped, _ = self._pending.popitem(last=False)
                self._fetch.pop(dropped, None)
            steps = self._pending[cid] = []
            resend = self.config.resend_ms
            self._fetch[cid] = [now + resend, resend, message.header.issuer]
        if message not in steps and len(steps) < len(Step):
            steps.append(message)
        return [FetchOffer(cid, message.header.issuer)] if fetch else []

    def _deadline(self, cid: ContentId, entry: _Entry, now: int) -> list[Action]:
        terms = entry.terms
        if entry.state in FINAL:
            return []
        if entry.party is Party.PROMISOR:
            if now < terms.deadline:
                return []
            if entry.state is State.OFFERED:
                return self._take(cid, entry, Step.WITHDRAW, now, "offer lapsed at its deadline")
            return self.break_(cid, now, reason="deadline passed without fulfilment")
        if now < terms.deadline + self.config.grace_ms:
            return []
        if entry.state is State.OFFERED and entry.party is Party.PROMISEE:
            # We never accepted, so the promisor withdraws at its deadline; an observer cannot
            # know that nobody accepted, so it keeps the commitment open (and late) instead.
            old = entry.state
            self._move(entry, TRANSITIONS[old][Step.LAPSE], now)
            return [Changed(cid, old, entry.state)]
        if (
            entry.late_reported
            or entry.party is not Party.PROMISEE
            or entry.state is not State.ACCEPTED
        ):
            return []
        entry.late_reported = True
        report = ExceptionReport(
            self._header(now, (cid,)),
            code=int(ExceptionCode.OTHER),
            severity=2,  # degraded: what rested on it is at risk (§6.3)
            scope=Scope.NODE,
            scope_id=terms.promisor,
            affects=(cid,),
            detail="commitment overdue: no fulfilment from the promisor",
        )
        return [Raise(report)]


def _bucket(state: State, late: bool) -> Figures:
    if state is State.FULFILLED:
        return Figures(fulfilled=1)
    if state is State.BROKEN:
        return Figures(broken=1)
    if state is State.WITHDRAWN:
        return Figures(withdrawn=1)
    return Figures(late=1) if late else Figures(open=1)
