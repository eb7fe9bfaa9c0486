"""The discrete-event fleet simulator: many bundle agents, one heap of timed events.

Theory of operation
-------------------
:class:`Simulator` drives many :class:`~fleetwire.protocol.agent.agent.BundleAgent` s in
virtual DTN time (ms) with no Trio, no threads and no sleeping: it pops the earliest event
from one heap, hands it to the agent it concerns, and turns the actions that come back into
later events. Time jumps straight from one event to the next, so a quiet virtual day costs
nothing; what costs is the work per message — the signature at the sender, the check at the
receiver, and the agent's parsing and store work on every hop.

Links are directed (``connect(a, b, model)``) and follow a :class:`LinkModel`, the loopback
network's model as events:

* **contact windows** — a link is up only inside its windows (``None``: always); the agents
  are told ``link_up``/``link_down`` at each edge, and a transfer the window closes on is
  lost (the sender is told it failed, and routes the bundle again).
* **rate** — one bundle at a time per direction: a transfer leaves when the previous one has
  finished, and takes ``bytes × 8 / rate`` to serialise.
* **light time and jitter** — arrival is the end of serialisation plus ``owlt_ms`` plus a
  uniform draw in ``[0, jitter_ms]`` (so bundles may overtake each other).
* **loss and duplication** — a lost transfer never arrives; its sender hears nothing and
  learns of the loss when no acknowledgement comes back (one round trip later); a duplicated
  one arrives twice (the second copy a little later).
* **acknowledgement** — on a confirming link (TCPCL with acks) the receiver's "accepted"
  travels back in ``owlt_ms`` and the sender's agent then lets the bundle go; a refusal (the
  receiver's store is full) travels back the same way. On a link that does not confirm the
  sender is told "transmitted" once the bytes are written.

Applications are callbacks: ``on_deliver(sim, node, Deliver)`` sees every delivered message
(the default acknowledges at once), ``on_sent(sim, node, Sent)`` every message sent (a trace
of grants, say); roles attached to an agent (``agent.attach``) take their families' messages
themselves, and count as delivered (:class:`~fleetwire.protocol.agent.actions.Handled`).
Traffic is scheduled with :meth:`Simulator.send_at` or a generator via
:meth:`Simulator.every` (which sends with :meth:`Simulator.send_now`). The link model draws
from one ``random.Random`` per direction, seeded by (seed, sender, receiver), so a
direction's jitter, losses and duplicates do not depend on what other links did (a fleet
split across processes draws the same); ``Simulator.random`` is the applications'. Ties in
the heap break by insertion order, so a run is a function of its seed.

**A partition of a larger fleet** (:mod:`.parallel`): a simulator may hold only some of the
fleet's agents. Events for a node it does not hold (an arrival at it, or the acknowledgement
of a transfer it sent) go to ``elsewhere(node, event)`` instead of the heap, and the simulator
holding that node takes them with :meth:`Simulator.take`; :meth:`Simulator.hear_from` makes a
link from such a node known (for its acknowledgements' light time). A message delivered here
but signed elsewhere is kept in ``delivered_unsent`` for the latency to be matched later.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
from fleetwire.protocol.agent.actions import (
    Action,
    Deliver,
    Discarded,
    Handled,
    Sent,
    TransferAccepted,
    TransferRefused,
    Transmit,
    WakeAt,
)
from fleetwire.protocol.agent.agent import BundleAgent
from fleetwire.protocol.agent.handlers import Handler, Outgoing
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.messages import Message

from . import event_queue

__all__ = ["LinkModel", "SimStats", "Simulator"]


@attrs.frozen(slots=True)
class LinkModel:
    """How one direction of a link behaves (module docstring)."""

    owlt_ms: int = 0
    rate_bps: int = 1_000_000
    loss: float = 0.0
    duplicate: float = 0.0
    jitter_ms: int = 0
    #: Contact windows ``(start, end)`` in DTN ms; ``None``: up from the start, for ever.
    windows: tuple[tuple[int, int], ...] | None = None
    confirms: bool = True

    @property
    def random(self) -> bool:
        """Whether this link draws random numbers (jitter, loss or duplication)."""
        return bool(self.jitter_ms or self.loss or self.duplicate)


@attrs.define
class SimStats:
    events: int = 0
    sent: int = 0
    #: Every message signed and held (the applications' and the roles').
    messages: int = 0
    transfers: int = 0
    lost: int = 0
    duplicated: int = 0
    delivered: int = 0
    #: Of ``delivered``: taken by roles attached to the agents.
    handled: int = 0
    discarded: int = 0
    latency_ms_total: int = 0


@attrs.define(slots=True)
class _Direction:
    model: LinkModel
    up: bool = False
    busy_until: int = 0
    window_end: int | None = None
    #: This direction's own draws (``None`` when the model draws nothing).
    random: random.Random | None = None


# Event kinds.
_WAKE, _ARRIVE, _ANSWER, _UP, _DOWN, _CALL = range(6)

# The events wait in an :class:`~.event_queue.EventQueue` (C where built): ordered by time,
# then by insertion. Each is the tuple (time, kind, a, b, c): the time rides in the item,
# which costs nothing (the tuple is built anyway) where the queue handing it back would
# cost an int or a tuple per event.

OnDeliver = Callable[["Simulator", int, Deliver], None]
OnSent = Callable[["Simulator", int, Sent], None]
#: An event as it goes between simulators (``elsewhere``, :meth:`Simulator.take`):
#: (time, 0, kind, a, b, c).
Event = tuple[int, int, int, Any, Any, Any]


def acknowledge_at_once(sim: Simulator, node: int, delivery: Deliver) -> None:
    """The default application: takes every message as it comes."""
    sim.acknowledge(node, delivery.delivery)


class Simulator:
    """Many agents over modelled links in virtual time (module docstring)."""

    def __init__(self, *, seed: int, start: int, on_deliver: OnDeliver = acknowledge_at_once):
        self.now = start
        self.seed = seed
        self.random = random.Random(seed)
        self.agents: dict[int, BundleAgent] = {}
        self.stats = SimStats()
        self.on_deliver = on_deliver
        self._links: dict[tuple[int, int], _Direction] = {}
        #: The events, each (time, kind, a, b, c) (``event_queue.EventQueue`` is looked up
        #: here, not at import, so the tests' ``--pure-python`` can swap the road).
        self._events: event_queue.EventQueueType = event_queue.EventQueue()
        self._wake: dict[int, int] = {}
        self._sent_at: dict[bytes, int] = {}
        #: Called with every :class:`Sent` (``None``: nobody listens).
        self.on_sent: OnSent | None = None
        #: Called with ``(node, bytes)`` for every transfer a link takes (a traffic count).
        self.on_transmit: Callable[[int, int], None] | None = None
        #: A partition of a larger fleet (module docstring): where events for nodes not
        #: held here go (``None``: every node is here).
        self.elsewhere: Callable[[int, Event], None] | None = None
        #: Content id → delivery time of messages delivered here but not signed here.
        self.delivered_unsent: dict[bytes, int] = {}
        #: What each type of action the agents return does here (:meth:`_run_actions`).
        self._handlers: dict[type, Callable[[int, Any, tuple[int, bytes] | None], None]] = {
            Transmit: self._transmit,
            WakeAt: self._on_wake_at,
            Deliver: self._on_deliver,
            TransferAccepted: self._on_accepted,
            TransferRefused: self._on_refused,
            Handled: self._on_handled,
            Sent: self._on_sent,
            Discarded: self._on_discarded,
        }

    # --- building a fleet --------------------------------------------------------------

    def add(self, agent: BundleAgent) -> None:
        """Add an agent and run its restart recovery now."""
        self.agents[agent.node] = agent
        self._run_actions(agent.node, agent.start(self.now))

    def connect(self, a: int, b: int, model: LinkModel, *, both_ways: bool = True) -> None:
        """A link from ``a`` to ``b`` (and back, with the same model, unless ``both_ways``
        is false): up in each of its windows."""
        for src, dst in ((a, b), (b, a)) if both_ways else ((a, b),):
            draws = random.Random(f"link {self.seed} {src} {dst}") if model.random else None
            self._links[(src, dst)] = _Direction(model, random=draws)
            windows = model.windows if model.windows is not None else ((self.now, None),)
            for start, end in windows:
                self._push(max(start, self.now), _UP, src, dst, end)
                if end is not None:
                    self._push(end, _DOWN, src, dst, None)

    def hear_from(self, a: int, b: int, model: LinkModel) -> None:
        """The link from ``a``, a node held elsewhere, to ``b``, held here: its model only
        (``b`` acknowledges over it; ``a``'s simulator runs the transfers)."""
        self._links[(a, b)] = _Direction(model)

    def take(self, event: Event) -> None:
        """An event another simulator made for a node held here (``elsewhere``)."""
        at, _, kind, a, b, c = event
        self._push(at, kind, a, b, c)

    def next_at(self) -> int | None:
        """The time of the earliest event waiting (``None``: none)."""
        return self._events.next_time()

    def sent_undelivered(self) -> dict[bytes, int]:
        """Content id → signing time of messages signed here and not delivered here."""
        return dict(self._sent_at)

    def send_at(self, at: int, source: int, to: int, message: Message | SignedMessage) -> None:
        """The application at ``source`` sends ``message`` to node ``to`` at ``at``."""
        self._events.push(at, (at, _CALL, source, to, message))  # _push inlined: per message

    def send_now(self, source: int, to: int, message: Message | SignedMessage) -> None:
        """The application at ``source`` sends ``message`` to node ``to`` now: from inside a
        scheduled call (:meth:`every`), what ``send_at(sim.now, …)`` does one event sooner —
        no event pushed and popped again for the same instant (a traffic stream does this
        for every message it writes)."""
        self.stats.sent += 1
        self._run_actions(source, self.agents[source].send(message, to, self.now))

    def every(self, at: int, call: Callable[[Simulator], int | None]) -> None:
        """Call ``call(sim)`` at ``at``, then again whenever it returns a time (None: stop)."""
        self._push(at, _CALL, None, None, call)

    def attach(self, node: int, handler: Handler) -> None:
        """Attach a role to the agent of ``node`` (it takes its families' messages)."""
        self._run_actions(node, self.agents[node].attach(handler, self.now))

    def act(self, node: int, handler: Handler, sends: list[Outgoing]) -> None:
        """Send what a role's application side returned (``member.want(…)``, …)."""
        self._run_actions(node, self.agents[node].act(handler, sends, self.now))

    def acknowledge(self, node: int, delivery: bytes) -> None:
        """The application at ``node`` has the delivered message ``delivery``."""
        self._run_actions(node, self.agents[node].acknowledge(delivery, self.now))

    # --- running -----------------------------------------------------------------------

    def run(self, until: int) -> None:
        """Process every event up to and including DTN time ``until``."""
        events_push, pop = self._events.push, self._events.pop_until
        agents, links, wake, handlers = self.agents, self._links, self._wake, self._handlers
        # Kinds as locals: the branches below test them on every event.
        arrive, answer, call, wake_kind, up = _ARRIVE, _ANSWER, _CALL, _WAKE, _UP
        events = 0  # counted here, stored once (however the loop ends)
        try:
            while (event := pop(until)) is not None:
                at, kind, a, b, c = event
                self.now = at
                events += 1
                came: tuple[int, bytes] | None = None
                if kind == arrive:  # a: (sender, key), b: receiver, c: data
                    node, came = b, a
                    actions = agents[b].receive(c, a[0], at)
                elif kind == answer:  # a: sender, b: (peer, key), c: outcome
                    node, (peer, bundle) = a, b
                    if c == "ok":
                        actions = agents[a].transmitted(peer, bundle, at)
                    else:
                        actions = agents[a].transmit_failed(
                            peer, bundle, at, refused=c == "refused"
                        )
                elif kind == call:
                    if a is None:  # a scheduled callable
                        again = c(self)
                        if again is not None:  # _push inlined: once per message of the traffic
                            events_push(again, (again, call, None, None, c))
                        continue
                    self.stats.sent += 1
                    node, actions = a, agents[a].send(c, b, at)
                elif kind == wake_kind:
                    if wake.get(a) != at:  # a later wake replaced it, or an earlier one ran
                        continue
                    del wake[a]
                    node, actions = a, agents[a].poll(at)
                elif kind == up:
                    direction = links[(a, b)]
                    direction.up, direction.window_end = True, c
                    direction.busy_until = max(direction.busy_until, at)
                    node = a
                    actions = agents[a].link_up(b, at, confirms=direction.model.confirms)
                else:  # _DOWN
                    links[(a, b)].up = False
                    node, actions = a, agents[a].link_down(b, at)
                # _run_actions inlined: a call per event, when nearly half of them return no
                # action at all.
                for action in actions:
                    handler = handlers.get(type(action))
                    if handler is not None:
                        handler(node, action, came)
        finally:
            self.stats.events += events
        self.now = max(self.now, until)

    # --- actions -----------------------------------------------------------------------

    def _run_actions(
        self, node: int, actions: list[Action], came: tuple[int, bytes] | None = None
    ) -> None:
        # One lookup per action by its exact type (the agent's actions are final classes);
        # types the simulator has nothing to do for (DeliveryRefused, …) have no entry.
        handlers = self._handlers
        for action in actions:
            handler = handlers.get(type(action))
            if handler is not None:
                handler(node, action, came)

    def _on_wake_at(self, node: int, action: WakeAt, came: tuple[int, bytes] | None) -> None:
        # The agent names a wake only when it is earlier than the one it named since its last
        # poll (or after a poll): the earliest is kept until it fires, as the contract asks.
        at = action.at
        pending = self._wake.get(node)
        if pending is None or at < pending:
            self._wake[node] = at
            self._events.push(at, (at, _WAKE, node, None, None))  # _push inlined: per message

    def _on_deliver(self, node: int, action: Deliver, came: tuple[int, bytes] | None) -> None:
        self._delivered(action.message.content_id.raw)
        self.on_deliver(self, node, action)

    def _on_handled(self, node: int, action: Handled, came: tuple[int, bytes] | None) -> None:
        self.stats.handled += 1
        self._delivered(action.message.content_id.raw)

    def _delivered(self, content_id: bytes) -> None:
        """Count a delivery (to the application or a role) and its latency when it was
        signed here; else keep it for the latency to be matched across parts."""
        now = self.now
        self.stats.delivered += 1
        created = self._sent_at.pop(content_id, None)
        if created is not None:
            self.stats.latency_ms_total += now - created
        elif self.elsewhere is not None:
            self.delivered_unsent[content_id] = now

    def _on_accepted(
        self, node: int, action: TransferAccepted, came: tuple[int, bytes] | None
    ) -> None:
        if came is not None:
            self._answer(came, node, "ok")

    def _on_refused(
        self, node: int, action: TransferRefused, came: tuple[int, bytes] | None
    ) -> None:
        if came is not None:
            self._answer(came, node, "refused")

    def _answer(self, came: tuple[int, bytes], node: int, outcome: str) -> None:
        """The receiver ``node``'s answer to the transfer ``came`` (sender, key): back over
        the reverse link in its light time. An acceptance only travels on a confirming
        link (on the others the sender was told "transmitted" already); a refusal always."""
        sender, key = came
        back = self._links.get((sender, node))
        if outcome == "ok" and (back is None or not back.model.confirms):
            return
        at = self.now + (0 if back is None else back.model.owlt_ms)
        if self.elsewhere is not None and sender not in self.agents:
            self.elsewhere(sender, (at, 0, _ANSWER, sender, (node, key), outcome))
        else:  # _push inlined: once per transfer
            self._events.push(at, (at, _ANSWER, sender, (node, key), outcome))

    def _on_sent(self, node: int, action: Sent, came: tuple[int, bytes] | None) -> None:
        self.stats.messages += 1
        self._sent_at[action.message.content_id.raw] = self.now
        if self.on_sent is not None:
            self.on_sent(self, node, action)

    def _on_discarded(self, node: int, action: Discarded, came: tuple[int, bytes] | None) -> None:
        self.stats.discarded += 1

    def _transmit(self, node: int, action: Transmit, came: tuple[int, bytes] | None = None
                  ) -> None:  # fmt: skip
        now = self.now
        peer, key, data = action.link, action.bundle, action.data
        direction = self._links.get((node, peer))
        if direction is None or not direction.up:
            self._push(now, _ANSWER, node, (peer, key), "failed")
            return
        model = direction.model
        stats = self.stats
        stats.transfers += 1
        size = len(data)
        if self.on_transmit is not None:
            self.on_transmit(node, size)
        busy = direction.busy_until
        departure = busy if busy > now else now
        done = departure + (size * 8000) // model.rate_bps
        direction.busy_until = done
        end = direction.window_end
        if end is not None and done > end:  # the window closes on the transfer
            self._push(end, _ANSWER, node, (peer, key), "failed")
            return
        rng = direction.random
        arrival = done + model.owlt_ms + (rng.randint(0, model.jitter_ms) if model.jitter_ms else 0)  # type: ignore[union-attr]
        if not model.confirms:
            self._push(done, _ANSWER, node, (peer, key), "ok")
        if model.loss and rng.random() < model.loss:  # type: ignore[union-attr]
            stats.lost += 1
            if model.confirms:  # no acknowledgement comes back: the sender gives up on it
                self._push(arrival + model.owlt_ms, _ANSWER, node, (peer, key), "failed")
            return
        sent = (node, key)  # one tuple for the arrival and any duplicate: both are read only
        elsewhere = self.elsewhere is not None and peer not in self.agents
        if elsewhere:
            self.elsewhere(peer, (arrival, 0, _ARRIVE, sent, peer, data))  # type: ignore[misc]
        else:  # _push inlined: once per transfer
            self._events.push(arrival, (arrival, _ARRIVE, sent, peer, data))
        if model.duplicate and rng.random() < model.duplicate:  # type: ignore[union-attr]
            stats.duplicated += 1
            again = arrival + 1 + model.jitter_ms
            if elsewhere:
                self.elsewhere(peer, (again, 0, _ARRIVE, sent, peer, data))  # type: ignore[misc]
            else:
                self._push(again, _ARRIVE, sent, peer, data)

    def _push(self, at: int, kind: int, a: Any, b: Any, c: Any) -> None:
        self._events.push(at, (at, kind, a, b, c))
