"""Real nodes on 127.0.0.1 and a hostile neighbour that speaks TCPCLv4 to them.

The nodes are what ``fleetwire node`` runs (:func:`open_configured_node` from a parsed config,
keys and credentials in a key folder, a real TCPCLv4 listener); the attacker is a raw TCPCLv4
session (:func:`open_tcp_cl_link`) that hands over whatever bundles a test builds: genuine ones
it relays, and forged, replayed, expired, revoked or misaddressed ones.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from fleetwire.protocol.agent.bundling import FCP_SERVICE, message_bundle
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.bpv7 import encode_bundle
from fleetwire.protocol.envelope import SignedMessage, seal
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import Header, LeaseClaim, Message
from fleetwire.protocol.tcpcl import v4
from fleetwire.protocol.trust import Role
from fleetwire.runtime.links.cl_link import ClLink, TcpclV4
from fleetwire.runtime.links.tcp import open_tcp_cl_link
from fleetwire.runtime.node import keyfiles
from fleetwire.runtime.node.config import parse_config
from fleetwire.runtime.node.node import Node
from fleetwire.runtime.node.tcp_node import open_configured_node

LOCALHOST = "127.0.0.1"
DAY = 86_400_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def dtn_now() -> int:
    return round((time.time() - DTN_EPOCH_UNIX) * 1000)


class Fleet:
    """A key folder with a root and node credentials; configs for nodes that listen."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys = folder / "keys"
        self.root = keyfiles.make_root(self.keys)
        self.node_keys: dict[int, SigningKey] = {}
        self.ports: dict[int, int] = {}

    def add(self, node: int, roles: tuple[Role, ...] = (Role.NODE,), cell: int | None = None) -> SigningKey:
        now = dtn_now()
        key = keyfiles.make_node(
            self.keys, self.root, node=node, roles=roles, not_before=now - DAY,
            not_after=now + 365 * DAY, cell=cell,
        )  # fmt: skip
        self.node_keys[node] = key
        return key

    def config_text(self, node: int, *, peers: dict[int, int] | None = None, extra: str = "",
                    store: bool = True, keys: str = "keys") -> str:  # fmt: skip
        port = self.ports.setdefault(node, free_port())
        text = f'[node]\nnumber = {node}\nkeys = "{keys}"\n'
        if store:
            text += f'store = "node-{node}.sqlite3"\n'
        text += f"[[listen]]\nport = {port}\n"
        for peer, peer_port in (peers or {}).items():
            text += f"[[peer]]\nnode = {peer}\nport = {peer_port}\n"
        text += "[reconnect]\ninitial_s = 0.05\nmaximum_s = 0.2\n" + extra
        return text

    @asynccontextmanager
    async def running(self, node: int, **kw: Any) -> AsyncIterator[Node]:
        import tomllib

        config = parse_config(tomllib.loads(self.config_text(node, **kw)), self.folder)
        async with open_configured_node(config) as running:
            yield running

    def sign(self, node: int, message: Message) -> SignedMessage:
        return seal(message, self.node_keys[node])


def claim(issuer: int, sequence: int, *, issued_at: int | None = None, resource: str = "dock/7") -> LeaseClaim:
    header = Header(issuer=issuer, issued_at=dtn_now() if issued_at is None else issued_at,
                    sequence=sequence)  # fmt: skip
    return LeaseClaim(header=header, resource=resource, term_ms=60_000)


_created = [0]


def bundle_of(envelope: bytes, *, source: int, destination: int, service: int = FCP_SERVICE,
              created_at: int | None = None, lifetime_ms: int = DAY,
              sequence: int | None = None) -> bytes:  # fmt: skip
    """A bundle carrying ``envelope``; each call gets a distinct creation timestamp unless
    ``created_at`` and ``sequence`` are given."""
    _created[0] += 1
    return encode_bundle(message_bundle(
        envelope, source=source, destination=destination,
        created_at=dtn_now() if created_at is None else created_at,
        sequence=_created[0] if sequence is None else sequence, lifetime_ms=lifetime_ms, service=service,
    ))  # fmt: skip


def zero_signature(envelope: bytes) -> bytes:
    """The envelope with its 64 signature bytes zeroed (they are its last bytes)."""
    return envelope[:-64] + bytes(64)


@asynccontextmanager
async def attacker(port: int, claims: int = 99) -> AsyncIterator[ClLink]:
    """A raw TCPCLv4 session to ``port`` that says it is node ``claims``."""
    layer = TcpclV4(v4.SessionConfig(node_id=f"ipn:{claims}.0"))
    async with open_tcp_cl_link(LOCALHOST, port, layer, local=claims) as link:
        yield link


async def receive_until(inbox: trio.MemoryReceiveChannel[SignedMessage], marker: bytes) -> list[SignedMessage]:
    """Every message delivered up to and including the one with content id ``marker``."""
    got: list[SignedMessage] = []
    while True:
        signed = await inbox.receive()
        got.append(signed)
        if signed.content_id.raw == marker:
            return got
