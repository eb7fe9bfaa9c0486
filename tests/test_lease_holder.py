"""The lease holder (spec §6.4), the fencing guard and the replay guard."""

from __future__ import annotations

import copy
import random

import attrs
from fleetwire.protocol.coordination.fencing import FencingGuard
from fleetwire.protocol.coordination.freshness import Freshness, FreshnessWindow, ReplayGuard
from fleetwire.protocol.coordination.lease_holder import (
    TRANSITIONS,
    HolderConfig,
    HolderState,
    LeaseHolder,
    Notice,
    NoticeKind,
    Send,
    diagram,
)
from fleetwire.protocol.messages import (
    Header,
    LeaseClaim,
    LeaseExpiry,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    LeaseRevoke,
    content_id,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# Keep each property test well under a second; ``--soak`` (a bigger profile) runs the full count.
EXAMPLES = 100 if settings.default.max_examples <= 200 else settings.default.max_examples

DRIFT = 1_000
CONFIG = HolderConfig(
    max_drift_ms=DRIFT,
    renew_lead_ms=3_000,
    retry_ms=1_000,
    min_use_ms=500,
    freshness=FreshnessWindow(max_age_ms=600_000, max_skew_ms=DRIFT),
)
ME, AUTH, STANDBY = 7, 1, 2


class Authority:
    def __init__(self, number: int = AUTH) -> None:
        self.number, self.sequence = number, 0

    def header(self, now: int) -> Header:
        self.sequence += 1
        return Header(issuer=self.number, issued_at=now, sequence=self.sequence)

    def grant(self, claim: LeaseClaim, now: int, token: int, expires_at: int, holder: int = ME):
        message = LeaseGrant(
            self.header(now),
            claim.resource,
            holder,
            content_id(claim),
            token,
            expires_at - now,
            expires_at,
        )
        return message, content_id(message)


def sends(actions, kind):
    return [a for a in actions if isinstance(a, Send) and isinstance(a.message, kind)]


def notices(actions):
    return [a.kind for a in actions if isinstance(a, Notice)]


def holding(now=0, expires_at=20_000, token=5):
    holder = LeaseHolder(ME, (AUTH, STANDBY), CONFIG)
    claims = sends(holder.want("dock/1", 20_000, now), LeaseClaim)
    authority = Authority()
    grant, cid = authority.grant(claims[0].message, now + 10, token, expires_at)
    actions = holder.receive(grant, cid, now + 10)
    return holder, authority, grant, cid, actions


def test_want_claims_from_every_authority_and_retries():
    holder = LeaseHolder(ME, (AUTH, STANDBY), CONFIG)
    actions = holder.want("dock/1", 20_000, 0, priority=3)
    assert [(a.to, a.message.priority) for a in sends(actions, LeaseClaim)] == [
        (AUTH, 3),
        (STANDBY, 3),
    ]
    assert holder.state("dock/1") is HolderState.CLAIMING
    assert holder.tick(999) == []
    again = sends(holder.tick(1_000), LeaseClaim)
    assert len(again) == 2 and again[0].message.header.sequence > actions[0].message.header.sequence


def test_use_only_inside_grant_received_and_expires_at_minus_drift():
    holder, _, _grant, _, actions = holding(now=0, expires_at=20_000, token=5)
    assert notices(actions) == [NoticeKind.GRANTED]
    assert holder.use("dock/1", 9) is None  # before the grant was received
    assert holder.use("dock/1", 10) == 5
    assert holder.use("dock/1", 18_900, duration_ms=100) == 5  # ends at the limit
    assert holder.use("dock/1", 18_900, duration_ms=101) is None  # would end past it
    assert holder.use("dock/1", 18_999) == 5
    assert holder.use("dock/1", 19_000) is None
    assert holder.usable_until("dock/1") == 20_000 - DRIFT


def test_grant_too_late_to_use_is_refused_and_released():
    holder = LeaseHolder(ME, (AUTH,), CONFIG)
    (claim,) = sends(holder.want("dock/1", 20_000, 0), LeaseClaim)
    grant, cid = Authority().grant(claim.message, 0, 5, expires_at=20_000)
    actions = holder.receive(grant, cid, 20_000 - DRIFT - 400)  # less than min_use_ms left
    assert notices(actions) == [NoticeKind.TOO_LATE]
    (release,) = sends(actions, LeaseRelease)
    assert release.message.fencing_token == 5 and release.to == AUTH
    assert holder.use("dock/1", 20_000 - DRIFT - 400) is None
    assert holder.state("dock/1") is HolderState.CLAIMING


def test_renews_early_enough_and_keeps_the_token():
    holder, authority, _grant, cid, _ = holding(now=0, expires_at=20_000, token=5)
    assert holder.tick(20_000 - DRIFT - 3_001) == []
    (renew,) = sends(holder.tick(20_000 - DRIFT - 3_000), LeaseRenew)
    assert (renew.to, renew.message.fencing_token, renew.message.grant) == (AUTH, 5, cid)
    assert holder.state("dock/1") is HolderState.RENEWING
    (retry,) = sends(holder.tick(20_000 - DRIFT - 2_000), LeaseRenew)
    assert retry.message.header.sequence > renew.message.header.sequence
    renewed, rcid = authority.grant(renew.message, 17_000, 5, expires_at=40_000)
    assert notices(holder.receive(renewed, rcid, 17_100)) == [NoticeKind.RENEWED]
    assert holder.state("dock/1") is HolderState.HOLDING
    assert holder.use("dock/1", 30_000) == 5


def test_lapse_without_renewal_stops_use_and_claims_again():
    holder, *_ = holding(now=0, expires_at=20_000, token=5)
    actions = holder.tick(19_000)
    assert NoticeKind.LAPSED in notices(actions)
    assert len(sends(actions, LeaseClaim)) == 2
    assert holder.use("dock/1", 19_000) is None
    assert holder.state("dock/1") is HolderState.CLAIMING


def test_older_token_and_duplicate_grants_change_nothing():
    holder, authority, grant, cid, _ = holding(token=5)
    assert holder.receive(grant, cid, 100) == []  # the same envelope again
    claim = LeaseClaim(Header(ME, 0, 99), "dock/1", 1000)
    older, ocid = authority.grant(claim, 200, 4, expires_at=30_000)
    assert holder.receive(older, ocid, 200) == []
    assert holder.use("dock/1", 300) == 5 and holder.usable_until("dock/1") == 19_000


def test_unwanted_grant_is_released():
    holder, authority, _grant, _cid, _ = holding(token=5)
    holder.release("dock/1", 1_000)
    claim = LeaseClaim(Header(ME, 0, 99), "dock/1", 1000)
    late, lcid = authority.grant(claim, 1_100, 6, expires_at=30_000)
    (release,) = sends(holder.receive(late, lcid, 1_100), LeaseRelease)
    assert release.message.fencing_token == 6 and holder.use("dock/1", 1_200) is None


def test_grant_for_another_node_is_ignored():
    holder = LeaseHolder(ME, (AUTH,), CONFIG)
    (claim,) = sends(holder.want("dock/1", 20_000, 0), LeaseClaim)
    grant, cid = Authority().grant(claim.message, 0, 5, expires_at=20_000, holder=ME + 1)
    assert holder.receive(grant, cid, 10) == []
    assert holder.state("dock/1") is HolderState.CLAIMING


def test_revoke_stops_at_effective_at_minus_drift_then_releases():
    holder, authority, _grant, _cid, _ = holding(token=5)
    revoke = LeaseRevoke(authority.header(1_000), "dock/1", 5, ME, effective_at=6_000)
    actions = holder.receive(revoke, content_id(revoke), 1_000)
    assert notices(actions) == [NoticeKind.REVOKED]
    assert holder.state("dock/1") is HolderState.STOPPING
    assert holder.use("dock/1", 4_999) == 5 and holder.use("dock/1", 5_000) is None
    (release,) = sends(holder.tick(5_000), LeaseRelease)
    assert release.message.fencing_token == 5
    assert holder.state("dock/1") is HolderState.IDLE


def test_revoke_for_a_token_we_do_not_hold_changes_nothing():
    holder, authority, *_ = holding(token=5)
    revoke = LeaseRevoke(authority.header(1_000), "dock/1", 4, ME, effective_at=1_000)
    assert holder.receive(revoke, content_id(revoke), 1_000) == []
    assert holder.use("dock/1", 1_000) == 5


def test_replayed_revoke_changes_nothing():
    holder, authority, _grant, _, _ = holding(token=5)
    revoke = LeaseRevoke(authority.header(1_000), "dock/1", 5, ME, effective_at=1_000)
    holder.receive(revoke, content_id(revoke), 1_000)
    (claim,) = sends(holder.want("dock/1", 20_000, 2_000), LeaseClaim)[:1]
    again, gcid = authority.grant(claim.message, 2_000, 6, expires_at=30_000)
    holder.receive(again, gcid, 2_000)
    assert holder.receive(revoke, content_id(revoke), 3_000) == []  # no longer ours, and replayed
    assert holder.use("dock/1", 3_000) == 6


def test_expiry_notice_for_our_token_ends_the_lease():
    holder, authority, *_ = holding(token=5)
    notice = LeaseExpiry(authority.header(2_000), "dock/1", 5, ME, expired_at=2_000)
    assert NoticeKind.LAPSED in notices(holder.receive(notice, content_id(notice), 2_000))
    assert holder.use("dock/1", 2_000) is None


def test_release_sends_release_to_the_granting_authority():
    holder, _, _grant, cid, _ = holding(token=5)
    (release,) = sends(holder.release("dock/1", 500), LeaseRelease)
    assert (release.to, release.message.grant, release.message.fencing_token) == (AUTH, cid, 5)
    assert holder.release("dock/1", 600) == []


def test_next_deadline_tracks_what_is_due():
    holder, *_ = holding(expires_at=20_000)
    assert holder.next_deadline() == 20_000 - DRIFT - 3_000


def test_diagram_is_the_table():
    text = diagram()
    for state, moves in TRANSITIONS.items():
        for step, target in moves.items():
            assert f"{state.value} --> {target.value}: {step.value}" in text


def test_fencing_guard_refuses_lower_tokens_per_resource():
    guard = FencingGuard()
    assert guard.admit("dock/1", 5) and guard.admit("dock/1", 5)
    assert guard.admit("dock/2", 1)
    assert not guard.admit("dock/1", 4)
    assert guard.admit("dock/1", 9) and not guard.admit("dock/1", 5)
    assert guard.highest("dock/1") == 9 and guard.highest("dock/3") is None


def test_replay_guard_window_sequence_and_pruning():
    guard = ReplayGuard(FreshnessWindow(max_age_ms=1_000, max_skew_ms=100))
    assert guard.check(1, "r", 5, 0, 1_001) is Freshness.STALE
    assert guard.check(1, "r", 5, 1_101, 1_000) is Freshness.FUTURE
    assert guard.check(1, "r", 5, 900, 1_000) is Freshness.FRESH
    guard.acted(1, "r", 5, 900)
    assert guard.check(1, "r", 5, 900, 1_000) is Freshness.REPLAYED
    assert guard.check(1, "r", 4, 900, 1_000) is Freshness.REPLAYED
    assert guard.check(1, "s", 4, 900, 1_000) is Freshness.FRESH  # another purpose
    assert guard.check(2, "r", 4, 900, 1_000) is Freshness.FRESH  # another issuer
    guard.acted(1, "r", 3, 900)  # an older one never lowers the mark
    assert guard.highest(1, "r") == 5
    assert guard.prune(1_900) == 0 and guard.prune(1_901) == 1 and len(guard) == 0
    # What the pruned entry refused is refused as stale.
    assert guard.check(1, "r", 5, 900, 1_901) is Freshness.STALE


def test_let_go_uses_to_the_end_of_the_term_then_releases_without_renewing():
    holder, *_ = holding(expires_at=20_000, token=5)
    assert holder.let_go("dock/1", 1_000) == []
    assert holder.state("dock/1") is HolderState.STOPPING
    assert sends(holder.tick(17_000), LeaseRenew) == []  # past the renew instant: no renew
    assert holder.use("dock/1", 18_999) == 5
    (release,) = sends(holder.tick(19_000), LeaseRelease)
    assert release.message.fencing_token == 5 and holder.state("dock/1") is HolderState.IDLE


def test_release_waits_for_the_operation_in_progress():
    holder, *_ = holding(token=5)
    assert holder.use("dock/1", 1_000, duration_ms=500) == 5
    assert sends(holder.release("dock/1", 1_200), LeaseRelease) == []
    assert holder.state("dock/1") is HolderState.STOPPING
    assert holder.use("dock/1", 1_300, duration_ms=300) is None  # would run past the release
    assert holder.next_deadline() == 1_500
    assert sends(holder.tick(1_499), LeaseRelease) == []
    (release,) = sends(holder.tick(1_500), LeaseRelease)
    assert release.message.fencing_token == 5 and holder.state("dock/1") is HolderState.IDLE


def test_grant_from_a_node_that_is_not_our_authority_is_ignored():
    holder = LeaseHolder(ME, (AUTH,), CONFIG)
    (claim,) = sends(holder.want("dock/1", 20_000, 0), LeaseClaim)
    forged, cid = Authority(number=99).grant(claim.message, 0, 5, expires_at=20_000)
    assert holder.receive(forged, cid, 10) == []
    assert holder.use("dock/1", 20) is None


def test_replay_guard_refuses_what_was_issued_before_a_restart():
    guard = ReplayGuard(FreshnessWindow(max_age_ms=1_000, max_skew_ms=100), not_before=500)
    assert guard.check(1, "r", 1, 499, 600) is Freshness.STALE
    assert guard.check(1, "r", 1, 500, 600) is Freshness.FRESH


def test_replay_marks_are_pruned_as_time_passes():
    holder, *_ = holding(token=5)
    assert len(holder.replay) == 1
    holder.tick(600_000 + 11)
    holder.tick(900_000 + 12)
    assert len(holder.replay) == 0


def test_timing_for_a_link_leaves_room_for_lost_renewals():
    config = HolderConfig.for_link(DRIFT, one_way_delay_ms=400, retries=2)
    assert config.retry_ms == 800 and config.renew_lead_ms > 3 * 800
    holder = LeaseHolder(ME, (AUTH,), config)
    (claim,) = sends(holder.want("dock/1", 20_000, 0), LeaseClaim)
    grant, cid = Authority().grant(claim.message, 0, 5, expires_at=20_000)
    holder.receive(grant, cid, 400)
    usable_until = 20_000 - DRIFT
    renews = []
    t = 400
    while t < usable_until:
        renews += [a for a in sends(holder.tick(t), LeaseRenew)]
        t += 50
    # Three renews go out, each a round trip apart; the last answer (a round trip later) still
    # comes before the usable end.
    sent_at = [r.message.header.issued_at for r in renews]
    assert len(sent_at) >= 3 and sent_at[2] + 800 < usable_until


@settings(max_examples=EXAMPLES)
@given(st.integers(0, 2**32))
def test_next_deadline_kept_between_calls_always_equals_a_fresh_scan(seed: int) -> None:
    """Any run of wants, releases, let-gos, uses, ticks, grants (new and renewing), revokes
    and expiry notices over a few resources: the kept deadline is the scanned one, and a tick
    (which skips its scan before that deadline) does what a scanning tick does."""
    rng = random.Random(seed)
    holder = LeaseHolder(ME, (AUTH, STANDBY), CONFIG)
    authority = Authority()
    resources = ("dock/1", "dock/2", "arm/1")
    claims: dict[str, LeaseClaim] = {}
    tokens = dict.fromkeys(resources, 0)
    now = 0
    for _ in range(60):
        now += rng.choice([0, 1, 250, 999, 1_000, 2_500, 7_000])
        # tick() skips the scan before the kept deadline: it must do what the scan does.
        assert copy.deepcopy(holder).tick(now) == copy.deepcopy(holder).scan_tick(now)
        resource = rng.choice(resources)
        step = rng.randrange(9)
        if step == 0:
            actions = holder.want(resource, rng.choice([5_000, 20_000]), now)
        elif step == 1:
            actions = holder.release(resource, now)
        elif step == 2:
            actions = holder.let_go(resource, now)
        elif step == 3:
            holder.use(resource, now, rng.choice([0, 300, 4_000]))
            actions = []
        elif step == 4 and resource in claims:  # a new grant, or a renewal of the last one
            tokens[resource] += rng.random() < 0.7
            expires = now + rng.choice([400, 6_000, 20_000])
            grant, cid = authority.grant(claims[resource], now, tokens[resource], expires)
            actions = holder.receive(grant, cid, now)
        elif step == 5:
            revoke = LeaseRevoke(
                authority.header(now), resource, tokens[resource], ME, now + rng.choice([0, 3_000])
            )
            actions = holder.receive(revoke, content_id(revoke), now)
        elif step == 6:
            notice = LeaseExpiry(authority.header(now), resource, tokens[resource], ME, now)
            actions = holder.receive(notice, content_id(notice), now)
        elif step == 7 and rng.random() < 0.2:  # a new config: the lead changes the deadline
            holder.config = attrs.evolve(holder.config, renew_lead_ms=rng.choice([2_000, 3_000]))
            actions = []
        else:
            actions = holder.tick(now)
        for claim in sends(actions, LeaseClaim):
            claims[claim.message.resource] = claim.message
        assert holder.next_deadline() == holder.scan_deadline()
        assert holder.next_deadline() == holder.scan_deadline()  # asked twice: still right


def test_release_during_a_let_go_brings_the_deadline_to_the_operation_end():
    holder, *_ = holding(expires_at=20_000)  # usable until 19_000
    holder.let_go("dock/1", 1_000)
    assert holder.next_deadline() == 19_000  # stopping at the end of the term
    assert holder.use("dock/1", 1_000, 2_000) == 5
    assert holder.next_deadline() == 19_000
    assert holder.release("dock/1", 1_500) == []  # the operation runs until 3_000
    assert holder.next_deadline() == holder.scan_deadline() == 3_000
