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
    """Admitted releases, held chunks, and the quota they live under."""

    def __init__(self, quota: ArtifactQuota = DEFAULT_QUOTA) -> None:
        self.quota = quota
        self._releases: dict[ContentId, Manifest] = {}
        # Every distinct chunk an admitted release names -> its ref.
        self._wanted: dict[ContentId, ChunkRef] = {}
        self._held: set[ContentId] = set()

    # --- queries -----------------------------------------------------------------------

    @property
    def committed_bytes(self) -> int:
        """Bytes the admitted releases take once complete (each distinct chunk once)."""
        return sum(ref.size for ref in self._wanted.values())

    @property
    def held_bytes(self) -> int:
        return sum(self._wanted[cid].size for cid in self._held)

    @property
    def held(self) -> frozenset[ContentId]:
        return frozenset(self._held)

    def releases(self) -> dict[ContentId, Manifest]:
        return dict(self._releases)

    def wanted(self, chunk: ContentId) -> ChunkRef | None:
        """The ref of ``chunk`` if an admitted release names it."""
        return self._wanted.get(chunk)

    def holds(self, chunk: ContentId) -> bool:
        return chunk in self._held

    def missing(self) -> list[ChunkRef]:
        """Chunks still to fetch, in admission then manifest order (deterministic)."""
        seen: set[ContentId] = set()
        out = []
        for manifest in self._releases.values():
            for ref in manifest.chunks:
                if ref.id not in self._held and ref.id not in seen:
                    seen.add(ref.id)
                    out.append(ref)
        return out

    def complete(self, release_id: ContentId) -> bool:
        manifest = self._releases[release_id]
        return all(ref.id in self._held for ref in manifest.chunks)

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
        new = {
            cid: ref for cid, ref in manifest.distinct_chunks().items() if cid not in self._wanted
        }
        needed = sum(ref.size for ref in new.values())
        committed = self.committed_bytes
        if committed + needed > self.quota.max_bytes:
            raise QuotaExceeded(
                f"release {manifest.lineage} {manifest.version} needs {needed} more bytes; "
                f"{self.quota.max_bytes - committed} of {self.quota.max_bytes} are free"
            )
        self._releases[release_id] = manifest
        self._wanted.update(new)
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
        self._held.add(chunk)
        return ref

    def remove(self, release_id: ContentId) -> list[ContentId]:
        """Forget a release; return the chunks no other admitted release names (to delete)."""
        manifest = self._releases.pop(release_id, None)
        if manifest is None:
            raise LocalProtocolError(f"release {release_id.short()} is not kept")
        still = {ref.id for other in self._releases.values() for ref in other.chunks}
        freed = [cid for cid in manifest.distinct_chunks() if cid not in still]
        for cid in freed:
            del self._wanted[cid]
            self._held.discard(cid)
        return freed

    def restore_held(self, chunks: Iterable[ContentId]) -> None:
        """After a restart: the chunks the store still holds (already verified when stored)."""
        for cid in chunks:
            if cid in self._wanted:
                self._held.add(cid)
