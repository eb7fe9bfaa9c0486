"""Simulated links between in-process nodes: light time, bandwidth, loss, duplication,
reordering and contact windows, driven by Trio time (so ``MockClock`` runs days in seconds).

Theory of operation
-------------------
A :class:`LoopbackNetwork` is built from a :class:`~fleetwire.protocol.agent.contacts.ContactPlan`.
For every pair of nodes with a contact in either direction it makes two link ends
(:class:`LoopbackLink`), one per node; each implements :class:`~fleetwire.runtime.links.link.Link`.
The end at ``a`` toward ``b`` sends on the contacts ``a -> b`` and receives what ``b`` sent.

Sending (``a -> b``), for a bundle of ``n`` bytes:

1. The link is up while a contact ``a -> b`` is open (overlapping or touching contacts form one
   window). Sending while it is down raises :class:`LinkDown` at once: the store keeps the
   bundle and the router tries again later.
2. Transfers queue behind each other: the transmitter is busy ``n * 8 / rate_bps`` seconds per
   bundle (the rate of the contact open when the transfer starts). ``send`` returns when the
   last bit has left. If the window closes before that, ``send`` raises :class:`LinkDown` at
   the close and nothing is delivered (a partial bundle is useless without reactive
   fragmentation, which we do not model). Cancelling a ``send`` abandons its transfer the
   same way: nothing is delivered, and the transmitter time it had taken stays spent.
3. Once sent, the medium decides: the bundle is lost with probability ``loss``, otherwise it
   is delivered ``owlt_ms`` later plus a uniform extra delay in ``[0, jitter_ms]`` (which is
   what reorders bundles sent close together), and with probability ``duplicate`` a second
   copy follows with its own extra delay.
4. **Bundles in flight when the window closes still arrive**: they left the antenna already
   and light does not care about schedules. (A model where closing drops them would make the
   simulated medium lossier than the plan says; loss is a separate, explicit knob.)

Scale: the whole network has one scheduler task (:meth:`LoopbackNetwork.run`) with one heap of
pending deliveries and wake-ups; a link end costs a few attributes and (lazily) a memory
channel, and no task. Waiting for a window (``wait_up``/``wait_down``) schedules a single
wake-up in the heap only when somebody waits. For many nodes, :meth:`LoopbackNetwork.open_inbox`
gives one ``(peer, bundle)`` channel per node instead of one channel per link.

Determinism: every random draw comes from a counter-based generator (SplitMix64) keyed by a
seed taken from the ``random.Random`` passed in, the link direction and the per-direction
send counter, and heap order is ``(time, from, to, counter)``. So a run does not depend on the
order in which Trio happens to schedule tasks that wake at the same instant.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterable
from typing import Any

import attrs
import trio
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan

from .link import LinkDown

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One SplitMix64 output for state ``x`` (Steele, Lea, Flood 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _uniform(seed: int, counter: int, lane: int) -> float:
    """A float in [0, 1) for draw ``lane`` of send ``counter`` on a seeded direction."""
    return _splitmix64(seed ^ (((counter * 4 + lane) * 0xD1B54A32D192ED03) & _MASK64)) / 2.0**64


def _merged_windows(contacts: Iterable[Contact], clock: Clock) -> list[_Window]:
    windows: list[_Window] = []
    for c in sorted(contacts, key=Contact.sort_key):
        start, end = clock.to_trio(c.start), clock.to_trio(c.end)
        if windows and start <= windows[-1].end:
            last = windows[-1]
            last.end = max(last.end, end)
            last.contacts.append((start, end, c))
        else:
            windows.append(_Window(start, end, [(start, end, c)]))
    return windows


@attrs.define(slots=True)
class _Window:
    """Trio-time interval during which a direction is up, and the contacts making it."""

    start: float
    end: float
    contacts: list[tuple[float, float, Contact]]

    def contact_at(self, t: float) -> Contact:
        for start, end, c in self.contacts:
            if start <= t < end:
                return c
        raise AssertionError("time outside its window")  # merged windows have no gaps


@attrs.frozen(slots=True)
class LinkModel:
    """What the medium does to bundles that were sent (see the module docstring)."""

    loss: float = attrs.field(
        default=0.0,
        validator=attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(1.0)),
    )
    duplicate: float = attrs.field(
        default=0.0,
        validator=attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(1.0)),
    )
    jitter_ms: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))


@attrs.define(slots=True)
class NetworkStats:
    sent: int = 0  # transfers completed by ``send``
    lost: int = 0
    duplicated: int = 0
    delivered: int = 0  # copies handed to a receiving end
    dropped_closed: int = 0  # copies that reached a closed end


_DELIVER = 0  # payload: the bundle (a, b) carries
_WAKE = 1  # payload: a link whose waiters re-check their window
_RESUME = 2  # payload: [task] parked by _sleep_until ([None] once cancelled)


class LoopbackLink:
    """The end at ``local`` of the simulated link to ``peer`` (a :class:`Link`)."""

    __slots__ = (
        "_busy_until",
        "_closed",
        "_counter",
        "_down_event",
        "_inbox",
        "_net",
        "_outbox",
        "_seed",
        "_starts",
        "_up_event",
        "_windows",
        "local",
        "peer",
    )

    def __init__(
        self, net: LoopbackNetwork, local: int, peer: int, windows: list[_Window], seed: int
    ) -> None:
        self._net = net
        self.local = local
        self.peer = peer
        self._windows = windows
        self._starts = [w.start for w in windows]
        self._seed = seed
        self._counter = 0
        self._busy_until = -math.inf
        self._closed = False
        self._inbox: trio.MemoryReceiveChannel[bytes] | None = None
        self._outbox: trio.MemorySendChannel[bytes] | None = None
        self._up_event: trio.Event | None = None
        self._down_event: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<LoopbackLink {self.local}->{self.peer} up={self.is_up}>"

    # --- state ----------------------------------------------------------------------------

    def _window_at(self, t: float) -> _Window | None:
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and t < self._windows[i].end:
            return self._windows[i]
        return None

    def _next_window(self, t: float) -> _Window | None:
        i = bisect.bisect_right(self._starts, t)
        return self._windows[i] if i < len(self._windows) else None

    @property
    def is_up(self) -> bool:
        return not self._closed and self._window_at(trio.current_time()) is not None

    async def wait_up(self) -> None:
        while not self.is_up:
            if self._closed:
                raise LinkDown(f"link {self.local}->{self.peer} is closed")
            window = self._next_window(trio.current_time())
            if window is None:
                await trio.sleep_forever()  # no window will ever open
            if self._up_event is None:
                self._up_event = trio.Event()
                self._net._push_wake(window.start, self)
            await self._up_event.wait()

    async def wait_down(self) -> None:
        while self.is_up:
            window = self._window_at(trio.current_time())
            assert window is not None
            if self._down_event is None:
                self._down_event = trio.Event()
                self._net._push_wake(window.end, self)
            await self._down_event.wait()

    def _wake(self) -> None:
        """Called by the scheduler at a window boundary somebody waits for."""
        for name in ("_up_event", "_down_event"):
            event = getattr(self, name)
            if event is not None:
                setattr(self, name, None)
                event.set()  # waiters re-check the state and re-arm if needed

    # --- data -----------------------------------------------------------------------------

    @property
    def incoming(self) -> trio.MemoryReceiveChannel[bytes]:
        self._ensure_channel()
        assert self._inbox is not None
        return self._inbox

    def _ensure_channel(self) -> None:
        if self._inbox is None:
            self._outbox, self._inbox = trio.open_memory_channel[bytes](math.inf)
            if self._closed:
                self._outbox.close()

    async def send(self, bundle: bytes) -> None:
        if self._closed:
            raise LinkDown(f"link {self.local}->{self.peer} is closed")
        now = trio.current_time()
        window = self._window_at(now)
        if window is None:
            raise LinkDown(f"no contact {self.local}->{self.peer} is open")
        begin = max(now, self._busy_until)
        if begin >= window.end:  # the queue ahead of us fills the rest of the window
            await self._net._sleep_until(window.end)
            raise LinkDown(f"contact {self.local}->{self.peer} closed before the transfer began")
        contact = window.contact_at(begin)
        done = begin + len(bundle) * 8 / contact.rate_bps
        if done > window.end:
            self._busy_until = max(begin, window.end)
            await self._net._sleep_until(window.end)
            raise LinkDown(f"contact {self.local}->{self.peer} closed during the transfer")
        self._busy_until = done
        await self._net._sleep_until(done)
        self._net._transmit(self, bundle, done, contact.owlt_ms)

    def _deliver(self, bundle: bytes) -> bool:
        """A copy from the peer reaches this end; False if the end is closed."""
        if self._closed:
            return False
        inbox = self._net._inboxes.get(self.local)
        if inbox is not None:
            inbox.send_nowait((self.peer, bundle))
            return True
        self._ensure_channel()
        assert self._outbox is not None
        self._outbox.send_nowait(bundle)
        return True

    async def aclose(self) -> None:
        self._closed = True
        if self._outbox is not None:
            self._outbox.close()
        self._wake()
        await trio.lowlevel.checkpoint()


class LoopbackNetwork:
    """All simulated links of one process, built from a contact plan (a snapshot of it).

    Start :meth:`run` in a nursery: the scheduler it runs times transfers, deliveries and
    window wake-ups, so sends and waits block until it runs.
    """

    def __init__(
        self,
        plan: ContactPlan,
        clock: Clock,
        rng: random.Random,
        model: LinkModel | None = None,
    ) -> None:
        self.clock = clock
        self.model = model or LinkModel()
        self.stats = NetworkStats()
        self._heap: list[tuple[float, int, int, int, int, Any]] = []
        self._sleep: trio.CancelScope | None = None
        self._wake_seq = itertools.count(1)  # negative seqs: wake-ups never tie with bundles
        self._inboxes: dict[int, trio.MemorySendChannel[tuple[int, bytes]]] = {}
        self._links: dict[tuple[int, int], LoopbackLink] = {}
        self._by_node: dict[int, dict[int, LoopbackLink]] = {}
        pairs: dict[tuple[int, int], list[Contact]] = {}
        for c in plan:
            pairs.setdefault((c.from_node, c.to_node), []).append(c)
        ends = sorted({*pairs, *((b, a) for a, b in pairs)})
        for a, b in ends:
            link = LoopbackLink(
                self, a, b, _merged_windows(pairs.get((a, b), ()), clock), rng.getrandbits(64)
            )
            self._links[a, b] = link
            self._by_node.setdefault(a, {})[b] = link

    def link(self, local: int, peer: int) -> LoopbackLink:
        """The end at ``local`` of the link to ``peer`` (KeyError if the plan has none)."""
        return self._links[local, peer]

    def links_of(self, node: int) -> dict[int, LoopbackLink]:
        """``{peer: link}`` for every neighbour of ``node``."""
        return dict(self._by_node.get(node, {}))

    def open_inbox(self, node: int) -> trio.MemoryReceiveChannel[tuple[int, bytes]]:
        """One channel of ``(peer, bundle)`` for everything ``node`` receives from now on.

        Links of ``node`` stop feeding their own ``incoming`` channels while the inbox exists.
        """
        if node in self._inboxes:
            raise RuntimeError(f"node {node} already has an inbox")
        send, receive = trio.open_memory_channel[tuple[int, bytes]](math.inf)
        self._inboxes[node] = send
        return receive

    # --- the medium and the scheduler -------------------------------------------------------

    def _transmit(self, link: LoopbackLink, bundle: bytes, sent_at: float, owlt_ms: int) -> None:
        """Apply loss, duplication and jitter to a bundle whose last bit left at ``sent_at``."""
        self.stats.sent += 1
        n = link._counter
        link._counter += 1
        model = self.model
        if model.loss and _uniform(link._seed, n, 0) < model.loss:
            self.stats.lost += 1
            return
        copies = 1
        if model.duplicate and _uniform(link._seed, n, 1) < model.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for copy in range(copies):
            delay: float = owlt_ms
            if model.jitter_ms:
                delay += model.jitter_ms * _uniform(link._seed, n, 2 + copy)
            self._push(
                sent_at + delay / 1000, link.local, link.peer, 2 * n + copy, _DELIVER, bundle
            )

    async def _sleep_until(self, at: float) -> None:
        """``trio.sleep_until`` on the network's own heap: no cancel scope per call.

        A send parks its task here; the scheduler reschedules it at ``at``. Cancellation is
        honoured (the entry is disarmed). Tens of thousands of senders then cost one timer.
        """
        if at <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        parked: list[trio.lowlevel.Task | None] = [trio.lowlevel.current_task()]
        self._push(at, -1, -1, -next(self._wake_seq), _RESUME, parked)

        def abort(_: object) -> trio.lowlevel.Abort:
            parked[0] = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _push_wake(self, at: float, link: LoopbackLink) -> None:
        self._push(at, link.local, link.peer, -next(self._wake_seq), _WAKE, link)

    def _push(self, at: float, a: int, b: int, seq: int, kind: int, payload: Any) -> None:
        heapq.heappush(self._heap, (at, a, b, seq, kind, payload))
        if self._sleep is not None and at < self._sleep.deadline:
            self._sleep.deadline = at

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver bundles and fire wake-ups at their times, forever (cancel to stop)."""
        task_status.started()
        heap = self._heap
        links = self._links
        stats = self.stats
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, a, b, _, kind, payload = heapq.heappop(heap)
                if kind == _DELIVER:
                    if links[b, a]._deliver(payload):
                        stats.delivered += 1
                    else:
                        stats.dropped_closed += 1
                elif kind == _RESUME:
                    task = payload[0]
                    if task is not None:
                        payload[0] = None
                        trio.lowlevel.reschedule(task)
                else:
                    payload._wake()
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._sleep = scope
                await trio.sleep_forever()
            self._sleep = None
