"""TCPCLv4 link throughput between two processes on 127.0.0.1, as a ratio to raw Trio TCP.

    python benchmarks/bench_tcp_link.py [--mb N] [--sizes fcp,1024,65536] [--no-sqlite]
        [--drain 100000] [--check] [--cl tcpclv4|tcpclv3] [--modes noop,sqlite,sqlite1,node]

``fcp`` is a real signed lease claim (COSE_Sign1, Ed25519) in its BPv7 bundle, about 250 bytes:
the commonest bundle of a busy cell.

The receiver runs in a child process (``sys.executable``), the sender in this one. For each
bundle size the same byte volume is moved several ways, measured in the same run:

* **raw**: Trio TCP, each message length-prefixed (4 bytes), written in batches of up to
  256 KiB (as the link's writer batches); the receiver splits the stream into messages and
  answers one byte at the end. This is the limit: framing and nothing else.
* **tcpclv4**: a :class:`~fleetwire.runtime.links.cl_link.ClLink` each way, ``send_many`` returning
  on the peer's final XFER_ACKs, which the receiver sends after its batch custody
  (``accept_many``) returned; that does nothing.
* **tcpclv4+sqlite**: the same with the link's batch custody (``accept_many``) putting the
  queued bundles into the SQLite store with ``put_run`` (the run's ids and bytes, the rest of
  its metadata shared, no record per bundle; WAL, group commit, fsync): one transaction for
  many bundles, each acked only after its commit, acks in receive order;
* **tcpclv4+sqlite/1**: the same with a per-bundle ``accept`` (``put`` each, as the node's
  ``accept`` does); the link runs many at once, so the store still groups their commits;
* **store alone**: the SQLite store taking the same bundles with ``put_many`` in this process,
  no network: the ceiling for the two rows above (its schema keeps several indexes per
  bundle, which the raw durable table does not).
* **raw tcp+sqlite**: the raw limit of *durable* reception, with custody as the link has it:
  raw TCP as above, the receiver inserting the messages into a plain SQLite table (an integer
  key and the bytes, no store code) with the store's durability settings (WAL,
  ``synchronous=FULL``, the same checkpoint bound), one transaction per batch of at most
  1,024 messages (the store's ``max_batch``) on a worker thread while the next batch gathers
  (group commit), and acknowledging each batch (4 bytes: how many) only after its commit;
  the sender keeps at most the link's window unacknowledged. ``tcpclv4+sqlite`` is compared
  with this: no durable receiver can beat the disk, and none may ack before the commit.

**A real node as the receiver** (``--modes node``, FCP bundles only): a ``fleetwire node``
as a config file describes it (``open_configured_node``: the sans-IO agent, its journalled
SQLite store, routing, the relay policy, batch custody for accepted sessions) on a TCPCLv4
listener. The sender sends distinct lease claims signed by node 1 (real Ed25519, the fleet's
keys derived from fixed seeds and written as ``fleetwire keys`` does), each in its own bundle,
so neither dedupe nor the replay guard refuses one:

* **tcpclv4+node relay**: the bundles are for node 3, a configured neighbour that is never up:
  the receiver routes each one and stores it for that neighbour;
* **tcpclv4+node deliver**: the bundles are for the receiver: each is verified (signature,
  credential, replay) and delivered to a subscription, which acknowledges it.

Both are compared with ``raw tcp+sqlite`` of the same run. The relay's timing ends at the
last XFER_ACK (custody: with the node's ingress, the runs are durable there and the agent
adopts them afterwards); the line under it, **adopted by agent**, is the time from the first
send until the agent had every bundle (routed, stored for node 3) — not a custody figure. The
deliver row's timing ends once the receiver says its subscription had every message (it
prints a line). The receiver's CPU per bundle covers everything in both.

``--cl tcpclv3`` runs the link modes (and the drain) over TCPCLv3 with acks instead; the raw
limits are the same.

Senders keep ``--window`` bundles in flight (default 4 MiB worth, at most 2,048), calling
``send_many`` with chunks of 64.

Timing starts once the connection (and session) is up and stops when the last bundle is
acknowledged (raw: when the end byte arrives). The modes take turns in each round and the best
of ``--repeat`` rounds is kept, so a shared machine's load skews them alike.

**Backlog drain** (``--drain N``, 0 to skip): a relay's SQLite store holds N FCP bundles for one
neighbour; the moment the link is up the relay reads them page by page (``pending_page``),
sends each page with ``send_many`` and deletes what was acknowledged (``delete_many``), several
pages in flight, to a neighbour taking custody in its own SQLite store. Reported: bundles/s
and seconds to drain, against the store's own read-and-delete rate (the same loop without a
link) and the link's rate (``tcpclv4+sqlite`` for FCP bundles), both measured in the same run.

Goals (``--check`` exits non-zero when one is missed): for 64 KiB tcpclv4 ≥ 0.5 of raw; for
bundles up to 1 KiB tcpclv4+sqlite ≥ 0.5 of raw tcp+sqlite and, at 1 KiB, tcpclv4 ≥ 0.2 of
raw; the drain ≥ 0.5 of min(store rate, link rate).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence

import trio
from fleetwire.protocol.tcpcl import v3, v4
from fleetwire.runtime.links.cl_link import Accept, AcceptMany, ClLink, Refusal, TcpclV3, TcpclV4
from fleetwire.runtime.links.tcp import open_tcp_cl_link, serve_cl

HOST = "127.0.0.1"
_LEN = struct.Struct(">I")
BATCH = 256 * 1024
#: Bundles per ``send_many`` call.
CHUNK = 64
NEIGHBOUR = "ipn:2.0"
#: Rows per transaction at most in the raw durable receiver: the store's ``max_batch``.
MAX_BATCH = 1024


def fcp_bundle() -> bytes:
    """A signed lease claim in its bundle, as a node sends it (about 250 bytes)."""
    from fleetwire.protocol.agent.bundling import message_bundle
    from fleetwire.protocol.bpv7.bundle import encode_bundle
    from fleetwire.protocol.envelope import seal
    from fleetwire.protocol.keys import SigningKey
    from fleetwire.protocol.messages import Header, LeaseClaim

    now = 1_780_000_000_000
    claim = LeaseClaim(
        header=Header(issuer=4711, issued_at=now, sequence=42),
        resource="cell-3/dock-2",
        term_ms=7_200_000,
    )
    envelope = seal(claim, SigningKey.from_seed(b"\x02" * 32)).envelope
    bundle = message_bundle(
        envelope, source=4711, destination=2, created_at=now, sequence=42, lifetime_ms=86_400_000
    )
    return encode_bundle(bundle)


def payload_for(size: str) -> bytes:
    return fcp_bundle() if size == "fcp" else os.urandom(int(size))


#: The link modes' convergence layer (``--cl``): TCPCLv4, or TCPCLv3 with acks (custody like
#: v4's: ``send_many`` returns on the final ACK_SEGMENTs). MTCP is not offered: it has no acks,
#: so a sender could not tell when the receiver took custody, and the timing would end early.
CL = ["tcpclv4"]


def layer(node: int) -> TcpclV4 | TcpclV3:
    if CL[0] == "tcpclv3":
        return TcpclV3(v3.TcpclV3Config(local_eid=f"ipn:{node}.0", keepalive_s=0))
    return TcpclV4(v4.SessionConfig(node_id=f"ipn:{node}.0", keepalive_s=0))


# --- receiver (child process) ----------------------------------------------------------------


#: The receiver's CPU clock when it announced its port (setup before that is not counted).
_STARTED = [0.0]


def announce(port: int) -> None:
    print(port, flush=True)
    _STARTED[0] = time.process_time()


async def serve_raw(count: int) -> None:
    """Raw Trio TCP: split the stream into messages, answer one byte at the end."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    announce(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    buf = bytearray()
    received = 0
    while received < count:
        data = await stream.receive_some(BATCH)
        if not data:
            raise SystemExit("raw sender closed early")
        buf += data
        start = 0
        batch = []
        while len(buf) - start >= 4:
            (n,) = _LEN.unpack_from(buf, start)
            if len(buf) - start - 4 < n:
                break
            batch.append(bytes(buf[start + 4 : start + 4 + n]))  # a bundle object, as the CL makes
            start += 4 + n
            received += 1
        del buf[:start]
    await stream.send_all(b"k")
    await stream.aclose()


async def serve_raw_durable(count: int) -> None:
    """The raw durable limit: length-prefixed messages into a plain SQLite table, each
    acknowledged only after the transaction holding it committed (group commit: while one
    batch of at most ``MAX_BATCH`` rows commits on a worker thread, the next one gathers)."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    announce(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    db = _raw_database()
    gathered: list[bytearray] = []
    arrived = trio.Event()
    received = 0

    def commit(rows: list[bytearray]) -> None:  # on the worker thread
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO bundles (data) VALUES (?)", [(r,) for r in rows])
        db.execute("COMMIT")

    async def committer() -> None:
        nonlocal gathered, arrived
        committed = 0
        while committed < count:
            if not gathered:
                await arrived.wait()
                arrived = trio.Event()
                continue
            rows, gathered = gathered[:MAX_BATCH], gathered[MAX_BATCH:]
            await trio.to_thread.run_sync(commit, rows)
            committed += len(rows)
            await stream.send_all(_LEN.pack(len(rows)))  # durable: now acknowledge them

    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer)
        buf = bytearray()
        while received < count:
            data = await stream.receive_some(BATCH)
            if not data:
                raise SystemExit("raw sender closed early")
            buf += data
            start = 0
            while len(buf) - start >= 4:
                (n,) = _LEN.unpack_from(buf, start)
                if len(buf) - start - 4 < n:
                    break
                # A bytearray (the slice is one): sqlite3 binds it as it is, where bytes goes
                # through its adapter lookup first (see the store's ``_VALUES``).
                gathered.append(buf[start + 4 : start + 4 + n])
                start += 4 + n
                received += 1
            del buf[:start]
            arrived.set()
    await stream.aclose()


def _raw_database() -> sqlite3.Connection:
    """A plain table (an integer key and the bytes) with the store's durability settings:
    WAL, ``synchronous=FULL`` and the same checkpoint bound (``TUNING``, ``wal_pragmas``)."""
    from fleetwire.runtime.store.sqlite_store import DEFAULT_WAL_LIMIT, TUNING, wal_pragmas

    folder = tempfile.mkdtemp(prefix="bench-raw-sqlite-")
    db = sqlite3.connect(
        os.path.join(folder, "raw.db"), isolation_level=None, check_same_thread=False
    )
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    for pragma in (*TUNING, *wal_pragmas(DEFAULT_WAL_LIMIT)):
        db.execute(pragma)
    db.execute("CREATE TABLE bundles (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    return db


async def serve_cl_once(kind: str) -> None:
    if kind == "noop":

        async def accept_many(bundles: list[bytes], link: ClLink) -> Sequence[Refusal | None]:
            return [None] * len(bundles)

        await serve_one_link(None, accept_many)
        return
    from fleetwire.runtime.store.sqlite_store import open_sqlite_store
    from fleetwire.runtime.store.store import StoredBundle

    with tempfile.TemporaryDirectory(prefix="bench-tcp-link-") as tmp:
        async with open_sqlite_store(os.path.join(tmp, "store.db")) as store:
            counter = 0

            def record(bundle: bytes) -> StoredBundle:
                nonlocal counter
                counter += 1
                # As the node's receive path builds it (``bundling.stored``): from decoded fields.
                return StoredBundle.checked_by_caller(
                    bundle_id=counter.to_bytes(8, "big"),
                    content_id=None,
                    source="ipn:1.0",
                    destination=NEIGHBOUR,
                    expires_at=1 << 62,
                    received_at=0,
                    data=bundle,
                )

            async def put(bundle: bytes, link: ClLink) -> None:
                await store.put(record(bundle))

            async def put_many(bundles: list[bytes], link: ClLink) -> Sequence[Refusal | None]:
                # The link's run as it is: the bundles and their ids, the rest shared
                # (``put_run``: no record per bundle unless one repeats or is refused).
                nonlocal counter
                first = counter + 1
                counter += len(bundles)
                ids = [n.to_bytes(8, "big") for n in range(first, counter + 1)]
                results = await store.put_run(
                    ids, bundles, source="ipn:1.0", destination=NEIGHBOUR,
                    expires_at=1 << 62, received_at=0,
                )  # fmt: skip
                if not any(results):
                    return results  # all None: every one accepted
                return [None if r is None else Refusal.NO_RESOURCES for r in results]

            if kind == "sqlite1":
                await serve_one_link(put)
            else:
                await serve_one_link(None, put_many)


async def serve_one_link(accept: Accept | None, accept_many: AcceptMany | None = None) -> None:
    """Serve the first connection until its session ends, then return."""
    async with trio.open_nursery() as nursery:

        async def handler(link: ClLink) -> None:
            await link.wait_down()
            nursery.cancel_scope.cancel()

        listeners = await nursery.start(
            lambda task_status: serve_cl(
                handler, 0, layer(2), host=HOST, accept=accept, accept_many=accept_many,
                task_status=task_status,
            )
        )
        announce(listeners[0].socket.getsockname()[1])


# --- a real node as the receiver --------------------------------------------------------------

#: The node modes' fleet: the receiver is node 2, the sender node 1, the relay's next hop node 3
#: (configured, never up: the receiver stores every relayed bundle for it).
SENDER, RECEIVER, ONWARD = 1, 2, 3
#: The node modes: the receiver relays every bundle onward, or every bundle is for it.
NODE_MODES = {"noderelay": ONWARD, "nodedeliver": RECEIVER}
#: The deliver receiver's line once every message was delivered (the sender's timing ends there).
DELIVERED = b"delivered\n"


def _seed(node: int) -> bytes:
    return bytes([node]) * 32


def make_fleet(folder: str) -> None:
    """A keys folder as ``fleetwire keys`` writes it, with keys derived from fixed seeds (so
    the sender, in another process, signs with the key the receiver trusts)."""
    from pathlib import Path

    from fleetwire.protocol.keys import SigningKey
    from fleetwire.protocol.trust import Role, issue_credential
    from fleetwire.runtime.node.keyfiles import ROOT_NAME

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    root = SigningKey.from_seed(b"\xff" * 32)
    (path / f"{ROOT_NAME}.pub").write_bytes(root.public.to_cose_key())
    now = dtn_now()
    for node in (SENDER, RECEIVER, ONWARD):
        key = SigningKey.from_seed(_seed(node))
        private = path / f"node-{node}.key"
        private.write_bytes(key.to_cose_key())
        private.chmod(0o600)
        (path / f"node-{node}.pub").write_bytes(key.public.to_cose_key())
        (path / f"node-{node}.cred").write_bytes(
            issue_credential(
                root, node=node, public_key=key.public, roles={Role.NODE},
                not_before=now - 60_000, not_after=now + 86_400_000, serial=node,
            )
        )  # fmt: skip


def dtn_now() -> int:
    from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX

    return round((time.time() - DTN_EPOCH_UNIX) * 1000)


def signed_claims(count: int, destination: int) -> list[bytes]:
    """``count`` distinct lease claims by node 1 (real Ed25519 signatures), each in its own
    bundle (distinct ids and sequences, so neither bundle dedupe nor replay refuses one)."""
    from fleetwire.protocol.agent.bundling import message_bundle
    from fleetwire.protocol.bpv7.bundle import encode_bundle
    from fleetwire.protocol.envelope import seal
    from fleetwire.protocol.keys import SigningKey
    from fleetwire.protocol.messages import Header, LeaseClaim

    key = SigningKey.from_seed(_seed(SENDER))
    now = dtn_now()
    bundles = []
    for i in range(count):
        claim = LeaseClaim(
            header=Header(issuer=SENDER, issued_at=now, sequence=(now << 10) + i),
            resource=f"cell-3/dock-{i % 97}",
            term_ms=7_200_000,
        )
        bundle = message_bundle(
            seal(claim, key).envelope, source=SENDER, destination=destination, created_at=now,
            sequence=i, lifetime_ms=86_400_000,
        )  # fmt: skip
        bundles.append(encode_bundle(bundle))
    return bundles


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def serve_node(kind: str, count: int, keys: str) -> None:
    """A real node (``open_configured_node``: the agent, the journalled SQLite store, routing,
    the relay policy, batch custody) on a TCPCLv4 listener; returns once it has every bundle
    stored for node 3 (relay) or delivered to, and acknowledged by, a subscription (deliver)."""
    from pathlib import Path

    from fleetwire.runtime.node.config import load_config
    from fleetwire.runtime.node.tcp_node import open_configured_node

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        text = (
            f'[node]\nnumber = {RECEIVER}\nkeys = "{keys}"\nstore = "{tmp}/node.sqlite3"\n'
            f"[[listen]]\nhost = \"{HOST}\"\nport = {port}\n"
            # Room for the whole run from one neighbour (the default share is a quarter of
            # 50,000 bundles): the bench measures custody, not the quota's refusals.
            f"[quota]\nmax_bundles = {2 * count + 1000}\nsource_share = 1.0\n"
        )
        if kind == "noderelay":  # a configured neighbour that never answers: stored for it
            text += f"[[peer]]\nnode = {ONWARD}\nport = {free_port()}\n"
            text += "[reconnect]\ninitial_s = 3600\nmaximum_s = 3600\n"
        config_path = Path(tmp) / "node.toml"
        config_path.write_text(text)
        async with open_configured_node(load_config(config_path)) as node:
            inbox = node.subscribe() if kind == "nodedeliver" else None
            announce(port)
            if inbox is not None:
                for _ in range(count):
                    await inbox.receive()
                inbox.acknowledge()
                sys.stdout.buffer.write(DELIVERED)
                sys.stdout.flush()
            else:
                # Custody first: the links ack once a run is in the ingress; the agent adopts
                # it afterwards. Say when it had all of them (a clock the sender shares).
                while node.stats.accepted < count:
                    await trio.sleep(0.001)
                sys.stdout.buffer.write(f"adopted {time.monotonic():.6f}\n".encode())
                sys.stdout.flush()
            stats = node.stats
            if kind == "nodedeliver":
                assert stats.delivered == count, stats
            assert stats.accepted == count and not stats.rejected and not stats.duplicates, stats
        if kind == "noderelay":  # every one stored for the next hop
            from fleetwire.protocol.agent.bundling import FCP_SERVICE
            from fleetwire.runtime.store.sqlite_store import open_sqlite_store

            async with open_sqlite_store(f"{tmp}/node.sqlite3") as store:
                destination = f"ipn:{ONWARD}.{FCP_SERVICE}"
                held = await store.pending_for_destination(destination, count + 1)
                assert len(held) == count, len(held)


# --- sender (this process) -------------------------------------------------------------------


#: Receiver CPU seconds (all its threads) per mode, of the run that gave each best time.
RECEIVER_CPU: dict[str, list[float]] = {}
#: ``--profile FILE``: the receiver of each link mode runs under cProfile, stats to FILE.<mode>.
PROFILE: str = ""


#: The node relay: seconds from the first send until its agent had adopted every bundle (the
#: custody rate ends at the last ack, before that), per run.
ADOPTED: dict[str, list[float]] = {}
#: ``time.monotonic()`` when the last ``send_cl`` started sending (the receiver's clock too).
SEND_STARTED: list[float] = [0.0]

#: The node modes' keys folder (made once per run).
KEYS: list[str] = []


async def spawn(mode: str, count: int) -> tuple[trio.Process, int]:
    extra = ["--profile", f"{PROFILE}.{mode}"] if PROFILE and mode not in ("raw",) else []
    if mode in NODE_MODES:
        extra += ["--keys", KEYS[0]]
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--serve", mode, "--count", str(count), "--cl", CL[0], *extra],
        stdout=-1,  # subprocess.PIPE
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(64)
            if not chunk:
                raise SystemExit(f"receiver {mode} died")
            line += chunk
    return process, int(line)


async def send_raw(port: int, payload: bytes, count: int) -> float:
    stream = await trio.open_tcp_stream(HOST, port)
    message = _LEN.pack(len(payload)) + payload
    per_batch = max(1, BATCH // len(message))
    start = time.perf_counter()
    sent = 0
    while sent < count:
        n = min(per_batch, count - sent)
        await stream.send_all(message * n)
        sent += n
    assert await stream.receive_some(1) == b"k"
    elapsed = time.perf_counter() - start
    await stream.aclose()
    return elapsed


async def send_raw_durable(port: int, payload: bytes, count: int, window: int) -> float:
    """Raw TCP with custody: at most ``window`` messages sent and not yet acknowledged (the
    link's window), each acknowledged once the receiver committed it."""
    stream = await trio.open_tcp_stream(HOST, port)
    message = _LEN.pack(len(payload)) + payload
    per_batch = max(1, min(window, BATCH // len(message)))
    acked = 0
    room = trio.Event()
    start = time.perf_counter()

    async def read_acks() -> None:
        nonlocal acked, room
        buf = b""
        while acked < count:
            data = await stream.receive_some(4096)
            if not data:
                raise SystemExit("raw durable receiver closed early")
            buf += data
            while len(buf) >= 4:
                acked += _LEN.unpack_from(buf)[0]
                buf = buf[4:]
            room.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_acks)
        sent = 0
        while sent < count:
            n = min(per_batch, count - sent, window - (sent - acked))
            if n <= 0:
                room = trio.Event()
                await room.wait()
                continue
            await stream.send_all(message * n)
            sent += n
    elapsed = time.perf_counter() - start
    await stream.aclose()
    return elapsed


async def send_cl(
    port: int,
    payload: bytes,
    count: int,
    window: int,
    bundles: Sequence[bytes] = (),
    finished: Callable[[], Awaitable[None]] | None = None,
) -> float:
    """Send ``count`` bundles: ``bundles`` when given (distinct ones), else ``payload`` again.
    The time ends at the last acknowledgement, or once ``finished`` returns after it."""
    async with open_tcp_cl_link(HOST, port, layer(1)) as link:
        next_index = 0
        chunk = min(CHUNK, window)

        async def worker() -> None:
            nonlocal next_index
            while next_index < count:
                n = min(chunk, count - next_index)
                first, next_index = next_index, next_index + n
                run = list(bundles[first : first + n]) if bundles else [payload] * n
                errors = await link.send_many(run)
                if any(errors):
                    raise SystemExit(f"send failed: {next(e for e in errors if e)}")

        start = time.perf_counter()
        SEND_STARTED[:] = [time.monotonic()]
        async with trio.open_nursery() as nursery:
            for _ in range(max(1, window // chunk)):
                nursery.start_soon(worker)
        if finished is not None:
            await finished()
        elapsed = time.perf_counter() - start
        assert link.bundles_sent == count
    return elapsed


# --- backlog drain ---------------------------------------------------------------------------


async def fill(store: object, payload: bytes, count: int) -> None:
    from fleetwire.runtime.store.store import StoredBundle

    for first in range(0, count, 1000):
        await store.put_many(  # type: ignore[attr-defined]
            [
                StoredBundle(
                    bundle_id=i.to_bytes(8, "big"),
                    content_id=None,
                    source="ipn:4711.0",
                    destination=NEIGHBOUR,
                    expires_at=1 << 62,
                    received_at=0,
                    data=payload,
                    next_hop=NEIGHBOUR,
                )
                for i in range(first, min(count, first + 1000))
            ]
        )


async def drain(store: object, link: ClLink | None, page: int = 1024, depth: int = 4) -> int:
    """Read, send (if ``link``), delete what was acked: several pages in flight. Returns the
    bundles drained."""
    pages_send, pages_recv = trio.open_memory_channel[list[object]](depth)
    drained = 0

    async def reader() -> None:
        after = -1
        async with pages_send:
            while True:
                bundles, after = await store.pending_page(NEIGHBOUR, page, after)  # type: ignore[attr-defined]
                if not bundles:
                    return
                await pages_send.send(bundles)

    async def sender() -> None:
        nonlocal drained
        async for bundles in pages_recv:
            if link is None:
                done = [b.bundle_id for b in bundles]  # type: ignore[attr-defined]
            else:
                errors = await link.send_many([b.data for b in bundles])  # type: ignore[attr-defined]
                done = [b.bundle_id for b, e in zip(bundles, errors, strict=True) if e is None]  # type: ignore[attr-defined]
            await store.delete_many(done)  # type: ignore[attr-defined]
            drained += len(done)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for _ in range(depth):
            nursery.start_soon(sender)
    return drained


async def measure_drain(count: int, payload: bytes) -> tuple[float, float]:
    """Seconds to read-and-delete ``count`` bundles without a link, and to drain them over one."""
    from fleetwire.runtime.store.sqlite_store import open_sqlite_store

    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        async with open_sqlite_store(os.path.join(tmp, "alone.db")) as store:
            await fill(store, payload, count)
            start = time.perf_counter()
            assert await drain(store, None) == count
            alone = time.perf_counter() - start
            assert await store.count() == 0
        async with open_sqlite_store(os.path.join(tmp, "relay.db")) as store:
            await fill(store, payload, count)
            process, port = await spawn("sqlite", count)
            try:
                async with open_tcp_cl_link(HOST, port, layer(1)) as link:
                    start = time.perf_counter()  # the link is up: the contact begins
                    assert await drain(store, link) == count
                    linked = time.perf_counter() - start
                assert await store.count() == 0
                with trio.fail_after(30):
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    with trio.CancelScope(shield=True):
                        await process.wait()
    return alone, linked


async def measure(mode: str, payload: bytes, count: int, window: int) -> float:
    # Signed afresh for each run (the node's replay memory is new each time, but the claims'
    # issued_at must be recent); made before the receiver starts, so not timed.
    claims = signed_claims(count, NODE_MODES[mode]) if mode in NODE_MODES else []
    process, port = await spawn(mode, count)
    said = b""

    async def delivered() -> None:
        """Until the receiver says it delivered every message (its line before the CPU's)."""
        nonlocal said
        assert process.stdout is not None
        while DELIVERED not in said:
            chunk = await process.stdout.receive_some(64)
            if not chunk:
                raise SystemExit("the node receiver died before delivering everything")
            said += chunk
        said = said.split(DELIVERED, 1)[1]

    try:
        if mode == "nodedeliver":  # delivered, not only taken into custody
            elapsed = await send_cl(port, payload, count, window, claims, delivered)
        elif mode in NODE_MODES:
            elapsed = await send_cl(port, payload, count, window, claims)
        elif mode == "raw":
            elapsed = await send_raw(port, payload, count)
        elif mode == "rawsqlite":
            elapsed = await send_raw_durable(port, payload, count, window)
        else:
            elapsed = await send_cl(port, payload, count, window)
        # A node's receiver closes its sessions and store first (and, unbatched, may still be
        # delivering): more time.
        with trio.fail_after(120 if mode in NODE_MODES else 30):
            assert process.stdout is not None
            tail = said
            while chunk := await process.stdout.receive_some(64):
                tail += chunk
            await process.wait()
        if tail.startswith(b"adopted "):
            line, tail = tail.split(b"\n", 1)
            ADOPTED.setdefault(mode, []).append(float(line.split()[1]) - SEND_STARTED[0])
        if tail.startswith(b"cpu "):  # the receiver's own CPU seconds, all threads
            RECEIVER_CPU.setdefault(mode, []).append(float(tail.split()[1]) / count)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return elapsed


async def measure_store(payload: bytes, count: int) -> float:
    """Seconds for the SQLite store alone to take ``count`` bundles with ``put_many`` (pages of
    1,024, four at once, as the receiver's batch custody gives them): the store's ceiling."""
    from fleetwire.runtime.store.sqlite_store import open_sqlite_store
    from fleetwire.runtime.store.store import StoredBundle

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        async with open_sqlite_store(os.path.join(tmp, "store.db")) as store:
            next_id = 0

            async def producer() -> None:
                nonlocal next_id
                while next_id < count:
                    first = next_id
                    next_id = min(count, next_id + 1024)
                    await store.put_many(
                        [
                            StoredBundle(
                                i.to_bytes(8, "big"), None, "ipn:1.0", NEIGHBOUR, 1 << 62, 0,
                                payload,
                            )
                            for i in range(first, next_id)
                        ]
                    )

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(producer)
            return time.perf_counter() - start


def sqlite_available() -> bool:
    try:
        import fleetwire.runtime.store.sqlite_store  # noqa: F401
    except ImportError:
        return False
    return True


async def main(args: argparse.Namespace) -> int:
    durable = ["rawsqlite", "sqlite", "sqlite1"] if args.sqlite and sqlite_available() else []
    requested = args.modes.split(",") if args.modes else []
    if durable and "node" in requested:  # a real node as the receiver (fcp bundles only)
        durable += list(NODE_MODES)
        requested += list(NODE_MODES)
        folder = tempfile.mkdtemp(prefix="bench-keys-")
        atexit.register(shutil.rmtree, folder, True)
        make_fleet(folder)
        KEYS[:] = [folder]
    modes = ["raw", "noop", *durable]
    if args.modes:
        # The raw limits always run: every ratio needs them.
        modes = [m for m in modes if m in ("raw", "rawsqlite", *requested)]
    cl = CL[0]
    names = {
        "raw": "raw trio tcp",
        "noop": cl,
        "rawsqlite": "raw tcp+sqlite",
        "sqlite": f"{cl}+sqlite",
        "sqlite1": f"{cl}+sqlite/1",
        "noderelay": f"{cl}+node relay",
        "nodedeliver": f"{cl}+node deliver",
    }
    missed: list[str] = []
    link_rate: dict[str, float] = {}
    print(
        f"{'size':>8} {'mode':>20} {'bundles/s':>11} {'MB/s':>8} {'vs raw':>7} "
        f"{'vs raw durable':>15} {'recv CPU µs/bundle':>19}"
    )
    for size_name in args.sizes:
        payload = payload_for(size_name)
        size = len(payload)
        label = f"fcp {size}" if size_name == "fcp" else str(size)
        count = max(100, args.mb * 1_000_000 // size)
        window = args.window or min(2048, max(16, (4 << 20) // size))
        # Modes take turns in every round (best of ``repeat`` kept), so a load that comes
        # and goes on a shared machine hits them alike.
        # The node modes carry signed lease claims: FCP-sized bundles only.
        size_modes = [m for m in modes if m not in NODE_MODES or size_name == "fcp"]
        best = {mode: float("inf") for mode in size_modes}
        RECEIVER_CPU.clear()
        ADOPTED.clear()
        store_alone = float("inf")
        for _ in range(args.repeat):
            for mode in size_modes:
                best[mode] = min(best[mode], await measure(mode, payload, count, window))
            if "sqlite" in modes:
                store_alone = min(store_alone, await measure_store(payload, count))
        raw = count * size / best["raw"] / 1e6
        raw_durable = count * size / best["rawsqlite"] / 1e6 if durable else None
        for mode in size_modes:
            rate = count / best[mode]
            mbps = count * size / best[mode] / 1e6
            ratio = mbps / raw
            versus = f"{mbps / raw_durable:.2f}" if raw_durable and mode in durable else ""
            cpu = RECEIVER_CPU.get(mode, [])
            # CPU per bundle is far less sensitive to a shared machine's load than the rate.
            spent = f"{min(cpu) * 1e6:.1f}-{max(cpu) * 1e6:.1f}" if cpu else ""
            print(
                f"{label:>8} {names[mode]:>20} {rate:>11,.0f} {mbps:>8.1f} {ratio:>7.2f} "
                f"{versus:>15} {spent:>19}"
            )
            if ADOPTED.get(mode):  # not a custody figure: when the agent had them all
                adopted = min(ADOPTED[mode])
                print(
                    f"{'':>8} {'  adopted by agent':>20} {count / adopted:>11,.0f}"
                    f"{'':>37}   ({adopted:.2f} s from the first send; custody "
                    f"{best[mode]:.2f} s to the last ack)"
                )
            if mode == "noop" and size >= 65536 and ratio < 0.5:
                missed.append(f"{label}: {cl} {ratio:.2f} of raw (goal 0.5)")
            if mode == "noop" and size == 1024 and ratio < 0.2:
                missed.append(f"{label}: {cl} {ratio:.2f} of raw (goal 0.2)")
            if mode == "sqlite" and raw_durable and size <= 1024 and mbps / raw_durable < 0.5:
                missed.append(
                    f"{label}: {cl}+sqlite {mbps / raw_durable:.2f} of raw durable (goal 0.5)"
                )
            if mode == "sqlite":
                link_rate[size_name] = rate
        if "sqlite" in modes:
            rate = count / store_alone
            print(
                f"{label:>8} {'store alone':>20} {rate:>11,.0f} {count * size / store_alone / 1e6:>8.1f}"
                f"{'':>8} {count * size / store_alone / 1e6 / raw_durable:15.2f}"  # type: ignore[operator]
                f"   ({cl}+sqlite / store alone = {store_alone / best['sqlite']:.2f})"
            )
    if args.drain and "sqlite" in modes:
        payload = fcp_bundle()
        if "fcp" not in link_rate:
            count = max(100, args.mb * 1_000_000 // len(payload))
            window = args.window or 2048
            link_rate["fcp"] = count / min(
                [await measure("sqlite", payload, count, window) for _ in range(args.repeat)]
            )
        alone, linked = await measure_drain(args.drain, payload)
        store_rate, rate = args.drain / alone, args.drain / linked
        limit = min(store_rate, link_rate["fcp"])
        print(
            f"\nbacklog drain of {args.drain:,} FCP bundles ({len(payload)} B) from SQLite over "
            f"{cl} into SQLite: {rate:,.0f} bundles/s, {linked:.1f} s to drain\n"
            f"  store read-and-delete alone {store_rate:,.0f} bundles/s ({alone:.1f} s); "
            f"link ({cl}+sqlite, fcp) {link_rate['fcp']:,.0f} bundles/s\n"
            f"  drain / min(store, link) = {rate / limit:.2f}"
        )
        if rate / limit < 0.5:
            missed.append(f"drain {rate / limit:.2f} of min(store, link) (goal 0.5)")
    for line in missed:
        print(f"goal missed: {line}")
    return 1 if missed and args.check else 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=32, help="megabytes per measurement")
    parser.add_argument(
        "--sizes", default="fcp,1024,65536", help="bundle sizes (bytes or fcp), comma separated"
    )
    parser.add_argument(
        "--drain", type=int, default=100_000, help="backlog drain: bundles (0: skip)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per figure (best kept)")
    parser.add_argument(
        "--window", type=int, default=0, help="sends in flight (default: 4 MiB worth)"
    )
    parser.add_argument("--no-sqlite", dest="sqlite", action="store_false")
    parser.add_argument("--check", action="store_true")
    parser.add_argument(
        "--modes", default="", help="only these link modes besides the raw limits (comma "
        "separated: noop, sqlite, sqlite1, node; the store alone runs with sqlite; node: a real "
        "node receives signed FCP bundles, relaying them (node relay) or for itself (node deliver))"
    )
    parser.add_argument(
        "--serve", choices=["raw", "rawsqlite", "noop", "sqlite", "sqlite1", *NODE_MODES],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--keys", default="", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--cl",
        choices=["tcpclv4", "tcpclv3"],
        default="tcpclv4",
        help="the link modes' convergence layer (tcpclv3: with acks)",
    )
    parser.add_argument(
        "--profile", default="", help="profile each receiver (cProfile, CPU time of its Trio thread) into "
        "FILE.<mode>; read with python -m pstats"
    )
    args = parser.parse_args()
    args.sizes = args.sizes.split(",")
    return args


def serve(options: argparse.Namespace) -> None:
    """The receiver's side; prints its port first and its CPU seconds (all threads) last."""
    profiler = None
    if options.profile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU, not wall: the machine may be busy
        profiler.enable()
    if options.serve == "raw":
        trio.run(serve_raw, options.count)
    elif options.serve == "rawsqlite":
        trio.run(serve_raw_durable, options.count)
    elif options.serve in NODE_MODES:
        trio.run(serve_node, options.serve, options.count, options.keys)
    else:
        trio.run(serve_cl_once, options.serve)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(options.profile)
    print(f"cpu {time.process_time() - _STARTED[0]:.6f}", flush=True)


if __name__ == "__main__":
    options = parse()
    CL[0] = options.cl
    if options.serve:
        serve(options)
    else:
        PROFILE = options.profile
        sys.exit(trio.run(main, options))
