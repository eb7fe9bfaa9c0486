"""A node on real sockets: its store, its listeners and its connectors, from a config file.

The listeners accept neighbours over TCPCLv4 / TCPCLv3 / MTCP and hand each established
session to the node as a link; the connectors keep dialling the configured peers (with
backoff) and are links themselves. Either way the custody callback is the node's ``accept``:
a transfer is acknowledged only after the bundle is in the store.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import trio
from fleetwire.protocol.tcpcl import v3, v4

from . import keyfiles
from .cl_link import ClLink, ConvergenceLayer, CustodyRefused, Mtcp, Refusal, TcpclV3, TcpclV4
from .config import ConfigError, Endpoint, FileConfig, TlsConfig
from .contacts import DTN_EPOCH_UNIX, Clock
from .memory_store import MemoryBundleStore
from .node import BundleRefused, Node, NodeConfig, open_node
from .revocation_files import watch_revocations
from .sqlite_store import open_sqlite_store
from .store import BundleStore
from .tcp import Backoff, Connector, open_connector, serve_cl


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
        async with open_sqlite_store(config.store, quota=config.quota) as store:
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
        replay=config.replay,
        replay_floor_at_start=config.store is None,
        revocations_file=config.keys / keyfiles.REVOCATIONS_NAME,
    )
    clock = Clock.from_unix(trio.current_time(), time.time())
    async with _open_store(config) as store, open_node(node_config, store, clock=clock) as node:
        async def accept(data: bytes, link: ClLink | Any) -> None:
            try:
                await node.accept(data, getattr(link, "peer", None))
            except BundleRefused as exc:
                reason = Refusal.NO_RESOURCES if exc.store_full else Refusal.NOT_ACCEPTABLE
                raise CustodyRefused(reason, exc.message) from None

        async def serve_neighbour(link: ClLink) -> None:
            node.add_link(link)
            await link.wait_closed()

        backoff = Backoff(initial=config.reconnect_initial_s, maximum=config.reconnect_maximum_s)
        async with AsyncExitStack() as connectors:
            for peer in config.peers:
                connector = _connector(peer, config, accept, backoff)
                await connectors.enter_async_context(open_connector(connector))
                node.add_link(connector)
            async with trio.open_nursery() as listeners:
                for endpoint in config.listen:
                    serve = partial(
                        serve_cl, serve_neighbour, endpoint.port,
                        layer_for(endpoint.layer, config.node, config.tls),
                        host=endpoint.host, local=config.node, accept=accept,
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
                    listeners.cancel_scope.cancel()


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
    )
