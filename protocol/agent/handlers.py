"""Roles inside the agent: sans-IO handlers for the messages of one family (spec §6).

Theory of operation
-------------------
A coordination role (a lease authority, a lease holder…) decides from the verified messages
it is given and from the clock; it never signs, stores or sends anything itself. A
:class:`Handler` is such a role in the shape the bundle agent drives
(:meth:`~.agent.BundleAgent.attach`):

* ``on_message(signed, now)`` — a verified, fresh message of one of the handler's
  ``families`` addressed to this node. The agent gives it to the handler *instead of*
  handing it to the application (it reports it as :class:`~.actions.Handled`), and only
  acknowledges it — replay memory, tombstone, delivery report — once the handler's answers
  are in the store: an answer is never lost to a crash between the two.
* ``on_tick(now)`` — the handler's ``deadline()`` has come. The agent keeps that deadline
  among its own timers, so a driver only ever sees the one :class:`~.actions.WakeAt`.
* ``start(now)`` — once, when attached (claims a role makes from the start).

Each returns :class:`Outgoing` messages, which the agent signs with the node's key, bundles
and routes like any :meth:`~.agent.BundleAgent.send`. A role's application side (a member
wanting a lease, say) is a method of the role that returns the same ``Outgoing`` list, for
the driver to pass to :meth:`~.agent.BundleAgent.act`.

Message sequences: every machine of a node numbers its messages from the node's one counter
(spec §4: a writer's sequence grows across all its messages), so the agent hands each
handler :meth:`~.agent.BundleAgent.next_message_sequence` when it attaches it, and a handler
calls :meth:`Handler.next_sequence` while it runs (it knows ``now`` then).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

import attrs

from ..envelope import SignedMessage
from ..errors import LocalProtocolError
from ..messages import Family, Message
from ..messages import accel as init_accel

__all__ = ["Handler", "Outgoing", "outgoing"]


@attrs.frozen(slots=True)
class Outgoing:
    """Send ``message`` (unsigned: the agent signs it) to node ``to``."""

    message: Message
    to: int


# A role's every send builds one (install_fast_init: the C __init__ where built).
init_accel.install_fast_init(Outgoing)


def outgoing(actions: Iterable[object]) -> list[Outgoing]:
    """The sends among a coordination machine's actions (anything with ``message`` and
    ``to``: the machines' own ``Send`` classes); the other actions are for the role."""
    found: list[Outgoing] = []
    for action in actions:
        to = getattr(action, "to", None)
        if isinstance(to, int):
            found.append(Outgoing(action.message, to))  # type: ignore[attr-defined]
    return found


class Handler(abc.ABC):
    """A role the agent drives (module docstring)."""

    #: The message families this handler takes in place of the application.
    families: frozenset[Family] = frozenset()

    def __init__(self) -> None:
        self._sequence: Callable[[int], int] | None = None
        self._now = 0

    def bind(self, sequence: Callable[[int], int]) -> None:
        """Called by the agent when it attaches the handler: the node's one counter."""
        self._sequence = sequence

    def next_sequence(self) -> int:
        """A message sequence from the node's counter (for the machines' ``next_sequence``)."""
        if self._sequence is None:
            raise LocalProtocolError("the handler is not attached to an agent")
        return self._sequence(self._now)

    def at(self, now: int) -> None:
        """Say what time it is before calling a machine (the sequences derive from it)."""
        self._now = now

    def start(self, now: int) -> list[Outgoing]:
        """Once, when attached."""
        return []

    @abc.abstractmethod
    def on_message(self, signed: SignedMessage, now: int) -> list[Outgoing]:
        """One verified message of the handler's families, addressed to this node."""

    @abc.abstractmethod
    def on_tick(self, now: int) -> list[Outgoing]:
        """The deadline has come (or passed)."""

    @abc.abstractmethod
    def deadline(self) -> int | None:
        """When :meth:`on_tick` next has something to do (``None``: nothing pending)."""
