"""Auctions (v3): the clearing rule, its bounds, and a v1 node winning through its plain claim."""

from __future__ import annotations

from fleetwire.protocol.coordination import invariants as inv
from fleetwire.protocol.coordination.auction import (
    Ask,
    AuctionConfig,
    AuctionRegion,
    Award,
    Bid,
    Offer,
    Send,
    clear,
)
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.lease_holder import HolderConfig, HolderState, LeaseHolder
from fleetwire.protocol.messages import Header, LeaseClaim, LeaseGrant, content_id
from hypothesis import given
from hypothesis import strategies as st

HOUR = 3_600_000
DRIFT = 1_000
REGION = 100
WINDOW = FreshnessWindow(max_age_ms=48 * HOUR, max_skew_ms=DRIFT)
CID = content_id(LeaseClaim(Header(1, 0, 0), "dock/1", 1))  # a content id to hand along
CONFIG = AuctionConfig(cycle_ms=6 * HOUR, max_drift_ms=DRIFT, reserve=10, freshness=WINDOW)


def offer(party, quantity, price, arrival):
    return Offer(party, quantity, price, arrival)


def test_unit_bids_pay_the_best_unserved_price():
    bids = [offer(1, 1, 50, 1), offer(2, 1, 90, 2), offer(3, 1, 70, 3), offer(4, 1, 60, 4)]
    price, accepted, rejected, used = clear(bids, [offer(REGION, 2, 10, 0)])
    assert [b.party for b in accepted] == [2, 3]
    assert price == 60  # the (k+1)-th price
    assert [b.party for b in rejected] == [4, 1] and used == [(REGION, 2)]


def test_ties_go_to_the_earlier_bid():
    price, accepted, _, _ = clear(
        [offer(1, 1, 50, 2), offer(2, 1, 50, 1)], [offer(REGION, 1, 0, 0)]
    )
    assert [b.party for b in accepted] == [2] and price == 50


def test_bids_are_all_or_nothing_and_a_smaller_one_may_still_fit():
    bids = [offer(1, 3, 90, 1), offer(2, 5, 80, 2), offer(3, 2, 70, 3)]
    price, accepted, rejected, _ = clear(bids, [offer(REGION, 6, 0, 0)])
    assert [b.party for b in accepted] == [1, 3] and [b.party for b in rejected] == [2]
    assert price == 70  # the unserved 80 is capped by the lowest accepted bid


def test_asks_price_the_supply():
    asks = [offer(5, 1, 40, 1), offer(6, 1, 20, 2)]
    price, accepted, _, used = clear([offer(1, 1, 30, 1), offer(2, 1, 35, 2)], asks)
    assert [b.party for b in accepted] == [2] and used == [(6, 1)]
    assert price == 30  # best unserved bid, above the dearest ask used (20)


def test_nothing_trades_without_bids():
    assert clear([], [offer(REGION, 5, 0, 0)]) == (None, [], [], [])


@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(0, 100)), max_size=20),
    st.lists(st.tuples(st.integers(1, 5), st.integers(0, 100)), max_size=5),
)
def test_clearing_never_sells_more_than_supplied_and_prices_are_consistent(bid_list, ask_list):
    bids = [offer(10 + i, q, p, i) for i, (q, p) in enumerate(bid_list)]
    asks = [offer(50 + i, q, p, i) for i, (q, p) in enumerate(ask_list)]
    price, accepted, rejected, used = clear(bids, asks)
    assert sorted(accepted + rejected, key=lambda b: b.arrival) == bids
    assert sum(b.quantity for b in accepted) == sum(u for _, u in used)
    assert sum(b.quantity for b in accepted) <= sum(a.quantity for a in asks)
    for party, units in used:
        assert units <= sum(a.quantity for a in asks if a.party == party)
    if accepted:
        assert price is not None
        assert price <= min(b.price for b in accepted)
        used_prices = [a.price for a in asks if any(p == a.party for p, _ in used)]
        assert price >= max(used_prices)


def v1_holder(node: int) -> LeaseHolder:
    config = HolderConfig(
        max_drift_ms=DRIFT, renew_lead_ms=HOUR, retry_ms=HOUR, min_use_ms=1, freshness=WINDOW
    )
    return LeaseHolder(node, (REGION,), config)


def test_a_v1_node_wins_a_v3_auction_through_its_plain_claim():
    region = AuctionRegion(REGION, {"dock/1": 1}, CONFIG, now=0)
    holder = v1_holder(7)
    (claim,) = [a.message for a in holder.want("dock/1", HOUR, 1_000, priority=2)]
    assert region.receive(claim, content_id(claim), 1_000) == []  # waits for the cycle
    (send,) = region.tick(6 * HOUR)
    grant = send.message
    assert isinstance(grant, LeaseGrant) and send.to == 7
    assert grant.claim == content_id(claim) and grant.expires_at == 12 * HOUR - DRIFT
    holder.receive(grant, content_id(grant), 6 * HOUR + 50)
    assert holder.state("dock/1") is HolderState.HOLDING
    assert holder.use("dock/1", 6 * HOUR + 100) == grant.fencing_token
    assert region.results[-1].price == 10  # alone: it pays the reserve


def test_a_higher_v3_bid_wins_first_and_the_v1_claim_stands_for_the_next_cycle():
    region = AuctionRegion(REGION, {"dock/1": 1}, CONFIG, now=0)
    holder = v1_holder(7)
    (claim,) = [a.message for a in holder.want("dock/1", HOUR, 1_000, priority=0)]  # bids 100
    region.receive(claim, content_id(claim), 1_000)
    bid = Bid(Header(8, 2_000, 1), "dock/1", 1, 500)
    region.receive(bid, content_id(claim), 2_000)
    (first,) = region.tick(6 * HOUR)
    assert isinstance(first.message, Award) and first.to == 8 and first.message.price == 100
    (second,) = region.tick(12 * HOUR)
    assert isinstance(second.message, LeaseGrant) and second.to == 7
    assert second.message.fencing_token > first.message.fencing_token


def test_replayed_bid_changes_nothing():
    region = AuctionRegion(REGION, {"dock/1": 2}, CONFIG, now=0)
    bid = Bid(Header(8, 2_000, 5), "dock/1", 1, 500)
    region.receive(bid, CID, 2_000)
    assert len(region.tick(6 * HOUR)) == 1
    assert region.receive(bid, CID, 6 * HOUR + 5) == []
    assert region.tick(12 * HOUR) == []  # the replay placed no bid for the next cycle


def test_cycles_of_v1_holders_never_overlap_on_a_dock():
    """Three v1 nodes with clocks apart by the drift bound claim one dock again and again;
    what they do with their grants goes into the checker."""
    offsets = {REGION: 0, 7: DRIFT // 2, 8: -DRIFT // 2, 9: DRIFT // 4}
    region = AuctionRegion(REGION, {"dock/1": 1}, CONFIG, now=0)
    holders = {n: v1_holder(n) for n in (7, 8, 9)}
    trace: list[inv.Record] = []
    step = 60_000
    for t in range(0, 48 * HOUR, step):
        sends: list[Send] = []
        for n, holder in holders.items():
            local = t + offsets[n] + 10 * HOUR  # positive clocks
            actions = holder.tick(local)
            if holder.state("dock/1") is HolderState.IDLE:
                actions += holder.want("dock/1", HOUR, local)
            for a in actions:
                if hasattr(a, "message"):
                    sends += region.receive(a.message, content_id(a.message), t + 10 * HOUR)
            token = holder.use("dock/1", local, step)
            if token is not None:
                trace.append(inv.Used("dock/1", n, token, t, t + step, local))
        for send in sends + region.tick(t + 10 * HOUR):
            assert isinstance(send, Send)
            g = send.message
            trace.append(
                inv.Granted(
                    "dock/1", send.to, g.fencing_token, g.expires_at, REGION, t, t + 10 * HOUR
                )
            )
            holders[send.to].receive(g, content_id(g), t + offsets[send.to] + 10 * HOUR + 1)
    report = inv.check(trace)
    assert report.ok, str(report.violation)
    assert len({u.holder for u in trace if isinstance(u, inv.Used)}) >= 2
    assert report.uses > 300


def test_asks_from_nodes_add_supply():
    region = AuctionRegion(REGION, {"feed/A": 0}, CONFIG, now=0)
    region.receive(Ask(Header(5, 10, 1), "feed/A", 30, 20), CID, 10)
    region.receive(Bid(Header(8, 20, 1), "feed/A", 25, 40), CID, 20)
    (award,) = region.tick(6 * HOUR)
    assert award.message.quantity == 25 and award.message.price == 20
    assert region.results[-1].supply_used == ((5, 25),)
