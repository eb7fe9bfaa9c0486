"""What a fleet run produced, as plain data: the one thing the report and the views read.

Theory of operation
-------------------
An engine (today the Trio loopback demo in :mod:`.demo`; tomorrow the sans-IO agent's
discrete-event simulator) fills a :class:`Results`: the run's :class:`Setup`, one
:class:`Interval` of figures per sampling step, the notable :class:`Event` s (a partition cut or
healed, a cell losing or regaining its lease authority), the invariant checkers'
:class:`Verdict` s, and per-family message counts. Nothing here knows Trio, links or nodes, so
a second engine only has to produce these classes; :func:`summary` turns them into the figures
``summary.json`` holds.

:func:`summary` is deterministic: it leaves out everything that depends on the machine (wall
time), rounds floats to a fixed number of places, and keeps every sequence in a defined order,
so one seed gives one ``summary.json``, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

#: The seeds' steady-state coordination budget per node (discussion responses on fleet
#: coordination at scale): 0.5–2 kbps average, in bytes per second.
BUDGET_LOW_BPS = 500 / 8
BUDGET_HIGH_BPS = 2000 / 8

#: The scenarios an engine may run, and what each does (shown in ``--help`` and the report).
SCENARIOS: dict[str, str] = {
    "contention": (
        "members compete for few shared feedstock docks: two docks per cell, claims every "
        "2–6 hours held for 2–6 hours, so claims queue at the cell's lease authority"
    ),
    "fault": (
        "a correlated fault in one software lineage: from day 2, for 12 hours, the lineage-B "
        "members of region 0 report the same feedstock-quality anomaly every half hour; each "
        "cell coordinator runs the containment machine, quarantines the lineage's nodes when "
        "anomalies cluster, and escalates one cluster report to its region"
    ),
    "isolation": (
        "a misbehaving region (needs --regions 2 or more): from day 2, for 12 hours, the last "
        "region's cell coordinators flood the first region's coordinator with severity-5 "
        "reports; past 12 in 6 hours it signs an isolation order severing that region, applies "
        "it at its boundary and sends it to the other regions, which verify and apply it; once "
        "nothing from the region was refused for 12 hours it signs the lift"
    ),
    "skew": (
        "version skew: the members of cell 0 are pinned at protocol version 1 and the last "
        "region's cell coordinators at version 2, the rest speak version 3; every node "
        "advertises the versions it reads (coordinators too), and each writes to a peer at "
        "the newest version both read; the report counts messages by writer → reader version "
        "and any message that could not be written or was refused on arrival"
    ),
    "release": (
        "a staged release with a canary cell and a rollback: a release pipeline node (the "
        "release role) publishes lineage B 3.0.0 on day 0.25 and stages it to the canary cell "
        "(the last cell), whose lineage-B members fetch its chunks hop by hop, run it in shadow "
        "and report; granted authority, the release's health digests go out of control, so "
        "the pipeline signs a rollback order to 2.4.1 and halts: no other cell ever runs it; "
        "the report shows members by version over time and the bytes the release cost"
    ),
    "partition": (
        "one cell is cut off from its region coordinator (30 days, or as much of the run as "
        "leaves a day to heal), then healed: its authority lease runs out while it is cut off, "
        "so it stops granting docks (the conservative choice), and its backlog drains on healing"
    ),
}


@attrs.frozen(slots=True)
class Setup:
    """The run's shape and the command that reproduces it."""

    nodes: int  # every node: region and cell coordinators and members
    regions: int
    cells: int  # all cells, across regions
    members: int
    docks_per_cell: int
    days: float  # days of traffic (one more day lets what is under way arrive)
    seed: int
    loss: float
    scenarios: tuple[str, ...]
    partition_days: tuple[float, float] | None  # (from, to) in run days, or no partition
    interval_ms: int
    command: str
    engine: str
    lifetime_days: float = 30.0  # the bundles' lifetime: the autonomy window by default


@attrs.frozen(slots=True)
class Interval:
    """Figures for one sampling step ``[start_ms, end_ms)`` of run time (0 = run start)."""

    start_ms: int
    end_ms: int
    bytes_sent: int  # bundle bytes every node put on its links in this step
    busiest_node_bytes: int  # the most one node sent in this step
    bundles_in_flight: int  # at the step's end: stored, not yet delivered or forwarded
    leases_held: int  # at the step's end: dock leases members hold
    dock_use_ms: int  # dock operation time that began in this step
    exceptions_open: int  # at the step's end: reported, not yet at the node that handles it
    cells_with_authority: int  # at the step's end: cells whose coordinator may grant
    waiting_at_cut_cell: int  # at the step's end: bundles under way at the cut-off coordinator
    quarantined: int = 0  # at the step's end: nodes in production quarantine
    cell0_dock_use_ms: int = 0  # dock_use_ms of cell 0 alone (the partition scenario's cell)


@attrs.frozen(slots=True)
class Event:
    at_ms: int
    kind: str
    detail: str


@attrs.frozen(slots=True)
class Verdict:
    """An invariant checker's answer over the run's trace."""

    checker: str
    ok: bool
    checked: int
    violations: int
    first_violation: str | None


@attrs.frozen(slots=True)
class FamilyFigures:
    family: str
    sent: int
    delivered: int
    latency_ms_p50: int | None
    latency_ms_p95: int | None


@attrs.frozen(slots=True)
class ReleaseFigures:
    """The release scenario (``demo_release``): the rollout's stages and what the nodes ran."""

    lineage: str
    previous: str
    version: str
    canary: int
    waves: tuple[tuple[int, ...], ...]
    artifact_bytes: int
    state: str  # the rollout's state at the end: complete, rolled-back, …
    reason: str | None  # why it rolled back or halted
    #: (run ms, stage order, cells) as the pipeline signed them.
    stages: tuple[tuple[int, str, tuple[int, ...]], ...]
    #: (run ms, ((what a lineage-B member runs, members), …)) at each sampling step.
    timeline: tuple[tuple[int, tuple[tuple[str, int], ...]], ...]
    bytes: int  # bundle bytes for release services on every link hop
    chunk_bytes: int  # of those, chunk answers
    bundles: int
    nodes_installed_new: int  # lineage-B members that ever installed the new release
    refusals: int  # release objects any role refused, with a code


@attrs.frozen(slots=True)
class Results:
    setup: Setup
    intervals: tuple[Interval, ...]
    events: tuple[Event, ...]
    verdicts: tuple[Verdict, ...]
    families: tuple[FamilyFigures, ...]
    lease_waits_ms: tuple[int, ...]  # claim → first usable grant, one per claim that got one
    claims_given_up: int  # claims that waited 12 h without a grant
    grants: int
    escalations: int
    #: Correlated-fault containment: cluster reports sent up, and quarantined nodes by lineage.
    cluster_escalations: int = 0
    quarantined_by_lineage: tuple[tuple[str, int], ...] = ()
    faulty_nodes: int = 0  # nodes the fault scenario's defect shows in
    quarantined_faulty: int = 0  # of those, quarantined (true positives)
    quarantined_healthy: int = 0  # quarantined without the defect (false positives)
    #: Telemetry digests the members sent (``demo_digests``): periodic and on threshold
    #: crossings, the carrying messages' bytes, those that reached a coordinator showing
    #: samples out of control, and those refused as malformed.
    digests_periodic: int = 0
    digests_event_driven: int = 0
    digest_bytes: int = 0
    digests_anomalous: int = 0
    digests_refused: int = 0
    #: Digests a member could not write for its coordinator (it speaks version 1, which has
    #: no digests, or too many waited for the coordinator's versions).
    digests_unwritable: int = 0
    #: What streaming the raw telemetry instead would cost per member (B/s).
    stream_baseline_bytes_per_node_per_s: float = 0.0
    #: The isolation scenario's counts (``demo_isolation.IsolationTally``), when it played.
    isolation: tuple[tuple[str, int], ...] | None = None
    #: The skew scenario's counts, when it played: ``nodes v1`` … (nodes per version),
    #: ``v3->v1`` … (messages by writer node's version → reader node's version),
    #: ``written at v1`` … (the version on the wire), ``refused <code>`` (could not be
    #: written, or refused on arrival).
    skew: tuple[tuple[str, int], ...] | None = None
    #: The release scenario's figures, when it played.
    release: ReleaseFigures | None = None
    wall_seconds: float = 0.0  # machine-dependent: never in summary.json
    #: CPU seconds of the simulation, summed over its processes (0: not measured); as
    #: machine-dependent as the wall time, and never in summary.json either.
    cpu_seconds: float = 0.0


def percentile(values: Sequence[int], q: float) -> int | None:
    """The ``q`` quantile by the nearest-rank method (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _r(x: float, places: int = 3) -> float:
    return round(x, places)


def coordination_rate(results: Results) -> list[float]:
    """Mean coordination bytes per node per second, one value per interval."""
    n = results.setup.nodes
    return [
        i.bytes_sent / n / ((i.end_ms - i.start_ms) / 1000) if i.end_ms > i.start_ms else 0.0
        for i in results.intervals
    ]


def busiest_rate(results: Results) -> list[float]:
    """The busiest node's bytes per second, one value per interval."""
    return [
        i.busiest_node_bytes / ((i.end_ms - i.start_ms) / 1000) if i.end_ms > i.start_ms else 0.0
        for i in results.intervals
    ]


def dock_utilisation(results: Results) -> list[float]:
    """Share of dock time in use, fleet-wide, one value per interval."""
    docks = results.setup.cells * results.setup.docks_per_cell
    return [
        i.dock_use_ms / (docks * (i.end_ms - i.start_ms))
        if docks and i.end_ms > i.start_ms
        else 0.0
        for i in results.intervals
    ]


def _use(intervals: Sequence[Interval], *, cell0: bool) -> int:
    return sum(
        i.cell0_dock_use_ms if cell0 else i.dock_use_ms - i.cell0_dock_use_ms for i in intervals
    )


def _first(results: Results, kind: str, detail: str) -> int | None:
    return next((e.at_ms for e in results.events if e.kind == kind and e.detail == detail), None)


def _first_kind(results: Results, kind: str) -> int | None:
    return next((e.at_ms for e in results.events if e.kind == kind), None)


def _skew(counts: tuple[tuple[str, int], ...]) -> dict[str, Any]:
    """The skew scenario's counts, grouped (``Results.skew``)."""
    groups: dict[str, dict[str, int]] = {
        "nodes_by_version": {}, "messages": {}, "written_at": {}, "refused": {}
    }
    for key, n in counts:
        if key.startswith("nodes "):
            groups["nodes_by_version"][key[6:]] = n
        elif key.startswith("written at "):
            groups["written_at"][key[11:]] = n
        elif key.startswith("refused "):
            groups["refused"][key[8:]] = n
        else:
            groups["messages"][key] = n
    return groups


def _release(r: ReleaseFigures) -> dict[str, Any]:
    """The release scenario's figures, JSON-friendly (``Results.release``)."""
    out = attrs.asdict(r, recurse=False)
    out["waves"] = [list(w) for w in r.waves]
    out["stages"] = [{"at_ms": at, "order": order, "cells": list(cells)}
                     for at, order, cells in r.stages]  # fmt: skip
    out["timeline"] = [{"at_ms": at, "members": dict(counts)} for at, counts in r.timeline]
    rolled = next((at for at, order, _ in r.stages if order.startswith("roll-back")), None)
    out["rolled_back_at_ms"] = rolled
    return out


def summary(results: Results) -> dict[str, Any]:
    """Every figure of the run, JSON-friendly and deterministic (see the module docstring)."""
    s = results.setup
    traffic_end = round(s.days * 86_400_000)
    in_traffic = [i for i in results.intervals if i.end_ms <= traffic_end]
    rates = coordination_rate(results)
    traffic_rates = rates[: len(in_traffic)]
    total_bytes = sum(i.bytes_sent for i in results.intervals)
    run_s = (results.intervals[-1].end_ms / 1000) if results.intervals else 0.0
    util = dock_utilisation(results)
    waits = results.lease_waits_ms
    digests = results.digests_periodic + results.digests_event_driven
    partition: dict[str, Any] | None = None
    if s.partition_days is not None:
        cut_ms = (round(s.partition_days[0] * 86_400_000), round(s.partition_days[1] * 86_400_000))
        # Reconciled: the cut-off coordinator's backlog is back to what it was in the day
        # before the cut (a busy cell always has something under way, so never zero).
        before = [
            i.waiting_at_cut_cell
            for i in results.intervals
            if cut_ms[0] - 86_400_000 <= i.start_ms and i.end_ms <= cut_ms[0]
        ]
        usual = max(before, default=0)
        after = [i for i in results.intervals if i.start_ms >= cut_ms[1]]
        drained = next((i.end_ms for i in after if i.waiting_at_cut_cell <= usual), None)
        during = [i for i in results.intervals if cut_ms[0] <= i.start_ms and i.end_ms <= cut_ms[1]]
        per_cell_ms = s.docks_per_cell * sum(i.end_ms - i.start_ms for i in during)
        first_full = next(
            (k for k, i in enumerate(results.intervals) if i.cells_with_authority == s.cells), None
        )
        partition = {
            "cut_at_ms": cut_ms[0],
            "healed_at_ms": cut_ms[1],
            "max_waiting_at_cut_cell": max(
                (i.waiting_at_cut_cell for i in results.intervals), default=0
            ),
            "usual_waiting_before_cut": usual,
            "backlog_drained_at_ms": drained,
            "reconciliation_ms": None if drained is None else drained - cut_ms[1],
            "min_cells_with_authority_after_first_grants": min(
                (i.cells_with_authority for i in results.intervals[first_full:]), default=0
            )
            if first_full is not None
            else 0,
            # What the cut cost: cell 0's docks against the other cells' over the cut.
            "cut_cell_dock_utilisation_during_cut": _r(_use(during, cell0=True) / per_cell_ms)
            if per_cell_ms
            else 0.0,
            "other_cells_dock_utilisation_during_cut": _r(
                _use(during, cell0=False) / (per_cell_ms * (s.cells - 1))
            )
            if per_cell_ms and s.cells > 1
            else None,
            "cut_cell_authority_lost_at_ms": _first(results, "authority-lost", "cell 0"),
            "cut_cell_authority_regained_at_ms": _first(results, "authority-regained", "cell 0"),
        }
    return {
        "setup": {
            **attrs.asdict(s, recurse=False),
            "scenarios": list(s.scenarios),
            "partition_days": None if s.partition_days is None else list(s.partition_days),
        },
        "budget_bytes_per_node_per_s": {"low": _r(BUDGET_LOW_BPS), "high": _r(BUDGET_HIGH_BPS)},
        "coordination": {
            "total_bytes": total_bytes,
            "mean_bytes_per_node_per_s": _r(total_bytes / s.nodes / run_s) if run_s else 0.0,
            "peak_interval_bytes_per_node_per_s": _r(max(traffic_rates, default=0.0)),
            "intervals_over_budget_high": sum(1 for r in traffic_rates if r > BUDGET_HIGH_BPS),
            "busiest_node_peak_bytes_per_s": _r(max(busiest_rate(results), default=0.0)),
            "telemetry_stream_baseline_bytes_per_node_per_s": _r(
                results.stream_baseline_bytes_per_node_per_s
            ),
        },
        "digests": {
            "periodic": results.digests_periodic,
            "event_driven": results.digests_event_driven,
            "mean_bytes": round(results.digest_bytes / digests) if digests else None,
            "anomalous_at_coordinators": results.digests_anomalous,
            "refused": results.digests_refused,
            "unwritable": results.digests_unwritable,
        },
        "leases": {
            "grants": results.grants,
            "mean_dock_utilisation": _r(sum(util) / len(util)) if util else 0.0,
            "peak_dock_utilisation": _r(max(util, default=0.0)),
            "max_leases_held": max((i.leases_held for i in results.intervals), default=0),
            "wait_ms_p50": percentile(waits, 0.5),
            "wait_ms_p95": percentile(waits, 0.95),
            "wait_ms_max": max(waits, default=None),
            "claims_granted": len(waits),
            "claims_given_up": results.claims_given_up,
        },
        "partition": partition,
        "exceptions": {
            "escalations": results.escalations,
            "max_open": max((i.exceptions_open for i in results.intervals), default=0),
        },
        "containment": {
            "cluster_escalations": results.cluster_escalations,
            "quarantined_by_lineage": dict(results.quarantined_by_lineage),
            "faulty_nodes": results.faulty_nodes,
            "quarantined_faulty": results.quarantined_faulty,
            "quarantined_healthy": results.quarantined_healthy,
            "first_quarantine_at_ms": next(
                (e.at_ms for e in results.events if e.kind == "quarantine"), None
            ),
        },
        "isolation": None
        if results.isolation is None
        else {
            **dict(results.isolation),
            "severed_at_ms": _first_kind(results, "isolation-severed"),
            "lifted_at_ms": _first_kind(results, "isolation-lifted"),
        },
        "skew": None if results.skew is None else _skew(results.skew),
        "release": None if results.release is None else _release(results.release),
        "verdicts": [attrs.asdict(v) for v in results.verdicts],
        "families": [attrs.asdict(f) for f in results.families],
        "events": [attrs.asdict(e) for e in results.events],
        "intervals": [attrs.asdict(i) for i in results.intervals],
    }
