"""The bundle agent: a fleetwire node as one sans-IO object (RFC 9171 §5).

Theory of operation
-------------------
:class:`BundleAgent` decides everything a node decides and does nothing else: it takes
events with ``now`` (DTN ms) and returns :mod:`.actions` for its driver to carry out — the
Trio node, the discrete-event simulator, or an embedder's cyclic executive. It owns no
thread, reads no clock and does no I/O; its store (:class:`~.agent_store.AgentStore`) is
called synchronously and is the only thing that outlives it.

* **accept** (``receive``) — parse and check CRCs (RFC 9171 §4.2.1), discard an expired
  bundle (§4.3.1) or one over its hop limit (§4.4.3) with a deletion report if asked, ``put``
  (duplicate keys cost nothing; a quota answers "refused" and nothing is acknowledged). Only
  after ``put`` returned :class:`TransferAccepted` lets the link acknowledge: accepted means
  durable. A reception report (§6.1.1) follows if the bundle asked.
* **route** — :class:`~.routing.Router`: contact graph, then static routes (every linked
  neighbour is one), then the hierarchical default; never back to the previous node (§4.4.1).
  A next hop with a link queues the bundle there; otherwise it is parked until a link comes up
  or the plan's next contact opens (a :class:`WakeAt`). A ``dtn:`` destination has no route
  here (routes are by ``ipn`` node number): discarded with reason "no known route" (§5.4.2).
* **forward** — on an up link the bundle goes out as :class:`Transmit` with its hop count
  raised and Previous Node set (§4.4.1, §4.4.3). When the link has it (``transmitted``) the
  bundle becomes a ``forwarded`` tombstone for ``forwarded_memory_ms``, so a resend by the
  node we had it from is a duplicate, not a second copy forwarded. A link that cannot
  acknowledge (``link_up(..., confirms=False)``) only wrote it: the bundle is *retained* for
  ``retain_unconfirmed_ms`` and routed again if that link goes down meanwhile; a reception or
  delivery report about it releases it early. A failed transmission routes it again.
* **deliver** — :func:`~.admission.admit` (service, signature, trust, role, replay). A
  verified message becomes :class:`Deliver`; the bundle stays held until the driver calls
  ``acknowledge`` (then the replay record is made durable, the bundle becomes a ``delivered``
  tombstone, and a delivery report goes out if asked). A revocation list is applied and spread
  to every neighbour but its sender. A refused bundle is deleted: its store key covers its own
  bytes, so it never stood in for a genuine copy (:mod:`.bundling`).
* **expire** — the agent wakes at the store's earliest expiry (rounded up to
  ``expiry_granularity_ms``, so bundles expiring close together share one wake), drops what
  expired and prunes the replay memory (:meth:`~fleetwire.protocol.replay.ReplayGuard.prune`).
* **wakes** — every timer (expiry, a parked bundle's next contact, a retention's end, a
  role's deadline) is in one heap, and a batch ends with :class:`WakeAt` only when the heap's
  earliest time is earlier than the wake returned since the last ``poll`` (or none was): after
  a ``poll`` the next wake, if any, is always returned. So a driver keeps the earliest
  ``WakeAt`` it was given until it fires, then calls ``poll`` and takes the wake that batch
  names (no ``WakeAt`` in it: nothing to wake for). A wake that is not replaced by an earlier
  one is never withdrawn: a timer that no longer matters makes one early ``poll``, never a
  missed one. The driver sees each wake once rather than with every batch.
* **restart** (``start``) — read the replay memory back and walk the store: bundles for this
  node are delivered again (at-least-once to the application), everything else routed afresh
  (a routing choice is never stored).

Every held bundle's place is a :class:`~.states.BundleState`, moved only through the
transition table in :mod:`.states`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ..bpv7 import (
    Bundle,
    BundleError,
    BundleFlags,
    IpnEid,
    StatusReason,
    StatusReport,
    admin_record_of,
    decode_bundle,
    decode_bundle_offsets,
    encode_bundle,
)
from ..cose import Sign1
from ..envelope import SignedMessage, seal
from ..errors import FleetwireError
from ..keys import SigningKey
from ..messages import PROTOCOL_VERSION, CapabilityAdvertisement, Family, Message, PeerVersions
from ..messages import accel as init_accel
from ..replay import DEFAULT_BUNDLE_LIFETIME_MS, ReplayGuard, ReplayPolicy
from ..roles import reader_cell
from ..trust import RevocationsRefused, TrustStore
from .actions import (
    Action,
    Deliver,
    DeliveryRefused,
    Discarded,
    Handled,
    RevocationsApplied,
    Sent,
    StatusReportReceived,
    TransferAccepted,
    TransferRefused,
    Transmit,
    WakeAt,
)
from .admission import Admitted, Refusal, RevocationBundle, admit
from .agent_store import AgentStore
from .bundling import (
    DELIVERED,
    FCP_SERVICE,
    FORWARDED,
    LOCAL,
    TRUST_SERVICE,
    HopLimitExceeded,
    accept_received,
    accept_record,
    forward_bytes,
    message_bundle,
    neighbour_node,
    new_message,
    status_report_for,
)
from .contacts import ContactPlan
from .handlers import Handler, Outgoing
from .routing import Forward, Hierarchy, Router
from .states import TRANSITIONS, BundleEvent, BundleState, next_state
from .store import Accepted, Duplicate, Refused, StoredBundle

__all__ = ["AgentConfig", "AgentStats", "BundleAgent"]

# Every state and event the agent names, as a module constant: _S_* are BundleState's members,
# _E_* BundleEvent's. Not BundleState.LOCAL in place because in Python 3.11 reading a
# member off its enum goes through EnumType's __getattr__ hook, hundreds of instructions
# a read against a handful for a global, and the agent reads about twenty a message
# (a simulated fleet made 29 such reads per delivered message, two thirds of them here).
_S_GONE: Final = BundleState.GONE
_S_HANDED: Final = BundleState.HANDED
_S_IN_FLIGHT: Final = BundleState.IN_FLIGHT
_S_LOCAL: Final = BundleState.LOCAL
_S_PARKED: Final = BundleState.PARKED
_S_QUEUED: Final = BundleState.QUEUED
_S_RETAINED: Final = BundleState.RETAINED
_S_UNROUTED: Final = BundleState.UNROUTED
_E_ACKNOWLEDGE: Final = BundleEvent.ACKNOWLEDGE
_E_CUSTODY: Final = BundleEvent.CUSTODY
_E_DISCARD: Final = BundleEvent.DISCARD
_E_EXPIRE: Final = BundleEvent.EXPIRE
_E_FAILED: Final = BundleEvent.FAILED
_E_FINISH: Final = BundleEvent.FINISH
_E_GIVE_BACK: Final = BundleEvent.GIVE_BACK
_E_HAND: Final = BundleEvent.HAND
_E_PARK: Final = BundleEvent.PARK
_E_REFUSE: Final = BundleEvent.REFUSE
_E_RELEASE: Final = BundleEvent.RELEASE
_E_REROUTE: Final = BundleEvent.REROUTE
_E_RESEND: Final = BundleEvent.RESEND
_E_ROUTE: Final = BundleEvent.ROUTE
_E_TRANSMIT: Final = BundleEvent.TRANSMIT
_E_UNCONFIRMED: Final = BundleEvent.UNCONFIRMED


@attrs.frozen(slots=True)
class AgentConfig:
    """Who the node is and how it forwards (the same settings as the Trio node's)."""

    node: int
    key: SigningKey
    trust: TrustStore = attrs.field(eq=False)
    service: int = FCP_SERVICE
    trust_service: int = TRUST_SERVICE
    bundle_lifetime_ms: int = DEFAULT_BUNDLE_LIFETIME_MS
    contact_plan: ContactPlan | None = attrs.field(default=None, eq=False)
    static_routes: Mapping[int, int] = attrs.field(factory=dict)
    #: Hierarchical default route: node → its parent (cell coordinator, region coordinator).
    parents: Mapping[int, int] = attrs.field(factory=dict)
    #: The same tree, built once and shared (a simulator's many agents); wins over ``parents``.
    hierarchy: Hierarchy | None = attrs.field(default=None, eq=False)
    retain_unconfirmed_ms: int = 60_000
    forwarded_memory_ms: int = 15 * 60_000
    replay: ReplayPolicy = attrs.field(factory=ReplayPolicy)
    #: Refuse messages issued before the start when the store keeps no replay memory.
    replay_floor_at_start: bool = False
    #: Expiry wakes are rounded up to this: bundles expiring close together share one wake.
    expiry_granularity_ms: int = 60_000
    #: The replay memory is pruned at most this often (it is bounded by count meanwhile).
    replay_prune_interval_ms: int = 600_000
    #: After a neighbour refused a bundle (its store is full), wait this long before retrying.
    refused_retry_ms: int = 60_000
    #: The protocol version the node speaks: its newest, or an older one it is pinned to; it
    #: reads and writes exactly as that version would (spec/v2/versions.md).
    protocol_version: int = PROTOCOL_VERSION


@attrs.define
class AgentStats:
    """Counters a report or a test can read; they only grow."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    malformed: int = 0
    forwarded: int = 0
    delivered: int = 0
    acknowledged: int = 0
    rejected: int = 0
    expired: int = 0
    hop_limited: int = 0
    #: Relayed bundles from a source behind this node's isolation boundary, dropped.
    isolated: int = 0
    no_route: int = 0
    link_failures: int = 0
    status_reports: int = 0
    resent: int = 0


@attrs.define(slots=True)
class _Held:
    """A bundle in the agent's care: its state, decoded form and where it is going."""

    state: BundleState
    record: StoredBundle
    bundle: Bundle
    peer: int | None = None
    admitted: Admitted | None = None
    #: Where the blocks of ``record.data`` start (forwarding copies them from there).
    offsets: tuple[int, ...] | None = None
    #: The payload's COSE_Sign1 as parsed on reception (delivery does not parse it again).
    sign1: Sign1 | None = None
    #: The neighbours routing leaves out (the previous node, RFC 9171 §4.4.1), when known on
    #: taking the bundle; ``None``: read from ``bundle`` when routing.
    exclude: tuple[int, ...] | None = None


# Every bundle taken, on every hop, builds one: the accelerator's __init__ stores straight
# into the slots (fleetwire.protocol.messages.accel.install_fast_init; a no-op without it,
# and undone on the pure-Python road).
init_accel.install_fast_init(_Held)


@attrs.define(slots=True)
class _Link:
    up: bool
    confirms: bool
    queue: deque[bytes] = attrs.field(factory=deque)


#: The reception report request as a plain int (RFC 9171 §4.2.3).
_REPORT_RECEPTION: Final = int(BundleFlags.REPORT_RECEPTION)
#: And the forwarding one: every relay hop tests it, nearly always to find it unset.
_REPORT_FORWARDING: Final = int(BundleFlags.REPORT_FORWARDING)
_REPORT_DELIVERY: Final = int(BundleFlags.REPORT_DELIVERY)
_ADMIN_RECORD: Final = int(BundleFlags.ADMIN_RECORD)

#: ``store.remember``'s floors when none rose (read only: ``AgentStore.remember`` takes a Mapping).
_NO_FLOORS: Final[Mapping[int, int]] = MappingProxyType({})

# Timer kinds, in the agent's one heap of (time, seq, kind, key).
_EXPIRY, _REROUTE, _RETENTION, _HANDLER = 0, 1, 2, 3


class BundleAgent:
    """A bundle node without I/O (module docstring). Call :meth:`start` once before use."""

    def __init__(self, config: AgentConfig, store: AgentStore) -> None:
        self.config = config
        self.store = store
        self.node = config.node
        self.stats = AgentStats()
        plan = config.contact_plan or ContactPlan()
        hierarchy = config.hierarchy
        if hierarchy is None and config.parents:
            hierarchy = Hierarchy(config.parents)
        self.router = Router(config.node, plan, static=dict(config.static_routes),
                             hierarchy=hierarchy)  # fmt: skip
        light = max((contact.owlt_ms for contact in plan), default=0)
        self.guard = ReplayGuard(config.replay.widened(light))
        self._reader_cell = reader_cell(config.trust, config.key.kid)
        #: An isolation boundary's filter on a message's source (:func:`.admission.admit`,
        #: ``source-isolated``); set by whoever applies isolation orders here. None: no filter.
        self.boundary: Callable[[int], bool] | None = None
        #: Which version to write to each peer, learnt from their capability advertisements.
        self.versions = PeerVersions(config.protocol_version)
        self._held: dict[bytes, _Held] = {}
        self._links: dict[int, _Link] = {}
        self._parked: set[bytes] = set()
        #: Retained bundles by BPv7 bundle id (what status reports name) → store key.
        self._retained: dict[bytes, bytes] = {}
        self._timers: list[tuple[int, int, int, bytes]] = []
        self._timer_seq = 0
        self._expiry_at: int | None = None
        #: The last WakeAt returned since the last poll (``None``: none); see ``_finish``.
        self._wake_sent: int | None = None
        self._next_prune = 0
        self._reroute_at: set[int] = set()
        self._last_created = -1
        self._sequence = 0
        self._message_sequence = 0
        #: Roles attached (:mod:`.handlers`), and which takes each family.
        self._handlers: list[Handler] = []
        self._handler_of: dict[Family, Handler] = {}
        self._handler_at: set[int] = set()

    # --- lifecycle -------------------------------------------------------------------

    def start(self, now: int) -> list[Action]:
        """Recover from the store (module docstring, "restart")."""
        if not self.store.durable and self.config.replay_floor_at_start:
            self.guard.not_before = now
        seen, floors = self.store.remembered()
        self.guard.restore(seen, floors)
        actions: list[Action] = []
        for record in self.store.pending_for(LOCAL, 1 << 30):
            self._take(record, decode_bundle(record.data), _S_LOCAL, now, actions)
        for record in self.store.pending_for(None, 1 << 30):
            self._take(record, decode_bundle(record.data), _S_UNROUTED, now, actions)
        return self._finish(now, actions)

    def poll(self, now: int) -> list[Action]:
        """Run what is due at ``now``: expiry, parked bundles' next contacts, retention ends."""
        actions: list[Action] = []
        self._wake_sent = None  # a poll consumes the driver's wake: the batch names the next
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, kind, key = heapq.heappop(timers)
            if kind == _EXPIRY:
                if self._expiry_at == at:
                    self._expiry_at = None
                    self._expire(now, actions)
            elif kind == _REROUTE:
                self._reroute_at.discard(at)
                self._reroute_parked(now, actions)
            elif kind == _HANDLER:
                self._handler_at.discard(at)
                for handler in self._handlers:
                    due = handler.deadline()
                    if due is not None and due <= now:
                        handler.at(now)
                        self._act(handler, handler.on_tick(now), now, actions)
            else:
                self._release(key, now, actions)
        return self._finish(now, actions)

    # --- the application's side --------------------------------------------------------

    def next_message_sequence(self, now: int) -> int:
        """A header sequence larger than any this node used, across restarts (ms × 1024)."""
        # max() spelt out: every message a node's application writes asks.
        sequence = self._message_sequence + 1
        floor = now * 1024
        if sequence < floor:
            sequence = floor
        self._message_sequence = sequence
        return sequence

    def send(
        self,
        message: Message | SignedMessage,
        to: int,
        now: int,
        *,
        lifetime_ms: int | None = None,
        reports: BundleFlags = BundleFlags.NONE,
    ) -> list[Action]:
        """Sign ``message`` (unless it is signed already), hold it, route it to node ``to``.

        The first action is :class:`Sent` — or :class:`TransferRefused` (link ``-1``) when
        the store is full: nothing was held.
        """
        return self._finish(now, self._send(message, to, now, lifetime_ms, reports))

    def _send(
        self, message: Message | SignedMessage, to: int, now: int,
        lifetime_ms: int | None = None, reports: BundleFlags = BundleFlags.NONE,
    ) -> list[Action]:  # fmt: skip
        sealed_here = not isinstance(message, SignedMessage)
        if not isinstance(message, SignedMessage):
            # At the version ``to`` reads (spec/v2/versions.md §2); NotExpressible if it cannot.
            message = seal(self.versions.convert_for(message, to), self.config.key)
        signed = message
        bundle, data, offsets = new_message(
            signed.envelope, source=self.node, destination=to, created_at=now,
            sequence=self._next_sequence(now),
            lifetime_ms=lifetime_ms or self.config.bundle_lifetime_ms,
            service=self.config.service, reports=reports,
        )  # fmt: skip
        actions: list[Action] = []
        # local: the destination is ipn:<to>.<service>, so it is this node exactly when to is.
        record, _, local, _ = accept_record(bundle, data, now, self.node, sealed_here=sealed_here)
        result = self.store.put(record)
        if isinstance(result, Refused):
            actions.append(TransferRefused(-1, f"store-{result.reason.value}", result.message))
            return actions
        actions.append(Sent(signed, record.bundle_id))
        if isinstance(result, Accepted):
            self.stats.sent += 1
            # new_message's bundle has no Previous Node block: no neighbour to leave out.
            self._take(record, bundle, _S_LOCAL if local else _S_UNROUTED, now, actions, offsets,
                       exclude=())  # fmt: skip
        return actions

    def acknowledge(self, delivery: bytes, now: int) -> list[Action]:
        """The application has the message of ``Deliver(delivery, …)``: forget the bundle."""
        actions: list[Action] = []
        held = self._held.get(delivery)
        if held is None or held.state is not _S_HANDED:
            return self._finish(now, actions)
        self._acknowledge(delivery, held, now, actions)
        return self._finish(now, actions)

    def _acknowledge(self, delivery: bytes, held: _Held, now: int, actions: list[Action]
                     ) -> None:  # fmt: skip
        admitted = held.admitted
        if admitted is not None:  # replay memory first: a crash between means redelivery
            accept = admitted.accept
            # A tuple and the one shared empty mapping: the floor rises rarely (count bound).
            floor = accept.floor
            seen = accept.seen
            self.store.remember((seen,), _NO_FLOORS if floor is None else {seen.issuer: floor})
        self._move(delivery, held, _E_ACKNOWLEDGE)
        self.store.tombstone(delivery, DELIVERED)
        self.stats.acknowledged += 1
        if int(held.bundle.primary.flags) & _REPORT_DELIVERY:  # as _report tests it, no call
            self._report(held.bundle, BundleFlags.REPORT_DELIVERY, now, actions)

    def give_back(self, delivery: bytes, now: int) -> list[Action]:
        """The application will not take this message after all: offer it again."""
        actions: list[Action] = []
        held = self._held.get(delivery)
        if held is not None and held.state is _S_HANDED:
            self._move(delivery, held, _E_GIVE_BACK)
            self._deliver(delivery, held, now, actions)
        return self._finish(now, actions)

    # --- roles (:mod:`.handlers`) ------------------------------------------------------

    def attach(self, handler: Handler, now: int) -> list[Action]:
        """Let ``handler`` take the messages of its families from now on, and start it."""
        handler.bind(self.next_message_sequence)
        self._handlers.append(handler)
        for family in handler.families:
            self._handler_of[family] = handler
        actions: list[Action] = []
        handler.at(now)
        self._act(handler, handler.start(now), now, actions)
        return self._finish(now, actions)

    def act(self, handler: Handler, sends: list[Outgoing], now: int) -> list[Action]:
        """Send what an attached role's application side returned (a member's ``want``, …)
        and keep its deadline among the agent's timers."""
        actions: list[Action] = []
        self._act(handler, sends, now, actions)
        return self._finish(now, actions)

    def _act(self, handler: Handler, sends: list[Outgoing], now: int, actions: list[Action]
             ) -> None:  # fmt: skip
        for send in sends:
            actions.extend(self._send(send.message, send.to, now))
        due = handler.deadline()
        if due is not None:
            # A machine that is late is woken next ms, never in a loop (max() spelt out).
            at = due if due > now else now + 1
            if at not in self._handler_at:
                self._handler_at.add(at)
                self._timer(at, _HANDLER, b"")

    def apply_revocations(self, data: bytes, now: int, *, spread: bool = True) -> list[Action]:
        """Put a root-signed revocation list (from a file, a tool) in force and spread it to
        every neighbour (spec §10). ``spread`` also when it is the list in force already — a
        list loaded at start, before any link was up — unless the driver wrote that file
        itself on receiving the list. Refused lists come back as :class:`DeliveryRefused`."""
        actions: list[Action] = []
        trust = self.config.trust
        current = trust.revocations
        try:
            revocations = trust.apply_revocations(data, now)
        except RevocationsRefused:
            return self._finish(now, actions)  # older than the one in force
        except FleetwireError as exc:
            actions.append(DeliveryRefused(b"", exc.code, exc.message))
            return self._finish(now, actions)
        if current is None or revocations.serial != current.serial:
            actions.append(RevocationsApplied(data, revocations.serial))
        elif not spread:
            return self._finish(now, actions)
        self._spread_revocations(data, None, now, actions)
        return self._finish(now, actions)

    # --- the links' side ---------------------------------------------------------------

    def link_up(self, peer: int, now: int, *, confirms: bool = True) -> list[Action]:
        """A link to ``peer`` is up (a session, a contact). ``confirms``: the link says when
        the next hop has a bundle (TCPCL with acks); if not, bundles sent on it are retained."""
        actions: list[Action] = []
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link(True, confirms)
        link.up, link.confirms = True, confirms
        self.router.static.setdefault(peer, peer)
        self._drain(peer, link, now, actions)
        self._reroute_parked(now, actions)
        return self._finish(now, actions)

    def link_down(self, peer: int, now: int) -> list[Action]:
        """The link to ``peer`` went down: what it did not confirm is routed again."""
        actions: list[Action] = []
        link = self._links.get(peer)
        if link is None:  # a neighbour known before its first contact: revocations go to it
            self._links[peer] = _Link(False, True)
            self.router.static.setdefault(peer, peer)
        else:
            link.up = False
        for key, held in list(self._held.items()):
            if held.peer != peer:
                continue
            if held.state is _S_IN_FLIGHT:
                self.stats.link_failures += 1
                self._move(key, held, _E_FAILED)
                self._route(key, held, now, actions)
            elif held.state is _S_RETAINED:
                self.stats.resent += 1
                self._retained.pop(held.bundle.id.key(), None)
                self._move(key, held, _E_RESEND)
                self._route(key, held, now, actions)
        return self._finish(now, actions)

    def receive(self, data: bytes, from_link: int | None, now: int) -> list[Action]:
        """A link received ``data`` (one encoded bundle) from neighbour ``from_link``."""
        actions: list[Action] = []
        link = -1 if from_link is None else from_link
        # The store's record is made before the checks below: one step, and it is only
        # dropped when a check does drop the bundle. The common bundle in one step with its
        # decoding (accept_received); anything else through the reference road below.
        received = accept_received(data, now, self.node, from_link)
        if received is not None:
            bundle, offsets, record, expires_at, local, sign1, hop_over, exclude = received
        else:
            try:
                bundle, offsets = decode_bundle_offsets(data)
            except BundleError as exc:
                self.stats.malformed += 1
                actions.append(TransferRefused(link, exc.code, f"malformed bundle: {exc}"))
                return self._finish(now, actions)
            record, expires_at, local, sign1 = accept_record(
                bundle, data, now, self.node, from_link
            )
            hops = bundle.hop_count
            hop_over = hops is not None and hops.count > hops.limit
            exclude = None
        if now >= expires_at:  # RFC 9171 §5.4 step 1 / §4.3.1: taken and dropped
            self.stats.expired += 1
            return self._take_and_drop(bundle, link, StatusReason.LIFETIME_EXPIRED, now)
        if hop_over:  # §4.4.3
            self.stats.hop_limited += 1
            return self._take_and_drop(bundle, link, StatusReason.HOP_LIMIT_EXCEEDED, now)
        source = bundle.primary.source
        if (not local and self.boundary is not None and isinstance(source, IpnEid)
                and not self.boundary(source.node)):  # fmt: skip
            # Relayed from behind an isolation boundary (spec/v2/faults.md §4): taken and
            # dropped, so the severed part's traffic goes no further than this node (a refusal
            # would only make the neighbour hold it and try again).
            self.stats.isolated += 1
            return self._take_and_drop(bundle, link, StatusReason.TRAFFIC_PARED, now)
        result = self.store.put(record)
        accepted = type(result) is Accepted  # the commonest answer, told in one test
        if not accepted and isinstance(result, Refused):
            self.stats.refused += 1
            actions.append(TransferRefused(link, f"store-{result.reason.value}", result.message))
            return self._finish(now, actions)
        actions.append(TransferAccepted(link, record.bundle_id))
        if not accepted and isinstance(result, Duplicate):
            self.stats.duplicates += 1
            return self._finish(now, actions)
        self.stats.accepted += 1
        if int(bundle.primary.flags) & _REPORT_RECEPTION:  # as _report tests it, without a call
            self._report(bundle, BundleFlags.REPORT_RECEPTION, now, actions)
        self._take(record, bundle, _S_LOCAL if local else _S_UNROUTED, now, actions, offsets,
                   sign1 if local else None, exclude)  # fmt: skip
        return self._finish(now, actions)

    def _take_and_drop(
        self, bundle: Bundle, link: int, reason: StatusReason, now: int
    ) -> list[Action]:
        """Accept the transfer (the sender is done with it) and delete the bundle at once,
        with a deletion status report if its source asked for one (RFC 9171 §5.13)."""
        actions: list[Action] = [TransferAccepted(link, bundle.id.key()),
                                 Discarded(bundle.id.key(), reason)]  # fmt: skip
        self._report(bundle, BundleFlags.REPORT_DELETION, now, actions, reason)
        return self._finish(now, actions)

    def transmitted(self, peer: int, bundle: bytes, now: int) -> list[Action]:
        """The link to ``peer`` has the bundle of ``Transmit(peer, …, bundle)``."""
        actions: list[Action] = []
        held = self._held.get(bundle)
        if held is None or held.state is not _S_IN_FLIGHT or held.peer != peer:
            return self._finish(now, actions)  # expired meanwhile, or a stale answer
        self.stats.forwarded += 1
        if int(held.bundle.primary.flags) & _REPORT_FORWARDING:  # as _report tests it
            self._report(held.bundle, BundleFlags.REPORT_FORWARDING, now, actions)
        link = self._links.get(peer)
        if link is not None and not link.confirms and self.config.retain_unconfirmed_ms:
            self._move(bundle, held, _E_UNCONFIRMED)
            self._retained[held.bundle.id.key()] = bundle
            self._timer(now + self.config.retain_unconfirmed_ms, _RETENTION, bundle)
        else:
            self._move(bundle, held, _E_CUSTODY)
            self._forwarded(bundle, held, now)
        return self._finish(now, actions)

    def transmit_failed(
        self, peer: int, bundle: bytes, now: int, *, refused: bool = False
    ) -> list[Action]:
        """The link to ``peer`` did not deliver the bundle. ``refused``: the neighbour said no
        (its store is full): park it and try again after ``refused_retry_ms``."""
        actions: list[Action] = []
        held = self._held.get(bundle)
        if held is None or held.state is not _S_IN_FLIGHT or held.peer != peer:
            return self._finish(now, actions)
        self.stats.link_failures += 1
        self._move(bundle, held, _E_FAILED)
        if refused:
            self._move(bundle, held, _E_PARK)
            self._parked.add(bundle)
            self._schedule_reroute(now + self.config.refused_retry_ms)
        else:
            self._route(bundle, held, now, actions)
        return self._finish(now, actions)

    def held_state(self, bundle: bytes) -> BundleState | None:
        """Where a bundle is in the agent's care (``None``: not in it)."""
        held = self._held.get(bundle)
        return None if held is None else held.state

    # --- decisions ---------------------------------------------------------------------

    def _take(
        self, record: StoredBundle, bundle: Bundle, state: BundleState, now: int,
        actions: list[Action], offsets: tuple[int, ...] | None = None,
        sign1: Sign1 | None = None, exclude: tuple[int, ...] | None = None,
    ) -> None:  # fmt: skip
        key = record.bundle_id
        held = self._held[key] = _Held(state, record, bundle, None, None, offsets, sign1, exclude)
        if state is _S_LOCAL:
            self._deliver(key, held, now, actions)
        else:
            self._route(key, held, now, actions)

    def _route(self, key: bytes, held: _Held, now: int, actions: list[Action]) -> None:
        held.peer = None
        destination = held.bundle.primary.destination
        if not isinstance(destination, IpnEid):  # routes are by ipn node number (§5.4.2)
            self.stats.no_route += 1
            self._discard(key, held, StatusReason.NO_KNOWN_ROUTE, now, actions)
            return
        exclude = held.exclude
        if exclude is None:  # not known on taking it: the Previous Node block says (§4.4.1)
            previous = held.bundle.previous_node
            exclude = (previous.node,) if isinstance(previous, IpnEid) else ()
        size = len(held.record.data)
        decision = self.router.route(
            destination.node, now, size=size, expires_at=held.record.expires_at, exclude=exclude
        )
        if isinstance(decision, Forward) and decision.next_hop in self._links:
            if decision.route is not None:
                self.router.book(decision.route, size)
            self._move(key, held, _E_ROUTE)
            held.peer = decision.next_hop
            link = self._links[decision.next_hop]
            link.queue.append(key)
            if link.up:
                self._drain(decision.next_hop, link, now, actions)
            return
        self._move(key, held, _E_PARK)
        self._parked.add(key)
        if isinstance(decision, Forward):
            # A contact route whose first hop has no link yet: look again when it departs
            # (the link normally comes up then, and that reroutes too).
            if decision.route is not None and decision.route.departure > now:
                self._schedule_reroute(decision.route.departure)
        elif decision.next_check_at is not None:
            self._schedule_reroute(decision.next_check_at)

    def _drain(self, peer: int, link: _Link, now: int, actions: list[Action]) -> None:
        """Hand every bundle queued for ``peer`` to its (up) link."""
        queue = link.queue
        while queue and link.up:
            key = queue.popleft()
            held = self._held.get(key)
            if held is None or held.state is not _S_QUEUED or held.peer != peer:
                continue  # expired or rerouted meanwhile
            if now >= held.record.expires_at:
                self.stats.expired += 1
                self._discard(key, held, StatusReason.LIFETIME_EXPIRED, now, actions)
                continue
            try:
                data = forward_bytes(held.bundle, held.record.data, self.node, held.offsets)
            except HopLimitExceeded:
                self.stats.hop_limited += 1
                self._discard(key, held, StatusReason.HOP_LIMIT_EXCEEDED, now, actions)
                continue
            self._move(key, held, _E_TRANSMIT)
            actions.append(Transmit(peer, data, key))

    def _reroute_parked(self, now: int, actions: list[Action]) -> None:
        parked, self._parked = self._parked, set()
        for key in sorted(parked):
            held = self._held.get(key)
            if held is not None and held.state is _S_PARKED:
                self._move(key, held, _E_REROUTE)
                self._route(key, held, now, actions)

    def _deliver(self, key: bytes, held: _Held, now: int, actions: list[Action]) -> None:
        bundle = held.bundle
        if int(bundle.primary.flags) & _ADMIN_RECORD:  # as PrimaryBlock.is_admin_record, no call
            self._admin_record(bundle, actions)
            self._move(key, held, _E_FINISH)
            self.store.tombstone(key, DELIVERED)  # a duplicate is still known
            return
        if held.admitted is None:
            verdict = admit(
                bundle, now, service=self.config.service,
                trust_service=self.config.trust_service, trust=self.config.trust,
                guard=self.guard, reader_cell=self._reader_cell, boundary=self.boundary,
                version=self.config.protocol_version, sign1=held.sign1,
            )  # fmt: skip
            held.sign1 = None  # used: the verdict is kept instead
            if type(verdict) is not Admitted:  # the commonest answer, told in one test
                if isinstance(verdict, Refusal):
                    self.stats.rejected += 1
                    self._move(key, held, _E_REFUSE)
                    self.store.delete(key)  # its key stands for nothing else (module docstring)
                    actions.append(DeliveryRefused(key, verdict.code, verdict.reason))
                    return
                if isinstance(verdict, RevocationBundle):
                    self._revocations(verdict.data, held.record, now, actions)
                    self._move(key, held, _E_FINISH)
                    self.store.tombstone(key, DELIVERED)
                    return
            held.admitted = verdict
            self.stats.delivered += 1
            if isinstance(verdict.signed.message, CapabilityAdvertisement):
                self.versions.learn(verdict.signed.message)
        self._move(key, held, _E_HAND)
        from_link = neighbour_node(held.record.received_from)
        signed = held.admitted.signed
        handler = self._handler_of.get(signed.message.TYPE.family) if self._handler_of else None
        if handler is None:
            actions.append(Deliver(key, signed, from_link))
            return
        # A role takes it: its answers are held before the bundle is acknowledged.
        actions.append(Handled(key, signed, from_link))
        handler.at(now)
        self._act(handler, handler.on_message(signed, now), now, actions)
        if held.state is _S_HANDED:
            self._acknowledge(key, held, now, actions)

    def _admin_record(self, bundle: Bundle, actions: list[Action]) -> None:
        # Status reports are not signed (BPSec is a later step): they inform, never authorise.
        try:
            record = admin_record_of(bundle)
        except BundleError:
            self.stats.rejected += 1
            return
        if isinstance(record, StatusReport):
            self.stats.status_reports += 1
            if record.received.asserted or record.delivered.asserted:
                retained = self._retained.get(record.subject.key())
                if retained is not None:  # downstream holds it: our copy may go
                    self._timer(0, _RETENTION, retained)
            actions.append(StatusReportReceived(record))

    def _revocations(
        self, data: bytes, record: StoredBundle, now: int, actions: list[Action]
    ) -> None:
        trust = self.config.trust
        current = trust.revocations
        try:
            revocations = trust.apply_revocations(data, now)
        except RevocationsRefused:
            return  # an older list: no harm, nothing to spread
        except FleetwireError as exc:
            self.stats.rejected += 1
            actions.append(DeliveryRefused(record.bundle_id, exc.code, exc.message))
            return
        if current is not None and revocations.serial == current.serial:
            return
        actions.append(RevocationsApplied(data, revocations.serial))
        self._spread_revocations(data, neighbour_node(record.received_from), now, actions)

    def _spread_revocations(
        self, data: bytes, came_from: int | None, now: int, actions: list[Action]
    ) -> None:
        # To every neighbour (linked, or in the contact plan) but the one it came from: each
        # holds it until a contact carries it on, as any bundle (spec §10).
        neighbours = set(self._links) | set(self.router.plan.neighbours(self.node))
        for peer in sorted(neighbours - {self.node, came_from}):
            bundle = message_bundle(
                data, source=self.node, destination=peer, created_at=now,
                sequence=self._next_sequence(now), lifetime_ms=self.config.bundle_lifetime_ms,
                service=self.config.trust_service,
            )  # fmt: skip
            self._hold_new(bundle, now, actions)

    def _release(self, key: bytes, now: int, actions: list[Action]) -> None:
        """Retention of a bundle sent on a no-ack link is over (or a report released it)."""
        held = self._held.get(key)
        if held is None or held.state is not _S_RETAINED:
            return
        self._retained.pop(held.bundle.id.key(), None)
        self._move(key, held, _E_RELEASE)
        self._forwarded(key, held, now)

    def _forwarded(self, key: bytes, held: _Held, now: int) -> None:
        # min() spelt out: every hop's custody ends here.
        expires_at = held.record.expires_at
        remember_until = now + self.config.forwarded_memory_ms
        if expires_at < remember_until:
            remember_until = expires_at
        self.store.tombstone(key, FORWARDED, remember_until)

    def _discard(
        self, key: bytes, held: _Held, reason: StatusReason, now: int, actions: list[Action]
    ) -> None:
        self._move(key, held, _E_DISCARD)
        self.store.delete(key)
        actions.append(Discarded(key, reason))
        self._report(held.bundle, BundleFlags.REPORT_DELETION, now, actions, reason)

    def _expire(self, now: int, actions: list[Action]) -> None:
        for key in self.store.expire(now):
            held = self._held.get(key)
            if held is not None:
                self.stats.expired += 1
                self._retained.pop(held.bundle.id.key(), None)
                self._parked.discard(key)
                self._move(key, held, _E_EXPIRE)
        if now >= self._next_prune:
            self._next_prune = now + self.config.replay_prune_interval_ms
            self.guard.prune(now)
            self.store.forget_seen(now)

    def _report(
        self, bundle: Bundle, request: BundleFlags, now: int, actions: list[Action],
        reason: int = StatusReason.NO_INFO,
    ) -> None:  # fmt: skip
        """The status report ``bundle`` asked for with ``request``, if it asked (§6.1.1)."""
        if not int(bundle.primary.flags) & int(request):  # plain ints: no enum arithmetic
            return
        report = status_report_for(
            bundle, request, this_node=self.node, now=now, sequence=self._next_sequence(now),
            lifetime_ms=self.config.bundle_lifetime_ms, reason=reason,
        )  # fmt: skip
        if report is not None:
            self._hold_new(report, now, actions)

    def _hold_new(self, bundle: Bundle, now: int, actions: list[Action]) -> None:
        """Hold a bundle this node made (a report, a revocation list to spread) and route it."""
        data = encode_bundle(bundle)
        record, _, local, _ = accept_record(bundle, data, now, self.node)
        if isinstance(self.store.put(record), Accepted):
            self._take(record, bundle, _S_LOCAL if local else _S_UNROUTED, now, actions)

    # --- bookkeeping -------------------------------------------------------------------

    def _move(self, key: bytes, held: _Held, event: BundleEvent) -> None:
        # next_state inlined (several moves per bundle per hop): the same table, the same error.
        try:
            state = held.state = TRANSITIONS[held.state][event]
        except KeyError:
            next_state(held.state, event)  # raises AgentStateError, worded in one place
            raise
        if state is _S_GONE:
            del self._held[key]

    def _next_sequence(self, now: int) -> int:
        # Creation timestamps must be unique per source (RFC 9171 §4.2.7).
        if now != self._last_created:
            self._last_created, self._sequence = now, 0
        else:
            self._sequence += 1
        return self._sequence

    def _timer(self, at: int, kind: int, key: bytes) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, kind, key))

    def _schedule_reroute(self, at: int) -> None:
        if at not in self._reroute_at:
            self._reroute_at.add(at)
            self._timer(at, _REROUTE, b"")

    def _finish(self, now: int, actions: list[Action]) -> list[Action]:
        """Close a batch of actions with the next wake, if there is one."""
        expiry = self.store.next_expiry()
        expiry_at = self._expiry_at
        granularity = self.config.expiry_granularity_ms
        # The expiry wake is the expiry rounded up to a multiple of the granularity, so the one
        # set already (a multiple) stands unless the expiry is a whole granularity earlier: the
        # commonest case, once per batch, is this one comparison.
        if expiry is not None and (expiry_at is None or expiry <= expiry_at - granularity):
            at = -(-expiry // granularity) * granularity
            self._expiry_at = at
            self._timer(at, _EXPIRY, b"")
        # The heap's head only moves earlier between polls (a poll alone pops), so a wake is
        # news only when it is earlier than the one returned since the last poll; a driver
        # keeps that one until it fires (module docstring, "wakes").
        timers = self._timers
        if timers:
            first = timers[0][0]
            at = first if first > now else now
            sent = self._wake_sent
            if sent is None or at < sent:
                self._wake_sent = at
                actions.append(WakeAt(at))
        return actions
