"""``fleetwire demo --engine sim``: the demo's fleet and scenarios on the discrete-event simulator.

Theory of operation
-------------------
The loopback engine (:mod:`.demo`) runs every node as a Trio task on a mock clock, and
Trio's scheduler bounds it to about a hundred members in a minute of a virtual week. This
engine runs the same fleet — the loopback engine's nodes, keys, contact plan, lease-role
timing and traffic script (:mod:`.demo_sim_fleet`, :mod:`.demo_sim_region`) — on the sans-IO
bundle agents of :mod:`.sim`: the same signed messages, BPv7 bundles, stores, routing and
lease roles, in virtual time, with one heap of events and no scheduler.

**Regions run apart.** In the scenarios this engine plays (:data:`PLAYS`) nothing crosses
from one region to another: a member talks to its cell, a cell coordinator to its region. So
each region is a simulation of its own (its own simulator, seeded for it), and the regions run
side by side in ``workers`` OS processes (``multiprocessing``, spawn: nothing inherited but the
arguments) — a 2-core machine runs three regions in about half the time of one after the
other. A run is a function of its seed alone: the same regions, whatever the number of
workers (``workers=1`` runs them one after the other in this process).

**Merging.** Each region sends its hourly :class:`~.demo_results.Interval` s as it samples
them (the live view shows an hour once every region has it, summed: bytes, messages under
way, leases held, exceptions open, cells granting; the busiest node is the busiest of all)
and, at its end, its :class:`~.demo_sim_region.RegionOutcome`: counts by family, latencies,
lease waits, the lease trace, events. :func:`merge` adds them up in region order and the
invariant checker reads the whole fleet's trace; the outcome is the
:class:`~.demo_results.Results` the report reads, as the loopback engine's is.

Scenarios this engine does not play — a correlated fault, isolation of a region (which
crosses regions), version skew, a staged release — need machinery it has no sans-IO form of
yet; ``fleetwire demo`` runs them on the loopback engine (:func:`refused`).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .demo import Scenario
from .demo_behaviour import DAY, LIFETIME, Tally
from .demo_digests import stream_bytes_per_s
from .demo_results import Interval, Results, Setup
from .demo_sim_region import RegionOutcome, play

__all__ = ["ENGINE", "PLAYS", "SimFailed", "merge", "refused", "run"]

#: The scenarios this engine plays (module docstring).
PLAYS = frozenset({"contention", "partition"})
ENGINE = "sim: discrete-event simulator, sans-IO bundle agents, real signatures"
#: A worker that says nothing for this long (no interval, no outcome) is taken for dead.
STALL_S = 600.0

OnInterval = Callable[[Interval, Scenario], None]


class SimFailed(RuntimeError):
    """A region's run failed (in a worker or here): the message says which and why in one
    line; ``detail`` holds the worker's traceback, if any."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def refused(scenarios: Sequence[str]) -> list[str]:
    """The scenarios among ``scenarios`` this engine cannot play."""
    return [name for name in scenarios if name not in PLAYS]


def command(scenario: Scenario, light_scale: float = 1.0) -> str:
    """The command line that reproduces this run on this engine."""
    light = f" --light-scale {light_scale:g}" if light_scale != 1.0 else ""
    return f"{scenario.command()}{light} --engine sim"


def default_workers(scenario: Scenario) -> int:
    """One process per region, at most twice the cores (more would only queue)."""
    return max(1, min(scenario.regions, 2 * (os.cpu_count() or 1)))


class _Hours:
    """Sums the regions' intervals hour by hour; hands on an hour once every region has it."""

    def __init__(self, scenario: Scenario, on_interval: OnInterval | None) -> None:
        self.scenario = scenario
        self.on_interval = on_interval
        self.by_hour: dict[int, list[Interval]] = defaultdict(list)

    def __call__(self, interval: Interval, _scenario: object = None) -> None:
        parts = self.by_hour[interval.end_ms]
        parts.append(interval)
        if len(parts) == self.scenario.regions and self.on_interval is not None:
            self.on_interval(_sum(parts), self.scenario)
            del self.by_hour[interval.end_ms]


def _sum(parts: Sequence[Interval]) -> Interval:
    first = parts[0]
    return Interval(
        start_ms=first.start_ms,
        end_ms=first.end_ms,
        bytes_sent=sum(p.bytes_sent for p in parts),
        busiest_node_bytes=max(p.busiest_node_bytes for p in parts),
        bundles_in_flight=sum(p.bundles_in_flight for p in parts),
        leases_held=sum(p.leases_held for p in parts),
        dock_use_ms=sum(p.dock_use_ms for p in parts),
        exceptions_open=sum(p.exceptions_open for p in parts),
        cells_with_authority=sum(p.cells_with_authority for p in parts),
        waiting_at_cut_cell=sum(p.waiting_at_cut_cell for p in parts),
        quarantined=sum(p.quarantined for p in parts),
        cell0_dock_use_ms=sum(p.cell0_dock_use_ms for p in parts),
    )


def run(
    scenario: Scenario,
    on_interval: OnInterval | None = None,
    *,
    workers: int | None = None,
    light_scale: float = 1.0,
) -> Results:
    """Run ``scenario`` on the simulator (module docstring); raises :class:`SimFailed`."""
    unplayable = refused(scenario.scenarios)
    if unplayable:
        raise SimFailed(f"the simulator engine does not play {', '.join(unplayable)}")
    started = time.perf_counter()
    hours = _Hours(scenario, on_interval)
    workers = default_workers(scenario) if workers is None else max(1, workers)
    if workers == 1 or scenario.regions == 1:
        outcomes = [play(scenario, r, hours, light_scale) for r in range(scenario.regions)]
    else:
        outcomes = _in_processes(scenario, min(workers, scenario.regions), hours, light_scale)
    results = merge(scenario, outcomes, light_scale)
    return attrs.evolve(
        results,
        wall_seconds=time.perf_counter() - started,
        cpu_seconds=sum(outcome.cpu_seconds for outcome in outcomes),
    )


def _worker(scenario: Scenario, regions: list[int], out: Any, light_scale: float) -> None:
    """A worker process: play ``regions`` one after the other, reporting on ``out``."""

    def report(interval: Interval, _scenario: object = None) -> None:
        out.put(("interval", interval))

    for region in regions:
        try:
            out.put(("outcome", play(scenario, region, report, light_scale)))
        except BaseException as exc:
            text = " ".join(traceback.format_exception_only(type(exc), exc)[-1].split())
            out.put(("error", (f"region {region}: {text}", traceback.format_exc())))
            return


def _in_processes(
    scenario: Scenario, workers: int, hours: _Hours, light_scale: float
) -> list[RegionOutcome]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    shares = [list(range(scenario.regions))[w::workers] for w in range(workers)]
    processes = [
        context.Process(target=_worker, args=(scenario, share, out, light_scale), daemon=True)
        for share in shares
    ]
    outcomes: dict[int, RegionOutcome] = {}
    try:
        for process in processes:
            process.start()
        quiet_since = time.monotonic()
        while len(outcomes) < scenario.regions:
            try:
                kind, payload = out.get(timeout=1.0)
            except queue.Empty:
                # A worker that died without a word (killed, out of memory) is seen here.
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise SimFailed(f"a simulator worker ended with exit code {dead[0]}") from None
                if time.monotonic() - quiet_since > STALL_S:
                    raise SimFailed(
                        f"no word from the simulator's workers in {STALL_S:g} s"
                    ) from None
                continue
            quiet_since = time.monotonic()
            if kind == "interval":
                hours(payload)
            elif kind == "outcome":
                outcomes[payload.region] = payload
            else:
                raise SimFailed(f"a simulator worker failed in {payload[0]}", payload[1])
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
        out.close()
    return [outcomes[r] for r in range(scenario.regions)]


def merge(
    scenario: Scenario, outcomes: Sequence[RegionOutcome], light_scale: float = 1.0
) -> Results:
    """The fleet's :class:`Results` from its regions' outcomes (in region order)."""
    seen = Tally()
    samples = detail = 0
    per_region: list[list[Interval]] = []
    for outcome in outcomes:
        t = outcome.tally
        seen.sent.update(t.sent)
        seen.delivered.update(t.delivered)
        for family, values in t.latency_ms.items():
            seen.latency_ms[family].extend(values)
        seen.grants += t.grants
        seen.lease_trace.extend(t.lease_trace)
        seen.waits_ms.extend(t.waits_ms)
        seen.given_up += t.given_up
        seen.escalations += t.escalations
        seen.events.extend(t.events)
        seen.digests.update(t.digests)
        seen.digest_bytes += t.digest_bytes
        seen.digests_anomalous += t.digests_anomalous
        seen.digests_refused += t.digests_refused
        seen.digests_unwritable += t.digests_unwritable
        samples += outcome.samples
        detail += outcome.detail_bytes
        per_region.append(t.intervals)
    intervals = tuple(_sum(hour) for hour in zip(*per_region, strict=True))
    baseline = stream_bytes_per_s(samples, detail)
    return _results(scenario, seen, intervals, baseline, light_scale)


def _results(
    scenario: Scenario,
    seen: Tally,
    intervals: tuple[Interval, ...],
    stream_baseline: float,
    light_scale: float,
) -> Results:
    families = seen.family_figures()
    verdict = seen.lease_verdict()
    setup = Setup(
        nodes=scenario.total_nodes, regions=scenario.regions, cells=scenario.all_cells,
        members=scenario.nodes, docks_per_cell=scenario.docks_per_cell, days=scenario.days,
        seed=scenario.seed, loss=scenario.loss, scenarios=scenario.scenarios,
        partition_days=scenario.partition_days, interval_ms=scenario.interval_ms,
        command=command(scenario, light_scale), engine=ENGINE, lifetime_days=LIFETIME / DAY,
    )  # fmt: skip
    return Results(
        setup=setup,
        intervals=intervals,
        events=tuple(sorted(seen.events, key=lambda e: (e.at_ms, e.kind, e.detail))),
        verdicts=(verdict,),
        families=families,
        lease_waits_ms=tuple(seen.waits_ms),
        claims_given_up=seen.given_up,
        grants=seen.grants,
        escalations=seen.escalations,
        digests_periodic=seen.digests["periodic"],
        digests_event_driven=seen.digests["threshold"],
        digest_bytes=seen.digest_bytes,
        digests_anomalous=seen.digests_anomalous,
        digests_refused=seen.digests_refused,
        digests_unwritable=seen.digests_unwritable,
        stream_baseline_bytes_per_node_per_s=stream_baseline,
    )
