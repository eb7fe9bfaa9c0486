"""Fleet simulation throughput against the Ed25519 sign+verify bound, measured in the same run.

Every delivered message costs one signature (at its source) and one verification (at its
destination); that pair is the floor no node can go below. The bound is measured here with
bare ``cryptography`` Ed25519 calls on a message-sized payload, and the simulator's
throughput — delivered messages per second of wall time, everything included: the agents'
parsing, store, routing and forwarding on every hop, the event heap, the link model, the
signatures — is reported as a ratio to it:

    ratio = (delivered / run seconds) / (1 / sign+verify seconds)

1.0 would mean the agent and the simulator cost nothing beside the signatures; the target is
>= 0.5 (everything else costs no more than the signatures themselves).

Scaling: the same traffic per node over the same virtual time at each fleet size; the wall
time per delivered message should stay flat (target: max/min within 1.5x). The fleet is the
simulator's standard shape (:mod:`fleetwire.runtime.sim.fleet`): cells of 20 under
coordinators under one hub, traffic of all four families, mostly within a cell.

The bound is measured while the fleet runs (:class:`BoundSampler`): this machine's speed
drifts by a quarter within seconds, and a bound taken only before and after a run caught
whichever speed held then, which swung the ratio from 0.31 to 0.50 between runs of the same
seed. The samples' mean is the bound; the best before/after the run is printed beside it.
Held against that bound, the signatures in the run and everything else are given as
multiples of it too: figures that stay put when the machine's speed does not (the ratio is
1 / (signatures + everything else)). A fleet run cannot be repeated the same way, so on a
shared machine its wall time includes other processes' load: the process CPU time per
message (``cpu µs``) is printed beside the wall figures, with its ratio to the bound's own
process CPU time (``bound cpu``). Building a fleet (keys, credentials) is timed apart and not
counted.

With ``--roles`` the coordination roles run in the agents (the lease roles as handlers:
the hub grants each cell's authority lease, coordinators are their cells' lease authorities,
members want, use and release shared resources); the lease family is then theirs, and the
application stream carries the other three. Their messages are signed, routed and delivered
like any other and count as delivered messages; the run ends with the lease invariant
checker's verdict over every grant and use (mutual exclusion, token order, every use
granted).

With ``--workers N`` the fleet is split by cells across N OS processes
(:mod:`fleetwire.runtime.sim.parallel`: the calling process runs one part, N-1 workers the
others, in steps of a quarter of the backbone light time, each part up to three steps ahead
of another). ``run s`` and ``µs/msg`` are then wall figures for the whole fleet; ``cpu µs``
is the CPU time of every process summed, per message (so the ratio to one process's bound
says what the work costs, not how fast it went); ``peak MiB`` is every process's peak RSS
summed. ``workers=1`` is the single-process simulator, as before; ``--workers auto`` is one
process per CPU (``os.cpu_count()``). Splitting pays only for large fleets: every step costs
each part a report whatever the step holds, so at 100 and 1,000 nodes (2 h, roles) two
processes cost 2.9x and 1.7x the CPU per message of one and ran 2.6x and 1.2x slower on the
wall; at 10,000 nodes they ran 1.6x faster.

The benchmark's process keeps its heap in transparent huge pages
(:mod:`fleetwire.runtime.sim.huge_pages`, as the simulator's command-line runs do); at 10,000
nodes × 1 h that took everything beside the signatures from 0.95-1.00x the bound to
0.86-0.96x (four runs each, interleaved). ``--no-huge-pages`` runs without, to compare.

The ratio of one run moves by some ±0.03 between runs of the same seed on this machine (its
speed drifts, and a fleet's memory-bound work drifts differently from the signatures').
``--repeat N`` runs each size N times and prints the least, median and most CPU ratio; the
scaling line then compares the sizes' medians. ``peak MiB`` is the process's peak so far, so
only a size's first run gives its fleet's own.

    python benchmarks/bench_sim.py [--sizes 100,1000] [--hours 24] [--per-node 100] [--seed 1]
                                   [--roles] [--workers 1|auto] [--repeat 1]
                                   [--no-huge-pages]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetwire.protocol.keys import VerifyKey
from fleetwire.runtime.sim.fleet import DAY_MS, Fleet, LeaseSetup, add_lease_work, add_traffic
from fleetwire.runtime.sim.huge_pages import use_huge_pages
from fleetwire.runtime.sim.parallel import run_fleet as run_parts

T0 = 820_000_000_000  # DTN ms, 2025-12-26
PAYLOAD = bytes(range(200)) + b"deliver feedstock to node 7 by day 12"


def sign_verify_us(
    pairs: int = 300, rounds: int = 5, key: Ed25519PrivateKey | None = None
) -> tuple[float, float]:
    """Best-of-rounds µs for one Ed25519 sign plus one verify of a message-sized payload:
    (wall, process CPU). On a shared machine the CPU figure is the one to hold a run's CPU
    time per message against (both are inflated alike by other processes' load)."""
    key = key or Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = key.public_key()
    best = best_cpu = float("inf")
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(pairs):
            public.verify(key.sign(PAYLOAD), PAYLOAD)
        best = min(best, (time.perf_counter() - start) / pairs)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / pairs)
    return best * 1e6, best_cpu * 1e6


@attrs.frozen
class BoundSamples:
    """What a part's :class:`BoundSampler` measured (picklable: workers send it back)."""

    samples: list[tuple[float, float]]  # (wall µs, CPU µs) per sample
    wall_s: float  # the sampling's own time, kept out of the run's figures
    cpu_s: float


class BoundSampler:
    """The bound, measured again and again while the fleet runs.

    This machine's speed is not steady: a virtual CPU moves between host cores of different
    speed, so the same tight loop of sign+verify takes 170 µs for a few seconds and 250 µs
    the next. A bound taken only before and after a run of twenty seconds may catch either,
    and the ratio swung by as much. So the bound is also sampled inside the run, at even
    steps of wall time (about every ``interval_s``), from a call the simulator makes every
    virtual minute: each sample is the best of a few short rounds of sign+verify (warm, as
    the bound means: the signatures alone), and their mean is the bound the run met. Their
    CPU and wall time are kept apart and taken off the run's figures by the caller.

    The samples take no part in the fleet: the simulator's call reads no state and changes
    none, so a seed's results are the same with or without them.
    """

    def __init__(self, fleet: Fleet, start: int, until: int, interval_s: float = 0.25) -> None:
        self.samples: list[tuple[float, float]] = []
        self.wall_s = self.cpu_s = 0.0
        self._key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        self._interval = interval_s
        self._due = 0.0
        self._until = until
        fleet.sim.every(start, self._tick)

    def _tick(self, sim: Any) -> int | None:
        if time.perf_counter() >= self._due:
            wall, cpu = time.perf_counter(), time.process_time()
            self.samples.append(sign_verify_us(pairs=8, rounds=3, key=self._key))
            now = time.perf_counter()
            self.wall_s += now - wall
            self.cpu_s += time.process_time() - cpu
            self._due = now + self._interval
        at: int = sim.now + 60_000
        return at if at <= self._until else None


class SignatureClock:
    """The CPU time of the Ed25519 calls a part makes while its fleet runs.

    Each node's ``SigningKey.sign`` (an instance slot: every signature goes through the key
    of the agent that seals) and ``VerifyKey.verify`` (the class's: every check goes through
    it) are wrapped: every call is counted, and one call in ``every`` is timed with this
    thread's CPU clock. A reading of that clock is a system call here (about 1 µs), and two
    of them around each of the two calls a message costs would add some 4 µs — about 1% —
    to the very CPU time the ratio is taken of; one call in eight keeps the instrument's
    cost to a fraction of a µs. The calls' cost is steady (a signature over a message of a
    few hundred bytes), so the timed calls' mean times the count is the signatures' time;
    the readings' own cost falls inside the timed span, which keeps the share conservative.
    Undone by :meth:`close` (the verify wrapper is class-wide)."""

    def __init__(self, fleet: Fleet, every: int = 8) -> None:
        self.sign_s = self.verify_s = 0.0
        self.signs = self.verifies = 0
        self._every = every
        clock = time.thread_time
        for agent in fleet.sim.agents.values():
            key = agent.config.key
            key.sign = self._timed_sign(key.sign, clock)
        self._verify = VerifyKey.verify
        raw_verify = self._verify

        def verify(key: VerifyKey, signature: bytes, data: bytes) -> None:
            self.verifies += 1
            if self.verifies % every:
                raw_verify(key, signature, data)
                return
            start = clock()
            try:
                raw_verify(key, signature, data)
            finally:
                self.verify_s += clock() - start

        VerifyKey.verify = verify  # type: ignore[method-assign]

    def _timed_sign(
        self, raw: Callable[[bytes], bytes], clock: Callable[[], float]
    ) -> Callable[[bytes], bytes]:
        every = self._every

        def sign(data: bytes) -> bytes:
            self.signs += 1
            if self.signs % every:
                return raw(data)
            start = clock()
            signature = raw(data)
            self.sign_s += clock() - start
            return signature

        return sign

    def close(self) -> tuple[float, float, int, int]:
        """(sign seconds, verify seconds, signs, verifies): the times estimated from the
        timed calls (every ``every``-th) for all of them."""
        VerifyKey.verify = self._verify  # type: ignore[method-assign]
        return (
            self._all(self.sign_s, self.signs),
            self._all(self.verify_s, self.verifies),
            self.signs,
            self.verifies,
        )

    def _all(self, timed_s: float, calls: int) -> float:
        timed = calls // self._every
        return timed_s * calls / timed if timed else 0.0


def scenario(
    fleet: Fleet, *, until: int, end: int, per_node: float, roles: bool
) -> Callable[[], tuple[int, tuple[float, float, int, int], BoundSamples]]:
    """One part's traffic (and lease work); collects the bundles its agents forwarded, its
    signatures' CPU time (:class:`SignatureClock`) and the bound sampled as it ran
    (:class:`BoundSampler`, from the part's start to ``end``)."""
    add_traffic(fleet, per_node_per_day=per_node, until=until)
    if roles:
        add_lease_work(fleet, until=until)
    clock = SignatureClock(fleet)
    sampler = BoundSampler(fleet, fleet.sim.now, end)
    return lambda: (
        sum(agent.stats.forwarded for agent in fleet.sim.agents.values()),
        clock.close(),
        BoundSamples(sampler.samples, sampler.wall_s, sampler.cpu_s),
    )


def run_fleet(
    nodes: int, hours: float, per_node: float, seed: int, roles: bool = False, workers: int = 1
) -> dict[str, Any]:
    until = T0 + int(hours * 3_600_000)
    end = until + 3_600_000  # an hour more, for the last messages to arrive
    setup = functools.partial(scenario, until=until, end=end, per_node=per_node, roles=roles)
    run = run_parts(
        workers, end, setup, nodes=nodes, seed=seed, start=T0,
        leases=LeaseSetup() if roles else None,
    )  # fmt: skip
    stats = run.stats
    forwarded = sum(result[0] for result in run.results)
    signature_s = sum(result[1][0] + result[1][1] for result in run.results)
    samplers: list[BoundSamples] = [result[2] for result in run.results]
    samples = [sample for sampler in samplers for sample in sampler.samples]
    delivered = stats.delivered
    # The samples' own time is not the fleet's: off the CPU of every part, and off the wall
    # time by the calling process's share (the parts sample side by side, in step).
    cpu = sum(run.run_cpu_s) - sum(sampler.cpu_s for sampler in samplers)
    run_s = run.run_s - samplers[0].wall_s
    verdict = run.check_leases() if roles else None
    return {
        "nodes": nodes,
        "build_s": run.build_s,
        "run_s": run_s,
        "messages": stats.messages,
        "delivered": delivered,
        "role_messages": stats.handled,
        "grants": -1 if verdict is None else verdict.grants,
        "uses": -1 if verdict is None else verdict.uses,
        "violations": -1 if verdict is None else verdict.violations,
        "hops": forwarded / max(1, delivered),
        "events": stats.events,
        "steps": run.steps,
        "us_per_message": run_s / max(1, delivered) * 1e6,
        "cpu_us_per_message": cpu / max(1, delivered) * 1e6,
        "cpu_s": cpu,
        # The signatures' own CPU time in the run, per delivered message, and their share of
        # the run's CPU time: the bound met inside a fleet (caches shared with everything else).
        "signature_us_per_message": signature_s / max(1, delivered) * 1e6,
        "signature_share": signature_s / cpu if cpu else 0.0,
        "cpu_s_per_process": run.run_cpu_s,
        "latency_s": stats.latency_ms_total / max(1, delivered) / 1000,
        "peak_rss_mib": sum(run.peak_rss_mib),
        # The bound sampled in the run (BoundSampler): mean wall and CPU µs, and the range.
        "bound_samples": len(samples),
        "bound_in_run_us": sum(wall for wall, _ in samples) / max(1, len(samples)),
        "bound_in_run_cpu_us": sum(cpu for _, cpu in samples) / max(1, len(samples)),
        "bound_in_run_range": (
            min((cpu for _, cpu in samples), default=0.0),
            max((cpu for _, cpu in samples), default=0.0),
        ),
    }


def at_least_one(text: str, also: str = "") -> int:
    """``--repeat`` (and ``--workers``): a count of at least 1; ``also`` names what else the
    option takes, for the error."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number{also}: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {count}")
    return count


def workers_arg(text: str) -> int:
    """``--workers``: a count of at least 1, or ``auto`` for one process per CPU."""
    if text == "auto":
        return os.cpu_count() or 1
    return at_least_one(text, " or 'auto'")


def measure(nodes: int, args: argparse.Namespace) -> tuple[float, float, float, float]:
    """One run of ``nodes`` with the bound taken around it, its lines printed; its wall and
    CPU µs per message, CPU ratio, and everything beside the signatures against the bound."""
    before, before_cpu = sign_verify_us()
    result = run_fleet(nodes, args.hours, args.per_node, args.seed, args.roles, args.workers)
    after, after_cpu = sign_verify_us()
    outside_cpu = min(before_cpu, after_cpu)
    # The bound the run met (BoundSampler); the one outside it only if none was taken.
    if result["bound_samples"]:
        bound, bound_cpu = result["bound_in_run_us"], result["bound_in_run_cpu_us"]
    else:
        bound, bound_cpu = min(before, after), outside_cpu
    ratio = bound / result["us_per_message"]
    cpu_ratio = bound_cpu / result["cpu_us_per_message"]
    signatures = result["signature_us_per_message"]
    other = result["cpu_us_per_message"] - signatures
    print(f"{nodes:>6} {result['delivered']:>9.0f} {result['hops']:>5.2f} "
          f"{result['build_s']:>8.1f} {result['run_s']:>8.1f} "
          f"{result['us_per_message']:>8.0f} {result['cpu_us_per_message']:>8.0f} "
          f"{bound:>8.0f} {bound_cpu:>9.0f} {ratio:>6.2f} {cpu_ratio:>9.2f} "
          f"{result['latency_s']:>9.2f} {result['peak_rss_mib']:>8.0f}", flush=True)  # fmt: skip
    print(f"       signatures in the run: {signatures:.0f} µs CPU per message "
          f"({signatures / bound_cpu:.2f}x the bound), {result['signature_share']:.0%} of "
          f"the run's CPU; everything else {other:.0f} µs "
          f"({other / bound_cpu:.2f}x the bound)")  # fmt: skip
    low, high = result["bound_in_run_range"]
    print(f"       bound sampled in the run: {result['bound_samples']:.0f} samples, "
          f"{low:.0f}-{high:.0f} µs CPU, mean {bound_cpu:.0f}; outside the run "
          f"(best before/after) {outside_cpu:.0f} µs, ratio {outside_cpu / result['cpu_us_per_message']:.2f}")  # fmt: skip
    if result["delivered"] != result["messages"]:
        print(f"       {result['messages'] - result['delivered']:.0f} of "
              f"{result['messages']:.0f} messages not delivered")  # fmt: skip
    if args.roles:
        per_day = result["messages"] / nodes / (args.hours / 24)
        print(f"       {per_day:.0f} messages/node/day; "
              f"roles: {result['role_messages']:.0f} lease messages handled, "
              f"{result['grants']:.0f} grants, {result['uses']:.0f} uses, "
              f"{result['violations']:.0f} invariant violations; load average "
              f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    if args.workers > 1:
        per_process = ", ".join(f"{cpu:.0f}" for cpu in result["cpu_s_per_process"])
        print(f"       {args.workers} processes: {result['steps']:.0f} steps, "
              f"run CPU {result['cpu_s']:.0f} s ({per_process}), "
              f"wall {result['run_s']:.0f} s")  # fmt: skip
    return result["us_per_message"], result["cpu_us_per_message"], cpu_ratio, other / bound_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--hours", type=float, default=24.0, help="virtual hours of traffic")
    parser.add_argument("--per-node", type=float, default=100.0, help="messages/node/day")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--roles", action="store_true", help="run the lease roles in the agents")
    parser.add_argument(
        "--workers",
        type=workers_arg,
        default=1,
        help="OS processes to split the fleet across, or 'auto': one per CPU",
    )
    parser.add_argument(
        "--repeat", type=at_least_one, default=1,
        help="runs of each size (the same seed): their least, median and most ratio, and the "
        "scaling line on the medians",
    )  # fmt: skip
    parser.add_argument(
        "--no-huge-pages", action="store_true",
        help="keep this process's heap in ordinary pages (module docstring)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    huge = not args.no_huge_pages and use_huge_pages()
    print(f"traffic: {args.per_node:g} messages/node/day for {args.hours:g} virtual hours, "
          f"seed {args.seed}, roles {'on' if args.roles else 'off'}, {args.workers} worker(s), "
          f"huge pages {'on' if huge else 'off'}; load average "
          f"{os.getloadavg()[0]:.2f} at start")  # fmt: skip
    print(f"{'nodes':>6} {'delivered':>9} {'hops':>5} {'build s':>8} {'run s':>8} "
          f"{'µs/msg':>8} {'cpu µs':>8} {'bound µs':>8} {'bound cpu':>9} {'ratio':>6} "
          f"{'cpu ratio':>9} "
          f"{'latency s':>9} {'peak MiB':>8}")  # fmt: skip
    per_message: list[float] = []
    cpu_per_message: list[float] = []
    for nodes in sizes:
        runs = [measure(nodes, args) for _ in range(args.repeat)]
        walls, cpus, ratios, others = (list(column) for column in zip(*runs, strict=True))
        # The same seed each time: the spread is the machine's, not the fleet's.
        per_message.append(statistics.median(walls))
        cpu_per_message.append(statistics.median(cpus))
        if args.repeat > 1:
            print(f"       over {args.repeat} runs: cpu ratio {min(ratios):.2f} / "
                  f"{statistics.median(ratios):.2f} / {max(ratios):.2f} (least / median / "
                  f"most), everything else {min(others):.2f}-{max(others):.2f}x the bound",
                  flush=True)  # fmt: skip
    if len(per_message) > 1:
        print(f"wall time per message, largest/smallest over the sizes: "
              f"{max(per_message) / min(per_message):.2f}x wall, "
              f"{max(cpu_per_message) / min(cpu_per_message):.2f}x cpu (target <= 1.5x)")  # fmt: skip


if __name__ == "__main__":
    main()

__all__ = ["DAY_MS", "main", "run_fleet", "sign_verify_us", "workers_arg"]
