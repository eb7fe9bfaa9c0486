"""Release fetch: what the fetch planner costs per chunk, against hashing the chunk.

One node fetches a release from its cell coordinator, which announces every chunk at once;
each request is answered at once. Measured, in the same run:

* raw — SHA-256 over every chunk (the verification a receiver cannot skip: the floor);
* planner — the whole fetch through :class:`FetchPlanner` (announce, plan, request, verify,
  store, complete), real chunks and real hashing.

Printed: planner / raw for small and large chunks, and the per-chunk cost of a 4096-chunk
release over that of a 512-chunk one (near 1 when the planner does constant work per event;
the first version re-scanned every missing chunk on every event, so the ratio grew with the
release: a 4096-chunk fetch announced chunk by chunk took 102 s, now 0.35 s).

Usage: ``python benchmarks/bench_release_fetch.py``
"""

from __future__ import annotations

import hashlib
import os
import timeit
from collections.abc import Callable

from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.fetch import (
    ChunkReceived,
    FetchPlanner,
    HolderAnnounced,
    LinkKind,
    ReleaseWanted,
    RequestChunk,
)
from fleetwire.protocol.release.ledger import ArtifactLedger, ArtifactQuota
from fleetwire.protocol.release.manifest import Manifest, Version, chunk_artifact

ROUNDS = 5


def release(chunks: int, size: int) -> tuple[Manifest, dict[ContentId, bytes]]:
    refs, blobs = chunk_artifact(os.urandom(chunks * size), size)
    return Manifest("B", Version(1), refs, 1, 3, 1, 0), blobs


def fetch(manifest: Manifest, blobs: dict[ContentId, bytes]) -> None:
    planner = FetchPlanner(
        {1: LinkKind.CELL, 2: LinkKind.REGION}, ArtifactLedger(ArtifactQuota(max_bytes=1 << 32))
    )
    planner.handle(ReleaseWanted(manifest), 0)
    queue = [a for a in planner.handle(HolderAnnounced(1, frozenset(blobs)), 0)]
    while queue:
        action = queue.pop()
        if isinstance(action, RequestChunk):
            queue += planner.handle(ChunkReceived(1, action.chunk, blobs[action.chunk]), 0)
    assert planner.ledger.complete(manifest.release_id)


def raw(blobs: dict[ContentId, bytes]) -> None:
    for data in blobs.values():
        hashlib.sha256(data).digest()


def best(fn: Callable[..., None], *args: object) -> float:
    return min(timeit.repeat(lambda: fn(*args), number=1, repeat=ROUNDS))


def main() -> None:
    for chunks, size in ((1024, 1024), (256, 256 * 1024)):
        manifest, blobs = release(chunks, size)
        ratio = best(fetch, manifest, blobs) / best(raw, blobs)
        print(f"{chunks} chunks of {size} B: planner / raw SHA-256 = {ratio:.1f}")
    small, small_blobs = release(512, 1024)
    large, large_blobs = release(4096, 1024)
    per_small = best(fetch, small, small_blobs) / 512
    per_large = best(fetch, large, large_blobs) / 4096
    print(f"per-chunk cost, 4096-chunk release / 512-chunk release = {per_large / per_small:.2f}")


if __name__ == "__main__":
    main()
