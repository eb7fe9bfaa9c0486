"""TCPCLv4 sessions over a real socket pair, driven by Trio the way a runtime link would be."""

from __future__ import annotations

import trio
from fleetwire.protocol.tcpcl.common import (
    NEED_DATA,
    BundleReceived,
    ConnectionClosed,
    ProtocolViolation,
    Role,
    SessionEstablished,
    TransferAcked,
)
from fleetwire.protocol.tcpcl.v4 import SessionConfig, TcpclV4Session


async def run_session(
    session: TcpclV4Session,
    stream: trio.SocketStream,
    outgoing: list[bytes],
    expect_incoming: int,
    received: list[bytes],
) -> bool:
    """Send ``outgoing`` once established, ack what arrives, end when all is done both ways."""
    kick_send, kick_receive = trio.open_memory_channel[None](1000)
    acked: set[int] = set()
    clean = False

    async def writer() -> None:
        async for _ in kick_receive:
            while data := session.data_to_send():
                await stream.send_all(data)
            session.tick(trio.current_time())
        await stream.send_eof()  # §4.1: close with FIN once the session is over

    def handle_events() -> bool:
        nonlocal clean
        while (event := session.next_event()) is not NEED_DATA:
            assert not isinstance(event, ProtocolViolation), event
            if isinstance(event, SessionEstablished):
                for bundle in outgoing:
                    session.send_bundle(bundle)
            elif isinstance(event, BundleReceived):
                received.append(event.data)
                session.ack(event.transfer_id)  # durable in a real runtime before this
            elif isinstance(event, TransferAcked) and event.complete:
                acked.add(event.transfer_id)
            elif isinstance(event, ConnectionClosed):
                clean = event.clean
                return False
        everything_done = len(acked) == len(outgoing) and len(received) == expect_incoming
        if (
            session.role is Role.ACTIVE
            and session.established
            and not session.terminating
            and everything_done
        ):
            session.terminate()
            return handle_events()
        return True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        kick_send.send_nowait(None)
        running = True
        while running:
            data = await stream.receive_some(65536)
            session.tick(trio.current_time())
            session.receive_data(data)
            running = handle_events() and bool(data)
            kick_send.send_nowait(None)
        kick_send.close()
    return clean


async def test_bundles_both_ways_over_a_socket_pair() -> None:
    left, right = trio.socket.socketpair()
    a_stream, p_stream = trio.SocketStream(left), trio.SocketStream(right)
    now = trio.current_time()
    active = TcpclV4Session(Role.ACTIVE, SessionConfig(node_id="ipn:1.0", segment_mru=4096), now)
    passive = TcpclV4Session(Role.PASSIVE, SessionConfig(node_id="ipn:2.0", segment_mru=1000), now)
    to_passive = [bytes([i]) * size for i, size in enumerate([1, 999, 1000, 1001, 70_000, 300_000])]
    to_active = [b"reply-%d" % i * 500 for i in range(4)]
    got_passive: list[bytes] = []
    got_active: list[bytes] = []
    results: dict[str, bool] = {}

    async def side(name: str, *args: object) -> None:
        results[name] = await run_session(*args)  # type: ignore[arg-type]

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, "a", active, a_stream, to_passive, len(to_active), got_active)
            nursery.start_soon(
                side, "p", passive, p_stream, to_active, len(to_passive), got_passive
            )
    assert got_passive == to_passive and got_active == to_active
    assert results == {"a": True, "p": True}  # both saw a clean SESS_TERM exchange
    await a_stream.aclose()
    await p_stream.aclose()
