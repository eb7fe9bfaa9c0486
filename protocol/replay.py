"""Replay protection for verified messages: a message acts once, however late a copy comes.

Theory of operation
-------------------
A signature does not expire (spec §10), so a reader must remember what it has accepted. The
:class:`ReplayGuard` answers, for a message whose signature and signer already verified, one
question: *has this (issuer, sequence) acted here before, or could it have?* It keeps, per
issuer, a **floor** and the **sparse window** of sequences accepted above it (spec §4: a writer
increases ``sequence`` with every message):

* ``sequence <= floor`` — refused (``replay-sequence-old``): too far behind to be told apart
  from a replay, because its record has been let go.
* a sequence in the window — refused: ``replay-duplicate`` when the content id is the one
  accepted under that sequence (the same message again), ``replay-sequence-reused`` when it
  is another message (the issuer broke §4, or a key was stolen).
* otherwise accepted, and recorded. The highest accepted sequence is the high-water mark.

Why a sparse window and not a bitmap below the high-water mark (as IPsec's anti-replay window
does, RFC 4303 §3.4.3): over DTN one issuer's messages take different paths and wait out
different contacts, so they arrive out of order by hours or days; and fleetwire writers derive
``sequence`` from their clock (ms × 1024, so no counter has to survive a restart), so two
messages a second apart differ by a million. A bitmap wide enough to cover a day of reordering
would be gigabits. The set of sequences actually accepted is small (one entry per message this
node accepted from that issuer) and covers any reordering.

The window is bounded two ways, and each bound refuses rather than forgets silently:

* **time**: a message is accepted only if its ``issued_at`` lies in
  ``[now - max_age, now + max_future]`` (``issued-at-too-old`` / ``issued-at-in-future``), and
  never before ``not_before`` (a node without durable replay state accepts nothing issued
  before it started). So a record can be let go once ``issued_at + max_age`` has passed
  (``keep_until``): any copy of that message is refused by the time check from then on. These
  are the content-id tombstones: kept exactly as long as the acceptance window, not as long as
  some bundle's lifetime.
* **count**: at most ``max_per_issuer`` records per issuer; past that the lowest is let go and
  the floor rises to it. Only stragglers older than the issuer's newest ``max_per_issuer``
  accepted messages are refused for it. Issuers are only keys the trust store vouches for (the
  guard runs after the signature check), so the number of issuers is the fleet's size.

Pure: no I/O, no clock. The caller persists what :meth:`ReplayGuard.check` accepted (each
:class:`Seen` and each floor change) and hands it back with :meth:`ReplayGuard.restore` after a
restart; until then a restarted reader could be fooled again.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

__all__ = [
    "AUTONOMY_WINDOW_MS",
    "DEFAULT_BUNDLE_LIFETIME_MS",
    "DEFAULT_MAX_AGE_MS",
    "DEFAULT_MAX_FUTURE_MS",
    "DEFAULT_MAX_PER_ISSUER",
    "Accept",
    "Refuse",
    "ReplayCode",
    "ReplayGuard",
    "ReplayPolicy",
    "Seen",
]

#: The autonomy window, 30 days: the longest partition a cell is designed to run through
#: (DESIGN.md, Fleet shape; spec §10).
AUTONOMY_WINDOW_MS: Final = 30 * 86_400_000
#: A message may wait out the whole window in a store and still be read: the replay window is
#: the autonomy window (widened by light time), ...
DEFAULT_MAX_AGE_MS: Final = AUTONOMY_WINDOW_MS
#: ... and the bundles a node creates live as long, so nothing sent into a partition expires
#: before the partition the fleet is designed for has healed.
DEFAULT_BUNDLE_LIFETIME_MS: Final = AUTONOMY_WINDOW_MS
#: Five minutes of clock error between writer and reader.
DEFAULT_MAX_FUTURE_MS: Final = 5 * 60_000
DEFAULT_MAX_PER_ISSUER: Final = 4096


class ReplayCode(enum.Enum):
    """Why the guard refused a message; the values are the stable codes (spec §10)."""

    DUPLICATE = "replay-duplicate"
    SEQUENCE_REUSED = "replay-sequence-reused"
    SEQUENCE_OLD = "replay-sequence-old"
    TOO_OLD = "issued-at-too-old"
    IN_FUTURE = "issued-at-in-future"


def _non_negative(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, not {value!r}")


@attrs.frozen(slots=True)
class ReplayPolicy:
    """The acceptance window (ms, relative to the reader's clock) and the per-issuer bound.

    ``max_age`` should cover the longest time a genuine message can take to arrive: the
    bundle lifetime writers use, plus the contact plan's light time (see :meth:`widened`).
    """

    max_age: int = attrs.field(default=DEFAULT_MAX_AGE_MS, validator=_non_negative)
    max_future: int = attrs.field(default=DEFAULT_MAX_FUTURE_MS, validator=_non_negative)
    max_per_issuer: int = attrs.field(default=DEFAULT_MAX_PER_ISSUER, validator=_non_negative)

    def widened(self, light_time_ms: int) -> ReplayPolicy:
        """This policy with ``light_time_ms`` (the plan's longest one-way light time) added to
        ``max_age``: a message that spent that long in flight is still genuine."""
        return attrs.evolve(self, max_age=self.max_age + max(0, light_time_ms))


@attrs.frozen(slots=True)
class Seen:
    """One accepted message, as the guard remembers it until ``keep_until``."""

    issuer: int
    sequence: int
    issued_at: int
    content_id: bytes
    keep_until: int


@attrs.frozen(slots=True)
class Accept:
    """Accepted: persist ``seen`` (and ``floor`` for ``seen.issuer`` when not None)."""

    seen: Seen
    floor: int | None = None


@attrs.frozen(slots=True)
class Refuse:
    code: ReplayCode
    reason: str


#: Later than any ``keep_until``: the ``earliest`` of an issuer with nothing to let go.
_NEVER: Final = 1 << 63


class _Issuer:
    """One issuer's floor and window: sequence -> Seen, a min-heap of sequences, and a bound
    at or below the earliest ``keep_until`` in the window (so :meth:`ReplayGuard.prune`
    passes by an issuer with nothing to let go without reading its window)."""

    __slots__ = ("earliest", "floor", "heap", "window")

    def __init__(self, floor: int = -1) -> None:
        self.floor = floor
        self.window: dict[int, Seen] = {}
        self.heap: list[int] = []
        self.earliest = _NEVER

    def add(self, seen: Seen) -> None:
        self.window[seen.sequence] = seen
        heapq.heappush(self.heap, seen.sequence)
        if seen.keep_until < self.earliest:
            self.earliest = seen.keep_until

    def drop_lowest(self) -> int:
        sequence = heapq.heappop(self.heap)
        del self.window[sequence]
        return sequence


class ReplayGuard:
    """Per-issuer replay windows (module docstring). Pure: ``now`` (DTN ms) comes in."""

    def __init__(self, policy: ReplayPolicy | None = None, *, not_before: int = 0) -> None:
        self.policy = policy or ReplayPolicy()
        #: Nothing issued before this is accepted (a reader that lost its state sets its start).
        self.not_before = not_before
        self._issuers: dict[int, _Issuer] = {}

    def restore(self, seen: Iterable[Seen], floors: Mapping[int, int]) -> None:
        """Take back what a previous run persisted (records past ``keep_until`` are harmless)."""
        for issuer, floor in floors.items():
            self._issuer(issuer).floor = max(self._issuer(issuer).floor, floor)
        for record in seen:
            state = self._issuer(record.issuer)
            if record.sequence > state.floor and record.sequence not in state.window:
                state.add(record)

    def check(
        self, issuer: int, sequence: int, issued_at: int, content_id: bytes, now: int
    ) -> Accept | Refuse:
        """Accept (and remember) or refuse one verified message."""
        policy = self.policy
        if issued_at > now + policy.max_future:
            return Refuse(
                ReplayCode.IN_FUTURE,
                f"issued_at {issued_at} is {issued_at - now} ms ahead of this node's clock "
                f"(max_future {policy.max_future} ms)",
            )
        if issued_at < now - policy.max_age:
            return Refuse(
                ReplayCode.TOO_OLD,
                f"issued_at {issued_at} is {now - issued_at} ms old (max_age {policy.max_age} ms)",
            )
        if issued_at < self.not_before:
            return Refuse(
                ReplayCode.TOO_OLD,
                f"issued_at {issued_at} is before {self.not_before}, when this node's replay "
                "memory starts (it keeps none across restarts)",
            )
        # Every delivery comes here: _issuer and _Issuer.add inlined for a known issuer.
        state = self._issuers.get(issuer)
        if state is None:
            state = self._issuer(issuer)
        if sequence <= state.floor:
            return Refuse(
                ReplayCode.SEQUENCE_OLD,
                f"sequence {sequence} of issuer {issuer} is at or below its floor {state.floor}",
            )
        earlier = state.window.get(sequence)
        if earlier is not None:
            if earlier.content_id == content_id:
                return Refuse(
                    ReplayCode.DUPLICATE,
                    f"message {sequence} of issuer {issuer} was accepted already",
                )
            return Refuse(
                ReplayCode.SEQUENCE_REUSED,
                f"issuer {issuer} used sequence {sequence} for another message already",
            )
        keep_until = issued_at + policy.max_age
        seen = Seen(issuer, sequence, issued_at, content_id, keep_until)
        state.window[sequence] = seen
        heapq.heappush(state.heap, sequence)
        if keep_until < state.earliest:
            state.earliest = keep_until
        floor = None
        while len(state.window) > policy.max_per_issuer:
            floor = state.floor = state.drop_lowest()
        return Accept(seen, floor)

    def prune(self, now: int) -> int:
        """Let go of records whose ``keep_until`` has passed; return how many went.

        Only the windows of issuers whose ``earliest`` has passed are read: with the default
        thirty-day ``max_age`` a node that prunes every hour would otherwise read every record
        it holds every hour, for nothing, until the first of them is a month old (in a
        simulated 1,000-node fleet the pruning cost seven times as much per message over a
        day as over its first three hours, and growing).
        """
        dropped = 0
        due = [(issuer, state) for issuer, state in self._issuers.items() if state.earliest <= now]
        for issuer, state in due:
            stale: list[int] = []
            earliest = _NEVER
            for sequence, seen in state.window.items():
                keep_until = seen.keep_until
                if keep_until <= now:
                    stale.append(sequence)
                elif keep_until < earliest:
                    earliest = keep_until
            state.earliest = earliest
            if not stale:
                continue
            for sequence in stale:
                del state.window[sequence]
            state.heap = list(state.window)
            heapq.heapify(state.heap)
            dropped += len(stale)
            if not state.window and state.floor < 0:
                del self._issuers[issuer]
        return dropped

    def high_water_mark(self, issuer: int) -> int | None:
        """The highest sequence accepted from ``issuer`` that is still remembered."""
        state = self._issuers.get(issuer)
        if state is None:
            return None
        top = max(state.window, default=state.floor)
        return top if top >= 0 else None

    def remembered(self) -> int:
        """How many records the guard holds (its memory, for budgets and tests)."""
        return sum(len(state.window) for state in self._issuers.values())

    def _issuer(self, issuer: int) -> _Issuer:
        state = self._issuers.get(issuer)
        if state is None:
            state = self._issuers[issuer] = _Issuer()
        return state
