"""``fleetwire demo``: run a loopback fleet in simulated time and report what happened."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import demo
from .report import Progress, duration, sparkline, svg_chart, table

HELP = """\
Run a whole fleet in one process: a region coordinator, cell coordinators and member nodes,
each with its own Ed25519 key, credential and bundle store, talking over simulated links with
seconds of light time and contact windows that open a few times a day. One cell is cut off
from the region for a day (a partition); its traffic waits in the stores and flows when the
partition heals. Every message is signed, carried in a Bundle Protocol v7 bundle, routed over
the contact graph and verified on arrival. Simulated time runs days in seconds.

examples:
  fleetwire demo                         200 nodes, 4 cells, 3 days
  fleetwire demo --nodes 1000 --cells 20 --days 2 --svg fleet.svg
  fleetwire demo --loss 0.05 --json run.json
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a loopback fleet in simulated time and report",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=200, help="nodes in the fleet (default 200)")
    parser.add_argument("--cells", type=int, default=4, help="cells (default 4)")
    parser.add_argument(
        "--days", type=float, default=3.0, help="simulated days of traffic (default 3)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed; a seed gives one run")
    parser.add_argument("--loss", type=float, default=0.0, help="probability a link loses a bundle")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--svg", type=Path, help="also write a chart of bundles held over time")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.nodes < args.cells + 2:
        raise SystemExit("fleetwire demo: error: --nodes must be at least --cells + 2")
    scenario = demo.Scenario(
        nodes=args.nodes, cells=args.cells, days=args.days, seed=args.seed, loss=args.loss
    )
    print(
        f"fleet of {args.nodes} nodes in {args.cells} cells, {args.days:g} simulated days "
        f"(+1 day to drain); cell 0 partitioned from the region on days "
        f"{scenario.partition_days[0]:g}–{scenario.partition_days[1]:g}"
    )
    progress = Progress("simulating")
    seen = demo.run(scenario, progress)
    progress(1.0)
    figures = demo.summary(seen)
    rows = []
    for family, f in figures["families"].items():
        share = f"{100 * f['delivered'] / f['sent']:.1f}%" if f["sent"] else "—"
        rows.append(
            [
                family,
                f["sent"],
                f["delivered"],
                share,
                duration(f["latency_ms_median"]),
                duration(f["latency_ms_p95"]),
            ]
        )
    print()
    print(table(rows, ["family", "sent", "delivered", "delivered %", "latency p50", "latency p95"]))
    print()
    held = [h for _, h in seen.stored_samples]
    print(
        f"lease grants {figures['grants']}, exceptions escalated to the region {figures['escalations']}"
    )
    print(
        f"dock uses checked {figures['lease_uses']}, double-bookings {figures['double_bookings']}"
        + (f" (first: {figures['first_double_booking']})" if figures["double_bookings"] else "")
    )
    print(
        f"bundles under way fleet-wide (every 30 min): {sparkline(held)}  max {figures['max_bundles_held']}"
    )
    print(
        "waiting at the partitioned cell's coordinator: "
        f"max {figures['max_waiting_at_partitioned_coordinator']} bundles"
    )
    print(f"wall time {figures['wall_seconds']} s for {args.days + 1:g} simulated days")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if args.svg:
        series = [(t / demo.DAY, float(h)) for t, h in seen.stored_samples]
        args.svg.write_text(
            svg_chart(
                "bundles under way across the fleet (shaded: partition)",
                series,
                "simulated day",
                "bundles",
                shade=scenario.partition_days,
            )
        )
        print(f"chart written to {args.svg}")
    lost = sum(f["sent"] - f["delivered"] for f in figures["families"].values())
    return 0 if args.loss or lost == 0 else 1
