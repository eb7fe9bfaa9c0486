"""Test helpers for the release machinery: a release signer, a trust resolver granting the
release role, and a small artifact."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import attrs
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import VerifyKey
from fleetwire.protocol.release.manifest import ChunkRef, Manifest, Version, chunk_artifact
from fleetwire.protocol.release.wire import RELEASE_ROLE
from fleetwire.protocol.trust import TrustStore

from .fleet import T0, node_key, trust_for

#: The release pipeline's node number.
PIPELINE = 900


@attrs.frozen
class _Granted:
    node: int
    public_key: VerifyKey
    roles: frozenset[int]


class ReleaseRoles:
    """A real trust store, plus the release role for the kids named.

    The trust store of this version cannot carry the release role in a credential yet (its
    ``Role`` enum ends at 4); this adds the role after the store has checked the key, exactly
    where a credential's own role will come from once it can.
    """

    def __init__(self, trust: TrustStore, release_kids: Collection[bytes]) -> None:
        self.trust = trust
        self.release_kids = frozenset(release_kids)

    def key_for(self, kid: bytes, now: int) -> _Granted:
        credential = self.trust.key_for(kid, now)
        roles = {int(role) for role in credential.roles}
        if kid in self.release_kids:
            roles.add(RELEASE_ROLE)
        return _Granted(credential.node, credential.public_key, frozenset(roles))


def release_trust(nodes: Collection[int] = (1, 2, 3)) -> ReleaseRoles:
    """Nodes ``nodes`` with plain node credentials, and :data:`PIPELINE` with the release role."""
    trust = trust_for([*nodes, PIPELINE])
    return ReleaseRoles(trust, [node_key(PIPELINE).kid])


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


__all__ = ["PIPELINE", "ChunkRef", "ReleaseRoles", "artifact", "make_release", "release_trust"]
