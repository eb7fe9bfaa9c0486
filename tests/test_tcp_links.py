"""Convergence-layer links over real TCP sockets on 127.0.0.1 (ephemeral ports).

Every socket operation runs under ``trio.fail_after``; the real clock is used (``MockClock``
would jump time while the kernel moves bytes), so the timeouts here are generous bounds, not
waits: nothing sleeps.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetwire.protocol.tcpcl import v3, v4
from fleetwire.runtime.links.cl_link import (
    Accept,
    ClLink,
    ConvergenceLayer,
    CustodyRefused,
    LinkTimeouts,
    Mtcp,
    Refusal,
    TcpclV3,
    TcpclV4,
    TransferRefusedByPeer,
    custody,
)
from fleetwire.runtime.links.link import LinkDown
from fleetwire.runtime.links.tcp import Backoff, open_tcp_cl_link, open_tcp_connector, serve_cl

LOCALHOST = "127.0.0.1"


def v4_layer(node: int, **kw: object) -> TcpclV4:
    return TcpclV4(v4.SessionConfig(node_id=f"ipn:{node}.0"), **kw)  # type: ignore[arg-type]


LAYERS: dict[str, Callable[[int], ConvergenceLayer]] = {
    "tcpclv4": v4_layer,
    "tcpclv3": lambda node: TcpclV3(v3.TcpclV3Config(f"ipn:{node}.0")),
    "mtcp": lambda node: Mtcp(),
}


class Server:
    """A listener whose accepted links the test can reach."""

    def __init__(self) -> None:
        self.port = 0
        self.links_send, self.links = trio.open_memory_channel[ClLink](8)
        self.done = trio.Event()

    async def handler(self, link: ClLink) -> None:
        await self.links_send.send(link)
        await _first_of(self.done.wait, link.wait_down)


async def _first_of(*waits: Callable[[], object]) -> None:
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], object]) -> None:
            await wait()  # type: ignore[misc]
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)


@asynccontextmanager
async def serving(
    layer: ConvergenceLayer, *, accept: Accept | None = None, port: int = 0
) -> AsyncIterator[Server]:
    server = Server()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_cl(
                server.handler,
                port,
                layer,
                host=LOCALHOST,
                accept=accept,
                task_status=task_status,
            )
        )
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        finally:
            server.done.set()
            nursery.cancel_scope.cancel()


class Collector:
    def __init__(self) -> None:
        self.bundles: list[bytes] = []
        self.count = 0
        self.changed = trio.Event()

    async def __call__(self, bundle: bytes, link: ClLink) -> None:
        self.bundles.append(bundle)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while len(self.bundles) < n:
            await self.changed.wait()


SIZES = [1, 1_000, 64 * 1024, 1_000_000]


@pytest.mark.parametrize("kind", list(LAYERS))
async def test_bundles_both_ways_over_real_sockets(kind: str) -> None:
    make = LAYERS[kind]
    at_server, at_client = Collector(), Collector()
    bundles = [random.Random(n).randbytes(n) for n in SIZES]
    with trio.fail_after(10):
        async with (
            serving(make(2), accept=at_server) as server,
            open_tcp_cl_link(LOCALHOST, server.port, make(1), accept=at_client) as client,
        ):
            theirs = await server.links.receive()
            for bundle in bundles:
                await client.send(bundle)
                await theirs.send(bundle[::-1])
            await at_server.wait_for(len(bundles))
            await at_client.wait_for(len(bundles))
            if kind != "mtcp":
                assert client.peer == 2 and theirs.peer == 1
    assert at_server.bundles == bundles
    assert at_client.bundles == [b[::-1] for b in bundles]


@pytest.mark.parametrize("kind", ["tcpclv4", "tcpclv3"])
async def test_final_ack_is_not_sent_before_accept_returned(kind: str) -> None:
    make = LAYERS[kind]
    entered, release = trio.Event(), trio.Event()
    stored: list[bytes] = []

    async def slow_store(bundle: bytes, link: ClLink) -> None:
        entered.set()
        await release.wait()
        stored.append(bundle)

    bundle = random.Random(5).randbytes(300_000)
    at_client = Collector()
    with trio.fail_after(10):
        async with (
            serving(make(2), accept=slow_store) as server,
            open_tcp_cl_link(LOCALHOST, server.port, make(1), accept=at_client) as client,
            trio.open_nursery() as nursery,
        ):
            theirs = await server.links.receive()
            sent = trio.Event()

            async def send() -> None:
                await client.send(bundle)
                sent.set()

            nursery.start_soon(send)
            await entered.wait()
            # A premature final ack would be queued before this reply, and TCP keeps order:
            # once the reply is in, any such ack has been processed by the sender.
            await theirs.send(b"reply")
            await at_client.wait_for(1)
            assert not sent.is_set() and not stored
            release.set()
            await sent.wait()
            assert stored == [bundle]


@pytest.mark.parametrize("kind", ["tcpclv4", "tcpclv3"])
async def test_refusing_accept_makes_send_raise(kind: str) -> None:
    make = LAYERS[kind]

    async def full(bundle: bytes, link: ClLink) -> None:
        raise CustodyRefused(Refusal.NO_RESOURCES, "quota")

    with trio.fail_after(10):
        async with (
            serving(make(2), accept=full) as server,
            open_tcp_cl_link(LOCALHOST, server.port, make(1)) as client,
        ):
            with pytest.raises(TransferRefusedByPeer):
                await client.send(b"refuse me" * 100)
            assert client.is_up


@pytest.mark.parametrize("kind", list(LAYERS))
async def test_peer_killed_abruptly_fails_pending_sends(kind: str) -> None:
    """The passive side's socket is reset (SO_LINGER 0) while a send waits for its ack."""
    make = LAYERS[kind]
    never = trio.Event()

    async def stuck(bundle: bytes, link: ClLink) -> None:
        await never.wait()

    with trio.fail_after(10):
        async with (
            serving(make(2), accept=stuck) as server,
            open_tcp_cl_link(LOCALHOST, server.port, make(1)) as client,
        ):
            theirs = await server.links.receive()
            big = b"z" * 1_000_000
            async with trio.open_nursery() as nursery:
                outcome: list[BaseException | None] = []

                async def send() -> None:
                    try:
                        await client.send(big)
                        outcome.append(None)
                    except LinkDown as error:
                        outcome.append(error)

                nursery.start_soon(send)
                await trio.sleep(0.05)
                sock = theirs.stream.socket  # type: ignore[attr-defined]
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                killed_at = trio.current_time()
                sock.close()
            if kind == "mtcp":
                assert outcome == [None]  # written to TCP is all MTCP can promise
            else:
                assert isinstance(outcome[0], LinkDown), outcome
            await client.wait_down()
            assert trio.current_time() - killed_at < 2.0
            with pytest.raises(LinkDown):
                await client.send(b"after the reset")


async def test_garbage_from_a_client_costs_the_server_one_connection() -> None:
    """A client speaking nonsense is dropped; the server goes on serving real peers."""
    at_server = Collector()
    with trio.fail_after(10):
        async with serving(v4_layer(2), accept=at_server) as server:
            junk = await trio.open_tcp_stream(LOCALHOST, server.port)
            await junk.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
            try:
                answer = await junk.receive_some(1024)
            except trio.BrokenResourceError:  # a reset is a close too
                answer = b""
            assert answer == b""  # closed without a word (RFC 9174 §4.3)
            await junk.aclose()
            async with open_tcp_cl_link(LOCALHOST, server.port, v4_layer(1)) as client:
                await client.send(b"real bundle")
    assert at_server.bundles == [b"real bundle"]


async def test_node_style_put_adapts_refusals() -> None:
    class Full(Exception):
        pass

    seen: list[tuple[bytes, int]] = []

    async def node_accept(bundle: bytes, peer: int) -> None:
        if bundle == b"too much":
            raise Full("store quota reached")
        seen.append((bundle, peer))

    with trio.fail_after(10):
        async with (
            serving(v4_layer(2), accept=custody(node_accept, refusals=(Full,))) as server,
            open_tcp_cl_link(LOCALHOST, server.port, v4_layer(1)) as client,
        ):
            with pytest.raises(TransferRefusedByPeer):
                await client.send(b"too much")
            await client.send(b"fine")
    assert seen == [(b"fine", 1)]


async def test_connector_reconnects_after_the_listener_restarts_on_its_port() -> None:
    """Nothing listens at first, then a listener comes and goes twice on the same port."""
    at_server = Collector()
    backoff = Backoff(initial=0.02, maximum=0.1)
    with trio.fail_after(15):
        async with serving(v4_layer(2), accept=at_server) as first:
            port = first.port
        async with open_tcp_connector(
            LOCALHOST, port, v4_layer(1), rng=random.Random(7), backoff=backoff
        ) as connector:
            async with serving(v4_layer(2), accept=at_server, port=port):
                await connector.wait_up()
                await connector.send(b"one")
            await connector.wait_down()
            with pytest.raises(LinkDown):
                await connector.send(b"while down")
            async with serving(v4_layer(2), accept=at_server, port=port):
                await connector.wait_up()
                await connector.send(b"two")
            assert connector.sessions == 2 and connector.attempts >= 2
    assert at_server.bundles == [b"one", b"two"]


# --- TLS (RFC 9174 §4.4) -------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetwire test node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address(LOCALHOST)),
                    x509.UniformResourceIdentifier("ipn:2.0"),  # §4.4.1 NODE-ID
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp / "node.pem", tmp / "node.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem


async def test_tcpclv4_over_tls(tmp_path: Path) -> None:
    cert, key, pem = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cadata=pem.decode())
    server_layer = TcpclV4(
        v4.SessionConfig(node_id="ipn:2.0", can_tls=True, require_tls=True),
        server_context=server_ctx,
    )
    client_layer = TcpclV4(
        v4.SessionConfig(node_id="ipn:1.0", can_tls=True, require_tls=True),
        client_context=client_ctx,
        server_hostname="localhost",
        authenticate_node_id=True,  # the server's "ipn:2.0" must be in its certificate
    )
    at_server, at_client = Collector(), Collector()
    bundle = random.Random(9).randbytes(200_000)
    with trio.fail_after(10):
        async with (
            serving(server_layer, accept=at_server) as server,
            open_tcp_cl_link(LOCALHOST, server.port, client_layer, accept=at_client) as client,
        ):
            theirs = await server.links.receive()
            assert isinstance(client.stream, trio.SSLStream)
            assert isinstance(theirs.stream, trio.SSLStream)
            await client.send(bundle)
            await theirs.send(b"back over TLS")
            await at_client.wait_for(1)
            peer_cert = client.stream.getpeercert()
            assert ("URI", "ipn:2.0") in peer_cert["subjectAltName"]
    assert at_server.bundles == [bundle]
    assert at_client.bundles == [b"back over TLS"]


async def test_tls_handshake_failure_is_link_down(tmp_path: Path) -> None:
    cert, key, _pem = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    untrusting = ssl.create_default_context()  # the system roots do not know our certificate
    untrusting.load_verify_locations(cadata=_other_pem(tmp_path))
    server_layer = TcpclV4(v4.SessionConfig(can_tls=True), server_context=server_ctx)
    client_layer = TcpclV4(
        v4.SessionConfig(can_tls=True), client_context=untrusting, server_hostname="localhost"
    )
    timeouts = LinkTimeouts(establish=5.0)
    with trio.fail_after(10):
        async with serving(server_layer) as server:
            with pytest.raises(LinkDown, match="TLS"):
                async with open_tcp_cl_link(
                    LOCALHOST, server.port, client_layer, timeouts=timeouts
                ):
                    pass  # pragma: no cover


async def test_node_id_not_in_the_certificate_is_refused(tmp_path: Path) -> None:
    """RFC 9174 §4.4.3: a peer claiming a Node ID its certificate does not name is refused."""
    cert, key, pem = self_signed(tmp_path)  # names ipn:2.0
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server_layer = TcpclV4(
        v4.SessionConfig(node_id="ipn:3.0", can_tls=True), server_context=server_ctx
    )
    client_layer = TcpclV4(
        v4.SessionConfig(node_id="ipn:1.0", can_tls=True),
        client_context=ssl.create_default_context(cadata=pem.decode()),
        server_hostname="localhost",
        authenticate_node_id=True,
    )
    with trio.fail_after(10):
        async with serving(server_layer) as server:
            with pytest.raises(LinkDown, match="NODE-ID"):
                async with open_tcp_cl_link(LOCALHOST, server.port, client_layer):
                    pass  # pragma: no cover


def _other_pem(tmp: Path) -> str:
    other = tmp / "other"
    other.mkdir()
    return self_signed(other)[2].decode()
