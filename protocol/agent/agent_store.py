"""The bundle agent's store: a small synchronous interface, and the in-memory implementation.

Theory of operation
-------------------
The agent (:mod:`.agent`) never does I/O; it calls its store synchronously, as NASA's bplib
calls its storage service. Whatever a method returns is the truth the agent acts on:

* ``put`` returns :class:`~.store.Accepted` only once the bundle is held as durably as the
  store can hold it (a file-backed store: committed). The agent answers a link's transfer
  "accepted" only after ``put`` returned, so an acknowledged bundle is never lost. A driver
  that wants group commit batches *around* the agent: it feeds several received bundles,
  then commits once, then sends the link acknowledgements the agent asked for — the agent
  never acknowledges by itself.
* duplicates (same store bundle key, or same content key) are answered
  :class:`~.store.Duplicate` and change nothing; quotas (:func:`~.store.check_quota`) are
  answered :class:`~.store.Refused` with nothing stored.
* ``tombstone`` keeps only a bundle's record (ids, times) under ``delivered``/``forwarded``
  so a late copy is still a duplicate until the record expires; ``expire`` drops every
  record whose time has come, earliest first.
* the replay memory (:mod:`fleetwire.protocol.replay`) lives beside the bundles so that a
  restart cannot make a replay acceptable again (``remember``/``remembered``/``forget_seen``).

:class:`MemoryAgentStore` keeps all of it in dicts and one expiry heap (lazy deletion, swept
when stale entries outnumber live ones): O(1) put/get/tombstone, O(k log n) to expire k
records. It is not durable (``durable`` is
``False``): the simulator and tests use it; a SQLite store behind the same interface is the
runtime's durable one.

:class:`PyMemoryAgentStore` is the reference; :class:`MemoryAgentStore`, the one to use, is the
same store with its per-hop methods (put, tombstone, delete, expire, next_expiry, remember) in
the C accelerator where it is built (``_agent_store.c``): they read and write the reference's
own slots and hand anything off the common road (a quota that can refuse, keyword arguments,
a tombstone of a tombstone, floors) to the reference's methods, and a test holds the two to
the same answers and the same state after every operation.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar, Protocol

import attrs

from ..replay import Seen
from .bundling import LOCAL
from .store import (
    Accepted,
    Duplicate,
    DuplicateOf,
    PutResult,
    Quota,
    SourceShares,
    StoredBundle,
    check_quota,
)

__all__ = ["AgentStore", "MemoryAgentStore", "PyMemoryAgentStore", "without_accelerator"]

_Tombstone = tuple[str, int, bytes | None, str, str, int]


def _record(key: bytes, tombstone: _Tombstone) -> StoredBundle:
    next_hop, expires_at, content, source, destination, received_at = tombstone
    return StoredBundle(key, content, source, destination, expires_at, received_at, b"", next_hop)


class AgentStore(Protocol):
    """What the bundle agent needs from a store (module docstring); all calls synchronous."""

    @property
    def durable(self) -> bool:
        """Whether what the store holds survives the process."""
        ...

    def put(self, bundle: StoredBundle) -> PutResult:
        """Hold ``bundle``; :class:`Accepted` only once it is durable."""
        ...

    def get(self, bundle_id: bytes) -> StoredBundle | None:
        """The held bundle (or tombstone) with this key, or ``None``."""
        ...

    def pending_for(self, next_hop: str | None, limit: int) -> list[StoredBundle]:
        """Up to ``limit`` bundles held under ``next_hop`` (``None``: not delivered or
        forwarded yet), oldest first."""
        ...

    def tombstone(self, bundle_id: bytes, next_hop: str, expires_at: int | None = None) -> bool:
        """Keep only the record of a bundle that is done with, until ``expires_at`` at the
        latest; ``False`` if it was not held."""
        ...

    def delete(self, bundle_id: bytes) -> bool:
        """Drop a bundle; ``False`` if it was not held."""
        ...

    def expire(self, now: int) -> list[bytes]:
        """Drop every bundle and record with ``expires_at <= now``; their keys, earliest first."""
        ...

    def next_expiry(self) -> int | None:
        """The earliest ``expires_at`` held, or ``None`` when the store is empty."""
        ...

    def remember(self, seen: Sequence[Seen], floors: Mapping[int, int]) -> None:
        """Keep replay records and raise per-issuer floors (durable on return if the store is)."""
        ...

    def remembered(self) -> tuple[list[Seen], dict[int, int]]:
        """Every replay record kept, and the per-issuer floors."""
        ...

    def forget_seen(self, now: int) -> int:
        """Drop replay records with ``keep_until <= now``; how many went."""
        ...

    def count(self) -> int:
        """Bundles and records held."""
        ...

    def bytes_used(self) -> int:
        """Bytes of the bundles held (tombstones count nothing)."""
        ...


class PyMemoryAgentStore:
    """An :class:`AgentStore` in memory (module docstring): the reference, in Python."""

    __slots__ = ("_bounded", "_by_content", "_bundles", "_bytes", "_expiry", "_floors", "_head",
                 "_quota", "_seen", "_seen_expiry", "_shares", "_sequence", "_sharing",
                 "_tombstones")  # fmt: skip

    def __init__(self, quota: Quota | None = None) -> None:
        self._quota = quota or Quota()
        #: Whether any quota can refuse a bundle: without a bound, ``check_quota`` always
        #: answers ``None`` (a share is a part of a bound), so ``put`` does not ask it.
        self._bounded = self._quota.max_bundles is not None or self._quota.max_bytes is not None
        #: Whether any neighbour's share is bounded: only then are the shares kept (only
        #: check_quota reads them, and it reads them only then).
        self._sharing = self._bounded and self._quota.source_share is not None
        #: Held bundles by key, in arrival order (dicts keep insertion order).
        self._bundles: dict[bytes, StoredBundle] = {}
        #: Tombstones, lighter than a record (a relay keeps one per bundle it forwarded):
        #: key → (next hop, expires at, content key, source, destination, received at).
        self._tombstones: dict[bytes, _Tombstone] = {}
        self._by_content: dict[bytes, bytes] = {}
        self._expiry: list[tuple[int, int, bytes]] = []
        #: The heap entry next_expiry last found current (see there; cleared when its key changes).
        self._head: tuple[int, int, bytes] | None = None
        self._sequence = 0
        self._bytes = 0
        self._shares = SourceShares()
        self._seen: dict[tuple[int, int], Seen] = {}
        self._seen_expiry: list[tuple[int, int, int]] = []
        self._floors: dict[int, int] = {}

    #: Stale expiry entries tolerated beyond the live ones before a sweep (``_compact``).
    _slack: ClassVar[int] = 1024

    @property
    def durable(self) -> bool:
        return False

    def put(self, bundle: StoredBundle) -> PutResult:
        # Called for every bundle on every hop: attributes read once into locals.
        key = bundle.bundle_id
        bundles = self._bundles
        if key in bundles or key in self._tombstones:
            return Duplicate(key, DuplicateOf.BUNDLE_ID, key)
        content = bundle.content_id
        if content is not None:
            existing = self._by_content.get(content)
            if existing is not None:
                return Duplicate(key, DuplicateOf.CONTENT_ID, existing)
        source = bundle.received_from
        if self._bounded:
            refused = check_quota(
                self._quota, len(bundles) + len(self._tombstones), self._bytes, bundle,
                self._shares.of(source),
            )  # fmt: skip
            if refused is not None:
                return refused
        bundles[key] = bundle
        if content is not None:
            self._by_content[content] = key
        size = len(bundle.data)  # StoredBundle.size
        self._bytes += size
        if source is not None and self._sharing:
            self._shares.add(source, 1, size)
        sequence = self._sequence = self._sequence + 1
        heapq.heappush(self._expiry, (bundle.expires_at, sequence, key))
        return Accepted(key)

    def restore(self, bundle: StoredBundle) -> None:
        """Hold ``bundle`` read back from a durable store at start, tombstone or not, without
        the quota check: it was within the quota when it was accepted, and refusing it now
        would lose an acknowledged bundle."""
        bounded, self._bounded = self._bounded, False
        try:
            self.put(bundle)
        finally:
            self._bounded = bounded
        if bundle.next_hop not in (None, LOCAL):
            self.tombstone(bundle.bundle_id, bundle.next_hop, bundle.expires_at)

    def get(self, bundle_id: bytes) -> StoredBundle | None:
        found = self._bundles.get(bundle_id)
        if found is None and bundle_id in self._tombstones:
            return _record(bundle_id, self._tombstones[bundle_id])
        return found

    def pending_for(self, next_hop: str | None, limit: int) -> list[StoredBundle]:
        found: list[StoredBundle] = []
        if next_hop is None or next_hop == LOCAL or not next_hop.isalpha():
            for bundle in self._bundles.values():
                if bundle.next_hop == next_hop:
                    found.append(bundle)
                    if len(found) >= limit:
                        break
            return found
        for key, tombstone in self._tombstones.items():
            if tombstone[0] == next_hop:
                found.append(_record(key, tombstone))
                if len(found) >= limit:
                    break
        return found

    def tombstone(self, bundle_id: bytes, next_hop: str, expires_at: int | None = None) -> bool:
        # Every bundle delivered or forwarded ends here: _release inlined.
        head = self._head
        if head is not None and head[2] == bundle_id:
            self._head = None  # its time may change (next_expiry)
        bundle = self._bundles.pop(bundle_id, None)
        if bundle is None:
            tombstone = self._tombstones.get(bundle_id)
            if tombstone is None:
                return False
            bundle = _record(bundle_id, tombstone)
        else:
            size = len(bundle.data)
            self._bytes -= size
            if bundle.received_from is not None and self._sharing:
                self._shares.add(bundle.received_from, -1, -size)
        held_until = bundle.expires_at
        until = held_until if expires_at is None or expires_at >= held_until else expires_at
        self._tombstones[bundle_id] = (
            next_hop, until, bundle.content_id, bundle.source, bundle.destination,
            bundle.received_at,
        )  # fmt: skip
        if until < held_until:
            sequence = self._sequence = self._sequence + 1
            expiry = self._expiry
            heapq.heappush(expiry, (until, sequence, bundle_id))
            # The entry at held_until is stale now; a relay's forwarded tombstones leave one
            # each (a day's lifetime against a quarter hour's record), so sweep them out once
            # they outnumber the live ones: amortised O(1), and the same order of expiry.
            if len(expiry) > 2 * (len(self._bundles) + len(self._tombstones)) + self._slack:
                self._compact()
        return True

    def _compact(self) -> None:
        """Drop every stale expiry entry (lazy deletion's leftovers) and re-heap the rest."""
        current = [entry for entry in self._expiry if self._expires_at(entry[2]) == entry[0]]
        heapq.heapify(current)
        self._expiry = current
        self._head = None

    def delete(self, bundle_id: bytes) -> bool:
        head = self._head
        if head is not None and head[2] == bundle_id:
            self._head = None  # it goes (next_expiry)
        bundle = self._bundles.pop(bundle_id, None)
        if bundle is not None:
            self._release(bundle)
            content = bundle.content_id
        else:
            tombstone = self._tombstones.pop(bundle_id, None)
            if tombstone is None:
                return False
            content = tombstone[2]
        if content is not None and self._by_content.get(content) == bundle_id:
            del self._by_content[content]
        return True

    def expire(self, now: int) -> list[bytes]:
        gone: list[bytes] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires_at, _, key = heapq.heappop(heap)
            # Lazy deletion: the entry may be stale (deleted, or tombstoned to an earlier time).
            if self._expires_at(key) == expires_at and self.delete(key):
                gone.append(key)
        return gone

    def next_expiry(self) -> int | None:
        # The agent asks after every batch. The heap entry found current last time is still
        # current while it heads the heap and its key was not tombstoned or deleted since (only
        # those change a held key's time; put never touches a held key).
        heap = self._expiry
        if heap and heap[0] is self._head:
            return heap[0][0]
        bundles = self._bundles
        while heap:
            head = heap[0]
            expires_at, _, key = head
            bundle = bundles.get(key)
            if bundle is not None:
                if bundle.expires_at == expires_at:
                    self._head = head
                    return expires_at
            else:
                tombstone = self._tombstones.get(key)
                if tombstone is not None and tombstone[1] == expires_at:
                    self._head = head
                    return expires_at
            heapq.heappop(heap)  # stale
        return None

    def remember(self, seen: Sequence[Seen], floors: Mapping[int, int]) -> None:
        # Once per acknowledged delivery, nearly always one record and no floor.
        kept = self._seen
        heap = self._seen_expiry
        for record in seen:
            issuer, sequence = record.issuer, record.sequence
            kept[(issuer, sequence)] = record
            heapq.heappush(heap, (record.keep_until, issuer, sequence))
        if floors:
            for issuer, floor in floors.items():
                if floor > self._floors.get(issuer, -1):
                    self._floors[issuer] = floor

    def remembered(self) -> tuple[list[Seen], dict[int, int]]:
        return list(self._seen.values()), dict(self._floors)

    def forget_seen(self, now: int) -> int:
        gone = 0
        heap = self._seen_expiry
        while heap and heap[0][0] <= now:
            keep_until, issuer, sequence = heapq.heappop(heap)
            record = self._seen.get((issuer, sequence))
            if record is not None and record.keep_until == keep_until:
                del self._seen[(issuer, sequence)]
                gone += 1
        return gone

    def count(self) -> int:
        return len(self._bundles) + len(self._tombstones)

    def bytes_used(self) -> int:
        return self._bytes

    def _expires_at(self, key: bytes) -> int | None:
        bundle = self._bundles.get(key)
        if bundle is not None:
            return bundle.expires_at
        tombstone = self._tombstones.get(key)
        return None if tombstone is None else tombstone[1]

    def _release(self, bundle: StoredBundle) -> None:
        self._bytes -= bundle.size
        if self._sharing:
            self._shares.add(bundle.received_from, -1, -bundle.size)


class MemoryAgentStore(PyMemoryAgentStore):
    """The in-memory store to use: :class:`PyMemoryAgentStore` with its per-hop methods in C
    where the accelerator is built (module docstring); the reference itself without it."""

    __slots__ = ()


def _accelerate() -> bool:
    """Set the accelerator's methods on :class:`MemoryAgentStore`; ``False`` without it."""
    try:
        from .. import _speedups  # type: ignore[attr-defined]
    except ImportError:  # built without a C compiler
        return False
    setup = getattr(_speedups, "store_setup", None)
    if setup is None:
        return False
    # The C methods make Accepted and Duplicate by filling their slots: sound only while
    # their __init__ does nothing else (no validator, converter or post-init).
    for cls in (Accepted, Duplicate):
        fields = attrs.fields(cls)
        if hasattr(cls, "__attrs_post_init__") or any(
            field.validator is not None or field.converter is not None for field in fields
        ):
            return False

    def offsets(cls: type, names: str) -> tuple[int, ...]:
        return tuple(_speedups.slot_offset(cls.__dict__[name]) for name in names.split())

    methods = setup(
        MemoryAgentStore, PyMemoryAgentStore, (StoredBundle, Seen, Accepted, Duplicate),
        (DuplicateOf.BUNDLE_ID, DuplicateOf.CONTENT_ID), heapq,
        offsets(PyMemoryAgentStore, "_bundles _tombstones _by_content _expiry _head _sequence "
                "_bytes _bounded _sharing _seen _seen_expiry"),
        offsets(StoredBundle, "bundle_id content_id source destination expires_at received_at "
                "data"),
        offsets(Seen, "issuer sequence keep_until")
        + offsets(Accepted, "bundle_id") + offsets(Duplicate, "bundle_id of existing"),
    )  # fmt: skip
    for name, method in methods.items():
        setattr(MemoryAgentStore, name, method)
    _C_METHODS.update(methods)
    return True


#: The accelerator's methods set on :class:`MemoryAgentStore` (empty without it).
_C_METHODS: dict[str, object] = {}

#: Whether :class:`MemoryAgentStore` runs the accelerator's methods.
ACCELERATED: bool = _accelerate()


@contextlib.contextmanager
def without_accelerator() -> Iterator[None]:
    """:class:`MemoryAgentStore` on the reference's methods while inside (every store, made
    before or after: the methods are the class's); ``pytest --pure-python`` enters it."""
    for name in _C_METHODS:
        if name in MemoryAgentStore.__dict__:
            delattr(MemoryAgentStore, name)
    try:
        yield
    finally:
        for name, method in _C_METHODS.items():
            setattr(MemoryAgentStore, name, method)
