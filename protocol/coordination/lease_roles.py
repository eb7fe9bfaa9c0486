"""The lease roles as agent handlers: region coordinator, cell coordinator, member (spec §6.4).

Theory of operation
-------------------
The one code of the three lease roles, in the sans-IO shape of
:class:`~fleetwire.protocol.agent.handlers.Handler`, so that the same role runs wherever an
agent runs: inside the discrete-event simulator's agents, in an embedder's loop, and in the
Trio node (``runtime/roles/lease.py`` is only a driver of these classes there: it feeds them
the node's verified lease messages and its clock, and sends what they return). Each wraps
the machines of :mod:`.lease_authority` and :mod:`.lease_holder`, hands them the verified
lease messages it is given, ticks them at their deadlines, and returns their sends:

- :class:`RegionRole` grants the authority leases ``authority/cell-<cell>`` (a
  :class:`LeaseAuthority` without mandate that owns only those).
- :class:`CellRole` always wants its cell's authority lease from the region (a
  :class:`LeaseHolder`); while it holds it, it is the cell's :class:`LeaseAuthority` for the
  epoch the lease's fencing token names, until the lease's usable end. A coordinator that
  does not know the last epoch it acted in (``last_epoch=None``) lets its first authority
  lease run out instead of acting in an epoch whose grants it may have lost.
  Its authority may be gated (``admits``: the containment gate, an isolation boundary's),
  and the application or a fault role may :meth:`~CellRole.revoke` one grant or
  :meth:`~CellRole.revoke_holders` every grant of the nodes a predicate names.
- :class:`MemberRole` claims, renews and releases for the application (:meth:`want`,
  :meth:`release`, whose sends the driver passes to ``agent.act``) and answers :meth:`use`
  with the fencing token for an operation, or ``None``.

Restarts: the machines' replay marks live in memory. A driver that starts a role without
them (every start of the Trio node) calls :meth:`LeaseRole.forget_before` first, so that no
message issued before the start — by any clock within the freshness window's skew — acts
twice (spec §4, freshness).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from ..agent.handlers import Handler, Outgoing, outgoing
from ..envelope import SignedMessage
from ..messages import Family
from .lease_authority import AuthorityConfig, LeaseAuthority
from .lease_holder import HolderConfig, HolderState, LeaseHolder, Notice, NoticeKind

__all__ = ["CellRole", "LeaseRole", "MemberRole", "RegionRole", "authority_resource"]

_LEASE = frozenset({Family.LEASE})


def authority_resource(cell: int) -> str:
    """The resource whose lease makes a node its cell's lease authority."""
    return f"authority/cell-{cell}"


class LeaseRole(Handler):
    """What the three lease roles share: the lease family, their machines, restarts."""

    families = _LEASE

    @abc.abstractmethod
    def machines(self) -> Sequence[LeaseAuthority | LeaseHolder]:
        """The sans-IO machines this role drives."""

    def forget_before(self, now: int) -> None:
        """Started without replay marks at ``now``: refuse whatever was issued before
        ``now`` plus the window's skew (a message from before the start may carry a clock
        that far ahead), so that nothing from before the start acts twice."""
        for machine in self.machines():
            machine.replay.not_before = now + machine.replay.window.max_skew_ms


class RegionRole(LeaseRole):
    """Grants the authority leases of the region's cells."""

    def __init__(self, node: int, config: AuthorityConfig) -> None:
        super().__init__()
        self.authority = LeaseAuthority(
            node, config, owns=lambda r: r.startswith("authority/"),
            next_sequence=self.next_sequence,
        )  # fmt: skip

    def machines(self) -> Sequence[LeaseAuthority]:
        return (self.authority,)

    def on_message(self, signed: SignedMessage, now: int) -> list[Outgoing]:
        return outgoing(self.authority.receive(signed.message, signed.content_id, now))

    def on_tick(self, now: int) -> list[Outgoing]:
        return outgoing(self.authority.tick(now))

    def deadline(self) -> int | None:
        return self.authority.next_deadline()


class CellRole(LeaseRole):
    """The cell's lease authority while it holds the authority lease; a standby otherwise."""

    def __init__(
        self,
        node: int,
        *,
        cell: int,
        region: int,
        authority_config: AuthorityConfig,
        holder_config: HolderConfig,
        authority_term_ms: int,
        owns: Callable[[str], bool] = lambda r: not r.startswith("authority/"),
        last_epoch: int | None = None,
        admits: Callable[[int], bool] | None = None,
    ) -> None:
        super().__init__()
        self.resource = authority_resource(cell)
        self.authority_term_ms = authority_term_ms
        self.holder = LeaseHolder(node, (region,), holder_config, next_sequence=self.next_sequence)
        self.authority = LeaseAuthority(
            node, authority_config, owns=owns, epoch=last_epoch or 0, mandate_until=0,
            next_sequence=self.next_sequence, admits=admits,
        )  # fmt: skip
        self.last_epoch = last_epoch
        #: (epoch, DTN ms) each time this node took up the authority.
        self.terms: list[tuple[int, int]] = []

    def machines(self) -> Sequence[LeaseAuthority | LeaseHolder]:
        return (self.holder, self.authority)

    def active(self, now: int) -> bool:
        return self.authority.active(now)

    def revoke(
        self, resource: str, effective_at: int, now: int, reason: str | None = None
    ) -> list[Outgoing]:
        """Withdraw the grant in force on ``resource`` from ``effective_at`` (spec §6.4);
        pass the result to ``agent.act``."""
        self.at(now)
        return outgoing(self.authority.revoke(resource, effective_at, now, reason))

    def revoke_holders(
        self, which: Callable[[int], bool], effective_at: int, now: int, reason: str | None = None
    ) -> list[Outgoing]:
        """Revoke every grant held by a node ``which`` names and drop its queued claims (an
        isolation order's "its leases revoked"); pass the result to ``agent.act``."""
        self.at(now)
        return outgoing(self.authority.revoke_holders(which, effective_at, now, reason))

    def start(self, now: int) -> list[Outgoing]:
        return self._handle(self.holder.want(self.resource, self.authority_term_ms, now), now)

    def on_message(self, signed: SignedMessage, now: int) -> list[Outgoing]:
        message = signed.message
        if getattr(message, "resource", None) == self.resource:
            return self._handle(self.holder.receive(message, signed.content_id, now), now)
        return outgoing(self.authority.receive(message, signed.content_id, now))

    def on_tick(self, now: int) -> list[Outgoing]:
        sends = self._handle(self.holder.tick(now), now)
        if self.holder.state(self.resource) is HolderState.IDLE:
            sends += self._handle(self.holder.want(self.resource, self.authority_term_ms, now), now)
        return sends + outgoing(self.authority.tick(now))

    def deadline(self) -> int | None:
        # Asked after every message and tick: the earlier of the two, without a list.
        held, granted = self.holder.next_deadline(), self.authority.next_deadline()
        if held is None:
            return granted
        return held if granted is None or held <= granted else granted

    def _handle(self, actions: Sequence[object], now: int) -> list[Outgoing]:
        """The holder's sends, and what its notices about the authority lease call for."""
        sends = outgoing(actions)
        for notice in actions:
            if not isinstance(notice, Notice) or notice.resource != self.resource:
                continue
            if notice.kind not in (NoticeKind.GRANTED, NoticeKind.RENEWED):
                continue
            epoch = notice.fencing_token
            if self.last_epoch is None:
                # We do not know whether we acted in this epoch before a restart: sit it out.
                self.last_epoch = epoch
                sends += outgoing(self.holder.let_go(self.resource, now))
                continue
            before = self.authority.epoch
            sends += outgoing(self.authority.assume(epoch, notice.usable_until, now))
            if self.authority.epoch == epoch and self.authority.active(now):
                self.last_epoch = epoch
                if epoch != before:
                    self.terms.append((epoch, now))
            else:
                sends += outgoing(self.holder.let_go(self.resource, now))
        return sends


class MemberRole(LeaseRole):
    """A node's leases for its application."""

    def __init__(self, node: int, authorities: Sequence[int], config: HolderConfig) -> None:
        super().__init__()
        self.holder = LeaseHolder(node, authorities, config, next_sequence=self.next_sequence)
        #: What happened to the application's leases, oldest first (the application reads
        #: and clears it).
        self.notices: list[Notice] = []

    def machines(self) -> Sequence[LeaseHolder]:
        return (self.holder,)

    def want(self, resource: str, term_ms: int, now: int, priority: int = 0) -> list[Outgoing]:
        """Ask for ``resource`` (renewed until :meth:`release`); pass the result to
        ``agent.act``."""
        self.at(now)
        return self._notes(self.holder.want(resource, term_ms, now, priority))

    def release(self, resource: str, now: int) -> list[Outgoing]:
        """Give ``resource`` back; pass the result to ``agent.act``."""
        self.at(now)
        return self._notes(self.holder.release(resource, now))

    def use(self, resource: str, now: int, duration_ms: int = 0) -> int | None:
        """The fencing token for an operation on ``resource`` over ``[now, now + duration)``."""
        return self.holder.use(resource, now, duration_ms)

    def on_message(self, signed: SignedMessage, now: int) -> list[Outgoing]:
        return self._notes(self.holder.receive(signed.message, signed.content_id, now))

    def on_tick(self, now: int) -> list[Outgoing]:
        return self._notes(self.holder.tick(now))

    def deadline(self) -> int | None:
        return self.holder.next_deadline()

    def _notes(self, actions: Sequence[object]) -> list[Outgoing]:
        self.notices += [a for a in actions if isinstance(a, Notice)]
        return outgoing(actions)
