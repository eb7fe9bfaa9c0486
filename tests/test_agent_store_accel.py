"""The accelerated in-memory store against its reference (protocol/_agent_store.c).

:class:`MemoryAgentStore`'s per-hop methods run in C where the accelerator is built; the
reference is :class:`PyMemoryAgentStore`. A state machine drives one of each through the
same operations — puts of new, repeated and same-content bundles, tombstones with and
without an earlier time, deletes, expiry, the next expiry, replay records with and without
floors — and after every step both must have answered alike and hold the very same state
(every slot: bundles, records, the content index, the expiry heap entry by entry, the cached
head, the counters). Now and then the accelerated store takes a step through the reference's
method instead (they share its slots, so the two can be mixed). Quotas that can refuse take
the reference's road in both.
"""

from __future__ import annotations

import pytest
from fleetwire.protocol.agent.agent_store import (
    MemoryAgentStore,
    PyMemoryAgentStore,
    without_accelerator,
)
from fleetwire.protocol.agent.store import Accepted, Duplicate, Quota, StoredBundle
from fleetwire.protocol.replay import Seen
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

pytestmark = pytest.mark.skipif(
    "put" not in MemoryAgentStore.__dict__, reason="the C accelerator is not built, or --pure-python"
)

SLOTS = ("_bundles", "_tombstones", "_by_content", "_expiry", "_head", "_sequence", "_bytes",
         "_seen", "_seen_expiry", "_floors")  # fmt: skip

keys = st.integers(0, 11).map(lambda n: b"k%d" % n)
contents = st.one_of(st.none(), st.integers(0, 5).map(lambda n: b"c%d" % n))
times = st.integers(0, 60)


class AgainstTheReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fast = MemoryAgentStore()
        self.reference = PyMemoryAgentStore()

    def both(self, name: str, *args: object, mixed: bool = False) -> object:
        # ``mixed``: the reference's method on the accelerated store (they share its slots).
        method = getattr(PyMemoryAgentStore, name) if mixed else getattr(MemoryAgentStore, name)
        fast = method(self.fast, *args)
        slow = getattr(self.reference, name)(*args)
        assert fast == slow, name
        return fast

    @rule(key=keys, content=contents, expires_at=times, size=st.integers(0, 40),
          source=st.sampled_from([None, "ipn:2.0"]), mixed=st.booleans())  # fmt: skip
    def put(self, key: bytes, content: bytes | None, expires_at: int, size: int,
            source: str | None, mixed: bool) -> None:  # fmt: skip
        record = StoredBundle(key, content, "ipn:1.1", "ipn:3.1", expires_at, 0, b"x" * size,
                              None, source)  # fmt: skip
        answer = self.both("put", record, mixed=mixed)
        assert isinstance(answer, Accepted | Duplicate)

    @rule(key=keys, hop=st.sampled_from(["forwarded", "delivered"]),
          until=st.one_of(st.none(), times), positional=st.booleans())  # fmt: skip
    def tombstone(self, key: bytes, hop: str, until: int | None, positional: bool) -> None:
        if until is None and positional:
            self.both("tombstone", key, hop)
        elif positional:
            self.both("tombstone", key, hop, until, mixed=until % 3 == 0)
        else:  # keywords take the reference's road in the accelerated store
            assert self.fast.tombstone(key, hop, expires_at=until) == self.reference.tombstone(
                key, hop, expires_at=until
            )

    @rule(key=keys, mixed=st.booleans())
    def delete(self, key: bytes, mixed: bool) -> None:
        self.both("delete", key, mixed=mixed)

    @rule(now=times, mixed=st.booleans())
    def expire(self, now: int, mixed: bool) -> None:
        self.both("expire", now, mixed=mixed)

    @rule()
    def next_expiry(self) -> None:
        self.both("next_expiry")

    @rule(issuer=st.integers(1, 3), sequence=st.integers(0, 5), keep_until=times,
          floor=st.one_of(st.none(), st.integers(0, 9)), as_list=st.booleans())  # fmt: skip
    def remember(self, issuer: int, sequence: int, keep_until: int, floor: int | None,
                 as_list: bool) -> None:  # fmt: skip
        seen = Seen(issuer, sequence, 0, b"c", keep_until)
        records = [seen] if as_list else (seen,)
        self.both("remember", records, {} if floor is None else {issuer: floor})

    @rule(now=times)
    def forget_seen(self, now: int) -> None:
        self.both("forget_seen", now)

    @precondition(lambda self: len(self.fast._expiry) > 4)
    @rule()
    def compact(self) -> None:
        self.fast._compact()
        self.reference._compact()

    @invariant()
    def same_state(self) -> None:
        for name in SLOTS:
            assert getattr(self.fast, name) == getattr(self.reference, name), name
        assert self.fast.count() == self.reference.count()
        assert self.fast.bytes_used() == self.reference.bytes_used()


AgainstTheReference.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
test_the_accelerated_store_is_the_reference = AgainstTheReference.TestCase


def test_a_store_with_a_quota_takes_the_reference_road() -> None:
    # Bounded: every method hands over to the reference, which refuses as it always did.
    store = MemoryAgentStore(Quota(max_bundles=1))
    first = StoredBundle(b"a", None, "ipn:1.1", "ipn:3.1", 10, 0, b"x")
    second = StoredBundle(b"b", None, "ipn:1.1", "ipn:3.1", 10, 0, b"y")
    assert isinstance(store.put(first), Accepted)
    assert type(store.put(second)).__name__ == "Refused"
    assert store.tombstone(b"a", "forwarded", 5) and store.next_expiry() == 5
    assert store.expire(5) == [b"a"] and store.count() == 0


def test_the_methods_are_the_accelerators() -> None:
    # Not the reference's functions under another name: the C methods are in place.
    for name in ("put", "tombstone", "delete", "expire", "next_expiry", "remember"):
        assert getattr(MemoryAgentStore, name) is not getattr(PyMemoryAgentStore, name)
        assert type(getattr(MemoryAgentStore, name)).__name__ == "method_descriptor"


def test_without_the_accelerator_the_class_runs_the_reference() -> None:
    # What ``pytest --pure-python`` enters: every store, old or new, on the reference's road.
    store = MemoryAgentStore()
    with without_accelerator():
        assert MemoryAgentStore.put is PyMemoryAgentStore.put
        assert isinstance(store.put(StoredBundle(b"a", None, "ipn:1.1", "ipn:3.1", 9, 0, b"")),
                          Accepted)  # fmt: skip
    assert type(MemoryAgentStore.put).__name__ == "method_descriptor"
    assert store.next_expiry() == 9
