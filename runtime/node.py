"""A fleetwire node: signed messages in and out, bundles held until a contact carries them.

Theory of operation
-------------------
``async with open_node(config, store, links=...) as node`` runs one node inside the caller's
Trio run. Everything it does is a path through the store, so that a crash at any point
loses nothing that was acknowledged:

* **send** — seal the message (sign, name), wrap it in a bundle, ``put`` it (durable), then
  queue it for routing. ``send`` returns after the ``put``: "sent" means "held durably here".
* **accept** (a link received a bundle) — parse and check CRCs, drop expired or over-hop
  bundles, ``put`` (duplicates by bundle id or content id cost nothing), and only then return:
  a TCPCL link acknowledges the transfer after this returns. Bundles for this node are kept
  with next hop ``local`` until the application acknowledged them, then ``delivered`` until
  they expire (so a late duplicate is dropped, not delivered twice).
* **hold** — the step from "the store committed it" to "a queue of this node has it" cannot
  be split by cancellation (a link task is cancelled when its neighbour dies, maybe while the
  store commits): ``put`` and the hand-off to a queue run shielded, as one step. Two
  reconciliations back this up, so that no held bundle waits for a restart: a "duplicate"
  answer for a bundle that is held but in no queue queues it, and a sweep (at start, then with
  every expiry pass) queues every held bundle no queue knows.
* **route** — one task takes unrouted bundles and asks the :class:`~.routing.Router` (contact
  graph, static routes including every direct neighbour, hierarchical default). A bundle with
  a next hop is queued on that neighbour's sender; one with none is parked until a link comes
  up or the plan's next contact opens.
* **forward** — one sender task per neighbour waits for the link, transmits (hop counted,
  previous node set), and once the link took custody keeps only a tombstone (``forwarded``)
  for ``forwarded_memory_ms``: a resend of the bundle — the node we had it from crashed
  before deleting its copy, or our acknowledgement was lost — is answered "duplicate", so no
  bundle is taken, and forwarded on, twice by one node. On ``LinkDown`` the bundle stays in
  the store and is routed again. A link without acknowledgements (MTCP,
  TCPCLv3 without acks: ``confirms_delivery`` false) can only say "written to TCP", so the
  bundle is *retained*, bytes and all, for ``retain_unconfirmed_s``: if that session ends
  meanwhile (the next hop may have crashed with it) the bundle is routed again; a reception
  or delivery status report about it releases it early; otherwise it is released (kept as a
  ``forwarded`` tombstone, logged) at the end.
* **account** — no accepted bundle disappears silently: expiry, hop limit, "no known route"
  (a ``dtn:`` destination: this node routes by ``ipn`` node number only) and retention end
  each leave a log line and, where the bundle asked for it, a status report (RFC 9171 §6.1.1).
* **deliver** — :class:`~.admission.Admission` decides (service, signature, trust, role,
  replay); a verified message goes to every :class:`Subscription` of its family. A message of
  a family nobody subscribed to waits (held, in memory) for the first subscriber of that
  family, so subscribing after ``open_node`` loses nothing. The bundle is marked delivered (a
  tombstone) only once every subscription it went to acknowledged it — explicitly
  (:meth:`Subscription.acknowledge`) or by asking for the next message; one that was closed
  unacknowledged hands its messages on. The message's replay record is made durable just
  before its tombstone. A refused bundle is counted and deleted: its key covers its own
  bytes, so it can never stand in for a genuine copy (see :mod:`.bundling`).
* **restart** — on open the node reads the store back: ``local`` bundles are delivered again
  (at-least-once to the application: a message handed over but not acknowledged before a
  crash comes again; exactly-once per bundle on the network side), unrouted and queued ones
  are routed again (the routing choice is never stored).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
from fleetwire.protocol.bpv7 import (
    Bundle,
    BundleError,
    BundleFlags,
    IpnEid,
    StatusReason,
    StatusReport,
    admin_record_of,
    decode_bundle,
    encode_bundle,
)
from fleetwire.protocol.envelope import SignedMessage, seal
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    PROTOCOL_VERSION,
    CapabilityAdvertisement,
    Family,
    Message,
    PeerVersions,
)
from fleetwire.protocol.replay import DEFAULT_BUNDLE_LIFETIME_MS, ReplayPolicy
from fleetwire.protocol.roles import reader_cell
from fleetwire.protocol.trust import TrustStore

from .admission import Admission, Admitted, Refusal
from .bundling import (
    DELIVERED,
    FCP_SERVICE,
    FORWARDED,
    LOCAL,
    TRUST_SERVICE,
    HopLimitExceeded,
    for_next_hop,
    inspect_bundle,
    message_bundle,
    neighbour_node,
    status_report_for,
    stored,
)
from .contacts import Clock, ContactPlan
from .link import Link, LinkDown
from .routing import Forward, Hierarchy, Router
from .store import (
    Accepted,
    BundleStore,
    Duplicate,
    PutResult,
    Refused,
    StoredBundle,
    StoreError,
)

log = logging.getLogger("fleetwire.node")


class BundleRefused(FleetwireError):
    """This node will not take custody of a bundle (malformed, or the store is full)."""

    code = "bundle-refused"

    def __init__(self, message: str, *, store_full: bool = False) -> None:
        super().__init__(message)
        self.store_full = store_full


@attrs.frozen(slots=True)
class NodeConfig:
    """Who the node is and how it forwards. Links and the store are handed in separately."""

    node: int
    key: SigningKey
    trust: TrustStore = attrs.field(eq=False)
    service: int = FCP_SERVICE
    bundle_lifetime_ms: int = DEFAULT_BUNDLE_LIFETIME_MS
    contact_plan: ContactPlan | None = attrs.field(default=None, eq=False)
    static_routes: Mapping[int, int] = attrs.field(factory=dict)
    #: Hierarchical default route: node → its parent (cell coordinator, region coordinator).
    parents: Mapping[int, int] = attrs.field(factory=dict)
    expiry_interval_s: float = 60.0
    #: Links without acknowledgements: keep a sent bundle this long (see the module doc).
    retain_unconfirmed_s: float = 60.0
    #: The ``issued_at`` window and per-issuer replay bound (spec §10); the contact plan's
    #: longest light time is added to ``max_age``.
    replay: ReplayPolicy = attrs.field(factory=ReplayPolicy)
    #: ipn service number revocation lists travel to (spec §10).
    trust_service: int = TRUST_SERVICE
    #: Refuse messages issued before the node started when its store keeps no replay memory
    #: across restarts (``fleetwire node`` without a store file does; spec §10).
    replay_floor_at_start: bool = False
    #: Where a revocation list that arrives over the network is kept (survives restarts).
    revocations_file: Path | None = attrs.field(default=None, eq=False)
    #: How long a forwarded bundle's id is remembered (at most until it expires), so that a
    #: neighbour's resend is recognised as a duplicate (see ``forward`` in the module docstring).
    forwarded_memory_ms: int = 15 * 60_000
    #: The protocol version the node speaks: its newest, or an older one it is pinned to
    #: (``[node] protocol_version``); it reads and writes exactly as that version would.
    protocol_version: int = PROTOCOL_VERSION


@attrs.define
class NodeStats:
    """Counters a report or a test can read; they only grow."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    malformed: int = 0
    forwarded: int = 0
    delivered: int = 0  # messages handed to a subscription (the first time, in this run)
    acknowledged: int = 0  # messages every subscription they went to acknowledged
    redelivered: int = 0  # handed over again after a subscription gave them back
    reconciled: int = 0  # held bundles found in no queue and queued again (see "hold")
    rejected: int = 0  # failed signature, trust or message validation
    expired: int = 0
    hop_limited: int = 0
    link_down: int = 0
    status_reports: int = 0


class Node:
    """A running node; made by :func:`open_node`."""

    def __init__(
        self,
        config: NodeConfig,
        store: BundleStore,
        clock: Clock,
        links: Mapping[int, Link],
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.links: dict[int, Link] = dict(links)
        self.stats = NodeStats()
        self._nursery = nursery
        self._sequence = 0
        self._last_created = -1
        self._message_sequence = 0
        plan = config.contact_plan or ContactPlan()
        static = {peer: peer for peer in self.links} | dict(config.static_routes)
        hierarchy = Hierarchy(config.parents) if config.parents else None
        self.router = Router(config.node, plan, static=static, hierarchy=hierarchy)
        self._unrouted_send, self._unrouted = trio.open_memory_channel[bytes](math.inf)
        self._deliver_send, self._deliver = trio.open_memory_channel[bytes](math.inf)
        self._queues: dict[int, trio.MemorySendChannel[bytes]] = {}
        self._link_changed: dict[int, trio.Event] = {}
        self._parked: set[bytes] = set()
        self._reroute = trio.Event()
        #: Ids of held bundles some queue of this node has (routing, parked, a sender, being
        #: delivered, waiting for a subscriber or an acknowledgement). An id joins *before* its
        #: ``put`` and leaves once the bundle left the store, so the sweep never queues a
        #: bundle twice.
        self._known: set[bytes] = set()
        self._subscriptions: list[Subscription] = []
        #: Messages of a family nobody subscribed to yet, by family: bundle ids, oldest first.
        self._waiting: dict[Family, list[bytes]] = {}
        #: Messages handed to subscriptions and not yet acknowledged by all of them.
        self._handed: dict[bytes, _Handed] = {}
        #: Acknowledged messages whose tombstone is not yet written, oldest first.
        self._acknowledged: deque[bytes] = deque()
        #: Messages given back unacknowledged by a closed subscription, to be offered again.
        self._given_back: set[bytes] = set()
        #: What admission said of messages admitted and not yet tombstoned (waiting, handed,
        #: given back): offering one again must not meet the replay guard a second time.
        self._admitted: dict[bytes, Admitted] = {}
        self._acknowledged_wakeup = trio.Event()
        self._report_subscribers: list[trio.MemorySendChannel[StatusReport]] = []
        # Sent on a no-ack link, not yet released; by BPv7 bundle id (what reports name).
        self._retained: dict[bytes, trio.Event] = {}
        light = max((contact.owlt_ms for contact in plan), default=0)
        self.admission = Admission(
            node=config.node, service=config.service, trust_service=config.trust_service,
            trust=config.trust, store=store, policy=config.replay.widened(light),
            spread=self._spread_revocations, revocations_file=config.revocations_file,
            reader_cell=reader_cell(config.trust, config.key.kid),
            floor_at_start=config.replay_floor_at_start,
            protocol_version=config.protocol_version,
        )  # fmt: skip
        #: Which version to write to each peer, learnt from their capability advertisements.
        self.versions = PeerVersions(config.protocol_version)

    @property
    def node(self) -> int:
        return self.config.node

    def now(self) -> int:
        """DTN time now (ms), from Trio's clock."""
        return self.clock.to_dtn(trio.current_time())

    # --- the application's side --------------------------------------------------------

    async def send(
        self,
        message: Message,
        to: int,
        *,
        lifetime_ms: int | None = None,
        reports: BundleFlags = BundleFlags.NONE,
    ) -> SignedMessage:
        """Sign ``message``, hold it durably, and queue it for ``to``; return the signed form.

        ``reports`` asks the nodes on the way for status reports (RFC 9171 §4.2.3, e.g.
        ``BundleFlags.REPORT_DELIVERY``); they arrive on :meth:`subscribe_status_reports`.
        """
        # At the version ``to`` reads (spec/v2/versions.md §2); NotExpressible if it cannot.
        signed = seal(self.versions.convert_for(message, to), self.config.key)
        now = self.now()
        bundle = message_bundle(
            signed.envelope,
            source=self.node,
            destination=to,
            created_at=now,
            sequence=self._next_sequence(now),
            lifetime_ms=lifetime_ms or self.config.bundle_lifetime_ms,
            service=self.config.service,
            reports=reports,
        )
        data = encode_bundle(bundle)
        local = to == self.node
        result = await self._hold(
            stored(bundle, data, now, inspect_bundle(bundle, now), LOCAL if local else None)
        )
        if isinstance(result, Refused):
            raise BundleRefused(result.message, store_full=True)
        self.stats.sent += 1
        return signed

    def next_message_sequence(self) -> int:
        """A header sequence number larger than any this node used before, across restarts.

        Derived from the clock (ms × 1024) so that no counter has to be stored; a node making
        more than 1024 messages in one millisecond simply runs ahead of the clock.
        """
        self._message_sequence = max(self._message_sequence + 1, self.now() * 1024)
        return self._message_sequence

    def subscribe(self, *families: Family, buffer: int = 1024) -> Subscription:
        """Verified messages for this node, of ``families`` (all when none are named).

        Each message stays held until the subscription acknowledges it (see
        :class:`Subscription`); messages that waited for a subscriber of their family come
        first. ``buffer`` messages at most are handed over ahead of the application.
        """
        subscription = Subscription(self, frozenset(families or Family), buffer)
        self._subscriptions.append(subscription)
        for family in subscription.families:
            for bundle_id in self._waiting.pop(family, ()):
                self._deliver_send.send_nowait(bundle_id)  # offered again, now with a taker
        return subscription

    def subscribe_status_reports(
        self, buffer: int = 1024
    ) -> trio.MemoryReceiveChannel[StatusReport]:
        """Bundle status reports addressed to this node (RFC 9171 §6.1.1)."""
        send, receive = trio.open_memory_channel[StatusReport](buffer)
        self._report_subscribers.append(send)
        return receive

    async def _report(self, bundle: Bundle, request: BundleFlags, reason: int = 0) -> None:
        """Send the status report ``bundle`` asked for with ``request``, if it asked (§5)."""
        now = self.now()
        report = status_report_for(
            bundle, request, this_node=self.node, now=now,
            sequence=self._next_sequence(now), lifetime_ms=self.config.bundle_lifetime_ms,
            reason=reason,
        )  # fmt: skip
        if report is None:
            return
        data = encode_bundle(report)
        envelope = inspect_bundle(report, now)
        local = envelope.destination_node == self.node
        await self._hold(stored(report, data, now, envelope, LOCAL if local else None))

    def _next_sequence(self, now: int) -> int:
        # Creation timestamps must be unique per source (RFC 9171 §4.2.7).
        if now != self._last_created:
            self._last_created, self._sequence = now, 0
        else:
            self._sequence += 1
        return self._sequence

    # --- the links' side ---------------------------------------------------------------

    async def accept(self, data: bytes, from_peer: int | None = None) -> None:
        """Take custody of a received bundle; return only once it is durable.

        Raises :class:`BundleRefused` (the link refuses the transfer) for malformed bundles and
        a full store. Expired or over-hop bundles are taken and dropped, as RFC 9171 §5.4 says.
        """
        now = self.now()
        try:
            bundle = decode_bundle(data)
        except BundleError as exc:
            self.stats.malformed += 1
            raise BundleRefused(f"malformed bundle: {exc}") from None
        envelope = inspect_bundle(bundle, now)
        hops = bundle.hop_count
        if now >= envelope.expires_at:
            self.stats.expired += 1
            log.info("node=%s event=expired-on-arrival from=%s bundle=%s", self.node, from_peer,
                     bundle.id.key().hex())  # fmt: skip
            await self._report(bundle, BundleFlags.REPORT_DELETION, StatusReason.LIFETIME_EXPIRED)
            return
        local = envelope.destination_node == self.node
        if hops is not None and hops.count > hops.limit:
            self.stats.hop_limited += 1
            log.info("node=%s event=hop-limit-exceeded from=%s bundle=%s", self.node, from_peer,
                     bundle.id.key().hex())  # fmt: skip
            await self._report(
                bundle, BundleFlags.REPORT_DELETION, StatusReason.HOP_LIMIT_EXCEEDED
            )
            return
        result = await self._hold(
            stored(bundle, data, now, envelope, LOCAL if local else None, from_peer)
        )
        if isinstance(result, Refused):
            self.stats.refused += 1
            log.warning("node=%s event=refused code=store-%s from=%s reason=%s",
                        self.node, result.reason.value, from_peer, result.message)  # fmt: skip
            raise BundleRefused(result.message, store_full=True)
        if isinstance(result, Duplicate):
            self.stats.duplicates += 1
            log.info(
                "node=%s event=duplicate from=%s bundle=%s", self.node, from_peer,
                result.bundle_id.hex(),
            )  # fmt: skip
            return
        self.stats.accepted += 1
        log.info(
            "node=%s event=accepted from=%s bundle=%s local=%s",
            self.node,
            from_peer,
            result.bundle_id.hex(),
            local,
        )
        await self._report(bundle, BundleFlags.REPORT_RECEPTION)

    async def _hold(self, bundle: StoredBundle) -> PutResult:
        """``put`` ``bundle`` and hand it to the queue it belongs in, as one uncancellable step.

        A cancelled ``put`` may still commit (see :mod:`.store`); were the hand-off skipped,
        the bundle would sit in the store, answered "duplicate" to every resend, until a
        restart. So both run shielded: cancellation waits for one commit (back-pressure bounds
        the wait) and takes effect after the hand-off.
        """
        bundle_id = bundle.bundle_id
        claimed = bundle_id not in self._known
        self._known.add(bundle_id)  # from now on the sweep leaves it to us
        try:
            with trio.CancelScope(shield=True):
                result = await self.store.put(bundle)
        except BaseException:
            if claimed:
                self._known.discard(bundle_id)  # the sweep finds it if it was committed
            raise
        if isinstance(result, Accepted) and claimed:
            self._queue_held(bundle_id, bundle.next_hop)
        elif claimed:
            self._known.discard(bundle_id)
        # Accepted while an older copy of the same id was still leaving (``claimed`` false):
        # the sweep queues it once the older copy is gone.
        if isinstance(result, Duplicate) and result.existing not in self._known:
            await self._reconcile(result.existing)
        return result

    def _queue_held(self, bundle_id: bytes, next_hop: str | None) -> None:
        self._known.add(bundle_id)
        (self._deliver_send if next_hop == LOCAL else self._unrouted_send).send_nowait(bundle_id)

    def _forget(self, bundle_id: bytes) -> None:
        """The bundle left the store (or left this node's care): no queue has it any more."""
        self._known.discard(bundle_id)

    async def _reconcile(self, bundle_id: bytes) -> None:
        """Queue ``bundle_id`` if it is held, waiting for this node, and no queue has it."""
        held = await self.store.get(bundle_id)
        if held is None or held.next_hop not in (None, LOCAL) or bundle_id in self._known:
            return
        self.stats.reconciled += 1
        log.warning("node=%s event=reconciled bundle=%s", self.node, bundle_id.hex())
        self._queue_held(bundle_id, held.next_hop)

    def add_link(self, link: Link) -> None:
        """Start using ``link`` (a neighbour that connected, or a new contact)."""
        self.links[link.peer] = link
        self._link_changed.pop(link.peer, trio.Event()).set()
        self.router.static.setdefault(link.peer, link.peer)
        self._nursery.start_soon(self._watch_link, link)
        self._trigger_reroute()

    # --- tasks -------------------------------------------------------------------------

    async def _route_loop(self) -> None:
        async for bundle_id in self._unrouted:
            await self._route(bundle_id)

    async def _route(self, bundle_id: bytes) -> None:
        held = await self.store.get(bundle_id)
        if held is None or held.next_hop is not None:
            self._forget(bundle_id)
            return  # expired, or already gone (a tombstone is done with)
        now = self.now()
        bundle = decode_bundle(held.data)
        destination = bundle.primary.destination
        if not isinstance(destination, IpnEid):
            # Routes, links and the contact plan are all by ipn node number: a dtn: bundle
            # would wait until it expired, unseen. Say so now (RFC 9171 §5.4.2, §6.1.1).
            log.warning("node=%s event=no-known-route destination=%s bundle=%s", self.node,
                        destination, bundle_id.hex())  # fmt: skip
            await self.store.delete(bundle_id)
            await self._report(bundle, BundleFlags.REPORT_DELETION, StatusReason.NO_KNOWN_ROUTE)
            return
        previous = bundle.previous_node
        exclude = {previous.node} if isinstance(previous, IpnEid) else set()
        decision = self.router.route(
            destination.node, now, size=len(held.data), expires_at=held.expires_at, exclude=exclude
        )
        if isinstance(decision, Forward) and decision.next_hop in self.links:
            if decision.route is not None:
                self.router.book(decision.route, len(held.data))
            # The choice stays in memory: after a restart every held bundle is routed afresh
            # (links and the plan may have changed), so the store needs no record of it.
            self._queue_for(decision.next_hop).send_nowait(bundle_id)
            return
        self._parked.add(bundle_id)
        log.info("node=%s event=parked bundle=%s decision=%s", self.node, bundle_id.hex(), decision)
        if not isinstance(decision, Forward) and decision.next_check_at is not None:
            self._nursery.start_soon(self._reroute_at, decision.next_check_at)

    def _queue_for(self, peer: int) -> trio.MemorySendChannel[bytes]:
        queue = self._queues.get(peer)
        if queue is None:
            queue, receive = trio.open_memory_channel[bytes](math.inf)
            self._queues[peer] = queue
            self._nursery.start_soon(self._sender, peer, receive)
        return queue

    async def _sender(self, peer: int, queue: trio.MemoryReceiveChannel[bytes]) -> None:
        async for bundle_id in queue:
            held = await self.store.get(bundle_id)
            if held is None or held.next_hop is not None:
                self._forget(bundle_id)
                continue
            bundle = decode_bundle(held.data)
            try:
                data = for_next_hop(bundle, self.node, self.config.service)
            except HopLimitExceeded:
                self.stats.hop_limited += 1
                await self.store.delete(bundle_id)
                self._forget(bundle_id)
                await self._report(
                    bundle, BundleFlags.REPORT_DELETION, StatusReason.HOP_LIMIT_EXCEEDED
                )
                continue
            while self.now() < held.expires_at:
                # The neighbour's link may be replaced (it reconnected to our listener): look
                # it up on every attempt, and wake when it comes up *or* is replaced.
                link = self.links[peer]
                if not link.is_up:
                    await self._wait_up_or_replaced(peer, link)
                    continue
                try:
                    await link.send(data)
                except LinkDown:
                    self.stats.link_down += 1
                    continue
                self.stats.forwarded += 1
                log.info(
                    "node=%s event=forwarded to=%s bundle=%s", self.node, peer, bundle_id.hex()
                )
                await self._report(bundle, BundleFlags.REPORT_FORWARDING)
                if not getattr(link, "confirms_delivery", True) and self.config.retain_unconfirmed_s:
                    # Only "written to TCP": keep the bytes a while (module docstring).
                    self._retained[bundle.id.key()] = trio.Event()
                    self._nursery.start_soon(
                        self._retain, bundle_id, bundle.id.key(), link, peer, held.expires_at
                    )
                else:
                    await self._remember_forwarded(bundle_id, held.expires_at)
                break
            else:
                log.info("node=%s event=expired bundle=%s waiting-for=%s", self.node,
                         bundle_id.hex(), peer)  # fmt: skip
                await self._report(
                    bundle, BundleFlags.REPORT_DELETION, StatusReason.LIFETIME_EXPIRED
                )
                await self.store.delete(bundle_id)
                self._forget(bundle_id)

    async def _remember_forwarded(self, bundle_id: bytes, expires_at: int) -> None:
        """Done with a bundle a neighbour took, but remembered a while (shielded: the neighbour
        has it now, so our copy must not be sent again): a resend from the node we had it
        from — it crashed before deleting its copy, or our acknowledgement was lost — is then
        answered "duplicate" instead of taken and forwarded a second time."""
        remember_until = min(expires_at, self.now() + self.config.forwarded_memory_ms)
        with trio.CancelScope(shield=True):
            await self.store.tombstone(bundle_id, FORWARDED, remember_until)
        self._forget(bundle_id)

    async def _retain(
        self, bundle_id: bytes, subject: bytes, link: Link, peer: int, expires_at: int
    ) -> None:
        """A bundle sent on a link without acks: keep it a while (module docstring).

        ``bundle_id`` is the store's key, ``subject`` the BPv7 bundle id status reports name.
        """
        released = self._retained[subject]
        why = f"retention of {self.config.retain_unconfirmed_s:g} s over"
        try:
            with trio.move_on_after(self.config.retain_unconfirmed_s):
                async with trio.open_nursery() as race:

                    async def session_ended() -> None:
                        nonlocal why
                        with contextlib.suppress(LinkDown):
                            await link.wait_down()
                        why = ""
                        race.cancel_scope.cancel()

                    async def signalled() -> None:
                        nonlocal why
                        await released.wait()
                        why = "a status report says it arrived downstream"
                        race.cancel_scope.cancel()

                    race.start_soon(session_ended)
                    race.start_soon(signalled)
        finally:
            self._retained.pop(subject, None)
        if not why:
            log.warning(
                "node=%s event=resend bundle=%s to=%s reason=the session without "
                "acknowledgements ended within %g s of sending",
                self.node, bundle_id.hex(), peer, self.config.retain_unconfirmed_s,
            )  # fmt: skip
            self._unrouted_send.send_nowait(bundle_id)
            return
        log.info("node=%s event=released bundle=%s to=%s reason=%s (no acknowledgements)",
                 self.node, bundle_id.hex(), peer, why)  # fmt: skip
        await self._remember_forwarded(bundle_id, expires_at)

    async def _wait_up_or_replaced(self, peer: int, link: Link) -> None:
        replaced = self._link_changed.setdefault(peer, trio.Event())
        async with trio.open_nursery() as race:

            async def until(wait: Callable[[], Awaitable[None]]) -> None:
                with contextlib.suppress(LinkDown):  # closed for good: wait for a replacement
                    await wait()
                    race.cancel_scope.cancel()

            race.start_soon(until, link.wait_up)
            race.start_soon(until, replaced.wait)

    async def _deliver_loop(self) -> None:
        async for bundle_id in self._deliver:
            if bundle_id in self._handed:
                continue  # with subscriptions already, waiting for their acknowledgements
            held = await self.store.get(bundle_id)
            if held is None or held.next_hop != LOCAL:
                self._forget(bundle_id)
                continue
            bundle = decode_bundle(held.data)
            if bundle.primary.is_admin_record:
                await self._deliver_admin_record(bundle)
                await self.store.tombstone(bundle_id, DELIVERED)  # a duplicate is still known
                self._forget(bundle_id)
            elif not await self._deliver_message(
                bundle_id, bundle, neighbour_node(held.received_from)
            ):
                await self.store.delete(bundle_id)  # refused: its key stands for nothing else
                self._forget(bundle_id)
            # else: held until acknowledged, or until a subscriber comes

    async def _deliver_message(
        self, bundle_id: bytes, bundle: Bundle, from_peer: int | None
    ) -> bool:
        """Hand a message to its subscriptions; ``False`` if it is to be dropped (refused)."""
        admitted = self._admitted.get(bundle_id)
        if admitted is None:  # not admitted before (given back or waiting ones were)
            verdict = await self.admission.admit(bundle, self.now(), from_peer)
            if isinstance(verdict, Refusal):
                self.stats.rejected += 1
                return False
            if verdict is None:  # a revocation list: in force now, nothing to hand over
                await self.store.tombstone(bundle_id, DELIVERED)
                self._forget(bundle_id)
                return True
            admitted = self._admitted[bundle_id] = verdict
        signed = admitted.signed
        if isinstance(signed.message, CapabilityAdvertisement):
            self.versions.learn(signed.message)
        family = signed.message.TYPE.family
        takers = [s for s in self._subscriptions if family in s.families]
        if not takers:
            self._waiting.setdefault(family, []).append(bundle_id)
            return True
        self._handed[bundle_id] = _Handed(bundle, len(takers))
        if bundle_id in self._given_back:
            self._given_back.discard(bundle_id)
            self.stats.redelivered += 1
        else:
            self.stats.delivered += 1
            log.info("node=%s event=delivered content_id=%s", self.node, signed.content_id)
        for subscription in takers:
            try:
                await subscription._channel.send((bundle_id, signed))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._release(bundle_id)  # closed meanwhile: as if it gave the message back
        return True

    async def apply_revocations(self, data: bytes) -> bool:
        """Put a root-signed revocation list (from a file, a tool) in force and spread it;
        ``False`` if it was refused (bad signature, malformed). An older list is ignored."""
        refusal = await self.admission.take_revocations(data, self.now(), from_file=True)
        return not isinstance(refusal, Refusal)

    async def _spread_revocations(self, data: bytes, came_from: int | None) -> None:
        # To every neighbour (linked now or in the contact plan) but the one it came from:
        # each holds it until a contact carries it on, as any bundle (spec §10).
        neighbours = set(self.links) | set(self.router.plan.neighbours(self.node))
        for peer in sorted(neighbours - {self.node, came_from}):
            now = self.now()
            bundle = message_bundle(
                data, source=self.node, destination=peer, created_at=now,
                sequence=self._next_sequence(now), lifetime_ms=self.config.bundle_lifetime_ms,
                service=self.config.trust_service,
            )  # fmt: skip
            data_out = encode_bundle(bundle)
            await self._hold(stored(bundle, data_out, now, inspect_bundle(bundle, now), None))

    def _acknowledge(self, bundle_id: bytes) -> None:
        """One subscription is done with a message; tombstone it when all are (sync: no I/O)."""
        handed = self._handed.get(bundle_id)
        if handed is None:
            return
        handed.acknowledged = True
        handed.outstanding -= 1
        if handed.outstanding <= 0:
            self._finish(bundle_id, handed)

    def _release(self, bundle_id: bytes) -> None:
        """One subscription was closed before acknowledging a message it had."""
        handed = self._handed.get(bundle_id)
        if handed is None:
            return
        handed.outstanding -= 1
        if handed.outstanding > 0:
            return
        if handed.acknowledged:
            self._finish(bundle_id, handed)
        else:  # nobody has it: offered again (to later subscribers, or when one comes)
            del self._handed[bundle_id]
            self._given_back.add(bundle_id)
            self._deliver_send.send_nowait(bundle_id)

    def _finish(self, bundle_id: bytes, handed: _Handed) -> None:
        del self._handed[bundle_id]
        self._acknowledged.append(bundle_id)
        self._acknowledged_wakeup.set()
        self.stats.acknowledged += 1
        if int(handed.bundle.primary.flags) & BundleFlags.REPORT_DELIVERY:
            # RFC 9171 §6.1.1: "delivered" is when the application has it. (An acknowledgement
            # after the node stopped finds its nursery closed: no report then.)
            with contextlib.suppress(RuntimeError):
                self._nursery.start_soon(self._report, handed.bundle, BundleFlags.REPORT_DELIVERY)

    async def _tombstone_loop(self) -> None:
        """Write the tombstones of acknowledged messages (shielded: an acknowledgement the
        node took in is not dropped by its shutdown; a crash may drop it: redelivery)."""
        while True:
            await self._acknowledged_wakeup.wait()
            self._acknowledged_wakeup = trio.Event()
            with trio.CancelScope(shield=True):
                await self._write_tombstones()

    async def _write_tombstones(self) -> None:
        while self._acknowledged:
            # All at once, so that the store commits them together (one fsync, not one each).
            due = list(self._acknowledged)
            self._acknowledged.clear()
            async with trio.open_nursery() as nursery:
                for bundle_id in due:
                    nursery.start_soon(self._write_tombstone, bundle_id)

    async def _write_tombstone(self, bundle_id: bytes) -> None:
        admitted = self._admitted.pop(bundle_id, None)
        if admitted is not None:  # replay memory first: a crash between means redelivery
            await self.admission.settle(admitted)
        await self.store.tombstone(bundle_id, DELIVERED)
        self._forget(bundle_id)
        self._given_back.discard(bundle_id)
        log.info("node=%s event=acknowledged bundle=%s", self.node, bundle_id.hex())

    async def _deliver_admin_record(self, bundle: Bundle) -> None:
        # Status reports are not signed (BPSec, RFC 9172, is a later step): they inform,
        # they never authorise anything.
        try:
            record = admin_record_of(bundle)
        except BundleError as exc:
            self.stats.rejected += 1
            log.warning("node=%s event=refused code=%s reason=%s", self.node, exc.code, exc)
            return
        if isinstance(record, StatusReport):
            self.stats.status_reports += 1
            retained = self._retained.get(record.subject.key())
            if retained is not None and (record.received.asserted or record.delivered.asserted):
                retained.set()  # downstream holds it: no need to keep our copy
            for channel in self._report_subscribers:
                await channel.send(record)

    def _unsubscribe(self, subscription: Subscription, unacknowledged: list[bytes]) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        for bundle_id in unacknowledged:
            self._release(bundle_id)

    async def _watch_link(self, link: Link) -> None:
        try:
            while True:
                await link.wait_up()
                self._trigger_reroute()
                await link.wait_down()
        except LinkDown:
            return  # the link was closed for good; a replacement gets its own watcher

    async def _reroute_at(self, dtn_ms: int) -> None:
        await trio.sleep_until(self.clock.to_trio(dtn_ms))
        self._trigger_reroute()

    def _trigger_reroute(self) -> None:
        self._reroute.set()

    async def _reroute_loop(self) -> None:
        while True:
            await self._reroute.wait()
            self._reroute = trio.Event()
            parked, self._parked = self._parked, set()
            for bundle_id in sorted(parked):
                self._unrouted_send.send_nowait(bundle_id)

    async def _expiry_loop(self) -> None:
        while True:
            await trio.sleep(self.config.expiry_interval_s)
            expired = await self.store.expire(self.now())
            await self.admission.prune(self.now())
            self.stats.expired += len(expired)
            if expired:
                shown = ",".join(b.hex() for b in list(expired)[:20])
                log.info("node=%s event=expired count=%d bundles=%s%s", self.node, len(expired),
                         shown, ",..." if len(expired) > 20 else "")  # fmt: skip
            self._parked.difference_update(expired)
            self._known.difference_update(expired)
            self._given_back.difference_update(expired)
            for bundle_id in expired:  # admitted but never acknowledged before it expired
                self._admitted.pop(bundle_id, None)
            await self._sweep()

    async def _sweep(self, *, recovering: bool = False) -> None:
        """Queue every held bundle waiting for this node that no queue has (module docstring).

        At start that is everything held from before a restart; later it should find nothing,
        and counts what it finds as ``reconciled``.
        """
        for next_hop in (LOCAL, None):
            for bundle_id in await self.store.pending_ids(next_hop, 1 << 30):
                if bundle_id in self._known:
                    continue
                if not recovering:
                    self.stats.reconciled += 1
                    log.warning("node=%s event=reconciled bundle=%s", self.node, bundle_id.hex())
                self._queue_held(bundle_id, next_hop)

    async def _start(self, inbox: trio.abc.ReceiveChannel[tuple[int, bytes]] | None) -> None:
        await self.admission.restore(self.now())
        await self._sweep(recovering=True)
        tasks = (
            self._route_loop, self._deliver_loop, self._tombstone_loop, self._reroute_loop,
            self._expiry_loop,
        )  # fmt: skip
        for task in tasks:
            self._nursery.start_soon(task)
        for link in list(self.links.values()):
            self._nursery.start_soon(self._watch_link, link)
            if inbox is None:
                self._nursery.start_soon(self._receive_from, link)
        if inbox is not None:
            self._nursery.start_soon(self._receive_inbox, inbox)

    async def _receive_from(self, link: Link) -> None:
        async for data in link.incoming:
            await self._accept_quietly(data, link.peer)

    async def _receive_inbox(self, inbox: trio.abc.ReceiveChannel[tuple[int, bytes]]) -> None:
        async for peer, data in inbox:
            await self._accept_quietly(data, peer)

    async def _accept_quietly(self, data: bytes, peer: int) -> None:
        # A link without custody acknowledgement (the simulated one): a refusal is logged.
        try:
            await self.accept(data, peer)
        except BundleRefused as exc:
            log.info("node=%s event=refused code=%s from=%s reason=%s", self.node, exc.code,
                     peer, exc)  # fmt: skip




@asynccontextmanager
async def open_node(
    config: NodeConfig,
    store: BundleStore,
    *,
    links: Mapping[int, Link] | Iterable[Link] = (),
    inbox: trio.abc.ReceiveChannel[tuple[int, bytes]] | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Node]:
    """Run a node until the block exits (then its tasks are cancelled; the store stays open).

    Received bundles come from each link's ``incoming`` channel, or from ``inbox`` when given
    (one ``(peer, bundle)`` channel for all links, as :meth:`LoopbackNetwork.open_inbox`
    gives). ``clock`` maps Trio time to DTN time; by default Trio's "now" is pinned to the wall
    clock.
    """
    if clock is None:
        import time

        clock = Clock.from_unix(trio.current_time(), time.time())
    by_peer = dict(links) if isinstance(links, Mapping) else {link.peer: link for link in links}
    async with trio.open_nursery() as nursery:
        node = Node(config, store, clock, by_peer, nursery)
        await node._start(inbox)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()
            # What was acknowledged stays acknowledged: write the tombstones still due.
            with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await node._write_tombstones()


@attrs.define
class _Handed:
    """A message with subscriptions, waiting for their acknowledgements."""

    bundle: Bundle
    outstanding: int  # subscriptions that have it and neither acknowledged nor closed
    acknowledged: bool = False  # at least one of them acknowledged it


class Subscription(trio.abc.ReceiveChannel[SignedMessage]):
    """Verified messages for the application, each held by the node until acknowledged.

    Use it like a Trio receive channel — ``async for signed in subscription`` or
    ``await subscription.receive()`` — and a message counts as acknowledged when the
    application asks for the next one, or earlier with :meth:`acknowledge`. Only then is the
    bundle marked delivered in the store; a message handed over and not acknowledged when the
    node stops (or crashes) is delivered again after the restart. So process a message
    completely *before* asking for the next, and call :meth:`acknowledge` after the last one
    before leaving. Closing the subscription (``aclose``, or leaving ``async with``) gives its
    unacknowledged messages back: other subscriptions of their family get them, or the next
    one that subscribes.
    """

    def __init__(self, node: Node, families: frozenset[Family], buffer: int) -> None:
        self._node = node
        self.families = families
        self._channel, self._receive = trio.open_memory_channel[tuple[bytes, SignedMessage]](buffer)
        self._current: bytes | None = None

    async def receive(self) -> SignedMessage:
        """Acknowledge the message received before (if any), then wait for the next one."""
        self.acknowledge()
        bundle_id, signed = await self._receive.receive()
        self._current = bundle_id
        return signed

    def receive_nowait(self) -> SignedMessage:
        """Like :meth:`receive`, without waiting: raises ``trio.WouldBlock`` if none is ready."""
        self.acknowledge()
        bundle_id, signed = self._receive.receive_nowait()
        self._current = bundle_id
        return signed

    def acknowledge(self) -> None:
        """The application has the last message received: the node may forget it."""
        if self._current is not None:
            bundle_id, self._current = self._current, None
            self._node._acknowledge(bundle_id)

    def close(self) -> None:
        """Stop receiving; messages received and not acknowledged go back to the node."""
        unacknowledged = [] if self._current is None else [self._current]
        self._current = None
        self._channel.close()
        while True:
            try:
                bundle_id, _ = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            unacknowledged.append(bundle_id)
        self._receive.close()
        self._node._unsubscribe(self, unacknowledged)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()
