"""The simulator's event queue: the C one (``protocol/_event_queue.c``) and the pure-Python
one (``runtime/sim/event_queue.py``) against a sort by (time, insertion order).

Why it matters: the simulator's runs are functions of their seed only if events at the same
time come out in the order they were pushed, on either road. Both queues must also refuse
what they cannot hold with a typed error (never a crash, never a silent wrap), and the C one
must let go of its items (popped, or with the queue).
"""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import pytest
from fleetwire.runtime.sim import event_queue
from fleetwire.runtime.sim.event_queue import EventQueueType, PyEventQueue
from hypothesis import given
from hypothesis import strategies as st

CEventQueue = event_queue.CEventQueue
ROADS: list[type[EventQueueType]] = [PyEventQueue] + ([CEventQueue] if CEventQueue else [])
ROAD_IDS = [road.__module__ for road in ROADS]

INT64 = st.integers(-(2**63), 2**63 - 1)
# Few distinct times (many ties) or any int64 time; limits may lie outside int64.
TIMES = st.one_of(st.integers(-3, 12), INT64)
LIMITS = st.one_of(TIMES, st.integers(-(2**70), 2**70))
STEPS = st.lists(
    st.one_of(st.tuples(st.just("push"), TIMES), st.tuples(st.just("pop"), LIMITS)),
    max_size=300,
)


class Reference:
    """The order asked for, by the simplest road: sort everything waiting by (time, order)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[int, int, object]] = []
        self.pushed = 0

    def push(self, time: int, item: object) -> None:
        self.waiting.append((time, self.pushed, item))
        self.pushed += 1

    def pop_until(self, limit: int) -> object:
        self.waiting.sort(key=lambda entry: entry[:2])
        if self.waiting and self.waiting[0][0] <= limit:
            return self.waiting.pop(0)[2]
        return None


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
@given(steps=STEPS)
def test_pops_as_a_sort_by_time_then_insertion(
    road: type[EventQueueType], steps: list[tuple[str, int]]
) -> None:
    queue, reference = road(), Reference()
    for n, (step, value) in enumerate(steps):
        if step == "push":
            item = (value, n)
            queue.push(value, item)
            reference.push(value, item)
        else:
            assert queue.pop_until(value) is reference.pop_until(value)
        assert len(queue) == len(reference.waiting)
        expected = min(reference.waiting, key=lambda entry: entry[:2], default=None)
        assert queue.next_time() == (None if expected is None else expected[0])
    while reference.waiting:  # the rest drains in the same order
        assert queue.pop_until(2**63) is reference.pop_until(2**63)
    assert queue.pop_until(2**63) is None and queue.next_time() is None and len(queue) == 0


@given(steps=STEPS)
def test_both_roads_agree_step_by_step(steps: list[tuple[str, int]]) -> None:
    queues = [road() for road in ROADS]
    for n, (step, value) in enumerate(steps):
        if step == "push":
            for queue in queues:
                queue.push(value, n)
        else:
            assert len({queue.pop_until(value) for queue in queues}) == 1


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
@pytest.mark.parametrize(
    ("time", "error"),
    [
        (1.0, TypeError),
        ("1", TypeError),
        (None, TypeError),
        (2**63, OverflowError),
        (-(2**63) - 1, OverflowError),
        (10**100, OverflowError),
    ],
)
def test_times_it_cannot_hold_are_typed_errors(
    road: type[EventQueueType], time: Any, error: type[Exception]
) -> None:
    queue = road()
    queue.push(5, "kept")
    with pytest.raises(error):
        queue.push(time, "refused")
    assert len(queue) == 1 and queue.pop_until(5) == "kept"  # the queue is unharmed


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
def test_hostile_items_and_limits(road: type[EventQueueType]) -> None:
    queue = road()
    with pytest.raises(TypeError):
        queue.push(1, None)  # None is pop_until's "nothing due"
    queue.push(2**63 - 1, "last")
    queue.push(-(2**63), "first")
    with pytest.raises(TypeError):
        queue.pop_until(1.5)  # type: ignore[arg-type]
    assert queue.pop_until(-(2**64)) is None  # below int64: nothing is due
    assert queue.pop_until(-(2**63)) == "first"
    assert queue.pop_until(2**63 - 2) is None
    assert queue.pop_until(2**200) == "last"  # past int64: everything is due


@pytest.mark.skipif(CEventQueue is None, reason="the C queue was not built")
def test_c_queue_lets_go_of_its_items() -> None:
    class Item:
        pass

    assert CEventQueue is not None
    queue = CEventQueue()
    popped, kept = Item(), Item()
    popped_ref, kept_ref = weakref.ref(popped), weakref.ref(kept)
    queue.push(1, popped)
    queue.push(2, kept)
    before = sys.getrefcount(popped)
    assert queue.pop_until(1) is popped
    assert sys.getrefcount(popped) == before - 1  # the queue's reference went with the pop
    del popped, kept, queue
    assert popped_ref() is None and kept_ref() is None  # freed with the queue, no cycle run


@pytest.mark.skipif(CEventQueue is None, reason="the C queue was not built")
def test_c_queue_cycles_are_collected() -> None:
    class Item:
        queue: Any = None

    assert CEventQueue is not None
    queue, item = CEventQueue(), Item()
    item.queue = queue  # queue -> item -> queue: only the collector can free it
    queue.push(1, item)
    ref = weakref.ref(item)
    del queue, item
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(CEventQueue is None, reason="the C queue was not built")
def test_c_queue_grows_past_its_first_array() -> None:
    assert CEventQueue is not None
    queue = CEventQueue()
    times = [(i * 7919) % 1000 for i in range(5000)]
    for n, time in enumerate(times):
        queue.push(time, n)
    order = [queue.pop_until(1000) for _ in times]
    assert order == sorted(range(5000), key=lambda n: (times[n], n))


def test_the_simulator_takes_the_road_chosen() -> None:
    # `--pure-python` swaps event_queue.EventQueue; a simulator made after must use it.
    from fleetwire.runtime.sim.engine import Simulator

    assert type(Simulator(seed=1, start=0)._events) is event_queue.EventQueue
