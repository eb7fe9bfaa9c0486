"""Release manifests, chunk verification and the artifact ledger's quotas."""

from __future__ import annotations

import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.cose import sign1
from fleetwire.protocol.errors import (
    EnvelopeError,
    LocalProtocolError,
    SignatureInvalid,
    UntrustedKey,
)
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.errors import (
    ChunkMismatch,
    ChunkNotWanted,
    QuotaExceeded,
    ReleaseFormatError,
    ReleaseSignerNotAuthorised,
)
from fleetwire.protocol.release.ledger import ArtifactLedger, ArtifactQuota
from fleetwire.protocol.release.manifest import (
    MAX_CHUNK_SIZE,
    ChunkRef,
    Manifest,
    Version,
    assemble,
    chunk_artifact,
    verify_chunk,
    verify_manifest,
)
from fleetwire.protocol.release.wire import MANIFEST_AAD
from fleetwire.protocol.trust import Role, TrustStore, issue_credential
from hypothesis import given
from hypothesis import strategies as st

from .fleet import DAY, ROOT, T0, node_key, trust_for
from .release_support import PIPELINE, artifact, make_release, release_trust


def test_manifest_round_trips_and_release_id_is_its_content_id() -> None:
    manifest, _ = make_release()
    payload = manifest.to_payload()
    assert Manifest.from_payload(payload) == manifest
    assert manifest.release_id == ContentId.of(payload)
    assert cbor.encode(cbor.decode(payload)) == payload  # deterministic


def test_signed_manifest_verifies_for_a_release_role_key() -> None:
    manifest, _ = make_release()
    envelope = manifest.sign(node_key(PIPELINE))
    assert verify_manifest(envelope, release_trust(), T0) == manifest


def test_manifest_signed_by_a_node_without_the_release_role_is_refused_with_a_code() -> None:
    manifest, _ = make_release(issuer=2)
    envelope = manifest.sign(node_key(2))
    with pytest.raises(ReleaseSignerNotAuthorised) as caught:
        verify_manifest(envelope, release_trust(), T0)
    assert caught.value.code == "release-signer-unauthorised"
    assert "release role" in caught.value.message


def test_a_credential_with_the_release_role_signs_manifests_through_a_plain_trust_store() -> None:
    manifest, _ = make_release()
    envelope = manifest.sign(node_key(PIPELINE))
    with pytest.raises(ReleaseSignerNotAuthorised):  # a node credential alone: refused
        verify_manifest(envelope, trust_for([PIPELINE]), T0)
    trust = TrustStore([ROOT.public])
    trust.add_credential(
        issue_credential(
            ROOT, node=PIPELINE, public_key=node_key(PIPELINE).public,
            roles=[Role.RELEASE], not_before=T0 - DAY, not_after=T0 + DAY, serial=1,
        ),
        T0,
    )  # fmt: skip
    assert verify_manifest(envelope, trust, T0) == manifest


def test_manifest_naming_another_issuer_is_refused() -> None:
    manifest, _ = make_release(issuer=2)
    with pytest.raises(UntrustedKey) as caught:
        verify_manifest(manifest.sign(node_key(PIPELINE)), release_trust(), T0)
    assert caught.value.code == "issuer-mismatch"


def test_manifest_signature_is_bound_to_its_kind() -> None:
    """A coordination-message signature over the same payload is not a manifest signature."""
    manifest, _ = make_release()
    plain = sign1(manifest.to_payload(), node_key(PIPELINE))
    with pytest.raises(SignatureInvalid):
        verify_manifest(plain, release_trust(), T0)
    assert sign1(manifest.to_payload(), node_key(PIPELINE), external_aad=MANIFEST_AAD) == (
        manifest.sign(node_key(PIPELINE))
    )


def test_tampered_manifest_is_refused() -> None:
    manifest, _ = make_release()
    envelope = bytearray(manifest.sign(node_key(PIPELINE)))
    envelope[60] ^= 1
    with pytest.raises(EnvelopeError):
        verify_manifest(bytes(envelope), release_trust(), T0)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({1: "B", 2: [1, 0, 0], 3: [], 4: 1, 5: 3, 6: 1, 7: 0}, "no chunk"),
        ({1: "", 2: [1, 0, 0], 3: [[b"\x12\x20" + bytes(32), 1]], 4: 1, 5: 3, 6: 1, 7: 0}, "1..64"),
        ({1: "B", 2: [1, 0], 3: [[b"\x12\x20" + bytes(32), 1]], 4: 1, 5: 3, 6: 1, 7: 0}, "major"),
        (
            {1: "B", 2: [1, 0, 0], 3: [[b"\x12\x20" + bytes(32), 1]], 4: 4, 5: 3, 6: 1, 7: 0},
            "above",
        ),
        (
            {1: "B", 2: [1, 0, 0], 3: [[b"\x13\x20" + bytes(32), 1]], 4: 1, 5: 3, 6: 1, 7: 0},
            "algorithm",
        ),
        (
            {1: "B", 2: [1, 0, 0], 3: [[b"\x12\x20" + bytes(32), 0]], 4: 1, 5: 3, 6: 1, 7: 0},
            "size 0",
        ),
        (
            {
                1: "B",
                2: [1, 0, 0],
                3: [[b"\x12\x20" + bytes(32), MAX_CHUNK_SIZE + 1]],
                4: 1,
                5: 3,
                6: 1,
                7: 0,
            },
            "size",
        ),
        (
            {1: "B", 2: [1, 0, 0], 3: [[b"\x12\x20" + bytes(32), 1]], 4: 1, 5: 3, 6: 1, 7: 0, 9: 1},
            "not known",
        ),
        (
            {1: "B", 2: [1, 0, 0], 3: [[b"\x12\x20" + bytes(32), 1]], 4: 1, 5: 3, 6: 1},
            "lacks field 7",
        ),
        (
            {1: "B", 2: [1, 0, 0], 3: [[b"\x12\x20" + bytes(32), 1]], 4: -1, 5: 3, 6: 1, 7: 0},
            "uint64",
        ),
        ({1: "B", 2: [1, 0, 0], 3: [b"\x12\x20"], 4: 1, 5: 3, 6: 1, 7: 0}, "[id, size]"),
    ],
)
def test_bad_manifest_payloads_are_refused_with_a_code(
    fields: dict[int, object], words: str
) -> None:
    with pytest.raises(ReleaseFormatError) as caught:
        Manifest.from_payload(cbor.encode(fields))
    assert caught.value.code == "release-format"
    assert words in caught.value.message


@given(st.binary(max_size=300))
def test_manifest_decoder_meets_hostile_bytes_with_typed_errors_only(data: bytes) -> None:
    try:
        Manifest.from_payload(data)
    except ReleaseFormatError:
        pass


def test_manifest_writer_refuses_what_a_reader_would() -> None:
    manifest, _ = make_release()
    with pytest.raises(LocalProtocolError):
        Manifest(**{**_fields(manifest), "min_peer_version": 5}).to_payload()
    with pytest.raises(LocalProtocolError):
        Manifest(**{**_fields(manifest), "chunks": ()}).to_payload()


def _fields(manifest: Manifest) -> dict[str, object]:
    return {name: getattr(manifest, name) for name in Manifest.__slots__ if name != "__weakref__"}


def test_chunks_are_verified_against_their_ids_and_reassemble() -> None:
    data = artifact(b"x", 5000)
    refs, blobs = chunk_artifact(data, 1024)
    assert [ref.size for ref in refs] == [1024] * 4 + [904]
    for ref in refs:
        verify_chunk(ref, blobs[ref.id])
    manifest, _ = make_release()
    manifest = Manifest(**{**_fields(manifest), "chunks": refs})
    assert assemble(manifest, blobs) == data
    wrong = bytearray(blobs[refs[0].id])
    wrong[0] ^= 1
    with pytest.raises(ChunkMismatch) as caught:
        verify_chunk(refs[0], bytes(wrong))
    assert caught.value.code == "chunk-hash-mismatch"
    with pytest.raises(ChunkMismatch):
        verify_chunk(refs[0], blobs[refs[0].id][:-1])


def test_repeated_pieces_are_one_chunk_stored_once() -> None:
    refs, blobs = chunk_artifact(bytes(4096), 1024)
    assert len(refs) == 4 and len(blobs) == 1
    manifest, _ = make_release()
    manifest = Manifest(**{**_fields(manifest), "chunks": refs})
    assert manifest.size == 1024


# --- the ledger and its quota ------------------------------------------------------------


def test_ledger_admits_within_quota_and_refuses_beyond_it_without_losing_anything() -> None:
    first, blobs = make_release(size=6000, seed=b"a")
    second, _ = make_release(size=6000, seed=b"b", version=Version(2, 2, 0))
    ledger = ArtifactLedger(ArtifactQuota(max_bytes=10_000))
    first_id = ledger.admit(first)
    for ref in first.chunks:
        ledger.store(ref.id, blobs[ref.id])
    assert ledger.complete(first_id)
    with pytest.raises(QuotaExceeded) as caught:
        ledger.admit(second)
    assert caught.value.code == "artifact-quota-exceeded"
    assert "6000 more bytes; 4000 of 10000 are free" in caught.value.message
    assert ledger.complete(first_id) and ledger.held_bytes == 6000
    assert list(ledger.releases()) == [first_id]


def test_shared_chunks_count_once_against_the_quota() -> None:
    base = artifact(b"base", 8192)
    first_refs, _ = chunk_artifact(base, 1024)
    patched_refs, _ = chunk_artifact(base[:7168] + artifact(b"patch", 1024), 1024)
    template, _ = make_release()
    first = Manifest(**{**_fields(template), "chunks": first_refs})
    patch = Manifest(**{**_fields(template), "chunks": patched_refs, "version": Version(2, 1, 1)})
    ledger = ArtifactLedger(ArtifactQuota(max_bytes=9216))
    ledger.admit(first)
    ledger.admit(patch)  # only one new chunk
    assert ledger.committed_bytes == 9216
    freed = ledger.remove(first.release_id)
    assert freed == [first_refs[-1].id]


def test_ledger_caps_the_number_of_releases() -> None:
    ledger = ArtifactLedger(ArtifactQuota(max_releases=1))
    ledger.admit(make_release(seed=b"a")[0])
    with pytest.raises(QuotaExceeded, match="quota 1"):
        ledger.admit(make_release(seed=b"b")[0])


def test_ledger_refuses_unwanted_and_wrong_chunks_and_keeps_what_it_holds() -> None:
    manifest, blobs = make_release()
    ledger = ArtifactLedger()
    ledger.admit(manifest)
    good = manifest.chunks[0]
    ledger.store(good.id, blobs[good.id])
    with pytest.raises(ChunkNotWanted) as caught:
        ledger.store(ContentId.of(b"other"), b"other")
    assert caught.value.code == "chunk-not-wanted"
    with pytest.raises(ChunkMismatch):
        ledger.store(manifest.chunks[1].id, blobs[good.id])
    assert ledger.held == frozenset({good.id})


def test_chunk_ref_is_a_value() -> None:
    ref = ChunkRef(ContentId.of(b"a"), 1)
    assert ref == ChunkRef(ContentId.of(b"a"), 1)
