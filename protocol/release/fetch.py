"""The fetch planner: which chunks a node lacks, and from which neighbour to fetch each.

Theory of operation
-------------------
Sans-IO, like the TCPCL sessions: :meth:`FetchPlanner.handle` takes an event with ``now``
(DTN ms) and returns actions; the runtime carries them out in order (``StoreChunk`` is made
durable before ``AnnounceHeld`` goes out: nothing announced is lost). The planner's state is
exactly what the issue asks to survive a partition: the chunks held (in the
:class:`.ledger.ArtifactLedger`), the requests in flight with their deadlines, and what each
neighbour said it holds. :meth:`FetchPlanner.snapshot` and :meth:`FetchPlanner.resume` carry
the in-flight part across a restart.

Each distinct chunk moves through :data:`TRANSITIONS`::

    MISSING --request--> REQUESTED --arrive--> HELD
       ^                    |
       +--timeout / lost / refused--+

A chunk is requested from **one** neighbour at a time and never once held, so no chunk is
fetched twice unless an answer outlives its deadline (the planner counts such late copies
in :attr:`FetchPlanner.duplicates`; a deadline longer than the round trip makes it zero).

Choosing the neighbour — the **cell-cache rule** that makes a release cross each region link
once, multicast-like rather than N unicast streams (seeds: "software distribution:
multicast/DTN style"): every neighbour is on a link of a :class:`LinkKind` — inside the cell,
inside the region, or between regions. A node fetches over an inter-region link only if it
is its region's gateway (``may_cross_region``); every other node waits until a holder inside
its region has the chunk. Among the holders with room for another request it prefers the
cheapest link kind, then the neighbour that timed out or sent bad bytes for this chunk least
often (so retries go round the holders), then the least loaded, then the lowest node number
(deterministic). Cell members fetch from their cell coordinator, coordinators from the region
gateway, gateways across the region link: each link carries each chunk once.
At most ``max_in_flight_per_neighbour`` requests wait on one neighbour (bounded work for it),
and what a neighbour announces is kept only for wanted chunks plus a bounded number of others
(bounded memory for us).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from .errors import ChunkMismatch, ChunkNotWanted
from .ledger import ArtifactLedger
from .manifest import Manifest

__all__ = [
    "TRANSITIONS",
    "AnnounceHeld",
    "ChunkReceived",
    "ChunkRefused",
    "ChunkState",
    "FetchConfig",
    "FetchPlanner",
    "FetchSnapshot",
    "HolderAnnounced",
    "InFlight",
    "LinkKind",
    "NeighbourLost",
    "ReleaseComplete",
    "ReleaseWanted",
    "RequestChunk",
    "StoreChunk",
    "Tick",
]


class LinkKind(enum.IntEnum):
    """What a link to a neighbour crosses; lower is cheaper and preferred."""

    CELL = 0
    REGION = 1
    INTER_REGION = 2


class ChunkState(enum.Enum):
    MISSING = "missing"
    REQUESTED = "requested"
    HELD = "held"


#: The chunk state machine: {state: {happening: new state}}; anything else is a bug here.
TRANSITIONS: Final[dict[ChunkState, dict[str, ChunkState]]] = {
    ChunkState.MISSING: {"request": ChunkState.REQUESTED, "arrive": ChunkState.HELD},
    ChunkState.REQUESTED: {
        "arrive": ChunkState.HELD,
        "timeout": ChunkState.MISSING,
        "lost": ChunkState.MISSING,
        "refused": ChunkState.MISSING,
    },
    ChunkState.HELD: {},
}


@attrs.frozen(slots=True)
class FetchConfig:
    #: How long to wait for an answer before asking another holder (ms). Set it above the
    #: round trip of the slowest link in use, or answers arrive twice.
    request_timeout: int = 60_000
    max_in_flight_per_neighbour: int = 8
    #: Chunk ids remembered per neighbour beyond those a wanted release names: a neighbour
    #: cannot make us keep more than this of its announcements (it re-announces when a
    #: contact resumes, so what is forgotten is learnt again).
    max_unwanted_per_neighbour: int = 4096
    #: Only the region gateway fetches across inter-region links.
    may_cross_region: bool = False


# --- events ----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ReleaseWanted:
    """Fetch this (verified) release; admitted against the quota first."""

    manifest: Manifest


@attrs.frozen(slots=True)
class HolderAnnounced:
    """``neighbour`` says it holds ``chunks`` (also sent again when a contact resumes)."""

    neighbour: int
    chunks: frozenset[ContentId]


@attrs.frozen(slots=True)
class ChunkReceived:
    neighbour: int
    chunk: ContentId
    data: bytes


@attrs.frozen(slots=True)
class NeighbourLost:
    """The link to ``neighbour`` is gone for good (not a mere gap in contact)."""

    neighbour: int


@attrs.frozen(slots=True)
class Tick:
    """Time passed: expire requests whose deadline is behind ``now``."""


Event = ReleaseWanted | HolderAnnounced | ChunkReceived | NeighbourLost | Tick


# --- actions ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class RequestChunk:
    neighbour: int
    chunk: ContentId
    deadline: int


@attrs.frozen(slots=True)
class StoreChunk:
    """Make ``data`` durable under ``chunk`` (verified) before anything else is sent."""

    chunk: ContentId
    data: bytes


@attrs.frozen(slots=True)
class AnnounceHeld:
    """Tell the neighbours this node now holds ``chunks``."""

    chunks: frozenset[ContentId]


@attrs.frozen(slots=True)
class ChunkRefused:
    neighbour: int
    chunk: ContentId
    code: str
    reason: str


@attrs.frozen(slots=True)
class ReleaseComplete:
    release_id: ContentId


Action = RequestChunk | StoreChunk | AnnounceHeld | ChunkRefused | ReleaseComplete


@attrs.frozen(slots=True)
class InFlight:
    neighbour: int
    deadline: int


@attrs.frozen(slots=True)
class FetchSnapshot:
    """What must survive a restart besides the ledger: requests in flight and the holders."""

    in_flight: tuple[tuple[ContentId, InFlight], ...]
    holders: tuple[tuple[int, frozenset[ContentId]], ...]


class FetchPlanner:
    """Plans chunk fetches for one node; see the module docstring.

    Cost: each event plans only the chunks whose situation it changed — announced, given
    back by a timeout or a loss, or waiting on a neighbour whose load just dropped — so a
    release of thousands of chunks costs a constant amount of work per event, not a scan.
    """

    def __init__(
        self,
        neighbours: Mapping[int, LinkKind],
        ledger: ArtifactLedger,
        config: FetchConfig = FetchConfig(),
    ) -> None:
        self.config = config
        self.ledger = ledger
        self._neighbours = dict(neighbours)
        self._holdings: dict[int, set[ContentId]] = {n: set() for n in self._neighbours}
        self._holders_of: dict[ContentId, set[int]] = {}
        self._in_flight: dict[ContentId, InFlight] = {}
        self._load: dict[int, int] = dict.fromkeys(self._neighbours, 0)
        # Chunks a neighbour holds that waited because it had no room for another request.
        self._blocked: dict[int, dict[ContentId, None]] = {n: {} for n in self._neighbours}
        # chunk -> neighbour -> times it timed out or sent bad bytes: the fewest is asked
        # first, so repeated timeouts go round the holders instead of hammering one.
        self._failures: dict[ContentId, Counter[int]] = {}
        self._failed_at: dict[int, set[ContentId]] = {}  # neighbour -> chunks it failed
        self._announced_complete: set[ContentId] = set()
        # Per event: chunks to plan, neighbours whose load dropped, releases to check.
        self._candidates: list[ContentId] = []
        self._freed: set[int] = set()
        self._check: set[ContentId] = set()
        self._replan_all = False
        #: Answers that arrived for chunks already held (late copies after a timeout).
        self.duplicates = 0

    # --- state -------------------------------------------------------------------------

    def state_of(self, chunk: ContentId) -> ChunkState:
        if self.ledger.holds(chunk):
            return ChunkState.HELD
        if chunk in self._in_flight:
            return ChunkState.REQUESTED
        return ChunkState.MISSING

    def in_flight(self) -> dict[ContentId, InFlight]:
        return dict(self._in_flight)

    def snapshot(self) -> FetchSnapshot:
        return FetchSnapshot(
            in_flight=tuple(sorted(self._in_flight.items())),
            holders=tuple(sorted((n, frozenset(c)) for n, c in self._holdings.items())),
        )

    @classmethod
    def resume(
        cls,
        neighbours: Mapping[int, LinkKind],
        ledger: ArtifactLedger,
        snapshot: FetchSnapshot,
        config: FetchConfig = FetchConfig(),
    ) -> FetchPlanner:
        """A planner after a restart: requests still in flight keep their deadlines."""
        planner = cls(neighbours, ledger, config)
        for neighbour, chunks in snapshot.holders:
            if neighbour in planner._holdings:
                for chunk in chunks:
                    planner._add_holder(neighbour, chunk)
        for chunk, request in snapshot.in_flight:
            if request.neighbour in planner._load and not ledger.holds(chunk):
                planner._in_flight[chunk] = request
                planner._load[request.neighbour] += 1
        planner._announced_complete = {r for r in ledger.releases() if ledger.complete(r)}
        planner._replan_all = True  # the first event plans every missing chunk again
        return planner

    def _move(self, chunk: ContentId, happening: str) -> ChunkState:
        state = self.state_of(chunk)
        new = TRANSITIONS[state].get(happening)
        if new is None:
            raise LocalProtocolError(f"chunk {chunk.short()}: no '{happening}' from {state.value}")
        return new

    # --- events ------------------------------------------------------------------------

    def handle(self, event: Event, now: int) -> list[Action]:
        """Apply ``event`` at ``now``; return the actions to carry out, in order."""
        actions: list[Action] = []
        self._candidates = []
        self._freed = set()
        self._check = set()
        if isinstance(event, ReleaseWanted):
            # QuotaExceeded leaves everything as it was.
            release_id = self.ledger.admit(event.manifest)
            self._candidates += (ref.id for ref in self.ledger.missing_of(release_id))
            self._check.add(release_id)
        elif isinstance(event, HolderAnnounced):
            self._on_announced(event)
        elif isinstance(event, ChunkReceived):
            self._on_chunk(event, actions)
        elif isinstance(event, NeighbourLost):
            self._on_lost(event.neighbour)
        elif isinstance(event, Tick):
            self._expire(now)
        if self._replan_all:
            self._replan_all = False
            self._candidates += (ref.id for ref in self.ledger.missing())
        self._complete(actions)
        self._plan(now, actions)
        return actions

    def _add_holder(self, neighbour: int, chunk: ContentId) -> None:
        self._holdings[neighbour].add(chunk)
        self._holders_of.setdefault(chunk, set()).add(neighbour)

    def _on_announced(self, event: HolderAnnounced) -> None:
        neighbour = event.neighbour
        holding = self._holdings.get(neighbour)
        if holding is None:
            return  # not a neighbour we fetch from
        for chunk in event.chunks:
            if self.ledger.wanted(chunk) is not None:
                self._add_holder(neighbour, chunk)
                self._candidates.append(chunk)
            elif len(holding) < self.config.max_unwanted_per_neighbour:
                self._add_holder(neighbour, chunk)
        # A neighbour heard from again gets another chance at the chunks it failed.
        for chunk in self._failed_at.pop(neighbour, ()):
            counts = self._failures.get(chunk)
            if counts is not None:
                counts.pop(neighbour, None)

    def _on_chunk(self, event: ChunkReceived, actions: list[Action]) -> None:
        chunk, neighbour = event.chunk, event.neighbour
        if self.ledger.holds(chunk):
            self.duplicates += 1
            self._drop_request(chunk, neighbour)
            return
        self._move(chunk, "arrive")
        try:
            self.ledger.store(chunk, event.data)
        except (ChunkNotWanted, ChunkMismatch) as exc:
            actions.append(ChunkRefused(neighbour, chunk, exc.code, exc.message))
            request = self._in_flight.get(chunk)
            if request is not None and request.neighbour == neighbour:
                self._move(chunk, "refused")
                self._drop_request(chunk, neighbour)
                self._failed(chunk, neighbour)
                self._candidates.append(chunk)
            return
        self._drop_any_request(chunk)
        self._failures.pop(chunk, None)
        self._check |= self.ledger.releases_naming(chunk)
        actions.append(StoreChunk(chunk, event.data))
        actions.append(AnnounceHeld(frozenset((chunk,))))
        if neighbour in self._holdings:
            self._add_holder(neighbour, chunk)  # it just proved it holds the chunk

    def _on_lost(self, neighbour: int) -> None:
        if neighbour not in self._holdings:
            return
        for chunk in self._holdings[neighbour]:
            self._holders_of[chunk].discard(neighbour)
        self._holdings[neighbour] = set()
        self._blocked[neighbour] = {}
        for chunk, request in list(self._in_flight.items()):
            if request.neighbour == neighbour:
                self._move(chunk, "lost")
                self._drop_request(chunk, neighbour)
                self._candidates.append(chunk)

    def _expire(self, now: int) -> None:
        for chunk, request in list(self._in_flight.items()):
            if request.deadline <= now:
                self._move(chunk, "timeout")
                self._drop_request(chunk, request.neighbour)
                self._failed(chunk, request.neighbour)
                self._candidates.append(chunk)

    def _failed(self, chunk: ContentId, neighbour: int) -> None:
        self._failures.setdefault(chunk, Counter())[neighbour] += 1
        self._failed_at.setdefault(neighbour, set()).add(chunk)

    def _drop_request(self, chunk: ContentId, neighbour: int) -> None:
        request = self._in_flight.get(chunk)
        if request is not None and request.neighbour == neighbour:
            del self._in_flight[chunk]
            self._load[neighbour] -= 1
            self._freed.add(neighbour)

    def _drop_any_request(self, chunk: ContentId) -> None:
        request = self._in_flight.get(chunk)
        if request is not None:
            self._drop_request(chunk, request.neighbour)

    def _complete(self, actions: list[Action]) -> None:
        for release_id in sorted(self._check):
            if release_id not in self._announced_complete and self.ledger.complete(release_id):
                self._announced_complete.add(release_id)
                actions.append(ReleaseComplete(release_id))

    # --- planning ----------------------------------------------------------------------

    def _allowed(self, neighbour: int) -> bool:
        kind = self._neighbours[neighbour]
        return kind is not LinkKind.INTER_REGION or self.config.may_cross_region

    def _plannable(self, chunk: ContentId) -> bool:
        ledger = self.ledger
        return (
            chunk not in self._in_flight
            and ledger.wanted(chunk) is not None
            and not ledger.holds(chunk)
        )

    def _plan(self, now: int, actions: list[Action]) -> None:
        """Request what this event made possible, in admission-then-manifest order; then fill
        the room of each neighbour whose load dropped from the chunks waiting on it (one at a
        time, so a neighbour with thousands waiting costs only the requests it can take)."""
        todo = {chunk for chunk in self._candidates if self._plannable(chunk)}
        for chunk in sorted(todo, key=self.ledger.position):
            self._plan_one(chunk, now, actions)
        limit = self.config.max_in_flight_per_neighbour
        for neighbour in sorted(self._freed):
            waiting = self._blocked[neighbour]
            while waiting and self._load[neighbour] < limit:
                chunk = next(iter(waiting))
                del waiting[chunk]
                if self._plannable(chunk):
                    self._plan_one(chunk, now, actions)

    def _plan_one(self, chunk: ContentId, now: int, actions: list[Action]) -> None:
        limit = self.config.max_in_flight_per_neighbour
        holders = [n for n in self._holders_of.get(chunk, ()) if self._allowed(n)]
        ready = [n for n in holders if self._load[n] < limit]
        if not ready:
            for n in holders:
                self._blocked[n][chunk] = None  # planned again when n has room
            return
        failures = self._failures.get(chunk, Counter())
        best = min(ready, key=lambda n: (self._neighbours[n], failures[n], self._load[n], n))
        self._move(chunk, "request")
        deadline = now + self.config.request_timeout
        self._in_flight[chunk] = InFlight(best, deadline)
        self._load[best] += 1
        actions.append(RequestChunk(best, chunk, deadline))
