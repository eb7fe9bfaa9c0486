"""The report's figures, drawn with matplotlib (the optional ``report`` extra).

Theory of operation
-------------------
:func:`draw` reads a :class:`~.demo_results.Results` and writes one PNG per question the seeds
ask of a run: how much coordination traffic each node carries against the 0.5–2 kbps budget,
how busy the shared docks are and how long claims wait, what the partition did and how long
reconciliation took, and how many exceptions stood open. matplotlib is imported here only, and
only when a report is written: without it :func:`available` is False and the HTML report says
so instead of showing figures. The Agg backend draws to files, so no display is needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import attrs

from .demo_results import (
    BUDGET_HIGH_BPS,
    BUDGET_LOW_BPS,
    Results,
    busiest_rate,
    coordination_rate,
    dock_utilisation,
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@attrs.frozen(slots=True)
class Figure:
    name: str  # file name in the report folder
    title: str
    caption: str


def available() -> bool:
    """True when matplotlib can be imported (``pip install 'fleetwire[report]'``)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken spec
        return False


def _days(results: Results) -> list[float]:
    return [i.end_ms / DAY_MS for i in results.intervals]


def _shade(ax: Any, results: Results, xlabel: bool = True) -> None:
    cut = results.setup.partition_days
    if cut is not None:
        ax.axvspan(cut[0], cut[1], color="#f4d7d7", label="partition", zorder=0)
    ax.axvline(results.setup.days, color="#888", linestyle=":", linewidth=1)
    if xlabel:
        ax.set_xlabel("virtual day (dotted: traffic stops, the last day drains)")
    ax.grid(True, alpha=0.3)


def draw(results: Results, out: Path) -> list[Figure]:
    """Write the figures into ``out``; return what was drawn (empty without matplotlib)."""
    if not available():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = _days(results)
    figures: list[Figure] = []
    # A fixed date in the PNG metadata keeps the files of one seed identical across runs.
    meta = {"Software": None, "Creation Time": None}

    def save(fig: Any, figure: Figure) -> None:
        fig.tight_layout()
        fig.savefig(out / figure.name, dpi=100, metadata=meta)
        plt.close(fig)
        figures.append(figure)

    # 1. Coordination bytes per node per second against the budget.
    fig, ax = plt.subplots(figsize=(9, 3.8))
    _shade(ax, results)
    ax.axhspan(BUDGET_LOW_BPS, BUDGET_HIGH_BPS, color="#d8ecd8", label="budget 0.5–2 kbps")
    ax.plot(days, coordination_rate(results), label="fleet mean per node", color="#2a6fb0")
    ax.plot(days, busiest_rate(results), label="busiest node", color="#c0702a", linewidth=0.8)
    if results.stream_baseline_bytes_per_node_per_s:
        ax.axhline(
            results.stream_baseline_bytes_per_node_per_s, color="#a33", linestyle="--",
            label="streaming the raw telemetry instead (1 Hz)",
        )  # fmt: skip
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylabel("bytes per second")
    ax.set_title("Coordination traffic per node, hourly")
    ax.legend(loc="upper right", fontsize="small")
    save(
        fig,
        Figure(
            "coordination.png",
            "Coordination bytes per node per second",
            "Bundle bytes each node put on its links (intents and telemetry digests), averaged "
            "over the fleet and for the busiest node (a coordinator), per hour, against the "
            "seeds' 0.5–2 kbps budget; dashed, what a member would send streaming its raw "
            "telemetry at 1 Hz instead of digests.",
        ),
    )

    # 2. Lease utilisation and wait times.
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(2, 1))
    _shade(left, results)
    left.plot(
        days, [100 * u for u in dock_utilisation(results)], color="#2a6fb0", label="all cells"
    )
    if results.setup.partition_days is not None:
        per_cell = results.setup.docks_per_cell
        left.plot(
            days,
            [100 * i.cell0_dock_use_ms / (per_cell * (i.end_ms - i.start_ms))
             for i in results.intervals],
            color="#c0702a", linewidth=0.8, label="cell 0 (cut off)",
        )  # fmt: skip
        left.legend(loc="upper left", fontsize="small")
    left.set_ylabel("docks in use (%)")
    left.set_ylim(0, 105)
    held = left.twinx()
    held.plot(days, [i.leases_held for i in results.intervals], color="#6a3d9a", linewidth=0.8)
    held.set_ylabel("leases held", color="#6a3d9a")
    left.set_title("Dock utilisation and leases held")
    waits = [w / HOUR_MS for w in results.lease_waits_ms]
    right.hist(waits or [0], bins=24, color="#2a6fb0")
    right.set_xlabel("hours from claim to usable grant")
    right.set_ylabel("claims")
    right.set_title(f"Lease waits ({results.claims_given_up} gave up at 12 h)", fontsize="medium")
    save(
        fig,
        Figure(
            "leases.png",
            "Lease utilisation and wait times",
            "Share of dock time used by fenced operations, leases members hold, and how long "
            "a claim waited until its grant could be used.",
        ),
    )

    # 3. The partition and the reconciliation.
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    _shade(top, results, xlabel=False)
    top.plot(days, [i.bundles_in_flight for i in results.intervals], label="fleet-wide")
    top.plot(
        days, [i.waiting_at_cut_cell for i in results.intervals], label="at cell 0's coordinator"
    )
    top.set_ylabel("bundles under way")
    top.legend(loc="upper right", fontsize="small")
    top.set_title("Partition and reconciliation")
    _shade(bottom, results)
    bottom.step(days, [i.cells_with_authority for i in results.intervals], where="post")
    bottom.set_ylabel("cells that may grant")
    bottom.set_ylim(-0.5, results.setup.cells + 0.5)
    for event in results.events:
        if event.kind.startswith("partition") or event.detail == "cell 0":
            bottom.axvline(event.at_ms / DAY_MS, color="#a33", linewidth=0.7, linestyle="--")
    save(
        fig,
        Figure(
            "partition.png",
            "Partition and reconciliation timeline",
            "Bundles waiting in the stores (fleet-wide and at the cut-off cell's coordinator), "
            "and how many cells hold their authority lease; dashed lines mark the cut, the heal "
            "and cell 0's authority changes.",
        ),
    )

    # 4. Exceptions.
    fig, ax = plt.subplots(figsize=(9, 3))
    _shade(ax, results)
    ax.plot(days, [i.exceptions_open for i in results.intervals], color="#a33")
    ax.set_ylabel("exceptions open", color="#a33")
    ax.set_title(f"Exceptions open ({results.escalations} escalated to a region)")
    if "fault" in results.setup.scenarios:
        quarantined = ax.twinx()
        quarantined.step(
            days, [i.quarantined for i in results.intervals], where="post", color="#6a3d9a"
        )
        quarantined.set_ylabel("nodes in quarantine", color="#6a3d9a")
    save(
        fig,
        Figure(
            "exceptions.png",
            "Exceptions and escalations",
            "Exception reports not yet at the node that handles them (the cell coordinator, or "
            "the region for severity 3 and above); with the fault scenario, the nodes the cell "
            "coordinators' containment put in production quarantine.",
        ),
    )
    if results.release is not None:
        _release_figure(plt, results, save)
    return figures


def _release_figure(plt: Any, results: Results, save: Any) -> None:
    """5. The staged release: lineage-B members by what they run, and the stage orders."""
    release = results.release
    assert release is not None
    labels = sorted({label for _, counts in release.timeline for label, _ in counts})
    days = [at / DAY_MS for at, _ in release.timeline]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    _shade(ax, results)
    for label in labels:
        ax.step(days, [dict(c).get(label, 0) for _, c in release.timeline], where="post",
                label=label)  # fmt: skip
    for at, order, _ in release.stages:
        if order == "halted":
            continue  # at the rollback's time: its line would hide the rollback's
        ax.axvline(at / DAY_MS, color="#a33" if order.startswith("roll") else "#888",
                   linewidth=0.7, linestyle="--")  # fmt: skip
    ax.set_ylabel("lineage-B members")
    ax.set_title(
        f"Staged release {release.previous} → {release.version}: {release.state} "
        f"({release.bytes / 1024:.0f} KiB on the links)"
    )
    ax.legend(loc="center right", fontsize="small")
    save(
        fig,
        Figure(
            "release.png",
            "Staged release, canary and rollback",
            "Lineage-B members by the release that holds their control authority, and those "
            "running the new one in shadow; dashed, the stage orders the release pipeline "
            "signed (red: the rollback).",
        ),
    )
