"""Contact plan: when each node can send to each neighbour, how fast and how far away.

A *contact* is a scheduled interval during which ``from_node`` can transmit to ``to_node`` at
``rate_bps`` with one-way light time ``owlt_ms`` (the contact-plan model of ION's Contact Graph
Routing and of CCSDS 734.3-B-1 "Schedule-Aware Bundle Routing"). Contacts are directional: a
link that works both ways is two contacts.

Times are DTN times: integer milliseconds since 2000-01-01T00:00:00Z (the epoch of RFC 9171
§4.2.6). The Trio runtime measures time with ``trio.current_time()`` (float seconds, arbitrary
origin, virtual under ``trio.testing.MockClock``); :class:`Clock` converts between the two.

The plan also keeps this node's *bookings*: bytes already committed to a contact by earlier
forwarding decisions, so that the residual volume (rate x remaining duration - booked) can stop
a route from over-filling a contact. Bookings do not change :attr:`ContactPlan.version`; adding
or removing contacts does (routers key their caches on it).

Config form (TOML-compatible, what ``tomllib`` returns for ``[[contact]]`` tables)::

    [[contact]]
    from = 1
    to = 2
    start = 0            # DTN ms, or a TOML offset date-time
    end = 600000
    rate_bps = 1000000
    owlt_ms = 1200
    confidence = 1.0     # optional
"""

from __future__ import annotations

import bisect
import datetime as _dt
import math
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from ..errors import FleetwireError

#: Unix time (seconds) of the DTN epoch, 2000-01-01T00:00:00Z (RFC 9171 §4.2.6).
DTN_EPOCH_UNIX = 946_684_800
_DTN_EPOCH = _dt.datetime(2000, 1, 1, tzinfo=_dt.UTC)


class ContactPlanError(FleetwireError, ValueError):
    """A contact or a contact-plan mapping that cannot be used; the message names the field."""

    code = "contact-plan-invalid"


@attrs.frozen(slots=True)
class Clock:
    """Converts between Trio time (float seconds) and DTN time (int ms since 2000-01-01Z).

    One instant is pinned: ``trio_origin`` (a ``trio.current_time()`` value) is DTN time
    ``dtn_origin``. Under ``MockClock`` the usual choice is ``Clock(0.0, start_of_scenario)``.
    """

    trio_origin: float
    dtn_origin: int

    @classmethod
    def from_unix(cls, trio_now: float, unix_now: float) -> Clock:
        """Pin ``trio_now`` to wall-clock ``unix_now`` (e.g. ``time.time()``) for real runs."""
        return cls(trio_now, round((unix_now - DTN_EPOCH_UNIX) * 1000))

    def to_dtn(self, trio_time: float) -> int:
        """DTN ms at a Trio time (rounded to the nearest ms)."""
        return self.dtn_origin + round((trio_time - self.trio_origin) * 1000)

    def to_trio(self, dtn_ms: int) -> float:
        """Trio time at a DTN time; ``math.inf`` stays infinite."""
        if dtn_ms == math.inf:
            return math.inf
        return self.trio_origin + (dtn_ms - self.dtn_origin) / 1000


def dtn_ms_from_datetime(when: _dt.datetime) -> int:
    """DTN time of an aware datetime (naive ones are refused: no guessing time zones)."""
    if when.tzinfo is None:
        raise ContactPlanError("date-time without a UTC offset")
    delta = when - _DTN_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _non_negative(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 0:
        raise ContactPlanError(f"{attr.name}: must be a non-negative int, got {value!r}")


def _positive(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value <= 0:
        raise ContactPlanError(f"{attr.name}: must be a positive int, got {value!r}")


def _confidence(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise ContactPlanError(f"confidence: must be in (0, 1], got {value!r}")


@attrs.frozen(slots=True, cache_hash=True)  # hashed in routing's inner loop
class Contact:
    """One scheduled transmission opportunity ``from_node -> to_node`` over ``[start, end)``.

    ``rate_bps`` is bits per second, ``owlt_ms`` the one-way light time, ``confidence`` the
    planner's belief that the contact will happen (carried along; routes report the product).
    Plans list contacts in :meth:`sort_key` order (start first), which is also the
    deterministic tie-break of routing.
    """

    from_node: int = attrs.field(validator=_non_negative)
    to_node: int = attrs.field(validator=_non_negative)
    start: int = attrs.field(validator=_non_negative)
    end: int = attrs.field(validator=_non_negative)
    rate_bps: int = attrs.field(validator=_positive)
    owlt_ms: int = attrs.field(validator=_non_negative)
    confidence: float = attrs.field(default=1.0, validator=_confidence)

    def __attrs_post_init__(self) -> None:
        if self.end <= self.start:
            raise ContactPlanError(f"end: {self.end} is not after start {self.start}")
        if self.from_node == self.to_node:
            raise ContactPlanError(f"to: contact from node {self.from_node} to itself")

    def sort_key(self) -> tuple[int, int, int, int, int, int, float]:
        return (
            self.start,
            self.end,
            self.from_node,
            self.to_node,
            self.rate_bps,
            self.owlt_ms,
            self.confidence,
        )

    def is_active(self, now: int) -> bool:
        return self.start <= now < self.end

    def volume(self, since: int | None = None) -> int:
        """Bytes the contact can carry from ``since`` (default: its start) to its end."""
        begin = self.start if since is None else max(since, self.start)
        return max(0, self.end - begin) * self.rate_bps // 8000

    def transmit_ms(self, nbytes: int) -> float:
        """Serialization time of ``nbytes`` at this contact's rate, in ms."""
        return nbytes * 8000 / self.rate_bps


@attrs.define(slots=True)
class _PairIndex:
    """Contacts of one ``(from, to)`` pair sorted by start, plus a running max of their ends.

    ``max_end[i]`` is non-decreasing, so ``bisect`` finds the first contact that may still be
    open at a time ``t`` even when contacts overlap.
    """

    contacts: list[Contact]
    starts: list[int]
    max_end: list[int]

    @classmethod
    def build(cls, contacts: Iterable[Contact]) -> _PairIndex:
        ordered = sorted(contacts, key=Contact.sort_key)
        max_end: list[int] = []
        high = -1
        for c in ordered:
            high = max(high, c.end)
            max_end.append(high)
        return cls(ordered, [c.start for c in ordered], max_end)

    def open_from(self, t: int) -> int:
        """Index of the first contact that could be open at or after ``t``."""
        return bisect.bisect_right(self.max_end, t)


_EMPTY_PAIR = _PairIndex([], [], [])


class ContactPlan:
    """A mutable set of contacts with per-node and per-pair indexes and this node's bookings.

    Indexes are rebuilt lazily per pair, so bulk loading stays O(n log n). Every add/remove
    bumps :attr:`version`.
    """

    def __init__(self, contacts: Iterable[Contact] = ()) -> None:
        self._contacts: set[Contact] = set()
        self._pairs: dict[tuple[int, int], set[Contact]] = {}
        self._out: dict[int, set[int]] = {}
        self._pair_index: dict[tuple[int, int], _PairIndex] = {}
        self._neighbours: dict[int, tuple[int, ...]] = {}
        self._adjacency: dict[int, tuple[tuple[int, _PairIndex], ...]] = {}
        self._booked: dict[Contact, int] = {}
        #: Contacts leaving each node (only nodes with at least one): :meth:`reachable`.
        self._leaving: dict[int, int] = {}
        self._bookings_view = types.MappingProxyType(self._booked)
        self.version = 0
        self.releases = 0  # bumped when volume is given back (routers' caches key on it)
        for c in contacts:
            self.add(c)

    # --- editing ------------------------------------------------------------------------

    def add(self, contact: Contact) -> None:
        if contact in self._contacts:
            raise ContactPlanError(f"duplicate contact {contact}")
        self._contacts.add(contact)
        key = (contact.from_node, contact.to_node)
        self._pairs.setdefault(key, set()).add(contact)
        self._out.setdefault(contact.from_node, set()).add(contact.to_node)
        self._leaving[contact.from_node] = self._leaving.get(contact.from_node, 0) + 1
        self._touch(key)

    def remove(self, contact: Contact) -> None:
        """Remove a contact (KeyError if absent); its booking goes with it."""
        self._contacts.remove(contact)
        key = (contact.from_node, contact.to_node)
        pair = self._pairs[key]
        pair.discard(contact)
        if not pair:
            del self._pairs[key]
            self._out[contact.from_node].discard(contact.to_node)
        self._booked.pop(contact, None)
        left = self._leaving[contact.from_node] - 1
        if left:
            self._leaving[contact.from_node] = left
        else:
            del self._leaving[contact.from_node]
        self._touch(key)

    def _touch(self, key: tuple[int, int]) -> None:
        self.version += 1
        self._pair_index.pop(key, None)
        self._neighbours.pop(key[0], None)
        self._adjacency.pop(key[0], None)

    # --- queries ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._contacts)

    def __iter__(self) -> Iterator[Contact]:
        return iter(sorted(self._contacts, key=Contact.sort_key))

    def __contains__(self, contact: object) -> bool:
        return contact in self._contacts

    def nodes(self) -> set[int]:
        return {n for c in self._contacts for n in (c.from_node, c.to_node)}

    def reachable(self, node: int) -> bool:
        """Whether any contact leaves ``node`` at all (past, present or future): without
        one, no contact route starts there and a router need not search."""
        return node in self._leaving

    def neighbours(self, node: int) -> tuple[int, ...]:
        """Nodes ``node`` has at least one contact to, ascending."""
        cached = self._neighbours.get(node)
        if cached is None:
            cached = self._neighbours[node] = tuple(sorted(self._out.get(node, ())))
        return cached

    def adjacency(self, node: int) -> tuple[tuple[int, _PairIndex], ...]:
        """``(peer, pair index)`` for every neighbour of ``node``: routing's inner loop."""
        cached = self._adjacency.get(node)
        if cached is None:
            cached = self._adjacency[node] = tuple(
                (peer, self.pair_index(node, peer)) for peer in self.neighbours(node)
            )
        return cached

    def pair_index(self, from_node: int, to_node: int) -> _PairIndex:
        key = (from_node, to_node)
        index = self._pair_index.get(key)
        if index is None:
            pair = self._pairs.get(key)
            if not pair:
                return _EMPTY_PAIR
            index = self._pair_index[key] = _PairIndex.build(pair)
        return index

    def between(self, from_node: int, to_node: int) -> Sequence[Contact]:
        """Contacts ``from_node -> to_node`` in start order."""
        return tuple(self.pair_index(from_node, to_node).contacts)

    def contacts_from(self, node: int) -> list[Contact]:
        """Every contact leaving ``node``, in start order."""
        out: list[Contact] = []
        for peer in self.neighbours(node):
            out.extend(self.pair_index(node, peer).contacts)
        out.sort(key=Contact.sort_key)
        return out

    def active(
        self, now: int, from_node: int | None = None, to_node: int | None = None
    ) -> list[Contact]:
        """Contacts open at ``now`` (start <= now < end), optionally filtered by endpoints."""
        if from_node is not None and to_node is not None:
            index = self.pair_index(from_node, to_node)
            i = index.open_from(now)
            return [c for c in index.contacts[i:] if c.start <= now < c.end]
        source: Iterable[Contact] = (
            self.contacts_from(from_node) if from_node is not None else iter(self)
        )
        return [
            c
            for c in source
            if c.start <= now < c.end and (to_node is None or c.to_node == to_node)
        ]

    def next_contact(self, from_node: int, to_node: int, now: int) -> Contact | None:
        """The contact ``from_node -> to_node`` open at ``now``, else the next one to open.

        Among several candidates the earliest start wins (then the plan order).
        """
        index = self.pair_index(from_node, to_node)
        best: Contact | None = None
        for c in index.contacts[index.open_from(now) :]:
            if c.end <= now:
                continue
            if best is None or max(c.start, now) < max(best.start, now):
                best = c
            if c.start > now:
                break  # later ones start later still
        return best

    def next_start_after(self, node: int, now: int) -> int | None:
        """Earliest start, strictly after ``now``, of any contact leaving ``node``."""
        best: int | None = None
        for peer in self.neighbours(node):
            starts = self.pair_index(node, peer).starts
            i = bisect.bisect_right(starts, now)
            if i < len(starts) and (best is None or starts[i] < best):
                best = starts[i]
        return best

    # --- bookings (residual volume) -----------------------------------------------------

    def book(self, contact: Contact, nbytes: int) -> None:
        """Record ``nbytes`` committed to ``contact`` (KeyError if the contact is unknown)."""
        if contact not in self._contacts:
            raise KeyError(contact)
        if nbytes < 0:
            raise ValueError("cannot book a negative volume")
        self._booked[contact] = self._booked.get(contact, 0) + nbytes

    def release(self, contact: Contact, nbytes: int) -> None:
        """Give back a booking (a bundle that was not sent after all)."""
        self.releases += 1
        left = self._booked.get(contact, 0) - nbytes
        if left > 0:
            self._booked[contact] = left
        else:
            self._booked.pop(contact, None)

    def booked(self, contact: Contact) -> int:
        return self._booked.get(contact, 0)

    @property
    def bookings(self) -> Mapping[Contact, int]:
        """Read-only view of every non-zero booking (routing reads it in its inner loop)."""
        return self._bookings_view

    def residual_volume(self, contact: Contact, at: int) -> int:
        """Bytes still free on ``contact`` for a transmission that starts at ``at``."""
        return contact.volume(at) - self._booked.get(contact, 0)

    # --- config mapping -----------------------------------------------------------------

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ContactPlan:
        """Load ``{"contact": [{from, to, start, end, rate_bps, owlt_ms, confidence?}, ...]}``."""
        if not isinstance(mapping, Mapping):
            raise ContactPlanError("contact plan: expected a table")
        unknown = set(mapping) - {"contact"}
        if unknown:
            raise ContactPlanError(f"contact plan: unknown keys {sorted(unknown)}")
        entries = mapping.get("contact", [])
        if not isinstance(entries, list):
            raise ContactPlanError("contact: expected an array of tables")
        plan = cls()
        for i, entry in enumerate(entries):
            try:
                plan.add(_contact_from_mapping(entry))
            except ContactPlanError as exc:
                raise ContactPlanError(f"contact[{i}]: {exc.message}") from None
        return plan

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of :meth:`from_mapping` (times as DTN ms ints), in plan order."""
        return {
            "contact": [
                {
                    "from": c.from_node,
                    "to": c.to_node,
                    "start": c.start,
                    "end": c.end,
                    "rate_bps": c.rate_bps,
                    "owlt_ms": c.owlt_ms,
                    "confidence": float(c.confidence),
                }
                for c in self
            ]
        }


_REQUIRED = ("from", "to", "start", "end", "rate_bps", "owlt_ms")


def _contact_from_mapping(entry: object) -> Contact:
    if not isinstance(entry, Mapping):
        raise ContactPlanError("expected a table")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ContactPlanError(f"missing {missing}")
    unknown = set(entry) - {*_REQUIRED, "confidence"}
    if unknown:
        raise ContactPlanError(f"unknown keys {sorted(unknown)}")
    times = {}
    for key in ("start", "end"):
        value = entry[key]
        times[key] = dtn_ms_from_datetime(value) if isinstance(value, _dt.datetime) else value
    return Contact(
        entry["from"],
        entry["to"],
        times["start"],
        times["end"],
        entry["rate_bps"],
        entry["owlt_ms"],
        entry.get("confidence", 1.0),
    )
