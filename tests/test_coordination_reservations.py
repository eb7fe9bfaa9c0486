"""Hierarchical reservations and conservative mode: blocks never over-commit a pool, sub-leases
stay within their block, and a cell cut off for 30 days grants only inside what it holds."""

from __future__ import annotations

import attrs
from fleetwire.protocol.coordination import invariants as inv
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.reservations import (
    MODE_TRANSITIONS,
    BlockGrant,
    BlockRelease,
    BlockRenew,
    BlockRequest,
    CellReservations,
    Mode,
    ModeChanged,
    ModeInput,
    ReservationAuthority,
    ReservationConfig,
    Send,
    SubLease,
    SubLeaseRefusal,
    SubLeaseRefused,
    diagram,
)
from fleetwire.protocol.messages import Header
from hypothesis import given
from hypothesis import strategies as st

DAY = 86_400_000
DRIFT = 1_000
REGION = 100
CONFIG = ReservationConfig(
    max_drift_ms=DRIFT,
    max_term_ms=40 * DAY,
    renew_lead_ms=5 * DAY,
    retry_ms=DAY // 4,
    silence_ms=2 * DAY,
    freshness=FreshnessWindow(max_age_ms=60 * DAY, max_skew_ms=DRIFT),
)


class Writer:
    def __init__(self, node: int) -> None:
        self.node, self.sequence = node, 0

    def header(self, now: int) -> Header:
        self.sequence += 1
        return Header(self.node, now, self.sequence)


def grants(actions):
    return [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, BlockGrant)]


def test_region_grants_blocks_until_the_pool_is_committed():
    region = ReservationAuthority(REGION, {"feed/A": 100}, CONFIG)
    a, b = Writer(1), Writer(2)
    (ga,) = grants(region.receive(BlockRequest(a.header(0), "feed/A", 60, DAY), 0))
    assert (ga.cell, ga.amount, ga.expires_at) == (1, 60, DAY)
    assert grants(region.receive(BlockRequest(b.header(0), "feed/A", 50, DAY), 0)) == []
    (gb,) = grants(region.receive(BlockRequest(b.header(1), "feed/A", 40, DAY), 1))
    assert gb.fencing_token > ga.fencing_token and region.committed("feed/A") == 100


def test_duplicate_request_reserves_once():
    region = ReservationAuthority(REGION, {"feed/A": 100}, CONFIG)
    request = BlockRequest(Writer(1).header(0), "feed/A", 60, DAY)
    assert len(grants(region.receive(request, 0))) == 1
    assert grants(region.receive(request, 5)) == []
    assert region.committed("feed/A") == 60


def test_lapsed_block_counts_until_expiry_plus_drift_and_renew_keeps_the_token():
    region = ReservationAuthority(REGION, {"feed/A": 100}, CONFIG)
    a = Writer(1)
    (g,) = grants(region.receive(BlockRequest(a.header(0), "feed/A", 100, DAY), 0))
    (r,) = grants(
        region.receive(BlockRenew(a.header(10), "feed/A", g.block, g.fencing_token, DAY), 10)
    )
    assert r.fencing_token == g.fencing_token and r.expires_at == DAY + 10
    region.tick(DAY + 10)
    assert region.committed("feed/A") == 100  # lapsed, not drained
    stale = BlockRenew(a.header(DAY + 20), "feed/A", g.block, g.fencing_token, DAY)
    assert grants(region.receive(stale, DAY + 20)) == []  # a lapsed block is not renewed
    region.tick(DAY + 10 + DRIFT)
    assert region.committed("feed/A") == 0


def test_release_frees_at_once():
    region = ReservationAuthority(REGION, {"feed/A": 100}, CONFIG)
    a = Writer(1)
    (g,) = grants(region.receive(BlockRequest(a.header(0), "feed/A", 100, DAY), 0))
    region.receive(BlockRelease(a.header(1), "feed/A", g.block, g.fencing_token), 1)
    assert region.committed("feed/A") == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["request", "renew", "release", "wait"]),
            st.integers(1, 4),
            st.integers(1, 70),
            st.integers(1, 3 * DAY),
        ),
        max_size=60,
    )
)
def test_region_never_commits_more_than_the_pool(steps):
    region = ReservationAuthority(REGION, {"feed/A": 100}, CONFIG)
    writers = {n: Writer(n) for n in range(1, 5)}
    held: dict[str, BlockGrant] = {}
    released: set[str] = set()
    now = 0
    for kind, cell, amount, ms in steps:
        w = writers[cell]
        if kind == "request":
            actions = region.receive(BlockRequest(w.header(now), "feed/A", amount, ms), now)
        elif kind in ("renew", "release") and held:
            g = sorted(held.values(), key=lambda g: g.block)[amount % len(held)]
            w = writers[g.cell]
            message = (
                BlockRenew(w.header(now), "feed/A", g.block, g.fencing_token, ms)
                if kind == "renew"
                else BlockRelease(w.header(now), "feed/A", g.block, g.fencing_token)
            )
            actions = region.receive(message, now)
            if kind == "release" and message.block in region.blocks():
                pass
            elif kind == "release":
                released.add(message.block)
        else:
            now += ms
            actions = region.tick(now)
        for g in grants(actions):
            held[g.block] = g
        live = region.blocks()
        assert sum(amount for _, amount, _ in live.values()) <= 100
        # A block is never freed early: until released, it counts to its expiry + drift.
        for name, g in held.items():
            if name not in released and now < g.expires_at + DRIFT:
                assert name in live


def cell_with_block(amount=100, now=0, config=CONFIG):
    region = ReservationAuthority(REGION, {"feed/A": 1_000}, config)
    cell = CellReservations(7, REGION, config, now)
    (send,) = [a for a in cell.sublease(20, "feed/A", amount, DAY, now) if isinstance(a, Send)]
    (grant,) = grants(region.receive(send.message, now))
    cell.receive(grant, now + 10)
    return region, cell, grant


def test_sub_leases_never_exceed_their_block_and_end_inside_it():
    _, cell, grant = cell_with_block(100)
    (a,) = [x for x in cell.sublease(20, "feed/A", 60, 100 * DAY, DAY) if isinstance(x, SubLease)]
    assert a.expires_at == grant.expires_at - DRIFT  # within the block by every clock
    (b,) = [x for x in cell.sublease(21, "feed/A", 40, DAY, DAY) if isinstance(x, SubLease)]
    assert cell.in_use(a.block, DAY) == 100
    refused = [
        x for x in cell.sublease(22, "feed/A", 1, DAY, DAY) if isinstance(x, SubLeaseRefused)
    ]
    assert refused and refused[0].reason is SubLeaseRefusal.WAITING
    cell.end_sublease(b.id)
    assert any(isinstance(x, SubLease) for x in cell.sublease(22, "feed/A", 40, DAY, DAY))


def test_expired_sub_lease_counts_until_drift_has_passed():
    _, cell, _ = cell_with_block(100)
    assert any(isinstance(x, SubLease) for x in cell.sublease(20, "feed/A", 100, 1_000, 0))
    assert not any(isinstance(x, SubLease) for x in cell.sublease(21, "feed/A", 1, DAY, 1_500))
    assert any(isinstance(x, SubLease) for x in cell.sublease(21, "feed/A", 1, DAY, 2_000))


def test_cell_renews_its_blocks_ahead_of_expiry():
    quiet = attrs.evolve(CONFIG, probe_ms=100 * DAY, silence_ms=100 * DAY)
    region, cell, grant = cell_with_block(100, config=quiet)
    due = grant.expires_at - DRIFT - CONFIG.renew_lead_ms
    assert not any(isinstance(a, Send) for a in cell.tick(due - 1))
    (renew,) = [a.message for a in cell.tick(due) if isinstance(a, Send)]
    assert isinstance(renew, BlockRenew) and renew.fencing_token == grant.fencing_token
    (again,) = grants(region.receive(renew, due))
    cell.receive(again, due + 10)
    assert cell.blocks()[grant.block][1] == again.expires_at - DRIFT


def test_conservative_mode_grants_inside_reservations_and_asks_for_nothing():
    _, cell, _ = cell_with_block(100)
    changes = [a for a in cell.tick(2 * DAY + 10) if isinstance(a, ModeChanged)]
    assert changes == [ModeChanged(Mode.CONSERVATIVE, 2 * DAY + 10)]
    assert any(isinstance(a, SubLease) for a in cell.sublease(20, "feed/A", 50, DAY, 3 * DAY))
    actions = cell.sublease(21, "feed/A", 80, DAY, 3 * DAY)
    assert [a.reason for a in actions if isinstance(a, SubLeaseRefused)] == [
        SubLeaseRefusal.CONSERVATIVE
    ]
    assert not any(isinstance(a, Send) and isinstance(a.message, BlockRequest) for a in actions)


def test_silence_is_broken_by_an_early_renewal_before_conservative_mode():
    region, cell, _grant = cell_with_block(100)
    assert not any(isinstance(a, Send) for a in cell.tick(DAY))
    (probe,) = [a.message for a in cell.tick(DAY + 10) if isinstance(a, Send)]
    assert isinstance(probe, BlockRenew)
    (answer,) = grants(region.receive(probe, DAY + 10))
    cell.receive(answer, DAY + 20)
    assert not any(isinstance(a, ModeChanged) for a in cell.tick(2 * DAY + 15))
    assert cell.mode is Mode.NORMAL


def test_mode_table_and_its_diagram():
    assert MODE_TRANSITIONS[Mode.NORMAL][ModeInput.SILENCE] is Mode.CONSERVATIVE
    assert MODE_TRANSITIONS[Mode.CONSERVATIVE][ModeInput.CONTACT] is Mode.NORMAL
    text = diagram()
    for mode, moves in MODE_TRANSITIONS.items():
        for what, target in moves.items():
            assert f"{mode.value} --> {target.value}: {what.value}" in text


def test_a_cell_cut_off_for_30_days_grants_inside_its_reservations_and_reconciles():
    """The scenario of the seeds: 30 virtual days without the region. Clocks differ by the
    drift bound; every block and sub-lease goes into the checker with true time."""
    offsets = {REGION: DRIFT // 2, 7: -DRIFT // 2}
    region = ReservationAuthority(REGION, {"feed/A": 300}, CONFIG)
    cell = CellReservations(7, REGION, CONFIG, -DRIFT // 2)
    trace: list[inv.Record] = []
    block_start: dict[str, int] = {}
    partitioned = lambda t: DAY <= t < 31 * DAY  # noqa: E731
    sent_while_cut: list[object] = []
    modes: list[tuple[Mode, int]] = []
    hour = 3_600_000
    granted = refused = 0

    def deliver(actions, now_true):
        nonlocal granted, refused
        for a in actions:
            if isinstance(a, Send):
                if partitioned(now_true):
                    sent_while_cut.append(a.message)
                    continue
                for g in grants(region.receive(a.message, now_true + offsets[REGION])):
                    block_start.setdefault(g.block, now_true)
                    # The region counts the block until its expiry (+ drift): true end of it.
                    trace.append(
                        inv.Block(
                            g.block,
                            7,
                            g.amount,
                            block_start[g.block],
                            g.expires_at - offsets[REGION],
                        )
                    )
                    deliver(cell.receive(g, now_true + offsets[7]), now_true)
            elif isinstance(a, SubLease):
                granted += 1
                trace.append(
                    inv.SubLease(a.block, a.holder, a.amount, now_true, a.expires_at - offsets[7])
                )
            elif isinstance(a, SubLeaseRefused):
                refused += 1
            elif isinstance(a, ModeChanged):
                modes.append((a.mode, now_true))

    for demand, t in enumerate(range(0, 40 * DAY, 6 * hour), start=1):
        deliver(cell.tick(t + offsets[7]), t)
        amount = 40 if demand % 3 else 90
        deliver(cell.sublease(20 + demand % 5, "feed/A", amount, 2 * DAY, t + offsets[7]), t)

    report = inv.check(trace)
    assert report.ok, str(report.violation)
    assert granted > 40 and refused > 0
    # While cut off: conservative from two days of silence to the heal, nothing new asked for.
    assert [m for m, _ in modes] == [Mode.CONSERVATIVE, Mode.NORMAL]
    # (two days after the last answer before the cut, which came within its first day)
    assert CONFIG.silence_ms <= modes[0][1] <= DAY + CONFIG.silence_ms + 6 * hour
    assert 31 * DAY <= modes[1][1] <= 31 * DAY + 6 * hour
    assert not any(
        isinstance(m, BlockRequest) for m in sent_while_cut if m.header.issued_at > 3 * DAY
    )
    # Sub-leases kept being granted inside the blocks held all through the partition.
    during = [s for s in trace if isinstance(s, inv.SubLease) and 5 * DAY <= s.start < 30 * DAY]
    assert len(during) > 20
    # Reconciled: the block renewed by the same token, and the region's accounts hold.
    assert region.committed("feed/A") <= 300
    assert cell.blocks() and all(until > 40 * DAY for _, until in cell.blocks().values())
