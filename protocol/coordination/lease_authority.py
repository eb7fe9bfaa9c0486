"""The lease authority of a resource set (spec §6.4): the only node that grants.

Theory of operation
-------------------
One :class:`LeaseAuthority` decides, for every resource of its set, who holds it. The runtime
hands it verified lease messages (``receive``, with the message's content id and ``now`` by the
authority's clock), local commands (``revoke``) and the passage of time (``tick``); it answers
with :class:`Send` actions (grants, revokes, expiry notices) and :class:`Refused` notes that say
why an input changed nothing. It never reads a clock.

Each resource moves only through :data:`TRANSITIONS`::

    FREE --grant--> HELD --renew--> HELD
                    HELD --release--> FREE
                    HELD --revoke--> REVOKED --release--> FREE
                    HELD, REVOKED --expire--> LAPSED --release / drain--> FREE

* **Grant.** A claim on a FREE resource is granted at once; otherwise it waits in the
  resource's queue, highest ``priority`` first, then first come. One holder has at most one
  place in a queue (a newer claim replaces its older one). Whenever a resource becomes FREE the
  head of its queue is granted. A grant always leaves the holder more than ``min_term_ms`` of
  use after both drift margins; a claim whose term cannot (``term-too-short``) is refused, not
  queued, and the queue waits while our mandate is too short. Fencing tokens are ``epoch << 32 | n`` with ``n`` counting the
  resource's grants in this epoch, so they strictly grow per resource, and across a hand-over to
  a standby authority whose epoch is higher (the epoch rule: one active authority per resource
  set per epoch).
* **Renew** (same holder, same token, resource HELD) extends ``expires_at``; the answer is a new
  grant with the same token. A renew naming another token, or a revoked grant, changes nothing.
* **Release** frees the resource at once (the holder has stopped: §6.4 lets us grant again).
* **Revoke** marks the grant REVOKED and tells the holder to stop by ``effective_at``. It does
  not shorten what we wait for: the revoke may be lost, so the resource is free only when the
  holder releases it or the grant's own ``expires_at + max_drift`` has passed. A REVOKED grant
  is never renewed.
* **Expire.** At ``expires_at`` by our clock the grant has lapsed and the holder is sent an
  expiry notice; the resource stays LAPSED, granted to nobody, until ``expires_at + max_drift``
  (**drain**) — the rule "never a second holder before ``expires_at + max_drift`` unless
  released" (§6.4, Gray & Cheriton).

**Containment.** An authority may be given a gate (``admits``): a cell coordinator's
:meth:`Containment.admits <.containment.Containment.admits>`, an isolation boundary's. A claim or
renewal from a node it does not admit is refused (``contained``) and its queued claim is skipped,
so a quarantined node's grant runs out at its ``expires_at`` and it gets no other; an isolation
order's "its leases revoked" is :meth:`revoke_holders`.

**Mandate.** A cell authority rules by lease itself (its *authority lease*, whose fencing token
is the epoch). :meth:`assume` sets the epoch and the instant ``mandate_until`` after which it
may no longer act (its authority lease's ``expires_at - max_drift``, by its own clock, as for
any holder). Every grant it makes ends no later than ``mandate_until``, so when a standby is
granted the authority lease after ``expires_at + max_drift`` every grant of the old epoch has
lapsed by every clock within the drift bound, and the new authority starts from a clean slate.
A region authority (or a lone one in a test) has no mandate: it rules without end.
An authority built with an ``epoch`` and a mandate starts knowing nothing of that epoch's grants
(a restart that lost its state): it never acts in that epoch again, only in a higher one — its
runtime lets that epoch's authority lease run out (:meth:`LeaseHolder.let_go`) and claims anew.

**Idempotence.** Every input is judged by a per-(issuer, resource) :class:`ReplayGuard` first:
a message older than the freshness window, or whose sequence was overtaken, changes nothing. A
claim from the resource's current holder (a duplicate, or a retry after a lost grant) is
answered with the current grant again — same token, same ``expires_at``, new header — and
changes no state.

Cost per decision: dictionary look-ups, a heap push for the grant's expiry (O(log n) in the
number of live grants) and, when queued, a heap push per claim (O(log q) in the queue). Memory is
bounded by the resources, one queue entry per (resource, holder) up to ``max_queue``, and the
replay guard's window.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from ..messages.header import Header
from ..messages.v1 import LeaseClaim, LeaseExpiry, LeaseGrant, LeaseRelease, LeaseRenew, LeaseRevoke
from .freshness import DEFAULT_WINDOW, Freshness, FreshnessWindow, ReplayGuard

__all__ = [
    "TRANSITIONS",
    "AuthorityConfig",
    "LeaseAuthority",
    "Refusal",
    "Refused",
    "ResourceState",
    "Send",
    "Step",
    "diagram",
]

EPOCH_SHIFT: Final = 32


class ResourceState(enum.Enum):
    """Where one resource stands at its authority."""

    FREE = "free"
    HELD = "held"
    REVOKED = "revoked"
    LAPSED = "lapsed"

    # Members are singletons, so identity hashes them: Enum's own ``__hash__`` runs Python
    # code on every TRANSITIONS lookup (two per move). Nothing iterates a set of these, so
    # the per-run identity hashes change nothing observable.
    __hash__ = object.__hash__


class Step(enum.Enum):
    """What moves a resource."""

    GRANT = "grant"
    RENEW = "renew"
    RELEASE = "release"
    REVOKE = "revoke"
    EXPIRE = "expire"
    DRAIN = "drain"

    __hash__ = object.__hash__  # as ResourceState's


# Read per message as globals, not off the enum: in Python 3.11 an enum's class attribute
# goes through EnumType's __getattr__ hook (hundreds of instructions a read, a global a few).
_R_FREE: Final = ResourceState.FREE
_R_HELD: Final = ResourceState.HELD
_R_LAPSED: Final = ResourceState.LAPSED
_R_REVOKED: Final = ResourceState.REVOKED
_F_FRESH: Final = Freshness.FRESH

#: The whole of what may follow what, per resource (spec §6.4).
TRANSITIONS: Final[dict[ResourceState, dict[Step, ResourceState]]] = {
    ResourceState.FREE: {Step.GRANT: ResourceState.HELD},
    ResourceState.HELD: {
        Step.RENEW: _R_HELD,
        Step.RELEASE: _R_FREE,
        Step.REVOKE: _R_REVOKED,
        Step.EXPIRE: _R_LAPSED,
    },
    ResourceState.REVOKED: {Step.RELEASE: ResourceState.FREE, Step.EXPIRE: ResourceState.LAPSED},
    ResourceState.LAPSED: {Step.RELEASE: ResourceState.FREE, Step.DRAIN: ResourceState.FREE},
}


def diagram() -> str:
    """The transition table as a Mermaid state diagram (the table is the source of truth)."""
    lines = ["stateDiagram-v2", "    [*] --> free"]
    for state, moves in TRANSITIONS.items():
        for step, target in moves.items():
            lines.append(f"    {state.value} --> {target.value}: {step.value}")
    return "\n".join(lines)


class Refusal(enum.Enum):
    """Why an input changed nothing (stable codes for logs and tests)."""

    STALE = "stale"
    FUTURE = "future"
    REPLAYED = "replayed"
    NOT_OURS = "not-ours"
    NO_MANDATE = "no-mandate"
    UNKNOWN_GRANT = "unknown-grant"
    QUEUE_FULL = "queue-full"
    NOT_HELD = "not-held"
    TERM_TOO_SHORT = "term-too-short"
    #: The claimant is contained: in production quarantine or behind an isolation order
    #: (``containment.py``, ``isolation.py``); its claims and renewals are refused.
    CONTAINED = "contained"

    __hash__ = object.__hash__  # as ResourceState's


@attrs.frozen(slots=True)
class Send:
    """Send ``message`` to node ``to``."""

    message: LeaseGrant | LeaseRevoke | LeaseExpiry
    to: int


@attrs.frozen(slots=True)
class Refused:
    """``message`` (or a local command, then None) changed nothing, because of ``reason``."""

    message: LeaseClaim | LeaseRenew | LeaseRelease | None
    reason: Refusal


Action = Send | Refused


@attrs.frozen(slots=True)
class AuthorityConfig:
    """Fleet parameters and local policy of an authority."""

    max_drift_ms: int  # §6.4: bound on the clock error between any two nodes over a term
    max_term_ms: int  # longer claims are granted for this long
    min_term_ms: int = 0  # never grant less than this usable time (holder would refuse it)
    claim_ttl_ms: int = 3_600_000  # a queued claim older than this is dropped
    max_queue: int = 1024  # queue places per resource
    freshness: FreshnessWindow = DEFAULT_WINDOW


class _Resource:
    """One resource's state at its authority (mutable; never leaves this module)."""

    __slots__ = (
        "claim",
        "count",
        "expires_at",
        "holder",
        "issued",
        "queue",
        "queued",
        "state",
        "token",
    )

    def __init__(self) -> None:
        self.state = _R_FREE
        self.holder = -1
        self.token = -1
        self.expires_at = 0
        self.claim: ContentId | None = None
        self.issued: LeaseGrant | None = None
        self.count = 0  # grants of this resource in the current epoch
        # Heap of (-priority, arrival, holder); ``queued`` maps holder → (arrival, claim
        # content id, term, received at); a heap entry whose arrival differs is stale.
        self.queue: list[tuple[int, int, int]] = []
        self.queued: dict[int, tuple[int, ContentId, int, int]] = {}


class LeaseAuthority:
    """Grants, renews, revokes and expires leases on a set of resources (spec §6.4)."""

    def __init__(
        self,
        node: int,
        config: AuthorityConfig,
        *,
        owns: Callable[[str], bool] = lambda _resource: True,
        epoch: int = 0,
        mandate_until: int | None = None,
        sequence: int = 0,
        next_sequence: Callable[[], int] | None = None,
        admits: Callable[[int], bool] | None = None,
    ) -> None:
        self.node = node
        #: The containment gate (``Containment.admits``, an isolation boundary's ``admits``):
        #: claims and renewals of a node it does not admit are refused (``contained``), and
        #: such a node's queued claims are skipped. None admits everyone.
        self.admits = admits
        self.config = config
        self.owns = owns
        self.epoch = epoch
        self.mandate_until = mandate_until
        #: The last sequence number written; persist it (a writer's sequence only grows, §4).
        self.sequence = sequence
        #: Where sequence numbers come from when the node shares one counter among its roles.
        self.next_sequence = next_sequence
        self.replay = ReplayGuard(config.freshness)
        self._resources: dict[str, _Resource] = {}
        self._deadlines: list[tuple[int, str, int]] = []  # (when, resource, token)
        self._arrivals = 0
        # An authority built afresh for an epoch it may have granted in before (a restart
        # that lost its state) knows nothing of that epoch's grants and must not act in it.
        self._knows_epoch = mandate_until is None

    # --- inspection -------------------------------------------------------------------

    def state(self, resource: str) -> ResourceState:
        r = self._resources.get(resource)
        return _R_FREE if r is None else r.state

    def holder(self, resource: str) -> tuple[int, int, int] | None:
        """(holder, fencing token, expires_at) of the grant in force, if any."""
        r = self._resources.get(resource)
        if r is None or r.state is _R_FREE:
            return None
        return r.holder, r.token, r.expires_at

    def queue_length(self, resource: str) -> int:
        r = self._resources.get(resource)
        return 0 if r is None else len(r.queued)

    def next_deadline(self) -> int | None:
        """When :meth:`tick` next has something to do."""
        return self._deadlines[0][0] if self._deadlines else None

    def active(self, now: int) -> bool:
        """Whether we may grant at ``now`` (inside our mandate)."""
        return self._knows_epoch and (self.mandate_until is None or now < self.mandate_until)

    # --- inputs -----------------------------------------------------------------------

    def assume(self, epoch: int, mandate_until: int | None, now: int) -> list[Action]:
        """Take up (or extend) the authority for ``epoch`` until ``mandate_until``.

        A new epoch starts clean: every grant of an older epoch ended with that epoch's
        mandate (see the theory of operation), and the new tokens are above all of them.
        """
        if not 0 <= epoch < 1 << EPOCH_SHIFT:
            raise LocalProtocolError(f"epoch {epoch} does not fit in {EPOCH_SHIFT} bits")
        if epoch < self.epoch or (epoch == self.epoch and not self._knows_epoch):
            return []  # an epoch whose grants we do not know: never act in it
        if epoch > self.epoch:
            self.epoch = epoch
            self._knows_epoch = True
            self._resources.clear()
            self._deadlines.clear()
        self.mandate_until = mandate_until
        actions = self.tick(now)
        # Queues that waited for a longer mandate may move now.
        for resource, r in self._resources.items():
            if r.state is _R_FREE and r.queued:
                self._grant_next(resource, r, now, actions)
        return actions

    def receive(self, message: object, content_id: ContentId, now: int) -> list[Action]:
        """Act on one verified lease message addressed to us."""
        actions = self.tick(now)
        if isinstance(message, LeaseClaim):
            self._on_claim(message, content_id, now, actions)
        elif isinstance(message, LeaseRenew):
            self._on_renew(message, content_id, now, actions)
        elif isinstance(message, LeaseRelease):
            self._on_release(message, now, actions)
        return actions

    def revoke(
        self, resource: str, effective_at: int, now: int, reason: str | None = None
    ) -> list[Action]:
        """Withdraw the grant in force on ``resource`` from ``effective_at`` on."""
        actions = self.tick(now)
        r = self._resources.get(resource)
        if r is None or r.state is not _R_HELD:
            actions.append(Refused(None, Refusal.NOT_HELD))
            return actions
        self._move(r, Step.REVOKE)
        revoke = LeaseRevoke(
            header=self._header(now, ()),
            resource=resource,
            fencing_token=r.token,
            holder=r.holder,
            effective_at=effective_at,
            reason=reason,
        )
        actions.append(Send(revoke, r.holder))
        return actions

    def revoke_holders(
        self, which: Callable[[int], bool], effective_at: int, now: int, reason: str | None = None
    ) -> list[Action]:
        """Revoke every grant in force whose holder ``which`` names, and drop their queued
        claims (an isolation order's "its leases revoked"; ``isolation.py``). As for
        :meth:`revoke`, a revoked resource is free only at release or ``expires_at + max_drift``.
        """
        actions = self.tick(now)
        for resource, r in sorted(self._resources.items()):
            for holder in [h for h in r.queued if which(h)]:
                del r.queued[holder]  # its heap entry goes stale and is skipped
            if r.state is _R_HELD and which(r.holder):
                actions.extend(self.revoke(resource, effective_at, now, reason))
        return actions

    def tick(self, now: int) -> list[Action]:
        """Expire and drain what is due at ``now``; grant freed resources to their queues."""
        actions: list[Action] = []
        self.replay.tick(now)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            when, resource, token = heapq.heappop(deadlines)
            r = self._resources.get(resource)
            if r is None or r.token != token:
                continue
            if r.state in (_R_HELD, _R_REVOKED) and when == r.expires_at:
                self._move(r, Step.EXPIRE)
                notice = LeaseExpiry(
                    header=self._header(now, ()),
                    resource=resource,
                    fencing_token=token,
                    holder=r.holder,
                    expired_at=r.expires_at,
                )
                actions.append(Send(notice, r.holder))
                heapq.heappush(
                    deadlines, (r.expires_at + self.config.max_drift_ms, resource, token)
                )
            elif (
                r.state is _R_LAPSED and when == r.expires_at + self.config.max_drift_ms
            ):
                self._move(r, Step.DRAIN)
                self._grant_next(resource, r, now, actions)
        return actions

    # --- handlers ---------------------------------------------------------------------

    def _judge(self, message: LeaseClaim | LeaseRenew | LeaseRelease, now: int) -> Refusal | None:
        h = message.header
        verdict = self.replay.check(h.issuer, message.resource, h.sequence, h.issued_at, now)
        if verdict is _F_FRESH:
            return None
        return _REFUSAL[verdict]

    def _acted(self, message: LeaseClaim | LeaseRenew | LeaseRelease) -> None:
        h = message.header
        self.replay.acted(h.issuer, message.resource, h.sequence, h.issued_at)

    def _on_claim(self, claim: LeaseClaim, cid: ContentId, now: int, actions: list[Action]) -> None:
        resource, issuer = claim.resource, claim.header.issuer
        if not self.owns(resource):
            actions.append(Refused(claim, Refusal.NOT_OURS))
            return
        if not self.active(now):
            actions.append(Refused(claim, Refusal.NO_MANDATE))
            return
        if not self._admitted(issuer):
            actions.append(Refused(claim, Refusal.CONTAINED))
            return
        if min(claim.term_ms, self.config.max_term_ms) <= self._shortest_grant():
            # Could never be granted: queued, it would block everyone behind it.
            actions.append(Refused(claim, Refusal.TERM_TOO_SHORT))
            return
        window = self.replay.window
        if claim.header.issued_at < now - window.max_age_ms:
            actions.append(Refused(claim, Refusal.STALE))
            return
        r = self._resources.get(resource)
        if (
            r is not None
            and r.holder == issuer
            and r.state is _R_HELD
            and r.issued is not None
        ):
            # The holder asks again (duplicate, or its grant was lost): the same answer.
            actions.append(Send(self._reissue(r.issued, now, cid), issuer))
            return
        refusal = self._judge(claim, now)
        if refusal is not None:
            actions.append(Refused(claim, refusal))
            return
        if r is None:
            r = self._resources[resource] = _Resource()
        # A free resource with nobody waiting is granted at once; if too little of our mandate
        # is left for that to be of use, the claim waits in the queue instead.
        if (
            r.state is _R_FREE
            and not r.queued
            and self._grant(resource, r, issuer, cid, claim.term_ms, now, actions)
        ):
            self._acted(claim)
            return
        if issuer not in r.queued and len(r.queued) >= self.config.max_queue:
            actions.append(Refused(claim, Refusal.QUEUE_FULL))
            return
        self._acted(claim)
        self._arrivals += 1
        r.queued[issuer] = (self._arrivals, cid, claim.term_ms, now)
        heapq.heappush(r.queue, (-claim.priority, self._arrivals, issuer))
        if r.state is _R_FREE:
            self._grant_next(resource, r, now, actions)

    def _on_renew(self, renew: LeaseRenew, cid: ContentId, now: int, actions: list[Action]) -> None:
        r = self._resources.get(renew.resource)
        if (
            r is None
            or r.state is not _R_HELD
            or r.holder != renew.header.issuer
            or r.token != renew.fencing_token
            or r.issued is None
        ):
            actions.append(Refused(renew, Refusal.UNKNOWN_GRANT))
            return
        if not self.active(now):
            actions.append(Refused(renew, Refusal.NO_MANDATE))
            return
        if not self._admitted(renew.header.issuer):
            actions.append(Refused(renew, Refusal.CONTAINED))  # the grant runs out
            return
        refusal = self._judge(renew, now)
        if refusal is not None:
            actions.append(Refused(renew, refusal))
            return
        self._acted(renew)
        expires_at = self._expiry(now, renew.term_ms)
        if expires_at <= r.expires_at:
            # Nothing to extend (our mandate ends first): the grant in force again.
            actions.append(Send(self._reissue(r.issued, now, cid), r.holder))
            return
        self._move(r, Step.RENEW)
        r.expires_at = expires_at
        grant = LeaseGrant(
            header=self._header(now, (cid, r.claim) if r.claim is not None else (cid,)),
            resource=renew.resource,
            holder=r.holder,
            claim=r.issued.claim,
            fencing_token=r.token,
            term_ms=expires_at - now,
            expires_at=expires_at,
        )
        r.issued = grant
        heapq.heappush(self._deadlines, (expires_at, renew.resource, r.token))
        actions.append(Send(grant, r.holder))

    def _on_release(self, release: LeaseRelease, now: int, actions: list[Action]) -> None:
        r = self._resources.get(release.resource)
        if (
            r is None
            or r.state is _R_FREE
            or r.holder != release.header.issuer
            or r.token != release.fencing_token
        ):
            actions.append(Refused(release, Refusal.UNKNOWN_GRANT))
            return
        refusal = self._judge(release, now)
        if refusal is not None:
            actions.append(Refused(release, refusal))
            return
        self._acted(release)
        self._move(r, Step.RELEASE)
        self._grant_next(release.resource, r, now, actions)

    # --- granting ---------------------------------------------------------------------

    def _admitted(self, node: int) -> bool:
        return self.admits is None or self.admits(node)

    def _shortest_grant(self) -> int:
        """A grant no longer than this is of no use to its holder (§6.4 drift margins)."""
        return self.config.min_term_ms + 2 * self.config.max_drift_ms

    def _expiry(self, now: int, term_ms: int) -> int:
        expires_at = now + min(term_ms, self.config.max_term_ms)
        if self.mandate_until is not None and expires_at > self.mandate_until:
            expires_at = self.mandate_until
        return expires_at

    def _grant_next(self, resource: str, r: _Resource, now: int, actions: list[Action]) -> None:
        """Grant a FREE resource to the head of its queue, skipping stale and aged places."""
        ttl = self.config.claim_ttl_ms
        while r.queue:
            _, arrival, holder = r.queue[0]
            place = r.queued.get(holder)
            if place is None or place[0] != arrival:
                heapq.heappop(r.queue)
                continue
            _, cid, term_ms, received = place
            if now - received > ttl or not self._admitted(holder):
                heapq.heappop(r.queue)
                del r.queued[holder]
                continue
            if not self._grant(resource, r, holder, cid, term_ms, now, actions):
                return  # too close to the end of our mandate: the queue waits
            heapq.heappop(r.queue)
            del r.queued[holder]
            return

    def _grant(
        self,
        resource: str,
        r: _Resource,
        holder: int,
        cid: ContentId,
        term_ms: int,
        now: int,
        actions: list[Action],
    ) -> bool:
        if not self.active(now):
            return False
        expires_at = self._expiry(now, term_ms)
        if expires_at - now <= self._shortest_grant():
            return False
        self._move(r, Step.GRANT)
        r.count += 1
        r.holder = holder
        r.token = (self.epoch << EPOCH_SHIFT) | r.count
        r.expires_at = expires_at
        r.claim = cid
        grant = LeaseGrant(
            header=self._header(now, (cid,)),
            resource=resource,
            holder=holder,
            claim=cid,
            fencing_token=r.token,
            term_ms=expires_at - now,
            expires_at=expires_at,
        )
        r.issued = grant
        heapq.heappush(self._deadlines, (expires_at, resource, r.token))
        actions.append(Send(grant, holder))
        return True

    def _reissue(self, grant: LeaseGrant, now: int, cid: ContentId) -> LeaseGrant:
        """The grant in force, under a new header (so the holder's replay guard takes it).

        Built field by field: ``attrs.evolve`` would look the class's fields up on every
        call. A field added to LeaseGrant must be added here (a test holds this to evolve)."""
        return LeaseGrant(
            header=self._header(now, (cid,)),
            resource=grant.resource,
            holder=grant.holder,
            claim=grant.claim,
            fencing_token=grant.fencing_token,
            term_ms=grant.term_ms,
            expires_at=grant.expires_at,
            extensions=grant.extensions,
        )

    def _header(self, now: int, references: Iterable[ContentId]) -> Header:
        self.sequence = self.next_sequence() if self.next_sequence else self.sequence + 1
        return Header(
            issuer=self.node, issued_at=now, sequence=self.sequence, references=tuple(references)
        )

    @staticmethod
    def _move(r: _Resource, step: Step) -> None:
        r.state = TRANSITIONS[r.state][step]
        if r.state is _R_FREE:
            r.holder = -1
            r.issued = None


_REFUSAL: Final = {
    Freshness.STALE: Refusal.STALE,
    Freshness.FUTURE: Refusal.FUTURE,
    Freshness.REPLAYED: Refusal.REPLAYED,
}
