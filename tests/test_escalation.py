"""Exception escalation (spec §6.3): one incident per fault signature and window, holds, rate
limits, acknowledgement, closing, and the region level above the cell."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fleetwire.protocol.coordination.escalation import (
    TRANSITIONS,
    Closed,
    Escalate,
    EscalationPolicy,
    Escalator,
    Fault,
    IncidentState,
    Opened,
    Signature,
)
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    ExceptionCode,
    ExceptionReport,
    Header,
    Scope,
    content_id,
    decode_message,
    encode_message,
)
from hypothesis import given
from hypothesis import strategies as st

T0 = 5_000_000
CELL, REGION, COORD = 4, 1, 900
POLICY = EscalationPolicy(
    window_ms=100_000, hold_ms=1_000, ack_timeout_ms=10_000, rate_window_ms=100_000
)
_sequence = itertools.count(1)


def fault(
    node: int,
    code: int = ExceptionCode.THERMAL,
    severity: int = 3,
    lineage: str = "B",
    at: int = T0,
    n: int = 0,
) -> Fault:
    report = ExceptionReport(
        Header(node, at, next(_sequence) + n),
        code=int(code),
        severity=severity,
        scope=Scope.NODE,
        scope_id=node,
        affects=(ContentId.of(f"commitment of {node}".encode()),),
    )
    return Fault(report, content_id(report), lineage)


def escalator(
    policy: EscalationPolicy = POLICY, scope: Scope = Scope.CELL, scope_id: int = CELL
) -> Escalator:
    return Escalator(COORD, scope, scope_id, itertools.count(1).__next__, policy)


def escalations(actions: list[Any]) -> list[Escalate]:
    """First sends (re-sends of unacknowledged escalations repeat the same report)."""
    return [a for a in actions if isinstance(a, Escalate) and not a.resend]


def run(esc: Escalator, until: int, step: int = 500, start: int = T0) -> list[Any]:
    actions: list[Any] = []
    for now in range(start, until + 1, step):
        actions.extend(esc.tick(now))
    return actions


def test_forty_nodes_of_one_lineage_become_one_incident_listing_them() -> None:
    esc = escalator()
    actions: list[Any] = []
    for i, node in enumerate(range(100, 140)):
        actions.extend(esc.receive(fault(node), T0 + 10 * i))  # a burst over 0.4 s
    actions.extend(run(esc, T0 + 5_000))
    (up,) = escalations(actions)
    report = up.report
    assert (report.scope, report.scope_id, report.code, report.severity) == (Scope.CELL, CELL, 1, 3)
    assert len(report.header.references) == 40 and len(report.affects) == 40
    assert up.incident.nodes == list(range(100, 140)) and up.incident.node_count == 40
    assert report.detail is not None and report.detail.startswith(
        "40 nodes of lineage 'B': 100, 101"
    )
    assert decode_message(encode_message(report)) == report  # a valid v1 report
    assert sum(isinstance(a, Opened) for a in actions) == 1


def test_a_minor_fault_is_contained_and_closes_with_its_window() -> None:
    esc = escalator()
    actions = esc.receive(fault(100, severity=2), T0)
    actions += run(esc, T0 + 100_000)
    assert escalations(actions) == []
    (closed,) = [a for a in actions if isinstance(a, Closed)]
    assert not closed.escalated and closed.incident.state is IncidentState.CLOSED
    assert esc.incidents() == [] and esc.next_deadline() is None


def test_severity_four_escalates_after_the_hold_and_five_at_once() -> None:
    esc = escalator()
    assert escalations(esc.receive(fault(100, severity=4), T0)) == []
    assert esc.next_deadline() == T0 + 1_000
    assert escalations(esc.tick(T0 + 999)) == []
    assert len(escalations(esc.tick(T0 + 1_000))) == 1
    (up,) = escalations(esc.receive(fault(200, code=ExceptionCode.POWER, severity=5), T0 + 2_000))
    assert up.report.severity == 5


def test_a_loss_in_a_held_incident_sends_it_at_once() -> None:
    esc = escalator()
    esc.receive(fault(100, severity=4), T0)
    (up,) = escalations(esc.receive(fault(101, severity=5), T0 + 10))
    assert up.report.severity == 5 and up.incident.nodes == [100, 101]


def test_signatures_differ_by_lineage_and_code_and_unknown_codes_are_other() -> None:
    esc = escalator()
    for lineage, code in [("A", 1), ("B", 1), ("B", 2), ("B", 999), ("B", 0)]:
        esc.receive(fault(100, code=code, lineage=lineage), T0)
    assert {i.signature for i in esc.incidents()} == {
        Signature(1, "A"),
        Signature(1, "B"),
        Signature(2, "B"),
        Signature(0, "B"),
    }


def test_the_same_report_twice_is_counted_once() -> None:
    esc = escalator()
    one = fault(100)
    assert esc.receive(one, T0) and esc.receive(one, T0 + 1) == []
    (incident,) = esc.incidents()
    assert incident.reports == [one.content_id] and incident.node_count == 1


def test_the_same_node_again_is_listed_once() -> None:
    esc = escalator()
    for i in range(5):
        esc.receive(fault(100), T0 + i)
    (incident,) = esc.incidents()
    assert (
        incident.nodes == [100]
        and len(incident.reports) == 5
        and incident.state is IncidentState.OPEN
    )


def test_unacknowledged_escalations_are_resent_and_acknowledgement_stops_them() -> None:
    esc = escalator()
    (up,) = escalations(esc.receive(fault(100, severity=5), T0))
    resent = [
        a.report
        for a in run(esc, T0 + 40_000, step=1_000, start=T0 + 1)
        if isinstance(a, Escalate) and a.resend
    ]
    assert resent == [up.report, up.report]  # at +10 s and +30 s: backoff doubles
    assert esc.acknowledge(content_id(up.report), T0 + 40_000) == []
    assert esc.acknowledge(content_id(up.report), T0 + 40_001) == []  # idempotent
    assert up.incident.state is IncidentState.ACKNOWLEDGED
    actions = run(esc, T0 + 100_000, step=1_000, start=T0 + 41_000)
    assert escalations(actions) == []
    assert [a.escalated for a in actions if isinstance(a, Closed)] == [True]


def test_an_unacknowledged_incident_outlives_its_window_and_a_new_one_opens() -> None:
    esc = escalator()
    (first,) = escalations(esc.receive(fault(100, severity=5), T0))
    actions = esc.receive(fault(101, severity=5), T0 + 100_000)
    (second,) = escalations(actions)
    assert second.incident is not first.incident and second.incident.opened_at == T0 + 100_000
    assert first.incident.state is IncidentState.ESCALATED  # still awaiting acknowledgement
    # Its window is over, so the acknowledgement closes it.
    assert esc.acknowledge(content_id(first.report), T0 + 100_001) == [Closed(first.incident, True)]


def test_escalations_are_rate_limited_most_severe_first() -> None:
    esc = escalator(
        EscalationPolicy(max_escalations=3, rate_window_ms=50_000, hold_ms=0, window_ms=200_000)
    )
    actions: list[Any] = []
    for code in range(8):
        actions += esc.receive(fault(100 + code, code=code, severity=4), T0)
    actions += esc.receive(fault(300, code=7, lineage="C", severity=5), T0 + 1)
    sent = escalations(actions)
    assert len(sent) == 3 and sent[0].report.severity == 4  # the first three went before the 5
    later = escalations(run(esc, T0 + 50_001, step=50_000, start=T0 + 50_001))
    assert [e.report.severity for e in later] == [5, 4, 4]
    assert len(escalations(run(esc, T0 + 200_000, step=50_000, start=T0 + 100_001))) == 3


def test_close_by_the_caller_and_moves_outside_the_table_are_refused() -> None:
    esc = escalator()
    esc.receive(fault(100), T0)
    (incident,) = esc.incidents()
    (closed,) = esc.close(incident, T0 + 1)
    assert closed == Closed(incident, False) and esc.close(incident, T0 + 2) == []
    assert IncidentState.ACKNOWLEDGED not in TRANSITIONS[IncidentState.OPEN].values()
    with pytest.raises(LocalProtocolError):
        Escalator(COORD, Scope.NODE, 1, itertools.count().__next__)


def test_incidents_are_bounded() -> None:
    esc = escalator(EscalationPolicy(max_incidents=4))
    for i in range(10):
        esc.receive(fault(100 + i, lineage=f"L{i}"), T0 + i)
    assert len(esc.incidents()) == 4
    assert {i.signature.lineage for i in esc.incidents()} == {"L6", "L7", "L8", "L9"}


def test_a_burst_in_a_cell_reaches_the_region_as_one_report_per_signature() -> None:
    """The seeds' 10-100x exception bursts stay inside the cell: the region sees one report."""
    cell, region = escalator(), escalator(scope=Scope.REGION, scope_id=REGION)
    up: list[Escalate] = []
    reports_in = 0
    for round_ in range(25):  # 40 nodes report every 2 s for 50 s: 1,000 reports
        for node in range(100, 140):
            reports_in += 1
            up += escalations(
                cell.receive(fault(node, at=T0 + 2_000 * round_), T0 + 2_000 * round_)
            )
    up += escalations(run(cell, T0 + 99_000, step=1_000, start=T0 + 50_000))
    assert reports_in == 1_000 and len(up) == 1
    # The region groups cells' escalations the same way; the lineage comes with them.
    escalated = up[0].report
    top = escalations(region.receive(Fault(escalated, content_id(escalated), "B"), T0 + 60_000))
    top += escalations(run(region, T0 + 70_000, start=T0 + 60_000))
    assert top == []  # one cell, severity 3: the region contains it
    for cell_id in (5, 6):
        other = ExceptionReport(
            Header(cell_id, T0, 1), code=1, severity=3, scope=Scope.CELL, scope_id=cell_id
        )
        top += escalations(region.receive(Fault(other, content_id(other), "B"), T0 + 61_000))
    top += escalations(run(region, T0 + 70_000, start=T0 + 61_000))
    (fleet,) = top
    assert fleet.report.scope is Scope.REGION and "3 cells of lineage 'B'" in (
        fleet.report.detail or ""
    )


faults = st.lists(
    st.tuples(
        st.integers(0, 300_000),  # when
        st.integers(100, 110),  # node
        st.sampled_from([1, 2, 5]),  # code
        st.sampled_from(["A", "B"]),  # lineage
        st.integers(1, 5),  # severity
    ),
    max_size=60,
)


@given(faults)
def test_exactly_one_incident_per_signature_inside_its_window(
    stream: list[tuple[int, int, int, str, int]],
) -> None:
    esc = escalator(
        EscalationPolicy(window_ms=100_000, hold_ms=1_000, max_escalations=4, rate_window_ms=30_000)
    )
    severe: set[ContentId] = set()
    incidents_of: dict[Signature, list[int]] = {}
    for i, (at, node, code, lineage, severity) in enumerate(sorted(stream)):
        f = fault(node, code=code, severity=severity, lineage=lineage, at=at, n=i)
        for action in esc.receive(f, T0 + at):
            if isinstance(action, Opened):
                incidents_of.setdefault(action.incident.signature, []).append(
                    action.incident.opened_at
                )
        if severity >= 4:
            severe.add(f.content_id)
    run(esc, T0 + 1_000_000, step=5_000, start=T0 + 300_000)
    sent: dict[Signature, list[int]] = {}
    for _, incident in esc.escalations:
        sent.setdefault(incident.signature, []).append(incident.opened_at)
    for signature, opened in incidents_of.items():
        # Incidents of one signature never overlap: each opens after the last one's window.
        assert all(b - a >= 100_000 for a, b in itertools.pairwise(opened))
        # And each escalates at most once.
        assert len(sent.get(signature, [])) == len(set(sent.get(signature, [])))
    listed = {cid for _, incident in esc.escalations for cid in incident.reports}
    assert severe <= listed  # every severe fault went up, in exactly one incident
    assert len(esc.escalations) == len({id(i) for _, i in esc.escalations})


def test_the_escalated_report_names_its_lineage_and_a_close_by_content_id_closes_it_once() -> None:
    esc = escalator()
    (up,) = escalations(esc.receive(fault(100, severity=5), T0))
    assert dict(up.report.extensions) == {15: "B"}  # spec/v2/faults.md section 0
    assert decode_message(encode_message(up.report)) == up.report  # still a valid v1 report
    assert esc.close_escalation(ContentId.of(b"some other report"), T0 + 1) == []
    (closed,) = esc.close_escalation(content_id(up.report), T0 + 1)
    assert isinstance(closed, Closed) and closed.escalated
    assert up.incident.state is IncidentState.CLOSED
    assert esc.close_escalation(content_id(up.report), T0 + 2) == []  # idempotent
