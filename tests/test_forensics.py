"""Forensic pull: anomalous digests make the coordinator fetch the detail by content id; answers are
checked against the id before they are read; fetches retry, give up, and are bounded."""

from __future__ import annotations

from typing import Any

import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.coordination.digests import (
    Digest,
    DigestBuilder,
    EmitDigest,
    KeepDetail,
    MetricSpec,
)
from fleetwire.protocol.coordination.forensics import (
    DetailKeeper,
    DetailReceived,
    DetailRefused,
    FetchDetail,
    FetchFailed,
    ForensicPuller,
    PullPolicy,
    RefusalReason,
)
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.ids import ContentId

T0 = 3_000_000
MINUTE = 60_000
POLICY = PullPolicy(timeout_ms=10_000, max_attempts=3, max_pulls_per_node=2, window_ms=MINUTE * 60)


def node_period(node: int, values: list[int], keeper: DetailKeeper, start: int = T0) -> Digest:
    """One period of samples on a node: the digest it sends, its detail kept by the keeper."""
    builder = DigestBuilder(
        node, {"purity": MetricSpec(center=1000, sigma=10)}, MINUTE, start, min_event_gap_ms=10**9
    )
    actions: list[Any] = []
    for i, value in enumerate(values):
        actions += builder.observe("purity", value, start + 100 * i)
    actions += builder.tick(start + MINUTE)
    for action in actions:
        if isinstance(action, KeepDetail):
            keeper.keep(action.content_id, action.data)
    return [a.digest for a in actions if isinstance(a, EmitDigest)][-1]


ANOMALOUS = [1000, 1001, 1050, 1060, 1070, 999]  # three samples beyond 3 sigma


def test_an_anomalous_digest_pulls_its_detail_and_the_answer_is_checked() -> None:
    keeper, puller = DetailKeeper(), ForensicPuller(POLICY)
    digest = node_period(5, ANOMALOUS, keeper)
    (fetch,) = puller.digest(digest, T0 + MINUTE)
    assert fetch == FetchDetail(5, digest.details[-1], 1)
    data = keeper.fetch(fetch.content_id)
    assert data is not None
    (received,) = puller.answer(5, fetch.content_id, data, T0 + MINUTE + 5)
    assert isinstance(received, DetailReceived)
    # The first crossing (1050) sent an event digest at once, with the samples up to it.
    assert digest.trigger == 1
    assert received.samples == {"purity": [(T0 + 100 * i, ANOMALOUS[i]) for i in (0, 1, 2)]}
    assert puller.outstanding() == set() and puller.next_deadline() is None
    assert puller.digest(digest, T0 + MINUTE + 6) == []  # the same digest again: pulled already


def test_a_quiet_digest_pulls_nothing() -> None:
    keeper, puller = DetailKeeper(), ForensicPuller(POLICY)
    assert puller.digest(node_period(5, [1000, 1005, 995, 1010], keeper), T0) == []


def test_a_wrong_answer_is_refused_unread_and_asked_again() -> None:
    keeper, puller = DetailKeeper(), ForensicPuller(POLICY)
    digest = node_period(5, ANOMALOUS, keeper)
    (fetch,) = puller.digest(digest, T0)
    data = keeper.fetch(fetch.content_id)
    assert data is not None
    refused, again = puller.answer(5, fetch.content_id, data[:-1] + b"\x00", T0 + 1)
    assert refused == DetailRefused(5, fetch.content_id, RefusalReason.MISMATCH)
    assert again == FetchDetail(5, fetch.content_id, 2)
    assert isinstance(puller.answer(5, fetch.content_id, data, T0 + 2)[0], DetailReceived)


def test_unrequested_answers_are_refused_without_reading_them() -> None:
    keeper, puller = DetailKeeper(), ForensicPuller(POLICY)
    junk = b"\xff" * 100
    assert puller.answer(5, ContentId.of(junk), junk, T0) == [
        DetailRefused(5, ContentId.of(junk), RefusalReason.UNREQUESTED)
    ]
    digest = node_period(5, ANOMALOUS, keeper)
    (fetch,) = puller.digest(digest, T0)
    data = keeper.fetch(fetch.content_id)
    assert data is not None
    (other,) = puller.answer(6, fetch.content_id, data, T0 + 1)  # asked of node 5, not 6
    assert other.reason is RefusalReason.UNREQUESTED and puller.outstanding() == {fetch.content_id}


def test_bytes_that_match_the_id_but_are_no_detail_are_not_asked_for_again() -> None:
    puller = ForensicPuller(POLICY)
    junk = cbor.encode({"not": "a detail"})
    digest = Digest.from_cbor(Digest(5, T0, T0 + 1, 1, {}, (ContentId.of(junk),)).to_cbor())
    # A digest without metrics is not anomalous; one that is names the junk's id.
    anomalous = node_period(5, ANOMALOUS, DetailKeeper())
    anomalous = Digest(5, T0, T0 + 1, 1, anomalous.metrics, digest.details)
    (fetch,) = puller.digest(anomalous, T0)
    assert puller.answer(5, fetch.content_id, junk, T0 + 1) == [
        DetailRefused(5, fetch.content_id, RefusalReason.UNREADABLE)
    ]
    assert puller.outstanding() == set() and puller.tick(T0 + 10**9) == []


def test_unanswered_fetches_are_retried_doubling_then_given_up() -> None:
    keeper, puller = DetailKeeper(), ForensicPuller(POLICY)
    (fetch,) = puller.digest(node_period(5, ANOMALOUS, keeper), T0)
    asked = []
    for now in range(T0, T0 + 100_000, 1_000):
        asked += [(now - T0, a) for a in puller.tick(now)]
    cid = fetch.content_id
    assert asked == [
        (10_000, FetchDetail(5, cid, 2)),
        (30_000, FetchDetail(5, cid, 3)),
        (70_000, FetchFailed(5, cid)),
    ]
    data = keeper.fetch(cid)
    assert data is not None
    assert puller.answer(5, cid, data, T0 + 80_000)[0].reason is RefusalReason.UNREQUESTED  # type: ignore[union-attr]


def test_pulls_are_bounded_per_node_and_in_all() -> None:
    keeper, puller = DetailKeeper(), ForensicPuller(POLICY)
    pulls = [
        puller.digest(node_period(5, ANOMALOUS, keeper, start=T0 + i * MINUTE), T0 + i * MINUTE)
        for i in range(5)
    ]
    assert [len(p) for p in pulls] == [1, 1, 0, 0, 0]  # two per node per hour
    later = puller.digest(
        node_period(5, ANOMALOUS, keeper, start=T0 + 70 * MINUTE), T0 + 70 * MINUTE
    )
    assert len(later) == 1  # the hour has passed
    small = ForensicPuller(PullPolicy(max_outstanding=2))
    counts = [len(small.digest(node_period(n, ANOMALOUS, keeper), T0)) for n in range(4)]
    assert counts == [1, 1, 0, 0]


def test_the_keeper_answers_within_its_budget() -> None:
    keeper = DetailKeeper(budget_bytes=100)
    chunks = [bytes([i]) * 40 for i in range(4)]
    for chunk in chunks:
        keeper.keep(ContentId.of(chunk), chunk)
    assert keeper.size == 80
    assert (
        keeper.fetch(ContentId.of(chunks[0])) is None
        and keeper.fetch(ContentId.of(chunks[3])) == chunks[3]
    )
    keeper.keep(ContentId.of(b"x" * 101), b"x" * 101)  # larger than the budget: not kept
    assert keeper.size == 80
    with pytest.raises(LocalProtocolError):
        keeper.keep(ContentId.of(b"a"), b"b")
