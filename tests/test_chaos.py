"""Chaos: real node processes on 127.0.0.1, steady traffic, random SIGKILL and SIGSTOP.

Six processes over TCPCLv4, each with its own SQLite store: two senders, two relays, two
receiving endpoints (sender → relay 1 → relay 2 → endpoint: three hops)::

    S1 (11) ─┐                      ┌─ E1 (4)   fleetwire node: prints each message it gets
             ├─ R1 (2) ── R2 (3) ──┤
    S2 (12) ─┘                      └─ E2 (5)

The senders run a node and send a signed lease claim a few times a second, alternating the
endpoints, and print each content id once ``send`` returned ("held durably": accepted). For a
while every process is at risk: SIGKILL (down for a few seconds, then restarted on the same
store) or SIGSTOP (frozen, then continued), at most two at once. Then the chaos stops, the
senders stop sending, and the fleet drains. The account:

* every accepted message reached its endpoint's application at least once (0 lost);
* no bundle was taken twice by one node: no hop forwarded a bundle twice in effect. A node
  killed after its neighbour took custody and before it recorded that sends the bundle again
  after its restart (custody transfer is at least once); the neighbour answers "duplicate".
  Those retransmissions are counted;
* 0 stuck: after the drain no store holds a bundle other than delivered tombstones;
* application-level redeliveries (a message printed again after an endpoint was killed before
  acknowledging it) are allowed and counted, as are messages delivered but never reported
  accepted (a sender killed between its store's commit and its print).

Run with ``pytest --soak -s tests/test_chaos.py``; it prints its figures.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import trio
from fleetwire.runtime.cli.cli import main

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL and SIGSTOP"),
]

S1, S2, R1, R2, E1, E2 = 11, 12, 2, 3, 4, 5
ENDPOINTS = (E1, E2)
RATE_PER_SENDER = 3.0  # messages a second
CHAOS_S = 75.0
DRAIN_S = 180.0

SENDER = r"""
import sys, time, trio
from pathlib import Path
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.runtime.node.config import load_config
from fleetwire.runtime.node.tcp_node import open_configured_node

async def main(path, destinations, rate, until):
    config = load_config(Path(path))
    async with open_configured_node(config) as node:
        print(f"node {config.node} running", file=sys.stderr, flush=True)
        n = 0
        while time.time() < until:
            header = Header(issuer=config.node, issued_at=node.now(),
                            sequence=node.next_message_sequence())
            claim = LeaseClaim(header=header, resource=f"dock/{n % 8}", term_ms=60_000)
            signed = await node.send(claim, destinations[n % len(destinations)])
            print(signed.content_id, flush=True)  # durable: accepted
            n += 1
            await trio.sleep(1 / rate)
        await trio.sleep_forever()  # keep forwarding what is held

trio.run(main, sys.argv[1], [int(d) for d in sys.argv[2].split(",")], float(sys.argv[3]),
         float(sys.argv[4]))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_configs(folder: Path) -> None:
    ports = {n: free_port() for n in (R1, R2, E1, E2)}
    reconnect = "[reconnect]\ninitial_s = 0.2\nmaximum_s = 1.0\n"

    def node(n: int, listen: bool, peers: list[int], static: dict[int, int]) -> str:
        text = f'[node]\nnumber = {n}\nkeys = "keys"\nstore = "{n}.sqlite3"\n'
        if listen:
            text += f"[[listen]]\nport = {ports[n]}\n"
        for peer in peers:
            text += f"[[peer]]\nnode = {peer}\nport = {ports[peer]}\n"
        if static:
            routes = ", ".join(f"{d} = {h}" for d, h in static.items())
            text += f"[routes]\nstatic = {{ {routes} }}\n"
        return text + reconnect

    configs = {
        S1: node(S1, False, [R1], {E1: R1, E2: R1}),
        S2: node(S2, False, [R1], {E1: R1, E2: R1}),
        R1: node(R1, True, [R2], {E1: R2, E2: R2}),
        R2: node(R2, True, [E1, E2], {}),
        E1: node(E1, True, [], {}),
        E2: node(E2, True, [], {}),
    }
    for n, text in configs.items():
        (folder / f"{n}.toml").write_text(text)


class Proc:
    """One node process, restartable on the same store; its output files are appended to."""

    def __init__(self, folder: Path, n: int) -> None:
        self.folder, self.n = folder, n
        self.until = math.inf  # a sender sends until then (wall clock)
        self.process: trio.Process | None = None
        self.stopped = False
        self.starts = 0
        self.kills = self.stops = 0

    def command(self) -> list[str]:
        config = f"{self.n}.toml"
        if self.n in (S1, S2):
            destinations = ",".join(map(str, ENDPOINTS))
            return [sys.executable, "-c", SENDER, config, destinations, str(RATE_PER_SENDER),
                    str(self.until)]  # fmt: skip
        return [sys.executable, "-m", "fleetwire.runtime.cli.cli", "node", config, "--verbose"]

    @property
    def log(self) -> Path:
        return self.folder / f"{self.n}.log"

    async def start(self) -> None:
        with (
            open(self.folder / f"{self.n}.out", "ab") as out,
            open(self.log, "ab") as err,
        ):
            self.process = await trio.lowlevel.open_process(
                self.command(), cwd=self.folder, stdout=out, stderr=err
            )
        self.starts += 1
        # Running (store open, listening) once its "running" line is in the log.
        while self.log.read_text(errors="replace").count("running") < self.starts:
            if self.process.poll() is not None:
                raise AssertionError(f"node {self.n} ended: {self.log.read_text()[-2000:]}")
            await trio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self.kills += 1
        self.stopped = False

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.stopped, self.stops = True, self.stops + 1

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.stopped = False

    async def interrupt(self) -> None:
        """Stop it as an operator would (SIGINT): acknowledged deliveries are written."""
        assert self.process is not None
        if self.stopped:
            self.resume()
        self.process.send_signal(signal.SIGINT)
        with trio.move_on_after(20):
            await self.process.wait()
        if self.process.returncode is None:
            await self.kill()


async def chaos(procs: dict[int, Proc], rng: random.Random, seconds: float) -> None:
    """Random SIGKILL (down 1-8 s) and SIGSTOP (frozen 1-8 s), at most two victims at once."""
    busy: set[int] = set()

    async def strike(victim: Proc) -> None:
        busy.add(victim.n)
        try:
            if rng.random() < 0.6:
                await victim.kill()
                await trio.sleep(rng.uniform(1, 8))
                await victim.start()
            else:
                victim.stop()
                await trio.sleep(rng.uniform(1, 8))
                victim.resume()
        finally:
            busy.discard(victim.n)

    async with trio.open_nursery() as nursery:
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            await trio.sleep(rng.uniform(1, 4))
            idle = [n for n in procs if n not in busy]
            if len(busy) < 2 and idle:
                nursery.start_soon(strike, procs[rng.choice(idle)])


def lines(path: Path) -> list[str]:
    """Complete lines only: a line cut short by a kill was never fully written."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return text.split("\n")[:-1]


def accepted_ids(folder: Path) -> set[str]:
    return {line for n in (S1, S2) for line in lines(folder / f"{n}.out") if line}


def deliveries(folder: Path) -> list[str]:
    out: list[str] = []
    for n in ENDPOINTS:
        for line in lines(folder / f"{n}.out"):
            if line.startswith("{"):
                out.append(json.loads(line)["content_id"])
    return out


def held_in(store: Path) -> int:
    """Bundles a store holds that are not tombstones (delivered, forwarded): read from SQLite."""
    with sqlite3.connect(store) as conn:
        query = "SELECT count(*) FROM bundles WHERE next_hop IS NULL OR next_hop = 'local'"
        return int(conn.execute(query).fetchone()[0])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chaos_every_accepted_message_delivered_nothing_stuck(tmp_path: Path, seed: int) -> None:
    keys = tmp_path / "keys"
    main(["keys", "root", str(keys)])
    for n in (S1, S2, R1, R2, E1, E2):
        main(["keys", "node", str(keys), "--node", str(n)])
    write_configs(tmp_path)
    rng = random.Random(seed)
    procs = {n: Proc(tmp_path, n) for n in (E1, E2, R2, R1, S1, S2)}
    figures: dict[str, object] = {}

    async def run() -> None:
        with trio.fail_after(CHAOS_S + DRAIN_S + 120):
            for proc in procs.values():
                # The senders start last, and send for as long as the chaos lasts.
                proc.until = time.time() + CHAOS_S
                await proc.start()
            until = procs[S2].until
            try:
                await chaos(procs, rng, CHAOS_S)
                # The drain: everyone up and running, the senders done sending.
                for proc in procs.values():
                    if proc.stopped:
                        proc.resume()
                while time.time() < until:
                    await trio.sleep(0.5)
                accepted = accepted_ids(tmp_path)
                drained_at = trio.current_time() + DRAIN_S
                while not accepted <= set(deliveries(tmp_path)):
                    if trio.current_time() > drained_at:
                        break
                    await trio.sleep(0.5)
                figures["drain_s"] = round(trio.current_time() - (drained_at - DRAIN_S), 1)
                await trio.sleep(5)  # the last deletes and tombstones after the last delivery
            finally:
                figures["tracebacks"] = sum(
                    p.log.read_text(errors="replace").count("Traceback") for p in procs.values()
                )
                for proc in procs.values():
                    await proc.interrupt()

    trio.run(run)

    accepted = accepted_ids(tmp_path)
    delivered = deliveries(tmp_path)
    unique = set(delivered)
    taken: Counter[tuple[int, str]] = Counter()
    forwarded: Counter[tuple[int, str, str]] = Counter()
    answered_duplicate = 0
    for n in procs:
        for line in lines(procs[n].log):
            if m := re.search(r"event=accepted from=\S+ bundle=(\w+)", line):
                taken[n, m.group(1)] += 1
            elif m := re.search(r"event=forwarded to=(\S+) bundle=(\w+)", line):
                forwarded[n, m.group(1), m.group(2)] += 1
            answered_duplicate += "event=duplicate" in line
    stuck = {n: held_in(tmp_path / f"{n}.sqlite3") for n in procs}
    disk = {
        n: sum(
            os.path.getsize(p)
            for p in (tmp_path / f"{n}.sqlite3", tmp_path / f"{n}.sqlite3-wal")
            if p.exists()
        )
        for n in procs
    }
    figures |= {
        "seed": seed,
        "accepted": len(accepted),
        "delivered": len(accepted & unique),
        "lost": len(accepted - unique),
        "delivered_not_reported_accepted": len(unique - accepted),
        "app_redeliveries": len(delivered) - len(unique),
        "taken_twice_by_a_node": sum(1 for c in taken.values() if c > 1),
        "relay_retransmissions": sum(c - 1 for c in forwarded.values() if c > 1),
        "resends_answered_duplicate": answered_duplicate,
        "stuck": sum(stuck.values()),
        "kills": sum(p.kills for p in procs.values()),
        "stops": sum(p.stops for p in procs.values()),
        "largest_store_at_rest_bytes": max(disk.values()),
    }
    print("\nchaos figures:", json.dumps(figures))
    assert figures["lost"] == 0, (figures, sorted(accepted - unique)[:5])
    assert figures["stuck"] == 0, (figures, stuck)
    assert figures["taken_twice_by_a_node"] == 0, figures
    assert figures["accepted"] > 0 and figures["kills"] > 0
