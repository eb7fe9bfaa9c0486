"""A node on real sockets: its store, its listeners and its connectors, from a config file.

The listeners accept neighbours over TCPCLv4 / TCPCLv3 / MTCP and hand each established
session to the node as a link; the connectors keep dialling the configured peers (with
backoff) and are links themselves. The custody callback is the node's: ``accept_many`` for
accepted sessions (a run of received bundles, one durable commit — into the node's ingress,
custody first, see :mod:`.ingress` — then the acks in order) and ``accept`` for the
connectors; either way a transfer is acknowledged only after the bundle is in the store.

The link table (one link per neighbour node number) follows three rules:

* a session we accepted never displaces a link to the same node that is up (our own
  connector, or an earlier session): it stays open and its bundles are taken, but nothing is
  sent on it — so a process that merely *claims* ``ipn:7.0`` cannot capture node 7's traffic;
* when an accepted session that held a node's place ends, the configured connector for that
  node (if any) takes the place back, so traffic never stays stuck on a dead session;
* a neighbour without an ``ipn`` node number (MTCP, a ``dtn:`` TCPCLv3 peer) gets a place of
  its own (negative numbers, one per session) instead of sharing one.

Relaying (``[node] accept_from``): bundles for this node are taken from anyone (they are
verified on delivery); bundles to relay are taken only from known neighbours — by default
``"fleet"``: configured peers and nodes holding a credential in the keys folder. Without TLS a
neighbour's node id is only a claim, so this stops strangers, not a liar; with TLS and
``authenticate_node_id`` the claim is checked against the certificate (RFC 9174 §4.4.3).

Shutdown: when the block exits, every session (accepted and dialled) is closed at once and
in an orderly way (SESS_TERM / SHUTDOWN, TLS close_notify), all within
:attr:`~.cl_link.LinkTimeouts.close` (1 s) however silent the peers are.
"""

from __future__ import annotations

import itertools
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import trio
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX, Clock
from fleetwire.protocol.bpv7 import BundleError, IpnEid, decode_bundle
from fleetwire.protocol.tcpcl import v3, v4

from ..links.budgets import LinkBudget
from ..links.cl_link import (
    ClLink,
    ConvergenceLayer,
    CustodyRefused,
    Mtcp,
    Refusal,
    TcpclV3,
    TcpclV4,
)
from ..links.tcp import Backoff, Connector, SessionGroup, open_connector, serve_cl
from ..store.memory_store import MemoryBundleStore
from ..store.sqlite_store import open_sqlite_store
from ..store.store import BundleStore
from . import keyfiles
from .config import ConfigError, Endpoint, FileConfig, TlsConfig
from .node import BundleRefused, Node, NodeConfig, open_node
from .revocation_files import watch_revocations

log = logging.getLogger("fleetwire.tcp")


def tls_contexts(tls: TlsConfig) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for TCPCLv4 over TLS (RFC 9174 §4.4).

    Both sides present this node's certificate and require the neighbour's, checked against
    ``tls.ca``. Host names are not checked: neighbours are known by node id, and with
    ``authenticate_node_id`` the link checks that id against the certificate (§4.4.3).
    """
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_cert_chain(str(tls.certificate), str(tls.key))
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
        client.check_hostname = False
        client.load_cert_chain(str(tls.certificate), str(tls.key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"[tls] cannot load the certificate, key or CA: {exc}",
            hint="PEM files: certificate and its private key, and the CA certificates",
        ) from None
    return server, client


def layer_for(kind: str, node: int, tls: TlsConfig | None = None) -> ConvergenceLayer:
    """The convergence-layer adapter for ``kind``, naming this node ``ipn:<node>.0``."""
    eid = f"ipn:{node}.0"
    if kind == "tcpclv4" and tls is not None:
        server, client = tls_contexts(tls)
        return TcpclV4(
            v4.SessionConfig(node_id=eid, can_tls=True, require_tls=tls.require),
            server_context=server,
            client_context=client,
            authenticate_node_id=tls.authenticate_node_id,
        )
    if kind == "tcpclv4":
        return TcpclV4(v4.SessionConfig(node_id=eid))
    if kind == "tcpclv3":
        return TcpclV3(v3.TcpclV3Config(local_eid=eid))
    return Mtcp()


@asynccontextmanager
async def _open_store(config: FileConfig) -> AsyncIterator[BundleStore]:
    if config.store is None:
        yield MemoryBundleStore(config.quota)
    else:
        wal_limit = config.store_wal_limit_kb * 1024
        async with open_sqlite_store(config.store, quota=config.quota, wal_limit=wal_limit) as store:
            yield store


@asynccontextmanager
async def open_configured_node(config: FileConfig) -> AsyncIterator[Node]:
    """Run the node a config file describes until the block exits."""
    now_ms = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    node_config = NodeConfig(
        node=config.node,
        key=keyfiles.load_node_key(config.keys, config.node),
        trust=keyfiles.load_trust(config.keys, now_ms),
        bundle_lifetime_ms=config.bundle_lifetime_ms,
        contact_plan=config.contact_plan,
        static_routes=config.static_routes,
        parents={config.node: config.parent} if config.parent is not None else {},
        retain_unconfirmed_s=config.links.retain_unconfirmed_s,
        ingress_max_bundles=config.links.ingress_max_bundles,
        ingress_max_bytes=config.links.ingress_max_bytes,
        replay=config.replay,
        replay_floor_at_start=config.store is None,
        revocations_file=config.keys / keyfiles.REVOCATIONS_NAME,
        protocol_version=config.protocol_version,
    )
    clock = Clock.from_unix(trio.current_time(), time.time())
    async with _open_store(config) as store, open_node(node_config, store, clock=clock) as node:
        relay = RelayPolicy(config, node_config)

        async def accept(data: bytes, link: ClLink | Any) -> None:
            peer = getattr(link, "peer", None)
            relay.check(data, peer)
            try:
                await node.accept(data, peer)
            except BundleRefused as exc:
                reason = Refusal.NO_RESOURCES if exc.store_full else Refusal.NOT_ACCEPTABLE
                raise CustodyRefused(reason, exc.message) from None

        async def accept_many(datas: list[bytes], link: ClLink) -> list[Refusal | None]:
            """Batch custody for accepted sessions: the relay check per bundle (a stranger's
            run is taken in part), one durable commit for the rest, outcomes in order (the
            link sends the acks in receive order after this returns)."""
            peer = link.peer
            outcomes: list[Refusal | None] = [None] * len(datas)
            if relay.knows(peer):
                taken = list(range(len(datas)))
            else:
                taken = []
                for index, data in enumerate(datas):
                    try:
                        relay.check(data, peer)
                    except CustodyRefused as exc:
                        outcomes[index] = exc.reason
                    else:
                        taken.append(index)
            if taken:
                refusals = await node.accept_many([datas[i] for i in taken], peer)
                for index, refused in zip(taken, refusals, strict=True):
                    if refused is not None:
                        outcomes[index] = (
                            Refusal.NO_RESOURCES if refused.store_full else Refusal.NOT_ACCEPTABLE
                        )
            return outcomes

        connectors: dict[int, Connector] = {}
        accepted = SessionGroup()
        slots = itertools.count(-2, -1)

        async def serve_neighbour(link: ClLink) -> None:
            await _serve_neighbour(node, link, connectors, slots)

        backoff = Backoff(initial=config.reconnect_initial_s, maximum=config.reconnect_maximum_s)
        budget = LinkBudget(
            max_sessions=config.links.max_sessions,
            max_receive_bytes=config.links.max_receive_bytes,
            max_connections=2 * config.links.max_sessions,
        )
        async with AsyncExitStack() as stack:
            for peer in config.peers:
                connector = _connector(peer, config, accept, backoff)
                await stack.enter_async_context(open_connector(connector))
                assert peer.node is not None
                connectors[peer.node] = connector
                node.add_link(connector)
            async with trio.open_nursery() as listeners:
                for endpoint in config.listen:
                    serve = partial(
                        serve_cl, serve_neighbour, endpoint.port,
                        layer_for(endpoint.layer, config.node, config.tls),
                        host=endpoint.host, local=config.node, accept_many=accept_many,
                        budget=budget, group=accepted,
                    )  # fmt: skip
                    try:
                        await listeners.start(serve)
                    except OSError as exc:
                        raise ConfigError(
                            f"cannot listen on {endpoint.host}:{endpoint.port}: "
                            f"{exc.strerror or exc}",
                            hint="another process may hold that port; change [[listen]] port",
                        ) from None
                listeners.start_soon(watch_revocations, node, config.keys)
                try:
                    yield node
                finally:
                    with trio.CancelScope(shield=True):
                        await _close_all(accepted, list(connectors.values()))
                    listeners.cancel_scope.cancel()


async def _close_all(accepted: SessionGroup, connectors: list[Connector]) -> None:
    """Close every session at once, each the layer's orderly way (each bounded, 1 s)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accepted.aclose)
        for connector in connectors:
            nursery.start_soon(connector.aclose)


async def _serve_neighbour(
    node: Node, link: ClLink, connectors: dict[int, Connector], slots: itertools.count[int]
) -> None:
    """Keep ``link`` (a session we accepted) in the link table by the rules above."""
    if link.peer < 0:
        link.use_slot(next(slots))
    peer = link.peer
    current = node.links.get(peer)
    if current is not None and current is not link and current.is_up:
        log.warning(
            "%s session announcing %s not used for sending: the link to node %d is up "
            "(an unsolicited session never displaces it)",
            link.layer_name, link.peer_node_id or "no node id", peer,
        )  # fmt: skip
        await link.wait_closed()
        return
    node.add_link(link)
    try:
        await link.wait_closed()
    finally:
        fallback = connectors.get(peer)
        if node.links.get(peer) is link and fallback is not None:
            node.add_link(fallback)  # the configured neighbour takes its place back


class RelayPolicy:
    """``[node] accept_from``: whose bundles this node relays (module docstring)."""

    def __init__(self, config: FileConfig, node_config: NodeConfig) -> None:
        self._node = config.node
        self._mode = config.accept_from if isinstance(config.accept_from, str) else "list"
        listed = () if isinstance(config.accept_from, str) else config.accept_from
        self._known = {p.node for p in config.peers if p.node is not None} | set(listed)
        self._trust = node_config.trust
        self._fleet: set[int] = set()

    def knows(self, peer: int | None) -> bool:
        if self._mode == "any" or (peer is not None and peer in self._known):
            return True
        if self._mode != "fleet" or peer is None or peer < 0:
            return False
        if peer not in self._fleet:  # credentials may have been added since: look again
            self._fleet = {c.node for c in self._trust.credentials()}
        return peer in self._fleet

    def check(self, data: bytes, peer: int | None) -> None:
        """Raise :class:`CustodyRefused` for a bundle to relay from an unknown neighbour."""
        if self.knows(peer):
            return
        try:
            destination = decode_bundle(data).primary.destination
        except BundleError:
            return  # the node refuses it with the precise reason
        if isinstance(destination, IpnEid) and destination.node == self._node:
            return  # for us: verified on delivery, whoever carried it
        log.warning(
            "code=relay-refused bundle for %s from unknown neighbour %s refused "
            "(Not Acceptable; [node] accept_from = %r)",
            destination, peer, self._mode,
        )  # fmt: skip
        raise CustodyRefused(Refusal.NOT_ACCEPTABLE, "this node relays only for known neighbours")


def _connector(peer: Endpoint, config: FileConfig, accept: Any, backoff: Backoff) -> Connector:
    assert peer.node is not None

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(peer.host, peer.port)

    return Connector(
        connect,
        layer_for(peer.layer, config.node, config.tls),
        rng=random.Random(),
        local=config.node,
        peer=peer.node,
        accept=accept,
        backoff=backoff,
        name=f"{peer.layer}://{peer.host}:{peer.port}",
        peer_node_id=peer.node_id,
    )
