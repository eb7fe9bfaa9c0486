"""Live interop with pyd3tn (µD3TN's Python tools) over real TCP sockets on 127.0.0.1.

pyd3tn runs in its own virtual environment as a separate process. Each test opens an ephemeral
port, drives our sans-IO session from a small Trio loop around a real socket, and checks that
the bundles arrive byte for byte — in both directions, for TCPCLv3 and for MTCP. The bundles
are BPv7 bundles that pyd3tn's ``serialize_bundle7`` built; here they are opaque bytes.

Everything runs under one ``trio.fail_after`` deadline and the peer process is killed on the
way out, so a misbehaving side fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from fleetwire.protocol.tcpcl.common import (
    BundleReceived,
    BundlesReceived,
    ConnectionClosed,
    ConvergenceLayerSession,
    Event,
    NeedData,
    ProtocolViolation,
    Role,
    SessionEstablished,
    SessionTerminated,
)
from fleetwire.protocol.tcpcl.mtcp import MtcpSession
from fleetwire.protocol.tcpcl.mtcp import State as MtcpState
from fleetwire.protocol.tcpcl.v3 import TcpclV3Config, TcpclV3Session

pytestmark = pytest.mark.interop

DEADLINE_S = 15
OUR_EID = "dtn://fleetwire/"
PEER_EID = "dtn://pyd3tn/"
# Payload sizes: one small, one larger than a socket buffer, one of several hundred kB.
PAYLOAD_SIZES = [12, 1500, 70_000, 300_000]

MAKE_BUNDLES = """
import json, sys
from pyd3tn.bundle7 import serialize_bundle7
sizes = json.loads(sys.argv[1])
print(json.dumps([
    serialize_bundle7(
        "dtn://pyd3tn/", "dtn://fleetwire/", bytes((i * 7 + j) % 251 for j in range(n)),
        creation_timestamp=1700000000, sequence_number=i, hop_limit=16,
    ).hex()
    for i, n in enumerate(sizes)
]))
"""

# (a) TCPCLv3, pyd3tn connects to us and sends.
TCPCL_SENDER = """
import json, socket, sys
from pyd3tn.tcpcl import TCPCLConnection
socket.setdefaulttimeout(10)
bundles = [bytes.fromhex(h) for h in json.load(sys.stdin)]
conn = TCPCLConnection("dtn://pyd3tn/", "127.0.0.1", int(sys.argv[1]), timeout=10)
header = conn.connect()
try:
    for bundle in bundles:
        conn.send_bundle(bundle)
finally:
    conn.disconnect()  # SHUTDOWN (0x50), then close
print(json.dumps(header))
"""

# (b) TCPCLv3, pyd3tn listens and receives, using its own header and segment decoders.
TCPCL_RECEIVER = """
import json, socket, sys
from pyd3tn.helpers import sock_recv_raw
from pyd3tn.sdnv import sdnv_decode
from pyd3tn.tcpcl import (
    TCPCLConnection, decode_tcpcl_contact_header, serialize_tcpcl_contact_header,
)
count = int(sys.argv[1])
socket.setdefaulttimeout(10)
with socket.create_server(("127.0.0.1", 0)) as server:
    print(server.getsockname()[1], flush=True)
    sock, _ = server.accept()
with sock:
    sock.sendall(serialize_tcpcl_contact_header("dtn://pyd3tn/"))
    raw = sock_recv_raw(sock, 9, 10)
    while raw[-1] & 0x80:
        raw += sock_recv_raw(sock, 1, 10)
    eid_length, _ = sdnv_decode(raw[8:])
    if eid_length:
        raw += sock_recv_raw(sock, eid_length, 10)
    header = decode_tcpcl_contact_header(raw)
    conn = TCPCLConnection("dtn://pyd3tn/", "127.0.0.1", 0, timeout=10)
    conn.sock.close()
    conn.sock = sock
    bundles = [conn.recv_bundle().hex() for _ in range(count)]
    tail = sock_recv_raw(sock, 1, 10)
print(json.dumps({"header": header, "bundles": bundles, "tail": tail.hex()}))
"""

# (a') MTCP, pyd3tn connects to us and sends.
MTCP_SENDER = """
import json, socket, sys
from pyd3tn.mtcp import MTCPConnection
socket.setdefaulttimeout(10)
bundles = [bytes.fromhex(h) for h in json.load(sys.stdin)]
with MTCPConnection("127.0.0.1", int(sys.argv[1]), timeout=10) as conn:
    for bundle in bundles:
        conn.send_bundle(bundle)
print("sent")
"""

# (b') MTCP, pyd3tn listens and receives.
MTCP_RECEIVER = """
import json, socket, sys
from pyd3tn.mtcp import MTCPSocket
count = int(sys.argv[1])
socket.setdefaulttimeout(10)
with socket.create_server(("127.0.0.1", 0)) as server:
    print(server.getsockname()[1], flush=True)
    sock, _ = server.accept()
with sock:
    conn = MTCPSocket(sock, timeout=10)
    bundles = [conn.recv_bundle().hex() for _ in range(count)]
    rest = sock.recv(1)  # b"" once we close after the last frame
print(json.dumps({"bundles": bundles, "rest": rest.hex()}))
"""


@pytest.fixture(scope="module")
def bundles(run_pyd3tn: Callable[..., subprocess.CompletedProcess[bytes]]) -> list[bytes]:
    out = run_pyd3tn(MAKE_BUNDLES, json.dumps(PAYLOAD_SIZES), timeout=DEADLINE_S)
    made = [bytes.fromhex(h) for h in json.loads(out.stdout)]
    assert len(made) == len(PAYLOAD_SIZES)
    assert all(b[0] == 0x9F for b in made)  # BPv7: an indefinite-length CBOR array
    return made


# --- our side: a Trio loop around a sans-IO session ------------------------------------


async def drive(
    stream: trio.SocketStream,
    session: ConvergenceLayerSession,
    *,
    send: Sequence[bytes] = (),
    all_sent: Callable[[], bool] = lambda: True,
) -> list[Event]:
    """Run ``session`` over ``stream`` until it closes; ack every bundle; terminate after ``send``.

    ``all_sent`` says when the queued bundles are all written (TCPCLv3 holds them until the
    contact headers are exchanged); once it is true, we terminate.
    """
    events: list[Event] = []
    for bundle in send:
        session.send_bundle(bundle)
    terminated = not send
    async with stream:
        while True:
            while data := session.data_to_send():
                try:
                    await stream.send_all(data)
                except trio.BrokenResourceError:
                    # The peer may close right after its own SHUTDOWN, before reading ours.
                    if not any(isinstance(e, SessionTerminated) for e in events):
                        raise
            if not terminated and all_sent():
                session.terminate()
                terminated = True
                continue
            event = session.next_event()
            if isinstance(event, NeedData):
                session.receive_data(await stream.receive_some(1 << 16))
                continue
            events.append(event)
            if isinstance(event, BundleReceived):
                session.ack(event.transfer_id)  # nothing to persist here
            elif isinstance(event, BundlesReceived):
                session.ack_many(event.transfer_ids)  # type: ignore[attr-defined]
            if isinstance(event, ConnectionClosed):
                return events


@asynccontextmanager
async def pyd3tn_peer(python: Path, script: str, *args: str) -> AsyncIterator[trio.Process]:
    """The pyd3tn script as a child process, killed if still running when we leave."""
    proc = await trio.lowlevel.open_process(
        [str(python), "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def read_to_eof(stream: trio.abc.ReceiveStream | None, into: bytearray) -> bytes:
    assert stream is not None
    while chunk := await stream.receive_some():
        into += chunk
    return bytes(into)


async def finish(proc: trio.Process, stdin: bytes = b"", stdout: bytearray | None = None) -> bytes:
    """Give the peer its input, collect its output, and require a clean exit."""
    out = stdout if stdout is not None else bytearray()
    err = bytearray()
    assert proc.stdin is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_to_eof, proc.stdout, out)
        nursery.start_soon(read_to_eof, proc.stderr, err)
        if stdin:
            await proc.stdin.send_all(stdin)
        await proc.stdin.aclose()
    assert await proc.wait() == 0, f"pyd3tn peer failed:\n{err.decode()[-4000:]}"
    return bytes(out)


async def read_port(proc: trio.Process) -> tuple[int, bytearray]:
    """The port the peer printed on its first line, and whatever followed it."""
    assert proc.stdout is not None
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await proc.stdout.receive_some()
        assert chunk, "peer exited before listening"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    return int(line), bytearray(rest)


async def peer_sends_to_us(
    python: Path, script: str, session: ConvergenceLayerSession, bundles: list[bytes]
) -> tuple[list[Event], bytes]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    events: list[Event] = []

    async def serve_once() -> None:
        stream = await listeners[0].accept()
        await listeners[0].aclose()
        events.extend(await drive(stream, session))

    async with pyd3tn_peer(python, script, str(port)) as proc, trio.open_nursery() as nursery:
        nursery.start_soon(serve_once)
        output = await finish(proc, json.dumps([b.hex() for b in bundles]).encode())
    return events, output


async def we_send_to_peer(
    python: Path,
    script: str,
    session: ConvergenceLayerSession,
    bundles: list[bytes],
    all_sent: Callable[[], bool],
) -> tuple[list[Event], bytes]:
    async with pyd3tn_peer(python, script, str(len(bundles))) as proc:
        port, rest = await read_port(proc)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with trio.open_nursery() as nursery:
            outcome: dict[str, bytes] = {}

            async def collect() -> None:
                outcome["out"] = await finish(proc, stdout=rest)

            nursery.start_soon(collect)
            events = await drive(stream, session, send=bundles, all_sent=all_sent)
    return events, outcome["out"]


# --- TCPCLv3 ---------------------------------------------------------------------------


def received(events: list[Event]) -> list[bytes]:
    """Every bundle received, single or in a batch (a batched session's runs), in order."""
    out: list[bytes] = []
    for e in events:
        if isinstance(e, BundleReceived):
            out.append(e.data)
        elif isinstance(e, BundlesReceived):
            out += e.data
    return out


@pytest.mark.parametrize("batch", [False, True])
async def test_tcpclv3_pyd3tn_sends_to_our_listener(
    pyd3tn_python: Path, bundles: list[bytes], batch: bool
) -> None:
    # Batched: runs of whole segments read straight from the buffer (the lean path).
    session = TcpclV3Session(Role.PASSIVE, TcpclV3Config(local_eid=OUR_EID), batch_events=batch)
    with trio.fail_after(DEADLINE_S):
        events, output = await peer_sends_to_us(pyd3tn_python, TCPCL_SENDER, session, bundles)
    # pyd3tn decoded our contact header.
    assert json.loads(output) == {"version": 3, "flags": 0x05, "keepalive_interval": 30, "eid": OUR_EID}
    # pyd3tn asks for nothing: no acks, no keepalives.
    assert session.negotiated is not None
    assert (session.negotiated.peer_eid, session.negotiated.acks, session.negotiated.keepalive_s) == (
        PEER_EID,
        False,
        0,
    )
    assert events[0] == SessionEstablished(PEER_EID, 0)
    assert received(events) == bundles
    assert not [e for e in events if isinstance(e, ProtocolViolation)]
    terminated = [e for e in events if isinstance(e, SessionTerminated)]
    assert len(terminated) == 1
    assert terminated[0].by_peer
    assert events[-1] == ConnectionClosed(clean=True)


async def test_tcpclv3_we_send_to_a_pyd3tn_listener(pyd3tn_python: Path, bundles: list[bytes]) -> None:
    session = TcpclV3Session(Role.ACTIVE, TcpclV3Config(local_eid=OUR_EID))
    with trio.fail_after(DEADLINE_S):
        events, output = await we_send_to_peer(
            pyd3tn_python,
            TCPCL_RECEIVER,
            session,
            bundles,
            all_sent=lambda: session.established and not session.outstanding_transfers,
        )
    result = json.loads(output)
    assert result["header"] == {"version": 3, "flags": 0x05, "keepalive_interval": 30, "eid": OUR_EID}
    # Every bundle went as one S|E segment (all pyd3tn can read) and arrived intact.
    assert [bytes.fromhex(h) for h in result["bundles"]] == bundles
    assert result["tail"] == "50"  # our SHUTDOWN, no reason, no delay
    assert events[0] == SessionEstablished(PEER_EID, 0)
    assert not [e for e in events if isinstance(e, ProtocolViolation)]
    assert events[-1] == ConnectionClosed(clean=True)  # pyd3tn closed after our SHUTDOWN


# --- MTCP ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
async def test_mtcp_pyd3tn_sends_to_our_listener(
    pyd3tn_python: Path, bundles: list[bytes], batch: bool
) -> None:
    session = MtcpSession(Role.PASSIVE, batch_events=batch)
    with trio.fail_after(DEADLINE_S):
        events, output = await peer_sends_to_us(pyd3tn_python, MTCP_SENDER, session, bundles)
    assert output.strip() == b"sent"
    assert received(events) == bundles
    assert events[-1] == ConnectionClosed(clean=True)


async def test_mtcp_we_send_to_a_pyd3tn_listener(pyd3tn_python: Path, bundles: list[bytes]) -> None:
    session = MtcpSession(Role.ACTIVE)
    with trio.fail_after(DEADLINE_S):
        events, output = await we_send_to_peer(
            pyd3tn_python,
            MTCP_RECEIVER,
            session,
            bundles,
            all_sent=lambda: session.state is MtcpState.OPEN,
        )
    result = json.loads(output)
    assert [bytes.fromhex(h) for h in result["bundles"]] == bundles
    assert result["rest"] == ""  # nothing after the last frame but our close
    assert events[-1] == ConnectionClosed(clean=True)
