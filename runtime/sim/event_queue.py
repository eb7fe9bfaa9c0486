"""The simulator's queue of timed events: C where it was built, pure Python otherwise.

``EventQueue`` holds items due at int times and gives them back earliest first, items due at
the same time in the order they were pushed (so a run is a function of its seed):

* ``push(time, item)`` — ``time`` an int in int64 (TypeError otherwise, OverflowError
  outside); ``item`` anything but ``None``;
* ``pop_until(limit)`` — the earliest item if its time is at or before ``limit`` (any int),
  else ``None``;
* ``next_time()`` — the earliest item's time (``None``: empty); ``len()`` — how many wait.

The items do not hand their time back: the simulator keeps it in the item (a tuple it
builds anyway), where returning it would cost a tuple or an int object per event.

Why in C (``protocol/_event_queue.c``): a contiguous array of (time, seq, item) entries
compared as machine integers, where a heapq list of int keys walked scattered int objects on
every comparison and each event went through a dict besides. :class:`PyEventQueue` is the
road without a compiler, and the reference the tests hold the C one against.
"""

from __future__ import annotations

import heapq
from typing import Any, Protocol

__all__ = ["CEventQueue", "EventQueue", "EventQueueType", "PyEventQueue"]

# Keys ``time << _SEQ_BITS | seq``: ordered by time, then by insertion, for any time,
# negative or huge; one int comparison per sift step where a (time, seq) tuple costs two to
# four. A sequence number stays below 2**_SEQ_BITS (10**12 pushes: months of CPU; checked).
_SEQ_BITS = 40
_LOW, _HIGH = -(2**63), 2**63  # the C queue's int64 times


class EventQueueType(Protocol):
    """What the simulator asks of a queue (either road)."""

    def push(self, time: int, item: Any, /) -> None: ...
    def pop_until(self, limit: int, /) -> Any: ...
    def next_time(self) -> int | None: ...
    def __len__(self) -> int: ...


class PyEventQueue:
    """The pure-Python road (module docstring): a heapq of int keys, the items in a dict
    under their keys."""

    __slots__ = ("_heap", "_items", "_seq")

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._items: dict[int, Any] = {}
        self._seq = 0

    def push(self, time: int, item: Any, /) -> None:
        # No isinstance: what is not an int fails the comparison or the shift (TypeError).
        if not _LOW <= time < _HIGH:
            raise OverflowError("an event time must fit in int64")
        if item is None:
            raise TypeError("an event item may not be None")
        seq = self._seq
        if seq >> _SEQ_BITS:  # keys would no longer be in insertion order
            raise OverflowError(f"2**{_SEQ_BITS} events pushed on one queue")
        key = time << _SEQ_BITS | seq
        self._seq = seq + 1
        heapq.heappush(self._heap, key)
        self._items[key] = item

    def pop_until(self, limit: int, /) -> Any:
        if not isinstance(limit, int):
            raise TypeError(f"a limit must be an int, not {type(limit).__name__}")
        heap = self._heap
        if heap and heap[0] >> _SEQ_BITS <= limit:
            return self._items.pop(heapq.heappop(heap))
        return None

    def next_time(self) -> int | None:
        return self._heap[0] >> _SEQ_BITS if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


try:
    from fleetwire.protocol import _speedups  # type: ignore[attr-defined]
except ImportError:  # no C compiler at install
    _speedups = None

#: The C queue (``None``: not built).
CEventQueue: type[EventQueueType] | None = getattr(_speedups, "EventQueue", None)
#: The queue the simulator uses: the C one where built.
EventQueue: type[EventQueueType] = CEventQueue or PyEventQueue
