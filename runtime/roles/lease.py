"""Lease roles on a running node: region coordinator, cell coordinator (active or standby), member.

Theory of operation
-------------------
Each role wraps sans-IO machines from :mod:`fleetwire.protocol.coordination` and runs them on a
:class:`~..node.Node`: verified lease messages from :meth:`Node.subscribe` go in with the node's
``now``, the machines' actions go out through :meth:`Node.send` (signed, bundled, stored, routed),
and the role sleeps until the machines' next deadline or the next message, whichever comes first.
The machines never see Trio; the roles never decide anything themselves.

- :class:`RegionCoordinator` grants the *authority leases* ``authority/<cell>`` to cell
  coordinators (spec §6.4 "Authority hand-over"): a plain :class:`LeaseAuthority` without mandate.
- :class:`CellCoordinator` always wants its cell's authority lease (a :class:`LeaseHolder`
  claiming from the region). While the lease is usable it is the cell's :class:`LeaseAuthority`
  for the epoch the lease's token names; otherwise it waits in the region's queue — that is a
  standby, and it takes over when the active coordinator falls silent. A coordinator started
  without knowing the last epoch it acted in (``last_epoch=None``) lets the first authority lease
  it is granted run out rather than act in an epoch whose grants it may have lost.
- :class:`Member` claims, renews and releases for the application and answers :meth:`use` with
  the fencing token for an operation (or None).

Every machine of a node numbers its messages from :meth:`Node.next_message_sequence`, the
node's one counter (clock-derived, so it only grows across restarts): spec §4 wants a writer's
``sequence`` to grow across all the messages it writes, and readers refuse a reused one.
"""

from __future__ import annotations

import abc
import collections
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import trio
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig, LeaseAuthority
from fleetwire.protocol.coordination.lease_holder import (
    HolderConfig,
    HolderState,
    LeaseHolder,
    Notice,
    NoticeKind,
)
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.messages import Family

from ..node import Node

__all__ = ["CellCoordinator", "Member", "RegionCoordinator", "authority_resource"]

#: Lateness allowed when waking for a deadline: Trio time to DTN ms rounds to the nearest ms.
_SLACK_S = 0.001


def authority_resource(cell: int) -> str:
    """The resource whose lease makes a node its cell's lease authority."""
    return f"authority/cell-{cell}"


class _Driver(abc.ABC):
    """What every role does: one sequence, one inbox, deadlines, sending actions."""

    def __init__(
        self,
        node: Node,
        lifetime_ms: int,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        self.node = node
        self.lifetime_ms = lifetime_ms
        self.on_send = on_send
        #: Every machine numbers its messages from the node's one counter.
        self.next_sequence = node.next_message_sequence
        self._poke_send, self._poke = trio.open_memory_channel[Any](math.inf)
        #: The last messages this role sent, signed, with their destination (for reports and
        #: replay tests).
        self.sent: collections.deque[tuple[SignedMessage, int]] = collections.deque(maxlen=256)

    @abc.abstractmethod
    def machines(self) -> Sequence[LeaseAuthority | LeaseHolder]:
        """The sans-IO machines this role drives."""

    def deadline(self) -> int | None:
        times = [t for m in self.machines() if (t := m.next_deadline()) is not None]
        return min(times) if times else None

    def call(self, fn: Callable[[], list[Any]]) -> list[Any]:
        """Run a machine step (a hook for subclasses; the machines number their own messages
        from the node's one counter)."""
        return fn()

    async def act(self, actions: list[Any]) -> list[Notice]:
        notices = []
        for action in actions:
            to = getattr(action, "to", None)
            if to is not None:
                signed = await self.node.send(action.message, to, lifetime_ms=self.lifetime_ms)
                self.sent.append((signed, to))
                if self.on_send is not None:
                    self.on_send(signed, to)
            elif isinstance(action, Notice):
                notices.append(action)
        return notices

    def poke(self) -> None:
        """Wake the loop: the application changed what the machines want."""
        self._poke_send.send_nowait(None)

    async def loop(self, task_status: trio.TaskStatus[None]) -> None:
        # Closed when the role stops (or is cancelled): what it did not acknowledge goes back to
        # the node, and later messages no longer wait on a reader that is gone.
        async with self.node.subscribe(Family.LEASE) as inbox:
            await self._serve(inbox, task_status)

    async def _serve(self, inbox: Any, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:

            async def forward() -> None:
                # A message is acknowledged (by asking the subscription for the next one) only
                # once the machines have acted on it and the node holds their answers.
                while True:
                    signed = await inbox.receive()
                    done = trio.Event()
                    await self._poke_send.send((signed, done))
                    await done.wait()

            nursery.start_soon(forward)
            # Our replay marks did not survive a restart: nothing issued before now may act.
            started = self.node.now()
            for m in self.machines():
                m.replay.not_before = started + m.replay.window.max_skew_ms
            await self.start()
            task_status.started()
            while True:
                deadline = self.deadline()
                wake = (
                    math.inf if deadline is None else self.node.clock.to_trio(deadline) + _SLACK_S
                )
                item = None
                with trio.move_on_at(wake):
                    item = await self._poke.receive()
                now = self.node.now()
                if item is None:  # a deadline, or the application poked us
                    await self.on_tick(now)
                else:
                    signed, done = item
                    await self.on_message(signed, now)
                    done.set()

    async def start(self) -> None:  # noqa: B027 (a hook: most roles have nothing to start)
        """Called once before the role's loop; roles that claim at start override it."""

    async def on_tick(self, now: int) -> None:
        for m in self.machines():
            await self.act(self.call(functools.partial(m.tick, now)))

    @abc.abstractmethod
    async def on_message(self, signed: Any, now: int) -> None:
        """Hand one delivered message to the machines it concerns."""


class RegionCoordinator(_Driver):
    """Grants the authority leases of the region's cells."""

    def __init__(
        self,
        node: Node,
        config: AuthorityConfig,
        *,
        lifetime_ms: int,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send)
        self.authority = LeaseAuthority(
            node.node,
            config,
            owns=lambda r: r.startswith("authority/"),
            next_sequence=self.next_sequence,
        )

    def machines(self) -> Sequence[LeaseAuthority]:
        return (self.authority,)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.loop(task_status)

    async def on_message(self, signed: Any, now: int) -> None:
        await self.act(
            self.call(lambda: self.authority.receive(signed.message, signed.content_id, now))
        )


class CellCoordinator(_Driver):
    """The cell's lease authority while it holds the authority lease; a standby otherwise."""

    def __init__(
        self,
        node: Node,
        *,
        cell: int,
        region: int,
        authority_config: AuthorityConfig,
        holder_config: HolderConfig,
        lifetime_ms: int,
        authority_term_ms: int,
        owns: Callable[[str], bool] = lambda r: not r.startswith("authority/"),
        last_epoch: int | None = None,
        on_send: Callable[[SignedMessage, int], None] | None = None,
        admits: Callable[[int], bool] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send)
        self.resource = authority_resource(cell)
        self.authority_term_ms = authority_term_ms
        self.holder = LeaseHolder(
            node.node, (region,), holder_config, next_sequence=self.next_sequence
        )
        self.authority = LeaseAuthority(
            node.node,
            authority_config,
            owns=owns,
            epoch=last_epoch or 0,
            mandate_until=0,
            next_sequence=self.next_sequence,
            admits=admits,  # the containment gate (roles.faults.CellFaults.admits)
        )
        self.last_epoch = last_epoch
        #: (epoch, DTN ms) each time this node took up the authority; for reports and tests.
        self.terms: list[tuple[int, int]] = []

    def machines(self) -> Sequence[LeaseAuthority | LeaseHolder]:
        return (self.holder, self.authority)

    def active(self) -> bool:
        return self.authority.active(self.node.now())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.loop(task_status)

    async def start(self) -> None:
        now = self.node.now()
        await self._handle(
            self.call(lambda: self.holder.want(self.resource, self.authority_term_ms, now)), now
        )

    async def on_tick(self, now: int) -> None:
        await self._handle(self.call(lambda: self.holder.tick(now)), now)
        if self.holder.state(self.resource) is HolderState.IDLE:
            await self._handle(
                self.call(lambda: self.holder.want(self.resource, self.authority_term_ms, now)), now
            )
        await self.act(self.call(lambda: self.authority.tick(now)))

    async def on_message(self, signed: Any, now: int) -> None:
        message = signed.message
        if getattr(message, "resource", None) == self.resource:
            actions = self.call(lambda: self.holder.receive(message, signed.content_id, now))
            await self._handle(actions, now)
        else:
            await self.act(
                self.call(lambda: self.authority.receive(message, signed.content_id, now))
            )

    async def revoke(self, resource: str, effective_at: int, reason: str | None = None) -> None:
        """Withdraw the grant in force on ``resource`` from ``effective_at`` (spec §6.4)."""
        now = self.node.now()
        await self.act(
            self.call(functools.partial(self.authority.revoke, resource, effective_at, now, reason))
        )

    async def _handle(self, actions: list[Any], now: int) -> None:
        for notice in await self.act(actions):
            if notice.resource != self.resource:
                continue
            if notice.kind not in (NoticeKind.GRANTED, NoticeKind.RENEWED):
                continue
            epoch = notice.fencing_token
            if self.last_epoch is None:
                # We do not know whether we acted in this epoch before a restart: sit it out.
                self.last_epoch = epoch
                await self.act(self.call(lambda: self.holder.let_go(self.resource, now)))
                continue
            before = self.authority.epoch
            assume = functools.partial(self.authority.assume, epoch, notice.usable_until, now)
            await self.act(self.call(assume))
            if self.authority.epoch == epoch and self.authority.active(now):
                self.last_epoch = epoch
                if epoch != before:
                    self.terms.append((epoch, now))
            else:
                await self.act(self.call(lambda: self.holder.let_go(self.resource, now)))


class Member(_Driver):
    """A node's leases for its application."""

    def __init__(
        self,
        node: Node,
        authorities: Sequence[int],
        config: HolderConfig,
        *,
        lifetime_ms: int,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send)
        self.holder = LeaseHolder(node.node, authorities, config, next_sequence=self.next_sequence)
        self.notices: list[Notice] = []

    def machines(self) -> Sequence[LeaseHolder]:
        return (self.holder,)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.loop(task_status)

    async def want(self, resource: str, term_ms: int, priority: int = 0) -> None:
        now = self.node.now()
        self.notices += await self.act(
            self.call(lambda: self.holder.want(resource, term_ms, now, priority))
        )
        self.poke()

    async def release(self, resource: str) -> None:
        now = self.node.now()
        self.notices += await self.act(self.call(lambda: self.holder.release(resource, now)))
        self.poke()

    def use(self, resource: str, duration_ms: int = 0) -> int | None:
        """The fencing token for an operation on ``resource`` from now for ``duration_ms``."""
        return self.holder.use(resource, self.node.now(), duration_ms)

    async def on_tick(self, now: int) -> None:
        self.notices += await self.act(self.call(lambda: self.holder.tick(now)))

    async def on_message(self, signed: Any, now: int) -> None:
        self.notices += await self.act(
            self.call(lambda: self.holder.receive(signed.message, signed.content_id, now))
        )
