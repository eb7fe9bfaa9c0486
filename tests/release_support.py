"""Test helpers for the release machinery: a release signer (a credential with the release
role), and a small artifact."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.manifest import ChunkRef, Manifest, Version, chunk_artifact
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

from .fleet import DAY, ROOT, T0, node_key, trust_for

#: The release pipeline's node number.
PIPELINE = 900


def release_trust(nodes: Collection[int] = (1, 2, 3)) -> TrustStore:
    """Nodes ``nodes`` with plain node credentials, and :data:`PIPELINE` with the release role."""
    trust = trust_for(nodes)
    trust.add_credential(
        issue_credential(
            ROOT, node=PIPELINE, public_key=node_key(PIPELINE).public,
            roles=[Role.NODE, Role.RELEASE], not_before=T0 - DAY, not_after=T0 + 365 * DAY,
            serial=PIPELINE,
        ),
        T0,
    )  # fmt: skip
    return trust


def artifact(seed: bytes, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])


def make_release(
    lineage: str = "B",
    version: Version = Version(2, 1, 0),  # noqa: B008
    size: int = 10_000,
    chunk_size: int = 1024,
    seed: bytes = b"release",
    issuer: int = PIPELINE,
) -> tuple[Manifest, dict[ContentId, bytes]]:
    refs, blobs = chunk_artifact(artifact(seed, size), chunk_size)
    manifest = Manifest(
        lineage=lineage,
        version=version,
        chunks=refs,
        min_peer_version=1,
        max_peer_version=3,
        issuer=issuer,
        issued_at=T0,
    )
    return manifest, blobs


__all__ = ["PIPELINE", "ChunkRef", "artifact", "make_release", "release_trust"]
