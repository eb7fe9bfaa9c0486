"""Chunk requests and answers, and the signed rollout-stage order."""

from __future__ import annotations

import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import LocalProtocolError, SignatureInvalid
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.errors import ReleaseFormatError, ReleaseSignerNotAuthorised
from fleetwire.protocol.release.manifest import MAX_CHUNK_SIZE, Manifest, Version
from fleetwire.protocol.release.messages import (
    MAX_REQUESTED,
    ChunkAnswer,
    ChunkRequest,
    RolloutStage,
    StageAction,
    verify_rollout_stage,
)
from fleetwire.protocol.release.orders import PolicyTable, RevocationOrder, verify_revocation
from hypothesis import given
from hypothesis import strategies as st

from .fleet import T0, node_key
from .release_support import PIPELINE, release_trust

RELEASE = ContentId.of(b"manifest")
CHUNKS = tuple(ContentId.of(b"%d" % i) for i in range(3))


def stage(**changes: object) -> RolloutStage:
    fields: dict[str, object] = dict(
        serial=4,
        issued_at=T0,
        issuer=PIPELINE,
        release=RELEASE,
        stage=1,
        action=StageAction.GRANT_AUTHORITY,
        cells=(3, 5, 9),
    )
    fields.update(changes)
    return RolloutStage(**fields)  # type: ignore[arg-type]


def test_chunk_request_and_answer_round_trip() -> None:
    request = ChunkRequest(RELEASE, CHUNKS)
    assert ChunkRequest.from_payload(request.to_payload()) == request
    answer = ChunkAnswer(CHUNKS[0], b"0")
    assert ChunkAnswer.from_payload(answer.to_payload()) == answer


def test_requests_and_answers_are_bounded() -> None:
    many = tuple(ContentId.of(b"%d" % i) for i in range(MAX_REQUESTED + 1))
    with pytest.raises(LocalProtocolError):
        ChunkRequest(RELEASE, many).to_payload()
    with pytest.raises(ReleaseFormatError):
        ChunkRequest.from_payload(cbor.encode({1: RELEASE.raw, 2: [c.raw for c in many]}))
    with pytest.raises(ReleaseFormatError, match="distinct"):
        ChunkRequest.from_payload(cbor.encode({1: RELEASE.raw, 2: [CHUNKS[0].raw] * 2}))
    with pytest.raises(ReleaseFormatError):
        ChunkAnswer.from_payload(cbor.encode({1: CHUNKS[0].raw, 2: bytes(MAX_CHUNK_SIZE + 1)}))
    with pytest.raises(ReleaseFormatError, match="non-empty"):
        ChunkAnswer.from_payload(cbor.encode({1: CHUNKS[0].raw, 2: b""}))


def test_rollout_stage_round_trips_and_verifies() -> None:
    trust = release_trust()
    order = stage()
    assert RolloutStage.from_payload(order.to_payload()) == order
    assert verify_rollout_stage(order.sign(node_key(PIPELINE)), trust, T0) == order
    back = stage(action=StageAction.ROLL_BACK, to=Version(2, 4, 1))
    assert verify_rollout_stage(back.sign(node_key(PIPELINE)), trust, T0) == back


def test_rollout_stage_from_a_plain_node_or_of_another_kind_is_refused() -> None:
    trust = release_trust()
    with pytest.raises(ReleaseSignerNotAuthorised):
        verify_rollout_stage(stage(issuer=2).sign(node_key(2)), trust, T0)
    with pytest.raises(SignatureInvalid):
        verify_revocation(stage().sign(node_key(PIPELINE)), trust, T0)


@pytest.mark.parametrize(
    ("changes", "fields", "words"),
    [
        ({}, {6: 9}, "action 9"),
        ({}, {7: [5, 3]}, "ascending"),
        ({}, {7: []}, "ascending"),
        ({}, {8: [2, 4, 1]}, "only with a roll back"),
        ({"action": StageAction.ROLL_BACK, "to": Version(2, 0, 0)}, {8: [2, 4]}, "major"),
        ({}, {9: 1}, "not known"),
    ],
)
def test_bad_rollout_stages_are_refused(
    changes: dict[str, object], fields: dict[int, object], words: str
) -> None:
    payload = cbor.decode(stage(**changes).to_payload())
    payload.update(fields)
    with pytest.raises(ReleaseFormatError, match=words) as caught:
        RolloutStage.from_payload(cbor.encode(payload))
    assert caught.value.code == "release-format"


def test_rollout_stage_writer_refuses_what_a_reader_would() -> None:
    with pytest.raises(LocalProtocolError):
        stage(cells=(5, 3)).to_payload()
    with pytest.raises(LocalProtocolError):
        stage(to=Version(1)).to_payload()


@given(st.binary(max_size=200))
def test_decoders_meet_hostile_bytes_with_typed_errors_only(data: bytes) -> None:
    for decode in (ChunkRequest.from_payload, ChunkAnswer.from_payload, RolloutStage.from_payload):
        try:
            decode(data)
        except ReleaseFormatError:
            pass


_leaf = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=70),
    st.booleans(),
    st.none(),
    st.sampled_from([c.raw for c in CHUNKS]),
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.integers(0, 10), _value, max_size=9))
def test_every_release_decoder_meets_hostile_maps_with_typed_errors_only(
    fields: dict[int, object],
) -> None:
    data = cbor.encode(fields)
    for decoder in (
        Manifest.from_payload,
        RevocationOrder.from_payload,
        PolicyTable.from_payload,
        ChunkRequest.from_payload,
        ChunkAnswer.from_payload,
        RolloutStage.from_payload,
    ):
        try:
            value = decoder(data)
        except ReleaseFormatError:
            continue
        assert value.to_payload() == data  # one content, one encoding, one id
