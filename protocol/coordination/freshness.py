"""Replay and freshness: a signed message acts at most once, however late a copy comes (spec §10).

Theory of operation
-------------------
A signature never expires, and bundle-level deduplication forgets a bundle once it expires, so
a copy of an old envelope wrapped in a new bundle looks new to the transport. Each coordination
role therefore keeps, per issuer and *purpose* (the resource a lease message is about, spec §4:
"for the same purpose"), the highest ``sequence`` it has acted on, and an ``issued_at`` window:

* a message whose ``issued_at`` is older than ``max_age_ms`` by our clock is **stale**;
* one whose ``issued_at`` is more than ``max_skew_ms`` ahead of our clock is from the **future**
  (the issuer's clock cannot be that far ahead of ours under the fleet's drift bound);
* one whose ``sequence`` is not above the highest acted on for (issuer, purpose) is a **replay**
  (or was overtaken by a newer message from the same issuer: acting on it would undo the newer).

:meth:`ReplayGuard.check` only judges; the role calls :meth:`ReplayGuard.acted` once it has
changed state because of the message. A message that changed nothing (a duplicate answered with
the same grant again) leaves no mark, so a reordered older message that *would* change something
is still judged on its own.

A role that restarted without its marks sets ``not_before`` to its start time: everything
issued before is stale to it (senders retry with new messages), so no mark it lost can matter.

Memory: one entry per (issuer, purpose) acted on within the window. :meth:`prune` drops entries
whose last acted-on message is older than the window; that is safe because a writer's
``issued_at`` does not decrease with its ``sequence`` (§4), so any message the dropped entry
would have refused is refused as stale anyway.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

__all__ = ["DEFAULT_WINDOW", "Freshness", "FreshnessWindow", "ReplayGuard"]


class Freshness(enum.Enum):
    """The verdict on one incoming message."""

    FRESH = "fresh"
    REPLAYED = "replayed"
    STALE = "stale"
    FUTURE = "future"

    # Identity hashes the singleton members (``_REFUSAL`` lookups skip Enum's Python-level
    # ``__hash__``); nothing iterates a set of them.
    __hash__ = object.__hash__


# Read per message as a global, not off the enum: in Python 3.11 an enum's class attribute
# goes through EnumType's __getattr__ hook (hundreds of instructions a read, a global a few).
_FRESH: Final = Freshness.FRESH
_STALE: Final = Freshness.STALE
_FUTURE: Final = Freshness.FUTURE
_REPLAYED: Final = Freshness.REPLAYED


@attrs.frozen(slots=True)
class FreshnessWindow:
    """How old (``max_age_ms``) and how far ahead (``max_skew_ms``) ``issued_at`` may be."""

    max_age_ms: int
    max_skew_ms: int

    def __attrs_post_init__(self) -> None:
        if self.max_age_ms <= 0 or self.max_skew_ms < 0:
            raise ValueError("max_age_ms must be positive and max_skew_ms not negative")


class ReplayGuard:
    """Per (issuer, purpose): the highest sequence acted on, and when it was issued."""

    __slots__ = ("_acted", "_next_prune", "not_before", "window")

    def __init__(self, window: FreshnessWindow, not_before: int | None = None) -> None:
        self.window = window
        #: Messages issued before this instant are stale: a role that restarted without its
        #: marks sets it to its start time, so nothing from before can act twice.
        self.not_before = not_before
        self._acted: dict[tuple[int, str], tuple[int, int]] = {}
        self._next_prune: int | None = None

    def check(
        self, issuer: int, purpose: str, sequence: int, issued_at: int, now: int
    ) -> Freshness:
        """Judge a message without recording anything."""
        if issued_at < now - self.window.max_age_ms:
            return _STALE
        if self.not_before is not None and issued_at < self.not_before:
            return _STALE
        if issued_at > now + self.window.max_skew_ms:
            return _FUTURE
        seen = self._acted.get((issuer, purpose))
        if seen is not None and sequence <= seen[0]:
            return _REPLAYED
        return _FRESH

    def acted(self, issuer: int, purpose: str, sequence: int, issued_at: int) -> None:
        """Record that a message changed our state; older sequences from now on are replays."""
        key = (issuer, purpose)
        seen = self._acted.get(key)
        if seen is None or sequence > seen[0]:
            self._acted[key] = (sequence, issued_at)

    def highest(self, issuer: int, purpose: str) -> int | None:
        """The highest sequence acted on for (issuer, purpose), if any."""
        seen = self._acted.get((issuer, purpose))
        return None if seen is None else seen[0]

    def tick(self, now: int) -> None:
        """Prune now and then (every half window), so memory follows the window."""
        if self._next_prune is None or now >= self._next_prune:
            self.prune(now)
            self._next_prune = now + self.window.max_age_ms // 2

    def prune(self, now: int) -> int:
        """Forget entries older than the window; returns how many went."""
        horizon = now - self.window.max_age_ms
        old = [key for key, (_, issued_at) in self._acted.items() if issued_at < horizon]
        for key in old:
            del self._acted[key]
        return len(old)

    def __len__(self) -> int:
        return len(self._acted)


#: A day back (a bundle's usual lifetime) and a minute ahead: a default for roles to tune.
DEFAULT_WINDOW: Final = FreshnessWindow(max_age_ms=86_400_000, max_skew_ms=60_000)
