"""The replay guard (sans-IO) and the role table: each rule, and properties over arrival orders."""

from __future__ import annotations

import pytest
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import ExceptionReport, Header, LeaseClaim, LeaseGrant, Scope
from fleetwire.protocol.replay import Accept, Refuse, ReplayCode, ReplayGuard, ReplayPolicy
from fleetwire.protocol.roles import check_role
from fleetwire.protocol.trust import Credential, Role, WrongRole
from hypothesis import given
from hypothesis import strategies as st

from .fleet import node_key

NOW = 900_000_000_000
POLICY = ReplayPolicy(max_age=10_000, max_future=1_000, max_per_issuer=8)


def cid(n: int) -> bytes:
    return ContentId.of(b"%d" % n).raw


def test_accepts_once_and_names_the_refusal() -> None:
    guard = ReplayGuard(POLICY)
    assert isinstance(guard.check(1, 5, NOW, cid(5), NOW), Accept)
    again = guard.check(1, 5, NOW, cid(5), NOW)
    assert isinstance(again, Refuse) and again.code is ReplayCode.DUPLICATE
    other = guard.check(1, 5, NOW, cid(6), NOW)
    assert isinstance(other, Refuse) and other.code is ReplayCode.SEQUENCE_REUSED
    assert isinstance(guard.check(2, 5, NOW, cid(5), NOW), Accept)  # per issuer
    assert guard.high_water_mark(1) == 5 and guard.high_water_mark(3) is None


@pytest.mark.parametrize(
    ("issued_at", "code"),
    [
        (NOW + 1_001, ReplayCode.IN_FUTURE),
        (NOW - 10_001, ReplayCode.TOO_OLD),
        (0, ReplayCode.TOO_OLD),
        ((1 << 64) - 1, ReplayCode.IN_FUTURE),
    ],
)
def test_the_issued_at_window(issued_at: int, code: ReplayCode) -> None:
    verdict = ReplayGuard(POLICY).check(1, 1, issued_at, cid(1), NOW)
    assert isinstance(verdict, Refuse) and verdict.code is code
    assert isinstance(ReplayGuard(POLICY).check(1, 1, NOW + 1_000, cid(1), NOW), Accept)
    assert isinstance(ReplayGuard(POLICY).check(1, 1, NOW - 10_000, cid(1), NOW), Accept)


def test_light_time_widens_the_past_bound() -> None:
    assert POLICY.widened(5_000).max_age == 15_000
    assert POLICY.widened(-1) == POLICY


def test_nothing_before_not_before() -> None:
    guard = ReplayGuard(POLICY, not_before=NOW)
    verdict = guard.check(1, 1, NOW - 1, cid(1), NOW)
    assert isinstance(verdict, Refuse) and verdict.code is ReplayCode.TOO_OLD


def test_out_of_order_within_the_window_is_accepted_and_the_floor_rises_past_the_cap() -> None:
    guard = ReplayGuard(POLICY)
    for sequence in (100, 90, 95, 91):  # late arrivals, as over DTN
        assert isinstance(guard.check(1, sequence, NOW, cid(sequence), NOW), Accept)
    floors = []
    for sequence in range(101, 106):
        verdict = guard.check(1, sequence, NOW, cid(sequence), NOW)
        assert isinstance(verdict, Accept)
        floors.append(verdict.floor)
    assert floors == [None, None, None, None, 90]  # nine records > 8: the lowest goes
    old = guard.check(1, 90, NOW, cid(90), NOW)
    assert isinstance(old, Refuse) and old.code is ReplayCode.SEQUENCE_OLD
    assert isinstance(guard.check(1, 92, NOW, cid(92), NOW), Accept)  # above the floor: fine


def test_prune_lets_go_only_what_the_time_window_covers() -> None:
    guard = ReplayGuard(POLICY)
    guard.check(1, 1, NOW, cid(1), NOW)
    guard.check(1, 2, NOW + 5_000, cid(2), NOW + 5_000)
    assert guard.prune(NOW + 10_000) == 1 and guard.remembered() == 1
    stale = guard.check(1, 1, NOW, cid(1), NOW + 10_001)  # record gone, time check holds
    assert isinstance(stale, Refuse) and stale.code is ReplayCode.TOO_OLD
    # The one left is let go in its turn (the issuer's next due time was read at the prune).
    assert guard.prune(NOW + 14_999) == 0 and guard.prune(NOW + 15_000) == 1
    assert guard.remembered() == 0


def _windows(guard: ReplayGuard) -> dict[int, list[tuple[int, int]]]:
    """Every issuer's remembered (sequence, keep_until), in order (the guard's state as a
    reader sees it: what is refused as a duplicate, and for how long)."""
    return {
        issuer: sorted((seen.sequence, seen.keep_until) for seen in state.window.values())
        for issuer, state in guard._issuers.items()
    }


@given(
    st.lists(
        st.one_of(
            # a message: issuer, sequence, how long before ``now`` it was issued
            st.tuples(st.just("check"), st.integers(1, 3), st.integers(0, 30), st.integers(0, 9_000)),
            st.tuples(st.just("prune"), st.just(0), st.just(0), st.just(0)),
            st.tuples(st.just("later"), st.just(0), st.just(0), st.integers(1, 6_000)),
        ),
        max_size=120,
    )
)
def test_prune_lets_go_exactly_what_a_full_reading_would(
    steps: list[tuple[str, int, int, int]],
) -> None:
    # The guard reads only the windows of issuers whose earliest record is due; a reading of
    # every record at every prune is the reference: the same records go, the same count.
    policy = ReplayPolicy(max_age=10_000, max_future=1_000, max_per_issuer=6)
    guard = ReplayGuard(policy)
    records: dict[tuple[int, int], int] = {}  # the reference: (issuer, sequence) -> keep_until
    now = NOW
    for kind, issuer, sequence, ago in steps:
        if kind == "check":
            verdict = guard.check(issuer, sequence, now - ago, cid(sequence), now)
            if isinstance(verdict, Accept):
                records[(issuer, sequence)] = verdict.seen.keep_until
                if verdict.floor is not None:
                    for key in [k for k in records if k[0] == issuer and k[1] <= verdict.floor]:
                        del records[key]
        elif kind == "later":
            now += ago
        else:
            stale = [key for key, keep_until in records.items() if keep_until <= now]
            for key in stale:
                del records[key]
            assert guard.prune(now) == len(stale)
        expected: dict[int, list[tuple[int, int]]] = {}
        for (who, number), keep_until in sorted(records.items()):
            expected.setdefault(who, []).append((number, keep_until))
        assert {who: window for who, window in _windows(guard).items() if window} == expected


def test_restore_brings_the_memory_back() -> None:
    first = ReplayGuard(POLICY)
    kept = [v.seen for s in (3, 4) if isinstance(v := first.check(1, s, NOW, cid(s), NOW), Accept)]
    second = ReplayGuard(POLICY)
    second.restore(kept, {1: 2})
    for sequence, code in ((3, ReplayCode.DUPLICATE), (2, ReplayCode.SEQUENCE_OLD)):
        verdict = second.check(1, sequence, NOW, cid(sequence), NOW)
        assert isinstance(verdict, Refuse) and verdict.code is code


@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(0, 40)), max_size=200),
    st.integers(1, 64),
)
def test_any_arrival_order_acts_each_message_at_most_once(
    arrivals: list[tuple[int, int]], cap: int
) -> None:
    guard = ReplayGuard(ReplayPolicy(max_age=10_000, max_future=1_000, max_per_issuer=cap))
    accepted: list[tuple[int, int]] = []
    for issuer, sequence in arrivals:
        if isinstance(guard.check(issuer, sequence, NOW, cid(sequence), NOW), Accept):
            accepted.append((issuer, sequence))
    assert len(accepted) == len(set(accepted))  # never twice
    assert guard.remembered() <= 3 * cap  # memory bounded per issuer
    # Whatever arrived first of each (issuer, sequence) is accepted unless the floor passed it.
    if cap >= 41:
        assert set(accepted) == set(arrivals)


# --- roles (spec §8) ---------------------------------------------------------------------


def credential(node: int, *roles: Role, cell: int | None = None, region: int | None = None) -> Credential:
    return Credential(node=node, public_key=node_key(node).public, roles=frozenset(roles),
                      not_before=0, not_after=NOW * 2, serial=node, issuer=bytes(34),
                      cell=cell, region=region)  # fmt: skip


def header(issuer: int) -> Header:
    return Header(issuer=issuer, issued_at=NOW, sequence=1)


GRANT = LeaseGrant(header(5), "dock/7", 3, ContentId.of(b"c"), 1, 60_000, NOW + 60_000)


def test_a_grant_needs_the_cell_coordinator_of_the_readers_cell() -> None:
    with pytest.raises(WrongRole, match="cell coordinator"):
        check_role(GRANT, credential(5, Role.NODE))
    check_role(GRANT, credential(5, Role.NODE, Role.CELL_COORDINATOR, cell=1), reader_cell=1)
    with pytest.raises(WrongRole, match="cell 2"):
        check_role(GRANT, credential(5, Role.CELL_COORDINATOR, cell=2), reader_cell=1)


def test_a_region_exception_needs_that_regions_coordinator() -> None:
    report = ExceptionReport(header(5), code=1, severity=4, scope=Scope.REGION, scope_id=7)
    with pytest.raises(WrongRole):
        check_role(report, credential(5, Role.CELL_COORDINATOR, cell=1))
    with pytest.raises(WrongRole):
        check_role(report, credential(5, Role.REGION_COORDINATOR, region=8))
    check_role(report, credential(5, Role.REGION_COORDINATOR, region=7))


def test_an_auditor_reads_but_does_not_write() -> None:
    claim = LeaseClaim(header(5), "dock/7", 60_000)
    with pytest.raises(WrongRole, match="node or coordinator"):
        check_role(claim, credential(5, Role.AUDITOR))
    check_role(claim, credential(5, Role.NODE))
    check_role(claim, credential(5, Role.REGION_COORDINATOR, region=1))
