"""Acknowledged means durable: a TCPCLv4 receiver is SIGKILLed in the middle of a burst.

The receiver is a real child process serving TCPCLv4 on 127.0.0.1 into the real SQLite store,
with the link's batch custody (``accept_many`` → ``put_many``) or its per-bundle custody
(``accept`` → ``put``, many at once). The sender (this process) keeps thousands of small
bundles in flight with ``send_many`` and notes each one the receiver acknowledged with its
final XFER_ACK; once enough were acknowledged it kills the receiver outright. Reopening the
receiver's store afterwards, every acknowledged bundle must be there: an XFER_ACK may only
leave once its bundle's transaction committed (RFC 9174 §5.2.3 leaves the moment to us; our
custody promise fixes it). Bundles in flight at the kill may or may not be there; nothing
else may.

The same holds for a whole node: a real ``fleetwire node`` process (the agent, its journalled
SQLite store, batch custody for the session it accepted) relaying for a neighbour that is
down, SIGKILLed mid-burst; after the kill its store holds every bundle it acknowledged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.bpv7 import decode_bundle, encode_bundle
from fleetwire.protocol.tcpcl import v4
from fleetwire.runtime.cli.cli import main as cli
from fleetwire.runtime.links.cl_link import TcpclV4
from fleetwire.runtime.links.link import LinkDown
from fleetwire.runtime.links.tcp import open_tcp_cl_link
from fleetwire.runtime.node import keyfiles
from fleetwire.runtime.node.node import NodeConfig, open_node
from fleetwire.runtime.store.sqlite_store import open_sqlite_store

RECEIVER = r"""
import sys, trio
from fleetwire.protocol.tcpcl import v4
from fleetwire.runtime.links.cl_link import Refusal, TcpclV4
from fleetwire.runtime.store.sqlite_store import open_sqlite_store
from fleetwire.runtime.store.store import Accepted, StoredBundle
from fleetwire.runtime.links.tcp import serve_cl

def record(data):
    return StoredBundle(data[:8], None, "ipn:1.0", "ipn:2.0", 1 << 40, 0, data)

async def main(path, custody):
    async with open_sqlite_store(path) as store:
        async def accept(data, link):
            await store.put(record(data))

        async def accept_many(bundles, link):
            results = await store.put_many([record(b) for b in bundles])
            return [None if isinstance(r, Accepted) else Refusal.NO_RESOURCES for r in results]

        layer = TcpclV4(v4.SessionConfig(node_id="ipn:2.0", keepalive_s=0))
        options = {"accept_many": accept_many} if custody == "batch" else {"accept": accept}
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: serve_cl(
                    None, 0, layer, host="127.0.0.1", task_status=task_status, **options
                )
            )
            print(listeners[0].socket.getsockname()[1], flush=True)

trio.run(main, sys.argv[1], sys.argv[2])
"""

#: Acknowledged bundles before the kill; the sender keeps WINDOW more in flight.
KILL_AFTER = 3000
WINDOW = 2048
CHUNK = 64


async def _port_of(process: trio.Process) -> int:
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(64)
        if not chunk:
            raise AssertionError("receiver died before listening")
        line += chunk
    return int(line)


async def _send_until_killed(
    process: trio.Process,
    port: int,
    node_id: str,
    bundles_for: Callable[[int], list[bytes]],
    key_of: Callable[[bytes], bytes],
) -> tuple[set[bytes], int]:
    """Keep WINDOW bundles in flight to ``port`` (``bundles_for(first)``: CHUNK of them from
    number ``first``) until KILL_AFTER were acked, then SIGKILL ``process`` with sends in flight;
    (``key_of`` each acked bundle, bundles sent)."""
    acked: set[bytes] = set()
    sent = 0
    layer = TcpclV4(v4.SessionConfig(node_id=node_id, keepalive_s=0))
    try:
        async with open_tcp_cl_link("127.0.0.1", port, layer) as link:

            async def sender() -> None:
                nonlocal sent
                while link.is_up:
                    first = sent
                    sent += CHUNK
                    bundles = bundles_for(first)
                    errors = await link.send_many(bundles)
                    acked.update(
                        key_of(b) for b, e in zip(bundles, errors, strict=True) if e is None
                    )
                    if len(acked) >= KILL_AFTER and process.returncode is None:
                        process.send_signal(signal.SIGKILL)  # mid-burst: sends in flight

            async with trio.open_nursery() as nursery:
                for _ in range(WINDOW // CHUNK):
                    nursery.start_soon(sender)
            await link.wait_down()
    except LinkDown:
        pass
    return acked, sent


async def _reap(process: trio.Process) -> None:
    """End ``process`` if a failure left it running; it must have died of the SIGKILL."""
    if process.returncode is None:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
    assert process.returncode == -signal.SIGKILL


async def _burst_and_kill(path: Path, custody: str) -> tuple[set[bytes], int]:
    """Send until KILL_AFTER were acked, SIGKILL the receiver; (acked ids, bundles sent)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", RECEIVER, str(path), custody], stdout=-1
    )
    try:
        with trio.fail_after(60):
            port = await _port_of(process)
            acked, sent = await _send_until_killed(
                process, port, "ipn:1.0",
                lambda first: [
                    i.to_bytes(8, "big") + os.urandom(240) for i in range(first, first + CHUNK)
                ],
                lambda bundle: bundle[:8],
            )  # fmt: skip
            await process.wait()
    finally:
        await _reap(process)
    return acked, sent


async def _stored_ids(path: Path) -> set[bytes]:
    async with open_sqlite_store(str(path)) as store:
        assert await store.integrity_check() == []
        ids: set[bytes] = set()
        after = -1
        while True:
            page, after = await store.pending_page(None, 4096, after)
            if not page:
                return ids
            for bundle in page:
                assert bundle.data[:8] == bundle.bundle_id  # whole, not torn
                ids.add(bundle.bundle_id)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("custody", ["batch", "each"])
def test_receiver_killed_mid_burst_keeps_every_acknowledged_bundle(
    tmp_path: Path, custody: str
) -> None:
    path = tmp_path / "receiver.db"

    async def main() -> None:
        acked, sent = await _burst_and_kill(path, custody)
        assert len(acked) >= KILL_AFTER
        assert sent > len(acked)  # killed with bundles still unacknowledged: mid-burst
        stored = await _stored_ids(path)
        lost = acked - stored
        assert not lost, f"{len(lost)} acknowledged bundles missing after the kill"
        sent_ids = {i.to_bytes(8, "big") for i in range(sent)}
        assert stored <= sent_ids

    trio.run(main)


# --- a whole node -----------------------------------------------------------------------------

NODE, MEMBER, ONWARD = 1, 2, 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _relayed(sequence: int, now: int) -> bytes:
    """A bundle from fleet member 2 for node 3, which the node relays (stores for node 3)."""
    bundle = message_bundle(
        sequence.to_bytes(8, "big") + os.urandom(120), source=MEMBER, destination=ONWARD,
        created_at=now, sequence=sequence, lifetime_ms=3_600_000,
    )  # fmt: skip
    return encode_bundle(bundle)


async def _burst_and_kill_node(folder: Path) -> tuple[set[bytes], int]:
    """Run ``fleetwire node``, send it relayed bundles until KILL_AFTER were acked, SIGKILL it;
    (the store keys of the acked bundles, bundles sent)."""
    port = _free_port()
    (folder / "node.toml").write_text(
        f'[node]\nnumber = {NODE}\nkeys = "keys"\nstore = "node.sqlite3"\n'
        f'[[listen]]\nhost = "127.0.0.1"\nport = {port}\n'
        # Node 3 never answers: every relayed bundle stays in the store for it.
        f"[[peer]]\nnode = {ONWARD}\nport = {_free_port()}\n"
        "[reconnect]\ninitial_s = 3600\nmaximum_s = 3600\n"
        "[quota]\nmax_bundles = 1000000\nsource_share = 1.0\n"
    )
    command = [sys.executable, "-m", "fleetwire.runtime.cli.cli", "node", "node.toml"]
    process = await trio.lowlevel.open_process(command, cwd=folder, stderr=subprocess.PIPE)
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                running = trio.Event()

                async def drain_stderr() -> None:  # read to the end: a full pipe would block it
                    assert process.stderr is not None
                    said = b""
                    while chunk := await process.stderr.receive_some(4096):
                        said += chunk
                        if b"running" in said:
                            running.set()

                nursery.start_soon(drain_stderr)
                await running.wait()
                acked, sent = await _send_until_killed(
                    process, port, f"ipn:{MEMBER}.0",
                    lambda first: [_relayed(i, now) for i in range(first, first + CHUNK)],
                    lambda bundle: decode_bundle(bundle).id.key(),
                )  # fmt: skip
                await process.wait()
    finally:
        await _reap(process)
    return acked, sent


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_node_killed_mid_burst_keeps_every_acknowledged_bundle(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cli(["keys", "root", str(keys)])
    for node in (NODE, MEMBER, ONWARD):
        cli(["keys", "node", str(keys), "--node", str(node)])

    async def main() -> None:
        acked, sent = await _burst_and_kill_node(tmp_path)
        assert len(acked) >= KILL_AFTER
        assert sent > len(acked)  # killed with bundles still unacknowledged: mid-burst
        async with open_sqlite_store(str(tmp_path / "node.sqlite3")) as store:
            assert await store.integrity_check() == []
            # Custody first: what was acked may still wait in the ingress (one insert per run,
            # committed before the ack). The restarted node adopts it before anything new.
            left = await store.ingress_runs(0, 1 << 20)
            now_ms = round((time.time() - DTN_EPOCH_UNIX) * 1000)
            config = NodeConfig(
                node=NODE, key=keyfiles.load_node_key(keys, NODE),
                trust=keyfiles.load_trust(keys, now_ms), static_routes={ONWARD: ONWARD},
            )  # fmt: skip
            async with open_node(config, store) as node:
                assert node.ingress is not None
                assert node.ingress.held_bundles == sum(len(run.bundles) for run in left)
                await node.ingress.wait_settled()
                assert node.ingress.dropped == 0
            assert await store.ingress_runs(0, 1) == []
            held = await store.pending_for_destination(f"ipn:{ONWARD}.7", sent + 1)
        # Each record decodes whole (not torn) and its key is that bundle's: its BPv7 id first.
        stored = set()
        for record in held:
            bpv7_id = decode_bundle(record.data).id.key()
            assert record.bundle_id.startswith(bpv7_id)
            stored.add(bpv7_id)
        lost = acked - stored
        assert not lost, f"{len(lost)} acknowledged bundles missing after the kill"
        assert len(stored) == len(held) <= sent

    trio.run(main)
