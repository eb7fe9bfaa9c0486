"""Moved to :mod:`fleetwire.protocol.agent.routing` (pure: the bundle agent uses it); the
names stay importable from here."""

from fleetwire.protocol.agent.routing import (  # noqa: F401
    _SEARCH,
    Forward,
    Hierarchy,
    NoRoute,
    Route,
    RouteKind,
    Router,
    _answer,
    _arrival,
    _Cached,
    _Label,
    best_route,
    evaluate,
    route_from_labels,
    search,
)

__all__ = [
    "Forward",
    "Hierarchy",
    "NoRoute",
    "Route",
    "RouteKind",
    "Router",
    "best_route",
    "evaluate",
    "route_from_labels",
    "search",
]
