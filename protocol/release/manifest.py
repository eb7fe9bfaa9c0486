"""Release manifests: what a release is, named by content id and signed by the release role.

Theory of operation
-------------------
A release is one **manifest** and the **chunks** it names. The manifest says which software
lineage the release belongs to (seeds: several lineages run side by side so one defect is not
fleet-wide), its version (major, minor, patch — the major number is what the version
discipline of :mod:`.rollout` counts), the protocol versions it can speak with peers
(``min_peer_version`` ≤ ``max_peer_version``, the N-2 window of DESIGN.md), and, in order, the
content id and size of every chunk. A chunk is named by the hash of its bytes
(:mod:`..ids`), so any neighbour that holds it can serve it and any receiver can check it
without trusting the sender: the manifest's signature covers the ids, the ids cover the bytes.

The **release id** is the content id of the manifest payload, the same on every node.

Payload (deterministic CBOR, RFC 8949 §4.2.1; signed under ``external_aad`` =
``"fleetwire release manifest v3"``)::

    { 1: lineage           tstr .size (1..64)
      2: version           [major: uint, minor: uint, patch: uint]
      3: chunks            [+ [id: bstr, size: uint]]   ; in artifact order (an id may repeat)
      4: min_peer_version  uint
      5: max_peer_version  uint                          ; ≥ min_peer_version
      6: issuer            uint                          ; node that signs; must be the signer
      7: issued_at         uint }                        ; DTN ms (RFC 9171 §4.2.6)

Bounds: at most :data:`MAX_CHUNKS` chunks of at most :data:`MAX_CHUNK_SIZE` bytes each.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import attrs

from .. import cbor
from ..cose import EnvelopeLimits
from ..envelope import IssuerMismatch
from ..errors import LocalProtocolError
from ..ids import ContentId
from ..keys import SigningKey
from .errors import ChunkMismatch, ReleaseFormatError
from .wire import (
    MANIFEST_AAD,
    RELEASE_ROLE,
    ReleaseKeyResolver,
    array,
    check_lineage,
    check_uint,
    content_id,
    decode_map,
    open_signed,
    sign_object,
    text,
    uint,
)

__all__ = [
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "ChunkRef",
    "assemble",
    "Manifest",
    "Version",
    "chunk_artifact",
    "verify_chunk",
    "verify_manifest",
]

#: Largest chunk: small enough to cross a thin link in one contact and to verify at once.
MAX_CHUNK_SIZE: Final = 1 << 20
#: Most chunks in one release (4 GiB at the largest chunk size).
MAX_CHUNKS: Final = 4096

_MANIFEST_CBOR: Final = cbor.Limits(
    max_size=MAX_CHUNKS * 48 + 1024, max_depth=3, max_container_items=MAX_CHUNKS,
    max_total_items=3 * MAX_CHUNKS + 32, max_string_length=64, allowed_tags=frozenset(),
)  # fmt: skip
_MANIFEST_ENVELOPE: Final = EnvelopeLimits(max_size=MAX_CHUNKS * 48 + 2048)


@attrs.frozen(slots=True, order=True)
class Version:
    """A release version; releases of one lineage are ordered by it."""

    major: int
    minor: int = 0
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@attrs.frozen(slots=True)
class ChunkRef:
    """One chunk of a release: its content id and its size in bytes."""

    id: ContentId
    size: int


@attrs.frozen(slots=True)
class Manifest:
    """A release: lineage, version, chunks, peer protocol window, issuer and issue time."""

    lineage: str
    version: Version
    chunks: tuple[ChunkRef, ...]
    min_peer_version: int
    max_peer_version: int
    issuer: int
    issued_at: int

    @property
    def size(self) -> int:
        """Bytes a node stores for this release: each distinct chunk once."""
        return sum(chunk.size for chunk in self.distinct_chunks().values())

    def distinct_chunks(self) -> dict[ContentId, ChunkRef]:
        """Each chunk once (an artifact may repeat a piece; it is fetched and stored once)."""
        return {chunk.id: chunk for chunk in self.chunks}

    @property
    def release_id(self) -> ContentId:
        """The content id of the payload: the release's name everywhere."""
        return ContentId.of(self.to_payload())

    def check(self) -> None:
        """The rules a reader applies, for a writer: raise :class:`LocalProtocolError`."""
        check_lineage(self.lineage)
        for name in ("major", "minor", "patch"):
            check_uint(getattr(self.version, name), f"version {name}")
        for name in ("min_peer_version", "max_peer_version", "issuer", "issued_at"):
            check_uint(getattr(self, name), name)
        if self.min_peer_version > self.max_peer_version:
            raise LocalProtocolError("min_peer_version is above max_peer_version")
        if not 1 <= len(self.chunks) <= MAX_CHUNKS:
            raise LocalProtocolError(f"a release holds 1..{MAX_CHUNKS} chunks")
        for chunk in self.chunks:
            if type(chunk.size) is not int or not 0 < chunk.size <= MAX_CHUNK_SIZE:
                raise LocalProtocolError(f"chunk size must be 1..{MAX_CHUNK_SIZE}")

    def to_payload(self) -> bytes:
        """The deterministic CBOR payload (module docstring)."""
        self.check()
        return cbor.encode(
            {
                1: self.lineage,
                2: [self.version.major, self.version.minor, self.version.patch],
                3: [[chunk.id.raw, chunk.size] for chunk in self.chunks],
                4: self.min_peer_version,
                5: self.max_peer_version,
                6: self.issuer,
                7: self.issued_at,
            }
        )

    @classmethod
    def from_payload(cls, data: bytes) -> Manifest:
        """Decode and check a manifest payload; raise :class:`.errors.ReleaseFormatError`."""
        fields = decode_map(data, _MANIFEST_CBOR, range(1, 8), range(1, 8), "manifest")
        version = array(fields, 2, "manifest version", 3)
        if len(version) != 3:
            raise ReleaseFormatError("manifest version (field 2) must be [major, minor, patch]")
        triple = [uint(dict(enumerate(version)), i, "manifest version") for i in range(3)]
        chunks = []
        for item in array(fields, 3, "manifest chunks", MAX_CHUNKS):
            if type(item) is not list or len(item) != 2:
                raise ReleaseFormatError("manifest chunk (field 3) must be [id, size]")
            size = uint({0: item[1]}, 0, "manifest chunk size")
            if not 0 < size <= MAX_CHUNK_SIZE:
                raise ReleaseFormatError(f"manifest chunk size {size} is not 1..{MAX_CHUNK_SIZE}")
            chunks.append(ChunkRef(content_id(item[0], "manifest chunk id"), size))
        if not chunks:
            raise ReleaseFormatError("manifest names no chunk")
        manifest = cls(
            lineage=text(fields, 1, "manifest lineage"),
            version=Version(*triple),
            chunks=tuple(chunks),
            min_peer_version=uint(fields, 4, "manifest min_peer_version"),
            max_peer_version=uint(fields, 5, "manifest max_peer_version"),
            issuer=uint(fields, 6, "manifest issuer"),
            issued_at=uint(fields, 7, "manifest issued_at"),
        )
        if manifest.min_peer_version > manifest.max_peer_version:
            raise ReleaseFormatError("manifest min_peer_version is above max_peer_version")
        return manifest

    def sign(self, key: SigningKey) -> bytes:
        """The COSE_Sign1 envelope of this manifest, signed by ``key``."""
        return sign_object(self.to_payload(), key, MANIFEST_AAD)


def verify_manifest(
    data: bytes,
    trust: ReleaseKeyResolver,
    now: int,
    *,
    signer_roles: Collection[int] = (RELEASE_ROLE,),
) -> Manifest:
    """Return the manifest in envelope ``data`` only if a release-role key signed it.

    Raises :class:`.errors.ReleaseSignerNotAuthorised` (trusted key, no release role),
    :class:`..errors.UntrustedKey` (unknown, revoked, expired key; issuer mismatch),
    :class:`..errors.EnvelopeError` (malformed, bad signature) or
    :class:`.errors.ReleaseFormatError` (payload).
    """
    payload, signer = open_signed(
        data, trust, now, MANIFEST_AAD, "manifest",
        limits=_MANIFEST_ENVELOPE, signer_roles=signer_roles,
    )  # fmt: skip
    manifest = Manifest.from_payload(payload)
    if manifest.issuer != signer.node:
        raise IssuerMismatch(
            f"manifest names issuer {manifest.issuer} but is signed by node {signer.node}"
        )
    return manifest


def verify_chunk(chunk: ChunkRef, data: bytes) -> None:
    """Refuse (:class:`.errors.ChunkMismatch`) bytes that are not the chunk ``chunk`` names."""
    if len(data) != chunk.size or not chunk.id.matches(data):
        raise ChunkMismatch(
            f"{len(data)} bytes received as chunk {chunk.id.short()} ({chunk.size} bytes) do "
            f"not hash to its id"
        )


def chunk_artifact(
    artifact: bytes, chunk_size: int = 256 * 1024
) -> tuple[tuple[ChunkRef, ...], dict[ContentId, bytes]]:
    """Cut ``artifact`` into chunks: their refs in order, and each distinct chunk's bytes."""
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise LocalProtocolError(f"chunk size must be 1..{MAX_CHUNK_SIZE}")
    refs: list[ChunkRef] = []
    blobs: dict[ContentId, bytes] = {}
    for start in range(0, len(artifact), chunk_size):
        piece = artifact[start : start + chunk_size]
        ref = ChunkRef(ContentId.of(piece), len(piece))
        refs.append(ref)
        blobs[ref.id] = piece
    return tuple(refs), blobs


def assemble(manifest: Manifest, chunks: dict[ContentId, bytes]) -> bytes:
    """The artifact from its verified chunks, in manifest order (each one checked again)."""
    parts = []
    for ref in manifest.chunks:
        data = chunks[ref.id]
        verify_chunk(ref, data)
        parts.append(data)
    return b"".join(parts)
