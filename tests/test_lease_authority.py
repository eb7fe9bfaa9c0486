"""The lease authority (spec §6.4): grants, queue, tokens, renew, release, revoke, expiry, replay."""

from __future__ import annotations

import attrs
import pytest
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.lease_authority import (
    TRANSITIONS,
    AuthorityConfig,
    LeaseAuthority,
    Refusal,
    Refused,
    ResourceState,
    Send,
    diagram,
)
from fleetwire.protocol.errors import LocalProtocolError
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

DRIFT = 1_000
CONFIG = AuthorityConfig(
    max_drift_ms=DRIFT,
    max_term_ms=60_000,
    freshness=FreshnessWindow(max_age_ms=600_000, max_skew_ms=DRIFT),
)
AUTH = 1


class Node:
    """A holder's writer: fresh sequence numbers, content ids alongside."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.sequence = 0

    def header(self, now: int) -> Header:
        self.sequence += 1
        return Header(issuer=self.number, issued_at=now, sequence=self.sequence)

    def claim(self, resource: str, now: int, term: int = 10_000, priority: int = 0):
        message = LeaseClaim(self.header(now), resource, term, priority)
        return message, content_id(message)

    def renew(self, grant: LeaseGrant, now: int, term: int = 10_000):
        message = LeaseRenew(
            self.header(now), grant.resource, grant.fencing_token, content_id(grant), term
        )
        return message, content_id(message)

    def release(self, grant: LeaseGrant, now: int):
        message = LeaseRelease(
            self.header(now), grant.resource, grant.fencing_token, content_id(grant)
        )
        return message, content_id(message)


def sent(actions, kind=LeaseGrant):
    return [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, kind)]


def refusals(actions):
    return [a.reason for a in actions if isinstance(a, Refused)]


def test_free_resource_is_granted_at_once_with_the_claim_named():
    authority = LeaseAuthority(AUTH, CONFIG)
    claim, cid = Node(7).claim("dock/1", 100)
    (grant,) = sent(authority.receive(claim, cid, 100))
    assert (grant.holder, grant.claim, grant.resource) == (7, cid, "dock/1")
    assert grant.expires_at == 100 + 10_000 and grant.term_ms == 10_000
    assert grant.header.references == (cid,)
    assert authority.state("dock/1") is ResourceState.HELD


def test_term_is_capped_by_policy():
    authority = LeaseAuthority(AUTH, CONFIG)
    claim, cid = Node(7).claim("dock/1", 0, term=10**9)
    (grant,) = sent(authority.receive(claim, cid, 0))
    assert grant.expires_at == 60_000


def test_queue_orders_by_priority_then_arrival_and_release_grants_the_head():
    authority = LeaseAuthority(AUTH, CONFIG)
    a, b, c, d = Node(2), Node(3), Node(4), Node(5)
    (first,) = sent(authority.receive(*a.claim("dock/1", 0), 0))
    assert sent(authority.receive(*b.claim("dock/1", 1, priority=1), 1)) == []
    assert sent(authority.receive(*c.claim("dock/1", 2, priority=5), 2)) == []
    assert sent(authority.receive(*d.claim("dock/1", 3, priority=1), 3)) == []
    assert authority.queue_length("dock/1") == 3
    order = []
    holder, now = a, 10
    grant = first
    for _ in range(3):
        (grant,) = sent(authority.receive(*holder.release(grant, now), now))
        order.append(grant.holder)
        holder = {3: b, 4: c, 5: d}[grant.holder]
        now += 10
    assert order == [4, 3, 5]


def test_fencing_tokens_strictly_grow_per_resource():
    authority = LeaseAuthority(AUTH, CONFIG)
    tokens = []
    for i, node in enumerate([Node(n) for n in range(2, 8)]):
        (grant,) = sent(authority.receive(*node.claim("dock/1", i * 10), i * 10))
        tokens.append(grant.fencing_token)
        authority.receive(*node.release(grant, i * 10 + 5), i * 10 + 5)
    assert tokens == sorted(set(tokens)) and len(tokens) == 6


def test_duplicate_claim_gets_the_same_answer_and_changes_nothing():
    authority = LeaseAuthority(AUTH, CONFIG)
    claim, cid = Node(7).claim("dock/1", 0)
    (first,) = sent(authority.receive(claim, cid, 0))
    (again,) = sent(authority.receive(claim, cid, 50))
    assert (again.fencing_token, again.expires_at, again.claim) == (
        first.fencing_token,
        first.expires_at,
        first.claim,
    )
    assert again.header.sequence > first.header.sequence  # a new header: the holder takes it
    assert authority.holder("dock/1") == (7, first.fencing_token, first.expires_at)


def test_renew_keeps_the_token_and_moves_expiry_later():
    authority = LeaseAuthority(AUTH, CONFIG)
    node = Node(7)
    (grant,) = sent(authority.receive(*node.claim("dock/1", 0), 0))
    (renewed,) = sent(authority.receive(*node.renew(grant, 5_000), 5_000))
    assert renewed.fencing_token == grant.fencing_token
    assert renewed.expires_at == 15_000 > grant.expires_at
    assert renewed.claim == grant.claim
    # The old expiry passes without effect.
    assert sent(authority.tick(10_500), LeaseExpiry) == []
    assert authority.state("dock/1") is ResourceState.HELD


def test_renew_for_a_stale_token_or_by_another_node_changes_nothing():
    authority = LeaseAuthority(AUTH, CONFIG)
    a, b = Node(2), Node(3)
    (grant,) = sent(authority.receive(*a.claim("dock/1", 0), 0))
    stale = LeaseRenew(a.header(10), "dock/1", grant.fencing_token - 1, content_id(grant), 10_000)
    assert refusals(authority.receive(stale, content_id(stale), 10)) == [Refusal.UNKNOWN_GRANT]
    theft = LeaseRenew(b.header(10), "dock/1", grant.fencing_token, content_id(grant), 10_000)
    assert refusals(authority.receive(theft, content_id(theft), 10)) == [Refusal.UNKNOWN_GRANT]
    assert authority.holder("dock/1") == (2, grant.fencing_token, grant.expires_at)


def test_no_second_holder_before_expires_at_plus_max_drift():
    authority = LeaseAuthority(AUTH, CONFIG)
    a, b = Node(2), Node(3)
    (grant,) = sent(authority.receive(*a.claim("dock/1", 0), 0))
    assert sent(authority.receive(*b.claim("dock/1", 100), 100)) == []
    actions = authority.tick(grant.expires_at)
    (notice,) = sent(actions, LeaseExpiry)
    assert (notice.holder, notice.fencing_token, notice.expired_at) == (
        2,
        grant.fencing_token,
        grant.expires_at,
    )
    assert authority.state("dock/1") is ResourceState.LAPSED
    assert sent(authority.tick(grant.expires_at + DRIFT - 1)) == []
    (second,) = sent(authority.tick(grant.expires_at + DRIFT))
    assert second.holder == 3 and second.fencing_token > grant.fencing_token
    assert authority.next_deadline() == second.expires_at


def test_renew_after_expiry_is_refused():
    authority = LeaseAuthority(AUTH, CONFIG)
    node = Node(7)
    (grant,) = sent(authority.receive(*node.claim("dock/1", 0), 0))
    actions = authority.receive(*node.renew(grant, grant.expires_at + 1), grant.expires_at + 1)
    assert refusals(actions) == [Refusal.UNKNOWN_GRANT]


def test_revoke_waits_for_release_or_expiry_never_for_effective_at_alone():
    authority = LeaseAuthority(AUTH, CONFIG)
    a, b = Node(2), Node(3)
    (grant,) = sent(authority.receive(*a.claim("dock/1", 0), 0))
    authority.receive(*b.claim("dock/1", 10), 10)
    (revoke,) = sent(
        authority.revoke("dock/1", effective_at=2_000, now=1_000, reason="maintenance"), LeaseRevoke
    )
    assert (revoke.holder, revoke.fencing_token, revoke.effective_at) == (
        2,
        grant.fencing_token,
        2_000,
    )
    assert authority.state("dock/1") is ResourceState.REVOKED
    # The revoke may have been lost: effective_at passing frees nothing.
    assert sent(authority.tick(2_000 + DRIFT)) == []
    # A revoked grant is never renewed.
    assert refusals(authority.receive(*a.renew(grant, 3_000), 3_000)) == [Refusal.UNKNOWN_GRANT]
    (second,) = sent(authority.receive(*a.release(grant, 4_000), 4_000))
    assert second.holder == 3


def test_revoke_of_a_free_resource_is_refused():
    authority = LeaseAuthority(AUTH, CONFIG)
    assert refusals(authority.revoke("dock/9", 10, 0)) == [Refusal.NOT_HELD]


def test_release_for_a_stale_token_changes_nothing():
    authority = LeaseAuthority(AUTH, CONFIG)
    a = Node(2)
    (grant,) = sent(authority.receive(*a.claim("dock/1", 0), 0))
    authority.receive(*a.release(grant, 10), 10)
    (again,) = sent(authority.receive(*a.claim("dock/1", 20), 20))
    old = LeaseRelease(a.header(30), "dock/1", grant.fencing_token, content_id(grant))
    assert refusals(authority.receive(old, content_id(old), 30)) == [Refusal.UNKNOWN_GRANT]
    assert authority.holder("dock/1") == (2, again.fencing_token, again.expires_at)


def test_replayed_claim_after_release_is_refused():
    authority = LeaseAuthority(AUTH, CONFIG)
    a = Node(2)
    claim, cid = a.claim("dock/1", 0)
    (grant,) = sent(authority.receive(claim, cid, 0))
    authority.receive(*a.release(grant, 10), 10)
    actions = authority.receive(claim, cid, 20)
    assert refusals(actions) == [Refusal.REPLAYED] and sent(actions) == []
    assert authority.state("dock/1") is ResourceState.FREE


def test_claims_outside_the_window_are_refused():
    authority = LeaseAuthority(AUTH, CONFIG)
    old, cid = Node(2).claim("dock/1", 0)
    assert refusals(authority.receive(old, cid, 600_001)) == [Refusal.STALE]
    future, cid = Node(3).claim("dock/1", 700_000 + DRIFT + 1)
    assert refusals(authority.receive(future, cid, 700_000)) == [Refusal.FUTURE]


def test_reordered_claims_from_one_issuer_act_once():
    authority = LeaseAuthority(AUTH, CONFIG)
    a, b = Node(2), Node(3)
    authority.receive(*b.claim("dock/1", 0), 0)
    first = a.claim("dock/1", 1, priority=1)
    second = a.claim("dock/1", 2, priority=9)
    authority.receive(*second, 3)
    assert refusals(authority.receive(*first, 4)) == [Refusal.REPLAYED]
    assert authority.queue_length("dock/1") == 1


def test_resources_of_another_authority_are_refused():
    authority = LeaseAuthority(AUTH, CONFIG, owns=lambda r: r.startswith("dock/"))
    claim, cid = Node(2).claim("feedstock/3", 0)
    assert refusals(authority.receive(claim, cid, 0)) == [Refusal.NOT_OURS]


def test_queue_is_bounded():
    authority = LeaseAuthority(
        AUTH, AuthorityConfig(max_drift_ms=DRIFT, max_term_ms=60_000, max_queue=2)
    )
    for n in range(2, 5):
        authority.receive(*Node(n).claim("dock/1", 0), 0)
    assert refusals(authority.receive(*Node(9).claim("dock/1", 1), 1)) == [Refusal.QUEUE_FULL]


def test_aged_claims_leave_the_queue():
    config = AuthorityConfig(max_drift_ms=DRIFT, max_term_ms=60_000, claim_ttl_ms=5_000)
    authority = LeaseAuthority(AUTH, config)
    a, b, c = Node(2), Node(3), Node(4)
    (grant,) = sent(authority.receive(*a.claim("dock/1", 0), 0))
    authority.receive(*b.claim("dock/1", 0), 0)
    authority.receive(*c.claim("dock/1", 4_000), 4_000)
    (second,) = sent(authority.receive(*a.release(grant, 6_000), 6_000))
    assert second.holder == 4


def test_mandate_caps_every_grant_and_ends_granting():
    authority = LeaseAuthority(AUTH, CONFIG, mandate_until=0)
    authority.assume(3, 20_000, 15_000)
    (grant,) = sent(authority.receive(*Node(2).claim("dock/1", 15_000), 15_000))
    assert grant.expires_at == 20_000
    assert grant.fencing_token >> 32 == 3
    # Too little left to be of use: the claim waits for a longer mandate.
    assert sent(authority.receive(*Node(3).claim("dock/2", 18_500), 18_500)) == []
    (late,) = sent(authority.assume(3, 40_000, 18_600))
    assert late.holder == 3 and late.expires_at == 18_600 + 10_000
    assert refusals(authority.receive(*Node(4).claim("dock/3", 40_000), 40_000)) == [
        Refusal.NO_MANDATE
    ]


def test_a_new_epoch_starts_clean_with_higher_tokens():
    authority = LeaseAuthority(AUTH, CONFIG, mandate_until=0)
    authority.assume(1, 10_000, 0)
    (old,) = sent(authority.receive(*Node(2).claim("dock/1", 0), 0))
    authority.assume(2, 50_000, 12_000)
    assert authority.state("dock/1") is ResourceState.FREE
    (new,) = sent(authority.receive(*Node(3).claim("dock/1", 12_000), 12_000))
    assert new.fencing_token > old.fencing_token
    assert authority.assume(1, 99_000, 13_000) == [] and authority.mandate_until == 50_000


def test_diagram_is_the_table():
    text = diagram()
    for state, moves in TRANSITIONS.items():
        for step, target in moves.items():
            assert f"{state.value} --> {target.value}: {step.value}" in text


@pytest.mark.parametrize("state", list(ResourceState))
def test_every_state_can_become_free(state):
    seen, frontier = {state}, [state]
    while frontier:
        for target in TRANSITIONS[frontier.pop()].values():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert ResourceState.FREE in seen


def test_a_restarted_authority_never_acts_in_an_epoch_it_may_have_granted_in():
    # Built afresh with its durable last epoch: that epoch's grants are unknown to it.
    authority = LeaseAuthority(AUTH, CONFIG, epoch=4, mandate_until=0)
    assert authority.assume(4, 50_000, 0) == []
    assert not authority.active(0)
    assert refusals(authority.receive(*Node(2).claim("dock/1", 0), 0)) == [Refusal.NO_MANDATE]
    authority.assume(5, 50_000, 1)
    (grant,) = sent(authority.receive(*Node(2).claim("dock/1", 2), 2))
    assert grant.fencing_token >> 32 == 5


def test_epoch_must_fit_the_token():
    authority = LeaseAuthority(AUTH, CONFIG, mandate_until=0)
    with pytest.raises(LocalProtocolError):
        authority.assume(1 << 32, 10, 0)


def test_a_claim_too_short_to_use_is_refused_not_queued():
    authority = LeaseAuthority(AUTH, CONFIG)
    a, b, c = Node(2), Node(3), Node(4)
    (grant,) = sent(authority.receive(*a.claim("dock/1", 0), 0))
    assert refusals(authority.receive(*b.claim("dock/1", 1, term=2 * DRIFT), 1)) == [
        Refusal.TERM_TOO_SHORT
    ]
    authority.receive(*c.claim("dock/1", 2), 2)
    (second,) = sent(authority.receive(*a.release(grant, 3), 3))
    assert second.holder == 4  # nobody useless stood in the way


def test_a_contained_node_is_refused_claims_and_renewals_and_skipped_in_the_queue():
    contained: set[int] = set()
    authority = LeaseAuthority(AUTH, CONFIG, admits=lambda node: node not in contained)
    a, b, c = Node(10), Node(11), Node(12)
    (grant,) = sent(authority.receive(*a.claim("dock", 1_000), 1_000))
    assert refusals(authority.receive(*b.claim("dock", 1_100), 1_100)) == []  # queued
    authority.receive(*c.claim("dock", 1_200), 1_200)  # queued behind b
    contained |= {10, 11}
    assert refusals(authority.receive(*a.renew(grant, 2_000), 2_000)) == [Refusal.CONTAINED]
    assert refusals(authority.receive(*b.claim("other", 2_100), 2_100)) == [Refusal.CONTAINED]
    # a's grant is not extended; when it is released, quarantined b is skipped for c.
    (next_grant,) = sent(authority.receive(*a.release(grant, 3_000), 3_000))
    assert next_grant.holder == 12


def test_revoke_holders_revokes_the_named_holders_grants_and_their_queued_claims():
    authority = LeaseAuthority(AUTH, CONFIG)
    a, b, c = Node(10), Node(11), Node(12)
    authority.receive(*a.claim("dock-0", 1_000), 1_000)
    authority.receive(*b.claim("dock-1", 1_000), 1_000)
    authority.receive(*c.claim("dock-0", 1_100), 1_100)  # queued behind a
    actions = authority.revoke_holders(lambda node: node in (10, 12), 2_000, 1_500, "isolated")
    revokes = sent(actions, LeaseRevoke)
    assert [(r.resource, r.holder) for r in revokes] == [("dock-0", 10)]
    assert authority.state("dock-0") is ResourceState.REVOKED
    assert authority.state("dock-1") is ResourceState.HELD
    assert authority.queue_length("dock-0") == 0


def test_reissue_is_the_grant_under_a_new_header_field_for_field() -> None:
    """_reissue builds the grant field by field (no attrs.evolve per call): it must be what
    evolve gives, every field copied (extensions set, so a dropped one would show)."""
    authority = LeaseAuthority(AUTH, CONFIG)
    claim, cid = Node(7).claim("dock/1", 0)
    (first,) = sent(authority.receive(claim, cid, 0))
    grant = attrs.evolve(first, extensions=((99, "x"),))
    again = authority._reissue(grant, 50, cid)
    assert again == attrs.evolve(grant, header=again.header)
    assert again.header.sequence > grant.header.sequence and again.header.references == (cid,)
