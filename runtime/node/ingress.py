"""Custody first: runs from accepted sessions held durably, adopted into the agent afterwards.

Theory of operation
-------------------
A cell hands its region a backlog of small bundles through a contact window of minutes; the
window is the scarce resource, routing can follow (store and forward). So for a run of bundles
from an accepted TCPCL session (:meth:`~.node.Node.accept_many`) the node does only what
custody needs before the link acknowledges:

1. **check** each bundle cheaply: the C walk of the common shape
   (:mod:`fleetwire.protocol.bpv7.accel`: structure, CRCs, the RFC 9171 §4 rules). A bundle it
   cannot judge, or that fails, takes the full path (the agent, at once), so every refusal —
   malformed, store full — is exactly the agent's, as without the ingress;
2. **hold** the rest durably: one insert per run into the store's ingress
   (:mod:`fleetwire.runtime.store.ingress`), committed before ``accept_many`` returns — the
   link acknowledges only after that commit (accepted means durable);
3. **adopt** later (:meth:`Ingress.run`): ``agent.receive`` for each bundle as before, then the
   agent's own journal commit, then the ingress rows are deleted — in that order, so a crash
   in between leaves rows that are fed again after the restart, and the agent's dedupe
   answers them "duplicate" (harmless).

Bounds: the ingress holds at most ``ingress_max_bundles`` / ``ingress_max_bytes``
(:class:`~.node.NodeConfig`) and counts against the store quota (what the agent holds plus
what waits here, per neighbour too when the quota has a source share). A run that does not
fit the ingress's bound takes the full path; one the quota has no room for waits until the
ingress is adopted (so the agent's check counts it) and then takes the full path, which
refuses with the store-full refusal when the store is full. The agent's store counts what waits here against
the quota on every path (the node's own messages, dialled sessions:
``JournalledAgentStore.waiting``), so adoption finds room for it. A bundle the agent refuses
at adoption all the same (a row damaged on disk, a quota lowered across a restart) is dropped
with a warning: nothing leaves the ingress without a log line. At start, rows left by the previous
run are adopted first, before anything new (they are queued first).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio
from fleetwire.protocol.bpv7 import BUNDLE_LIMITS, Bundle
from fleetwire.protocol.bpv7 import accel as _accel

from ..store.ingress import IngressRun

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("fleetwire.node")

#: Bundles adopted per agent commit at most: enough to share one commit, few enough that the
#: links' acks are not held up for long by the agent's work (~60 us a bundle).
ADOPT_BATCH = 128
#: While a link delivered into the ingress this recently (s), adoption waits (see ``run``).
LINKS_FIRST_S = 0.01
#: Rows read per query when adopting what a previous run left.
_LOAD_PAGE = 1024


def _name(peer: int) -> str:
    """A neighbour as the agent's records name it (``bundling.stored``'s ``received_from``)."""
    return f"ipn:{peer}.0"


class Room(enum.Enum):
    """Where a run goes (:meth:`Ingress.room`)."""

    INGRESS = "ingress"
    AGENT = "agent"  # the ingress is full; the quota has room for this run
    DRAIN = "drain"  # the quota is near: adopt what the ingress holds, then the agent


class IngressStore(Protocol):
    """What a runtime store offers for the ingress (both stores have it)."""

    async def ingress_put(self, bundles: Sequence[bytes], received_from: int | None) -> int: ...

    async def ingress_runs(self, after: int, limit: int) -> list[IngressRun]: ...

    async def ingress_delete(self, seqs: Sequence[int]) -> None: ...


_SPEC: list[tuple[Any, ...] | None] = []


def _walk_spec() -> tuple[Any, ...] | None:
    if not _SPEC:
        limits = BUNDLE_LIMITS
        _SPEC.append(_accel.spec_for(Bundle, limits.max_container_items, limits.max_string_length))
    return _SPEC[0]


def well_formed(data: bytes) -> bool:
    """Whether the C walk vouches for ``data`` (a bundle the agent will not call malformed);
    ``False`` also when it cannot judge (no accelerator, an uncommon shape)."""
    walk = _accel.walk
    if walk is None or type(data) is not bytes or len(data) > BUNDLE_LIMITS.max_size:
        return False
    if not data or data[0] != 0x9F:
        return False
    spec = _walk_spec()
    if spec is None:
        return False
    try:
        return walk(spec, data) is not None
    except Exception:  # the walk answers None for what it cannot read; be safe anyway
        return False


class Ingress:
    """A node's ingress (module docstring); made by the node when its store has one."""

    def __init__(self, node: Node, store: IngressStore, max_bundles: int, max_bytes: int) -> None:
        self._node = node
        self._store = store
        self.max_bundles = max_bundles
        self.max_bytes = max_bytes
        self._queue: deque[IngressRun] = deque()
        #: What waits to be adopted: (bundles, bytes), in all and per neighbour.
        self.held_bundles = 0
        self.held_bytes = 0
        #: By neighbour as the agent's records name it (``received_from``: ``ipn:<node>.0``).
        self._held_from: dict[str, tuple[int, int]] = {}
        self._last_delivery = -1e9  # when a run last arrived or was made durable
        self._putting = 0  # runs being written now (a link waiting for its commit)
        self._work = trio.Event()
        self._lock = trio.Lock()  # one adoption at a time (the task, or a drain)
        self._settled = trio.Event()
        self._settled.set()
        #: Bundles held here so far, and adopted so far (counters for reports and tests).
        self.received = 0
        self.adopted = 0
        self.dropped = 0

    # --- the links' side -------------------------------------------------------------------

    def room(self, bundles: int, size: int, peer: int | None) -> Room:
        """Where a run of ``bundles`` (``size`` bytes) from ``peer`` goes: the ingress if it is
        within its bound and, with what the agent holds and what waits here, within the store
        quota (so adoption does not find the store full); the agent at once if only the
        ingress is full; the agent after a drain if the quota is near (its check must see
        what waits here)."""
        if not self._within_quota(bundles, size, peer):
            return Room.DRAIN
        if (
            self.held_bundles + bundles > self.max_bundles
            or self.held_bytes + size > self.max_bytes
        ):
            return Room.AGENT
        return Room.INGRESS

    def _within_quota(self, bundles: int, size: int, peer: int | None) -> bool:
        agent_store = self._node._agent_store
        quota = agent_store.quota
        if quota is None:
            return True
        source = None
        if peer is not None:
            name = _name(peer)
            held_bundles, held_bytes = agent_store.held_from(name)
            waiting_bundles, waiting_bytes = self._held_from.get(name, (0, 0))
            source = (held_bundles + waiting_bundles + bundles, held_bytes + waiting_bytes + size)
        return quota.admits(
            agent_store.count() + self.held_bundles + bundles,
            agent_store.bytes_used() + self.held_bytes + size,
            source,
        )

    async def put(self, bundles: Sequence[bytes], peer: int | None) -> None:
        """Hold ``bundles`` durably (one row); the caller asked :meth:`room` just before,
        without awaiting in between (the room is taken here, before the write's await)."""
        size = sum(map(len, bundles))
        self._count(peer, len(bundles), size)
        self._settled = trio.Event() if self._settled.is_set() else self._settled
        self._putting += 1
        self._last_delivery = trio.current_time()
        try:
            seq = await self._store.ingress_put(bundles, peer)
        except BaseException:
            self._count(peer, -len(bundles), -size)  # not held: the link does not ack it
            self._check_settled()
            raise
        finally:
            self._putting -= 1
        self._queue.append(IngressRun(seq, peer, tuple(bundles)))
        self.received += len(bundles)
        self._last_delivery = trio.current_time()
        self._work.set()

    async def drain(self) -> None:
        """Adopt everything held (a run the quota has no room for goes the full path after
        this, so the agent's quota check sees what the ingress held), runs still being written
        included: once they are durable they are queued, and adopted here too."""
        while self.held_bundles:
            if self._queue:
                await self._adopt_batch()
            else:
                await trio.sleep(0.001)  # a run being written: durable within one commit

    async def wait_settled(self) -> None:
        """Return once nothing waits in the ingress (everything held was adopted)."""
        while not self._settled.is_set():
            await self._settled.wait()

    # --- adoption ----------------------------------------------------------------------------

    async def load(self) -> None:
        """Queue the rows a previous run left (before anything new: called at start)."""
        after, runs, bundles = 0, 0, 0
        while True:
            page = await self._store.ingress_runs(after, _LOAD_PAGE)
            for run in page:
                self._queue.append(run)
                self._count(run.received_from, len(run.bundles), run.size)
                runs, bundles = runs + 1, bundles + len(run.bundles)
            if len(page) < _LOAD_PAGE:
                break
            after = page[-1].seq
        if runs:
            self._settled = trio.Event()
            self._work.set()
            log.warning("node=%s event=ingress-restart runs=%d bundles=%d (received before the "
                        "restart, adopted now)", self._node.node, runs, bundles)  # fmt: skip

    async def run(self) -> None:
        """Adopt what the ingress holds, in batches, until cancelled."""
        while True:
            if not self._queue:
                self._check_settled()
                await self._work.wait()
                self._work = trio.Event()
                continue
            # Links first: while a session is still delivering (a run being written, or one
            # within the last few ms) and the ingress has room, the event loop is theirs —
            # parse, dedupe and route cost ~60 us a bundle here, and every one of those spent
            # during the contact is a bundle not received. Once the links pause, or the
            # ingress is half full (it must not fill and push runs to the slow path),
            # adoption goes on.
            now = trio.current_time()
            quiet_at = max(self._last_delivery, now if self._putting else -1e9) + LINKS_FIRST_S
            if (
                now < quiet_at
                and self.held_bundles < self.max_bundles // 2
                and self.held_bytes < self.max_bytes // 2
            ):
                await trio.sleep_until(quiet_at)
                continue
            await self._adopt_batch()

    async def _adopt_batch(self) -> None:
        # Shielded: a drain runs in a link's task, which its session's end may cancel; runs
        # taken off the queue must reach the agent and leave the ingress together, or they
        # would wait in the table (not lost, but not adopted) until the next start.
        with trio.CancelScope(shield=True):
            await self._adopt_batch_shielded()

    async def _adopt_batch_shielded(self) -> None:
        async with self._lock:
            runs: list[IngressRun] = []
            bundles = 0
            while self._queue and bundles < ADOPT_BATCH:
                run = self._queue.popleft()
                runs.append(run)
                bundles += len(run.bundles)
            if not runs:
                return
            node = self._node
            taken = []
            for run in runs:
                # Out of the ingress's count as the agent takes them (its store counts them).
                self._count(run.received_from, -len(run.bundles), -run.size)
                if not run.bundles:
                    self.dropped += 1
                    log.warning("node=%s event=ingress-dropped row=%d reason=damaged row "
                                "(its lengths do not match its data)", node.node, run.seq)  # fmt: skip
                for data in run.bundles:
                    one = node._take(data, run.received_from)
                    if isinstance(one, Exception):  # a BundleRefused
                        self.dropped += 1
                        log.warning("node=%s event=ingress-dropped from=%s reason=%s (acknowledged "
                                    "to the neighbour; the agent refused it at adoption)",
                                    node.node, run.received_from, one)  # fmt: skip
                    else:
                        self.adopted += 1
                    taken.append((one, run.received_from))
            # The agent's writes first, then the rows go: a crash between feeds them again.
            await node._agent_store.commit()
            await self._store.ingress_delete([run.seq for run in runs])
            for one, peer in taken:
                node._log_taken(one, peer)
        self._check_settled()

    def waiting(self, neighbour: str | None) -> tuple[int, int, int, int]:
        """What waits here, in all and from ``neighbour`` (the agent store counts it against
        the quota: :attr:`~fleetwire.runtime.store.agent_store.JournalledAgentStore.waiting`)."""
        from_bundles, from_bytes = (0, 0) if neighbour is None else self._held_from.get(
            neighbour, (0, 0)
        )  # fmt: skip
        return self.held_bundles, self.held_bytes, from_bundles, from_bytes

    def _count(self, peer: int | None, bundles: int, size: int) -> None:
        self.held_bundles += bundles
        self.held_bytes += size
        if peer is not None:
            name = _name(peer)
            count, used = self._held_from.get(name, (0, 0))
            count, used = count + bundles, used + size
            if count <= 0:
                self._held_from.pop(name, None)
            else:
                self._held_from[name] = (count, used)

    def _check_settled(self) -> None:
        if not self._queue and self.held_bundles == 0 and not self._lock.locked():
            self._settled.set()
