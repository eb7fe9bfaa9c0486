"""Next-hop choice: contact graph routing first, then static routes, then the hierarchy.

Theory of operation
-------------------
RFC 9171 leaves forwarding decisions to the node (§5.4 "Bundle Forwarding": the node
determines the next hop by means outside the specification). For scheduled, intermittent
links the established means is Contact Graph Routing (ION), standardised by CCSDS as
Schedule-Aware Bundle Routing (SABR, CCSDS 734.3-B-1): find the route whose *arrival time* at
the destination is earliest, where a bundle ready at node ``u`` at time ``t`` that takes contact
``c = u -> v`` leaves at ``max(t, c.start)`` and reaches ``v`` at ``max(t, c.start) + c.owlt``.
A contact is usable only if it is still open when the bundle leaves (``c.end > departure``) and
its residual volume from the departure (``rate x (end - departure) - booked``) holds the bundle.
Serialization time is not added to the arrival (as in SABR's route search); the volume check is
what guarantees the bundle fits in the contact.

The search is Dijkstra on *nodes* labelled by earliest arrival time. That is exact for this
model because it is FIFO: leaving later never arrives earlier, and the residual volume from a
departure only shrinks as the departure moves later, so reaching a node earlier is never worse
(the classic time-dependent shortest path argument; CGR's contact-vertex Dijkstra finds the
same arrival time). A shortest-path tree is loop free by construction, and the nodes in
``exclude`` (the previous hop, nodes the bundle already visited) are simply never entered. The
bundle's expiry bounds the search: labels later than it are dropped.

Tie-breaking is deterministic: earliest arrival, then fewest hops, then the node settled first
(heap order ``(arrival, hops, node id)``), then the contact first in plan order.

Cache. One search from ``now`` settles the optimal route to every node it reaches before the
destination; the router keeps them per destination, keyed on the plan version. A cached route
computed at ``t0`` for a 1-byte bundle is a lower bound on any later query (later departure,
more bookings and more restrictions never help), so when it is still feasible for this bundle at
``now``, avoids ``exclude`` and still arrives at the same time, it *is* the optimum and is
returned without a search; when its arrival already exceeds the expiry, no route exists. Only
otherwise does the router search again. Adding or removing contacts bumps the plan version and
drops the cache; bookings do not (they are re-checked per query).

A node no contact leaves at all (:meth:`ContactPlan.reachable` false: a fleet routed by its
hierarchy alone) has no contact route to anywhere, and the router goes straight to the
fallbacks without searching.

Fallbacks when no contact route exists: a static route (destination -> next hop), then the
hierarchical default route (:class:`Hierarchy`: down the tree if the destination is below this
node, else up to the parent: member -> cell coordinator -> region coordinator), then
:class:`NoRoute` carrying the time of the next contact start, when it is worth asking again.

Pure code: no clock reads (``now`` is an argument), no I/O, no Trio.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Final

import attrs

from .contacts import Contact, ContactPlan


@attrs.frozen(slots=True)
class Route:
    """A path through the contact plan: ``hops[0]`` leaves this node."""

    hops: tuple[Contact, ...]
    departure: int  # when the first hop starts sending
    arrival: int  # earliest arrival at the destination (no serialization time)

    @property
    def next_hop(self) -> int:
        return self.hops[0].to_node

    @property
    def destination(self) -> int:
        return self.hops[-1].to_node

    @property
    def to_time(self) -> int:
        """When the route stops existing: the earliest end among its contacts."""
        return min(c.end for c in self.hops)

    @property
    def confidence(self) -> float:
        return math.prod(c.confidence for c in self.hops)


def evaluate(
    plan: ContactPlan, hops: Sequence[Contact], now: int, nbytes: int
) -> tuple[int, int] | None:
    """``(departure, arrival)`` of a bundle of ``nbytes`` ready at ``now`` along ``hops``.

    None if a contact is gone from the plan, already closed when the bundle would leave, or
    lacks the residual volume.
    """
    t = now
    departure = -1
    for c in hops:
        if c not in plan:
            return None
        leave = max(t, c.start)
        if c.end <= leave or plan.residual_volume(c, leave) < nbytes:
            return None
        if departure < 0:
            departure = leave
        t = leave + c.owlt_ms
    return departure, t


# A label: (arrival, hops, contact used to get here, predecessor node).
_Label = tuple[int, int, Contact | None, int]


def search(
    plan: ContactPlan,
    source: int,
    now: int,
    *,
    destination: int | None = None,
    nbytes: int = 1,
    deadline: int | None = None,
    exclude: Collection[int] = (),
) -> dict[int, _Label]:
    """Earliest-arrival Dijkstra from ``source``; returns the settled labels.

    Stops once ``destination`` is settled (every node settled before it is exact too). Use
    :func:`route_from_labels` to turn labels into a :class:`Route`.
    """
    booked = plan.bookings
    labels: dict[int, _Label] = {source: (now, 0, None, source)}
    settled: dict[int, _Label] = {}
    heap: list[tuple[int, int, int]] = [(now, 0, source)]
    while heap:
        t, h, u = heapq.heappop(heap)
        if u in settled:
            continue
        settled[u] = labels[u]  # stale heap entries are for settled nodes: skipped above
        if u == destination:
            break
        for v, index in plan.adjacency(u):
            if v in settled or v in exclude:
                continue
            # The contact u -> v that gets the bundle to v earliest (inlined: hot loop).
            contacts = index.contacts
            best: Contact | None = None
            best_arrival = 0
            for i in range(bisect.bisect_right(index.max_end, t), len(contacts)):
                c = contacts[i]
                if best is not None and c.start >= best_arrival:
                    break  # arrival >= start: later contacts cannot win
                leave = c.start if c.start > t else t
                if c.end <= leave:
                    continue
                volume = (c.end - leave) * c.rate_bps // 8000
                if booked:
                    volume -= booked.get(c, 0)
                if volume < nbytes:
                    continue
                arrival = leave + c.owlt_ms
                if best is None or arrival < best_arrival:
                    best, best_arrival = c, arrival
            if best is None or (deadline is not None and best_arrival > deadline):
                continue
            old = labels.get(v)
            if old is None or best_arrival < old[0] or (best_arrival == old[0] and h + 1 < old[1]):
                labels[v] = (best_arrival, h + 1, best, u)
                heapq.heappush(heap, (best_arrival, h + 1, v))
    return settled


def route_from_labels(labels: Mapping[int, _Label], destination: int) -> Route | None:
    label = labels.get(destination)
    if label is None or label[2] is None:
        return None
    arrival = label[0]
    hops: list[Contact] = []
    departure = 0
    node = destination
    while True:
        _, _, contact, pred = labels[node]
        if contact is None:
            break
        hops.append(contact)
        departure = max(labels[pred][0], contact.start)
        node = pred
    hops.reverse()
    return Route(tuple(hops), departure, arrival)


def best_route(
    plan: ContactPlan,
    source: int,
    destination: int,
    now: int,
    *,
    nbytes: int = 1,
    deadline: int | None = None,
    exclude: Collection[int] = (),
) -> Route | None:
    """Uncached earliest-arrival route (the reference the :class:`Router` cache must match)."""
    labels = search(
        plan,
        source,
        now,
        destination=destination,
        nbytes=nbytes,
        deadline=deadline,
        exclude=exclude,
    )
    return route_from_labels(labels, destination)


class Hierarchy:
    """The fleet tree (member -> cell coordinator -> region coordinator) as ``parent_of``."""

    def __init__(self, parent_of: Mapping[int, int]) -> None:
        self._parent = dict(parent_of)
        for start in self._parent:  # refuse cycles: every upward walk must end
            seen = {start}
            node = self._parent.get(start)
            while node is not None:
                if node in seen:
                    raise ValueError(f"hierarchy has a cycle through node {node}")
                seen.add(node)
                node = self._parent.get(node)

    def parent(self, node: int) -> int | None:
        return self._parent.get(node)

    def next_hop(self, node: int, destination: int) -> int | None:
        """Down toward ``destination`` if it is below ``node``, else up to the parent."""
        below: int | None = None
        walk: int | None = destination
        while walk is not None:
            if walk == node:
                return below
            below, walk = walk, self._parent.get(walk)
        return self._parent.get(node)


class RouteKind(enum.Enum):
    CONTACT_GRAPH = "contact-graph"
    STATIC = "static"
    DEFAULT = "default"


# Read per message as a global, not off the enum: in Python 3.11 an enum's class attribute
# goes through EnumType's __getattr__ hook (hundreds of instructions a read, a global a few).
_CONTACT_GRAPH: Final = RouteKind.CONTACT_GRAPH
_DEFAULT: Final = RouteKind.DEFAULT
_STATIC: Final = RouteKind.STATIC


@attrs.frozen(slots=True)
class Forward:
    """Hand the bundle to the link toward ``next_hop`` (``route`` set for contact routes)."""

    next_hop: int
    kind: RouteKind
    route: Route | None = None


@attrs.frozen(slots=True)
class NoRoute:
    """Keep the bundle in the store; ask again at ``next_check_at`` (None: on a plan change)."""

    next_check_at: int | None


@attrs.frozen(slots=True)
class _Cached:
    computed_at: int
    route: Route | None


class Router:
    """This node's forwarding decision: CGR, else static, else default, else wait."""

    def __init__(
        self,
        node: int,
        plan: ContactPlan,
        *,
        static: Mapping[int, int] | None = None,
        hierarchy: Hierarchy | None = None,
    ) -> None:
        self.node = node
        self.plan = plan
        self.static = dict(static or {})
        self.hierarchy = hierarchy
        self._cache: dict[int, _Cached | tuple[int, dict[int, _Label]]] = {}
        self._cache_key = (plan.version, plan.releases)
        self.hits = 0
        self.searches = 0
        self._static_forwards: dict[int, Forward] = {}
        self._default_forwards: dict[int, Forward] = {}

    def route(
        self,
        destination: int,
        now: int,
        *,
        size: int,
        expires_at: int | None = None,
        exclude: Collection[int] = (),
    ) -> Forward | NoRoute:
        """Decide where a bundle of ``size`` bytes for ``destination`` goes at ``now``."""
        found = None
        if self.plan.reachable(self.node):
            found = self.best_route(
                destination, now, size=size, expires_at=expires_at, exclude=frozenset(exclude)
            )
        else:  # no contact leaves this node (a fleet routed by hierarchy only): no search
            _check_query(self.node, destination, size)
        if found is not None:
            return Forward(found.next_hop, _CONTACT_GRAPH, found)
        hop = self.static.get(destination)
        if hop is None or hop in exclude:
            if self.hierarchy is None:
                return NoRoute(self.plan.next_start_after(self.node, now))
            hop = self.hierarchy.next_hop(self.node, destination)
            if hop is None or hop in exclude:
                return NoRoute(self.plan.next_start_after(self.node, now))
            kind, made = _DEFAULT, self._default_forwards
        else:
            kind, made = _STATIC, self._static_forwards
        # A static or default decision is a value of its hop alone: made once, then shared
        # (every relayed bundle on every hop asks; Forward is frozen).
        forward = made.get(hop)
        if forward is None:
            forward = made[hop] = Forward(hop, kind)
        return forward

    def best_route(
        self,
        destination: int,
        now: int,
        *,
        size: int,
        expires_at: int | None = None,
        exclude: Collection[int] = (),
    ) -> Route | None:
        """The earliest-arrival contact route, or None (cached; see the module docstring)."""
        _check_query(self.node, destination, size)
        key = (self.plan.version, self.plan.releases)
        if self._cache_key != key:  # contacts changed or volume was given back: start over
            self._cache.clear()
            self._cache_key = key
        cached = self._lookup(destination, now)
        timing = None
        if cached is not None and cached.route is not None:
            timing = evaluate(self.plan, cached.route.hops, now, size)
            if _arrival(timing) != cached.route.arrival:
                # Not this bundle's optimum; if not even a 1-byte one, time moved on: refresh.
                timing = None
                if _arrival(evaluate(self.plan, cached.route.hops, now, 1)) != cached.route.arrival:
                    cached = None
        refreshed = cached is None
        if cached is None:
            cached = self._refresh(destination, now)
            if cached.route is not None:
                timing = evaluate(self.plan, cached.route.hops, now, size)
        answer = _answer(cached, timing, expires_at, exclude)
        if answer is not _SEARCH:
            self.hits += not refreshed  # answered without any search
            return answer  # type: ignore[return-value]
        self.searches += 1
        return best_route(
            self.plan,
            self.node,
            destination,
            now,
            nbytes=size,
            deadline=expires_at,
            exclude=exclude,
        )

    def prefetch(self, now: int) -> int:
        """One full search from ``now`` caching a route to every reachable node.

        Worth it for nodes that route to many destinations (coordinators); per-destination
        searches stop at their destination and are cheaper for a node with few. Returns the
        number of destinations cached.
        """
        self.searches += 1
        labels = search(self.plan, self.node, now)
        shared = (now, labels)
        for node in labels:
            if node != self.node:
                self._cache[node] = shared
        self._cache_key = (self.plan.version, self.plan.releases)
        return len(labels) - 1

    def book(self, route: Route, size: int) -> None:
        """Commit ``size`` bytes to every contact of ``route`` in this node's plan."""
        for c in route.hops:
            self.plan.book(c, size)

    def _lookup(self, destination: int, now: int) -> _Cached | None:
        entry = self._cache.get(destination)
        if entry is None:
            return None
        if isinstance(entry, tuple):  # settled by a search for another destination
            computed_at, labels = entry
            entry = self._cache[destination] = _Cached(
                computed_at, route_from_labels(labels, destination)
            )
        return entry if entry.computed_at <= now else None

    def _refresh(self, destination: int, now: int) -> _Cached:
        """Unrestricted search from ``now``; cache every settled node's route."""
        self.searches += 1
        labels = search(self.plan, self.node, now, destination=destination)
        shared = (now, labels)
        for node in labels:
            if node != self.node:
                self._cache[node] = shared
        if destination not in labels:
            self._cache[destination] = _Cached(now, None)
        cached = self._lookup(destination, now)
        assert cached is not None
        return cached


_SEARCH = object()  # the cache cannot answer this query: run a search


def _check_query(node: int, destination: int, size: int) -> None:
    if destination == node:
        raise ValueError("destination is this node: deliver locally, do not route")
    if size < 1:
        raise ValueError("bundle size must be at least one byte")


def _arrival(timing: tuple[int, int] | None) -> int | None:
    return None if timing is None else timing[1]


def _answer(
    cached: _Cached,
    timing: tuple[int, int] | None,
    expires_at: int | None,
    exclude: Collection[int],
) -> Route | object | None:
    """What a fresh cache entry proves about this bundle, or ``_SEARCH``.

    ``timing`` is the cached route evaluated for this bundle at ``now``.
    """
    route = cached.route
    if route is None:
        return None  # unreachable for 1 byte from an earlier time: unreachable now
    if expires_at is not None and route.arrival > expires_at:
        return None  # the cached arrival is a lower bound for every bundle
    if exclude and any(c.to_node in exclude for c in route.hops):
        return _SEARCH
    if timing is None or timing[1] != route.arrival:
        return _SEARCH
    return route if timing[0] == route.departure else attrs.evolve(route, departure=timing[0])
