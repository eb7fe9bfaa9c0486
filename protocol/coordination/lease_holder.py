"""The lease holder (spec §6.4): claims, uses only inside its term by its own clock, renews, releases.

Theory of operation
-------------------
One :class:`LeaseHolder` is one node's side of every lease it wants. The application says
what it wants (``want``) and when it is done (``release``); the runtime hands it verified lease
messages (``receive``) and the passage of time (``tick``), all with ``now`` by the holder's own
clock; it answers with :class:`Send` actions (claims, renews, releases) and :class:`Notice`
actions for the application. Before every operation on the resource the application asks
:meth:`use`, which returns the fencing token to hand the operation — or None: do not act.

Each resource moves only through :data:`TRANSITIONS`::

    IDLE --want--> CLAIMING --grant--> HOLDING --renew due--> RENEWING --renewed--> HOLDING
    HOLDING, RENEWING --lapse--> CLAIMING          (term ran out unrenewed: claim again)
    HOLDING, RENEWING --revoke / let go / release after use--> STOPPING --stop--> IDLE
    CLAIMING, HOLDING, RENEWING, STOPPING --release--> IDLE

STOPPING is a grant still in use that will not be renewed: the release goes out when it ends
(a revoke's ``effective_at - max_drift``, the term's end for :meth:`let_go`) and never before
the last operation :meth:`use` allowed has finished — a release tells the authority that we
have stopped, and it may grant again at once.

The clock rule (§6.4, Gray & Cheriton). A grant is usable from the instant it is received
until ``expires_at - max_drift`` by our clock (``usable_until``); a revoke brings that forward
to ``effective_at - max_drift``. An operation of ``duration`` is allowed only if it ends by
``usable_until``. A grant that arrives with less than ``min_use_ms`` of usable time left is
refused — and released, so the authority need not wait out its term. Since the authority never
grants to another holder before ``expires_at + max_drift`` by *its* clock, and the clocks differ
by at most ``max_drift``, our use and the next holder's never overlap.

Renewal. A renew is sent ``renew_lead_ms`` before ``usable_until`` and resent every
``retry_ms`` until a grant with the same token and a later ``expires_at`` comes back; the lead
must cover the link's round trip (twice its one-way delay) plus the retries one is willing to
lose. Until the renewal arrives the old ``usable_until`` stands; when it passes, the lease has
lapsed and, if still wanted, the holder claims afresh.

Grants, revokes and expiry notices count only from the authorities we claim from. Grants are
judged by a :class:`ReplayGuard` (issuer, resource) and by the highest fencing
token seen per resource: an older token is ignored, a duplicate changes nothing, and a grant
nobody here wants (a claim answered after we gave up) is released at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Final

import attrs

from ..ids import ContentId
from ..messages.header import Header
from ..messages.v1 import LeaseClaim, LeaseExpiry, LeaseGrant, LeaseRelease, LeaseRenew, LeaseRevoke
from .freshness import DEFAULT_WINDOW, Freshness, FreshnessWindow, ReplayGuard

__all__ = [
    "TRANSITIONS",
    "HolderConfig",
    "HolderState",
    "LeaseHolder",
    "Notice",
    "NoticeKind",
    "Send",
    "Step",
    "diagram",
]


class HolderState(enum.Enum):
    IDLE = "idle"
    CLAIMING = "claiming"
    HOLDING = "holding"
    RENEWING = "renewing"
    STOPPING = "stopping"

    # Members are singletons, so identity hashes them: Enum's own ``__hash__`` runs Python
    # code on every TRANSITIONS lookup (two per move) and ``_USABLE`` test. Nothing iterates
    # a set of these, so the per-run identity hashes change nothing observable.
    __hash__ = object.__hash__


class Step(enum.Enum):
    WANT = "want"
    GRANT = "grant"
    RENEW_DUE = "renew-due"
    RENEWED = "renewed"
    LAPSE = "lapse"
    REVOKE = "revoke"
    STOP = "stop"
    LET_GO = "let-go"
    RELEASE = "release"
    RELEASE_AFTER_USE = "release-after-use"

    __hash__ = object.__hash__  # as HolderState's


_S, _E = HolderState, Step

# Read per message as globals, not off the enum: in Python 3.11 an enum's class attribute
# goes through EnumType's __getattr__ hook (hundreds of instructions a read, a global a few).
_FRESH: Final = Freshness.FRESH
_H_CLAIMING: Final = HolderState.CLAIMING
_H_HOLDING: Final = HolderState.HOLDING
_H_IDLE: Final = HolderState.IDLE
_H_RENEWING: Final = HolderState.RENEWING
_H_STOPPING: Final = HolderState.STOPPING

#: The whole of what may follow what, per resource (spec §6.4).
TRANSITIONS: Final[dict[HolderState, dict[Step, HolderState]]] = {
    _S.IDLE: {_E.WANT: _S.CLAIMING},
    _S.CLAIMING: {_E.GRANT: _S.HOLDING, _E.RELEASE: _S.IDLE},
    _S.HOLDING: {
        _E.RENEW_DUE: _S.RENEWING,
        _E.RENEWED: _S.HOLDING,
        _E.LAPSE: _S.CLAIMING,
        _E.REVOKE: _S.STOPPING,
        _E.LET_GO: _S.STOPPING,
        _E.RELEASE: _S.IDLE,
        _E.RELEASE_AFTER_USE: _S.STOPPING,
    },
    _S.RENEWING: {
        _E.RENEWED: _S.HOLDING,
        _E.LAPSE: _S.CLAIMING,
        _E.REVOKE: _S.STOPPING,
        _E.LET_GO: _S.STOPPING,
        _E.RELEASE: _S.IDLE,
        _E.RELEASE_AFTER_USE: _S.STOPPING,
    },
    _S.STOPPING: {_E.STOP: _S.IDLE, _E.RELEASE: _S.IDLE},
}


def diagram() -> str:
    """The transition table as a Mermaid state diagram (the table is the source of truth)."""
    lines = ["stateDiagram-v2", "    [*] --> idle"]
    for state, moves in TRANSITIONS.items():
        for step, target in moves.items():
            lines.append(f"    {state.value} --> {target.value}: {step.value}")
    return "\n".join(lines)


class NoticeKind(enum.Enum):
    GRANTED = "granted"  # usable from now until ``usable_until``
    RENEWED = "renewed"
    LAPSED = "lapsed"  # term ran out unrenewed: stop (already stopped by the clock rule)
    REVOKED = "revoked"  # the authority withdrew it: stopping at ``usable_until``
    TOO_LATE = "too-late"  # a grant came with too little usable time left; released

    __hash__ = object.__hash__  # as HolderState's


@attrs.frozen(slots=True)
class Send:
    """Send ``message`` to node ``to``."""

    message: LeaseClaim | LeaseRenew | LeaseRelease
    to: int


@attrs.frozen(slots=True)
class Notice:
    """For the application: what happened to its lease on ``resource``."""

    kind: NoticeKind
    resource: str
    fencing_token: int
    usable_until: int


Action = Send | Notice


@attrs.frozen(slots=True)
class HolderConfig:
    max_drift_ms: int  # §6.4
    renew_lead_ms: int  # renew this long before usable_until: > the link's round trip
    retry_ms: int  # resend an unanswered claim or renew this often
    min_use_ms: int = 1  # refuse a grant with less usable time than this
    freshness: FreshnessWindow = DEFAULT_WINDOW

    @classmethod
    def for_link(
        cls, max_drift_ms: int, one_way_delay_ms: int, *, retries: int = 2, min_use_ms: int = 1
    ) -> HolderConfig:
        """Timing for a link whose one-way delay is at most ``one_way_delay_ms``: a renew is
        resent every round trip, and sent early enough that ``retries`` of them may be lost
        and the last still answered before the grant's usable end (with half a round trip to
        spare for a late tick)."""
        round_trip = 2 * one_way_delay_ms
        return cls(
            max_drift_ms=max_drift_ms,
            renew_lead_ms=(retries + 1) * round_trip + one_way_delay_ms,
            retry_ms=max(round_trip, 1),
            min_use_ms=min_use_ms,
        )


class _Lease:
    __slots__ = (
        "authority",
        "busy_until",
        "expires_at",
        "grant",
        "granted_at",
        "highest",
        "next_send",
        "priority",
        "state",
        "term_ms",
        "token",
        "usable_until",
    )

    def __init__(self) -> None:
        self.state = _H_IDLE
        self.term_ms = 0
        self.priority = 0
        self.token = -1
        self.highest = -1  # highest fencing token ever seen for the resource
        self.authority = -1
        self.grant: ContentId | None = None
        self.granted_at = 0
        self.expires_at = 0
        self.usable_until = 0
        self.next_send = 0
        self.busy_until = 0  # end of the last operation :meth:`LeaseHolder.use` allowed


class LeaseHolder:
    """One node's leases: the holder's algorithm of spec §6.4."""

    def __init__(
        self,
        node: int,
        authorities: Iterable[int],
        config: HolderConfig,
        *,
        sequence: int = 0,
        next_sequence: Callable[[], int] | None = None,
    ) -> None:
        self.node = node
        #: Where claims go: the active authority and its standbys (only the active one answers).
        self.authorities = tuple(authorities)
        self.config = config
        #: The last sequence number written; persist it (a writer's sequence only grows, §4).
        self.sequence = sequence
        #: Where sequence numbers come from when the node shares one counter among its roles.
        self.next_sequence = next_sequence
        self.replay = ReplayGuard(config.freshness)
        self._leases: dict[str, _Lease] = {}
        # next_deadline() is asked after every message and tick of the node's roles, far
        # more often than a lease changes: its answer is kept, and dropped (_changed) by
        # every change to what it reads — a state, next_send, usable_until, busy_until —
        # and by a new config (renew_lead_ms). scan_deadline() is the reference it equals.
        self._deadline: int | None = None
        self._deadline_for: HolderConfig | None = None  # None: to be computed again

    # --- inspection -------------------------------------------------------------------

    def state(self, resource: str) -> HolderState:
        lease = self._leases.get(resource)
        return _H_IDLE if lease is None else lease.state

    def use(self, resource: str, now: int, duration_ms: int = 0) -> int | None:
        """The fencing token to hand an operation on ``resource`` from ``now`` for
        ``duration_ms``, or None if the clock rule forbids it (§6.4)."""
        lease = self._leases.get(resource)
        if lease is None or lease.state not in _USABLE:
            return None
        # [now, now + duration) inside [granted_at, usable_until), half-open like the term.
        if (
            not lease.granted_at <= now < lease.usable_until
            or now + duration_ms > lease.usable_until
        ):
            return None
        if now + duration_ms > lease.busy_until:
            lease.busy_until = now + duration_ms
            if lease.state is _H_STOPPING:
                # Only a STOPPING lease's deadline reads busy_until (a move into STOPPING
                # drops the kept deadline itself): an operation on a held lease keeps it.
                self._changed()
        return lease.token

    def usable_until(self, resource: str) -> int | None:
        lease = self._leases.get(resource)
        if lease is None or lease.state not in _USABLE:
            return None
        return lease.usable_until

    def next_deadline(self) -> int | None:
        """When :meth:`tick` next has something to do (kept between changes: ``__init__``)."""
        if self._deadline_for is not self.config:
            self._deadline = self.scan_deadline()
            self._deadline_for = self.config
        return self._deadline

    def scan_deadline(self) -> int | None:
        """:meth:`next_deadline` computed afresh from every lease (the reference)."""
        # The earliest as we go, no list: a member's IDLE leases (kept for their highest
        # token) are most of what this walks, and are passed over first.
        earliest: int | None = None
        lead = self.config.renew_lead_ms
        for lease in self._leases.values():
            state = lease.state
            if state is _H_IDLE:
                continue
            if state is _H_CLAIMING:
                when = lease.next_send
            elif state is _H_HOLDING:
                when = lease.usable_until - lead
            elif state is _H_RENEWING:
                when = min(lease.next_send, lease.usable_until)
            elif state is _H_STOPPING:
                when = max(lease.usable_until, lease.busy_until)
            else:
                continue
            if earliest is None or when < earliest:
                earliest = when
        return earliest

    # --- inputs from the application --------------------------------------------------

    def want(self, resource: str, term_ms: int, now: int, priority: int = 0) -> list[Action]:
        """Ask for ``resource`` for ``term_ms`` (renewed until :meth:`release`)."""
        lease = self._lease(resource)
        lease.term_ms, lease.priority = term_ms, priority
        if lease.state is not _H_IDLE:
            return []
        self._move(lease, Step.WANT)
        actions: list[Action] = []
        self._claim(resource, lease, now, actions)
        return actions

    def let_go(self, resource: str, now: int) -> list[Action]:
        """Stop renewing ``resource``: use it to the end of its term, then release it.

        Unlike :meth:`release`, the authority may not grant it again before our term is over:
        for a holder that must not end early (an authority whose grants live as long as its
        own lease, but whose record of them was lost).
        """
        lease = self._leases.get(resource)
        if lease is None or lease.state not in (_H_HOLDING, _H_RENEWING):
            return []
        self._move(lease, Step.LET_GO)
        return self.tick(now)

    def release(self, resource: str, now: int) -> list[Action]:
        """Stop wanting ``resource``; give back a grant in force."""
        lease = self._leases.get(resource)
        if lease is None or lease.state is _H_IDLE:
            return []
        actions: list[Action] = []
        if lease.state in _USABLE and lease.busy_until > now:
            # An operation we allowed is still running: release when it ends; none may run past it.
            if lease.state is not _H_STOPPING:
                self._move(lease, Step.RELEASE_AFTER_USE)
            lease.usable_until = min(lease.usable_until, lease.busy_until)
            self._changed()
            return actions
        if lease.state in _USABLE:
            self._send_release(resource, lease.token, lease.grant, lease.authority, now, actions)
        self._move(lease, Step.RELEASE)
        return actions

    # --- inputs from the network and the clock -----------------------------------------

    def receive(self, message: object, content_id: ContentId, now: int) -> list[Action]:
        """Act on one verified lease message addressed to us."""
        actions = self.tick(now)
        if isinstance(message, LeaseGrant):
            self._on_grant(message, content_id, now, actions)
        elif isinstance(message, LeaseRevoke):
            self._on_revoke(message, now, actions)
        elif isinstance(message, LeaseExpiry):
            self._on_expiry(message, now, actions)
        return actions

    def tick(self, now: int) -> list[Action]:
        """Renew, lapse, stop and resend what is due at ``now``."""
        self.replay.tick(now)
        if self.config.renew_lead_ms >= 0:
            # next_deadline() is the earliest instant at which _due finds something (with a
            # lead of at least 0 a holding lease renews before it lapses), and it is kept
            # between changes: before it, the scan of every lease would find nothing. Every
            # message the holder receives ticks it first, so this is the common case.
            due = self.next_deadline()
            if due is None or now < due:
                return []
        return self._due(now)

    def scan_tick(self, now: int) -> list[Action]:
        """:meth:`tick` scanning every lease whatever the deadline (the reference)."""
        self.replay.tick(now)
        return self._due(now)

    def _due(self, now: int) -> list[Action]:
        actions: list[Action] = []
        lead = self.config.renew_lead_ms
        for resource, lease in self._leases.items():
            state = lease.state
            if state is _H_CLAIMING:
                if now >= lease.next_send:
                    self._claim(resource, lease, now, actions)
            elif state in (_H_HOLDING, _H_RENEWING):
                if now >= lease.usable_until:
                    self._lapse(resource, lease, now, actions)
                elif state is _H_HOLDING and now >= lease.usable_until - lead:
                    self._move(lease, Step.RENEW_DUE)
                    self._renew(resource, lease, now, actions)
                elif state is _H_RENEWING and now >= lease.next_send:
                    self._renew(resource, lease, now, actions)
            elif state is _H_STOPPING and now >= max(lease.usable_until, lease.busy_until):
                self._send_release(
                    resource, lease.token, lease.grant, lease.authority, now, actions
                )
                self._move(lease, Step.STOP)
        return actions

    # --- handlers ---------------------------------------------------------------------

    def _fresh(self, message: LeaseGrant | LeaseRevoke | LeaseExpiry, now: int) -> bool:
        h = message.header
        if h.issuer not in self.authorities:
            return False  # only the authorities we claim from speak for a resource
        verdict = self.replay.check(h.issuer, message.resource, h.sequence, h.issued_at, now)
        return verdict is _FRESH

    def _on_grant(self, grant: LeaseGrant, cid: ContentId, now: int, actions: list[Action]) -> None:
        if grant.holder != self.node or not self._fresh(grant, now):
            return
        resource = grant.resource
        lease = self._lease(resource)
        token = grant.fencing_token
        if token < lease.highest:
            return  # from an older grant: a newer one exists
        h = grant.header
        self.replay.acted(h.issuer, resource, h.sequence, h.issued_at)
        newer = token > lease.highest
        lease.highest = max(lease.highest, token)
        usable_until = grant.expires_at - self.config.max_drift_ms
        state = lease.state
        if state in (_H_HOLDING, _H_RENEWING) and token == lease.token:
            if usable_until > lease.usable_until:
                lease.usable_until, lease.expires_at, lease.grant = (
                    usable_until,
                    grant.expires_at,
                    cid,
                )
                lease.authority = h.issuer
                self._move(lease, Step.RENEWED)  # and _changed: usable_until moved
                actions.append(Notice(NoticeKind.RENEWED, resource, token, usable_until))
            return
        if not newer:
            return  # a copy of a grant we already judged
        wanted = state in (_H_CLAIMING, _H_HOLDING, _H_RENEWING)
        if not wanted:
            self._send_release(resource, token, cid, h.issuer, now, actions)
            return
        if now + self.config.min_use_ms >= usable_until:
            # §6.4: a grant received after its last usable instant MUST NOT be used.
            self._send_release(resource, token, cid, h.issuer, now, actions)
            actions.append(Notice(NoticeKind.TOO_LATE, resource, token, usable_until))
            return
        if state is _H_CLAIMING:
            self._move(lease, Step.GRANT)
            lease.granted_at = now
        else:
            self._move(lease, Step.RENEWED)  # a newer grant (a new epoch) replaces ours
        lease.token, lease.grant, lease.authority = token, cid, h.issuer
        lease.expires_at, lease.usable_until = grant.expires_at, usable_until
        self._changed()
        actions.append(Notice(NoticeKind.GRANTED, resource, token, usable_until))

    def _on_revoke(self, revoke: LeaseRevoke, now: int, actions: list[Action]) -> None:
        lease = self._leases.get(revoke.resource)
        if (
            revoke.holder != self.node
            or lease is None
            or lease.state not in (_H_HOLDING, _H_RENEWING)
            or revoke.fencing_token != lease.token
            or not self._fresh(revoke, now)
        ):
            return  # §6.4: a revoke for a token we do not hold changes nothing
        h = revoke.header
        self.replay.acted(h.issuer, revoke.resource, h.sequence, h.issued_at)
        self._move(lease, Step.REVOKE)
        lease.usable_until = min(lease.usable_until, revoke.effective_at - self.config.max_drift_ms)
        self._changed()
        actions.append(Notice(NoticeKind.REVOKED, revoke.resource, lease.token, lease.usable_until))
        if now >= max(lease.usable_until, lease.busy_until):
            self._send_release(
                revoke.resource, lease.token, lease.grant, lease.authority, now, actions
            )
            self._move(lease, Step.STOP)

    def _on_expiry(self, notice: LeaseExpiry, now: int, actions: list[Action]) -> None:
        lease = self._leases.get(notice.resource)
        if (
            notice.holder != self.node
            or lease is None
            or lease.state not in (_H_HOLDING, _H_RENEWING)
            or notice.fencing_token != lease.token
            or not self._fresh(notice, now)
        ):
            return
        h = notice.header
        self.replay.acted(h.issuer, notice.resource, h.sequence, h.issued_at)
        self._lapse(notice.resource, lease, now, actions)

    # --- sending ----------------------------------------------------------------------

    def _lapse(self, resource: str, lease: _Lease, now: int, actions: list[Action]) -> None:
        self._move(lease, Step.LAPSE)
        actions.append(Notice(NoticeKind.LAPSED, resource, lease.token, lease.usable_until))
        self._claim(resource, lease, now, actions)

    def _claim(self, resource: str, lease: _Lease, now: int, actions: list[Action]) -> None:
        lease.next_send = now + self.config.retry_ms
        self._changed()
        for authority in self.authorities:
            claim = LeaseClaim(
                header=self._header(now, ()),
                resource=resource,
                term_ms=lease.term_ms,
                priority=lease.priority,
            )
            actions.append(Send(claim, authority))

    def _renew(self, resource: str, lease: _Lease, now: int, actions: list[Action]) -> None:
        assert lease.grant is not None
        lease.next_send = now + self.config.retry_ms
        self._changed()
        renew = LeaseRenew(
            header=self._header(now, (lease.grant,)),
            resource=resource,
            fencing_token=lease.token,
            grant=lease.grant,
            term_ms=lease.term_ms,
        )
        actions.append(Send(renew, lease.authority))

    def _send_release(
        self,
        resource: str,
        token: int,
        grant: ContentId | None,
        authority: int,
        now: int,
        actions: list[Action],
    ) -> None:
        assert grant is not None
        release = LeaseRelease(
            header=self._header(now, (grant,)), resource=resource, fencing_token=token, grant=grant
        )
        actions.append(Send(release, authority))

    def _header(self, now: int, references: tuple[ContentId, ...]) -> Header:
        self.sequence = self.next_sequence() if self.next_sequence else self.sequence + 1
        return Header(
            issuer=self.node, issued_at=now, sequence=self.sequence, references=references
        )

    def _lease(self, resource: str) -> _Lease:
        """The resource's lease, made IDLE on first sight (``setdefault`` would build a
        :class:`_Lease` on every call only to throw it away)."""
        lease = self._leases.get(resource)
        if lease is None:
            lease = self._leases[resource] = _Lease()
        return lease

    def _move(self, lease: _Lease, step: Step) -> None:
        lease.state = TRANSITIONS[lease.state][step]
        self._changed()

    def _changed(self) -> None:
        """A lease changed what :meth:`next_deadline` reads: compute it again when asked."""
        self._deadline_for = None


_USABLE: Final = frozenset({HolderState.HOLDING, HolderState.RENEWING, HolderState.STOPPING})
