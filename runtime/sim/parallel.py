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
later, and an acknowledgement takes the same light time back. That lookahead is what lets
the parts run side by side (Chandy and Misra's conservative rule). The run is cut into
**steps** of ``S = L // lag`` ms on one grid (``lag``, :data:`LAG` by default, at least 1):
step ``i`` covers ``[A + i·S, A + (i+1)·S - 1]`` from the anchor ``A``, the earliest event
anywhere when the run starts. An event a part makes in step ``i`` (its time is at least the
step's start) reaches another part at least ``L >= lag·S`` later, in step ``i + lag`` or
after. So each part, on its own:

1. before step ``s``, reads every other part's reports of the steps up to ``s - lag`` and
   takes their events for it (``Simulator.take``), in step order, then part order;
2. runs its own heap to the step's end;
3. posts every other part a report of the step: the events it made there for nodes that part
   holds (arrivals at them, acknowledgements of their transfers: the engine's
   ``elsewhere`` hook), its next event time, and the earliest event it made for anyone.

A part therefore waits only for a part more than ``lag - 1`` steps behind it. With ``lag =
1`` this is the lock-step of synchronous windows, where every part waits at every step for
the slowest; a few steps of slack let the parts' uneven steps (a burst of deliveries in one
part, a quiet spell in the other) even out instead of each costing the faster part its
difference. But each step is one more report per part, so the slack is not free: at 10,000
nodes on two processes, lock-step kept the cores busy 79% of the run, ``lag`` 2 to 4 87–89%
(:data:`LAG` is 4), and 8 or 16 gave some of that back to the reports' own cost. The slack
is at most ``L`` of virtual time whatever ``lag`` is: a part slower for longer than that
still holds the others up.

**Quiet stretches are skipped.** From the reports of the steps up to ``s - lag`` every
part knows the earliest time anything can happen anywhere after them — every part's next
event then, and every event made in the last ``lag`` of those steps (the ones not every part
has taken yet). If that is past step ``s``, nothing happens anywhere in between, and the
part jumps to the step holding it; past ``until`` (or never), the run is over. Every part
decides this from the same reports, so all jump alike and run the same steps.

The reports go part to part over a socket pair between every two parts (:mod:`.mesh`:
framed, never blocking on a write, so parts that are both writing cannot deadlock); the
calling process only starts the run (the anchor) and gathers the results.

**What a run is a function of.** Each link direction draws from its own random stream, each
node's traffic and each member's lease work from their own (engine and fleet docstrings), so a
node does the same thing whichever part holds it. What the parts change is the order of events
at the *same* millisecond at one node: an event from another part is queued when the step
that takes it starts, behind the local events of that millisecond, where one simulator would
have queued it when it was made. Which step takes which events follows from the reports
alone, never from which process ran faster, so a run is a function of (seed, workers, lag);
with ``workers=1`` it is exactly the single :class:`~.engine.Simulator` run (one part, built
by ``build_fleet`` as always, in this process). With more workers a lossless fleet without
lease roles delivers the same messages (the same content ids); where same-millisecond order
matters (two bundles queued on one link at one instant, two lease claims at once) times and
grants may differ.

**Results.** At the end each part sends its :class:`~.engine.SimStats`, its share of the lease
trace (grants and uses), what it signed but did not deliver and what it delivered but did not
sign (so latencies across parts are matched), its CPU time and peak memory, and what the
scenario's collector returned; :class:`ParallelRun` holds them merged.

**The collector.** Once its part is built, each process freezes everything it holds out of the
cyclic garbage collector and switches the collector off for the run (:func:`long_lived_heap`):
a built fleet is millions of long-lived objects that the collector would otherwise walk again
and again, and a run makes no reference cycles — its garbage is all freed by reference
counting (a test holds a run with loss, duplication, expiry and the lease roles to that) — so
the collector's passes found nothing and cost a tenth of the agents' own time at 10,000 nodes.
The settings are restored when the run ends, however it ends. **Huge pages**: when the
caller's process put its heap in huge pages (:mod:`.huge_pages`), every worker does too
before it builds its part.

**Failure.** A worker's exception reaches the caller as :class:`WorkerError` with the worker's
message and traceback; a worker that dies without a word (killed, ``os._exit``) closes its
pipe and its links, which the parts waiting on it read as the end (the caller then names the
worker and its exit code); ``stall_s`` bounds the wait for any one answer or report. On any
error or Ctrl-C in the caller, the pipes and links are closed (a worker waiting on either
then exits) and any worker still alive after a short grace is terminated and joined: no
orphans. Workers ignore SIGINT — the caller decides — and exit when their pipe closes, so a
caller killed outright leaves none behind either.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import pickle
import resource
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from fleetwire.protocol.coordination import invariants

from .engine import Event, LinkModel, SimStats
from .fleet import Fleet, Part, build_fleet
from .huge_pages import huge_pages_in_use, use_huge_pages
from .mesh import Mesh, MeshStalled, PeerGone

__all__ = ["ParallelRun", "Scenario", "WorkerError", "run_fleet"]

#: Sets a built part up (traffic, lease work, counters) and returns its collector, called
#: after the run for the part's own results (anything picklable). A module-level function or
#: a ``functools.partial`` of one: worker processes receive it by reference.
Scenario = Callable[[Fleet], Callable[[], Any]]

#: How long a worker gets to finish after its pipe closes, before it is terminated.
_GRACE_S = 5.0

#: Steps a part may run ahead of another by (the lookahead is cut into as many steps).
LAG = 4

#: Later than any event (a step's "nothing" in the reports).
_NEVER = 1 << 63

#: A part's report of one step to another part: (step, the events it made there for that
#: part, its next event time, the earliest event it made there for any part).
_Report = tuple[int, list[Event], int | None, int]


@contextlib.contextmanager
def long_lived_heap() -> Iterator[None]:
    """Run a built fleet without the cyclic garbage collector.

    A built fleet is millions of long-lived objects (agents, stores, keys, credentials, the
    event heap): every full collection walks all of them. They are frozen (moved out of every
    generation: never scanned) once built. What a run makes itself — records, tombstones,
    replay records, millions more by the end of a day — would still be walked by every
    collection of the older generations, and there is nothing for the collector to find: a
    run makes no reference cycles, so reference counting frees all its garbage. Measured at
    10,000 nodes × 2 h: with the young generation at 50,000 the collections cost 22 µs a
    delivered message (a tenth of everything beside the signatures) and found no cycle. So
    the collector is off for the run; a test runs a fleet with loss, duplication, expiry on
    the way, the lease roles and a member breaking the lease rule, and finds no cycle left at
    the end (and does find one planted), which is what keeps this safe. The collector's state
    is restored and the frozen objects handed back to it afterwards, whatever happens (a test
    runs many fleets in one process).
    """
    enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        # What the run made joins the frozen fleet first, and all of it goes back to the oldest
        # generation: with the collector off the run's objects piled up in the youngest, and
        # turning it on over those would walk them all at the next allocation.
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


class WorkerError(RuntimeError):
    """A worker process failed: its message (and traceback) or how it exited (``silent``:
    it ended without a word)."""

    def __init__(self, message: str, *, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


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
    #: Steps run (each part runs the same; 0 with one worker).
    steps: int

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
        self.index, self.count = index, count
        self.build_s = time.perf_counter() - started
        self.build_cpu_s = time.process_time() - cpu
        self.run_cpu = time.process_time()

    def step(self, incoming: list[Event], end: int) -> tuple[list[list[Event]], int | None]:
        """Take the events from other parts, run up to ``end``, and hand out what was made
        for them, with this part's next event time."""
        sim = self.fleet.sim
        for event in incoming:
            if event[0] <= sim.now:  # the lookahead was broken: the run would be wrong
                raise RuntimeError(
                    f"an event for {event[0]} reached part {self.index} at {sim.now}: a link "
                    "between parts is shorter than a step (check backbone_link.owlt_ms)"
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


class _Schedule:
    """The steps one part runs, and what it has heard from the others (module docstring).

    Every part runs this same schedule on its own: the steps it runs and the events it
    takes at each are decided only from reports every part has (its own and those of the
    steps at least ``lag`` behind), so every part runs the same steps and a run does not
    depend on which process happened to be faster.
    """

    def __init__(self, part: _Part, mesh: Mesh, anchor: int, step_ms: int, lag: int) -> None:
        self.part, self.mesh = part, mesh
        self.anchor, self.step_ms, self.lag = anchor, step_ms, lag
        self.peers = [peer for peer in range(part.count) if peer != part.index]
        #: The steps run so far (every part runs the same ones), in order.
        self.ran: list[int] = []
        #: Per step: the earliest next event any part reported after it, and the earliest
        #: event any part made in it for another part (of the reports read so far).
        self.summary: dict[int, list[int]] = {}
        #: Per step: each other part's events for this part made in it.
        self.due: dict[int, dict[int, list[Event]]] = {}
        #: The last step heard from each other part.
        self.heard: dict[int, int] = {peer: -1 for peer in self.peers}
        #: How many of ``ran`` have had their reports' events taken.
        self.taken = 0

    def run(self, until: int, stall_s: float | None) -> int:
        """Run every step up to ``until``; the number run."""
        step = 0
        while True:
            start = self.anchor + step * self.step_ms
            if start > until:
                break
            end = min(start + self.step_ms - 1, until)
            # The last step run that every part's events for this one can come from: the
            # lookahead (module docstring) guarantees nothing later reaches ``start``.
            known = bisect.bisect_right(self.ran, step - self.lag) - 1
            if known >= 0:
                self._hear_through(self.ran[known], stall_s)
                horizon = self._horizon(known)
                if horizon >= _NEVER or horizon > until:
                    break  # nothing will happen anywhere again
                if horizon > end:  # nothing happens anywhere in this step: skip to it
                    step = (horizon - self.anchor) // self.step_ms
                    continue
            incoming: list[Event] = []
            while self.taken <= known:
                ran = self.ran[self.taken]
                for _, events in sorted(self.due.pop(ran, {}).items()):
                    incoming += events
                self.taken += 1
            made, next_at = self.part.step(incoming, end)
            earliest = min((event[0] for events in made for event in events), default=_NEVER)
            for peer in self.peers:
                self.mesh.post(peer, (step, made[peer], next_at, earliest))
            self._note(step, next_at, earliest)
            self.ran.append(step)
            step += 1
            if self.mesh.unsent:  # what the sockets did not take at once
                self.mesh.pump()
        return len(self.ran)

    def _hear_through(self, step: int, stall_s: float | None) -> None:
        """Read every other part's reports up to ``step``."""
        if not self._heard_through(step):  # most steps: read already
            self.mesh.wait(
                lambda: self._heard_through(step), lambda peer: self.heard[peer] < step, stall_s
            )

    def _heard_through(self, step: int) -> bool:
        self._take_inbox()
        return all(self.heard[peer] >= step for peer in self.peers)

    def _take_inbox(self) -> None:
        for peer, inbox in self.mesh.inbox.items():
            while inbox:
                report: _Report = inbox.popleft()  # type: ignore[assignment]
                step, events, next_at, earliest = report
                if events:
                    self.due.setdefault(step, {})[peer] = events
                self._note(step, next_at, earliest)
                self.heard[peer] = step

    def _note(self, step: int, next_at: int | None, earliest: int) -> None:
        summary = self.summary.get(step)
        if summary is None:
            summary = self.summary[step] = [_NEVER, _NEVER]
        if next_at is not None and next_at < summary[0]:
            summary[0] = next_at
        if earliest < summary[1]:
            summary[1] = earliest

    def _horizon(self, known: int) -> int:
        """The earliest time anything can happen anywhere after step ``ran[known]``: every
        part's next event then, and every event made in the steps whose events not every
        part has taken yet (made in the ``lag`` steps up to it)."""
        through = self.ran[known]
        horizon = self.summary[through][0]
        index = known
        while index >= 0 and self.ran[index] > through - self.lag:
            horizon = min(horizon, self.summary[self.ran[index]][1])
            index -= 1
        for old in [step for step in self.summary if step <= through - 2 * self.lag]:
            del self.summary[old]
        return horizon


def _worker(
    conn: multiprocessing.connection.Connection,
    index: int,
    count: int,
    fleet_args: dict[str, Any],
    scenario: Scenario,
    links: dict[int, socket.socket],
    huge_pages: bool,
) -> None:
    """A worker process: build one part, run the schedule, report the part's results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides (module docstring)
    mesh = Mesh(links)
    try:
        if huge_pages:  # as the caller's heap is (module docstring), before the part is built
            use_huge_pages()
        part = _Part(index, count, fleet_args, scenario)
        conn.send(("ready", part.fleet.sim.next_at()))
        _, anchor, step_ms, lag, until, stall_s = conn.recv()  # the caller's "start"
        with long_lived_heap():
            if anchor is not None:
                _Schedule(part, mesh, anchor, step_ms, lag).run(until, stall_s)
                mesh.flush(stall_s)
        conn.send(("result", part.finish()))
    except (EOFError, BrokenPipeError):  # the caller has gone or given up: just stop
        return
    except PeerGone as gone:  # another part failed; it (or the caller) says why
        with contextlib.suppress(OSError, ValueError):
            conn.send(("gone", gone.peer))
    except BaseException as error:  # reach the caller with the message, then stop
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(error).__name__}: {error}", traceback.format_exc()))
    finally:
        mesh.close()
        conn.close()


class _Workers:
    """The worker processes of a run, their pipes and the caller's links to them; closing
    them leaves no process."""

    def __init__(self, count: int, fleet_args: dict[str, Any], scenario: Scenario) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        # One socket pair between every two parts; the caller keeps its ends to the workers.
        ends: list[dict[int, socket.socket]] = [{} for _ in range(count)]
        for low in range(count):
            for high in range(low + 1, count):
                ends[low][high], ends[high][low] = socket.socketpair()
        self.mesh = Mesh(ends[0])
        try:
            self._start(context, count, fleet_args, scenario, ends)
        except BaseException:
            self.close()
            raise
        finally:
            for theirs in ends[1:]:  # the workers hold their own copies now
                for link in theirs.values():
                    link.close()

    def _start(
        self,
        context: multiprocessing.context.SpawnContext,
        count: int,
        fleet_args: dict[str, Any],
        scenario: Scenario,
        ends: list[dict[int, socket.socket]],
    ) -> None:
        for index in range(1, count):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_worker,
                args=(theirs, index, count, dict(fleet_args), scenario, ends[index],
                      huge_pages_in_use()),
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
        message = self._next(index, stall_s)
        if message is None:
            raise WorkerError(f"worker {index} did not answer within {stall_s:g} s")
        if message[0] != expect:
            raise WorkerError(f"worker {index} said {message[0]!r}, expected {expect!r}")
        return tuple(message[1:])

    def why(self, failure: BaseException) -> WorkerError:
        """What went wrong, when the caller's schedule met a gone or silent part: the first
        worker's own error if one sent it, else the first that ended without a word."""
        silent: WorkerError | None = None
        for index in range(1, len(self.conns) + 1):
            try:
                self._next(index, _GRACE_S)  # "gone" (it lost a peer) or nothing: not it
            except WorkerError as error:
                if not error.silent:
                    return error
                silent = silent or error
        return silent or WorkerError(f"the run stopped: {failure}")

    def _next(self, index: int, stall_s: float | None) -> tuple[Any, ...] | None:
        """Worker ``index``'s next message (``None``: none within ``stall_s``); its error, or
        its end without a word, as :class:`WorkerError`."""
        conn, process = self.conns[index - 1], self.processes[index - 1]
        # Only the worker holds the other end of its pipe, so a worker that dies closes it:
        # the read below ends with EOFError, with no need to watch the process itself.
        if stall_s is not None and not conn.poll(stall_s):
            return None
        try:
            message: tuple[Any, ...] = conn.recv()
        except EOFError:
            process.join(_GRACE_S)
            raise WorkerError(
                f"worker {index} exited (code {process.exitcode}) without a word", silent=True
            ) from None
        if message[0] == "error":
            raise WorkerError(f"worker {index} failed: {message[1]}\n{message[2]}")
        return message

    def close(self) -> None:
        self.mesh.close()
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
    lag: int = LAG,
    **fleet_args: Any,
) -> ParallelRun:
    """Build the fleet of ``build_fleet(**fleet_args)`` in ``workers`` parts, set each up with
    ``scenario``, run every event up to ``until``, and merge (module docstring). With
    ``hub_weight`` the hub counts as that many cells when the cells are shared out; ``lag``
    is how many steps a part may run ahead of another (the lookahead is cut into as many)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if lag < 1:
        raise ValueError(f"lag must be at least 1, not {lag}")
    backbone = fleet_args.get("backbone_link") or LinkModel(owlt_ms=1_300, rate_bps=10_000_000)
    fleet_args["backbone_link"] = backbone
    lookahead = backbone.owlt_ms
    if workers > 1 and lookahead <= 0:
        raise ValueError("a fleet split across processes needs backbone light time > 0")
    if workers > 1 and lookahead < lag:
        raise ValueError(
            f"a fleet split across processes needs backbone light time >= {lag} ms (the lag)"
        )
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
            steps = 0
            if pool is not None:
                nexts = [own.fleet.sim.next_at()]
                nexts += [pool.receive(index, "ready", stall_s)[0] for index in range(1, workers)]
                times = [at for at in nexts if at is not None]
                anchor = min(times) if times and min(times) <= until else None
                # Steps of lookahead // lag: an event made in a step reaches another part
                # ``lag`` steps later at the earliest (module docstring).
                order = ("start", anchor, lookahead // lag, lag, until, stall_s)
                started = time.perf_counter()
                for index in range(1, workers):
                    pool.send(index, order)
                if anchor is not None:
                    try:
                        schedule = _Schedule(own, pool.mesh, anchor, lookahead // lag, lag)
                        steps = schedule.run(until, stall_s)
                        pool.mesh.flush(stall_s)
                    except (PeerGone, MeshStalled) as failure:
                        raise pool.why(failure) from None
            else:
                own.fleet.sim.run(until)
            parts = [own.finish()]
            if pool is not None:
                pool.mesh.close()  # a worker still flushing to this part needs it no more
                parts += [pool.receive(index, "result", stall_s)[0] for index in range(1, workers)]
            run_s = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.close()
    return _merge(workers, parts, run_s, steps)


def _merge(workers: int, parts: list[PartResult], run_s: float, steps: int) -> ParallelRun:
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
        steps=steps,
    )
