"""A :class:`~fleetwire.runtime.links.link.Link` that drives any convergence-layer session over a stream.

Theory of operation
-------------------
The sans-IO sessions of :mod:`fleetwire.protocol.tcpcl` (TCPCLv4 RFC 9174, TCPCLv3 RFC 7242,
MTCP) own the bytes and the rules; :class:`ClLink` owns one ``trio.abc.Stream``, the clock and
the waiting. :func:`open_cl_link` runs it inside a nursery it owns:

* a **reader** task feeds ``receive_data`` and then *pumps* the session (``next_event`` until
  ``NEED_DATA``); it is the only task that reads, so it also performs the TLS switch when the
  TCPCLv4 session says :class:`~fleetwire.protocol.tcpcl.common.StartTls` (RFC 9174 §4.4);
* a **writer** task drains ``data_to_send`` into the stream whenever something was queued
  (small pieces such as acks and small segments are coalesced into writes of up to
  :attr:`LinkTimeouts.write_batch` bytes; large segments go out as they are);
* a **timer** task calls ``tick(trio.current_time())`` at ``next_deadline()`` (keepalive,
  idle, establishment timeouts); every other task ticks after it moved bytes, as the common
  contract asks;
* **custody workers** hand each received bundle to the node's ``accept`` callback.

The pump is synchronous, so any task may run it after touching the session; Trio runs one
task at a time, so the session never sees two callers at once.

Custody (RFC 9174 §5.2.3, RFC 7242 §5.3): a received bundle is acknowledged to the peer (the
final XFER_ACK / ACK_SEGMENT, ``session.ack``) only after ``accept(bundle, link)`` returned,
i.e. after the node's store made it durable. ``accept`` raising :class:`CustodyRefused`
refuses the transfer (XFER_REFUSE / REFUSE_BUNDLE with the mapped reason) or, where the
convergence layer cannot refuse one bundle (MTCP, TCPCLv3 without negotiated refusal), ends
the session; either way the bundle is never acked. Any other exception from ``accept`` is a
bug or a broken store: the transfer is refused the same way and the exception propagates out
of the link's nursery (nothing is swallowed). Once :attr:`LinkTimeouts.max_custody_backlog`
bundles (or :attr:`LinkTimeouts.max_custody_bytes` of them) wait for or sit in ``accept``, the
reader stops reading, so TCP pushes back on the sender instead of memory growing (the bound is
that much plus what one read held).
A node's own ``accept(bundle, peer)`` that raises its own refusal is adapted with
:func:`custody`: ``accept=custody(node.accept, refusals=(BundleRefused,))``.

``incoming``: one consumer per bundle, never two. Without an ``accept`` callback the link's
``incoming`` channel *is* the custody: a bundle is acknowledged once it is queued in that
bounded channel (in arrival order, one custody worker), which is what a simple consumer or a
test wants and keeps the :class:`Link` surface uniform with the loopback link. With an
``accept`` callback the bundles go there only (the node's store is the one place they live) and
``incoming`` is an already-ended channel.

Many transfers in flight, committed in batches, acknowledged in order: with an ``accept``
callback up to :attr:`LinkTimeouts.custody_workers` accepts run at once, so the store can put
their bundles in one transaction (group commit); they finish in any order, and each calls
``session.ack`` when its bundle is durable. With an ``accept_many`` callback instead (batch
custody) the link hands it everything queued, up to :attr:`LinkTimeouts.custody_batch`
bundles per call and :attr:`LinkTimeouts.custody_batches` calls at once, so one store
transaction (one fsync) covers a whole batch without a task per bundle; each bundle is acked
once the call returned ``None`` for it, refused with the :class:`Refusal` it returned
otherwise. The sessions themselves release the acks in the order the transfers arrived
(TCPCLv4 and TCPCLv3 both), because deployed senders (HDTN) match acks first in, first out and
stall on the first one out of place. Small bundles are why this matters: a 250-byte bundle
acked one fsync at a time moves a few thousand a second; hundreds per fsync, tens of thousands.
A TCPCLv4 session made for the link batches its events (``TcpclV4.batch_events``): a run of
small transfers arrives as one ``BundlesReceived`` that extends the custody queue at once, a
custody batch is acked with one ``ack_many``, ``send_many`` queues its batch with one
``send_bundles`` and the peer's acks resolve it as one ``TransfersAcked``: per bundle, a few list
operations on each side rather than an event, an object and a call each.

Sending: ``send`` queues the bundle in the session at once (so concurrent sends are pipelined
in call order) and returns when the peer acknowledged the whole transfer
(:class:`~fleetwire.protocol.tcpcl.common.TransferAcked` with ``complete``). A convergence
layer without acknowledgements (MTCP, TCPCLv3 when acks were not negotiated) can only say
"written to TCP": ``send`` then returns once the writer handed all the bundle's bytes to the
stream. A refusal raises :class:`TransferRefusedByPeer`; the end of the session raises
:class:`~fleetwire.runtime.links.link.LinkDown` for every transfer not yet acknowledged, with the
reason (peer's SESS_TERM, idle timeout, stream error, protocol violation). ``send_many`` queues
a whole batch (a drained page of a backlog) and returns each bundle's outcome, ``None`` or its
``LinkDown``, with one wait instead of a task per bundle.

Ending: when the session reports ``ConnectionClosed`` (or the stream breaks), pending sends fail
at once; the writer gets :attr:`LinkTimeouts.flush` seconds to write what the session still has
(a SESS_TERM reply, say), the link half-closes the stream and reads to EOF for at most
:attr:`LinkTimeouts.linger` seconds (so the peer gets our last bytes rather than a reset), then
closes it. ``aclose`` begins a clean termination (SESS_TERM / SHUTDOWN) and waits at most
:attr:`LinkTimeouts.close` seconds for the session to end before forcing it.

Each convergence layer differs in a few calls (constructor, refusal, termination, TLS, peer
checks); a :class:`ConvergenceLayer` adapter (:class:`TcpclV4`, :class:`TcpclV3`,
:class:`Mtcp`) hides that. With ``TcpclV4(authenticate_node_id=True)`` the peer's SESS_INIT
Node ID must be a URI subjectAltName of its TLS certificate (RFC 9174 §4.4.3), otherwise the
session ends with "Contact Failure" before the link comes up.

Identity (RFC 9174 §4.6, RFC 7242 §4.1): a link dialled to a configured neighbour
(``peer`` given, ACTIVE role) checks the Node ID / EID the peer announced against
``ipn:<peer>.*`` (or exactly against ``peer_node_id`` when given: a ``dtn:`` agent). A mismatch (or no id at all) ends the session before it comes up — TCPCLv4
SESS_TERM "Contact Failure", TCPCLv3 SHUTDOWN — with a warning naming both ids; nothing is
sent on it. MTCP announces nothing and is not checked. Without TLS the announced id is a claim
(anyone can announce anything); the check only catches a wrong or misconfigured neighbour.

Budgets: a :class:`~.budgets.LinkBudget` (given to the links a listener accepts) caps the
sessions and the received bytes held across all of them; see :mod:`.budgets`.

Timers: a quiet session stays up on keepalives; a peer that stops answering is dropped at the
session's idle timeout (2x keepalive by default, §5.1.1). While custody pushes back (the reader
is not reading) the peer's keepalives are not read either, so an ``accept`` slower than the
idle timeout ends the session: the store must be faster than that.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import math
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import trio
from fleetwire.protocol.errors import FleetwireError, LocalProtocolError
from fleetwire.protocol.tcpcl import mtcp, v3, v4, v4_messages
from fleetwire.protocol.tcpcl.common import (
    NEED_DATA,
    BundleReceived,
    BundlesReceived,
    ConnectionClosed,
    ConvergenceLayerSession,
    Event,
    MessageRejected,
    ProtocolViolation,
    Role,
    SessionEstablished,
    SessionTerminated,
    StartTls,
    TransferAcked,
    TransferFailed,
    TransferRefused,
    TransfersAcked,
    TransferStarted,
)

from .budgets import BUDGET_EXCEEDED, LinkBudget
from .link import LinkDown

__all__ = [
    "Accept",
    "AcceptMany",
    "Rejection",
    "ClLink",
    "ConvergenceLayer",
    "CustodyRefused",
    "LinkTimeouts",
    "Mtcp",
    "Refusal",
    "TcpclV3",
    "TcpclV4",
    "TransferRefusedByPeer",
    "custody",
    "open_cl_link",
]

log = logging.getLogger("fleetwire.link")

_IPN = re.compile(r"ipn:(\d+)(?:\.\d+)?")
#: Seconds the timer waits when a tick left the session's deadline where it was.
_TIMER_RETRY = 0.05


# --- errors ----------------------------------------------------------------------------


class Refusal(enum.Enum):
    """Why the node refuses custody of a received bundle (mapped onto each CL's codes)."""

    UNKNOWN = "unknown"
    #: The store is full (RFC 9174 §5.2.4 "No Resources", RFC 7242 §5.4 "resources exhausted").
    NO_RESOURCES = "no-resources"
    #: The bundle is unacceptable (RFC 9174 "Not Acceptable"; TCPCLv3 has no such code).
    NOT_ACCEPTABLE = "not-acceptable"
    #: We already hold it (RFC 9174 / RFC 7242 "Completed").
    COMPLETED = "completed"
    #: Send it again later (RFC 9174 / RFC 7242 "Retransmit").
    RETRANSMIT = "retransmit"


class Rejection(enum.Enum):
    """Why a whole session is refused once it is established (mapped onto each CL's codes)."""

    #: The peer is not who it should be (RFC 9174 §6.1 "Contact Failure"; v3: plain SHUTDOWN).
    CONTACT_FAILURE = "contact-failure"
    #: Too many sessions or bytes (RFC 9174 "Resource Exhaustion"; RFC 7242 SHUTDOWN "Busy").
    RESOURCE_EXHAUSTION = "resource-exhaustion"


class CustodyRefused(FleetwireError):
    """Raised by an ``accept`` callback: the bundle is not taken; the link refuses it."""

    code = "custody-refused"

    def __init__(self, reason: Refusal, message: str = "") -> None:
        super().__init__(message or reason.value)
        self.reason = reason


class TransferRefusedByPeer(LinkDown):
    """The peer refused our transfer (XFER_REFUSE / REFUSE_BUNDLE); ``reason`` is its code."""

    code = "transfer-refused"

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


#: The node's custody callback: make ``bundle`` durable, or raise :class:`CustodyRefused`.
Accept = Callable[[bytes, "ClLink"], Awaitable[None]]
#: Custody of many bundles at once (one store transaction for all, say): return, in order,
#: ``None`` for each bundle now durable or the :class:`Refusal` of each one not taken.
AcceptMany = Callable[[list[bytes], "ClLink"], Awaitable[Sequence["Refusal | None"]]]


def custody(
    put: Callable[[bytes, int], Awaitable[object]],
    refusals: tuple[type[BaseException], ...] = (),
    reason: Refusal = Refusal.NO_RESOURCES,
) -> Accept:
    """An :data:`Accept` from a node-style ``put(bundle, peer_number)``: its ``refusals``
    (say ``(BundleRefused,)``) become :class:`CustodyRefused` with ``reason``."""

    async def accept(bundle: bytes, link: ClLink) -> None:
        try:
            await put(bundle, link.peer)
        except refusals as error:
            raise CustodyRefused(reason, str(error)) from error

    return accept


# --- convergence-layer adapters --------------------------------------------------------


class ConvergenceLayer(Protocol):
    """What differs between convergence layers, seen from the link."""

    @property
    def name(self) -> str: ...

    def new_session(self, role: Role, now: float) -> ConvergenceLayerSession: ...

    def confirms_delivery(self, session: Any) -> bool:
        """True when the established session acknowledges whole transfers."""
        ...

    def refuse(self, session: Any, transfer_id: int, reason: Refusal) -> bool:
        """Refuse one received bundle; False if this session cannot (the link then ends it)."""
        ...

    def terminate(self, session: Any) -> None: ...

    def tls_context(self, role: Role) -> ssl.SSLContext | None: ...

    def check_peer(self, stream: trio.abc.Stream, established: SessionEstablished) -> str:
        """Why the established peer is unacceptable (empty: it is fine)."""
        ...

    def reject(self, session: Any, why: Rejection = Rejection.CONTACT_FAILURE) -> None:
        """End a session whose peer failed a check (identity, budget) with ``why``."""
        ...

    def refuse_receiving(self, session: Any) -> bool:
        """Refuse the transfer being reassembled ("No Resources"); False if none or the
        layer cannot (the link then ends the session to free the memory)."""
        ...

    @property
    def server_hostname(self) -> str | None: ...

    @property
    def identifies_peer(self) -> bool:
        """The layer's session announces the peer's node id (TCPCLv4 SESS_INIT, v3 header)."""
        ...


_V4_REFUSAL = {
    Refusal.UNKNOWN: v4_messages.RefuseReason.UNKNOWN,
    Refusal.NO_RESOURCES: v4_messages.RefuseReason.NO_RESOURCES,
    Refusal.NOT_ACCEPTABLE: v4_messages.RefuseReason.NOT_ACCEPTABLE,
    Refusal.COMPLETED: v4_messages.RefuseReason.COMPLETED,
    Refusal.RETRANSMIT: v4_messages.RefuseReason.RETRANSMIT,
}
_V3_REFUSAL = {
    Refusal.UNKNOWN: v3.RefusalReason.UNKNOWN,
    Refusal.NO_RESOURCES: v3.RefusalReason.NO_RESOURCES,
    Refusal.NOT_ACCEPTABLE: v3.RefusalReason.UNKNOWN,
    Refusal.COMPLETED: v3.RefusalReason.COMPLETED,
    Refusal.RETRANSMIT: v3.RefusalReason.RETRANSMIT,
}


@attrs.frozen(slots=True)
class TcpclV4:
    """TCPCLv4 (RFC 9174): session parameters from ``config``; TLS per §4.4 when both sides
    set CAN_TLS. ``server_context`` serves the passive side, ``client_context`` the active one
    (verifying the peer against ``server_hostname`` if the context checks host names)."""

    config: v4.SessionConfig = attrs.field(factory=v4.SessionConfig)
    server_context: ssl.SSLContext | None = None
    client_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    #: Require the peer's Node ID in its certificate (§4.4.3); needs a peer certificate, so
    #: a passive side must also ask the client for one (``verify_mode = CERT_REQUIRED``).
    authenticate_node_id: bool = False
    name: str = "tcpclv4"
    identifies_peer: bool = True
    #: Runs of small transfers and acks as one event each (see :mod:`~.tcpcl.v4`).
    batch_events: bool = True

    def new_session(self, role: Role, now: float) -> ConvergenceLayerSession:
        return v4.TcpclV4Session(role, self.config, now, batch_events=self.batch_events)

    def confirms_delivery(self, session: Any) -> bool:
        return True

    def refuse(self, session: Any, transfer_id: int, reason: Refusal) -> bool:
        session.refuse(transfer_id, _V4_REFUSAL[reason])
        return True

    def terminate(self, session: Any) -> None:
        session.terminate()

    def tls_context(self, role: Role) -> ssl.SSLContext | None:
        return self.server_context if role is Role.PASSIVE else self.client_context

    def check_peer(self, stream: trio.abc.Stream, established: SessionEstablished) -> str:
        """§4.4.3: with ``authenticate_node_id``, the Node ID the peer sent in SESS_INIT must
        be a URI subjectAltName (NODE-ID) of the certificate it presented in TLS."""
        if not self.authenticate_node_id:
            return ""
        if not isinstance(stream, trio.SSLStream):
            return "node id authentication needs TLS (RFC 9174 §4.4.3)"
        cert = stream.getpeercert() or {}
        names = cert.get("subjectAltName", ())
        uris = {value for kind, value in names if kind == "URI"}
        if established.peer_node_id not in uris:
            return (
                f"peer node id {established.peer_node_id!r} is not a NODE-ID of its "
                "certificate (RFC 9174 §4.4.3)"
            )
        return ""

    def reject(self, session: Any, why: Rejection = Rejection.CONTACT_FAILURE) -> None:
        session.terminate(_V4_REJECTION[why])

    def refuse_receiving(self, session: Any) -> bool:
        tid = session.receiving_transfer
        if tid is None:
            return False
        session.refuse(tid, v4_messages.RefuseReason.NO_RESOURCES)
        return True


_V4_REJECTION = {
    Rejection.CONTACT_FAILURE: v4_messages.TermReason.CONTACT_FAILURE,
    Rejection.RESOURCE_EXHAUSTION: v4_messages.TermReason.RESOURCE_EXHAUSTION,
}


class _WithoutTls:
    """What TCPCLv3 and MTCP share: no TLS, nothing to check about the peer beyond the
    session, and the session's own termination for ending and rejecting alike."""

    __slots__ = ()

    def terminate(self, session: Any) -> None:
        session.terminate()

    def tls_context(self, role: Role) -> ssl.SSLContext | None:
        return None

    def check_peer(self, stream: trio.abc.Stream, established: SessionEstablished) -> str:
        return ""

    def refuse_receiving(self, session: Any) -> bool:
        return False  # no refusal of one transfer mid-way: the link ends the session


@attrs.frozen(slots=True)
class TcpclV3(_WithoutTls):
    """TCPCLv3 (RFC 7242): contact header parameters from ``config``."""

    config: v3.TcpclV3Config
    name: str = "tcpclv3"
    server_hostname: str | None = None
    identifies_peer: bool = True
    #: Bundles completed back to back as one event (see :mod:`~.tcpcl.v3`).
    batch_events: bool = True

    def new_session(self, role: Role, now: float) -> ConvergenceLayerSession:
        return v3.TcpclV3Session(role, self.config, batch_events=self.batch_events)

    def confirms_delivery(self, session: Any) -> bool:
        negotiated = session.negotiated
        return negotiated is not None and bool(negotiated.acks)

    def refuse(self, session: Any, transfer_id: int, reason: Refusal) -> bool:
        negotiated = session.negotiated
        if negotiated is None or not negotiated.refusal:
            return False
        session.refuse(transfer_id, _V3_REFUSAL[reason])
        return True

    def reject(self, session: Any, why: Rejection = Rejection.CONTACT_FAILURE) -> None:
        # RFC 7242 §6.1 has "Busy" for exhaustion and no code for a wrong peer.
        busy = why is Rejection.RESOURCE_EXHAUSTION
        session.terminate(v3.ShutdownReason.BUSY if busy else None)


@attrs.frozen(slots=True)
class Mtcp(_WithoutTls):
    """MTCP (draft-ietf-dtn-mtcpcl-01): no acks, no refusal, no termination message."""

    config: mtcp.MtcpConfig = attrs.field(factory=mtcp.MtcpConfig)
    name: str = "mtcp"
    server_hostname: str | None = None
    identifies_peer: bool = False
    #: Runs of whole frames as one event (see :mod:`~.tcpcl.mtcp`).
    batch_events: bool = True

    def new_session(self, role: Role, now: float) -> ConvergenceLayerSession:
        return mtcp.MtcpSession(role, self.config, batch_events=self.batch_events)

    def confirms_delivery(self, session: Any) -> bool:
        return False

    def refuse(self, session: Any, transfer_id: int, reason: Refusal) -> bool:
        return False

    def reject(self, session: Any, why: Rejection = Rejection.CONTACT_FAILURE) -> None:
        session.terminate()  # MTCP has no termination message: the connection just closes


@attrs.frozen(slots=True)
class LinkTimeouts:
    """Link-level bounds (the session's own timers come from its config)."""

    #: Whole establishment (contact headers, TLS handshake, SESS_INIT) must finish within this.
    establish: float = 30.0
    #: ``aclose``: the whole orderly close (SESS_TERM / SHUTDOWN, flush, TLS close_notify,
    #: the peer's EOF) is bounded by this; a peer that never answers (some TCPCLv3 agents
    #: never reply to SHUTDOWN) costs this long and no more.
    close: float = 1.0
    #: After the session ended: time to write what it still has to say.
    flush: float = 2.0
    #: After flushing: time to read the peer's remaining bytes up to its EOF.
    linger: float = 1.0
    #: Received bundles waiting for or inside ``accept`` before the reader stops reading.
    #: Large enough that one store commit (one fsync) can cover hundreds of small bundles.
    max_custody_backlog: int = 1024
    #: ... or bytes of them: the backlog's memory bound for large bundles.
    max_custody_bytes: int = 16 * 1024 * 1024
    #: ``accept`` calls running at once (with the incoming channel it is always 1: order).
    #: Each waits for its bundle's commit, so this many bundles can share one fsync.
    custody_workers: int = 128
    #: Capacity of the ``incoming`` channel when it is the custody.
    incoming_capacity: int = 16
    #: With ``accept_many``: bundles per call at most, and calls running at once (while one
    #: batch commits the next gathers, so the disk and the session work at the same time).
    custody_batch: int = 1024
    custody_batches: int = 4
    #: Largest single read and coalesced write (bytes).
    read_size: int = 256 * 1024
    write_batch: int = 1024 * 1024


# --- the link --------------------------------------------------------------------------


class _Pending:
    """The sends of one ``send`` / ``send_many`` call: each transfer's outcome by index."""

    __slots__ = ("done", "errors", "remaining")

    def __init__(self, count: int) -> None:
        self.done = trio.Event()
        self.errors: list[LinkDown | None] = [None] * count
        self.remaining = count

    def resolve(self, index: int, error: LinkDown | None) -> None:
        self.errors[index] = error
        self.remaining -= 1
        if not self.remaining:
            self.done.set()


class _CustodyQueue:
    """Received bundles waiting for custody, in arrival order, and the idle workers.

    Two deques (transfer ids, bundles) and a parking lot: cheaper per bundle than a memory
    channel or a tuple each, and a batch worker takes a run off both in C loops (``take``).
    Unbounded here because the reader stops reading at ``max_custody_backlog`` (see
    ``_custody_full``). Once closed, workers still take what is queued (its transfers are
    refused or fail with the session) and then end.
    """

    __slots__ = ("closed", "data", "lot", "tids")

    def __init__(self) -> None:
        self.tids: collections.deque[int] = collections.deque()
        self.data: collections.deque[bytes] = collections.deque()
        self.lot = trio.lowlevel.ParkingLot()
        self.closed = False

    def __len__(self) -> int:
        return len(self.tids)

    def put(self, item: tuple[int, bytes]) -> None:
        self.tids.append(item[0])
        self.data.append(item[1])
        if self.lot:
            self.lot.unpark()

    def put_many(self, tids: Sequence[int], data: Sequence[bytes]) -> None:
        if len(tids) != len(data):
            raise ValueError(f"{len(tids)} transfer ids for {len(data)} bundles")
        self.tids.extend(tids)
        self.data.extend(data)
        if self.lot:
            self.lot.unpark(count=len(tids))

    def close(self) -> None:
        self.closed = True
        self.lot.unpark_all()

    async def wait(self) -> bool:
        """Until a bundle waits (at once if one does): True; False once closed and empty."""
        while not self.tids:
            if self.closed:
                return False
            await self.lot.park()
        return True

    async def get(self) -> tuple[int, bytes] | None:
        """The oldest waiting bundle (at once if there is one), or None once closed and empty."""
        if not await self.wait():
            return None
        return self.tids.popleft(), self.data.popleft()

    def take(self, limit: int) -> tuple[list[int], list[bytes]]:
        """The oldest waiting bundles, up to ``limit`` (their ids and bytes), at once."""
        n = min(len(self.tids), limit)
        never = itertools.repeat((), n)
        taken = list(itertools.starmap(self.tids.popleft, never))
        never = itertools.repeat((), n)
        return taken, list(itertools.starmap(self.data.popleft, never))


class _PrefixedStream(trio.abc.Stream):
    """A stream that first yields bytes already read past the contact header (§4.4.3)."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            return out
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ClLink:
    """One convergence-layer session to one neighbour; open it with :func:`open_cl_link`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        layer: ConvergenceLayer,
        role: Role,
        *,
        local: int,
        peer: int | None,
        accept: Accept | None,
        timeouts: LinkTimeouts,
        budget: LinkBudget | None = None,
        peer_node_id: str | None = None,
        accept_many: AcceptMany | None = None,
    ) -> None:
        self._stream = stream
        self._layer = layer
        self.role = role
        self._local = local
        self._peer = peer
        self._expected_node_id = peer_node_id
        self._timeouts = timeouts
        self._session = layer.new_session(role, trio.current_time())
        self._confirms = True
        self.peer_node_id = ""
        self.established: SessionEstablished | None = None
        #: The peer's (or our) reason for ending, as text; set when the link goes down.
        self.down_reason = ""
        #: The peer's TCPCLv3 SHUTDOWN asked us to wait this long before reconnecting.
        self.reconnect_delay_s: int | None = None
        self.violations: list[ProtocolViolation] = []
        self.rejections: list[MessageRejected] = []
        self.bundles_received = 0
        self.bundles_sent = 0
        # Custody.
        self._accept = accept
        self._accept_many = accept_many
        self._in_send, self._in_recv = trio.open_memory_channel[bytes](timeouts.incoming_capacity)
        if accept is not None or accept_many is not None:
            self._in_send.close()
        if accept_many is not None:
            workers = timeouts.custody_batches
        elif accept is None:
            workers = 1
        else:
            workers = timeouts.custody_workers
        self._custody_workers = workers
        self._custody = _CustodyQueue()
        self._backlog = 0
        self._backlog_lot = trio.lowlevel.ParkingLot()
        # Budget: bytes held (reassembly + bundles waiting for custody) as last reported.
        self._budget = budget
        self._admitted = False
        self._custody_bytes = 0
        self._held = 0
        self._held_custody = 0
        if budget is not None:
            budget.holders.add(self)
        self._close_deadline = math.inf
        self._slot = -1
        # Sending.
        self._pending: dict[int, tuple[_Pending, int]] = {}
        self._unconfirmed: list[int] = []  # written-to-TCP completion for CLs without acks
        self._send_lock = trio.Lock()
        self._write_needed = trio.Event()
        self._timer_wake = trio.Event()
        self._timer_at = math.inf
        self._start_tls = False
        # Life.
        self._up = False
        self._was_up = False
        self._ending = False
        self._over = False
        self._up_event = trio.Event()
        self._down_event = trio.Event()
        self._over_event = trio.Event()
        self._writer_done = trio.Event()
        self._reader_done = trio.Event()
        self._finished = trio.Event()
        self._closing = False

    def __repr__(self) -> str:
        return f"<ClLink {self._layer.name} {self.role.value} peer={self.peer_node_id!r} up={self._up}>"

    # --- the Link surface ----------------------------------------------------------------

    @property
    def local(self) -> int:
        return self._local

    @property
    def peer(self) -> int:
        """The neighbour's node number: given by the caller, else from an ``ipn:`` node id, else -1."""
        if self._peer is not None:
            return self._peer
        match = _IPN.fullmatch(self.peer_node_id)
        return int(match.group(1)) if match else self._slot

    def use_slot(self, number: int) -> None:
        """Name a neighbour without an ``ipn`` node number (MTCP, a ``dtn:`` TCPCLv3 peer) by
        ``number`` (negative, unique per session), so that such neighbours do not share
        one place in a node's link table."""
        self._slot = number

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def confirms_delivery(self) -> bool:
        """True when ``send`` returns on the peer's acknowledgement of the whole bundle;
        False when it can only mean "written to TCP" (MTCP; TCPCLv3 without acks)."""
        return self._confirms

    @property
    def layer_name(self) -> str:
        return self._layer.name

    @property
    def incoming(self) -> trio.MemoryReceiveChannel[bytes]:
        return self._in_recv

    @property
    def session(self) -> ConvergenceLayerSession:
        """The sans-IO session (for inspection; drive it only through the link)."""
        return self._session

    @property
    def stream(self) -> trio.abc.Stream:
        """The stream in use (a ``trio.SSLStream`` once TLS is up)."""
        return self._stream

    async def wait_up(self) -> None:
        """Return once established; raise :class:`LinkDown` if this session is over (a link
        never comes back: the connector makes a new one)."""
        if not self._up:
            if self._ending or self._over:
                raise LinkDown(self.down_reason or "link is down")
            await self._up_event.wait()
            if not self._up:
                raise LinkDown(self.down_reason or "link is down")

    async def wait_down(self) -> None:
        await self._down_event.wait()

    async def wait_closed(self) -> None:
        """Return once the session is over and the stream closed."""
        await self._finished.wait()

    async def send(self, bundle: bytes) -> None:
        """Return once the peer acknowledged the whole bundle; :class:`LinkDown` otherwise."""
        if not self._up:
            raise LinkDown(self.down_reason or f"{self._layer.name} link is not up")
        (error,) = await self.send_many((bundle,))
        if error is not None:
            raise error

    async def send_many(self, bundles: Sequence[bytes]) -> list[LinkDown | None]:
        """Queue ``bundles`` in order (one transfer each) and return once every one was
        acknowledged or failed: ``None`` for an acknowledged bundle, else its
        :class:`LinkDown` (a refusal is :class:`TransferRefusedByPeer`).

        The batch form of :meth:`send` for a backlog: one wait for many transfers instead of
        a task and a wake-up per bundle, the transfers still acknowledged one by one.
        """
        pending = _Pending(len(bundles))
        tids: Sequence[int] = ()
        one_by_one: list[int] = []
        session = self._session
        send_bundles = getattr(session, "send_bundles", None)
        if send_bundles is not None and self._up and self._confirms and bundles:
            try:
                tids = send_bundles(bundles)  # checked as a whole, queued in order
            except LocalProtocolError:
                pass  # one of them cannot go: each is tried alone below, for its error
            else:
                places = zip(itertools.repeat(pending), range(len(tids)))  # (call, index)
                self._pending.update(zip(tids, places, strict=False))
                bundles = ()
        for index, bundle in enumerate(bundles):
            if not self._up:
                pending.resolve(
                    index, LinkDown(self.down_reason or f"{self._layer.name} link is not up")
                )
                continue
            try:
                tid = session.send_bundle(bundle)
            except LocalProtocolError as error:
                pending.resolve(
                    index, LinkDown(f"{self._layer.name} cannot take the bundle: {error}")
                )
                continue
            self._pending[tid] = (pending, index)
            one_by_one.append(tid)
            if not self._confirms:
                self._unconfirmed.append(tid)
        tids = tids or one_by_one
        if tids:
            self._poke_writer()
        try:
            if pending.remaining:
                await pending.done.wait()
            else:
                await trio.lowlevel.checkpoint()
        finally:
            for tid in tids:
                self._pending.pop(tid, None)
        errors = pending.errors
        self.bundles_sent += errors.count(None)
        return errors

    async def aclose(self) -> None:
        """Terminate cleanly (bounded by ``timeouts.close``), then close the stream."""
        if not self._closing:
            self._closing = True
            self._close_deadline = trio.current_time() + self._timeouts.close
            self._go_down("closed locally")
            if not self._over:
                try:
                    self._layer.terminate(self._session)
                except LocalProtocolError:
                    pass  # already ending
                self._pump()
                self._poke_writer()
            with trio.move_on_at(self._close_deadline):
                await self._over_event.wait()
            self._set_over("closed locally")
        await self._finished.wait()

    # --- running ---------------------------------------------------------------------------

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._timer)
                worker = (
                    self._custody_worker if self._accept_many is None else self._batch_worker
                )
                for _ in range(self._custody_workers):
                    nursery.start_soon(worker)
                self._tick()
                self._pump()  # a session may have something to say before any byte (MTCP)
                with trio.move_on_after(self._timeouts.establish):
                    await _first(self._up_event.wait, self._over_event.wait)
                if self._up:
                    task_status.started()
                    started = True
                    await self._over_event.wait()
                else:
                    self._set_over(self.down_reason or "session establishment timed out")
                await self._wind_down()
                nursery.cancel_scope.cancel()
        finally:
            self._set_over(self.down_reason or "link closed")
            self._release_budget()
            self._in_send.close()
            try:
                await trio.aclose_forcefully(self._stream)
            finally:
                self._finished.set()
        # Not started: never up, or up and refused at once (a peer rejecting our Node ID
        # right after SESS_INIT): either way no link for the caller.
        if not started:
            raise LinkDown(f"{self._layer.name} session not established: {self.down_reason}")

    async def _wind_down(self) -> None:
        """The session is over: flush its last words, half-close, read to the peer's EOF.

        Every wait here also ends at the close deadline, so a local close stays within
        :attr:`LinkTimeouts.close` however silent the peer is.
        """
        deadline = self._close_deadline
        with trio.move_on_at(min(trio.current_time() + self._timeouts.flush, deadline)):
            await self._writer_done.wait()
        if not self._writer_done.is_set():
            return
        stream = self._stream
        if isinstance(stream, trio.SSLStream):
            # TLS has no half-close: close_notify (RFC 8446 §6.1) tells the peer the
            # session's last bytes were all there is; trio sends it and does not wait.
            with trio.move_on_at(min(trio.current_time() + self._timeouts.linger, deadline)):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            return
        if isinstance(stream, trio.abc.HalfCloseableStream):
            try:
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            # The peer sees our EOF and closes too; until then its last bytes are read, so
            # closing does not turn unread data into a reset that could cut its last words.
            with trio.move_on_at(min(trio.current_time() + self._timeouts.linger, deadline)):
                await self._reader_done.wait()

    async def _reader(self) -> None:
        try:
            while True:
                while self._custody_full() and not self._over:
                    await self._backlog_lot.park()
                if self._budget is not None and self._budget.must_wait and not self._over:
                    await self._budget.wait_room()  # custody gives bytes back
                try:
                    data = await self._stream.receive_some(self._timeouts.read_size)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                    self._note_reason(f"stream broke: {error or type(error).__name__}")
                    data = b""
                if self._over:
                    if not data:
                        return  # lingering: the peer's EOF arrived
                    continue
                if not data:
                    self._note_reason("peer closed the connection")
                self._session.receive_data(data if isinstance(data, bytes) else bytes(data))
                self._tick()
                self._pump()
                if self._budget is not None:
                    self._account()
                if self._start_tls:
                    await self._switch_to_tls()
                if not data:
                    self._pump()
                    self._set_over(self.down_reason)
                    return
        finally:
            self._reader_done.set()

    def _custody_full(self) -> bool:
        timeouts = self._timeouts
        return (
            self._backlog >= timeouts.max_custody_backlog
            or self._custody_bytes >= timeouts.max_custody_bytes
        )

    async def _writer(self) -> None:
        try:
            while True:
                self._write_needed = trio.Event()
                async with self._send_lock:
                    await self._drain()
                if self._over:
                    return
                await self._write_needed.wait()
                # Let the tasks that are ready run first (custody workers acking, senders
                # queueing): their bytes then leave in one write instead of one each.
                await trio.lowlevel.cancel_shielded_checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._note_reason(f"stream broke while writing: {error or type(error).__name__}")
            self._set_over(self.down_reason)
        finally:
            self._writer_done.set()

    async def _drain(self) -> None:
        """Write everything the session has now; complete sends of CLs without acks."""
        session = self._session
        limit = self._timeouts.write_batch
        wrote = False
        while True:
            if self._start_tls:
                return  # the reader writes the clear-text tail itself, then switches
            written = list(self._unconfirmed)
            buf: bytes | bytearray = session.data_to_send()
            if not buf:
                if wrote:
                    self._tick()  # once per drain: the writes were activity (common contract)
                    self._pump()
                if not self._ending:  # a v3 SHUTDOWN drops unsent bundles silently: fail them
                    self._confirm_written(written)
                return
            if len(buf) < limit // 8:  # coalesce pieces; only very large ones go out alone
                batch = bytearray(buf)
                while len(batch) < limit and (more := session.data_to_send()):
                    batch += more
                buf = batch
            await self._stream.send_all(buf)
            wrote = True

    async def _timer(self) -> None:
        fired_at = -math.inf
        while not self._over:
            deadline = self._session.next_deadline()
            if deadline is not None and deadline <= fired_at:
                # A tick at this deadline did not move it (a keepalive waiting behind a
                # blocked write, say): wait a little instead of spinning.
                deadline = trio.current_time() + _TIMER_RETRY
            self._timer_at = math.inf if deadline is None else deadline
            self._timer_wake = trio.Event()
            with trio.move_on_at(self._timer_at) as waited:
                await self._timer_wake.wait()
            if waited.cancelled_caught:
                fired_at = self._timer_at
            self._tick()
            self._pump()
            self._poke_writer()

    def _account(self) -> None:
        """Report the bytes this link holds to the budget; over it, have it relieved."""
        budget = self._budget
        assert budget is not None
        self._report_held()
        if budget.receive_over:
            budget.relieve()

    def _report_held(self) -> None:
        budget = self._budget
        assert budget is not None
        held = getattr(self._session, "buffered", 0) + self._custody_bytes
        budget.hold(held - self._held, self._custody_bytes - self._held_custody)
        self._held, self._held_custody = held, self._custody_bytes

    @property
    def reassembling(self) -> int:
        """Bytes of the unfinished incoming transfer (what refusing it gives back)."""
        if self._ending or self._over:
            return 0
        size = getattr(self._session, "reassembly_size", None)
        return int(size if size is not None else getattr(self._session, "buffered", 0))

    def shed(self) -> bool:
        """The budget's request: give back the unfinished transfer's memory (see budgets)."""
        budget = self._budget
        assert budget is not None
        who = self.peer_node_id or "?"
        try:
            refused = self._layer.refuse_receiving(self._session)
        except LocalProtocolError:
            refused = False
        if refused:
            log.warning(
                "code=%s refused a transfer from %s (No Resources): %d received bytes held "
                "across sessions (max_receive_bytes %d)",
                BUDGET_EXCEEDED, who, budget.receive_bytes, budget.max_receive_bytes,
            )  # fmt: skip
        else:
            log.warning(
                "code=%s ending the session with %s: %d received bytes held across sessions "
                "(max_receive_bytes %d) and %s cannot refuse one transfer",
                BUDGET_EXCEEDED, who, budget.receive_bytes, budget.max_receive_bytes,
                self._layer.name,
            )  # fmt: skip
            self._note_reason("receive budget exceeded")
            try:
                self._layer.reject(self._session, Rejection.RESOURCE_EXHAUSTION)
            except LocalProtocolError:
                return False
        self._pump()
        self._report_held()
        return True

    def _release_budget(self) -> None:
        if self._budget is not None:
            self._budget.holders.discard(self)
            self._budget.hold(-self._held, -self._held_custody)
            self._held = self._held_custody = 0
            if self._admitted:
                self._admitted = False
                self._budget.session_done()

    async def _custody_worker(self) -> None:
        queue = self._custody
        while (item := await queue.get()) is not None:
            try:
                await self._take_custody(*item)
            finally:
                self._backlog -= 1
                self._backlog_lot.unpark_all()
                self._custody_bytes -= len(item[1])
                if self._budget is not None and not self._over:
                    self._account()

    async def _batch_worker(self) -> None:
        """With ``accept_many``: everything queued (up to ``custody_batch``) in one call."""
        queue = self._custody
        limit = self._timeouts.custody_batch
        while await queue.wait():
            tids, bundles = queue.take(limit)
            try:
                await self._take_custody_many(tids, bundles)
            finally:
                self._backlog -= len(tids)
                self._backlog_lot.unpark_all()
                self._custody_bytes -= sum(map(len, bundles))
                if self._budget is not None and not self._over:
                    self._account()

    async def _take_custody_many(self, tids: Sequence[int], bundles: Sequence[bytes]) -> None:
        accept_many = self._accept_many
        assert accept_many is not None
        try:
            outcomes = await accept_many(list(bundles), self)
            if len(outcomes) != len(tids):
                raise ValueError(
                    f"accept_many answered {len(outcomes)} outcomes for {len(tids)} bundles"
                )
        except BaseException:
            for tid in tids:
                self._refuse(tid, Refusal.NO_RESOURCES)
            raise
        session = self._session
        ack_many = getattr(session, "ack_many", None)
        if ack_many is not None and not any(outcomes):  # all taken: the common case
            self.bundles_received += len(tids)
            try:
                ack_many(tids)  # leave in receive order
            except LocalProtocolError:
                return  # the session ended meanwhile: nothing to ack on
            if self._ending:
                self._pump()
            self._poke_writer()
            return
        for tid, outcome in zip(tids, outcomes, strict=True):
            if outcome is not None:
                self._refuse(tid, outcome)
                continue
            self.bundles_received += 1
            try:
                session.ack(tid)  # leaves in receive order (the session keeps it)
            except LocalProtocolError:
                return  # the session ended meanwhile: nothing to ack on
        if self._ending:
            self._pump()
        self._poke_writer()

    async def _take_custody(self, tid: int, data: bytes) -> None:
        try:
            if self._accept is None:
                try:
                    await self._in_send.send(data)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    raise CustodyRefused(Refusal.NO_RESOURCES, "incoming channel closed") from None
            else:
                await self._accept(data, self)
        except CustodyRefused as refusal:
            self._refuse(tid, refusal.reason)
            return
        except BaseException:
            self._refuse(tid, Refusal.NO_RESOURCES)
            raise
        self.bundles_received += 1
        try:
            self._session.ack(tid)
        except LocalProtocolError:
            return  # the session ended meanwhile: nothing to ack on
        if self._ending:
            self._pump()  # the last ack of an ending session may close it (§6.1)
        self._poke_writer()

    def _refuse(self, tid: int, reason: Refusal) -> None:
        if self._over:
            return
        try:
            refused = self._layer.refuse(self._session, tid, reason)
        except LocalProtocolError:
            refused = False
        if not refused:
            self._note_reason(f"custody refused ({reason.value}) on a session that cannot refuse")
            try:
                self._layer.terminate(self._session)
            except LocalProtocolError:
                pass
        self._pump()
        self._poke_writer()

    async def _switch_to_tls(self) -> None:
        """RFC 9174 §4.4: clear-text tail out, then the handshake on the same connection."""
        session: Any = self._session
        role = self.role
        context = self._layer.tls_context(role)
        async with self._send_lock:
            self._start_tls = False
            while data := session.data_to_send():
                await self._stream.send_all(data)
            if context is None:
                self._note_reason("TLS negotiated but no TLS context configured")
                self._set_over(self.down_reason)
                return
            prefixed = _PrefixedStream(self._stream, session.take_trailing_data())
            tls = trio.SSLStream(
                prefixed,
                context,
                server_side=role is Role.PASSIVE,
                server_hostname=self._layer.server_hostname if role is Role.ACTIVE else None,
            )
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as error:
                self._note_reason(f"TLS handshake failed: {error.__cause__ or error}")
                self._set_over(self.down_reason)
                return
            self._stream = tls
            session.tls_established()
        self._tick()
        self._pump()
        self._poke_writer()

    # --- the pump: session events to link state -----------------------------------------------

    def _tick(self) -> None:
        self._session.tick(trio.current_time())
        self._rearm()

    def _rearm(self) -> None:
        """Wake the timer if the session's next deadline moved earlier than it sleeps."""
        deadline = self._session.next_deadline()
        if deadline is not None and deadline < self._timer_at:
            self._timer_wake.set()

    def _poke_writer(self) -> None:
        self._write_needed.set()

    def _pump(self) -> None:
        session = self._session
        while not self._over:
            event = session.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, type(NEED_DATA))
            self._on_event(event)
        self._rearm()  # parsing (say, SESS_INIT) can start timers
        self._poke_writer()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, BundlesReceived):
            tids, data = event.transfer_ids, event.data
            self._backlog += len(tids)
            self._custody_bytes += sum(map(len, data))
            self._custody.put_many(tids, data)
        elif isinstance(event, TransfersAcked):
            pending = self._pending
            for tid in event.transfer_ids:
                entry = pending.pop(tid, None)
                if entry is not None:  # _Pending.resolve(index, None), inline: per bundle
                    sends = entry[0]
                    sends.remaining -= 1
                    if not sends.remaining:
                        sends.done.set()
        elif isinstance(event, BundleReceived):
            self._backlog += 1
            self._custody_bytes += len(event.data)
            self._custody.put((event.transfer_id, event.data))
        elif isinstance(event, TransferAcked):
            if event.complete:
                self._resolve(event.transfer_id, None)
        elif isinstance(event, TransferStarted):
            pass  # every transfer says so; only its end (received, failed) matters here
        elif isinstance(event, TransferRefused):
            # Always one of ours (common.py): refused by the peer, or dropped unstarted
            # because the session is ending (RFC 9174 §6.1, RFC 7242 §6.1).
            self._resolve(
                event.transfer_id,
                TransferRefusedByPeer(
                    f"peer refused transfer {event.transfer_id} ({_reason_name(event.reason)})",
                    event.reason,
                )
                if event.by_peer
                else LinkDown(self._why(f"session ended before transfer {event.transfer_id}")),
            )
        elif isinstance(event, TransferFailed):
            if event.outgoing:
                self._resolve(
                    event.transfer_id, LinkDown(self._why("connection closed mid-transfer"))
                )
        elif isinstance(event, SessionEstablished):
            self.established = event
            self.peer_node_id = event.peer_node_id
            self._confirms = self._layer.confirms_delivery(self._session)
            why = Rejection.CONTACT_FAILURE
            problem = self._layer.check_peer(self._stream, event) or self._identity_problem()
            if not problem and self._budget is not None:
                if self._budget.admit_session(self.peer_node_id):
                    self._admitted = True
                else:
                    why = Rejection.RESOURCE_EXHAUSTION
                    problem = f"too many sessions (max_sessions {self._budget.max_sessions})"
            if problem:
                self._note_reason(problem)
                try:
                    self._layer.reject(self._session, why)
                except LocalProtocolError:
                    pass
                self._go_down(problem)
            elif not self._ending:
                self._up = True
                self._was_up = True
                self._up_event.set()
        elif isinstance(event, SessionTerminated):
            who = "peer" if event.by_peer else "we"
            self._note_reason(f"{who} terminated the session ({_reason_name(event.reason)})")
            delay = getattr(event, "reconnect_delay_s", None)
            if event.by_peer and delay is not None:
                self.reconnect_delay_s = delay
            self._go_down(self.down_reason)
        elif isinstance(event, StartTls):
            self._start_tls = True
        elif isinstance(event, ProtocolViolation):
            self.violations.append(event)
            self._note_reason(f"protocol violation: {event.error}")
        elif isinstance(event, MessageRejected):
            self.rejections.append(event)
        elif isinstance(event, ConnectionClosed):
            self._note_reason("session closed" if event.clean else "session aborted")
            self._set_over(self.down_reason)

    def _identity_problem(self) -> str:
        """A dialled neighbour must announce the node id it was configured as (module doc)."""
        expected = self._expected_node_id
        if self.role is not Role.ACTIVE or not self._layer.identifies_peer:
            return ""
        if expected is None and self._peer is None:
            return ""
        announced = self.peer_node_id
        if expected is not None:  # a configured node id (a dtn: agent, say): exactly that
            if announced == expected:
                return ""
        else:
            match = _IPN.fullmatch(announced)
            if match and int(match.group(1)) == self._peer:
                return ""
            expected = f"ipn:{self._peer}.0"
        problem = (
            f"peer configured as {expected} announced "
            f"{announced or 'no node id'!s}: refused (Contact Failure)"
        )
        log.warning("%s: %s", self._layer.name, problem)
        return problem

    def _note_reason(self, reason: str) -> None:
        if not self.down_reason:
            self.down_reason = reason

    def _why(self, what: str) -> str:
        return f"{what}: {self.down_reason}" if self.down_reason else what

    def _resolve(self, tid: int, error: LinkDown | None) -> None:
        entry = self._pending.pop(tid, None)
        if entry is not None:
            entry[0].resolve(entry[1], error)

    def _confirm_written(self, tids: list[int]) -> None:
        """All bytes of ``tids`` are in the stream: that is all MTCP-like layers can confirm."""
        if tids:
            done = set(tids)
            self._unconfirmed = [t for t in self._unconfirmed if t not in done]
            for tid in tids:
                self._resolve(tid, None)

    def _go_down(self, reason: str) -> None:
        self._note_reason(reason)
        self._ending = True
        self._up = False
        self._down_event.set()
        self._up_event.set()  # wake waiters so they see it is down

    def _set_over(self, reason: str) -> None:
        if self._over:
            return
        self._go_down(reason)
        self._over = True
        error_text = self._why("link down")
        for tid in list(self._pending):
            self._resolve(tid, LinkDown(error_text))
        self._custody.close()
        self._backlog_lot.unpark_all()
        self._over_event.set()
        self._write_needed.set()
        self._timer_wake.set()


def _reason_name(code: int) -> str:
    return getattr(code, "name", str(code))


async def _first(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return when the first of ``waits`` returns."""
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)


@asynccontextmanager
async def open_cl_link(
    stream: trio.abc.Stream,
    layer: ConvergenceLayer,
    *,
    role: Role,
    local: int = 0,
    peer: int | None = None,
    accept: Accept | None = None,
    timeouts: LinkTimeouts | None = None,
    budget: LinkBudget | None = None,
    peer_node_id: str | None = None,
    accept_many: AcceptMany | None = None,
) -> AsyncIterator[ClLink]:
    """Run a convergence-layer session over ``stream``; yield the link once it is established.

    ``accept_many`` (instead of ``accept``) takes custody of the queued bundles in batches;
    each is acknowledged once the call returned ``None`` for it (module doc).
    Raises :class:`LinkDown` if the session does not come up within ``timeouts.establish``.
    Leaving the block closes the link cleanly (bounded by ``timeouts.close``). The link owns
    ``stream`` from here on and closes it.
    """
    link = ClLink(
        stream,
        layer,
        role,
        local=local,
        peer=peer,
        accept=accept,
        timeouts=timeouts or LinkTimeouts(),
        budget=budget,
        peer_node_id=peer_node_id,
        accept_many=accept_many,
    )
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(link._run)
        except LinkDown as error:
            body_error = error  # raised below, outside the nursery: not grouped
        else:
            try:
                yield link
            except BaseException as error:  # likewise
                body_error = error
            finally:
                with trio.CancelScope(shield=True):
                    await link.aclose()
    if body_error is not None:
        raise body_error
