"""Convergence-layer links over TCP: a listener, a one-shot connect, and a reconnecting connector.

Theory of operation
-------------------
The passive side (RFC 9174 §3.1, RFC 7242 §4) listens: :func:`serve_cl` accepts connections
and runs each as a :class:`~.cl_link.ClLink` in the role ``PASSIVE``, handing the established
link to ``handler`` inside the server's nursery; the link closes when the handler returns.
A peer that fails to establish a session (wrong protocol, timeout, bad TLS) is logged and
dropped; it never stops the server.

The active side either connects once (:func:`open_tcp_cl_link`, a context manager) or keeps a
neighbour reachable with a :class:`Connector`: it connects, runs the session until it goes
down, and connects again, waiting between attempts with exponential backoff (by default 0.5 s
doubling to 60 s) and jitter drawn from the ``random.Random`` it was given, so a fleet that
lost its hub does not reconnect in lock-step and a test can replay the exact delays. The
backoff restarts from its first step once a session was established. A TCPCLv3 peer's
SHUTDOWN reconnection delay (RFC 7242 §6.1) is honoured as a lower bound.

A :class:`Connector` is itself a :class:`~.link.Link` to its neighbour that outlives the
sessions under it: ``send`` goes through the current session (``LinkDown`` between sessions),
``wait_up`` waits for the next one, and ``incoming`` (when no ``accept`` callback is given)
collects the bundles of every session in one channel.

TLS (TCPCLv4 only, §4.4): configured on the :class:`~.cl_link.TcpclV4` adapter (contexts and
``can_tls`` in its session config); the link switches to ``trio.SSLStream`` when both contact
headers carry CAN_TLS.

Orderly close under cancellation: when the owner of a node is cancelled (Ctrl-C, SIGTERM, a
deadline), Trio cancels every task under it at once — a link's reader and writer would die
before its SESS_TERM / SHUTDOWN could be written. So sessions run *shielded* and end only
through their owner: a :class:`Connector` runs in a shielded scope that only
:meth:`Connector.aclose` cancels (``open_connector`` always calls it), and a listener given a
:class:`SessionGroup` runs each accepted session in a shielded scope that
:meth:`SessionGroup.aclose` cancels after closing every session in order (all at once, each
bounded by ``LinkTimeouts.close``).

Logging (logger ``fleetwire.tcp``, INFO, what ``fleetwire node --verbose`` shows): every
connection attempt, session up and down (with the reason), each backoff delay, and every
incoming session's start and end, so an operator can see why nothing moves. Refusals (a peer
with the wrong node id, a budget exceeded) are warnings.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import NoReturn

import attrs
import trio
from fleetwire.protocol.tcpcl.common import Role

from .budgets import LinkBudget
from .cl_link import Accept, AcceptMany, ClLink, ConvergenceLayer, LinkTimeouts, open_cl_link
from .link import LinkDown

__all__ = [
    "Backoff",
    "Connector",
    "SessionGroup",
    "open_connector",
    "open_tcp_cl_link",
    "open_tcp_connector",
    "serve_cl",
]

log = logging.getLogger("fleetwire.tcp")

#: What a handler of an accepted link looks like; the link closes when it returns.
Handler = Callable[[ClLink], Awaitable[None]]


@attrs.frozen(slots=True)
class Backoff:
    """Bounded exponential backoff with jitter: attempt ``n`` waits a uniform draw from
    ``[d * (1 - jitter), d]`` where ``d = min(maximum, initial * factor**n)``."""

    initial: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    maximum: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    jitter: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )

    def delay(self, attempt: int, rng: random.Random) -> float:
        # Exponent capped so a long outage cannot overflow the float.
        d = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return d * (1.0 - self.jitter * rng.random())


# --- passive side ------------------------------------------------------------------------


class SessionGroup:
    """The sessions one or more listeners accepted, closed together and in order."""

    def __init__(self) -> None:
        self.links: set[ClLink] = set()
        self._scopes: set[trio.CancelScope] = set()

    async def aclose(self) -> None:
        """Close every session cleanly (concurrently, each bounded), then end the rest."""
        async with trio.open_nursery() as nursery:
            for link in list(self.links):
                nursery.start_soon(link.aclose)
        for scope in list(self._scopes):  # sessions still establishing, handlers still running
            scope.cancel()


async def serve_cl(
    handler: Handler | None,
    port: int,
    layer: ConvergenceLayer,
    *,
    host: str | None = None,
    local: int = 0,
    accept: Accept | None = None,
    timeouts: LinkTimeouts | None = None,
    budget: LinkBudget | None = None,
    group: SessionGroup | None = None,
    accept_many: AcceptMany | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on ``host:port`` (``port=0``: ephemeral) and serve each connection as a link.

    ``task_status.started`` gets the listeners (read the bound port from their sockets).
    ``handler(link)`` runs while the link is up; without one the link just serves ``accept``
    until the peer ends the session. With a ``group``, sessions survive the cancellation of
    this task until ``group.aclose()`` ends them in order (module doc). ``budget`` caps the sessions and received bytes of all
    the connections this listener (and any other sharing the budget) accepted.
    ``accept_many`` instead of ``accept`` takes custody in batches (see :mod:`.cl_link`).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)

    async def on_stream(stream: trio.SocketStream) -> None:
        if group is None:
            await serve_one(stream)
            return
        with trio.CancelScope(shield=True) as scope:  # ended by group.aclose (module doc)
            group._scopes.add(scope)
            try:
                await serve_one(stream)
            finally:
                group._scopes.discard(scope)

    async def serve_one(stream: trio.SocketStream) -> None:
        where = _address(stream)
        if budget is not None and not budget.admit_connection():
            await trio.aclose_forcefully(stream)
            return
        established = False
        try:
            async with open_cl_link(
                stream, layer, role=Role.PASSIVE, local=local, accept=accept, timeouts=timeouts,
                budget=budget, accept_many=accept_many,
            ) as link:  # fmt: skip
                if budget is not None:
                    budget.connection_done()
                    established = True
                log.info("%s: incoming session from %s up (peer %s)", layer.name, where,
                         link.peer_node_id or "unnamed")  # fmt: skip
                if group is not None:
                    group.links.add(link)
                try:
                    if handler is not None:
                        await handler(link)
                    else:
                        await link.wait_down()
                finally:
                    if group is not None:
                        group.links.discard(link)
            log.info("%s: incoming session from %s down: %s", layer.name, where, link.down_reason)
        except LinkDown as error:
            log.info("%s: incoming session from %s failed: %s", layer.name, where, error)
        finally:
            if budget is not None and not established:
                budget.connection_done()

    await trio.serve_listeners(on_stream, listeners, task_status=task_status)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


def _address(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError, TypeError):
        return "?"
    return f"{host}:{port}"


# --- active side -------------------------------------------------------------------------


@asynccontextmanager
async def open_tcp_cl_link(
    host: str,
    port: int,
    layer: ConvergenceLayer,
    *,
    local: int = 0,
    peer: int | None = None,
    accept: Accept | None = None,
    timeouts: LinkTimeouts | None = None,
    connect_timeout: float = 10.0,
    accept_many: AcceptMany | None = None,
) -> AsyncIterator[ClLink]:
    """Connect once and run one session; raises :class:`LinkDown` if that fails."""
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as error:
        raise LinkDown(f"cannot connect to {host}:{port}: {error or 'timed out'}") from error
    async with open_cl_link(
        stream, layer, role=Role.ACTIVE, local=local, peer=peer, accept=accept, timeouts=timeouts,
        accept_many=accept_many,
    ) as link:
        yield link


class Connector:
    """A neighbour we keep connecting to; a :class:`~.link.Link` across sessions.

    Run it with :func:`open_connector` / :func:`open_tcp_connector`.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[trio.abc.Stream]],
        layer: ConvergenceLayer,
        *,
        rng: random.Random,
        local: int = 0,
        peer: int | None = None,
        accept: Accept | None = None,
        backoff: Backoff | None = None,
        timeouts: LinkTimeouts | None = None,
        connect_timeout: float = 10.0,
        name: str = "",
        peer_node_id: str | None = None,
    ) -> None:
        self._connect = connect
        self._layer = layer
        self._rng = rng
        self._local = local
        self._peer = peer
        self._peer_node_id = peer_node_id
        self._backoff = backoff or Backoff()
        self._timeouts = timeouts or LinkTimeouts()
        self._connect_timeout = connect_timeout
        self.name = name or layer.name
        self._link: ClLink | None = None
        self._changed = trio.Event()
        self._closed = False
        self._scope: trio.CancelScope | None = None
        self._in_send, self._in_recv = trio.open_memory_channel[bytes](
            self._timeouts.incoming_capacity
        )
        self._accept: Accept
        if accept is None:
            self._accept = self._to_incoming
        else:
            self._accept = accept
            self._in_send.close()
        #: Connection attempts made, sessions established, and the last failure (for logs).
        self.attempts = 0
        self.sessions = 0
        self.last_error = ""
        #: Delays slept between attempts, newest last (bounded; for tests and diagnostics).
        self.delays: list[float] = []
        self._link_was_up = False

    def __repr__(self) -> str:
        return f"<Connector {self.name} up={self.is_up} sessions={self.sessions}>"

    # --- the Link surface ----------------------------------------------------------------

    @property
    def local(self) -> int:
        return self._local

    @property
    def peer(self) -> int:
        if self._peer is not None:
            return self._peer
        return self._link.peer if self._link is not None else -1

    @property
    def link(self) -> ClLink | None:
        """The current session's link, if one is established."""
        return self._link

    @property
    def is_up(self) -> bool:
        return self._link is not None and self._link.is_up

    @property
    def confirms_delivery(self) -> bool:
        """Whether the current session's ``send`` means "acknowledged" (see ClLink)."""
        return self._link.confirms_delivery if self._link is not None else True

    @property
    def incoming(self) -> trio.MemoryReceiveChannel[bytes]:
        return self._in_recv

    async def wait_up(self) -> None:
        while not self.is_up:
            if self._closed:
                raise LinkDown(f"connector {self.name} is closed")
            await self._changed.wait()

    async def wait_down(self) -> None:
        while self.is_up:
            link = self._link
            assert link is not None
            await link.wait_down()

    async def send(self, bundle: bytes) -> None:
        link = self._link
        if link is None or not link.is_up:
            raise LinkDown(f"{self.name}: no session ({self.last_error or 'connecting'})")
        await link.send(bundle)

    async def send_many(self, bundles: Sequence[bytes]) -> list[LinkDown | None]:
        """:meth:`ClLink.send_many` on the current session (every bundle fails without one)."""
        link = self._link
        if link is None or not link.is_up:
            down = LinkDown(f"{self.name}: no session ({self.last_error or 'connecting'})")
            await trio.lowlevel.checkpoint()
            return [down] * len(bundles)
        return await link.send_many(bundles)

    async def aclose(self) -> None:
        """Stop reconnecting and close the current session cleanly."""
        self._closed = True
        self._in_send.close()
        link = self._link
        if link is not None:
            await link.aclose()
        if self._scope is not None:
            self._scope.cancel()
        self._notify()

    # --- running ---------------------------------------------------------------------------

    async def _to_incoming(self, data: bytes, link: ClLink) -> None:
        await self._in_send.send(data)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect, until :meth:`aclose`.

        Shielded: cancelling the caller does not end it (the session's orderly close needs
        its tasks); only :meth:`aclose` does, which :func:`open_connector` always calls.
        """
        task_status.started()
        with trio.CancelScope(shield=True) as scope:
            self._scope = scope
            attempt = 0
            while not self._closed:
                hint = await self._one_session()
                if self._link_was_up:
                    attempt = 0
                if self._closed:
                    break
                delay = max(self._backoff.delay(attempt, self._rng), hint)
                attempt += 1
                self.delays.append(delay)
                del self.delays[:-64]
                log.info("%s: next attempt in %.1f s (backoff)", self.name, delay)
                await trio.sleep(delay)

    async def _one_session(self) -> float:
        """Connect and run one session to its end; returns a minimum delay asked by the peer."""
        self._link_was_up = False
        self.attempts += 1
        log.info("%s: connecting (attempt %d)", self.name, self.attempts)
        try:
            with trio.fail_after(self._connect_timeout):
                stream = await self._connect()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as error:
            self.last_error = f"connect failed: {error or 'timed out'}"
            log.info("%s: %s", self.name, self.last_error)
            return 0.0
        hint = 0.0
        try:
            async with open_cl_link(
                stream,
                self._layer,
                role=Role.ACTIVE,
                local=self._local,
                peer=self._peer,
                accept=self._accept,
                timeouts=self._timeouts,
                peer_node_id=self._peer_node_id,
            ) as link:
                self._link_was_up = True
                self.sessions += 1
                self._link = link
                self._notify()
                log.info("%s: up (peer %s)", self.name, link.peer_node_id or "unnamed")
                await link.wait_down()
                self.last_error = link.down_reason
                log.info("%s: down: %s", self.name, link.down_reason)
                hint = float(link.reconnect_delay_s or 0)
        except LinkDown as error:
            self.last_error = str(error)
            log.info("%s: session failed: %s", self.name, error)
        finally:
            self._link = None
            self._notify()
        return hint


@asynccontextmanager
async def open_connector(connector: Connector) -> AsyncIterator[Connector]:
    """Run ``connector`` in a nursery owned by the block; close it when the block exits."""
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(connector.run)
        try:
            yield connector
        except BaseException as error:  # re-raised outside the nursery: not grouped
            body_error = error
        finally:
            with trio.CancelScope(shield=True):
                await connector.aclose()
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


@asynccontextmanager
async def open_tcp_connector(
    host: str,
    port: int,
    layer: ConvergenceLayer,
    *,
    rng: random.Random,
    **options: object,
) -> AsyncIterator[Connector]:
    """A :class:`Connector` to ``host:port`` (options as for :class:`Connector`)."""
    connector = Connector(
        partial(trio.open_tcp_stream, host, port),
        layer,
        rng=rng,
        name=f"{layer.name}://{host}:{port}",
        **options,  # type: ignore[arg-type]
    )
    async with open_connector(connector) as running:
        yield running
