"""The artifact ledger: which releases a node keeps, which of their chunks it holds, and quotas.

Theory of operation
-------------------
A node's artifact store is content-addressed: a chunk two releases share (most of a patch
release is its predecessor) is stored once. The ledger is the bookkeeping of that store — no
bytes, no I/O; the runtime keeps the bytes in the node's store and tells the ledger what it
did. It answers three questions: may this release come in (quota), which of its chunks are
still missing, and is a chunk that arrived one we want and the one we asked for.

Quota rule: a release is **admitted** only if every distinct chunk of every admitted release,
held or still missing, fits in ``max_bytes`` — so space for a release is committed before the
first chunk is fetched, a fetch never fails half way for lack of room, and admitting one release
can never push out another. A refusal (:class:`.errors.QuotaExceeded`) changes nothing.
Removing a release frees the chunks no other admitted release names; removal is the caller's
explicit act (an installed release is never evicted to make room).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from .errors import ChunkNotWanted, QuotaExceeded
from .manifest import ChunkRef, Manifest, verify_chunk

__all__ = ["ArtifactLedger", "ArtifactQuota"]


@attrs.frozen(slots=True)
class ArtifactQuota:
    """How much of a node's store releases may take."""

    max_bytes: int = 256 * 1024 * 1024
    max_releases: int = 16


DEFAULT_QUOTA: Final = ArtifactQuota()


class ArtifactLedger:
    """Admitted releases, held chunks, and the quota they live under.

    Every query the fetch planner makes per event is O(1): the ledger keeps the missing chunks
    in admission-then-manifest order, which releases name each chunk, and how many distinct
    chunks each release still lacks, up to date as chunks arrive.
    """

    def __init__(self, quota: ArtifactQuota = DEFAULT_QUOTA) -> None:
        self.quota = quota
        self._releases: dict[ContentId, Manifest] = {}
        # Every distinct chunk an admitted release names -> its ref, in admission order.
        self._wanted: dict[ContentId, ChunkRef] = {}
        self._order: dict[ContentId, int] = {}  # chunk -> position in that order
        self._named_by: dict[ContentId, set[ContentId]] = {}  # chunk -> release ids
        self._lacking: dict[ContentId, int] = {}  # release id -> distinct chunks not held
        self._held: set[ContentId] = set()
        self._committed = 0
        self._held_bytes = 0
        self._next = 0

    # --- queries -----------------------------------------------------------------------

    @property
    def committed_bytes(self) -> int:
        """Bytes the admitted releases take once complete (each distinct chunk once)."""
        return self._committed

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def held(self) -> frozenset[ContentId]:
        return frozenset(self._held)

    def releases(self) -> dict[ContentId, Manifest]:
        return dict(self._releases)

    def wanted(self, chunk: ContentId) -> ChunkRef | None:
        """The ref of ``chunk`` if an admitted release names it."""
        return self._wanted.get(chunk)

    def position(self, chunk: ContentId) -> int:
        """Where ``chunk`` stands in admission-then-manifest order (for deterministic plans)."""
        return self._order[chunk]

    def releases_naming(self, chunk: ContentId) -> frozenset[ContentId]:
        return frozenset(self._named_by.get(chunk, ()))

    def holds(self, chunk: ContentId) -> bool:
        return chunk in self._held

    def missing(self) -> list[ChunkRef]:
        """Chunks still to fetch, in admission then manifest order (deterministic)."""
        return [ref for cid, ref in self._wanted.items() if cid not in self._held]

    def missing_of(self, release_id: ContentId) -> list[ChunkRef]:
        """The chunks ``release_id`` still lacks, each once, in manifest order."""
        manifest = self._releases[release_id]
        return [ref for cid, ref in manifest.distinct_chunks().items() if cid not in self._held]

    def complete(self, release_id: ContentId) -> bool:
        return self._lacking[release_id] == 0

    # --- changes -----------------------------------------------------------------------

    def admit(self, manifest: Manifest) -> ContentId:
        """Commit room for ``manifest``'s release; return its id. Idempotent.

        Raises :class:`.errors.QuotaExceeded` (nothing changed) if it does not fit.
        """
        release_id = manifest.release_id
        if release_id in self._releases:
            return release_id
        if len(self._releases) >= self.quota.max_releases:
            raise QuotaExceeded(
                f"release {release_id.short()} refused: {len(self._releases)} releases kept "
                f"already (quota {self.quota.max_releases}); remove an old one first"
            )
        chunks = manifest.distinct_chunks()
        new = {cid: ref for cid, ref in chunks.items() if cid not in self._wanted}
        needed = sum(ref.size for ref in new.values())
        if self._committed + needed > self.quota.max_bytes:
            raise QuotaExceeded(
                f"release {manifest.lineage} {manifest.version} needs {needed} more bytes; "
                f"{self.quota.max_bytes - self._committed} of {self.quota.max_bytes} are free"
            )
        self._releases[release_id] = manifest
        for cid, ref in new.items():
            self._wanted[cid] = ref
            self._order[cid] = self._next
            self._next += 1
        self._committed += needed
        for cid in chunks:
            self._named_by.setdefault(cid, set()).add(release_id)
        self._lacking[release_id] = sum(1 for cid in chunks if cid not in self._held)
        return release_id

    def store(self, chunk: ContentId, data: bytes) -> ChunkRef:
        """Check ``data`` against the wanted chunk ``chunk`` and count it held.

        Raises :class:`.errors.ChunkNotWanted` or :class:`.errors.ChunkMismatch`; on either,
        nothing changes.
        """
        ref = self._wanted.get(chunk)
        if ref is None:
            raise ChunkNotWanted(f"chunk {chunk.short()} is named by no admitted release")
        verify_chunk(ref, data)
        self._hold(chunk)
        return ref

    def _hold(self, chunk: ContentId) -> None:
        if chunk in self._held:
            return
        self._held.add(chunk)
        self._held_bytes += self._wanted[chunk].size
        for release_id in self._named_by[chunk]:
            self._lacking[release_id] -= 1

    def remove(self, release_id: ContentId) -> list[ContentId]:
        """Forget a release; return the chunks no other admitted release names (to delete)."""
        manifest = self._releases.pop(release_id, None)
        if manifest is None:
            raise LocalProtocolError(f"release {release_id.short()} is not kept")
        del self._lacking[release_id]
        freed = []
        for cid in manifest.distinct_chunks():
            names = self._named_by[cid]
            names.discard(release_id)
            if names:
                continue
            del self._named_by[cid]
            freed.append(cid)
            ref = self._wanted.pop(cid)
            self._committed -= ref.size
            del self._order[cid]
            if cid in self._held:
                self._held.discard(cid)
                self._held_bytes -= ref.size
        return freed

    def forget_held(self, chunk: ContentId) -> None:
        """A held chunk was lost (its stored bytes went bad): count it missing again."""
        if chunk not in self._held:
            return
        self._held.discard(chunk)
        self._held_bytes -= self._wanted[chunk].size
        for release_id in self._named_by[chunk]:
            self._lacking[release_id] += 1

    def restore_held(self, chunks: Iterable[ContentId]) -> None:
        """After a restart: the chunks the store still holds (already verified when stored)."""
        for cid in chunks:
            if cid in self._wanted:
                self._hold(cid)
