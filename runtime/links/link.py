"""The link interface: what a node needs from a convergence layer toward one neighbour.

A link joins this node (``local``) to one neighbour (``peer``). Bundles are opaque ``bytes``
here; parsing them is the BPv7 layer's job. Every link the node uses implements this same
small surface:

* the simulated loopback link (:mod:`fleetwire.runtime.links.loopback`), where ``send`` returns
  once the last bit has left the transmitter, and
* the TCPCLv4 link (RFC 9174), where ``send`` returns once the peer has acknowledged the whole
  transfer (the final XFER_ACK, §5.2.3), which our peers send only after their store holds the
  bundle; a session failure or SESS_TERM surfaces as :class:`LinkDown`.

Either way, "``send`` returned" means "the link took custody of the bytes": the caller may
release its own copy's transmission state, and on :class:`LinkDown` it keeps the bundle in
the store and routes it again later. ``send`` never drops a bundle silently on our side; a
simulated medium may lose it afterwards, as a real one would.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import trio
from fleetwire.protocol.errors import FleetwireError


class LinkDown(FleetwireError):
    """The link cannot take the bundle now (window closed, session ended, link closed)."""

    code = "link-down"


@runtime_checkable
class Link(Protocol):
    """One neighbour, as the node sees it."""

    @property
    def local(self) -> int:
        """This node's number."""
        ...

    @property
    def peer(self) -> int:
        """The neighbour's node number."""
        ...

    @property
    def is_up(self) -> bool:
        """True when :meth:`send` can start a transfer now."""
        ...

    @property
    def incoming(self) -> trio.abc.ReceiveChannel[bytes]:
        """Bundles received from the peer, in arrival order; ends when the link is closed."""
        ...

    async def send(self, bundle: bytes) -> None:
        """Return once the link has taken ``bundle``; raise :class:`LinkDown` if it cannot.

        Concurrent sends are transmitted one after another, in call order.
        """
        ...

    async def wait_up(self) -> None:
        """Return when the link is up (at once if it already is)."""
        ...

    async def wait_down(self) -> None:
        """Return when the link is down (at once if it already is)."""
        ...

    async def aclose(self) -> None:
        """Close this end: later sends raise :class:`LinkDown`, ``incoming`` ends."""
        ...


class LinkWrapper:
    """A :class:`Link` that passes everything to the link it wraps: subclass it and override
    :meth:`send` to watch or count what a node puts on a link (the demo's byte count, a test's
    chunk count). ``send_many`` is deliberately not passed on, so every bundle goes through
    :meth:`send`."""

    def __init__(self, link: Link) -> None:
        self._link = link

    @property
    def local(self) -> int:
        return self._link.local

    @property
    def peer(self) -> int:
        return self._link.peer

    @property
    def is_up(self) -> bool:
        return self._link.is_up

    @property
    def confirms_delivery(self) -> bool:
        """Whether the wrapped link's layer acknowledges transfers (no-ack layers say False)."""
        return bool(getattr(self._link, "confirms_delivery", True))

    @property
    def incoming(self) -> trio.abc.ReceiveChannel[bytes]:
        return self._link.incoming

    async def send(self, bundle: bytes) -> None:
        await self._link.send(bundle)

    async def wait_up(self) -> None:
        await self._link.wait_up()

    async def wait_down(self) -> None:
        await self._link.wait_down()

    async def aclose(self) -> None:
        await self._link.aclose()
