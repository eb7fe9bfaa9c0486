"""The disk-backed artifact store: survives a reopen, verifies what it reads, keeps the quota,
refuses what it should not keep."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.carriage import Kind
from fleetwire.protocol.release.errors import ChunkMismatch, ChunkNotWanted, QuotaExceeded
from fleetwire.protocol.release.ledger import ArtifactQuota
from fleetwire.protocol.release.manifest import Manifest, Version, verify_manifest
from fleetwire.protocol.release.orders import RevocationOrder, verify_revocation
from fleetwire.runtime.store.artifact_store import (
    ArtifactCorrupt,
    ArtifactStore,
    ArtifactStoreError,
)

from .fleet import T0, node_key
from .release_support import PIPELINE, make_release, release_trust

TRUST = release_trust()


def fill(path: Path) -> tuple[ArtifactStore, Manifest, dict[ContentId, bytes]]:
    manifest, blobs = make_release(size=5000, chunk_size=1024)
    store = ArtifactStore.open(path, TRUST)
    store.admit(manifest, manifest.sign(node_key(PIPELINE)), T0)
    return store, manifest, blobs


def test_what_was_committed_is_there_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "artifacts.db"
    manifest, blobs = make_release(size=5000, chunk_size=1024)
    envelope = manifest.sign(node_key(PIPELINE))
    store = ArtifactStore.open(path, TRUST)
    store.admit(manifest, envelope, T0)
    held = list(blobs.items())[:3]
    for cid, data in held:
        store.ledger.store(cid, data)
        store.write_chunk(cid, data)
    order = RevocationOrder(1, T0, PIPELINE, "B", Version(1, 0, 0)).sign(node_key(PIPELINE))
    assert store.journal(Kind.AUTHORITY_REVOCATION, order, T0 + 5)
    assert not store.journal(Kind.AUTHORITY_REVOCATION, order, T0 + 6)  # kept once
    store.close()

    again = ArtifactStore.open(path, TRUST)
    assert again.envelope(manifest.release_id) == envelope
    assert again.held() == {cid for cid, _ in held}
    assert again.ledger.committed_bytes == manifest.size  # the quota is committed again
    assert {ref.id for ref in again.ledger.missing_of(manifest.release_id)} == (
        set(blobs) - {cid for cid, _ in held}
    )
    for cid, data in held:
        assert again.get_chunk(cid) == data
    checked = []

    def check(kind: Kind, envelope: bytes, at: int) -> object:
        checked.append(at)
        return verify_revocation(envelope, TRUST, at)

    assert again.orders(check) == [(Kind.AUTHORITY_REVOCATION, order, T0 + 5)]
    assert checked == [T0 + 5]


def test_a_chunk_whose_bytes_changed_on_disk_is_refused_and_fetched_again(tmp_path: Path) -> None:
    path = tmp_path / "artifacts.db"
    store, _, blobs = fill(path)
    cid, data = next(iter(blobs.items()))
    store.ledger.store(cid, data)
    store.write_chunk(cid, data)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE chunks SET data = ? WHERE id = ?", (b"x" + data[1:], cid.raw))
    with pytest.raises(ArtifactCorrupt) as refused:
        store.get_chunk(cid)
    assert refused.value.code == "artifact-corrupt"
    assert not store.ledger.holds(cid)
    assert store.get_chunk(cid) is None
    assert cid in {ref.id for ref in store.ledger.missing()}


def test_only_verified_wanted_chunks_reach_the_disk(tmp_path: Path) -> None:
    store, _, blobs = fill(tmp_path / "artifacts.db")
    cid, data = next(iter(blobs.items()))
    with pytest.raises(ChunkMismatch):
        store.write_chunk(cid, data[:-1] + b"?")
    stranger, _ = make_release(seed=b"other")
    with pytest.raises(ChunkNotWanted):
        store.write_chunk(stranger.chunks[0].id, b"x" * stranger.chunks[0].size)
    store.close()
    with sqlite3.connect(tmp_path / "artifacts.db") as db:
        assert db.execute("SELECT count(*) FROM chunks").fetchone() == (0,)


def test_a_release_over_the_quota_is_refused_and_nothing_kept_is_touched(tmp_path: Path) -> None:
    path = tmp_path / "artifacts.db"
    first, _ = make_release(size=3000, chunk_size=1024, seed=b"first")
    second, _ = make_release(size=3000, chunk_size=1024, seed=b"second")
    store = ArtifactStore.open(path, TRUST, ArtifactQuota(max_bytes=4000))
    store.admit(first, first.sign(node_key(PIPELINE)), T0)
    with pytest.raises(QuotaExceeded) as refused:
        store.admit(second, second.sign(node_key(PIPELINE)), T0)
    assert refused.value.code == "artifact-quota-exceeded"
    store.close()
    again = ArtifactStore.open(path, TRUST, ArtifactQuota(max_bytes=4000))
    assert set(again.manifests()) == {first.release_id}


def test_a_tampered_manifest_row_is_dropped_when_the_store_opens(tmp_path: Path) -> None:
    path = tmp_path / "artifacts.db"
    store, _, _ = fill(path)
    store.close()
    with sqlite3.connect(path) as db:
        (envelope,) = db.execute("SELECT envelope FROM manifests").fetchone()
        bad = envelope[:-1] + bytes([envelope[-1] ^ 1])  # the signature's last byte
        db.execute("UPDATE manifests SET envelope = ?", (bad,))
    again = ArtifactStore.open(path, TRUST)
    assert again.manifests() == {}
    assert again.ledger.committed_bytes == 0
    verify_manifest(envelope, TRUST, T0)  # the original was fine


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ArtifactStoreError, match="not an artifact store"):
        ArtifactStore.open(path, TRUST)
