"""The fleet simulator split across OS processes: same messages, same verdicts, clean failure."""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import pytest
from fleetwire.protocol.agent.actions import Deliver
from fleetwire.protocol.coordination import invariants
from fleetwire.runtime.sim.engine import LinkModel, Simulator
from fleetwire.runtime.sim.fleet import (
    DAY_MS,
    Fleet,
    LeaseSetup,
    add_lease_work,
    add_traffic,
    build_fleet,
)
from fleetwire.runtime.sim.parallel import WorkerError, run_fleet

from .fleet import T0

HOUR = 3_600_000
UNTIL = T0 + DAY_MS // 4
#: A lossy, jittery, duplicating fleet (for determinism) and its lossless twin.
ROUGH = {
    "member_link": LinkModel(owlt_ms=50, loss=0.1, duplicate=0.1, jitter_ms=40),
    "backbone_link": LinkModel(owlt_ms=1_300, loss=0.1, duplicate=0.1, jitter_ms=400),
}
FLEET = {"nodes": 45, "seed": 2, "start": T0, "cell_size": 11}


def traffic(fleet: Fleet, *, until: int, per_node: float) -> Callable[[], Any]:
    """Scenario: every node's message stream; collects (made, [(time, node, content id)])."""
    made = add_traffic(fleet, per_node_per_day=per_node, until=until)
    delivered: list[tuple[int, int, bytes]] = []

    def on_deliver(sim: Simulator, node: int, delivery: Deliver) -> None:
        delivered.append((sim.now, node, delivery.message.content_id.raw))
        sim.acknowledge(node, delivery.delivery)

    fleet.sim.on_deliver = on_deliver
    held = sorted(fleet.sim.agents)
    return lambda: (made(), delivered, held)


def leases(fleet: Fleet, *, until: int, rogue: int | None = None) -> Callable[[], Any]:
    """Scenario: traffic and the lease roles; ``rogue`` (a member) also works its cell's first
    resource every 20 minutes whether it holds it or not."""
    add_traffic(fleet, per_node_per_day=50, until=until)
    add_lease_work(fleet, until=until)
    if rogue is not None and fleet.holds(rogue):
        resource = f"dock/{fleet.coordinator_of[rogue]}/0"

        def ignore_the_lease(sim: Simulator) -> int | None:
            fleet.trace.append(invariants.Used(resource, rogue, 1, sim.now, sim.now + HOUR, sim.now))
            return sim.now + 20 * 60_000 if sim.now < until else None

        fleet.sim.every(T0 + HOUR, ignore_the_lease)
    return lambda: sorted(fleet.sim.agents)


def fail_at(fleet: Fleet, *, at: int, part: int, hard: bool) -> Callable[[], Any]:
    """Scenario: traffic, and the worker holding ``part`` fails at ``at`` (an exception, or
    ``hard``: the process ends without a word)."""
    add_traffic(fleet, per_node_per_day=50, until=UNTIL)
    if fleet.part is not None and fleet.part.index == part:

        def fail(sim: Simulator) -> int | None:
            if hard:
                os._exit(3)
            raise ValueError(f"a fault planted in part {part}")

        fleet.sim.every(at, fail)
    return lambda: None


def test_one_worker_is_the_single_simulator() -> None:
    scenario = functools.partial(traffic, until=UNTIL, per_node=24)
    run = run_fleet(1, UNTIL + HOUR, scenario, **FLEET, **ROUGH)
    fleet = build_fleet(**FLEET, **ROUGH)  # type: ignore[arg-type]
    collect = scenario(fleet)
    fleet.sim.run(UNTIL + HOUR)
    assert run.stats == fleet.sim.stats
    assert run.results == [collect()]
    assert run.stats.lost > 0 and run.stats.duplicated > 0
    assert run.steps == 0 and len(run.peak_rss_mib) == 1


@pytest.mark.parametrize("workers", [2, 3])
def test_more_workers_deliver_the_same_messages_as_one_on_a_lossless_fleet(workers: int) -> None:
    scenario = functools.partial(traffic, until=UNTIL, per_node=24)
    one = run_fleet(1, UNTIL + HOUR, scenario, **FLEET)
    many = run_fleet(workers, UNTIL + HOUR, scenario, **FLEET)
    made, got, _ = one.results[0]
    # Every part held agents (the hub and some cells, the other cells), none twice.
    held = [set(part[2]) for part in many.results]
    assert 1 in held[0] and all(held) and sum(map(len, held)) == len(set().union(*held)) == 45
    assert sum(part[0] for part in many.results) == made > 100
    ids = sorted(cid for _, _, cid in got)
    assert sorted(cid for part in many.results for _, _, cid in part[1]) == ids
    assert len(set(ids)) == len(ids) == made
    assert many.stats.delivered == many.stats.messages == one.stats.messages
    assert many.steps > 10
    # Latency crosses parts too: the mean is that of one process, up to same-instant order.
    assert many.stats.latency_ms_total == pytest.approx(one.stats.latency_ms_total, rel=0.05)


@pytest.mark.parametrize("lag", [1, 7])
def test_any_lag_delivers_the_same_messages_and_repeats_itself(lag: int) -> None:
    # lag 1 is lock-step; 7 cuts the light time into steps that do not divide it evenly.
    scenario = functools.partial(traffic, until=UNTIL, per_node=24)
    one = run_fleet(1, UNTIL + HOUR, scenario, **FLEET)
    many = run_fleet(2, UNTIL + HOUR, scenario, lag=lag, **FLEET)
    ids = sorted(cid for _, _, cid in one.results[0][1])
    assert sorted(cid for part in many.results for _, _, cid in part[1]) == ids
    assert many.stats.delivered == many.stats.messages == one.stats.messages
    rough = run_fleet(2, UNTIL + HOUR, scenario, lag=lag, **FLEET, **ROUGH)
    again = run_fleet(2, UNTIL + HOUR, scenario, lag=lag, **FLEET, **ROUGH)
    assert rough.stats == again.stats and rough.results == again.results


def test_quiet_stretches_cost_no_steps() -> None:
    # Two messages a node a day: the fleet is quiet nearly all the time, and the parts jump
    # over the quiet instead of stepping through it (a step is 1300 // 4 ms).
    scenario = functools.partial(traffic, until=UNTIL, per_node=2)
    run = run_fleet(2, UNTIL + HOUR, scenario, **FLEET)
    grid = (UNTIL + HOUR - T0) // (1_300 // 4)
    assert run.stats.delivered == run.stats.messages > 5
    assert 0 < run.steps < grid // 20


def test_a_lag_longer_than_the_light_time_is_refused() -> None:
    with pytest.raises(ValueError, match="light time >= 8 ms"):
        run_fleet(2, UNTIL, announce, lag=8, **FLEET, backbone_link=LinkModel(owlt_ms=5))
    with pytest.raises(ValueError, match="lag must be at least 1"):
        run_fleet(2, UNTIL, announce, lag=0, **FLEET)
    assert multiprocessing.active_children() == []


def test_a_run_is_a_function_of_seed_and_workers() -> None:
    scenario = functools.partial(traffic, until=UNTIL, per_node=24)
    first = run_fleet(2, UNTIL + HOUR, scenario, **FLEET, **ROUGH)
    again = run_fleet(2, UNTIL + HOUR, scenario, **FLEET, **ROUGH)
    assert first.stats == again.stats and first.results == again.results
    assert first.stats.lost > 0 and first.stats.duplicated > 0
    other = run_fleet(2, UNTIL + HOUR, scenario, **{**FLEET, "seed": 3}, **ROUGH)
    assert other.results != first.results


def test_the_lease_verdict_covers_every_part_and_still_catches_a_broken_rule() -> None:
    until = T0 + 8 * HOUR
    fleet_args = {**FLEET, "leases": LeaseSetup(resources_per_cell=2)}
    run = run_fleet(2, until + HOUR, functools.partial(leases, until=until), **fleet_args)
    held_0, held_1 = run.results
    report = run.check_leases()
    assert report.ok, report.violation
    assert report.uses > 20 and report.grants > report.uses // 4
    users = {r.holder for r in run.trace if isinstance(r, invariants.Used)}
    assert users & set(held_0) and users & set(held_1)  # both parts' uses were judged
    assert run.stats.delivered == run.stats.messages > 0

    rogue = max(held_1)  # a member held by the worker process, not the caller
    scenario = functools.partial(leases, until=until, rogue=rogue)
    broken = run_fleet(2, until + HOUR, scenario, **fleet_args).check_leases()
    assert broken.violation is not None and rogue in broken.violation.holders


@pytest.mark.parametrize("hard", [False, True], ids=["exception", "exit"])
@pytest.mark.parametrize("workers", [2, 3])
def test_a_worker_failure_is_reported_not_hung(workers: int, hard: bool) -> None:
    # With three, the failing worker's neighbour (waiting on its reports) stops too; the
    # caller names the one that failed, not the one that lost its peer.
    failing = workers - 1
    scenario = functools.partial(fail_at, at=T0 + HOUR, part=failing, hard=hard)
    with pytest.raises(WorkerError) as caught:
        run_fleet(workers, UNTIL, scenario, stall_s=60, **FLEET)
    if hard:
        assert f"worker {failing} exited (code 3)" in str(caught.value)
    else:
        message = f"worker {failing} failed: ValueError: a fault planted in part {failing}"
        assert message in str(caught.value)
    assert multiprocessing.active_children() == []


def test_a_failure_in_the_callers_part_ends_the_workers() -> None:
    scenario = functools.partial(fail_at, at=T0 + HOUR, part=0, hard=False)
    with pytest.raises(ValueError, match="a fault planted in part 0"):
        run_fleet(2, UNTIL, scenario, stall_s=60, **FLEET)
    assert multiprocessing.active_children() == []


def collector(fleet: Fleet, *, fail: bool = False) -> Callable[[], Any]:
    """Scenario: traffic, and what the cyclic collector's settings are an hour into the run
    (``fail``: then a fault in the caller's part)."""
    add_traffic(fleet, per_node_per_day=24, until=UNTIL)
    seen: list[tuple[bool, bool]] = []

    def look(sim: Simulator) -> int | None:
        seen.append((gc.isenabled(), gc.get_freeze_count() > 0))
        if fail:
            raise ValueError("a fault planted in the run")
        return None

    fleet.sim.every(T0 + HOUR, look)
    return lambda: seen


@pytest.mark.parametrize("workers", [1, 2])
def test_the_collector_is_off_for_the_run_only(workers: int) -> None:
    assert gc.isenabled()
    run = run_fleet(workers, UNTIL, collector, **FLEET)
    # Every process ran with the fleet frozen and the collector off...
    assert run.results == [[(False, True)]] * workers
    assert run.stats.delivered == run.stats.messages > 50
    # ...and the caller's collector is on again, its objects collectable again.
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(ValueError, match="a fault planted"):
        run_fleet(1, UNTIL, functools.partial(collector, fail=True), **FLEET)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def cycles_left(fleet: Fleet, *, until: int, plant: bool = False) -> Callable[[], Any]:
    """Scenario: traffic and the lease roles with a rogue member; collects, at the run's end
    with the fleet still alive, the objects the run left in reference cycles (every one
    would be memory the run holds until it ends, the collector being off) and what the run
    went through. ``plant``: a list that holds itself is made and dropped every hour."""
    rogue = leases(fleet, until=until, rogue=5)
    if plant:

        def cycle(sim: Simulator) -> int | None:
            itself: list[object] = []
            itself.append(itself)
            return sim.now + HOUR if sim.now < until else None

        fleet.sim.every(T0 + HOUR, cycle)

    def collect() -> tuple[int, list[str], Any]:
        # The fleet as built is frozen: a collection now walks only what the run made, and
        # whatever it finds unreachable there is cyclic garbage (nothing else is left to it).
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            kinds = sorted({type(thing).__name__ for thing in gc.garbage})
            found = len(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        return found, kinds, rogue()

    return collect


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_leaves_no_reference_cycles_for_the_collector(workers: int) -> None:
    # Loss, duplication and jitter on every link, bundles that expire on the way (a 3 s
    # lifetime: a message between cells crosses two 1.3 s backbone hops), the lease roles
    # and a member breaking the lease rule: a run of all of it leaves nothing that only the
    # collector would free.
    run = run_fleet(
        workers, UNTIL, functools.partial(cycles_left, until=UNTIL - HOUR), **FLEET, **ROUGH,
        leases=LeaseSetup(), bundle_lifetime_ms=3_000,
    )  # fmt: skip
    stats = run.stats
    assert stats.delivered > 100 and stats.handled > 100
    assert stats.lost > 10 and stats.duplicated > 10 and stats.discarded > 0
    assert run.check_leases().violations > 0
    assert [(found, kinds) for found, kinds, _ in run.results] == [(0, [])] * workers
    # The same count finds the cycles a run does leave.
    planted = run_fleet(
        1, UNTIL, functools.partial(cycles_left, until=UNTIL - HOUR, plant=True), **FLEET,
        leases=LeaseSetup(),
    )  # fmt: skip
    assert [(found, kinds) for found, kinds, _ in planted.results] == [(5, ["list"])]  # at 1 h to 5 h


def announce(fleet: Fleet, *, until: int) -> Callable[[], Any]:
    """Scenario: traffic, and each process says who it is once its part is built."""
    add_traffic(fleet, per_node_per_day=50, until=until)
    index = fleet.part.index if fleet.part is not None else 0
    print(f"part {index} pid {os.getpid()}", flush=True)
    return lambda: None


def test_ctrl_c_ends_the_caller_and_its_workers(tmp_path: Any) -> None:
    import select
    import signal
    import subprocess
    import sys

    code = (
        "import functools\n"
        "from fleetwire.runtime.sim.parallel import run_fleet\n"
        "from tests.test_sim_parallel import announce, FLEET, T0, DAY_MS\n"
        "run_fleet(2, T0 + 60 * DAY_MS, functools.partial(announce, until=T0 + 60 * DAY_MS),"
        " **FLEET)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    caller = subprocess.Popen(
        [sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        pids: dict[str, int] = {}
        while len(pids) < 2:
            ready, _, _ = select.select([caller.stdout], [], [], 60)
            assert ready, "the run did not start within a minute"
            line = caller.stdout.readline()  # type: ignore[union-attr]
            assert line, caller.stderr.read()  # type: ignore[union-attr]
            _, index, _, pid = line.split()
            pids[index] = int(pid)
        os.killpg(caller.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, errors = caller.communicate(timeout=60)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    assert caller.returncode != 0 and "KeyboardInterrupt" in errors
    assert pids["0"] == caller.pid
    with pytest.raises(ProcessLookupError):  # the worker is gone, not orphaned
        os.kill(pids["1"], 0)


def test_the_demo_sweep_runs_on_two_workers(tmp_path: Any) -> None:
    import json

    from fleetwire.runtime.cli.cli import main

    points = {}
    for workers in (1, 2):
        out = tmp_path / str(workers)
        args = ["demo", "--sweep", "61", "--engine", "sim", "--sweep-days", "0.25",
                "--workers", str(workers), "--out", str(out)]  # fmt: skip
        assert main(args) == 0
        points[workers] = json.loads((out / "sweep.json").read_text())["points"][0]
    one, two = points[1], points[2]
    assert (two["nodes"], two["cells"], two["members"]) == (one["nodes"], one["cells"], one["members"])
    assert two["verdict_ok"] and two["grants"] > 0 and two["decision_wait_ms_p50"] is not None
    # The same traffic and lease work, measured part by part and merged.
    assert two["bytes_per_node_per_s"] == pytest.approx(one["bytes_per_node_per_s"], rel=0.1)
    assert two["grants"] == pytest.approx(one["grants"], rel=0.2)


def test_a_scenario_that_cannot_reach_the_workers_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="module-level function"):
        run_fleet(2, UNTIL, lambda fleet: (lambda: None), **FLEET)
    with pytest.raises(ValueError, match="light time > 0"):
        run_fleet(2, UNTIL, announce, **FLEET, backbone_link=LinkModel(owlt_ms=0))
    assert multiprocessing.active_children() == []


def test_bad_workers_are_a_one_line_error() -> None:
    from fleetwire.runtime.cli.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["demo", "--sweep", "41", "--engine", "sim", "--workers", "0"])
    assert str(caught.value) == "fleetwire demo: error: --workers must be at least 1"
