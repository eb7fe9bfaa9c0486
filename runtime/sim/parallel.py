"""The fleet simulator on several OS processes: a conservative parallel discrete-event run.

Theory of operation
-------------------
One :class:`~.engine.Simulator` runs on one core. :func:`run_fleet` splits a fleet of
:func:`~.fleet.build_fleet` into ``workers`` parts by cells (:class:`~.fleet.Part`: a cell never
straddles two parts, the hub goes with part 0) and runs each part's simulator in its own
process — part 0 in the calling process, the others in worker processes started with
``multiprocessing`` (spawn: nothing is inherited but the arguments). Every part builds what
every part must agree on (keys, credentials, the tree, all derived from the seed) but only its
own agents, links and roles.

The only links between parts are coordinator ↔ hub links, whose light time is at least
``L = backbone_link.owlt_ms > 0``: a transfer that leaves at ``t`` arrives at ``t + L`` or
later, and an acknowledgement takes the same light time back. So the run goes in synchronous
windows (Chandy and Misra's conservative rule, with the lookahead ``L``):

1. The window starts at ``T``, the earliest event anywhere — the minimum of every part's
   next event and of the events in flight between parts — so quiet stretches are skipped.
2. Every part runs its own heap up to ``T + L - 1``. Nothing another part does in the window
   can reach it before ``T + L``, so it needs nobody's events to do so.
3. The events each part made for nodes held elsewhere (arrivals at them, acknowledgements of
   their transfers: the engine's ``elsewhere`` hook) go, at the window's end, to the parts that
   hold those nodes (``Simulator.take``), and the next window starts.

Exchanges go through part 0 (the calling process): it sends each worker its window's end and
the events for it, runs its own part meanwhile, and gathers the workers' events and next event
times. Pipes carry only event tuples (times, node numbers, bundle bytes).

**What a run is a function of.** Each link direction draws from its own random stream, each
node's traffic and each member's lease work from their own (engine and fleet docstrings), so a
node does the same thing whichever part holds it. What the parts change is the order of events
at the *same* millisecond at one node: an event from another part is queued when the window
ends, behind the local events of that millisecond, where one simulator would have queued it
when it was made. A run is therefore a function of (seed, workers); with ``workers=1`` it is
exactly the single :class:`~.engine.Simulator` run (one part, built by ``build_fleet`` as
always, in this process). With more workers a lossless fleet without lease roles delivers the
same messages (the same content ids); where same-millisecond order matters (two bundles queued
on one link at one instant, two lease claims at once) times and grants may differ.

**Results.** At the end each part sends its :class:`~.engine.SimStats`, its share of the lease
trace (grants and uses), what it signed but did not deliver and what it delivered but did not
sign (so latencies across parts are matched), its CPU time and peak memory, and what the
scenario's collector returned; :class:`ParallelRun` holds them merged.

**The collector.** Once its part is built, each process freezes everything it holds out of the
cyclic garbage collector and makes its young generation large for the run
(:func:`long_lived_heap`): a built fleet is millions of long-lived objects that the collector
would otherwise walk again and again, while a run's own garbage is freed by reference counting.
The settings are restored when the run ends, however it ends.

**Failure.** A worker's exception reaches the caller as :class:`WorkerError` with the worker's
message and traceback; a worker that dies without a word (killed, ``os._exit``) closes its
pipe, which the caller reads as the end; ``stall_s`` bounds the wait for any one answer. On any error or Ctrl-C in
the caller, the pipes are closed (a worker waiting on its pipe then exits) and any worker still
alive after a short grace is terminated and joined: no orphans. Workers ignore SIGINT — the
caller decides — and exit when their pipe closes, so a caller killed outright leaves none
behind either.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import pickle
import resource
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from fleetwire.protocol.coordination import invariants

from .engine import Event, LinkModel, SimStats
from .fleet import Fleet, Part, build_fleet

__all__ = ["ParallelRun", "Scenario", "WorkerError", "run_fleet"]

#: Sets a built part up (traffic, lease work, counters) and returns its collector, called
#: after the run for the part's own results (anything picklable). A module-level function or
#: a ``functools.partial`` of one: worker processes receive it by reference.
Scenario = Callable[[Fleet], Callable[[], Any]]

#: How long a worker gets to finish after its pipe closes, before it is terminated.
_GRACE_S = 5.0

#: Allocations (less deallocations) between two young-generation collections during a run.
#: Python's default, 700, makes the collector run every few events of a busy fleet.
GEN0_THRESHOLD = 50_000


@contextlib.contextmanager
def long_lived_heap() -> Iterator[None]:
    """Run a built fleet without the cyclic collector rescanning it.

    A built fleet is millions of long-lived objects (agents, stores, keys, credentials, the
    event heap): every full collection walks all of them, and the young generations fill up
    every few events, so the collector alone cost a tenth of a run. They are frozen (moved out
    of every generation: never scanned) once built, and the young generation is made large,
    since a run's garbage is nearly all freed by reference counting anyway. The previous
    thresholds are restored and the frozen objects handed back to the collector afterwards,
    whatever happens (a test runs many fleets in one process).
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    try:
        gc.set_threshold(GEN0_THRESHOLD, *thresholds[1:])
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class WorkerError(RuntimeError):
    """A worker process failed: its message (and traceback) or how it exited."""


@attrs.define
class PartResult:
    """What one part reports at the end of a run."""

    index: int
    stats: dict[str, int]
    trace: list[invariants.Record]
    sent_undelivered: dict[bytes, int]
    delivered_unsent: dict[bytes, int]
    collected: Any
    build_s: float
    build_cpu_s: float
    run_cpu_s: float
    peak_rss_mib: float


@attrs.define
class ParallelRun:
    """A whole fleet's run, merged from its parts (module docstring)."""

    workers: int
    stats: SimStats
    trace: list[invariants.Record]
    #: Each part's collector result, by part index.
    results: list[Any]
    #: Per process (part index order): CPU seconds building and running, peak RSS in MiB.
    build_cpu_s: list[float]
    run_cpu_s: list[float]
    peak_rss_mib: list[float]
    #: Wall seconds: the slowest part's build, and the run from the first window to the end.
    build_s: float
    run_s: float
    #: Synchronised windows run (0 with one worker).
    windows: int

    def check_leases(self) -> invariants.Report:
        """The invariant checker's verdict over every part's grants and uses."""
        return invariants.check(self.trace)


class _Part:
    """One part's simulator with its outgoing events, in whichever process runs it."""

    def __init__(
        self, index: int, count: int, fleet_args: dict[str, Any], scenario: Scenario
    ) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        part = Part(index, count, fleet_args.pop("hub_weight", 1.0)) if count > 1 else None
        self.fleet = build_fleet(**fleet_args, part=part)
        self.outgoing: list[list[Event]] = [[] for _ in range(count)]
        part_of, outgoing = self.fleet.part_of, self.outgoing
        if count > 1:
            self.fleet.sim.elsewhere = lambda node, event: outgoing[part_of[node]].append(event)
        self.collect = scenario(self.fleet)
        self.index = index
        self.build_s = time.perf_counter() - started
        self.build_cpu_s = time.process_time() - cpu
        self.run_cpu = time.process_time()

    def window(self, incoming: list[Event], end: int) -> tuple[list[list[Event]], int | None]:
        """Take the events from other parts, run up to ``end``, and hand out what was made
        for them, with this part's next event time."""
        sim = self.fleet.sim
        for event in incoming:
            if event[0] <= sim.now:  # the lookahead was broken: the run would be wrong
                raise RuntimeError(
                    f"an event for {event[0]} reached part {self.index} at {sim.now}: a link "
                    "between parts is shorter than the window (check backbone_link.owlt_ms)"
                )
            sim.take(event)
        sim.run(end)
        made = [list(out) for out in self.outgoing]
        for out in self.outgoing:
            out.clear()
        return made, sim.next_at()

    def finish(self) -> PartResult:
        sim = self.fleet.sim
        return PartResult(
            index=self.index,
            stats=attrs.asdict(sim.stats),
            trace=self.fleet.trace,
            sent_undelivered=sim.sent_undelivered(),
            delivered_unsent=sim.delivered_unsent,
            collected=self.collect(),
            build_s=self.build_s,
            build_cpu_s=self.build_cpu_s,
            run_cpu_s=time.process_time() - self.run_cpu,
            peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )


def _worker(
    conn: multiprocessing.connection.Connection,
    index: int,
    count: int,
    fleet_args: dict[str, Any],
    scenario: Scenario,
) -> None:
    """A worker process: build one part, then run windows until told to finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides (module docstring)
    try:
        part = _Part(index, count, fleet_args, scenario)
        conn.send(("ready", part.fleet.sim.next_at()))
        with long_lived_heap():
            while True:
                order = conn.recv()
                if order[0] == "run":
                    conn.send(("done", *part.window(order[2], order[1])))
                else:
                    conn.send(("result", part.finish()))
                    return
    except (EOFError, BrokenPipeError):  # the caller has gone or given up: just stop
        return
    except BaseException as error:  # reach the caller with the message, then stop
        try:
            conn.send(("error", f"{type(error).__name__}: {error}", traceback.format_exc()))
        except (OSError, ValueError):
            pass
    finally:
        conn.close()


class _Workers:
    """The worker processes of a run and their pipes; closing them leaves no process."""

    def __init__(self, count: int, fleet_args: dict[str, Any], scenario: Scenario) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        try:
            self._start(context, count, fleet_args, scenario)
        except BaseException:
            self.close()
            raise

    def _start(
        self,
        context: multiprocessing.context.SpawnContext,
        count: int,
        fleet_args: dict[str, Any],
        scenario: Scenario,
    ) -> None:
        for index in range(1, count):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_worker,
                args=(theirs, index, count, dict(fleet_args), scenario),
                name=f"fleet part {index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.conns.append(mine)
            self.processes.append(process)

    def send(self, index: int, message: object) -> None:
        self.conns[index - 1].send(message)

    def receive(self, index: int, expect: str, stall_s: float | None) -> tuple[Any, ...]:
        """The next message from worker ``index``, or :class:`WorkerError`."""
        conn, process = self.conns[index - 1], self.processes[index - 1]
        # Only the worker holds the other end of its pipe, so a worker that dies closes it:
        # the read below ends with EOFError, with no need to watch the process itself.
        if stall_s is not None and not conn.poll(stall_s):
            raise WorkerError(f"worker {index} did not answer within {stall_s:g} s")
        try:
            message = conn.recv()
        except EOFError:
            process.join(_GRACE_S)
            raise WorkerError(
                f"worker {index} exited (code {process.exitcode}) without a word"
            ) from None
        if message[0] == "error":
            raise WorkerError(f"worker {index} failed: {message[1]}\n{message[2]}")
        if message[0] != expect:
            raise WorkerError(f"worker {index} said {message[0]!r}, expected {expect!r}")
        return tuple(message[1:])

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for process in self.processes:
            process.join(_GRACE_S)
            if process.is_alive():
                process.terminate()
                process.join()


def run_fleet(
    workers: int,
    until: int,
    scenario: Scenario,
    *,
    stall_s: float | None = None,
    **fleet_args: Any,
) -> ParallelRun:
    """Build the fleet of ``build_fleet(**fleet_args)`` in ``workers`` parts, set each up with
    ``scenario``, run every event up to ``until``, and merge (module docstring). With
    ``hub_weight`` the hub counts as that many cells when the cells are shared out."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    backbone = fleet_args.get("backbone_link") or LinkModel(owlt_ms=1_300, rate_bps=10_000_000)
    fleet_args["backbone_link"] = backbone
    lookahead = backbone.owlt_ms
    if workers > 1 and lookahead <= 0:
        raise ValueError("a fleet split across processes needs backbone light time > 0")
    if workers > 1:
        try:
            pickle.dumps(scenario)
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise ValueError(
                f"the scenario cannot reach the worker processes ({error}): pass a module-level "
                "function or a functools.partial of one"
            ) from None
    pool = _Workers(workers, fleet_args, scenario) if workers > 1 else None
    try:
        own = _Part(0, workers, dict(fleet_args), scenario)
        with long_lived_heap():
            started = time.perf_counter()
            windows = 0
            if pool is not None:
                nexts = [own.fleet.sim.next_at()]
                nexts += [pool.receive(index, "ready", stall_s)[0] for index in range(1, workers)]
                started = time.perf_counter()
                incoming: list[list[Event]] = [[] for _ in range(workers)]
                while True:
                    times = [at for at in nexts if at is not None]
                    times += [event[0] for events in incoming for event in events]
                    if not times or min(times) > until:
                        break
                    end = min(min(times) + lookahead - 1, until)
                    windows += 1
                    for index in range(1, workers):
                        pool.send(index, ("run", end, incoming[index]))
                    made, nexts[0] = own.window(incoming[0], end)
                    incoming = made
                    for index in range(1, workers):
                        theirs, nexts[index] = pool.receive(index, "done", stall_s)
                        for target, events in enumerate(theirs):
                            incoming[target].extend(events)
                for index in range(1, workers):
                    pool.send(index, ("finish",))
            else:
                own.fleet.sim.run(until)
            parts = [own.finish()]
            if pool is not None:
                parts += [pool.receive(index, "result", stall_s)[0] for index in range(1, workers)]
            run_s = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.close()
    return _merge(workers, parts, run_s, windows)


def _merge(workers: int, parts: list[PartResult], run_s: float, windows: int) -> ParallelRun:
    stats = SimStats()
    for part in parts:
        for name, value in part.stats.items():
            setattr(stats, name, getattr(stats, name) + value)
    sent: dict[bytes, int] = {}
    for part in parts:
        sent.update(part.sent_undelivered)
    for part in parts:  # a latency across parts: signed in one, delivered in another
        for content_id, delivered_at in part.delivered_unsent.items():
            signed_at = sent.get(content_id)
            if signed_at is not None:
                stats.latency_ms_total += delivered_at - signed_at
    trace = [record for part in parts for record in part.trace]
    return ParallelRun(
        workers=workers,
        stats=stats,
        trace=trace,
        results=[part.collected for part in parts],
        build_cpu_s=[part.build_cpu_s for part in parts],
        run_cpu_s=[part.run_cpu_s for part in parts],
        peak_rss_mib=[part.peak_rss_mib for part in parts],
        build_s=max(part.build_s for part in parts),
        run_s=run_s,
        windows=windows,
    )
