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
  with next hop ``local`` until the application has them, then ``delivered`` until they expire
  (so a late duplicate is dropped, not delivered twice).
* **route** — one task takes unrouted bundles and asks the :class:`~.routing.Router` (contact
  graph, static routes including every direct neighbour, hierarchical default). A bundle with
  a next hop is queued on that neighbour's sender; one with none is parked until a link comes
  up or the plan's next contact opens.
* **forward** — one sender task per neighbour waits for the link, transmits (hop counted,
  previous node set), and deletes the bundle once the link took custody; on ``LinkDown`` the
  bundle stays in the store and is routed again.
* **deliver** — :class:`~.admission.Admission` decides (service, signature, trust, role,
  replay); a verified message goes to subscribers, its replay record is made durable, and
  the bundle is kept as a tombstone. A refused bundle is counted and deleted: its key covers
  its own bytes, so it can never stand in for a genuine copy (see :mod:`.bundling`).
* **restart** — on open the node reads the store back: ``local`` bundles are delivered again
  (at-least-once to the application, exactly-once per bundle on the network side), unrouted and
  queued ones are routed again (the routing choice is never stored).
"""

from __future__ import annotations

import contextlib
import logging
import math
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
from fleetwire.protocol.messages import Family, Message
from fleetwire.protocol.replay import ReplayPolicy
from fleetwire.protocol.trust import TrustStore

from .admission import Admission, Refusal
from .bundling import (
    DELIVERED,
    FCP_SERVICE,
    LOCAL,
    TRUST_SERVICE,
    HopLimitExceeded,
    for_next_hop,
    inspect_bundle,
    message_bundle,
    status_report_for,
    stored,
)
from .contacts import Clock, ContactPlan
from .link import Link, LinkDown
from .routing import Forward, Hierarchy, Router
from .store import Accepted, BundleStore, Duplicate, Refused

log = logging.getLogger("fleetwire.node")

#: How many held bundles the node reads back at a time on restart.
_RECOVERY_BATCH = 512


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
    bundle_lifetime_ms: int = 86_400_000
    contact_plan: ContactPlan | None = attrs.field(default=None, eq=False)
    static_routes: Mapping[int, int] = attrs.field(factory=dict)
    #: Hierarchical default route: node → its parent (cell coordinator, region coordinator).
    parents: Mapping[int, int] = attrs.field(factory=dict)
    expiry_interval_s: float = 60.0
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


@attrs.define
class NodeStats:
    """Counters a report or a test can read; they only grow."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    malformed: int = 0
    forwarded: int = 0
    delivered: int = 0
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
        self._subscribers: list[
            tuple[frozenset[Family], trio.MemorySendChannel[SignedMessage]]
        ] = []
        self._report_subscribers: list[trio.MemorySendChannel[StatusReport]] = []
        light = max((contact.owlt_ms for contact in plan), default=0)
        self.admission = Admission(
            node=config.node, service=config.service, trust_service=config.trust_service,
            trust=config.trust, store=store, policy=config.replay.widened(light),
            spread=self._spread_revocations, revocations_file=config.revocations_file,
            reader_cell=_own_cell(config), floor_at_start=config.replay_floor_at_start,
        )  # fmt: skip

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
        signed = seal(message, self.config.key)
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
        result = await self.store.put(
            stored(bundle, data, now, inspect_bundle(bundle, now), LOCAL if local else None)
        )
        if isinstance(result, Refused):
            raise BundleRefused(result.message, store_full=True)
        self.stats.sent += 1
        if isinstance(result, Accepted):
            (self._deliver_send if local else self._unrouted_send).send_nowait(result.bundle_id)
        return signed

    def next_message_sequence(self) -> int:
        """A header sequence number larger than any this node used before, across restarts.

        Derived from the clock (ms × 1024) so that no counter has to be stored; a node making
        more than 1024 messages in one millisecond simply runs ahead of the clock.
        """
        self._message_sequence = max(self._message_sequence + 1, self.now() * 1024)
        return self._message_sequence

    def subscribe(
        self, *families: Family, buffer: int = 1024
    ) -> trio.MemoryReceiveChannel[SignedMessage]:
        """Verified messages for this node, of ``families`` (all when none are named)."""
        send, receive = trio.open_memory_channel[SignedMessage](buffer)
        self._subscribers.append((frozenset(families or Family), send))
        return receive

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
        result = await self.store.put(stored(report, data, now, envelope, LOCAL if local else None))
        if isinstance(result, Accepted):
            (self._deliver_send if local else self._unrouted_send).send_nowait(result.bundle_id)

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
            return
        local = envelope.destination_node == self.node
        if hops is not None and hops.count > hops.limit:
            self.stats.hop_limited += 1
            return
        result = await self.store.put(
            stored(bundle, data, now, envelope, LOCAL if local else None, from_peer)
        )
        if isinstance(result, Refused):
            self.stats.refused += 1
            log.warning("node=%s event=refused code=store-%s from=%s reason=%s",
                        self.node, result.reason.value, from_peer, result.message)  # fmt: skip
            raise BundleRefused(result.message, store_full=True)
        if isinstance(result, Duplicate):
            self.stats.duplicates += 1
            return
        self.stats.accepted += 1
        log.info(
            "node=%s event=accepted from=%s bundle=%s local=%s",
            self.node,
            from_peer,
            result.bundle_id.hex(),
            local,
        )
        (self._deliver_send if local else self._unrouted_send).send_nowait(result.bundle_id)
        await self._report(bundle, BundleFlags.REPORT_RECEPTION)

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
        if held is None:
            return  # expired or already gone
        now = self.now()
        bundle = decode_bundle(held.data)
        destination = bundle.primary.destination
        if not isinstance(destination, IpnEid):
            self._parked.add(bundle_id)
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
            if held is None:
                continue
            bundle = decode_bundle(held.data)
            try:
                data = for_next_hop(bundle, self.node, self.config.service)
            except HopLimitExceeded:
                self.stats.hop_limited += 1
                await self.store.delete(bundle_id)
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
                break
            await self.store.delete(bundle_id)

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
            held = await self.store.get(bundle_id)
            if held is None or held.next_hop != LOCAL:
                continue
            bundle = decode_bundle(held.data)
            if bundle.primary.is_admin_record:
                await self._deliver_admin_record(bundle)
            elif not await self._deliver_message(bundle, _node_of(held.received_from)):
                await self.store.delete(bundle_id)  # refused: its key stands for nothing else
                continue
            await self.store.tombstone(bundle_id, DELIVERED)  # a duplicate is still known

    async def _deliver_message(self, bundle: Bundle, from_peer: int | None) -> bool:
        admitted = await self.admission.admit(bundle, self.now(), from_peer)
        if isinstance(admitted, Refusal):
            self.stats.rejected += 1
            return False
        if admitted is None:
            return True  # a revocation list: in force now
        signed = admitted.signed
        family = signed.message.TYPE.family
        for families, channel in self._subscribers:
            if family in families:
                await channel.send(signed)
        await self.admission.settle(admitted)
        self.stats.delivered += 1
        log.info("node=%s event=delivered content_id=%s", self.node, signed.content_id)
        await self._report(bundle, BundleFlags.REPORT_DELIVERY)
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
            result = await self.store.put(
                stored(bundle, data_out, now, inspect_bundle(bundle, now), None)
            )
            if isinstance(result, Accepted):
                self._unrouted_send.send_nowait(result.bundle_id)

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
            for channel in self._report_subscribers:
                await channel.send(record)

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
            self._parked.difference_update(expired)

    async def _recover(self) -> None:
        """Re-queue what the store holds from before a restart (module docstring)."""
        for next_hop, channel in ((LOCAL, self._deliver_send), (None, self._unrouted_send)):
            for held in await self._all_pending(next_hop):
                channel.send_nowait(held)

    async def _all_pending(self, next_hop: str | None) -> list[bytes]:
        found = await self.store.pending_for(next_hop, 1 << 30)
        return [held.bundle_id for held in found]

    async def _start(self, inbox: trio.abc.ReceiveChannel[tuple[int, bytes]] | None) -> None:
        await self.admission.restore(self.now())
        await self._recover()
        for task in (self._route_loop, self._deliver_loop, self._reroute_loop, self._expiry_loop):
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


def _node_of(eid: str | None) -> int | None:
    """The node number of an ``ipn:N.0`` neighbour name as the store keeps it."""
    if eid is None or not eid.startswith("ipn:"):
        return None
    number = eid[4:].partition(".")[0]
    return int(number) if number.isdigit() else None


def _own_cell(config: NodeConfig) -> int | None:
    """This node's cell, from its own credential (lease authority is per cell, spec §8)."""
    for credential in config.trust.credentials():
        if credential.kid == config.key.kid:
            return credential.cell
    return None


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
