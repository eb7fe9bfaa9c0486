"""Live cases: reference nodes on loopback TCPCLv4 and the node under test, exchanging bundles.

Theory of operation
-------------------
The suite builds a small fleet in a scratch folder: a root key and credentials (``fleetwire
keys``), one **reference node** per protocol version it can pin (in process: Trio nodes from
:func:`~fleetwire.runtime.node.tcp_node.open_configured_node`, listening on 127.0.0.1) and a second
reference claimant, and starts the **node under test** as a real process from a configuration
file in fleetwire's format (runtime/node/config.py): it dials every reference node over TCPCLv4.

The node under test is a program that (spec/README.md, "Live cases") prints each verified
message delivered to it as a JSON line ``{"content_id": ..., "message": {...}}`` and sends each
line ``{"to": N, "message": {...}}`` of its standard input, answering ``{"sent": <content
id>}``; ``fleetwire node <config> --stdin`` is that program for fleetwire.

Cases:

- **7.6** at every (reference version, node under test version) pair: a reference node sends a signed
  capability advertisement that the node under test must deliver with the same content id, and
  the node under test sends a signed exception report that the reference node must verify
  against the fleet's trust store and deliver.
- **6.4.11**: the first reference node is the lease authority of ``dock/7`` (cell coordinator
  of cell 1); the node under test and the second claimant both claim it. The node under test
  must deliver its grant, and every grant the authority sent goes to the invariant checker
  (each holder using its grant until ``expires_at - max_drift``), which must find no two
  holders at one instant.

Reference nodes are pinned at versions 1, 2 and 3 through ``[node] protocol_version``; the node
under test runs once per version it speaks, pinned the same way, so every (writer, reader) pair
of the matrix's live family is one exchange. Every exchange and lease waits at most ``timeout``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from fleetwire.protocol.coordination import invariants as inv
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig, LeaseAuthority, Send
from fleetwire.protocol.messages import (
    CapabilityAdvertisement,
    Family,
    Header,
    LeaseClaim,
    LeaseGrant,
)
from fleetwire.protocol.messages.v1 import Capability
from fleetwire.runtime.cli.cli import main as cli
from fleetwire.runtime.node.config import load_config
from fleetwire.runtime.node.node import Node
from fleetwire.runtime.node.tcp_node import open_configured_node

from .cases import Case, CaseResult, Check, Level, Status

__all__ = ["LIVE_VERSIONS", "NodeUnderTest", "live_cases", "run_live"]

HOST = "127.0.0.1"
#: Versions a reference node is pinned at (``[node] protocol_version``).
LIVE_VERSIONS: tuple[int, ...] = (1, 2, 3)
REFERENCE = {1: 11, 2: 12, 3: 13}  # version → reference node number
CLAIMANT, UNDER_TEST = 60, 50
DRIFT_MS, TERM_MS = 200, 1_500


@attrs.frozen(slots=True)
class NodeUnderTest:
    """How to start the node under test: ``{config}`` in ``command`` is its config file, which
    pins it at each of ``versions`` in turn (one process per version; the suite passes the
    versions the implementation's ``hello`` names)."""

    command: tuple[str, ...] = (sys.executable, "-m", "fleetwire.runtime.cli.cli", "node",
                                "{config}", "--stdin")  # fmt: skip
    versions: tuple[int, ...] = (1, 2, 3)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _keys(folder: Path) -> None:
    quiet = open(os.devnull, "w")  # noqa: SIM115 (closed below; cli prints what it wrote)
    saved, sys.stdout = sys.stdout, quiet
    try:
        cli(["keys", "root", str(folder)])
        for node in (*REFERENCE.values(), CLAIMANT, UNDER_TEST):
            roles = ["--role", "node"]
            if node == REFERENCE[1]:
                roles += ["--role", "cell-coordinator", "--cell", "1"]
            cli(["keys", "node", str(folder), "--node", str(node), *roles])
    finally:
        sys.stdout = saved
        quiet.close()


def _config(folder: Path, node: int, port: int, peers: dict[int, int], version: int | None) -> Path:
    text = f'[node]\nnumber = {node}\nkeys = "keys"\n'
    if version is not None:
        text += f"protocol_version = {version}\n"
    text += f'[[listen]]\nhost = "{HOST}"\nport = {port}\n'
    for peer, peer_port in peers.items():
        text += f'[[peer]]\nnode = {peer}\nhost = "{HOST}"\nport = {peer_port}\n'
    text += "[reconnect]\ninitial_s = 0.1\nmaximum_s = 0.5\n"
    path = folder / f"node-{node}.toml"
    path.write_text(text, encoding="utf-8")
    return path


class _Authority:
    """The lease authority of ``dock/7`` on a reference node, recording every grant it sends."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.machine = LeaseAuthority(
            node.node, AuthorityConfig(max_drift_ms=DRIFT_MS, max_term_ms=TERM_MS),
            next_sequence=node.next_message_sequence,
        )  # fmt: skip
        self.trace: list[inv.Record] = []
        self.grants: list[LeaseGrant] = []

    async def _act(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if isinstance(action.message, LeaseGrant):
                    g, now = action.message, self.node.now()
                    self.grants.append(g)
                    self.trace.append(inv.Granted(g.resource, g.holder, g.fencing_token,
                                                  g.expires_at, self.node.node, now, now))  # fmt: skip
                    if now < g.expires_at - DRIFT_MS:
                        self.trace.append(inv.Used(g.resource, g.holder, g.fencing_token, now,
                                                   g.expires_at - DRIFT_MS, now))  # fmt: skip
                await self.node.send(action.message, action.to)

    async def run(self) -> None:
        inbox = self.node.subscribe(Family.LEASE)
        async with trio.open_nursery() as nursery:

            async def ticks() -> None:
                while True:
                    await trio.sleep(0.05)
                    await self._act(self.machine.tick(self.node.now()))

            nursery.start_soon(ticks)
            async for signed in inbox:
                await self._act(self.machine.receive(signed.message, signed.content_id,
                                                     self.node.now()))  # fmt: skip
                inbox.acknowledge()


@asynccontextmanager
async def _process(argv: list[str]) -> AsyncIterator[trio.Process]:
    process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield process
    finally:
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


class _Lines:
    """JSON lines from the node under test's standard output."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.pending = b""
        self.seen: list[dict[str, Any]] = []

    async def until(self, wanted: Any, *, take: bool = False) -> dict[str, Any]:
        """The first line ``wanted`` accepts, reading more as needed; ``take`` removes it, so
        that the next answer (``{"sent": ...}``) is not this one again."""
        while True:
            for index, line in enumerate(self.seen):
                if wanted(line):
                    return self.seen.pop(index) if take else line
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("the node under test closed its output")
            self.pending += chunk
            *lines, self.pending = self.pending.split(b"\n")
            for raw in lines:
                try:
                    item = json.loads(raw)
                except ValueError:
                    continue  # not ours to judge: only JSON lines carry answers
                if isinstance(item, dict):
                    self.seen.append(item)


async def run_live(folder: Path, nut: NodeUnderTest = NodeUnderTest(),
                   timeout: float = 30.0) -> list[CaseResult]:  # fmt: skip
    """Run the live cases: per version of the node under test, one process of it."""
    (folder / "keys").mkdir(parents=True, exist_ok=True)
    _keys(folder / "keys")
    ports = {node: _free_port() for node in (*REFERENCE.values(), CLAIMANT, UNDER_TEST)}
    pinned = {v: REFERENCE[v] for v in LIVE_VERSIONS}
    cases = {case.id: case for case in live_cases()}
    results: list[CaseResult] = []
    async with _nodes(folder, pinned, ports) as (references, claimant):
        authority = _Authority(references[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(authority.run)
            for own in nut.versions:
                config = _config(folder, UNDER_TEST, ports[UNDER_TEST],
                                 {n: ports[n] for n in pinned.values()}, own)  # fmt: skip
                argv = [part.replace("{config}", str(config)) for part in nut.command]
                before = {v: node.links.get(UNDER_TEST) for v, node in references.items()}
                async with _process(argv) as process:
                    assert process.stdout is not None and process.stdin is not None
                    lines = _Lines(process.stdout)
                    for version, node in references.items():
                        to_nut, from_nut = await _exchange(version, node, own, before[version],
                                                           process.stdin, lines, timeout)  # fmt: skip
                        if version == own:
                            results.append(_result(cases["7.6"], own, own, [to_nut, from_nut]))
                        else:
                            results.append(_result(cases["7.6"], version, own, [to_nut]))
                            results.append(_result(cases["7.6"], own, version, [from_nut]))
                    check = await _lease(authority, claimant, f"dock/{own}", process.stdin,
                                         lines, timeout)  # fmt: skip
                    results.append(_result(cases["6.4.11"], own, 1, [check]))
            nursery.cancel_scope.cancel()
    return results


def _result(case: Case, writer: int, reader: int, checks: list[Check]) -> CaseResult:
    worst = max((c.status for c in checks), key=lambda s: s.rank)
    return CaseResult(attrs.evolve(case, writer=writer, reader=reader), worst, tuple(checks))


@asynccontextmanager
async def _nodes(folder: Path, pinned: dict[int, int],
                 ports: dict[int, int]) -> AsyncIterator[tuple[dict[int, Node], Node]]:  # fmt: skip
    async with open_configured_node(load_config(
            _config(folder, CLAIMANT, ports[CLAIMANT], {pinned[1]: ports[pinned[1]]}, None))) as claimant:  # fmt: skip
        references: dict[int, Node] = {}
        async with _open_references(folder, pinned, ports, references):
            yield references, claimant


@asynccontextmanager
async def _open_references(folder: Path, pinned: dict[int, int], ports: dict[int, int],
                           into: dict[int, Node]) -> AsyncIterator[None]:  # fmt: skip
    if not pinned:
        yield
        return
    version, number = next(iter(pinned.items()))
    rest = dict(list(pinned.items())[1:])
    config = load_config(_config(folder, number, ports[number], {}, version))
    async with open_configured_node(config) as node:
        into[version] = node
        async with _open_references(folder, rest, ports, into):
            yield


def _send_line(to: int, message: dict[str, Any]) -> bytes:
    return (json.dumps({"to": to, "message": message}) + "\n").encode()


async def _exchange(version: int, node: Node, own: int, old_link: object,
                    stdin: trio.abc.SendStream, lines: _Lines,
                    timeout: float) -> tuple[Check, Check]:  # fmt: skip
    """A message each way between a reference node of ``version`` and the node under test
    speaking ``own``: (reference → node under test, node under test → reference)."""
    label = f"v{version} reference node {node.node} → node under test (v{own})"
    with trio.move_on_after(timeout) as scope:
        # Send only once the node under test is up and has dialled in: a node without durable
        # replay memory refuses messages issued before it started (protocol.md §10.2).
        # (A session of an earlier run of it does not count: it is going away.)
        while node.links.get(UNDER_TEST) in (None, old_link):
            await trio.sleep(0.02)
    if scope.cancelled_caught:
        failed = Check(label, {"live": "connect", "to": node.node}, "a TCPCLv4 session",
                       f"the node under test did not connect within {timeout:g} s", Status.FAIL)
        return failed, attrs.evolve(failed, label=f"node under test (v{own}) → v{version} "
                                                   f"reference node {node.node}")  # fmt: skip
    now = node.now()
    advert = CapabilityAdvertisement(
        Header(issuer=node.node, issued_at=now, sequence=node.next_message_sequence()),
        capabilities=(Capability("dock", 1, "slot", now, now + 86_400_000),),
        versions=(max(1, version - 2), version), lineage="R",
    )  # fmt: skip
    inbox = node.subscribe(Family.EXCEPTION)
    request = {"live": "reference sends", "from": node.node, "to": UNDER_TEST,
               "message": "capability-advertisement"}  # fmt: skip
    signed = await node.send(advert, UNDER_TEST)
    want = str(signed.content_id)
    with trio.move_on_after(timeout) as scope:
        await lines.until(lambda item: item.get("content_id") == want)
    to_nut = Check(label, request, f"the node under test delivers {want}",
                   "not delivered within the timeout" if scope.cancelled_caught else "delivered",
                   Status.FAIL if scope.cancelled_caught else Status.PASS)  # fmt: skip
    label = f"node under test (v{own}) → v{version} reference node {node.node}"
    report = {"type": "exception-report", "code": 4, "severity": 1, "scope": "node",
              "scope_id": UNDER_TEST, "detail": f"live case to v{version}"}  # fmt: skip
    request = {"live": "node under test sends", "to": node.node, "message": report}
    await stdin.send_all(_send_line(node.node, report))
    got = "no verified exception report from the node under test within the timeout"
    status = Status.FAIL
    with trio.move_on_after(timeout):
        sent = await lines.until(lambda item: "sent" in item or "error" in item, take=True)
        if "error" in sent:
            got = f"the node under test could not send: {sent['error']}"
        else:
            async for delivered in inbox:
                inbox.acknowledge()
                if str(delivered.content_id) == sent["sent"]:
                    got, status = "verified and delivered, same content id", Status.PASS
                    break
    inbox.close()
    return to_nut, Check(label, request, "the reference node verifies and delivers it", got, status)


async def _lease(authority: _Authority, claimant: Node, resource: str,
                 stdin: trio.abc.SendStream, lines: _Lines, timeout: float) -> Check:  # fmt: skip
    label = "node under test and a reference claimant claim one resource"
    request = {"live": "both claim", "resource": resource, "term_ms": TERM_MS,
               "authority": authority.node.node}  # fmt: skip
    expected = ("the node under test delivers its grant; both are granted in turn; the invariant "
                "checker finds no two holders at one instant")  # fmt: skip
    claim = {"type": "lease-claim", "resource": resource, "term_ms": TERM_MS}
    await stdin.send_all(_send_line(authority.node.node, claim))
    now = claimant.now()
    await claimant.send(LeaseClaim(Header(issuer=claimant.node, issued_at=now,
                                          sequence=claimant.next_message_sequence()),
                                   resource, TERM_MS), authority.node.node)  # fmt: skip
    got, status = "", Status.FAIL
    with trio.move_on_after(timeout) as scope:
        await lines.until(lambda item: item.get("message", {}).get("type") == "lease-grant"
                          and item["message"].get("holder") == UNDER_TEST
                          and item["message"].get("resource") == resource)  # fmt: skip
        while {g.holder for g in authority.grants if g.resource == resource} < {UNDER_TEST, CLAIMANT}:
            await trio.sleep(0.05)
    if scope.cancelled_caught:
        holders = sorted({g.holder for g in authority.grants if g.resource == resource})
        got = f"within {timeout:g} s: grants to {holders}; the node under test's grant delivered: " \
              f"{any(i.get('message', {}).get('type') == 'lease-grant' for i in lines.seen)}"  # fmt: skip
    else:
        report = inv.check(authority.trace)
        if report.ok:
            got, status = f"granted in turn ({report.grants} grants, no overlap)", Status.PASS
        else:
            got = f"the invariant checker: {report.violation}"
    return Check(label, request, expected, got, status)


def live_cases() -> list[Case]:
    """The live cases' descriptions (their checks come from :func:`run_live`)."""
    def none(_context: Any) -> list[Check]:
        return []

    return [
        Case("6.4.11", "Leases across the wire", Level.MUST,
             "The authority MUST NOT grant the resource to another holder before `expires_at + "
             "max_drift` by its own clock, unless the holder released it.",
             "the node under test claims over TCPCLv4 and delivers its grant; no two holders "
             "at one instant (invariant checker)", "live", none, ("live",)),
        Case("7.6", "Signed messages travel both ways", Level.MUST,
             "Every message travels as the payload of a COSE_Sign1 structure",
             "at every version pair, a reference node's message is delivered by the node under "
             "test and the node under test's by the reference node, verified", "live", none,
             ("live",)),
    ]  # fmt: skip


def run_live_sync(folder: Path, nut: NodeUnderTest = NodeUnderTest(),
                  timeout: float = 30.0) -> list[CaseResult]:  # fmt: skip
    """:func:`run_live` from synchronous code, bounded by ``timeout`` per exchange."""
    async def main() -> list[CaseResult]:
        # Each exchange and each lease is bounded by ``timeout``; this bounds the whole run.
        runs = len(nut.versions) * (2 * len(LIVE_VERSIONS) + 1)
        with trio.fail_after(60.0 + runs * timeout):
            return await run_live(folder, nut, timeout)

    return trio.run(main)

