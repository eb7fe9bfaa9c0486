"""``fleetwire demo``: run a fleet in simulated time, watch it live, and write a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from ..demo import demo, demo_processes, demo_sim, demo_sweep, report
from ..demo.demo_live import LiveView
from ..demo.demo_results import SCENARIOS
from ..sim.huge_pages import use_huge_pages

#: The sim engine's default fleet: 3 regions × 4 cells × 25 members.
SIM_NODES = 300

_SCENARIO_HELP = "\n".join(f"  {name:<11} {text}" for name, text in SCENARIOS.items())

HELP = f"""\
Run a whole fleet in simulated time: region coordinators, cell coordinators and member nodes,
each with its own Ed25519 key, credential and bundle store, talking over simulated links with
seconds of light time and contact windows that open a few times a day. Every message is signed,
carried in a Bundle Protocol v7 bundle, routed and verified on arrival; dock leases run through
the real lease roles, and every grant and use goes through the lease invariant checker.

Two engines run it (--engine): "sim", the discrete-event simulator (sans-IO bundle agents in
one heap of events; each region in its own OS process, --workers), which runs the default
fleet of {SIM_NODES} members for a week in about 60 s of CPU over three processes; and
"loopback", every node a Trio node on a mock clock (about 120 members a minute).
Without --engine a run uses sim when it
plays every chosen scenario ({", ".join(sorted(demo_sim.PLAYS))}) and loopback otherwise
({", ".join(n for n in SCENARIOS if n not in demo_sim.PLAYS)}); --engine sim with those is
refused. --sweep uses loopback unless told. --light-scale stretches the sim engine's light time.

The report folder gets summary.json (every figure; one seed gives the same file byte for
byte), index.html (one self-contained page) and PNG figures; the figures need matplotlib:
  pip install 'fleetwire[report]'

scenarios (--scenario, comma-separated or repeated; "none" for the baseline traffic only):
{_SCENARIO_HELP}

examples:
  fleetwire demo                               300 members, 3 regions × 4 cells, a week (sim)
  fleetwire demo --engine loopback --nodes 120   …on Trio nodes, 10 members a cell
  fleetwire demo --scenario partition --days 33  a cell cut off for 30 days, then healed
  fleetwire demo --scenario contention,partition,fault   all three together
  fleetwire demo --nodes 60 --regions 1 --days 2 --out small-report
  fleetwire demo --sweep 30,120,480 --out scaling   the scaling study: sweep.json, sweep.png
  fleetwire demo --sweep 100,1000,10000 --engine sim --out scaling   …on the simulator
  fleetwire demo --scenario isolation,contention    a misbehaving region severed, then lifted
  fleetwire demo --scenario contention,partition,skew   …with nodes pinned at versions 1 and 2
  fleetwire demo --scenario contention,release  a canary cell, then a rollback (--days 3 or more)
  fleetwire demo --processes 8 --out real       8 members (11 nodes) as real OS processes on
                                                127.0.0.1, a virtual hour a second: about 50 s

--sweep runs the chosen scenarios for --sweep-days (default 1) at each fleet size (members),
adding cells so that each keeps about 10 members, and plots coordination bytes per node,
decision latency (claim to usable grant) and wall time against the fleet size. With
--engine sim it runs the discrete-event simulator instead (sizes are nodes, in cells of 20
under one hub, the lease roles as agent handlers): fleets of 10,000 nodes and more.

--processes N runs N members, a cell per 4 and one region, each as a `fleetwire node` OS
process (TCPCLv4 on 127.0.0.1, a SQLite store each) on the real clock, every duration divided
by --time-scale; the report has the simulated run's shape. It plays contention, fault and
skew (the pinned nodes get `protocol_version` in their configuration files); its links are
always up and it has one region, so partition, isolation and release are left out there.
"""


def _scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name != "none" and name not in SCENARIOS:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)}, none)"
            )
    return [n for n in names if n != "none"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a fleet in simulated time, watch it, and write a report",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = demo.Scenario()
    parser.add_argument(
        "--nodes", type=int,
        help=f"member nodes; coordinators come on top (default {SIM_NODES} on the sim engine, "
        f"{defaults.nodes} on loopback)",
    )  # fmt: skip
    parser.add_argument(
        "--regions", type=int, default=defaults.regions,
        help=f"regions, each with its coordinator (default {defaults.regions})",
    )  # fmt: skip
    parser.add_argument(
        "--cells", type=int, default=defaults.cells,
        help=f"cells per region (default {defaults.cells})",
    )  # fmt: skip
    parser.add_argument(
        "--days", type=float,
        help=f"simulated days of traffic, one more drains (default {defaults.days:g}; "
        f"{PROCESS_DAYS:g} with --processes)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="random seed; a seed gives one run")
    parser.add_argument("--loss", type=float, default=0.0, help="probability a link loses a bundle")
    parser.add_argument(
        "--scenario", type=_scenarios, action="append", metavar="NAME[,NAME]",
        help=f"scenarios to play (default {','.join(defaults.scenarios)})",
    )  # fmt: skip
    parser.add_argument(
        "--cut-days", type=float, default=defaults.cut_days,
        help="how long the partition scenario cuts a cell off; clipped so that it heals a day "
        f"before traffic stops (default {defaults.cut_days:g})",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("fleetwire-report"),
        help="report folder (default fleetwire-report/)",
    )  # fmt: skip
    parser.add_argument(
        "--sweep", type=_sizes, metavar="N[,N…]",
        help="the scaling study: run at each fleet size (members) instead of one report",
    )  # fmt: skip
    parser.add_argument(
        "--engine", choices=("loopback", "sim"),
        help="sim (the discrete-event simulator) or loopback (Trio nodes); default: sim when "
        "it plays every chosen scenario, else loopback; for --sweep, loopback (sizes are "
        "members) unless sim (sizes are nodes; 10,000 and more)",
    )  # fmt: skip
    parser.add_argument(
        "--light-scale", type=float, default=1.0, metavar="F",
        help="with the sim engine: every link's one-way light time times F (default 1: "
        "0.5–4 s member to cell, 20–35 s cell to region; 100 puts the regions about an hour "
        "away)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, metavar="N",
        help="with the sim engine: OS processes the run is spread over. A single run: the "
        "regions' processes (default one per region; 1 runs them one after the other in this "
        "process; the results do not depend on it). --sweep: the processes each fleet is split "
        "across, by cells (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--sweep-days", type=float, default=1.0,
        help="simulated days of traffic per size in the sweep (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, metavar="N",
        help="run N members (and their coordinators: 1 region, a cell per 4 members) as real "
        "`fleetwire node` processes on 127.0.0.1 instead of simulating them",
    )  # fmt: skip
    parser.add_argument(
        "--time-scale", type=int, default=demo_processes.DEFAULT_SCALE,
        help="with --processes: virtual ms per real ms "
        f"(default {demo_processes.DEFAULT_SCALE}: a virtual hour a second)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of sizes"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are member counts, 1 or more")
    return sizes


def _fail(message: str) -> SystemExit:
    return SystemExit(f"fleetwire demo: error: {message}")


#: ``--processes`` runs a virtual day unless told otherwise (24 s at the default time scale).
PROCESS_DAYS = 1.0


def run(args: argparse.Namespace) -> int:
    if args.processes is not None:
        return _run_processes(args)
    if args.days is None:
        args.days = demo.Scenario().days
    if args.workers is not None and args.workers < 1:
        raise _fail("--workers must be at least 1")
    if not 0 <= args.light_scale <= 1000:
        raise _fail("--light-scale is a factor between 0 and 1000")
    if args.regions < 1 or args.cells < 1:
        raise _fail("--regions and --cells must be at least 1")
    if args.days <= 0 or args.cut_days <= 0:
        raise _fail("--days and --cut-days must be positive")
    if not 0.0 <= args.loss <= 1.0:
        raise _fail("--loss is a probability, between 0 and 1")
    chosen: tuple[str, ...]
    if args.scenario is None:
        chosen = demo.Scenario().scenarios
    else:
        chosen = tuple(dict.fromkeys(n for group in args.scenario for n in group))
    engine = _engine(args, chosen)
    if engine == "sim":  # this process runs one large fleet: its objects in huge pages
        use_huge_pages()
    if args.nodes is None:
        args.nodes = SIM_NODES if engine == "sim" and args.sweep is None else demo.Scenario().nodes
    if args.nodes < args.regions * args.cells:
        raise _fail("--nodes must be at least --regions × --cells (a member per cell)")
    scenario = demo.Scenario(
        nodes=args.nodes,
        regions=args.regions,
        cells=args.cells,
        days=args.days,
        seed=args.seed,
        loss=args.loss,
        scenarios=chosen,
        cut_days=args.cut_days,
    )
    if args.sweep is not None:
        return _run_sweep(args, attrs.evolve(scenario, days=args.sweep_days))
    cut = scenario.partition_days
    print(
        f"fleet of {scenario.total_nodes} nodes: {args.nodes} members in "
        f"{scenario.all_cells} cells of {args.regions} region(s); {args.days:g} simulated days "
        f"(+1 to drain) on the {engine} engine; scenarios: {', '.join(chosen) or 'none'}"
        + (f"; cell 0 cut off from its region on days {cut[0]:g}–{cut[1]:g}" if cut else "")
    )
    if "fault" in chosen and args.days < 3:
        print("(the fault scenario's defect shows from day 2 for 12 hours: use --days 3 or more)")
    if "release" in chosen and args.days < 3:
        print("(the release scenario's canary is rolled back about day 1.5: use --days 3 or more)")
    if "partition" in chosen and cut is None:
        print("(the partition scenario needs --days 3 or more to cut and heal; it was left out)")
    with LiveView(args.days + 1) as live:
        if engine == "sim":
            try:
                results = demo_sim.run(
                    scenario, live, workers=args.workers, light_scale=args.light_scale
                )
            except demo_sim.SimFailed as exc:
                raise _fail(str(exc)) from None
        else:
            results = demo.run(scenario, live)
            # Reproducing it needs the engine named: without it, the run may go to sim.
            command = f"{results.setup.command} --engine loopback"
            results = attrs.evolve(results, setup=attrs.evolve(results.setup, command=command))
    report.print_summary(results)
    written = report.write(results, args.out)
    print(
        f"report: {written.html}  (figures: {len(written.figures) or 'none, ' + report.INSTALL_HINT})"
    )
    cpu = f" ({results.cpu_seconds:.1f} s of CPU)" if results.cpu_seconds else ""
    print(f"wall time {results.wall_seconds:.1f} s{cpu} for {args.days + 1:g} simulated days")
    lost = sum(f.sent - f.delivered for f in results.families)
    clean = all(v.ok for v in results.verdicts)
    # Without loss, every message must arrive: a shortfall is a fault of the stack. Bundles
    # live for the autonomy window, so only a cut as long as that may lose what waited (a
    # message sent as the cut began waits all of it, and then the light time).
    too_long = cut is not None and (cut[1] - cut[0]) * demo.DAY >= demo.LIFETIME
    expected = lost == 0 or args.loss > 0 or too_long
    return 0 if clean and expected else 1


def _engine(args: argparse.Namespace, chosen: tuple[str, ...]) -> str:
    """The engine a run goes to (``--engine``; module HELP for the default)."""
    if args.sweep is not None:
        return str(args.engine or "loopback")
    unplayable = demo_sim.refused(chosen)
    if args.light_scale != 1.0 and (args.engine == "loopback" or unplayable):
        raise _fail("--light-scale is an option of the sim engine (--engine sim)")
    if args.engine == "sim" and unplayable:
        raise _fail(
            f"the sim engine does not play {', '.join(unplayable)} yet: use --engine loopback"
        )
    return str(args.engine or ("loopback" if unplayable else "sim"))


def _run_sweep(args: argparse.Namespace, base: demo.Scenario) -> int:
    console = Console()
    table = Table(
        title=f"scaling study: {base.days:g} simulated days a size ({args.engine or 'loopback'})"
    )
    columns = ("nodes", "cells", "B/s per node", "busiest node B/s", "wait p50", "wait p95",
               "verdict", "wall s", "CPU s", "peak MiB")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")

    def show(p: demo_sweep.Point) -> None:
        print(f"{p.nodes} nodes: {p.wall_seconds:.1f} s ({p.cpu_seconds:.1f} s CPU)", flush=True)

    points = demo_sweep.sweep(
        base, args.sweep, on_point=show, engine=args.engine or "loopback",
        workers=args.workers or 1,
    )  # fmt: skip
    for p in points:
        table.add_row(
            str(p.nodes), str(p.cells), f"{p.bytes_per_node_per_s:.3f}",
            f"{p.busiest_node_peak_bytes_per_s:.2f}", report.duration(p.decision_wait_ms_p50),
            report.duration(p.decision_wait_ms_p95), "clean" if p.verdict_ok else "VIOLATED",
            f"{p.wall_seconds:.1f}", f"{p.cpu_seconds:.1f}", f"{p.peak_rss_mib:.0f}",
        )  # fmt: skip
    console.print(table)
    written = demo_sweep.write(points, base, args.out)
    print("written: " + ", ".join(str(p) for p in written))
    return 0 if all(p.verdict_ok for p in points) else 1


def _run_processes(args: argparse.Namespace) -> int:
    if not 1 <= args.processes <= 64:
        raise _fail("--processes takes 1 to 64 members (each is an OS process)")
    if args.time_scale < 1:
        raise _fail("--time-scale must be at least 1")
    days = PROCESS_DAYS if args.days is None else args.days
    if days <= 0:
        raise _fail("--days must be positive")
    cells = max(1, args.processes // 4)
    chosen = demo.Scenario().scenarios if args.scenario is None else tuple(
        dict.fromkeys(n for group in args.scenario for n in group)
    )
    scenario = demo.Scenario(
        nodes=args.processes, regions=1, cells=cells, days=days, seed=args.seed, scenarios=chosen
    )
    played = demo_processes.small(scenario)
    left = [name for name in chosen if name not in played.scenarios]
    print(
        f"fleet of {played.total_nodes} OS processes: {args.processes} members in {cells} "
        f"cell(s) of 1 region, TCPCLv4 on 127.0.0.1; {days:g} virtual days (+1 to drain) at "
        f"{args.time_scale} virtual ms per ms; scenarios: {', '.join(played.scenarios) or 'none'}"
        + (f" ({', '.join(left)}: not with processes: links always up, one region)" if left else "")
    )
    try:
        results = demo_processes.run_processes(played, args.time_scale)
    except demo_processes.ProcessesFailed as exc:
        raise _fail(str(exc)) from None
    report.print_summary(results)
    written = report.write(results, args.out)
    print(
        f"report: {written.html}  (figures: {len(written.figures) or 'none, ' + report.INSTALL_HINT})"
    )
    print(f"wall time {results.wall_seconds:.1f} s for {days + 1:g} virtual days")
    return 0 if all(v.ok for v in results.verdicts) else 1
