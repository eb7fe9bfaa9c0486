"""A configured node's links against peers that behave like deployed agents (and attackers).

Real ``open_configured_node`` nodes on 127.0.0.1 with real TCPCLv4 / TCPCLv3 / MTCP sessions;
the peers are in :mod:`tests.agents`. Every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.bpv7 import accel, decode_bundle, encode_bundle
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.protocol.tcpcl.v4_messages import (
    FLAG_END,
    FLAG_START,
    ExtensionItem,
    RefuseReason,
    SessTerm,
    TermReason,
    TransferExtensionType,
    XferAck,
    XferRefuse,
    encode_extension_items,
    encode_segment_header,
)
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.node.config import load_config
from fleetwire.runtime.node.node import Node
from fleetwire.runtime.node.tcp_node import open_configured_node

from .agents import (
    AnnouncingPeer,
    Ud3tnLikeV3Peer,
    read_message,
    read_until_term,
    send_v4,
    v4_handshake,
)

LOCALHOST = "127.0.0.1"
A, B, C = 1, 2, 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    main(["keys", "root", str(folder)])
    for node in (A, B, C):
        main(["keys", "node", str(folder), "--node", str(node)])
    return folder


@asynccontextmanager
async def node_from(folder: Path, name: str, text: str) -> AsyncIterator[Node]:
    path = folder / f"{name}.toml"
    path.write_text(text)
    async with open_configured_node(load_config(path)) as node:
        yield node


def claim(node: Node, issuer: int) -> LeaseClaim:
    return LeaseClaim(
        header=Header(issuer=issuer, issued_at=node.now(), sequence=node.next_message_sequence()),
        resource="dock/7",
        term_ms=60_000,
    )


def bundle_to(destination: int, source: int = 50, sequence: int = 0, size: int = 64) -> bytes:
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    return encode_bundle(
        message_bundle(
            b"\x00" * size,
            source=source,
            destination=destination,
            created_at=now,
            sequence=sequence,
            lifetime_ms=3_600_000,
        )
    )


# --- identity -------------------------------------------------------------------------------


async def test_peer_announcing_another_node_id_is_refused_with_contact_failure(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    peer = AnnouncingPeer("ipn:9.0")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[peer]]\nnode = 5\nport = {port}\n'
        with trio.fail_after(20):
            async with node_from(tmp_path, "a", config) as node:
                await node.send(claim(node, A), 5)
                while peer.term_reason is None:
                    await trio.sleep(0.01)
                assert await node.store.count() == 1  # still held: nothing went to the impostor
        nursery.cancel_scope.cancel()
    assert peer.term_reason == TermReason.CONTACT_FAILURE
    assert peer.segments == 0
    assert any("ipn:5.0" in r.message and "ipn:9.0" in r.message for r in caplog.records)


async def test_unsolicited_session_does_not_displace_the_dialled_link(
    tmp_path: Path, keys: Path
) -> None:
    b_port, a_port = free_port(), free_port()
    with trio.fail_after(30):
        async with (
            node_from(
                tmp_path, "b", f'[node]\nnumber = {B}\nkeys = "keys"\n[[listen]]\nport = {b_port}\n'
            ) as b,  # fmt: skip
            node_from(
                tmp_path,
                "a",
                f'[node]\nnumber = {A}\nkeys = "keys"\n'
                f"[[listen]]\nport = {a_port}\n"
                f"[[peer]]\nnode = {B}\nport = {b_port}\n",
            ) as a,  # fmt: skip
        ):
            inbox = b.subscribe()
            while not a.links[B].is_up:
                await trio.sleep(0.01)
            # An impostor claims to be node B on A's listener.
            impostor = await trio.open_tcp_stream(LOCALHOST, a_port)
            buf, _ = await v4_handshake(impostor, f"ipn:{B}.0", active=True)
            await trio.sleep(0.2)  # let A register (or, before the fix, adopt) the session
            sent = await a.send(claim(a, A), B)
            got = await inbox.receive()
            assert got.content_id == sent.content_id  # the real B got it
            with trio.move_on_after(0.3):
                data = await impostor.receive_some(1 << 16)
                assert buf.size == 0 and not data, "the impostor was sent something"
            await impostor.aclose()


async def test_link_table_recovers_when_an_accepted_session_ends(
    tmp_path: Path, keys: Path
) -> None:
    b_port, a_port = free_port(), free_port()
    a_config = (
        f'[node]\nnumber = {A}\nkeys = "keys"\n[[listen]]\nport = {a_port}\n'
        f"[[peer]]\nnode = {B}\nport = {b_port}\n[reconnect]\ninitial_s = 0.1\nmaximum_s = 0.2\n"
    )
    with trio.fail_after(30):
        async with node_from(tmp_path, "a", a_config) as a:
            # B is not up yet; a process claiming to be B connects and leaves.
            impostor = await trio.open_tcp_stream(LOCALHOST, a_port)
            await v4_handshake(impostor, f"ipn:{B}.0", active=True)
            await trio.sleep(0.2)
            await impostor.aclose()
            await trio.sleep(0.2)
            b_text = f'[node]\nnumber = {B}\nkeys = "keys"\n[[listen]]\nport = {b_port}\n'
            async with node_from(tmp_path, "b", b_text) as b:
                inbox = b.subscribe()
                sent = await a.send(claim(a, A), B)
                got = await inbox.receive()
                assert got.content_id == sent.content_id


async def test_neighbours_without_an_ipn_number_get_their_own_slots(
    tmp_path: Path, keys: Path
) -> None:
    port = free_port()
    config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[listen]]\nport = {port}\nlayer = "mtcp"\n'
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config) as a:
            streams = [await trio.open_tcp_stream(LOCALHOST, port) for _ in range(2)]
            while len([k for k in a.links if k < 0]) < 2:
                await trio.sleep(0.01)
            anonymous = [link for k, link in a.links.items() if k < 0]
            assert len({id(link) for link in anonymous}) == 2
            for stream in streams:
                await stream.aclose()


# --- relaying for known neighbours only -------------------------------------------------------


async def test_strangers_may_reach_this_node_but_not_relay_through_it(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[listen]]\nport = {port}\n'
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config) as a:
            stranger = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(stranger, "ipn:50.0", active=True)
            relayed = bundle_to(C, sequence=0)
            replies = await send_v4(stranger, buf, [(0, relayed), (1, bundle_to(A, sequence=1))])
            assert replies[0] == XferRefuse(RefuseReason.NOT_ACCEPTABLE, 0)
            assert isinstance(replies[1], XferAck) and replies[1].transfer_id == 1
            assert await held_for(a, relayed) == 0
            # A fleet member (it has a credential) may relay through A.
            member = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(member, f"ipn:{B}.0", active=True)
            relayed = bundle_to(C, source=B)
            replies = await send_v4(member, buf, [(0, relayed)])
            assert isinstance(replies[0], XferAck)
            assert await held_for(a, relayed) == 1
            for stream in (stranger, member):
                await stream.aclose()
    assert any("relay-refused" in r.message for r in caplog.records)


async def test_a_strangers_run_is_taken_in_part_bundle_by_bundle(
    tmp_path: Path, keys: Path
) -> None:
    """A run of transfers in one write reaches the node's batch custody together; the relay
    check still applies to each bundle: those for this node are taken (one commit), those to
    relay are refused, and every reply leaves in the order of the transfers."""
    port = free_port()
    config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[listen]]\nport = {port}\n'
    run = [bundle_to(C if i % 3 == 0 else A, sequence=i) for i in range(12)]
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config) as a:
            stranger = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(stranger, "ipn:50.0", active=True)
            await stranger.send_all(
                b"".join(
                    encode_segment_header(FLAG_START | FLAG_END, tid, len(bundle)) + bundle
                    for tid, bundle in enumerate(run)
                )
            )
            replies = []
            while len(replies) < len(run):
                reply = await read_message(stranger, buf)
                if isinstance(reply, XferAck | XferRefuse):
                    replies.append(reply)
            assert [r.transfer_id for r in replies] == list(range(len(run)))  # in order
            for i, reply in enumerate(replies):
                if i % 3 == 0:
                    assert reply == XferRefuse(RefuseReason.NOT_ACCEPTABLE, i)
                else:
                    assert isinstance(reply, XferAck) and reply.length == len(run[i])
            assert await held_for(a, run[0]) == 0  # nothing to relay was taken
            assert a.stats.accepted == 8
            await stranger.aclose()


async def test_hostile_bundles_in_a_members_run_are_refused_before_the_ack(
    tmp_path: Path, keys: Path
) -> None:
    """Custody first holds a run in the ingress before the acks; a bundle with a broken CRC or
    cut short in that run is still refused (the C walk does not vouch for it, the agent
    refuses it at once), the others are acknowledged and reach the agent's store."""
    port = free_port()
    config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[listen]]\nport = {port}\n'
    broken = bytearray(bundle_to(C, source=B, sequence=1))
    broken[len(broken) // 2] ^= 0x01  # in the payload: its CRC no longer matches
    run = [
        bundle_to(C, source=B, sequence=0), bytes(broken),
        bundle_to(C, source=B, sequence=2)[:-5], bundle_to(C, source=B, sequence=3),
    ]  # fmt: skip
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config) as a:
            member = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(member, f"ipn:{B}.0", active=True)
            await member.send_all(
                b"".join(
                    encode_segment_header(FLAG_START | FLAG_END, tid, len(bundle)) + bundle
                    for tid, bundle in enumerate(run)
                )
            )
            replies = []
            while len(replies) < len(run):
                reply = await read_message(member, buf)
                if isinstance(reply, XferAck | XferRefuse):
                    replies.append(reply)
            assert isinstance(replies[0], XferAck) and isinstance(replies[3], XferAck)
            assert replies[1:3] == [
                XferRefuse(RefuseReason.NOT_ACCEPTABLE, 1),
                XferRefuse(RefuseReason.NOT_ACCEPTABLE, 2),
            ]
            # Held in the ingress when the C walk vouches (else the agent's road at once).
            held = 2 if accel.walk is not None else 0
            assert a.ingress is not None and a.ingress.received == held
            assert await held_for(a, run[0]) == 2  # both acknowledged ones, once adopted
            assert a.ingress.dropped == 0 and a.stats.malformed == 2
            await member.aclose()


async def held_for(node: Node, bundle: bytes) -> int:
    """How many bundles ``node`` holds for ``bundle``'s destination (once its agent adopted
    what the ingress held: custody first, the ack comes before the agent reads the bundle)."""
    if node.ingress is not None:
        await node.ingress.wait_settled()
    destination = str(decode_bundle(bundle).primary.destination)
    return len(await node.store.pending_for_destination(destination, 100))


async def test_the_config_files_ingress_bound_reaches_the_node(tmp_path: Path, keys: Path) -> None:
    """``[links] ingress_max_bundles = 0`` turns custody first off: an acked bundle is in the
    agent's store at the ack; ``ingress_max_mib`` bounds the ingress in bytes."""
    for links, held in (("ingress_max_bundles = 0", False), ("ingress_max_mib = 1", True)):
        port = free_port()
        config = (
            f'[node]\nnumber = {A}\nkeys = "keys"\naccept_from = "any"\n'
            f"[[listen]]\nport = {port}\n[links]\n{links}\n"
        )
        with trio.fail_after(20):
            async with node_from(tmp_path, "a", config) as a:
                if held:
                    assert a.ingress is not None and a.ingress.max_bytes == 1 << 20
                else:
                    assert a.ingress is None
                stream = await trio.open_tcp_stream(LOCALHOST, port)
                buf, _ = await v4_handshake(stream, "ipn:60.0", active=True)
                replies = await send_v4(stream, buf, [(0, bundle_to(C))])
                assert isinstance(replies[0], XferAck)
                if a.ingress is not None:
                    await a.ingress.wait_settled()
                assert await a.store.count() == 1
                await stream.aclose()


# --- budgets across sessions ------------------------------------------------------------------


async def test_sessions_over_the_cap_end_with_resource_exhaustion(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    config = (
        f'[node]\nnumber = {A}\nkeys = "keys"\naccept_from = "any"\n'
        f"[[listen]]\nport = {port}\n[links]\nmax_sessions = 2\n"
    )
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config) as a:
            kept = []
            for n in range(2):
                stream = await trio.open_tcp_stream(LOCALHOST, port)
                kept.append((stream, *await v4_handshake(stream, f"ipn:{60 + n}.0", active=True)))
            extra = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(extra, "ipn:70.0", active=True)
            term = await read_until_term(extra, buf)
            assert term.reason == TermReason.RESOURCE_EXHAUSTION
            # The admitted sessions still work: nothing accepted is lost.
            stream, buf, _ = kept[0]
            replies = await send_v4(stream, buf, [(0, bundle_to(C))])
            assert isinstance(replies[0], XferAck)
            assert a.ingress is not None
            await a.ingress.wait_settled()  # acked once held; in the agent's store once adopted
            assert await a.store.count() == 1
            await extra.aclose()
            for stream, *_ in kept:
                await stream.aclose()
    assert any("budget-exceeded" in r.message for r in caplog.records)


async def test_reassembly_memory_is_capped_across_sessions(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    config = (
        f'[node]\nnumber = {A}\nkeys = "keys"\naccept_from = "any"\n'
        f"[[listen]]\nport = {port}\n[links]\nmax_receive_mib = 1\n"
    )
    half = 700 * 1024
    total = struct_length(4 * half)
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config):
            sessions = []
            for n in range(2):
                stream = await trio.open_tcp_stream(LOCALHOST, port)
                buf, _ = await v4_handshake(stream, f"ipn:{60 + n}.0", active=True)
                sessions.append((stream, buf))
            # Each starts a 2.8 MiB transfer and sends 700 KiB of it: 1.4 MiB held in all.
            for stream, _ in sessions:
                await stream.send_all(encode_segment_header(0x02, 0, half, total) + b"x" * half)
            refusals = []
            with trio.move_on_after(3):
                for stream, buf in sessions:
                    with trio.move_on_after(1):
                        while not isinstance(m := await read_message(stream, buf), XferRefuse):
                            pass
                        refusals.append(m)
            assert refusals == [XferRefuse(RefuseReason.NO_RESOURCES, 0)]
            # A whole small bundle still gets through on a fresh session.
            fresh = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(fresh, "ipn:62.0", active=True)
            for stream, _ in sessions:
                await stream.aclose()
            replies = await send_v4(fresh, buf, [(0, bundle_to(C))])
            assert isinstance(replies[0], XferAck)
            await fresh.aclose()
    assert any("budget-exceeded" in r.message for r in caplog.records)


def struct_length(total: int) -> bytes:
    item = ExtensionItem(TransferExtensionType.TRANSFER_LENGTH, total.to_bytes(8, "big"))
    return encode_extension_items((item,))


# --- orderly close ----------------------------------------------------------------------------


async def test_accepted_sessions_get_sess_term_when_the_node_stops(
    tmp_path: Path, keys: Path
) -> None:
    port = free_port()
    config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[listen]]\nport = {port}\n'
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config) as a:
            stream = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(stream, f"ipn:{B}.0", active=True)
            while B not in a.links:
                await trio.sleep(0.01)
        term = await read_until_term(stream, buf)
        assert isinstance(term, SessTerm) and not term.reply
        await stream.aclose()


async def test_ud3tn_like_tcpclv3_peer_gets_bundles_and_a_close_within_a_second(
    tmp_path: Path, keys: Path
) -> None:
    peer = Ud3tnLikeV3Peer(eid=f"ipn:{C}.0")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        config = (
            f'[node]\nnumber = {A}\nkeys = "keys"\n'
            f'[[peer]]\nnode = {C}\nport = {port}\nlayer = "tcpclv3"\n'
            f""
        )
        with trio.fail_after(20):
            async with node_from(tmp_path, "a", config) as a:
                await a.send(claim(a, A), C)
                while not peer.bundles:
                    await trio.sleep(0.01)
                started = trio.current_time()
            took = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert peer.failure == ""
    assert peer.shutdowns == 1
    assert took <= 1.2, f"closing took {took:.2f} s"


# --- signals: a real `fleetwire node` process -----------------------------------------------


@pytest.mark.parametrize("answer", [True, False], ids=["peer-answers", "peer-silent"])
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
async def test_node_process_closes_sessions_in_order_on_sigterm_and_sigint(
    tmp_path: Path, keys: Path, stop: str, answer: bool
) -> None:
    import signal
    import subprocess
    import sys

    port = free_port()
    (tmp_path / "a.toml").write_text(
        f'[node]\nnumber = {A}\nkeys = "keys"\nstore = "a.sqlite3"\n[[listen]]\nport = {port}\n'
    )
    command = [sys.executable, "-m", "fleetwire.runtime.cli.cli", "node", "a.toml"]
    process = await trio.lowlevel.open_process(command, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            assert process.stderr is not None
            said = b""
            while b"running" not in said:  # warnings may come first
                chunk = await process.stderr.receive_some(1024)
                assert chunk, said
                said += chunk
            stream = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(stream, f"ipn:{B}.0", active=True)
            replies = await send_v4(stream, buf, [(0, bundle_to(A))])  # the session is up
            assert isinstance(replies[0], XferAck)
            process.send_signal(getattr(signal, stop))
            started = trio.current_time()
            term = await read_until_term(stream, buf)
            assert not term.reply
            if answer:
                await stream.send_all(SessTerm(0x01, term.reason).encode())  # our reply
            assert await process.wait() == 0
            # 1 s for the sessions (a silent peer costs all of it), plus closing the store
            # and the interpreter: well under 2 s either way.
            assert trio.current_time() - started < 2.0
            await stream.aclose()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("configured", [True, False], ids=["node_id-given", "ipn-expected"])
async def test_a_dtn_agent_as_peer_needs_its_node_id_configured(
    tmp_path: Path, keys: Path, configured: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    peer = Ud3tnLikeV3Peer()  # announces dtn://ud3tn.dtn/
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        config = (
            f'[node]\nnumber = {A}\nkeys = "keys"\n'
            f'[[peer]]\nnode = {C}\nport = {port}\nlayer = "tcpclv3"\n'
            + ('node_id = "dtn://ud3tn.dtn/"\n' if configured else "")
        )
        with trio.fail_after(20):
            async with node_from(tmp_path, "a", config) as a:
                await a.send(claim(a, A), C)
                while not (peer.bundles or peer.shutdowns):
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    if configured:
        assert len(peer.bundles) == 1
    else:
        assert peer.bundles == [] and peer.shutdowns >= 1
        assert any("ipn:3.0" in r.message and "dtn://ud3tn.dtn/" in r.message
                   for r in caplog.records)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "fleet"),
        ('accept_from = "peers"', "peers"),
        ('accept_from = "any"', "any"),
        ("accept_from = [4, 5]", (4, 5)),
    ],
)
def test_accept_from_values(tmp_path: Path, text: str, expected: object) -> None:
    path = tmp_path / "n.toml"
    path.write_text(f"[node]\nnumber = 1\n{text}\n")
    assert load_config(path).accept_from == expected


@pytest.mark.parametrize(
    "text",
    [
        '[node]\nnumber = 1\naccept_from = "everyone"\n',
        "[node]\nnumber = 1\naccept_from = [-1]\n",
        "[node]\nnumber = 1\n[links]\nmax_sessions = 0\n",
        '[node]\nnumber = 1\n[links]\nretain_unconfirmed_s = "long"\n',
        "[node]\nnumber = 1\n[links]\nmax_memory = 3\n",
        '[node]\nnumber = 1\n[[peer]]\nnode = 2\nport = 1\nnode_id = "nocolon"\n',
    ],
)
def test_bad_link_settings_are_one_line_errors(tmp_path: Path, text: str) -> None:
    from fleetwire.runtime.node.config import ConfigError

    path = tmp_path / "n.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
