"""Correlated-fault containment: the threshold table, quarantine, re-homing, claims refused, lift;
and the three policies together on a lineage fault in 30 nodes of one region."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fleetwire.protocol.coordination.commitments import CommitmentTracker, Send, TrackerConfig
from fleetwire.protocol.coordination.containment import (
    THRESHOLDS,
    Containment,
    EscalateCluster,
    Quarantined,
    Released,
    Threshold,
)
from fleetwire.protocol.coordination.escalation import Escalate, EscalationPolicy, Escalator, Fault
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    CommitmentState,
    ExceptionCode,
    ExceptionReport,
    Header,
    Scope,
    Terms,
    content_id,
    decode_message,
    encode_message,
)

T0 = 9_000_000
HOUR = 3_600_000
_seq = itertools.count(1)


def report(
    node: int, severity: int = 3, code: int = ExceptionCode.PRODUCTION_QUALITY
) -> ExceptionReport:
    return ExceptionReport(
        Header(node, T0, next(_seq)),
        code=int(code),
        severity=severity,
        scope=Scope.NODE,
        scope_id=node,
    )


def cell_with(lineages: dict[str, range], cell: int = 4) -> Containment:
    c = Containment(900, Scope.CELL, cell, itertools.count(1).__next__)
    for lineage, nodes in lineages.items():
        for node in nodes:
            c.advertise(node, lineage, cell)
    return c


def feed(c: Containment, nodes: Any, now: int = T0, severity: int = 3) -> list[Any]:
    actions: list[Any] = []
    for node in nodes:
        r = report(node, severity)
        actions += c.anomaly(r, content_id(r), now)
    return actions


def test_the_table_is_documented_in_the_module() -> None:
    import fleetwire.protocol.coordination.containment as module

    assert module.__doc__ is not None
    for scope, t in THRESHOLDS.items():
        (row,) = [
            line.split()
            for line in module.__doc__.splitlines()
            if line.split()[:1] == [scope.name.lower()] and line.split()[1].isdigit()
        ]
        documented = [int(row[1]) * HOUR, *map(int, row[3:6])]
        assert documented == [t.window_ms, t.min_nodes, t.min_share_percent, t.min_severity]


def test_below_the_thresholds_nothing_happens() -> None:
    c = cell_with({"A": range(1, 11), "B": range(11, 21)})
    assert feed(c, [11, 12]) == []  # two nodes: fewer than three
    assert feed(c, [1, 2, 3], severity=1) == []  # advisories only
    assert c.quarantined() == set()


def test_a_cluster_in_one_lineage_quarantines_its_nodes_and_escalates() -> None:
    c = cell_with({"A": range(1, 11), "B": range(11, 21)})
    feed(c, [11, 12])
    actions = feed(c, [13])
    quarantined = [a.node for a in actions if isinstance(a, Quarantined)]
    (up,) = [a for a in actions if isinstance(a, EscalateCluster)]
    assert quarantined == [11, 12, 13] and up.nodes == (11, 12, 13) and up.lineage == "B"
    assert (up.report.scope, up.report.scope_id, up.report.severity) == (Scope.CELL, 4, 4)
    assert len(up.report.header.references) == 3 and "lineage 'B'" in (up.report.detail or "")
    assert decode_message(encode_message(up.report)) == up.report
    assert not c.admits(12) and c.admits(1) and c.admits(14) and c.admits(999)
    # While the cluster lasts, another anomaly of B quarantines at once, without a new escalation.
    assert feed(c, [14]) == [Quarantined(14, "B", T0)]
    assert feed(c, [1]) == []  # lineage A is not affected


def test_the_share_of_the_lineage_must_be_reached_too() -> None:
    c = cell_with({"B": range(1, 21)})  # 20 nodes of B: 20% is four
    assert feed(c, [1, 2, 3]) == []
    assert len([a for a in feed(c, [4]) if isinstance(a, Quarantined)]) == 4


def test_anomalies_older_than_the_window_do_not_count() -> None:
    c = cell_with({"B": range(1, 11)})
    feed(c, [1, 2], now=T0)
    assert feed(c, [3], now=T0 + HOUR) == []
    c.tick(T0 + 2 * HOUR)
    assert feed(c, [4, 5], now=T0 + 2 * HOUR + 1) == []
    assert feed(c, [6], now=T0 + 2 * HOUR + 2)  # 4, 5, 6 inside one hour


def test_the_same_report_twice_counts_once() -> None:
    c = cell_with({"B": range(1, 11)})
    r = report(1)
    for _ in range(5):
        assert c.anomaly(r, content_id(r), T0) == []
    assert feed(c, [2]) == []


def test_lift_releases_and_the_lineage_is_judged_afresh() -> None:
    c = cell_with({"B": range(1, 11)})
    feed(c, [1, 2, 3])
    assert c.lift(T0 + 1, nodes=[2]) == [Released(2)]
    assert c.admits(2) and feed(c, [2], now=T0 + 2) == [Quarantined(2, "B", T0 + 2)]
    assert [a.node for a in c.lift(T0 + 3, lineage="B")] == [1, 2, 3]
    assert c.quarantined() == set() and feed(c, [4], now=T0 + 4) == []


def test_region_scope_uses_its_own_row() -> None:
    region = Containment(900, Scope.REGION, 1, itertools.count(1).__next__)
    assert region.threshold == THRESHOLDS[Scope.REGION]
    for node in range(1, 41):
        region.advertise(node, "B", cell=node % 4)
    assert feed(region, [1, 2, 3, 4]) == []
    assert len([a for a in feed(region, [5]) if isinstance(a, Quarantined)]) == 5
    with pytest.raises(LocalProtocolError):
        Containment(1, Scope.NODE, 1, itertools.count().__next__)


def test_known_nodes_are_bounded() -> None:
    c = Containment(900, Scope.CELL, 4, itertools.count().__next__, max_nodes=2)
    c.advertise(1, "A")
    c.advertise(2, "A")
    c.advertise(2, "B")  # an update, not a new node
    with pytest.raises(LocalProtocolError, match="limit"):
        c.advertise(3, "A")


def test_commitments_of_quarantined_nodes_are_rehomed_to_other_lineages() -> None:
    c = cell_with({"A": range(1, 4), "B": range(11, 21)})
    c.advertise(30, "C", cell=5)  # another cell: used only when the cell has no one else
    watcher = CommitmentTracker(900, itertools.count().__next__, TrackerConfig(observe_all=True))
    offers = []
    for promisor in (11, 12, 13, 14):
        t = CommitmentTracker(promisor, itertools.count().__next__)
        _, actions = t.offer(Terms(promisor, 2, "deliver/alloy", 5, "t", T0 + HOUR), T0)
        offers += [a.message for a in actions if isinstance(a, Send)]
    for offer in offers:
        watcher.receive(offer, T0)
    feed(c, [11, 12, 13])
    view = [(cid, watcher.terms(cid), state) for cid, state in watcher.commitments().items()]
    plan = c.rehome((cid, t, s) for cid, t, s in view if t is not None)
    moved = {p.from_node: p.to_node for p in plan}
    assert set(moved) == {11, 12, 13}  # node 14 is not quarantined
    assert set(moved.values()) == {1, 3}  # lineage A, not the promisee (2), spread out
    assert all(p.terms.promisor == p.to_node and p.terms.promisee == 2 for p in plan)
    done = [(ContentId.of(b"x"), Terms(11, 2, "x", 1, "t", T0), CommitmentState.FULFILLED)]
    assert c.rehome(done) == []
    # Only nodes that can do the work take it over; none able, and it stays where it is.
    c.lift(T0 + 1, nodes=[11, 12, 13])
    feed(c, [11, 12, 13], now=T0 + 2)
    only_30 = c.rehome(((cid, t, s) for cid, t, s in view if t is not None), lambda n, t: n == 30)
    assert {p.to_node for p in only_30} == {30}
    assert c.rehome(((cid, t, s) for cid, t, s in view if t is not None), lambda n, t: False) == []


# --- the three policies together -----------------------------------------------------------


def test_a_lineage_fault_in_30_nodes_of_one_region_is_one_incident_and_stays_there() -> None:
    """Sans-IO rehearsal of the fleet scenario: 2 regions × 3 cells × 40 nodes, lineages A/B/C;
    lineage B fails in 30 nodes of region 1 (10 in each of its cells)."""
    policy = EscalationPolicy(window_ms=HOUR, hold_ms=30_000)
    cells: dict[int, tuple[Escalator, Containment]] = {}
    regions = {
        r: Escalator(800 + r, Scope.REGION, r, itertools.count(1).__next__, policy) for r in (1, 2)
    }
    region_of: dict[int, int] = {}
    lineage: dict[int, str] = {}
    for cell in range(1, 7):
        region_of[cell] = 1 if cell <= 3 else 2
        cells[cell] = (
            Escalator(900 + cell, Scope.CELL, cell, itertools.count(1).__next__, policy),
            Containment(900 + cell, Scope.CELL, cell, itertools.count(1).__next__),
        )
        for i in range(40):
            node = cell * 100 + i
            lineage[node] = "ABC"[i % 3]
            cells[cell][1].advertise(node, lineage[node], cell)
    failing = [
        n for cell in (1, 2, 3) for n in range(cell * 100, cell * 100 + 40) if lineage[n] == "B"
    ][:30]
    upward: dict[int, list[ExceptionReport]] = {1: [], 2: []}
    quarantined: set[int] = set()
    now = T0
    for node in failing:
        now += 1_000
        cell = node // 100
        r = report(node)
        escalator, containment = cells[cell]
        for action in escalator.receive(Fault(r, content_id(r), lineage[node]), now):
            if isinstance(action, Escalate):
                upward[region_of[cell]].append(action.report)
        for action in containment.anomaly(r, content_id(r), now):
            if isinstance(action, Quarantined):
                quarantined.add(action.node)
            elif isinstance(action, EscalateCluster):
                upward[region_of[cell]].append(action.report)
    for escalator, _ in cells.values():
        for action in escalator.tick(now + 60_000):
            if isinstance(action, Escalate):
                upward[region_of[escalator.scope_id]].append(action.report)
    assert quarantined == set(failing)
    assert upward[2] == []  # the other region hears nothing of it
    top: list[ExceptionReport] = []
    for up in upward[1]:
        top += [
            a.report
            for a in regions[1].receive(Fault(up, content_id(up), "B"), now + 61_000)
            if isinstance(a, Escalate)
        ]
    top += [
        a.report for a in regions[1].tick(now + 200_000) if isinstance(a, Escalate) and not a.resend
    ]
    assert len(top) == 1 and top[0].scope is Scope.REGION  # one incident for the region
    assert regions[2].incidents() == []


def test_threshold_is_a_value() -> None:
    assert Threshold(1, 2, 3, 4) == Threshold(1, 2, 3, 4)
