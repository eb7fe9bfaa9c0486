"""Contact plan: validation, indexes against brute force, bookings, config mapping, clock."""

from __future__ import annotations

import datetime as dt
import tomllib

import pytest
from fleetwire.protocol.agent.contacts import (
    DTN_EPOCH_UNIX,
    Clock,
    Contact,
    ContactPlan,
    ContactPlanError,
    dtn_ms_from_datetime,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# Keep each property test well under a second; ``--soak`` (a bigger profile) runs the full count.
EXAMPLES = 60 if settings.default.max_examples <= 200 else settings.default.max_examples


def test_contact_fields_and_volume() -> None:
    c = Contact(1, 2, 1_000, 3_000, 8_000, 250)
    assert (c.from_node, c.to_node, c.start, c.end, c.rate_bps, c.owlt_ms) == (
        1,
        2,
        1_000,
        3_000,
        8_000,
        250,
    )
    assert c.confidence == 1.0
    assert c.volume() == 2_000  # 2 s at 1000 bytes/s
    assert c.volume(2_500) == 500
    assert c.volume(5_000) == 0
    assert c.transmit_ms(1_000) == 1_000
    assert c.is_active(1_000) and c.is_active(2_999)
    assert not c.is_active(3_000) and not c.is_active(999)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((1, 2, 10, 10, 8, 0), "end"),
        ((1, 2, 10, 5, 8, 0), "end"),
        ((1, 1, 0, 10, 8, 0), "to"),
        ((1, 2, -1, 10, 8, 0), "start"),
        ((1, 2, 0, 10, 0, 0), "rate_bps"),
        ((1, 2, 0, 10, 8, -5), "owlt_ms"),
        ((True, 2, 0, 10, 8, 0), "from_node"),
        ((1, 2, 0.5, 10, 8, 0), "start"),
        ((1, 2, 0, 10, 8, 0, 0.0), "confidence"),
        ((1, 2, 0, 10, 8, 0, 1.5), "confidence"),
    ],
)
def test_contact_rejects_nonsense(args: tuple[object, ...], field: str) -> None:
    with pytest.raises(ContactPlanError, match=field):
        Contact(*args)  # type: ignore[arg-type]


def test_plan_edit_and_version() -> None:
    a = Contact(1, 2, 0, 100, 8, 1)
    b = Contact(1, 3, 50, 150, 8, 1)
    plan = ContactPlan([a])
    v = plan.version
    plan.add(b)
    assert plan.version > v and len(plan) == 2 and b in plan
    with pytest.raises(ContactPlanError, match="duplicate"):
        plan.add(b)
    assert plan.neighbours(1) == (2, 3)
    v = plan.version
    plan.remove(b)
    assert plan.version > v and plan.neighbours(1) == (2,)
    with pytest.raises(KeyError):
        plan.remove(b)
    assert plan.contacts_from(3) == []
    assert plan.between(9, 8) == ()


def test_active_next_contact_and_next_start() -> None:
    early = Contact(1, 2, 0, 100, 8, 1)
    long = Contact(1, 2, 50, 500, 8, 1)  # overlaps both neighbours
    late = Contact(1, 2, 200, 300, 8, 1)
    other = Contact(1, 3, 400, 450, 8, 1)
    plan = ContactPlan([late, other, long, early])
    assert plan.between(1, 2) == (early, long, late)
    assert plan.contacts_from(1) == [early, long, late, other]
    assert plan.active(60) == [early, long]
    assert plan.active(250, 1, 2) == [long, late]
    assert plan.active(420, from_node=1) == [long, other]
    assert plan.active(420, to_node=3) == [other]
    assert plan.next_contact(1, 2, 10) == early
    assert plan.next_contact(1, 2, 150) == long  # open now beats ``late``
    assert plan.next_contact(1, 2, 600) is None
    assert plan.next_contact(1, 3, 0) == other
    assert plan.next_start_after(1, 0) == 50
    assert plan.next_start_after(1, 200) == 400
    assert plan.next_start_after(1, 400) is None
    assert plan.next_start_after(7, 0) is None


def test_bookings_reduce_residual_volume() -> None:
    c = Contact(1, 2, 0, 1_000, 8_000, 1)  # 1000 bytes
    plan = ContactPlan([c])
    assert plan.residual_volume(c, 0) == 1_000
    plan.book(c, 300)
    plan.book(c, 200)
    assert plan.booked(c) == 500 and plan.bookings == {c: 500}
    assert plan.residual_volume(c, 0) == 500
    assert plan.residual_volume(c, 600) == -100  # less time left than is booked
    releases = plan.releases
    plan.release(c, 500)
    assert plan.booked(c) == 0 and plan.releases == releases + 1
    with pytest.raises(KeyError):
        plan.book(Contact(5, 6, 0, 1, 8, 0), 1)
    with pytest.raises(ValueError, match="negative"):
        plan.book(c, -1)
    plan.book(c, 10)
    plan.remove(c)
    assert c not in plan.bookings


TOML = """
[[contact]]
from = 1
to = 2
start = 0
end = 600000
rate_bps = 1000000
owlt_ms = 1200

[[contact]]
from = 2
to = 1
start = 2000-01-01T00:10:00Z
end = 2000-01-01T00:20:00.5Z
rate_bps = 250000
owlt_ms = 1200
confidence = 0.5
"""


def test_from_toml_mapping() -> None:
    plan = ContactPlan.from_mapping(tomllib.loads(TOML))
    assert list(plan) == [
        Contact(1, 2, 0, 600_000, 1_000_000, 1_200),
        Contact(2, 1, 600_000, 1_200_500, 250_000, 1_200, 0.5),
    ]
    again = ContactPlan.from_mapping(plan.to_mapping())
    assert list(again) == list(plan)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ([], "expected a table"),
        ({"contacts": []}, "unknown keys"),
        ({"contact": {}}, "array of tables"),
        ({"contact": [5]}, r"contact\[0\]: expected a table"),
        ({"contact": [{"from": 1}]}, "missing"),
        (
            {
                "contact": [
                    dict(
                        zip(
                            ["from", "to", "start", "end", "rate_bps", "owlt_ms", "x"],
                            [1, 2, 0, 1, 1, 0, 0],
                            strict=True,
                        )
                    )
                ]
            },
            "unknown keys",
        ),
        (
            {
                "contact": [
                    {"from": 1, "to": 2, "start": "0", "end": 1, "rate_bps": 1, "owlt_ms": 0}
                ]
            },
            "start",
        ),
        (
            {
                "contact": [
                    {
                        "from": 1,
                        "to": 2,
                        "start": dt.datetime(2001, 1, 1),
                        "end": 1,
                        "rate_bps": 1,
                        "owlt_ms": 0,
                    }
                ]
            },
            "UTC offset",
        ),
    ],
)
def test_from_mapping_refuses_bad_config(mapping: object, message: str) -> None:
    with pytest.raises(ContactPlanError, match=message):
        ContactPlan.from_mapping(mapping)  # type: ignore[arg-type]


def test_clock_conversions() -> None:
    clock = Clock(100.0, 5_000)
    assert clock.to_dtn(100.0) == 5_000
    assert clock.to_dtn(101.25) == 6_250
    assert clock.to_trio(6_250) == 101.25
    wall = Clock.from_unix(0.0, DTN_EPOCH_UNIX + 86_400.5)
    assert wall.to_dtn(0.0) == 86_400_500
    assert dtn_ms_from_datetime(dt.datetime(2000, 1, 2, tzinfo=dt.UTC)) == 86_400_000
    plus_one = dt.timezone(dt.timedelta(hours=1))
    assert dtn_ms_from_datetime(dt.datetime(2000, 1, 1, 1, tzinfo=plus_one)) == 0


contacts = st.builds(
    lambda a, b, start, length, rate, owlt: Contact(
        a, (a + b) % 5, start, start + length, rate, owlt
    ),
    st.integers(0, 4),
    st.integers(1, 4),
    st.integers(0, 1_000),
    st.integers(1, 300),
    st.integers(1, 10_000),
    st.integers(0, 50),
)


@settings(max_examples=EXAMPLES)
@given(st.lists(contacts, max_size=25, unique=True), st.integers(0, 1_400))
def test_indexes_match_brute_force(items: list[Contact], now: int) -> None:
    plan = ContactPlan(reversed(items))
    assert ContactPlan.from_mapping(plan.to_mapping()).to_mapping() == plan.to_mapping()
    for a in range(5):
        mine = [c for c in items if c.from_node == a]
        assert plan.active(now, from_node=a) == sorted(
            (c for c in mine if c.start <= now < c.end), key=Contact.sort_key
        )
        later = [c.start for c in mine if c.start > now]
        assert plan.next_start_after(a, now) == (min(later) if later else None)
        for b in range(5):
            pair = [c for c in mine if c.to_node == b]
            assert plan.active(now, a, b) == sorted(
                (c for c in pair if c.start <= now < c.end), key=Contact.sort_key
            )
            usable = [c for c in pair if c.end > now]
            expected = min(usable, key=lambda c: (max(c.start, now), c.sort_key()), default=None)
            assert plan.next_contact(a, b, now) == expected
