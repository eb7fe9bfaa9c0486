"""The ordered pipelined sender: one per neighbour, bundles out in order, many in flight.

Theory of operation
-------------------
The bundle agent says what to send to a neighbour (:class:`Transmit` actions, in its queue
order); :class:`OrderedSender` puts them on that neighbour's current link and reports each
outcome. Two properties matter, and the obvious designs give only one of them:

* **order** — a neighbour receives bundles in the order the agent queued them. The revocation
  spread relies on it (a list must reach a partitioned cell before the messages queued after
  it), and so does any peer that reads a stream of intents in order. Concurrent senders (a
  task per bundle, started at once) lose it: Trio does not promise which task runs first.
* **pipelining** — a bundle does not wait for the previous one's acknowledgement: a TCPCL
  session has many transfers in flight and the peer acknowledges them in order (RFC 9174
  §5.2.3). Sending one bundle at a time costs a round trip (and the peer's commit) per bundle.

So one task per neighbour takes the queue in order and starts each batch with
``nursery.start``: the child starts the transfers (``send_many``, or ``send`` for a link
without it) before its first checkpoint — a link queues transfers in call order — and only
then is the next batch started; the children then wait for their acknowledgements together.
At most :data:`SEND_WINDOW` bundles are in flight per neighbour.

Before a batch leaves, ``commit`` makes what the agent wrote durable (a neighbour never holds
a bundle this node could lose in a crash). A bundle the agent took back meanwhile (the link
was lost, it expired, it was routed elsewhere) is skipped: ``in_flight`` asks the agent. A link
that is down is waited for, or for its replacement (a neighbour that reconnected).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping

import trio
from fleetwire.protocol.agent.actions import Transmit

from ..links.link import Link, LinkDown

__all__ = ["SEND_WINDOW", "OrderedSender"]

#: Bundles in flight (sent, not yet acknowledged) per neighbour.
SEND_WINDOW = 256


class OrderedSender:
    """The sender of one neighbour (module docstring); ``run`` it in a nursery."""

    def __init__(
        self,
        peer: int,
        links: Mapping[int, Link],
        replaced: dict[int, trio.Event],
        *,
        commit: Callable[[], Awaitable[None]],
        in_flight: Callable[[bytes], bool],
        outcome: Callable[[Transmit, LinkDown | None], None],
        window: int = SEND_WINDOW,
    ) -> None:
        self._peer = peer
        self._links = links
        self._replaced = replaced  # peer → event set when its link is replaced
        self._commit = commit
        self._still_ours = in_flight
        self._outcome = outcome
        self._window = window
        #: Transmit actions not yet handed to the link, in the agent's order (by store key: a
        #: bundle the agent transmits again replaces its stale entry).
        self._queue: dict[bytes, Transmit] = {}
        self._queued = trio.Event()
        self._in_flight = 0
        self._space = trio.Event()

    def push(self, transmit: Transmit) -> None:
        """Queue ``transmit`` behind everything queued before it."""
        self._queue.pop(transmit.bundle, None)
        self._queue[transmit.bundle] = transmit
        self._queued.set()

    async def run(self) -> None:
        async with trio.open_nursery() as in_flight:
            while True:
                if not self._queue:
                    await self._queued.wait()
                    self._queued = trio.Event()
                    continue
                link = self._links[self._peer]
                if not link.is_up:
                    await self._wait_up_or_replaced(link)
                    continue
                if self._in_flight >= self._window:
                    await self._space.wait()
                    self._space = trio.Event()
                    continue
                await self._commit()  # durable here before a neighbour has it
                batch = self._take(self._window - self._in_flight)
                if not batch:
                    continue
                self._in_flight += len(batch)
                if hasattr(link, "send_many"):
                    await in_flight.start(self._send_many, link, batch)
                else:
                    for transmit in batch:
                        await in_flight.start(self._send_one, link, transmit)

    def _take(self, limit: int) -> list[Transmit]:
        batch: list[Transmit] = []
        queue = self._queue
        while queue and len(batch) < limit:
            transmit = queue.pop(next(iter(queue)))
            if self._still_ours(transmit.bundle):
                batch.append(transmit)
        return batch

    # Both start their transfers right after ``started``, before their first checkpoint, so
    # the link queues them in the agent's order while the acknowledgements overlap.

    async def _send_many(
        self, link: Link, batch: list[Transmit], *, task_status: trio.TaskStatus[None]
    ) -> None:
        task_status.started()
        try:
            errors: list[LinkDown | None] = await link.send_many(  # type: ignore[attr-defined]
                [transmit.data for transmit in batch]
            )
        finally:
            self._done(len(batch))
        for transmit, error in zip(batch, errors, strict=True):
            self._outcome(transmit, error)

    async def _send_one(
        self, link: Link, transmit: Transmit, *, task_status: trio.TaskStatus[None]
    ) -> None:
        task_status.started()
        error: LinkDown | None = None
        try:
            await link.send(transmit.data)
        except LinkDown as exc:
            error = exc
        finally:
            self._done(1)
        self._outcome(transmit, error)

    def _done(self, count: int) -> None:
        self._in_flight -= count
        self._space.set()

    async def _wait_up_or_replaced(self, link: Link) -> None:
        replaced = self._replaced.setdefault(self._peer, trio.Event())
        async with trio.open_nursery() as race:

            async def until(wait: Callable[[], Awaitable[None]]) -> None:
                with contextlib.suppress(LinkDown):  # closed for good: wait for a replacement
                    await wait()
                    race.cancel_scope.cancel()

            race.start_soon(until, link.wait_up)
            race.start_soon(until, replaced.wait)
