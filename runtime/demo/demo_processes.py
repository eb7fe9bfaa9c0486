"""``fleetwire demo --processes``: the same fleet as real OS processes on 127.0.0.1, no simulation.

Theory of operation
-------------------
:func:`run_processes` lays out a small fleet in a scratch folder — the fleet root key, each
node's key and credential (``keyfiles``), and one configuration file per node — and starts one
``fleetwire node`` process per node: region coordinators and cell coordinators listen on free
loopback ports (TCPCLv4), cell coordinators dial their region, members dial their cell
coordinator; every node keeps its bundles in its own SQLite store. Each configuration has a
``[demo]`` table, so the node plays its part (:mod:`.demo_process`): its lease role and, for a
member, the traffic script and telemetry digests of :mod:`.demo_behaviour`, on the real clock
with every duration divided by ``scale`` (3600 by default: a virtual hour takes a second).

Once every process said it is running, the parent sends each the same start time on standard
input; each runs ``days`` of traffic and a day to drain, writes its tally and exits. The parent
merges the tallies into one :class:`~.demo_results.Results` — the lease trace of every node
into the one invariant checker, per-hour samples summed across nodes — and the report is
written as for the loopback engine. A process that does not finish in time is killed and the
run fails with its last words.

What differs from the loopback engine, by design: links are always up (no contact plan, no
light time) and there is one region, so the partition, isolation and release scenarios are not
offered here (the skew scenario's pinned nodes get ``[node] protocol_version`` in their
configuration files, as an operator pins a node); bytes, waits and latencies are real ones
scaled back to virtual time; wall time depends on the machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.coordination import invariants
from fleetwire.protocol.messages.header import PROTOCOL_VERSION
from fleetwire.protocol.trust import Role

from ..node import keyfiles
from .demo import REGION, Scenario, _results, authority_events
from .demo_behaviour import DAY, HOUR, Tally
from .demo_results import Event, Interval, Results

#: A virtual hour is a real second: a virtual day of traffic takes 24 s.
DEFAULT_SCALE = 3600
#: How long a process may take to say it is running.
STARTUP_S = 60.0
#: Scenarios this engine plays (links are always up: no partition).
PLAYED = ("contention", "fault", "skew")


class ProcessesFailed(Exception):
    """A node process failed or did not finish; the message says which and how."""


def small(scenario: Scenario) -> Scenario:
    """The fleet shape ``--processes`` runs: what it was asked, minus what it cannot play."""
    return attrs.evolve(scenario, scenarios=tuple(s for s in scenario.scenarios if s in PLAYED))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _layout(scenario: Scenario, scale: int, folder: Path) -> list[tuple[int, Path, Path]]:
    """Keys and one configuration per node; (node, config, tally) for each."""
    keys = folder / "keys"
    keys.mkdir()
    root = keyfiles.make_root(keys)
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    members = scenario.members()
    regions = [REGION + r for r in range(scenario.regions)]
    cells = [scenario.cell_coordinator(c) for c in range(scenario.all_cells)]
    ports = {node: free_port() for node in [*regions, *cells]}
    laid = []
    for node in [*regions, *cells, *members]:
        cell = scenario.cell_of_coordinator(node)
        if node in regions:
            role, roles, parent = "region", [Role.NODE, Role.REGION_COORDINATOR], None
            cred_cell, cred_region = None, node - REGION
        elif cell is not None:
            role, roles = "cell", [Role.NODE, Role.CELL_COORDINATOR]
            parent, cred_cell, cred_region = scenario.region_of(cell), cell, None
        else:
            role, roles = "member", [Role.NODE]
            parent, cred_cell, cred_region = scenario.cell_coordinator(members[node]), None, None
        keyfiles.make_node(
            keys, root, node=node, roles=roles, not_before=now - DAY, not_after=now + 30 * DAY,
            cell=cred_cell, region=cred_region,
        )  # fmt: skip
        tally = folder / f"tally-{node}.json"
        lines = [
            "[node]",
            f"number = {node}",
            'keys = "keys"',
            f'store = "node-{node}.sqlite3"',
        ]
        if scenario.version_of(node) != PROTOCOL_VERSION:  # the skew scenario pins it
            lines.append(f"protocol_version = {scenario.version_of(node)}")
        if node in ports:
            lines += ["[[listen]]", 'host = "127.0.0.1"', f"port = {ports[node]}"]
        if parent is not None:
            lines += ["[[peer]]", f"node = {parent}", 'host = "127.0.0.1"', f"port = {ports[parent]}"]
            lines += ["[routes]", f"parent = {parent}"]
        lines += ["[reconnect]", "initial_s = 0.1", "maximum_s = 0.5"]
        lines += [
            "[demo]",
            f'role = "{role}"',
            f"members = {scenario.nodes}",
            f"regions = {scenario.regions}",
            f"cells = {scenario.cells}",
            f"days = {scenario.days!r}",
            f"seed = {scenario.seed}",
            f"scenarios = {json.dumps(list(scenario.scenarios))}",
            f"scale = {scale}",
            f"tally = {json.dumps(str(tally))}",
        ]
        config = folder / f"node-{node}.toml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        laid.append((node, config, tally))
    return laid


def run_processes(
    scenario: Scenario, scale: int = DEFAULT_SCALE, scratch: Path | None = None
) -> Results:
    """Run ``scenario`` as one OS process per node (module docstring)."""
    scenario = small(scenario)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleetwire-processes-") as tmp:
        folder = scratch or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        laid = _layout(scenario, scale, folder)
        processes: list[tuple[int, subprocess.Popen[bytes]]] = []
        try:
            for node, config, _ in laid:
                process = subprocess.Popen(
                    [sys.executable, "-m", "fleetwire.runtime.cli.cli", "node", str(config)],
                    cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
                processes.append((node, process))
            for node, process in processes:
                _wait_running(node, process)
            # Every node is up: time 0 is a moment from now, the same for all.
            start = round((time.time() + 0.5 - DTN_EPOCH_UNIX) * 1000)
            for _, process in processes:
                assert process.stdin is not None
                process.stdin.write(f"start {start}\n".encode())
                process.stdin.close()
            run_s = (scenario.days + 1) * DAY / scale / 1000
            deadline = time.monotonic() + run_s + STARTUP_S
            for node, process in processes:
                try:
                    code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise ProcessesFailed(f"node {node} did not finish its run in time") from None
                if code != 0:
                    raise ProcessesFailed(f"node {node} exited {code}: {_last_words(process)}")
        finally:
            for _, process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                if process.stderr is not None:
                    process.stderr.close()
        tallies = [json.loads(tally.read_text(encoding="utf-8")) for _, _, tally in laid]
    results = merge(scenario, tallies, scale)
    return attrs.evolve(results, wall_seconds=time.perf_counter() - started)


def _wait_running(node: int, process: subprocess.Popen[bytes]) -> None:
    assert process.stderr is not None
    # readline blocks until the line or the end; a node that cannot start says why and exits.
    line = process.stderr.readline()
    if b"running" not in line:
        process.wait(timeout=STARTUP_S)
        raise ProcessesFailed(
            f"node {node} did not start: {(line + _last_words(process).encode()).decode()}"
        )


def _last_words(process: subprocess.Popen[bytes]) -> str:
    assert process.stderr is not None
    try:
        return process.stderr.read()[-600:].decode("utf-8", "replace").strip()
    except ValueError:  # closed
        return ""


def _record(row: Sequence[Any]) -> invariants.Record:
    kind, *fields = row
    if kind == "Granted":
        return invariants.Granted(*fields)
    if kind == "Used":
        return invariants.Used(*fields)
    raise ValueError(f"unknown lease trace record {kind!r}")


def merge(scenario: Scenario, tallies: Sequence[dict[str, Any]], scale: int) -> Results:
    """One run's :class:`Results` from every node's tally (what :mod:`.demo_process` wrote)."""
    seen = Tally()
    for t in tallies:
        seen.sent.update(Counter(t["sent"]))
        seen.delivered.update(Counter(t["delivered"]))
        for family, values in t["latency_ms"].items():
            seen.latency_ms[family].extend(values)
        seen.grants += t["grants"]
        seen.lease_trace += [_record(row) for row in t["lease_trace"]]
        seen.waits_ms += t["waits_ms"]
        seen.given_up += t["given_up"]
        seen.escalations += t["escalations"]
        seen.cluster_escalations += t["cluster_escalations"]
        seen.quarantined.update(Counter(t["quarantined"]))
        seen.quarantined_faulty += t["quarantined_faulty"]
        seen.quarantined_healthy += t["quarantined_healthy"]
        seen.events += [Event(*e) for e in t["events"]]
        seen.digests.update(Counter(t["digests"]))
        seen.digest_bytes += t["digest_bytes"]
        seen.digests_anomalous += t["digests_anomalous"]
        seen.digests_refused += t["digests_refused"]
        seen.digests_unwritable += t["digests_unwritable"]
        seen.samples += t["samples"]
        seen.detail_bytes += t["detail_bytes"]
        seen.versions.update(Counter(t["versions"]))
    hours = min(len(t["intervals"]) for t in tallies)
    had = [False] * scenario.all_cells
    ever: set[int] = set()
    for h in range(hours):
        rows = [t["intervals"][h] for t in tallies]
        authority = [bool(r["authority"]) for r in rows if r["authority"] is not None]
        authority_events(seen, (h + 1) * HOUR, had, authority, ever)
        had = authority
        seen.intervals.append(
            Interval(
                start_ms=h * HOUR,
                end_ms=(h + 1) * HOUR,
                bytes_sent=sum(r["bytes"] for r in rows),
                busiest_node_bytes=max(r["bytes"] for r in rows),
                bundles_in_flight=sum(r["in_flight"] for r in rows),
                leases_held=sum(r["leases_held"] for r in rows),
                dock_use_ms=sum(r["dock_use_ms"] for r in rows),
                cell0_dock_use_ms=sum(r["cell0_dock_use_ms"] for r in rows),
                exceptions_open=sum(r["exceptions_open"] for r in rows),
                cells_with_authority=sum(authority),
                waiting_at_cut_cell=0,
                quarantined=sum(r["quarantined"] for r in rows),
            )
        )
    results = _results(scenario, seen)
    setup = attrs.evolve(
        results.setup,
        command=command(scenario, scale),
        engine=f"processes: one fleetwire node per OS process, TCPCLv4 on 127.0.0.1, SQLite "
        f"stores, real clock with a virtual hour per {3600 / scale:g} s",
    )
    return attrs.evolve(results, setup=setup)


def command(scenario: Scenario, scale: int) -> str:
    """The command line that runs this fleet as processes again."""
    scenarios = ",".join(scenario.scenarios) or "none"
    text = (
        f"fleetwire demo --processes {scenario.nodes} --cells {scenario.cells} "
        f"--days {scenario.days:g} --seed {scenario.seed} --scenario {scenarios}"
    )
    return text if scale == DEFAULT_SCALE else f"{text} --time-scale {scale}"
