"""Lease roles on a running node: region coordinator, cell coordinator (active or standby), member.

Theory of operation
-------------------
The roles themselves are sans-IO: :mod:`fleetwire.protocol.coordination.lease_roles` holds
the one code of :class:`RegionRole`, :class:`CellRole` and :class:`MemberRole`, which the
simulator's agents and an embedder's loop run too. Here each is driven on a
:class:`~..node.Node`: verified lease messages from :meth:`Node.subscribe` go in with the
node's ``now``, the sends the role returns go out through :meth:`Node.send` (signed,
bundled, stored, routed), and a Trio task sleeps until the role's next deadline or the next
message, whichever comes first. The drivers decide nothing; the roles never see Trio.

- :class:`RegionCoordinator` grants the *authority leases* ``authority/<cell>`` to cell
  coordinators (spec §6.4 "Authority hand-over").
- :class:`CellCoordinator` always wants its cell's authority lease and is the cell's lease
  authority while the lease is usable; otherwise a standby in the region's queue.
- :class:`Member` claims, renews and releases for the application and answers :meth:`use`
  with the fencing token for an operation (or None).

Every machine of a node numbers its messages from the node's one counter (the agent's
``next_message_sequence``, clock-derived, so it only grows across restarts): spec §4 wants a
writer's ``sequence`` to grow across all the messages it writes, and readers refuse a reused
one. The roles' replay marks are not durable: each driver starts its role with
:meth:`LeaseRole.forget_before` the node's start.

:class:`_Driver` is the Trio loop itself (one inbox, deadlines, sending), which the fault
roles (:mod:`.faults`) share.
"""

from __future__ import annotations

import abc
import collections
import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import trio
from fleetwire.protocol.agent.handlers import Outgoing
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig, LeaseAuthority
from fleetwire.protocol.coordination.lease_holder import HolderConfig, LeaseHolder, Notice
from fleetwire.protocol.coordination.lease_roles import (
    CellRole,
    LeaseRole,
    MemberRole,
    RegionRole,
    authority_resource,
)
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.messages import Family

from ..node.node import Node

__all__ = ["CellCoordinator", "Member", "RegionCoordinator", "authority_resource"]

#: Lateness allowed when waking for a deadline: Trio time to DTN ms rounds to the nearest ms.
_SLACK_S = 0.001


class _Driver(abc.ABC):
    """The Trio loop of a role: one inbox, deadlines, sending what it decides."""

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
    def deadline(self) -> int | None:
        """When :meth:`on_tick` next has something to do (``None``: nothing pending)."""

    def forget_before(self, now: int) -> None:  # noqa: B027 (a hook: not every role has marks)
        """The role starts at ``now`` without replay marks (the lease roles override it)."""

    async def act(self, actions: Sequence[Any]) -> None:
        """Sign and send every send among ``actions`` (anything with ``message`` and ``to``)."""
        for action in actions:
            to = getattr(action, "to", None)
            if to is not None:
                signed = await self.node.send(action.message, to, lifetime_ms=self.lifetime_ms)
                self.sent.append((signed, to))
                if self.on_send is not None:
                    self.on_send(signed, to)

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
            self.forget_before(self.node.now())
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

    @abc.abstractmethod
    async def on_tick(self, now: int) -> None:
        """The deadline has come, or the application poked the loop."""

    @abc.abstractmethod
    async def on_message(self, signed: Any, now: int) -> None:
        """Hand one delivered message to the machines it concerns."""


R = TypeVar("R", bound=LeaseRole)


class _RoleDriver(_Driver, Generic[R]):
    """Drives one sans-IO lease role: its messages and deadlines in, its sends out."""

    def __init__(
        self,
        node: Node,
        role: R,
        lifetime_ms: int,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, lifetime_ms, on_send)
        #: The role itself (the code the simulator and an embedder run too).
        self.role = role
        role.bind(node.agent.next_message_sequence)

    def deadline(self) -> int | None:
        return self.role.deadline()

    def forget_before(self, now: int) -> None:
        self.role.forget_before(now)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.loop(task_status)

    async def start(self) -> None:
        now = self.node.now()
        self.role.at(now)
        await self.act(self.role.start(now))

    async def on_tick(self, now: int) -> None:
        self.role.at(now)
        await self.act(self.role.on_tick(now))

    async def on_message(self, signed: Any, now: int) -> None:
        self.role.at(now)
        await self.act(self.role.on_message(signed, now))

    async def send_now(self, sends: list[Outgoing]) -> None:
        """Send what the role's application side returned, and wake the loop for the role's
        new deadline."""
        await self.act(sends)
        self.poke()


class RegionCoordinator(_RoleDriver[RegionRole]):
    """Grants the authority leases of the region's cells (:class:`RegionRole`)."""

    def __init__(
        self,
        node: Node,
        config: AuthorityConfig,
        *,
        lifetime_ms: int,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, RegionRole(node.node, config), lifetime_ms, on_send)

    @property
    def authority(self) -> LeaseAuthority:
        return self.role.authority


class CellCoordinator(_RoleDriver[CellRole]):
    """The cell's lease authority while it holds the authority lease; a standby otherwise
    (:class:`CellRole`)."""

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
        role = CellRole(
            node.node,
            cell=cell,
            region=region,
            authority_config=authority_config,
            holder_config=holder_config,
            authority_term_ms=authority_term_ms,
            owns=owns,
            last_epoch=last_epoch,
            admits=admits,  # the containment gate (roles.faults.CellFaults.admits)
        )
        super().__init__(node, role, lifetime_ms, on_send)

    @property
    def resource(self) -> str:
        return self.role.resource

    @property
    def holder(self) -> LeaseHolder:
        return self.role.holder

    @property
    def authority(self) -> LeaseAuthority:
        return self.role.authority

    @property
    def last_epoch(self) -> int | None:
        return self.role.last_epoch

    @property
    def terms(self) -> list[tuple[int, int]]:
        """(epoch, DTN ms) each time this node took up the authority; for reports and tests."""
        return self.role.terms

    def active(self) -> bool:
        return self.role.active(self.node.now())

    async def revoke(self, resource: str, effective_at: int, reason: str | None = None) -> None:
        """Withdraw the grant in force on ``resource`` from ``effective_at`` (spec §6.4)."""
        await self.act(self.role.revoke(resource, effective_at, self.node.now(), reason))


class Member(_RoleDriver[MemberRole]):
    """A node's leases for its application (:class:`MemberRole`)."""

    def __init__(
        self,
        node: Node,
        authorities: Sequence[int],
        config: HolderConfig,
        *,
        lifetime_ms: int,
        on_send: Callable[[SignedMessage, int], None] | None = None,
    ) -> None:
        super().__init__(node, MemberRole(node.node, authorities, config), lifetime_ms, on_send)

    @property
    def holder(self) -> LeaseHolder:
        return self.role.holder

    @property
    def notices(self) -> list[Notice]:
        """What happened to the application's leases, oldest first (the application reads
        and clears it)."""
        return self.role.notices

    async def want(self, resource: str, term_ms: int, priority: int = 0) -> None:
        await self.send_now(self.role.want(resource, term_ms, self.node.now(), priority))

    async def release(self, resource: str) -> None:
        await self.send_now(self.role.release(resource, self.node.now()))

    def use(self, resource: str, duration_ms: int = 0) -> int | None:
        """The fencing token for an operation on ``resource`` from now for ``duration_ms``."""
        return self.role.use(resource, self.node.now(), duration_ms)
