"""A fleetwire node: signed messages in and out, bundles held until a contact carries them.

Theory of operation
-------------------
``async with open_node(config, store, links=...) as node`` runs one node inside the caller's
Trio run. Every decision — accept, dedupe, route, forward, retain, deliver, expire, report,
recover after a restart — is the sans-IO :class:`~fleetwire.protocol.agent.agent.BundleAgent`'s
(the same object the simulator and an embedder's loop drive; its tests cover the decisions
without Trio). This module is its Trio driver: it feeds the agent events with ``now`` and
carries out the actions it returns.

* **the store** — the agent calls its store synchronously; :mod:`.agent_store` answers from
  memory and journals every write, which one writer task commits to the runtime store
  (SQLite in a worker thread) in batches. ``await store.commit()`` returns once everything
  the agent wrote before the call is durable.
* **accept** (a link received a bundle) — ``agent.receive``; the actions are dispatched at
  once (so a cancelled link task loses nothing the agent took into its care), then the
  driver commits, and only then returns: the link acknowledges the transfer after that.
  Accepted means durable, as before; concurrent accepts share one commit (group commit), and
  ``accept_many`` takes a link's whole run of received bundles with one (batch custody).
* **ingress** (custody first, :mod:`.ingress`) — for ``accept_many`` (runs from accepted
  sessions) the bundles the C walk vouches for are written to the store's ingress in one
  insert and the link acknowledges after that commit; a node task adopts them into the agent
  afterwards (receive, the agent's commit, then the rows go), letting the links go first
  while they deliver. Bundles the walk cannot vouch for, and runs the ingress or the quota
  has no room for, take the agent's path at once, so refusals are the agent's as before.
* **send** — ``agent.send``, commit, return the signed message: "sent" means "held durably".
* **forward** — each :class:`~fleetwire.protocol.agent.actions.Transmit` goes to the
  neighbour's **ordered pipelined sender**: bundles leave in the order the agent queued
  them, without waiting for each acknowledgement (a TCPCL link has many transfers in flight,
  acknowledged in order), at most :data:`~.sender.SEND_WINDOW` per neighbour
  (:mod:`.sender`). Before a batch leaves the store is committed (a bundle is durable here
  before any neighbour can have it); each outcome goes back as ``transmitted`` /
  ``transmit_failed``. A link that is down or being replaced is waited for; a bundle the
  agent has meanwhile taken back (link lost, expired) is skipped.
* **links** — one watcher per link reports ``link_up`` (with whether the link acknowledges:
  ``confirms_delivery``) and ``link_down``; only the neighbour's current link speaks for it, so
  a replaced session's end does not take down its successor.
* **timers** — one task sleeps until the agent's latest :class:`WakeAt` and polls it (expiry,
  contacts opening, retention ends). The agent names a wake only when it is earlier than the
  one it named since the last poll, or in a poll's own batch, so the latest is the earliest
  and it is kept until it fires (the poll clears it first).
* **deliver** — :class:`Subscription` is the application's side: a verified message goes to
  every subscription of its family (or waits, in memory, for the first subscriber of its
  family), once it is durable — the messages queued for delivery meanwhile share that one
  commit; the agent is told ``acknowledge`` once every subscription it went to acknowledged
  it, ``give_back`` when they all closed without. A message handed over and not acknowledged
  before a crash comes again after the restart (at-least-once to the application).
* **revocations** — a newer list the agent put in force is written to the node's revocation
  file; a file the node wrote itself is not spread again when it is read back.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import attrs
import trio
from fleetwire.protocol.agent.actions import (
    Action,
    Deliver,
    DeliveryRefused,
    Discarded,
    RevocationsApplied,
    Sent,
    StatusReportReceived,
    TransferAccepted,
    TransferRefused,
    Transmit,
    WakeAt,
)
from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
from fleetwire.protocol.agent.bundling import FCP_SERVICE, TRUST_SERVICE
from fleetwire.protocol.agent.contacts import Clock, ContactPlan
from fleetwire.protocol.agent.routing import Router
from fleetwire.protocol.agent.states import BundleState
from fleetwire.protocol.bpv7 import BundleFlags, StatusReason, StatusReport, decode_bundle
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import PROTOCOL_VERSION, Family, Message, PeerVersions
from fleetwire.protocol.replay import DEFAULT_BUNDLE_LIFETIME_MS, ReplayPolicy
from fleetwire.protocol.trust import TrustStore

from ..links.cl_link import TransferRefusedByPeer
from ..links.link import Link, LinkDown
from ..store.agent_store import JournalledAgentStore, open_agent_store
from ..store.store import BundleStore
from .ingress import Ingress, IngressStore, Room, well_formed
from .revocation_files import write_atomically
from .sender import OrderedSender

log = logging.getLogger("fleetwire.node")

#: Deliveries taken from the queue at most per store commit (a burst shares one).
_DELIVERY_BATCH = 1024

_REASONS = {
    StatusReason.LIFETIME_EXPIRED: "expired",
    StatusReason.HOP_LIMIT_EXCEEDED: "hop-limit-exceeded",
    StatusReason.NO_KNOWN_ROUTE: "no-known-route",
}


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
    #: Expiry passes are this far apart at most (bundles expiring close together share one).
    expiry_interval_s: float = 60.0
    #: Links without acknowledgements: keep a sent bundle this long (see the agent).
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
    #: neighbour's resend is recognised as a duplicate.
    forwarded_memory_ms: int = 15 * 60_000
    #: The protocol version the node speaks: its newest, or an older one it is pinned to
    #: (``[node] protocol_version``); it reads and writes exactly as that version would.
    protocol_version: int = PROTOCOL_VERSION
    #: The ingress's bound (custody first for accepted sessions, :mod:`.ingress`): runs
    #: received and not yet adopted by the agent, at most this many bundles and bytes (and
    #: within the store quota); 0 turns the ingress off (every bundle the agent's way at once).
    ingress_max_bundles: int = 200_000
    ingress_max_bytes: int = 256 * 1024 * 1024

    def for_agent(self, neighbours: Iterable[int]) -> AgentConfig:
        """The agent's settings; every ``neighbours`` is a static route to itself."""
        return AgentConfig(
            node=self.node, key=self.key, trust=self.trust, service=self.service,
            trust_service=self.trust_service, bundle_lifetime_ms=self.bundle_lifetime_ms,
            contact_plan=self.contact_plan,
            static_routes={peer: peer for peer in neighbours} | dict(self.static_routes),
            parents=self.parents,
            retain_unconfirmed_ms=round(self.retain_unconfirmed_s * 1000),
            forwarded_memory_ms=self.forwarded_memory_ms, replay=self.replay,
            replay_floor_at_start=self.replay_floor_at_start,
            expiry_granularity_ms=max(1, round(self.expiry_interval_s * 1000)),
            protocol_version=self.protocol_version,
        )  # fmt: skip


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
        agent_store: JournalledAgentStore,
        clock: Clock,
        links: Mapping[int, Link],
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.links: dict[int, Link] = dict(links)
        self.agent = BundleAgent(config.for_agent(self.links), agent_store)
        self._agent_store = agent_store
        self._nursery = nursery
        self._redelivered = 0
        self._link_down = 0
        self._senders: dict[int, OrderedSender] = {}
        self._neighbours: set[int] = set()  # peers the agent was told of
        self._link_changed: dict[int, trio.Event] = {}
        self._wake_at: int | None = None
        self._wake_changed = trio.Event()
        self._subscriptions: list[Subscription] = []
        #: Messages of a family nobody subscribed to yet, by family, oldest first.
        self._waiting: dict[Family, list[Deliver]] = {}
        #: Messages handed to subscriptions and not yet acknowledged by all of them.
        self._handed: dict[bytes, _Handed] = {}
        #: Messages given back unacknowledged by every subscription: the next offer is a redelivery.
        self._given_back: set[bytes] = set()
        self._deliveries_send, self._deliveries = trio.open_memory_channel[
            Deliver | StatusReportReceived
        ](math.inf)
        self._report_subscribers: list[trio.MemorySendChannel[StatusReport]] = []
        #: Told ``(neighbour, size in bytes)`` each time a link took one of this node's bundles:
        #: a measurement hook (the demo counts coordination traffic with it).
        self.on_transmitted: Callable[[int, int], None] | None = None
        #: Told the code of each message refused on arrival (a measurement hook, as above).
        self.on_refused: Callable[[str], None] | None = None
        #: Sent on a link without acknowledgements and not yet released, by store key:
        #: (BPv7 bundle id, neighbour) — only to say in the log what became of them.
        self._retained: dict[bytes, tuple[bytes, int]] = {}
        #: BPv7 ids of retained bundles a reception or delivery report named.
        self._reported: set[bytes] = set()
        self._written: bytes | None = None  # the revocation list this node last wrote
        #: Set (and replaced) each time a newer revocation list is put in force.
        self.revocations_applied = trio.Event()
        #: Custody first for runs from accepted sessions (:mod:`.ingress`); None without one.
        self.ingress: Ingress | None = None
        if (
            getattr(store, "ingress_put", None) is not None
            and config.ingress_max_bundles > 0
            and config.ingress_max_bytes > 0
        ):
            self.ingress = Ingress(
                self, cast(IngressStore, store), config.ingress_max_bundles,
                config.ingress_max_bytes,
            )  # fmt: skip
            agent_store.waiting = self.ingress.waiting  # it counts against the quota

    @property
    def versions(self) -> PeerVersions:
        """Which version this node writes to each peer, learnt from their capability
        advertisements (the agent's table; spec/v2/versions.md §2)."""
        return self.agent.versions

    @property
    def node(self) -> int:
        return self.config.node

    @property
    def router(self) -> Router:
        return self.agent.router

    @property
    def stats(self) -> NodeStats:
        s = self.agent.stats
        return NodeStats(
            sent=s.sent, accepted=s.accepted, duplicates=s.duplicates, refused=s.refused,
            malformed=s.malformed, forwarded=s.forwarded, delivered=s.delivered,
            acknowledged=s.acknowledged, redelivered=self._redelivered, rejected=s.rejected,
            expired=s.expired, hop_limited=s.hop_limited, link_down=self._link_down,
            status_reports=s.status_reports,
        )  # fmt: skip

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
        actions = self.agent.send(message, to, self.now(), lifetime_ms=lifetime_ms, reports=reports)
        self._dispatch(actions)
        answer = actions[0]
        if isinstance(answer, TransferRefused):
            raise BundleRefused(answer.reason, store_full=True)
        assert isinstance(answer, Sent)
        await self._agent_store.commit()
        return answer.message

    def next_message_sequence(self) -> int:
        """A header sequence number larger than any this node used before, across restarts.

        Derived from the clock (ms × 1024) so that no counter has to be stored; a node making
        more than 1024 messages in one millisecond simply runs ahead of the clock.
        """
        return self.agent.next_message_sequence(self.now())

    def subscribe(self, *families: Family, buffer: int = 1024) -> Subscription:
        """Verified messages for this node, of ``families`` (all when none are named).

        Each message stays held until the subscription acknowledges it (see
        :class:`Subscription`); messages that waited for a subscriber of their family come
        first. ``buffer`` messages at most are handed over ahead of the application.
        """
        subscription = Subscription(self, frozenset(families or Family), buffer)
        self._subscriptions.append(subscription)
        for family in subscription.families:
            for deliver in self._waiting.pop(family, ()):
                self._deliveries_send.send_nowait(deliver)  # offered again, now with a taker
        return subscription

    def subscribe_status_reports(
        self, buffer: int = 1024
    ) -> trio.MemoryReceiveChannel[StatusReport]:
        """Bundle status reports addressed to this node (RFC 9171 §6.1.1)."""
        send, receive = trio.open_memory_channel[StatusReport](buffer)
        self._report_subscribers.append(send)
        return receive

    async def apply_revocations(self, data: bytes) -> bool:
        """Put a root-signed revocation list (from a file, a tool) in force and spread it;
        ``False`` if it was refused (bad signature, malformed). An older list is ignored."""
        actions = self.agent.apply_revocations(data, self.now(), spread=data != self._written)
        self._dispatch(actions, from_file=True)
        await self._agent_store.commit()
        return not any(isinstance(a, DeliveryRefused) for a in actions)

    # --- the links' side ---------------------------------------------------------------

    async def accept(self, data: bytes, from_peer: int | None = None) -> None:
        """Take custody of a received bundle; return only once it is durable.

        Raises :class:`BundleRefused` (the link refuses the transfer) for malformed bundles and
        a full store. Expired or over-hop bundles are taken and dropped, as RFC 9171 §5.4 says.
        """
        taken = self._take(data, from_peer)
        await self._agent_store.commit()
        self._log_taken(taken, from_peer)
        if isinstance(taken, BundleRefused):
            raise taken

    async def accept_many(
        self, datas: Sequence[bytes], from_peer: int | None = None
    ) -> list[BundleRefused | None]:
        """:meth:`accept` for a batch received from one neighbour, in order, with one commit
        (a link's batch custody): ``None`` for each bundle taken, its refusal otherwise.

        With an ingress (:mod:`.ingress`, custody first) the bundles the C walk vouches for
        are held there durably (one insert) and adopted by the agent afterwards; the others
        take the agent's path at once, so refusals are the agent's as before."""
        ingress = self.ingress
        if ingress is None or not datas:
            return await self._accept_now(datas, from_peer)
        room = ingress.room(len(datas), sum(map(len, datas)), from_peer)
        if room is not Room.INGRESS:
            if room is Room.DRAIN:
                # The quota is near: what waits goes to the agent first, so that its
                # store-full check counts it; then this run the agent's way (refused if full).
                await ingress.drain()
            return await self._accept_now(datas, from_peer)
        good = [well_formed(data) for data in datas]
        # No await between the room check and the two takes below (the agent's and the
        # ingress's), so concurrent runs cannot both count on the same room.
        taken = [
            None if ok else self._take(data, from_peer)
            for data, ok in zip(datas, good, strict=True)
        ]
        held = [data for data, ok in zip(datas, good, strict=True) if ok]
        if held:
            await ingress.put(held, from_peer)
        if len(held) < len(datas):
            await self._agent_store.commit()
        for one in taken:
            self._log_taken(one, from_peer)
        return [one if isinstance(one, BundleRefused) else None for one in taken]

    async def _accept_now(
        self, datas: Sequence[bytes], from_peer: int | None
    ) -> list[BundleRefused | None]:
        taken = [self._take(data, from_peer) for data in datas]
        await self._agent_store.commit()
        for one in taken:
            self._log_taken(one, from_peer)
        return [one if isinstance(one, BundleRefused) else None for one in taken]

    def _take(self, data: bytes, from_peer: int | None) -> BundleRefused | _Taken | None:
        """Feed one received bundle to the agent and dispatch what it says (before any commit,
        so that a cancelled link task loses nothing the agent took into its care); what to log
        once it is durable (``None``: taken and dropped, RFC 9171 §5.4)."""
        duplicates = self.agent.stats.duplicates
        actions = self.agent.receive(data, from_peer, self.now())
        answer = actions[0]
        if isinstance(answer, TransferRefused):
            log.warning("node=%s event=refused code=%s from=%s reason=%s", self.node,
                        answer.code, from_peer, answer.reason)  # fmt: skip
            return BundleRefused(answer.reason, store_full=answer.code.startswith("store-"))
        assert isinstance(answer, TransferAccepted)
        for action in actions:
            if isinstance(action, Discarded) and action.reason == StatusReason.NO_KNOWN_ROUTE:
                # Routes are by ipn node number: say which destination was not one (§5.4.2).
                log.warning("node=%s event=no-known-route destination=%s from=%s", self.node,
                            decode_bundle(data).primary.destination, from_peer)  # fmt: skip
        self._dispatch(actions)
        if self.agent.stats.duplicates > duplicates:
            return _Taken(answer.bundle, duplicate=True)
        if len(actions) > 1 and isinstance(actions[1], Discarded):
            return None
        return _Taken(answer.bundle, duplicate=False)

    def _log_taken(self, taken: BundleRefused | _Taken | None, from_peer: int | None) -> None:
        # Logged once durable: "accepted" twice by one node would mean it took a bundle twice.
        if isinstance(taken, _Taken):
            log.info("node=%s event=%s from=%s bundle=%s", self.node,
                     "duplicate" if taken.duplicate else "accepted", from_peer,
                     taken.bundle.hex())  # fmt: skip

    def add_link(self, link: Link) -> None:
        """Start using ``link`` (a neighbour that connected, or a new contact)."""
        peer = link.peer
        self.links[peer] = link
        self._link_changed.pop(peer, trio.Event()).set()
        if peer not in self._neighbours:  # known from now on (a revocation list goes to it)
            self._neighbours.add(peer)
            self._dispatch(self.agent.link_down(peer, self.now()))
        self._nursery.start_soon(self._watch_link, link)

    # --- carrying out the agent's actions ------------------------------------------------

    def _dispatch(self, actions: Sequence[Action], *, from_file: bool = False) -> None:
        """Hand every action to whoever carries it out; nothing here waits."""
        for action in actions:
            if isinstance(action, Transmit):
                self._sender(action.link).push(action)
            elif isinstance(action, WakeAt):
                if action.at != self._wake_at:
                    self._wake_at = action.at
                    self._wake_changed.set()
            elif isinstance(action, Deliver | StatusReportReceived):
                if isinstance(action, StatusReportReceived):
                    self._note_report(action.report)
                self._deliveries_send.send_nowait(action)
            elif isinstance(action, DeliveryRefused):
                log.warning("node=%s event=refused code=%s reason=%s", self.node, action.code,
                            action.reason)  # fmt: skip
                if self.on_refused is not None:
                    self.on_refused(str(action.code))
            elif isinstance(action, Discarded):
                log.info("node=%s event=%s bundle=%s", self.node,
                         _REASONS.get(StatusReason(action.reason), "discarded"),
                         action.bundle.hex())  # fmt: skip
            elif isinstance(action, RevocationsApplied):
                self._revocations_applied(action, from_file)

    def _revocations_applied(self, action: RevocationsApplied, from_file: bool) -> None:
        log.warning("node=%s event=revocations-applied serial=%s", self.node, action.serial)
        if self.config.revocations_file is not None and not from_file:
            write_atomically(self.config.revocations_file, action.data)
            self._written = action.data
        self.revocations_applied.set()
        self.revocations_applied = trio.Event()

    def _sender(self, peer: int) -> OrderedSender:
        sender = self._senders.get(peer)
        if sender is None:
            sender = self._senders[peer] = OrderedSender(
                peer, self.links, self._link_changed, commit=self._agent_store.commit,
                in_flight=self._in_flight, outcome=self._transmitted,
            )  # fmt: skip
            self._nursery.start_soon(sender.run)
        return sender

    def _in_flight(self, bundle: bytes) -> bool:
        # Still the agent's to send (not taken back by a lost link, expiry, a reroute).
        return self.agent.held_state(bundle) is BundleState.IN_FLIGHT

    def _transmitted(self, transmit: Transmit, error: LinkDown | None) -> None:
        now = self.now()
        if error is None:
            if self.on_transmitted is not None:
                self.on_transmitted(transmit.link, len(transmit.data))
            forwarded = self.agent.stats.forwarded
            actions = self.agent.transmitted(transmit.link, transmit.bundle, now)
            if self.agent.stats.forwarded > forwarded:
                log.info("node=%s event=forwarded to=%s bundle=%s", self.node, transmit.link,
                         transmit.bundle.hex())  # fmt: skip
                if self.agent.held_state(transmit.bundle) is BundleState.RETAINED:
                    subject = decode_bundle(transmit.data).id.key()
                    self._retained[transmit.bundle] = (subject, transmit.link)
        else:
            self._link_down += 1
            refused = isinstance(error, TransferRefusedByPeer)  # its store is full: wait a while
            actions = self.agent.transmit_failed(transmit.link, transmit.bundle, now,
                                                 refused=refused)  # fmt: skip
        self._dispatch(actions)
        self._note_retained()

    def _note_report(self, report: StatusReport) -> None:
        # Before the agent's next poll releases the bundle it names (for the log line's why).
        subject = report.subject.key()
        if (report.received.asserted or report.delivered.asserted) and any(
            subject == retained for retained, _ in self._retained.values()
        ):
            self._reported.add(subject)

    def _note_retained(self) -> None:
        """Log what the agent did with bundles retained after a link without acknowledgements:
        released (a forwarded tombstone now) or sent again (its session ended)."""
        if not self._retained:
            return
        for key, (subject, peer) in list(self._retained.items()):
            state = self.agent.held_state(key)
            if state is BundleState.RETAINED:
                continue
            del self._retained[key]
            if state is None:
                why = (
                    "a status report says it arrived downstream" if subject in self._reported
                    else f"retention of {self.config.retain_unconfirmed_s:g} s over"
                )  # fmt: skip
                log.info("node=%s event=released bundle=%s to=%s reason=%s (no acknowledgements)",
                         self.node, key.hex(), peer, why)  # fmt: skip
            else:
                log.warning(
                    "node=%s event=resend bundle=%s to=%s reason=the session without "
                    "acknowledgements ended within %g s of sending",
                    self.node, key.hex(), peer, self.config.retain_unconfirmed_s,
                )  # fmt: skip
            self._reported.discard(subject)

    # --- tasks -------------------------------------------------------------------------

    async def _timer(self) -> None:
        """Poll the agent at its latest WakeAt (one task for every timer the agent keeps)."""
        while True:
            wake_at = self._wake_at
            with trio.move_on_at(math.inf if wake_at is None else self.clock.to_trio(wake_at)):
                await self._wake_changed.wait()
                self._wake_changed = trio.Event()
                continue
            # Never before the wake asked for (DTN ms from Trio's float clock may round down).
            assert wake_at is not None
            now, self._wake_at = max(self.now(), wake_at), None
            expired = self.agent.stats.expired
            self._dispatch(self.agent.poll(now))
            if self.agent.stats.expired > expired:
                log.info("node=%s event=expired count=%d", self.node,
                         self.agent.stats.expired - expired)  # fmt: skip
            self._note_retained()

    async def _watch_link(self, link: Link) -> None:
        peer = link.peer
        try:
            while True:
                await link.wait_up()
                if self.links.get(peer) is link:
                    confirms = bool(getattr(link, "confirms_delivery", True))
                    self._dispatch(self.agent.link_up(peer, self.now(), confirms=confirms))
                await link.wait_down()
                if self.links.get(peer) is link:
                    self._dispatch(self.agent.link_down(peer, self.now()))
                    self._note_retained()
        except LinkDown:
            if self.links.get(peer) is link:  # closed for good; a replacement gets its own watcher
                self._dispatch(self.agent.link_down(peer, self.now()))
                self._note_retained()

    async def _deliver_loop(self) -> None:
        async for item in self._deliveries:
            # Everything queued meanwhile goes with it: one commit for the batch, not one per
            # message (a burst of deliveries shares the store's transaction and fsync).
            batch = [item]
            with contextlib.suppress(trio.WouldBlock):
                while len(batch) < _DELIVERY_BATCH:
                    batch.append(self._deliveries.receive_nowait())
            if any(isinstance(one, Deliver) for one in batch):
                # Durable before the application sees it (a crash then cannot un-send it
                # upstream). Each Deliver was queued after the agent's writes for its bundle,
                # so this one commit covers every message of the batch.
                await self._agent_store.commit()
            for one in batch:
                if isinstance(one, StatusReportReceived):
                    for channel in self._report_subscribers:
                        await channel.send(one.report)
                else:
                    await self._offer(one)

    async def _offer(self, deliver: Deliver) -> None:
        """Hand ``deliver`` to its family's subscriptions; the caller committed already."""
        key = deliver.delivery
        if key in self._handed or self.agent.held_state(key) is not BundleState.HANDED:
            return  # with subscriptions already, or expired meanwhile
        family = deliver.message.message.TYPE.family
        takers = [s for s in self._subscriptions if family in s.families]
        if not takers:
            self._waiting.setdefault(family, []).append(deliver)
            return
        self._handed[key] = _Handed(len(takers))
        if key in self._given_back:
            self._given_back.discard(key)
            self._redelivered += 1
        else:
            log.info("node=%s event=delivered content_id=%s", self.node,
                     deliver.message.content_id)  # fmt: skip
        for subscription in takers:
            try:
                await subscription._channel.send((key, deliver.message))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._release(key)  # closed meanwhile: as if it gave the message back

    def _acknowledge(self, key: bytes) -> None:
        """One subscription is done with a message; the agent forgets it when all are."""
        handed = self._handed.get(key)
        if handed is None:
            return
        handed.acknowledged = True
        handed.outstanding -= 1
        if handed.outstanding <= 0:
            self._finish(key)

    def _release(self, key: bytes) -> None:
        """One subscription was closed before acknowledging a message it had."""
        handed = self._handed.get(key)
        if handed is None:
            return
        handed.outstanding -= 1
        if handed.outstanding > 0:
            return
        if handed.acknowledged:
            self._finish(key)
        else:  # nobody has it: offered again (to later subscribers, or when one comes)
            del self._handed[key]
            self._given_back.add(key)
            with contextlib.suppress(RuntimeError):  # the node stopped: redelivered at restart
                self._dispatch(self.agent.give_back(key, self.now()))

    def _finish(self, key: bytes) -> None:
        del self._handed[key]
        log.info("node=%s event=acknowledged bundle=%s", self.node, key.hex())
        with contextlib.suppress(RuntimeError):
            self._dispatch(self.agent.acknowledge(key, self.now()))

    def _unsubscribe(self, subscription: Subscription, unacknowledged: list[bytes]) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        for key in unacknowledged:
            self._release(key)

    async def _start(self, inbox: trio.abc.ReceiveChannel[tuple[int, bytes]] | None) -> None:
        now = self.now()
        if not self._agent_store.durable and self.config.replay_floor_at_start:
            log.warning(
                "node=%s event=replay-memory-volatile hint=without a durable store, messages "
                "issued before this start are refused; set [node] store to keep replay memory",
                self.node,
            )
        for peer in self.links:  # known neighbours, down until their watcher says otherwise
            self._neighbours.add(peer)
            self.agent.link_down(peer, now)
        self._dispatch(self.agent.start(now))
        if self.ingress is not None:
            await self.ingress.load()  # what a previous run held: adopted before anything new
            self._nursery.start_soon(self.ingress.run)
        self._nursery.start_soon(self._timer)
        self._nursery.start_soon(self._deliver_loop)
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
        with contextlib.suppress(BundleRefused):
            await self.accept(data, peer)


@asynccontextmanager
async def open_node(
    config: NodeConfig,
    store: BundleStore,
    *,
    links: Mapping[int, Link] | Iterable[Link] = (),
    inbox: trio.abc.ReceiveChannel[tuple[int, bytes]] | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Node]:
    """Run a node until the block exits (then its tasks are cancelled; the store stays open,
    with everything the node decided written to it).

    Received bundles come from each link's ``incoming`` channel, or from ``inbox`` when given
    (one ``(peer, bundle)`` channel for all links, as :meth:`LoopbackNetwork.open_inbox`
    gives). ``clock`` maps Trio time to DTN time; by default Trio's "now" is pinned to the wall
    clock.
    """
    if clock is None:
        import time

        clock = Clock.from_unix(trio.current_time(), time.time())
    by_peer = dict(links) if isinstance(links, Mapping) else {link.peer: link for link in links}
    async with open_agent_store(store) as agent_store, trio.open_nursery() as nursery:
        node = Node(config, store, agent_store, clock, by_peer, nursery)
        await node._start(inbox)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


@attrs.frozen(slots=True)
class _Taken:
    """A received bundle the agent took (or knew already), to log once it is durable."""

    bundle: bytes
    duplicate: bool


@attrs.define
class _Handed:
    """A message with subscriptions, waiting for their acknowledgements."""

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
