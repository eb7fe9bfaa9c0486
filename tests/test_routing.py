"""Routing: hand-made contact graphs, fallbacks, the cache, and properties against brute force."""

from __future__ import annotations

import itertools
import random

import pytest
from fleetwire.protocol.agent.contacts import Contact, ContactPlan
from fleetwire.protocol.agent.routing import (
    Forward,
    Hierarchy,
    NoRoute,
    Route,
    RouteKind,
    Router,
    best_route,
    evaluate,
)
from hypothesis import given, settings
from hypothesis import strategies as st

FAST = 8_000_000  # 1 byte per microsecond: volume is never the constraint unless a test wants it

# Keep each property test well under a second; ``--soak`` (a bigger profile) runs the full count.
EXAMPLES = 60 if settings.default.max_examples <= 200 else settings.default.max_examples


def C(a: int, b: int, start: int, end: int, owlt: int = 0, rate: int = FAST) -> Contact:
    return Contact(a, b, start, end, rate, owlt)


def test_relay_beats_direct_contact_that_opens_later() -> None:
    # 1 -> 3 directly opens only at 500; via 2 the bundle waits for 1 -> 2 at 100.
    via_a = C(1, 2, 100, 200, owlt=10)
    via_b = C(2, 3, 0, 1_000, owlt=10)
    direct = C(1, 3, 500, 600, owlt=1)
    router = Router(1, ContactPlan([direct, via_b, via_a]))
    decision = router.route(3, 0, size=100)
    assert decision == Forward(2, RouteKind.CONTACT_GRAPH, Route((via_a, via_b), 100, 120))
    assert decision.route is not None and decision.route.departure == 100  # waits in store
    # Once the relay contact is over, the direct one is the only way.
    late = router.route(3, 250, size=100)
    assert isinstance(late, Forward) and late.route == Route((direct,), 500, 501)


def test_earliest_arrival_not_fewest_hops() -> None:
    # A direct contact open now but with a long light time loses to two short hops.
    slow_direct = C(1, 3, 0, 10_000, owlt=5_000)
    hop1, hop2 = C(1, 2, 0, 10_000, owlt=100), C(2, 3, 0, 10_000, owlt=100)
    route = best_route(ContactPlan([slow_direct, hop1, hop2]), 1, 3, 0)
    assert route == Route((hop1, hop2), 0, 200)
    assert route.next_hop == 2 and route.destination == 3 and route.to_time == 10_000


def test_next_hop_waits_at_relay_for_its_contact() -> None:
    first = C(1, 2, 0, 50, owlt=5)
    second = C(2, 3, 300, 400, owlt=5)
    route = best_route(ContactPlan([first, second]), 1, 3, 10)
    assert route == Route((first, second), 10, 305)


def test_capacity_exhaustion_moves_bundle_to_later_contact() -> None:
    small = Contact(1, 2, 0, 1_000, 8_000, 10)  # 1000 bytes in total
    later = Contact(1, 2, 5_000, 6_000, 8_000, 10)
    router = Router(1, ContactPlan([small, later]))
    first = router.route(2, 0, size=600)
    assert isinstance(first, Forward) and first.route == Route((small,), 0, 10)
    router.book(first.route, 600)
    second = router.route(2, 0, size=600)  # only 400 bytes left on ``small``
    assert isinstance(second, Forward) and second.route == Route((later,), 5_000, 5_010)
    third = router.route(2, 0, size=400)  # still fits exactly
    assert isinstance(third, Forward) and third.route is not None
    assert third.route.hops == (small,)
    # Starting halfway, only half the contact's volume is left.
    assert best_route(router.plan, 1, 2, 500, nbytes=450) == Route((later,), 5_000, 5_010)
    # Giving the volume back makes the first contact usable again.
    router.plan.release(small, 600)
    again = router.route(2, 0, size=600)
    assert isinstance(again, Forward) and again.route is not None and again.route.hops == (small,)


def test_bundle_too_big_for_any_contact_has_no_route() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 1_000, 8_000, 0)])
    assert best_route(plan, 1, 2, 0, nbytes=1_001) is None
    assert Router(1, plan).route(2, 0, size=1_001) == NoRoute(None)


def test_expiry_before_arrival_means_no_route() -> None:
    plan = ContactPlan([C(1, 2, 0, 100, owlt=40), C(2, 3, 0, 100, owlt=40), C(1, 3, 900, 999)])
    router = Router(1, plan)
    ok = router.route(3, 0, size=10, expires_at=80)
    assert isinstance(ok, Forward) and ok.route is not None and ok.route.arrival == 80
    assert router.route(3, 0, size=10, expires_at=79) == NoRoute(900)
    # The same answer comes from the cache (the cached arrival is a lower bound).
    hits = router.hits
    assert router.route(3, 0, size=10, expires_at=79) == NoRoute(900)
    assert router.hits == hits + 1


def test_excluded_previous_hop_is_never_used() -> None:
    a, b = C(1, 2, 0, 100, owlt=1), C(2, 3, 0, 100, owlt=1)
    c, d = C(1, 4, 0, 100, owlt=20), C(4, 3, 0, 100, owlt=20)
    router = Router(1, ContactPlan([a, b, c, d]))
    assert router.best_route(3, 0, size=1) == Route((a, b), 0, 2)
    assert router.best_route(3, 0, size=1, exclude={2}) == Route((c, d), 0, 40)
    assert router.best_route(3, 0, size=1, exclude={2, 4}) is None


def test_routes_never_loop() -> None:
    # 2 <-> 4 lets a naive search bounce; the route must visit each node once.
    plan = ContactPlan(
        [C(1, 2, 0, 10), C(2, 4, 0, 10), C(4, 2, 0, 10), C(4, 3, 50, 60), C(2, 1, 0, 10)]
    )
    route = best_route(plan, 1, 3, 0)
    assert route is not None
    nodes = [1, *(h.to_node for h in route.hops)]
    assert len(nodes) == len(set(nodes)) and nodes == [1, 2, 4, 3]


def test_fallbacks_static_then_default_then_wait() -> None:
    plan = ContactPlan([C(1, 2, 1_000, 2_000)])
    hierarchy = Hierarchy({1: 10, 2: 10, 10: 100, 11: 100, 3: 11})
    router = Router(1, plan, static={7: 2}, hierarchy=hierarchy)
    assert router.route(2, 0, size=1) == Forward(
        2, RouteKind.CONTACT_GRAPH, router.route(2, 0, size=1).route
    )  # type: ignore[union-attr]
    assert router.route(7, 0, size=1) == Forward(2, RouteKind.STATIC)
    assert router.route(7, 0, size=1, exclude={2}) == Forward(10, RouteKind.DEFAULT)
    assert router.route(3, 0, size=1) == Forward(10, RouteKind.DEFAULT)
    assert router.route(3, 0, size=1, exclude={10}) == NoRoute(1_000)
    assert Router(100, plan).route(3, 0, size=1) == NoRoute(None)


def test_hierarchy_goes_down_toward_descendants_and_up_otherwise() -> None:
    # region 100 -> cells 10, 11 -> members
    tree = Hierarchy({1: 10, 2: 10, 3: 11, 10: 100, 11: 100})
    assert tree.next_hop(1, 2) == 10  # sibling: via the cell coordinator
    assert tree.next_hop(10, 2) == 2  # coordinator to its member
    assert tree.next_hop(10, 3) == 100  # another cell: up to the region
    assert tree.next_hop(100, 3) == 11  # region down to the right cell
    assert tree.next_hop(100, 999) is None  # unknown node, nobody above the root
    assert tree.parent(3) == 11 and tree.parent(100) is None
    with pytest.raises(ValueError, match="cycle"):
        Hierarchy({1: 2, 2: 3, 3: 1})


def test_route_to_self_and_empty_bundle_are_caller_errors() -> None:
    router = Router(1, ContactPlan())
    with pytest.raises(ValueError, match="locally"):
        router.route(1, 0, size=1)
    with pytest.raises(ValueError, match="byte"):
        router.route(2, 0, size=0)


def test_ties_break_the_same_way_whatever_the_insertion_order() -> None:
    contacts = [C(1, 2, 0, 100, 5), C(1, 3, 0, 100, 5), C(2, 4, 0, 100, 5), C(3, 4, 0, 100, 5)]
    contacts += [C(1, 4, 0, 100, 10), C(1, 2, 0, 200, 5)]
    results = set()
    for order in itertools.permutations(contacts):
        results.add(best_route(ContactPlan(order), 1, 4, 0))
    assert len(results) == 1
    (route,) = results
    assert route is not None and route.arrival == 10 and len(route.hops) == 1  # fewest hops


def test_equal_arrival_prefers_fewer_hops_even_when_found_later() -> None:
    # 1-2-3-9 (3 hops) labels 9 before 1-4-9 (2 hops) does; both arrive at 10.
    plan = ContactPlan(
        [C(1, 2, 0, 99), C(2, 3, 0, 99), C(3, 9, 0, 99, 10), C(1, 4, 0, 99, 5), C(4, 9, 0, 99, 5)]
    )
    route = best_route(plan, 1, 9, 0)
    assert route is not None and route.arrival == 10
    assert [h.to_node for h in route.hops] == [4, 9]


def test_cache_hits_and_invalidation() -> None:
    plan = ContactPlan([C(1, 2, 0, 1_000, 5), C(2, 3, 0, 1_000, 5), C(3, 4, 0, 1_000, 5)])
    router = Router(1, plan)
    assert router.best_route(4, 0, size=1) is not None
    searches = router.searches
    # One search settled 2 and 3 as well: all answered from the cache.
    for dest in (2, 3, 4):
        assert router.best_route(dest, 0, size=1) == best_route(plan, 1, dest, 0)
    assert router.searches == searches and router.hits == 3
    # Time moving inside the contacts keeps the routes optimal but shifts the departure.
    moved = router.best_route(4, 0, size=1)
    assert moved is not None and moved.departure == 0
    # A new, better contact bumps the plan version and must be found.
    shortcut = C(1, 4, 0, 1_000, 1)
    plan.add(shortcut)
    assert router.best_route(4, 0, size=1) == Route((shortcut,), 0, 1)
    plan.remove(shortcut)
    assert router.best_route(4, 0, size=1) == best_route(plan, 1, 4, 0)


def test_prefetch_caches_every_reachable_destination() -> None:
    plan = ContactPlan([C(1, 2, 0, 99, 1), C(2, 3, 0, 99, 1), C(1, 4, 50, 99, 1), C(5, 1, 0, 9)])
    router = Router(1, plan)
    assert router.prefetch(0) == 3
    for dest in (2, 3, 4):
        assert router.best_route(dest, 0, size=1) == best_route(plan, 1, dest, 0)
    assert router.best_route(5, 0, size=1) is None
    assert router.searches == 2 and router.hits == 3  # 5 was not settled: one more search


def test_stale_cache_entry_is_recomputed_when_time_moves_on() -> None:
    early = C(1, 2, 0, 100, 5)
    late = C(1, 2, 500, 600, 5)
    router = Router(1, ContactPlan([early, late]))
    assert router.best_route(2, 0, size=1) == Route((early,), 0, 5)
    assert router.best_route(2, 50, size=1) == Route((early,), 50, 55)
    assert router.best_route(2, 200, size=1) == Route((late,), 500, 505)
    searches = router.searches
    assert router.best_route(2, 210, size=1) == Route((late,), 500, 505)
    assert router.searches == searches  # the refresh at 200 serves later queries
    # Asked about an earlier time (a caller replaying), the cache from 200 must not answer.
    assert router.best_route(2, 0, size=1) == Route((early,), 0, 5)


def test_reachable_counts_the_contacts_leaving_a_node() -> None:
    first, second = C(1, 2, 0, 100), C(1, 3, 500, 600)
    plan = ContactPlan([first])
    assert plan.reachable(1) and not plan.reachable(2)  # incoming contacts do not count
    plan.add(second)
    plan.remove(first)
    assert plan.reachable(1)  # one contact left
    plan.remove(second)
    assert not plan.reachable(1)
    assert not ContactPlan().reachable(1)


def test_a_node_without_contacts_falls_back_without_searching() -> None:
    plan = ContactPlan([C(2, 3, 0, 100)])  # contacts elsewhere, none from node 1
    router = Router(1, plan, static={7: 2}, hierarchy=Hierarchy({1: 10, 3: 10}))
    assert router.route(7, 0, size=1) == Forward(2, RouteKind.STATIC)
    assert router.route(3, 0, size=1) == Forward(10, RouteKind.DEFAULT)
    assert router.route(3, 0, size=1, exclude={10}) == NoRoute(None)
    assert router.searches == 0
    with pytest.raises(ValueError, match="locally"):
        router.route(1, 0, size=1)
    with pytest.raises(ValueError, match="byte"):
        router.route(3, 0, size=0)
    plan.add(C(1, 3, 50, 100))  # a contact appears: the contact graph is searched again
    found = router.route(3, 0, size=1)
    assert isinstance(found, Forward) and found.kind is RouteKind.CONTACT_GRAPH
    assert router.searches == 1


# --- properties -------------------------------------------------------------------------

N = 5


@st.composite
def plans(draw: st.DrawFn) -> list[Contact]:
    n = draw(st.integers(1, 14))
    out = []
    for _ in range(n):
        a = draw(st.integers(0, N - 1))
        b = (a + draw(st.integers(1, N - 1))) % N
        start = draw(st.integers(0, 400))
        out.append(
            Contact(
                a,
                b,
                start,
                start + draw(st.integers(1, 200)),
                draw(st.sampled_from([800, 8_000, 80_000])),
                draw(st.integers(0, 60)),
            )
        )
    return list(dict.fromkeys(out))


def _brute_force(
    plan: ContactPlan, src: int, dst: int, now: int, size: int, deadline: int | None
) -> int | None:
    """Earliest arrival over every simple path, each hop trying every contact."""
    best = None
    others = [n for n in range(N) if n not in (src, dst)]
    for k in range(len(others) + 1):
        for middle in itertools.permutations(others, k):
            path = [src, *middle, dst]
            choices = [plan.between(a, b) for a, b in itertools.pairwise(path)]
            for hops in itertools.product(*choices):
                timing = evaluate(plan, hops, now, size)
                if timing and (deadline is None or timing[1] <= deadline):
                    best = timing[1] if best is None else min(best, timing[1])
    return best


@settings(max_examples=EXAMPLES)
@given(
    plans(),
    st.integers(0, N - 1),
    st.integers(1, N - 1),
    st.integers(0, 500),
    st.integers(1, 2_000),
    st.none() | st.integers(0, 800),
)
def test_route_is_optimal_feasible_and_never_beaten_by_a_direct_contact(
    contacts: list[Contact], src: int, offset: int, now: int, size: int, deadline: int | None
) -> None:
    dst = (src + offset) % N
    plan = ContactPlan(contacts)
    route = best_route(plan, src, dst, now, nbytes=size, deadline=deadline)
    expected = _brute_force(plan, src, dst, now, size, deadline)
    assert (route.arrival if route else None) == expected
    if route is None:
        return
    # Never later than any single usable direct contact.
    for c in plan.between(src, dst):
        leave = max(now, c.start)
        if c.end > leave and plan.residual_volume(c, leave) >= size:
            assert route.arrival <= leave + c.owlt_ms
    # A chain from src to dst, no node twice, every contact used before its end.
    assert route.hops[0].from_node == src and route.hops[-1].to_node == dst
    assert all(x.to_node == y.from_node for x, y in itertools.pairwise(route.hops))
    nodes = [src, *(h.to_node for h in route.hops)]
    assert len(set(nodes)) == len(nodes)
    t = now
    for h in route.hops:
        leave = max(t, h.start)
        assert leave < h.end
        t = leave + h.owlt_ms
    assert t == route.arrival and evaluate(plan, route.hops, now, size) == (route.departure, t)
    assert deadline is None or route.arrival <= deadline


@settings(max_examples=EXAMPLES)
@given(plans(), st.integers(0, 2**32), st.integers(0, N - 1))
def test_cached_router_agrees_with_fresh_search(
    contacts: list[Contact], seed: int, src: int
) -> None:
    """A run of queries with time moving forward, bookings and exclusions: cache == search."""
    rng = random.Random(seed)
    plan = ContactPlan(contacts)
    router = Router(src, plan)
    now = 0
    for _ in range(25):
        now += rng.choice([0, 0, 1, 7, 40])
        dst = (src + rng.randrange(1, N)) % N
        size = rng.choice([1, 10, 300, 3_000])
        deadline = rng.choice([None, now + 100, now + 500])
        exclude = rng.choice([(), (), ((dst + 1) % N,)])
        exclude = tuple(x for x in exclude if x != src)
        got = router.best_route(dst, now, size=size, expires_at=deadline, exclude=exclude)
        fresh = best_route(plan, src, dst, now, nbytes=size, deadline=deadline, exclude=exclude)
        assert (got.arrival if got else None) == (fresh.arrival if fresh else None)
        if got is not None:
            assert evaluate(plan, got.hops, now, size) == (got.departure, got.arrival)
            if rng.random() < 0.5:
                router.book(got, size)
            if rng.random() < 0.1:
                plan.release(got.hops[0], size)


@settings(max_examples=EXAMPLES)
@given(plans(), st.integers(0, 2**32))
def test_reachable_is_whether_any_contact_leaves(contacts: list[Contact], seed: int) -> None:
    """Through any run of additions and removals, ``reachable`` matches the contacts."""
    rng = random.Random(seed)
    plan = ContactPlan(contacts)
    for _ in range(len(contacts)):
        assert all(plan.reachable(n) == any(c.from_node == n for c in plan) for n in range(N))
        present = list(plan)
        if present and rng.random() < 0.7:
            plan.remove(rng.choice(present))
        else:
            absent = [c for c in contacts if c not in plan]
            if absent:
                plan.add(rng.choice(absent))
    assert all(plan.reachable(n) == any(c.from_node == n for c in plan) for n in range(N))
