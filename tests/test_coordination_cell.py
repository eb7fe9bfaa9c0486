"""A cell under faults never double-books, recovers once healed, and the checker can fail.

Hypothesis drives a whole cell (region, active and standby coordinators, holders; see
``coordination_cell``) through loss, delay, duplication, reordering, partitions, coordinator
crashes that lose state, standby takeover and clock offsets within ``max_drift``; the invariant
checker must find nothing, and once everything heals every claim must be granted again within a
measured time. Then the same harness, with the clocks beyond the bound or the fencing guard off,
must produce a violation the checker names — proof that the green runs could have been red.
"""

from __future__ import annotations

import random

import pytest
from fleetwire.protocol.coordination.invariants import Rule
from fleetwire.protocol.coordination.lease_holder import HolderState
from hypothesis import event, settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .coordination_cell import COORDINATORS, MAX_DRIFT, REGION, Cell

HOLDERS = 4
RESOURCES = 2
NODES = (REGION, *COORDINATORS, *range(10, 10 + HOLDERS))
#: After a heal: the authority lease (20 s) may have to run out twice (a coordinator that lost
#: its state lets its old epoch run out before claiming anew), plus drift and round trips.
RECOVERY_MS = 50_000
#: Then every holder claims once; with 4 holders on 2 resources, each holding 2 s.
LIVENESS_MS = 20_000


def wait_for_grants(
    cell: Cell, wants: list[tuple[int, str]], within: int
) -> dict[tuple[int, str], int]:
    """Run until each (holder, resource) in ``wants`` was granted; returns the waits (ms)."""
    started = cell.now
    for h, resource in wants:
        cell.granted_at.pop((h, resource), None)
        cell.want(h, resource, 2_000)
    waits: dict[tuple[int, str], int] = {}
    while cell.now - started < within and len(waits) < len(wants):
        cell.run(100)
        for key in wants:
            if key in cell.granted_at and key not in waits:
                waits[key] = cell.granted_at[key] - started
    return waits


class CellUnderFaults(RuleBasedStateMachine):
    @initialize(
        seed=st.integers(0, 2**32 - 1),
        offsets=st.lists(
            st.integers(-MAX_DRIFT // 2, MAX_DRIFT // 2), min_size=len(NODES), max_size=len(NODES)
        ),
    )
    def start(self, seed: int, offsets: list[int]) -> None:
        # Offsets within ±max_drift/2: any two clocks differ by at most max_drift (§6.4).
        self.cell = Cell(
            seed,
            holders=HOLDERS,
            resources=RESOURCES,
            offsets=dict(zip(NODES, offsets, strict=True)),
        )
        self.cell.run(2_000)

    @rule(ms=st.integers(100, 15_000))
    def advance(self, ms: int) -> None:
        self.cell.run(ms)

    @rule(
        h=st.integers(0, HOLDERS - 1), r=st.integers(0, RESOURCES - 1), hold=st.integers(300, 8_000)
    )
    def want(self, h: int, r: int, hold: int) -> None:
        self.cell.want(10 + h, self.cell.resources[r], hold)

    @rule(loss=st.floats(0, 0.6), duplicate=st.floats(0, 0.6), slowest=st.integers(5, 3_000))
    def network(self, loss: float, duplicate: float, slowest: int) -> None:
        self.cell.net.loss, self.cell.net.duplicate = loss, duplicate
        self.cell.net.delay = (1, slowest)

    @rule(a=st.sampled_from(NODES), b=st.sampled_from(NODES))
    def cut(self, a: int, b: int) -> None:
        if a != b:
            self.cell.net.cut.add(frozenset((a, b)))

    @rule(node=st.sampled_from(NODES))
    def isolate(self, node: int) -> None:
        self.cell.net.isolated.add(node)

    @rule(node=st.sampled_from(NODES), offset=st.integers(-MAX_DRIFT // 2, MAX_DRIFT // 2))
    def step_clock(self, node: int, offset: int) -> None:
        """A clock is corrected (forwards or backwards), staying within the bound."""
        self.cell.offsets[node] = offset

    @rule()
    def mend(self) -> None:
        self.cell.net.cut.clear()
        self.cell.net.isolated.clear()

    @precondition(lambda self: bool(self.cell.active()))
    @rule()
    def crash_active(self) -> None:
        self.cell.crash(self.cell.active()[0])
        if currently_in_test_context():
            event("active coordinator crashed")

    @rule(c=st.sampled_from(COORDINATORS))
    def restart(self, c: int) -> None:
        self.cell.restart(c)

    @rule(r=st.integers(0, RESOURCES - 1))
    def revoke(self, r: int) -> None:
        self.cell.revoke(self.cell.resources[r])

    @invariant()
    def never_double_booked(self) -> None:
        report = self.cell.check()
        assert report.ok, str(report.violation)
        assert report.max_clock_difference <= MAX_DRIFT

    def teardown(self) -> None:
        cell = getattr(self, "cell", None)
        if cell is None:
            return
        cell.heal()
        cell.run(RECOVERY_MS)
        epochs = {cell.coord_authority[c].epoch for c in cell.active()}
        assert len(cell.active()) == 1, (
            f"active coordinators after healing: {cell.active()} {epochs}"
        )
        wants = [(h, cell.resources[i % RESOURCES]) for i, h in enumerate(cell.holders)]
        waits = wait_for_grants(cell, wants, LIVENESS_MS)
        missing = sorted(set(wants) - set(waits))
        assert not missing, f"never granted after healing: {missing}"
        slowest = max(waits.values())
        if currently_in_test_context():
            target(float(slowest), label="slowest grant after healing (ms)")
            event(f"slowest grant after healing: {slowest // 1000 + 1} s or less")
        report = cell.check()
        assert report.ok, str(report.violation)


CellUnderFaults.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_cell_under_faults = CellUnderFaults.TestCase


@pytest.mark.soak
def test_cell_under_faults_long() -> None:
    run_state_machine_as_test(
        CellUnderFaults,
        settings=settings(max_examples=3_000, stateful_step_count=50, deadline=None),
    )


def test_takeover_by_the_standby_continues_with_higher_tokens():
    cell = Cell(7, holders=3, resources=1)
    cell.run(3_000)
    (first,) = cell.active()
    cell.want(10, "dock/0", 4_000)
    cell.run(5_000)
    before = max(
        g.token
        for g in cell.trace
        if getattr(g, "resource", "") == "dock/0" and hasattr(g, "expires_at")
    )
    cell.crash(first)
    cell.run(30_000)
    (second,) = cell.active()
    assert second != first
    cell.want(11, "dock/0", 4_000)
    cell.run(5_000)
    tokens = [
        g.token
        for g in cell.trace
        if getattr(g, "resource", "") == "dock/0" and hasattr(g, "expires_at")
    ]
    assert tokens[-1] > before
    assert cell.coord_authority[second].epoch > cell.last_epoch[first]
    assert cell.check().ok


def test_claims_are_granted_again_once_a_partition_heals():
    """Liveness, measured: the holders cut off from both coordinators get their grants after
    the cut is mended, within a few round trips and the queue ahead of them."""
    cell = Cell(3, holders=4, resources=2)
    cell.run(3_000)
    for h in cell.holders:
        for c in COORDINATORS:
            cell.net.cut.add(frozenset((h, c)))
    for i, h in enumerate(cell.holders):
        cell.want(h, cell.resources[i % 2], 60_000)
    cell.run(20_000)
    assert all(
        cell.members[h].state(r) is HolderState.CLAIMING
        for h in cell.holders
        for r in ["dock/0"]
        if h % 2 == 0
    )
    cell.net.cut.clear()
    wants = [(h, cell.resources[i % 2]) for i, h in enumerate(cell.holders)]
    for key in wants:  # these wants are still open: measure from the heal
        cell.hold_ms[key] = 2_000
    started = cell.now
    waits: dict[tuple[int, str], int] = {}
    while cell.now - started < 20_000 and len(waits) < len(wants):
        cell.run(50)
        for key in wants:
            if key in cell.granted_at and key not in waits:
                waits[key] = cell.granted_at[key] - started
    assert set(waits) == set(wants)
    # One holder per resource at once: the second in each queue waits for the first's 2 s.
    assert sorted(waits.values())[1] < 1_000 and max(waits.values()) < 2_000 + 2 * MAX_DRIFT + 1_000
    assert cell.check().ok


def clock_beyond_bound(holder_offset: int) -> Cell:
    """Holder 10 holds dock/0 and is cut off (it can neither renew nor release); holder 11
    claims it. Only the clock rule stands between them."""
    cell = Cell(5, holders=2, resources=1, offsets={10: holder_offset})
    cell.run(3_000)
    cell.want(10, "dock/0", 120_000)
    cell.run(1_000)
    assert cell.members[10].state("dock/0") is HolderState.HOLDING
    for c in COORDINATORS:
        cell.net.cut.add(frozenset((10, c)))
    cell.want(11, "dock/0", 120_000)
    cell.run(15_000)
    return cell


def test_clock_within_the_bound_keeps_them_apart():
    cell = clock_beyond_bound(-MAX_DRIFT)
    report = cell.check()
    assert report.ok and report.uses > 50
    assert {u.holder for u in cell.trace if hasattr(u, "local_start")} == {10, 11}


def test_clock_beyond_the_bound_is_caught():
    cell = clock_beyond_bound(-3 * MAX_DRIFT)
    report = cell.check()
    v = report.violation
    assert v is not None and v.rule is Rule.OVERLAP
    assert (v.resource, set(v.holders)) == ("dock/0", {10, 11})
    assert v.tokens[0] < v.tokens[1]  # the old grant's holder ran into the new one
    assert report.max_clock_difference > MAX_DRIFT


def paused_holder(fencing: bool) -> Cell:
    """Holder 10 decides an operation just inside its term, then stalls past its expiry; by
    the time the operation reaches the dock, holder 11 holds it and has used it."""
    cell = Cell(9, holders=2, resources=1, fencing=fencing)
    cell.run(3_000)
    cell.want(10, "dock/0", 120_000)
    cell.run(1_000)
    for c in COORDINATORS:
        cell.net.cut.add(frozenset((10, c)))
    cell.want(11, "dock/0", 120_000)
    usable_until = cell.members[10].usable_until("dock/0")
    assert usable_until is not None
    cell.run(usable_until - cell.local(10) - 150)
    cell.freeze(10, 3_000)
    cell.run(15_000)
    return cell


def test_fencing_guard_refuses_the_stalled_holder():
    report = paused_holder(fencing=True).check()
    assert report.ok, str(report.violation)


def test_without_the_fencing_guard_the_stalled_holder_is_caught():
    report = paused_holder(fencing=False).check()
    v = report.violation
    assert v is not None and v.rule is Rule.OVERLAP and set(v.holders) == {10, 11}


def test_random_runs_beyond_the_bound_are_caught():
    """The random harness itself finds violations once clocks leave the bound."""
    spread, caught = 4 * MAX_DRIFT, 0
    for seed in range(6):
        rng = random.Random(seed)
        # Holders' clocks run behind the coordinators' by ``spread``: more than the bound.
        offsets = {n: -spread // 2 if n >= 10 else spread // 2 for n in NODES}
        cell = Cell(seed, holders=HOLDERS, resources=1, offsets=offsets)
        cell.net.delay = (1, 30)
        for _ in range(40):
            for h in cell.holders:
                cell.want(h, "dock/0", rng.randint(500, 12_000))
            if rng.random() < 0.3:
                h = rng.choice(cell.holders)
                cell.net.isolated.symmetric_difference_update({h})
            cell.run(1_000)
        caught += not cell.check().ok
    assert caught >= 1
