"""The scaling study: one scenario at growing fleet sizes, measured instead of asserted.

Theory of operation
-------------------
:func:`sweep` runs the demo once per fleet size N with the hierarchy's shape held fixed: the
regions stay, and cells are added so that each keeps about ``members_per_cell`` members (the
seeds' cellular structure: a cell is the unit of coordination, and growth adds cells, not
members to a cell). For each run it keeps the figures that answer "where does coordination
start to hurt": coordination bytes per node per second (fleet mean, and the busiest node's
busiest hour), decision latency (a dock claim's wait until its grant can be used, p50 and
p95), the lease invariant verdict, and the wall time and peak memory of the run.

:func:`write` puts them in ``sweep.json`` and, with matplotlib, ``sweep.png`` (three panels
against N on a log axis). Wall time and memory depend on the machine; the other figures of a
size depend only on the seed, as in ``summary.json``.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import demo, report_figures
from .demo_results import BUDGET_HIGH_BPS, BUDGET_LOW_BPS, Results, summary


@attrs.frozen(slots=True)
class Point:
    members: int
    nodes: int
    cells: int
    bytes_per_node_per_s: float
    busiest_node_peak_bytes_per_s: float
    decision_wait_ms_p50: int | None
    decision_wait_ms_p95: int | None
    grants: int
    verdict_ok: bool
    wall_seconds: float
    peak_rss_mib: float
    engine: str = "loopback"  # or "sim": the discrete-event simulator (``demo_sweep_sim``)
    cpu_seconds: float = 0.0  # this process's CPU time for the run (wall time counts others')


def shape(base: demo.Scenario, members: int, members_per_cell: int) -> demo.Scenario:
    """``base`` with ``members`` members, cells added to keep ``members_per_cell`` a cell."""
    cells = max(1, math.ceil(members / (base.regions * members_per_cell)))
    return attrs.evolve(base, nodes=members, cells=cells)


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def point(results: Results) -> Point:
    s = summary(results)
    return Point(
        members=results.setup.members,
        nodes=results.setup.nodes,
        cells=results.setup.cells,
        bytes_per_node_per_s=s["coordination"]["mean_bytes_per_node_per_s"],
        busiest_node_peak_bytes_per_s=s["coordination"]["busiest_node_peak_bytes_per_s"],
        decision_wait_ms_p50=s["leases"]["wait_ms_p50"],
        decision_wait_ms_p95=s["leases"]["wait_ms_p95"],
        grants=s["leases"]["grants"],
        verdict_ok=all(v.ok for v in results.verdicts),
        wall_seconds=round(results.wall_seconds, 2),
        peak_rss_mib=round(peak_rss_mib(), 1),
    )


def sweep(
    base: demo.Scenario,
    sizes: Sequence[int],
    members_per_cell: int = 10,
    on_point: Callable[[Point], None] | None = None,
    engine: str = "loopback",
    workers: int = 1,
) -> list[Point]:
    """Run ``base`` at each size, smallest first: members on the loopback engine, nodes on
    the simulator (``engine="sim"``, :mod:`.demo_sweep_sim`: its own fleet shape and traffic;
    only ``base``'s days and seed apply; split across ``workers`` processes)."""
    points = []
    for size in sorted(sizes):
        if engine == "sim":
            from . import demo_sweep_sim

            points.append(demo_sweep_sim.point(size, base.days, base.seed, workers))
        else:
            cpu = time.process_time()
            measured = point(demo.run(shape(base, size, members_per_cell)))
            points.append(attrs.evolve(measured, cpu_seconds=round(time.process_time() - cpu, 2)))
        if on_point is not None:
            on_point(points[-1])
    return points


def write(points: Sequence[Point], base: demo.Scenario, out: Path) -> list[Path]:
    """``sweep.json`` and, with matplotlib, ``sweep.png`` in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "scenario": {
            "regions": base.regions,
            "days": base.days,
            "seed": base.seed,
            "scenarios": list(base.scenarios),
        },
        "budget_bytes_per_node_per_s": {"low": BUDGET_LOW_BPS, "high": BUDGET_HIGH_BPS},
        "points": [attrs.asdict(p) for p in points],
    }
    path = out / "sweep.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written = [path]
    if report_figures.available() and points:
        written.append(_draw(points, out / "sweep.png"))
    return written


def _draw(points: Sequence[Point], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [p.nodes for p in points]
    fig, (traffic, latency, wall) = plt.subplots(1, 3, figsize=(13, 3.8))
    traffic.axhspan(BUDGET_LOW_BPS, BUDGET_HIGH_BPS, color="#d8ecd8", label="budget 0.5–2 kbps")
    traffic.plot(n, [p.bytes_per_node_per_s for p in points], "o-", label="fleet mean per node")
    traffic.plot(
        n, [p.busiest_node_peak_bytes_per_s for p in points], "s--", label="busiest node, peak"
    )
    traffic.set_yscale("symlog", linthresh=0.01)
    traffic.set_ylabel("coordination bytes per second")
    traffic.legend(fontsize="small")
    traffic.set_title("Coordination overhead per node")
    hours = 3_600_000
    latency.plot(n, [(p.decision_wait_ms_p50 or 0) / hours for p in points], "o-", label="p50")
    latency.plot(n, [(p.decision_wait_ms_p95 or 0) / hours for p in points], "s--", label="p95")
    latency.set_ylabel("hours from claim to usable grant")
    latency.legend(fontsize="small")
    latency.set_title("Decision latency (dock leases)")
    wall.plot(n, [p.wall_seconds for p in points], "o-")
    wall.set_ylabel("wall seconds")
    wall.set_title("Wall time of the run")
    for ax in (traffic, latency, wall):
        ax.set_xscale("log")
        ax.set_xlabel("nodes in the fleet")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
