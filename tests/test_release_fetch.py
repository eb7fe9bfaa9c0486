"""The fetch planner: unit cases, and a small virtual-time fleet that counts every chunk
crossing every inter-region link."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.errors import QuotaExceeded
from fleetwire.protocol.release.fetch import (
    TRANSITIONS,
    AnnounceHeld,
    ChunkReceived,
    ChunkRefused,
    ChunkState,
    FetchConfig,
    FetchPlanner,
    FetchSnapshot,
    HolderAnnounced,
    LinkKind,
    NeighbourLost,
    ReleaseComplete,
    ReleaseWanted,
    RequestChunk,
    StoreChunk,
    Tick,
)
from fleetwire.protocol.release.ledger import ArtifactLedger, ArtifactQuota
from fleetwire.protocol.release.manifest import Manifest
from hypothesis import given, settings
from hypothesis import strategies as st

from .release_fleet import ChunkNetwork, Fleet, build_fleet
from .release_support import make_release

# --- unit cases ----------------------------------------------------------------------------


def _requests(actions: Iterable[object]) -> list[RequestChunk]:
    return [a for a in actions if isinstance(a, RequestChunk)]


def test_asks_one_holder_per_chunk_and_prefers_the_cheapest_link() -> None:
    manifest, _ = make_release(size=4096, chunk_size=1024)
    planner = FetchPlanner({1: LinkKind.CELL, 2: LinkKind.REGION}, ArtifactLedger())
    assert planner.handle(ReleaseWanted(manifest), 0) == []
    all_chunks = frozenset(manifest.distinct_chunks())
    sent = _requests(planner.handle(HolderAnnounced(2, all_chunks), 0))
    assert [r.neighbour for r in sent] == [2] * 4
    # The cell neighbour announcing later changes nothing in flight: never the same chunk twice.
    assert _requests(planner.handle(HolderAnnounced(1, all_chunks), 5)) == []
    assert all(planner.state_of(c) is ChunkState.REQUESTED for c in all_chunks)


def test_stores_verified_chunks_announces_them_and_completes() -> None:
    manifest, blobs = make_release(size=2048, chunk_size=1024)
    planner = FetchPlanner({1: LinkKind.CELL}, ArtifactLedger())
    planner.handle(ReleaseWanted(manifest), 0)
    planner.handle(HolderAnnounced(1, frozenset(blobs)), 0)
    first, second = (ref.id for ref in manifest.chunks)
    actions = planner.handle(ChunkReceived(1, first, blobs[first]), 10)
    assert actions == [StoreChunk(first, blobs[first]), AnnounceHeld(frozenset({first}))]
    actions = planner.handle(ChunkReceived(1, second, blobs[second]), 11)
    assert actions[-1] == ReleaseComplete(manifest.release_id)
    assert planner.handle(ChunkReceived(1, second, blobs[second]), 12) == []
    assert planner.duplicates == 1


def test_a_chunk_with_a_wrong_hash_is_refused_and_fetched_elsewhere() -> None:
    manifest, blobs = make_release(size=1024, chunk_size=1024)
    (chunk,) = blobs
    planner = FetchPlanner({1: LinkKind.CELL, 2: LinkKind.CELL}, ArtifactLedger())
    planner.handle(ReleaseWanted(manifest), 0)
    (request,) = _requests(planner.handle(HolderAnnounced(1, frozenset(blobs)), 0))
    planner.handle(HolderAnnounced(2, frozenset(blobs)), 0)
    actions = planner.handle(ChunkReceived(request.neighbour, chunk, b"\x00" * 1024), 5)
    refused = [a for a in actions if isinstance(a, ChunkRefused)]
    assert [r.code for r in refused] == ["chunk-hash-mismatch"]
    assert not any(isinstance(a, StoreChunk) for a in actions)
    # Asked again at once, of the other holder.
    assert [r.neighbour for r in _requests(actions)] == [2]
    assert not planner.ledger.holds(chunk)


def test_unsolicited_chunks_are_refused_with_a_code() -> None:
    planner = FetchPlanner({1: LinkKind.CELL}, ArtifactLedger())
    data = b"not ours"
    (refused,) = planner.handle(ChunkReceived(1, ContentId.of(data), data), 0)
    assert isinstance(refused, ChunkRefused) and refused.code == "chunk-not-wanted"


def test_timeout_moves_the_request_to_another_holder_then_back() -> None:
    manifest, blobs = make_release(size=1024, chunk_size=1024)
    (chunk,) = blobs
    config = FetchConfig(request_timeout=100)
    planner = FetchPlanner({1: LinkKind.CELL, 2: LinkKind.CELL}, ArtifactLedger(), config)
    planner.handle(ReleaseWanted(manifest), 0)
    (first,) = _requests(planner.handle(HolderAnnounced(2, frozenset(blobs)), 0))
    assert first.neighbour == 2 and first.deadline == 100
    assert _requests(planner.handle(HolderAnnounced(1, frozenset(blobs)), 0)) == []
    assert _requests(planner.handle(Tick(), 99)) == []
    (second,) = _requests(planner.handle(Tick(), 100))
    assert second.neighbour == 1 and second.deadline == 200
    (third,) = _requests(planner.handle(Tick(), 200))
    assert third.neighbour == 1  # one failure each: the lowest node number
    (fourth,) = _requests(planner.handle(Tick(), 300))
    assert fourth.neighbour == 2  # round the holders, not the same one again and again
    # A late answer from the first holder is still good: stored once.
    actions = planner.handle(ChunkReceived(2, chunk, blobs[chunk]), 350)
    assert StoreChunk(chunk, blobs[chunk]) in actions
    assert planner.in_flight() == {}


def test_a_lost_neighbour_gives_its_requests_back() -> None:
    manifest, blobs = make_release(size=2048, chunk_size=1024)
    planner = FetchPlanner({1: LinkKind.CELL, 2: LinkKind.REGION}, ArtifactLedger())
    planner.handle(ReleaseWanted(manifest), 0)
    planner.handle(HolderAnnounced(1, frozenset(blobs)), 0)
    planner.handle(HolderAnnounced(2, frozenset(blobs)), 0)
    moved = _requests(planner.handle(NeighbourLost(1), 1))
    assert {r.neighbour for r in moved} == {2} and len(moved) == 2


def test_only_a_gateway_fetches_across_regions() -> None:
    manifest, blobs = make_release(size=1024, chunk_size=1024)
    member = FetchPlanner({7: LinkKind.INTER_REGION}, ArtifactLedger())
    member.handle(ReleaseWanted(manifest), 0)
    assert _requests(member.handle(HolderAnnounced(7, frozenset(blobs)), 0)) == []
    gateway = FetchPlanner(
        {7: LinkKind.INTER_REGION}, ArtifactLedger(), FetchConfig(may_cross_region=True)
    )
    gateway.handle(ReleaseWanted(manifest), 0)
    assert len(_requests(gateway.handle(HolderAnnounced(7, frozenset(blobs)), 0))) == 1


def test_requests_per_neighbour_are_bounded() -> None:
    manifest, blobs = make_release(size=20 * 1024, chunk_size=1024)
    planner = FetchPlanner(
        {1: LinkKind.CELL}, ArtifactLedger(), FetchConfig(max_in_flight_per_neighbour=3)
    )
    planner.handle(ReleaseWanted(manifest), 0)
    assert len(_requests(planner.handle(HolderAnnounced(1, frozenset(blobs)), 0))) == 3
    chunk = next(iter(planner.in_flight()))
    assert len(_requests(planner.handle(ChunkReceived(1, chunk, blobs[chunk]), 1))) == 1


def test_a_release_over_quota_is_refused_and_the_installed_one_kept() -> None:
    installed, blobs = make_release(size=3000, seed=b"old")
    ledger = ArtifactLedger(ArtifactQuota(max_bytes=4000))
    planner = FetchPlanner({1: LinkKind.CELL}, ledger)
    planner.handle(ReleaseWanted(installed), 0)
    planner.handle(HolderAnnounced(1, frozenset(blobs)), 0)
    for chunk, data in blobs.items():
        planner.handle(ChunkReceived(1, chunk, data), 1)
    bigger, _ = make_release(size=3000, seed=b"new")
    with pytest.raises(QuotaExceeded):
        planner.handle(ReleaseWanted(bigger), 2)
    assert ledger.complete(installed.release_id) and len(ledger.releases()) == 1


def test_resume_after_restart_keeps_requests_and_held_chunks() -> None:
    manifest, blobs = make_release(size=4096, chunk_size=1024)
    neighbours = {1: LinkKind.CELL}
    ledger = ArtifactLedger()
    planner = FetchPlanner(neighbours, ledger, FetchConfig(request_timeout=100))
    planner.handle(ReleaseWanted(manifest), 0)
    sent = _requests(planner.handle(HolderAnnounced(1, frozenset(blobs)), 0))
    planner.handle(ChunkReceived(1, sent[0].chunk, blobs[sent[0].chunk]), 10)
    snapshot = planner.snapshot()
    # Restart: a fresh ledger told what the store holds, and the snapshot.
    fresh = ArtifactLedger()
    fresh.admit(manifest)
    fresh.restore_held(ledger.held)
    resumed = FetchPlanner.resume(neighbours, fresh, snapshot, FetchConfig(request_timeout=100))
    assert set(resumed.in_flight()) == {r.chunk for r in sent[1:]}
    assert _requests(resumed.handle(Tick(), 50)) == []  # nothing asked twice before deadlines
    again = _requests(resumed.handle(Tick(), 100))
    assert {r.chunk for r in again} == {r.chunk for r in sent[1:]}
    assert sent[0].chunk not in {r.chunk for r in again}


def test_the_transition_table_refuses_what_it_does_not_name() -> None:
    manifest, blobs = make_release(size=1024, chunk_size=1024)
    planner = FetchPlanner({1: LinkKind.CELL}, ArtifactLedger())
    planner.handle(ReleaseWanted(manifest), 0)
    (chunk,) = blobs
    with pytest.raises(LocalProtocolError):
        planner._move(chunk, "timeout")  # MISSING has no timeout
    assert TRANSITIONS[ChunkState.HELD] == {}


# --- the fleet model (release_fleet.py) ------------------------------------------------------


def run_fleet(
    fleet: Fleet,
    manifest: Manifest,
    blobs: dict[ContentId, bytes],
    *,
    partitions: Iterable[tuple[int, int, int]] = (),
    corrupt: Iterable[int] = (),
) -> ChunkNetwork:
    """Every node wants the release at time 0; deliver everything."""
    network = ChunkNetwork(fleet, blobs, partitions=partitions, corrupt=corrupt)
    for node in network.planners:
        network.want(node, manifest, 0)
    network.run()
    return network


def check_outcome(fleet: Fleet, manifest: Manifest, outcome: ChunkNetwork, regions: int) -> None:
    chunks = manifest.distinct_chunks()
    for node, planner in outcome.planners.items():
        assert planner.ledger.complete(manifest.release_id), f"node {node} did not finish"
        assert planner.duplicates == 0
    # Each chunk crosses each inter-region link at most once, and enters each region once.
    assert all(count == 1 for count in outcome.crossings.values())
    for chunk in chunks:
        for region in range(1, regions):
            assert outcome.entries[region, chunk] == 1
        assert outcome.entries[0, chunk] == 0
    # Every node received every chunk exactly once, unless a corrupt copy was refused first.
    refused = Counter((r.chunk) for r in outcome.refused)
    for (node, chunk), count in outcome.deliveries.items():
        assert count == 1 or refused[chunk] > 0, (node, chunk.short(), count)


def test_three_regions_of_four_cells_each_link_carries_each_chunk_once() -> None:
    rng = random.Random(7)
    fleet = build_fleet(3, 4, 3, rng, region_edges=[(0, 1), (1, 2)], stray_links=6)
    manifest, blobs = make_release(size=8 * 1024, chunk_size=1024)
    # A member of region 2 is cut off for most of the rollout and catches up when it heals.
    member = max(n for n, r in fleet.region_of.items() if r == 2)
    outcome = run_fleet(fleet, manifest, blobs, partitions=[(member, 1_000, 400_000)])
    check_outcome(fleet, manifest, outcome, 3)
    inter_region = [
        pair for pair, (kind, _) in fleet.links.items() if kind is LinkKind.INTER_REGION
    ]
    gateway_links = [pair for pair in inter_region if pair <= set(fleet.gateways.values())]
    assert len(gateway_links) == 2
    for pair in gateway_links:  # a tree between regions: every chunk over every link, once
        assert all(outcome.crossings[pair, chunk] == 1 for chunk in blobs)
    assert sum(outcome.crossings.values()) == 2 * len(blobs)
    assert outcome.now > 400_000  # the partitioned member finished after it healed
    assert outcome.planners[member].ledger.complete(manifest.release_id)


def test_corrupt_copies_are_refused_and_the_fleet_still_completes() -> None:
    rng = random.Random(3)
    fleet = build_fleet(2, 2, 2, rng, region_edges=[(0, 1)])
    manifest, blobs = make_release(size=4 * 1024, chunk_size=1024)
    corrupt = [fleet.gateways[1]]
    outcome = run_fleet(fleet, manifest, blobs, corrupt=corrupt)
    check_outcome(fleet, manifest, outcome, 2)
    assert outcome.refused and {r.code for r in outcome.refused} == {"chunk-hash-mismatch"}
    for node, planner in outcome.planners.items():
        for chunk, data in blobs.items():
            assert planner.ledger.holds(chunk), node
            assert ContentId.of(data) == chunk


_FLEETS = dict(
    regions=st.integers(2, 4),
    cells=st.integers(1, 3),
    members=st.integers(1, 3),
    chunks=st.integers(1, 6),
    extra_region_edges=st.booleans(),
    stray_links=st.integers(0, 4),
    partitioned=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)


@settings(max_examples=25)
@given(**_FLEETS)
def test_property_each_chunk_crosses_each_region_link_at_most_once_and_enters_each_region_once(
    **fleet: Any,
) -> None:
    random_fleet(**fleet)


@pytest.mark.soak
@settings(max_examples=3000)
@given(**_FLEETS)
def test_soak_each_chunk_crosses_each_region_link_at_most_once(**fleet: Any) -> None:
    random_fleet(**fleet)


def random_fleet(
    regions: int,
    cells: int,
    members: int,
    chunks: int,
    extra_region_edges: bool,
    stray_links: int,
    partitioned: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    edges = [(r, rng.randrange(r)) for r in range(1, regions)]  # a random tree
    if extra_region_edges:
        edges += [
            (a, b) for a, b in itertools.combinations(range(regions), 2) if (a, b) not in edges
        ]
    fleet = build_fleet(regions, cells, members, rng, region_edges=edges, stray_links=stray_links)
    manifest, blobs = make_release(size=chunks * 512, chunk_size=512, seed=seed.to_bytes(4, "big"))
    nodes = sorted(n for n in fleet.region_of if n)
    partitions = []
    for node in rng.sample(nodes, min(partitioned, len(nodes))):
        start = rng.randint(0, 100_000)
        partitions.append((node, start, start + rng.randint(1, 2_000_000)))
    outcome = run_fleet(fleet, manifest, blobs, partitions=partitions)
    check_outcome(fleet, manifest, outcome, regions)
    if not extra_region_edges:  # a tree: exactly (regions - 1) crossings per chunk
        assert sum(outcome.crossings.values()) == (regions - 1) * len(blobs)


def test_what_a_neighbour_announces_is_bounded_unless_wanted() -> None:
    manifest, blobs = make_release(size=2048, chunk_size=1024)
    planner = FetchPlanner(
        {1: LinkKind.CELL}, ArtifactLedger(), FetchConfig(max_unwanted_per_neighbour=10)
    )
    noise = frozenset(ContentId.of(b"%d" % i) for i in range(1000))
    planner.handle(HolderAnnounced(1, noise), 0)
    assert len(planner.snapshot().holders[0][1]) == 10
    planner.handle(ReleaseWanted(manifest), 1)
    sent = _requests(planner.handle(HolderAnnounced(1, noise | frozenset(blobs)), 2))
    assert {r.chunk for r in sent} == set(blobs)  # wanted ones are kept past the bound


def test_resume_plans_the_chunks_that_were_waiting_for_room() -> None:
    manifest, blobs = make_release(size=6 * 1024, chunk_size=1024)
    neighbours = {1: LinkKind.CELL}
    config = FetchConfig(request_timeout=100, max_in_flight_per_neighbour=2)
    ledger = ArtifactLedger()
    planner = FetchPlanner(neighbours, ledger, config)
    planner.handle(ReleaseWanted(manifest), 0)
    sent = _requests(planner.handle(HolderAnnounced(1, frozenset(blobs)), 0))
    assert len(sent) == 2  # four wait for room
    resumed = FetchPlanner.resume(neighbours, ledger, planner.snapshot(), config)
    more: set[ContentId] = set()
    for request in sent:  # the answers that were on their way arrive after the restart
        actions = resumed.handle(ChunkReceived(1, request.chunk, blobs[request.chunk]), 10)
        more |= {r.chunk for r in _requests(actions)}
    assert len(more) == 2 and not more & {r.chunk for r in sent}
    # A restart with nothing in flight: the first event of any kind plans again.
    idle = FetchPlanner.resume(
        neighbours, ledger, FetchSnapshot((), ((1, frozenset(blobs)),)), config
    )
    assert len(_requests(idle.handle(Tick(), 20))) == 2
