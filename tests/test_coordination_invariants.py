"""The invariant checker proves clean traces and names the first violation of a dirty one."""

from __future__ import annotations

from fleetwire.protocol.coordination.invariants import (
    Block,
    Expired,
    Granted,
    Released,
    Rule,
    SubLease,
    Used,
    check,
)


def grant(resource, holder, token, at, expires_at=10_000, authority=1, skew=0):
    return Granted(resource, holder, token, expires_at, authority, at, at + skew)


def use(resource, holder, token, start, end, skew=0):
    return Used(resource, holder, token, start, end, start + skew)


def test_a_clean_trace_is_proved():
    trace = [
        grant("dock/1", 2, 1, 0),
        use("dock/1", 2, 1, 10, 100),
        use("dock/1", 2, 1, 100, 200),  # back to back, same holder
        Released("dock/1", 2, 1, 210, 210),
        grant("dock/1", 3, 2, 220),
        use("dock/1", 3, 2, 230, 300),
        grant("dock/2", 2, 1, 0),
        use("dock/2", 2, 1, 50, 250),  # another resource at the same time
        Expired("dock/2", 2, 1, 1, 10_000, 10_000),
    ]
    report = check(trace)
    assert report.ok and report.violations == 0
    assert (report.uses, report.grants) == (4, 3)


def test_overlap_is_named_with_resource_holders_instant_and_tokens():
    trace = [
        grant("dock/1", 2, 1, 0),
        grant("dock/1", 3, 2, 100),
        use("dock/1", 2, 1, 10, 500),
        use("dock/1", 3, 2, 400, 600),
        use("dock/1", 3, 2, 450, 470),
    ]
    report = check(trace)
    assert not report.ok
    v = report.violation
    assert (v.rule, v.resource, v.holders, v.instant, v.tokens) == (
        Rule.OVERLAP,
        "dock/1",
        (2, 3),
        400,
        (1, 2),
    )
    assert "overlap on dock/1 at t=400" in str(v)


def test_touching_intervals_do_not_overlap():
    trace = [grant("dock/1", 2, 1, 0), grant("dock/1", 3, 2, 1), use("dock/1", 2, 1, 0, 100)]
    trace.append(use("dock/1", 3, 2, 100, 200))
    assert check(trace).ok


def test_the_first_violation_is_the_earliest_of_all_resources():
    trace = [
        grant("b", 2, 1, 0),
        grant("b", 3, 2, 0),
        use("b", 2, 1, 0, 100),
        use("b", 3, 2, 50, 60),
        grant("a", 2, 1, 0),
        grant("a", 3, 2, 0),
        use("a", 2, 1, 0, 100),
        use("a", 3, 2, 70, 80),
    ]
    report = check(trace)
    assert report.violation.resource == "b" and report.violations == 2


def test_token_that_does_not_grow_is_a_violation():
    trace = [grant("dock/1", 2, 5, 0), grant("dock/1", 2, 5, 10), grant("dock/1", 3, 5, 20)]
    v = check(trace).violation
    assert (v.rule, v.holders, v.instant, v.tokens) == (Rule.TOKEN_ORDER, (2, 3), 20, (5, 5))


def test_a_use_after_the_first_grant_of_its_token_is_granted_even_if_renewed_later():
    trace = [grant("dock/1", 2, 1, 0), use("dock/1", 2, 1, 50, 60), grant("dock/1", 2, 1, 100)]
    assert check(trace).ok


def test_use_without_a_grant_is_a_violation():
    trace = [grant("dock/1", 2, 1, 100), use("dock/1", 2, 1, 50, 60), use("dock/1", 4, 1, 200, 300)]
    report = check(trace)
    assert report.violation.rule is Rule.UNGRANTED_USE and report.violation.instant == 50
    assert report.violations == 2


def test_clock_difference_is_reported():
    trace = [grant("dock/1", 2, 1, 0, skew=-40), use("dock/1", 2, 1, 10, 20, skew=60)]
    assert check(trace, clocks=[(9, 0, 5)]).max_clock_difference == 100


def test_sub_leases_within_their_block():
    trace = [
        Block("feed/1", 10, 100, 0, 1_000),
        Block("feed/1", 10, 100, 1_000, 2_000),  # renewed
        SubLease("feed/1", 2, 60, 0, 1_500),
        SubLease("feed/1", 3, 40, 100, 900),
        SubLease("feed/1", 4, 40, 900, 2_000),
    ]
    assert check(trace).ok


def test_sub_leases_above_capacity_are_named():
    trace = [
        Block("feed/1", 10, 100, 0, 1_000),
        SubLease("feed/1", 2, 60, 0, 500),
        SubLease("feed/1", 3, 50, 400, 800),
    ]
    v = check(trace).violation
    assert (v.rule, v.resource, v.holders, v.instant, v.tokens) == (
        Rule.OVER_BLOCK,
        "feed/1",
        (2, 3),
        400,
        (60, 50),
    )


def test_sub_lease_outside_its_block_is_named():
    trace = [Block("feed/1", 10, 100, 0, 1_000), SubLease("feed/1", 2, 10, 900, 1_100)]
    v = check(trace).violation
    assert (v.rule, v.holders, v.instant) == (Rule.OUTSIDE_BLOCK, (2,), 900)
