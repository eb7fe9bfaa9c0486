"""How links end: TLS close_notify, the close bound, and what --verbose says about links."""

from __future__ import annotations

import logging
import random
import ssl
from pathlib import Path

import pytest
import trio
from fleetwire.protocol.tcpcl import v4
from fleetwire.protocol.tcpcl.common import ReceiveBuffer
from fleetwire.protocol.tcpcl.v4_messages import (
    ContactFlags,
    ContactHeader,
    SessInit,
    SessTerm,
    SessTermFlags,
    decode_contact_header,
)
from fleetwire.runtime.links.cl_link import TcpclV4
from fleetwire.runtime.links.tcp import Backoff, open_tcp_connector

from .agents import read_message, read_until_term
from .test_tcp_links import LOCALHOST, self_signed, serving, v4_layer


async def test_tls_session_we_accepted_ends_with_close_notify(tmp_path: Path) -> None:
    cert, key, pem = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cadata=pem.decode())
    layer = TcpclV4(
        v4.SessionConfig(node_id="ipn:2.0", can_tls=True, require_tls=True),
        server_context=server_ctx,
    )
    with trio.fail_after(10):
        async with serving(layer) as server:
            tcp = await trio.open_tcp_stream(LOCALHOST, server.port)
            await tcp.send_all(ContactHeader(4, ContactFlags.CAN_TLS).encode())
            clear = ReceiveBuffer()
            while decode_contact_header(clear) is None:
                clear.extend(bytes(await tcp.receive_some(6 - clear.size)))
            tls = trio.SSLStream(tcp, client_ctx, server_hostname="localhost")
            await tls.do_handshake()
            await tls.send_all(SessInit(0, 1 << 20, 1 << 20, "ipn:1.0").encode())
            buf = ReceiveBuffer()
            assert isinstance(await read_message(tls, buf), SessInit)
            theirs = await server.links.receive()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(theirs.aclose)
                term = await read_until_term(tls, buf)
                await tls.send_all(SessTerm(SessTermFlags.REPLY, term.reason).encode())
                # A clean TLS end (close_notify) reads as b""; a bare TCP close raises.
                assert await tls.receive_some(1024) == b""
            await tls.aclose()


async def test_verbose_logs_connect_failure_backoff_up_and_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fleetwire.tcp")
    with trio.fail_after(10):
        async with serving(v4_layer(2)) as server:
            port = server.port
        # The listener is gone: attempts fail and back off; then it returns on the same port.
        async with open_tcp_connector(
            LOCALHOST, port, v4_layer(1), rng=random.Random(1), peer=2,
            backoff=Backoff(initial=0.05, maximum=0.1),
        ) as connector:  # fmt: skip
            while connector.attempts < 2:
                await trio.sleep(0.01)
            async with serving(v4_layer(2), port=port) as server:
                await connector.wait_up()
                link = await server.links.receive()
                await link.aclose()
                while connector.is_up:
                    await trio.sleep(0.01)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for what in ("connecting (attempt 1)", "connect failed", "backoff", "up (peer ipn:2.0)",
                 "down: peer terminated the session"):  # fmt: skip
        assert what in text, what


async def test_ud3tn_like_peer_takes_a_large_bundle_in_segments_it_can_handle() -> None:
    from functools import partial

    from fleetwire.protocol.tcpcl import v3
    from fleetwire.runtime.links.cl_link import TcpclV3
    from fleetwire.runtime.links.tcp import open_tcp_cl_link

    from .agents import Ud3tnLikeV3Peer

    peer = Ud3tnLikeV3Peer(eid="ipn:3.0")
    bundle = random.Random(5).randbytes(5 * (1 << 20) // 2)  # 2.5 MiB: three segments
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host=LOCALHOST))
            port = listeners[0].socket.getsockname()[1]
            layer = TcpclV3(v3.TcpclV3Config("ipn:1.0"))
            async with open_tcp_cl_link(LOCALHOST, port, layer) as link:
                assert not link.confirms_delivery  # the peer negotiated no acks
                await link.send(bundle)
                while not peer.bundles:
                    await trio.sleep(0.01)
                started = trio.current_time()
            assert trio.current_time() - started <= 1.2  # SHUTDOWN never answered: bounded
            nursery.cancel_scope.cancel()
    assert peer.failure == "" and peer.bundles == [bundle] and peer.shutdowns == 1
