"""spec/v3: the release objects' CDDL and vectors against the code, with an independent CDDL
validator, and the vector file against a fresh generation."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
from cddl_verifier import Validator, schema_diagnostics
from fleetwire.protocol.envelope import verify as verify_message
from fleetwire.protocol.errors import FleetwireError, SignatureInvalid
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import VerifyKey
from fleetwire.protocol.release.carriage import Holdings, NodeReport
from fleetwire.protocol.release.manifest import Manifest, verify_manifest
from fleetwire.protocol.release.messages import (
    ChunkAnswer,
    ChunkRequest,
    RolloutStage,
    verify_rollout_stage,
)
from fleetwire.protocol.release.orders import (
    PolicyTable,
    RevocationOrder,
    verify_policy,
    verify_revocation,
)
from fleetwire.protocol.release.wire import RELEASE_ROLE

from .fleet import T0, node_key, trust_for
from .release_support import PIPELINE, make_release

SPEC = Path(__file__).resolve().parent.parent / "spec" / "v3"
CDDL = SPEC / "release.cddl"
VECTORS = json.loads((SPEC / "release-vectors.json").read_text(encoding="utf-8"))

DECODERS: dict[str, Any] = {
    "manifest": Manifest.from_payload,
    "chunk-request": ChunkRequest.from_payload,
    "chunk-answer": ChunkAnswer.from_payload,
    "rollout-stage": RolloutStage.from_payload,
    "authority-revocation": RevocationOrder.from_payload,
    "policy-table": PolicyTable.from_payload,
    "holdings": Holdings.from_payload,
    "node-report": NodeReport.from_payload,
}
VERIFIERS: dict[str, Any] = {
    "manifest": verify_manifest,
    "rollout-stage": verify_rollout_stage,
    "authority-revocation": verify_revocation,
    "policy-table": verify_policy,
}


@attrs.frozen
class _Signer:
    node: int
    public_key: VerifyKey
    roles: frozenset[int]


class _VectorKey:
    """The vectors' one key, belonging to the node they name, with the release role."""

    def __init__(self, roles: frozenset[int]) -> None:
        key = VECTORS["key"]
        self.signer = _Signer(key["node"], VerifyKey(bytes.fromhex(key["public"])), roles)

    def key_for(self, kid: bytes, now: int) -> _Signer:
        assert kid == self.signer.public_key.kid
        return self.signer


@cache
def validator() -> Validator:
    return Validator(CDDL)


def test_release_schema_is_valid_cddl() -> None:
    assert schema_diagnostics(CDDL) == ()


def test_every_object_has_a_valid_vector() -> None:
    assert {v["object"] for v in VECTORS["valid"]} == set(DECODERS)


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["id"])
def test_valid_vectors_decode_re_encode_and_match_the_cddl(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    value = DECODERS[vector["object"]](data)
    assert value.to_payload() == data
    assert ContentId.of(data).raw.hex() == vector["content_id"]
    assert validator().validate(data, root_type=vector["object"]).valid
    assert validator().validate(data, root_type="release-object").valid


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS["valid"] if "envelope" in v], ids=lambda v: v["id"]
)
def test_signed_vectors_verify_under_their_external_aad_and_only_for_the_release_role(
    vector: dict[str, Any],
) -> None:
    envelope = bytes.fromhex(vector["envelope"])
    verify = VERIFIERS[vector["object"]]
    value = verify(envelope, _VectorKey(frozenset({RELEASE_ROLE})), 0)
    assert value.to_payload() == bytes.fromhex(vector["hex"])
    with pytest.raises(FleetwireError) as caught:
        verify(envelope, _VectorKey(frozenset({1, 2, 3, 4})), 0)
    assert caught.value.code == "release-signer-unauthorised"
    others = [v for name, v in VERIFIERS.items() if name != vector["object"]]
    with pytest.raises(SignatureInvalid):  # another kind's aad: never taken for it
        others[0](envelope, _VectorKey(frozenset({RELEASE_ROLE})), 0)


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["id"])
def test_invalid_vectors_are_refused_with_their_code_and_the_cddl_agrees(
    vector: dict[str, Any],
) -> None:
    data = bytes.fromhex(vector["hex"])
    with pytest.raises(FleetwireError) as caught:
        DECODERS[vector["object"]](data)
    assert caught.value.code == vector["code"]
    # ``structural`` says whether the CDDL alone refuses it: keep the flag honest both ways.
    try:
        cbor2.loads(data)
    except cbor2.CBORDecodeError:  # pragma: no cover - every invalid vector is CBOR
        return
    assert validator().validate(data, root_type=vector["object"]).valid is not vector["structural"]


def test_vector_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "release_vectors", SPEC / "generate_release_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.documents()) == (SPEC / "release-vectors.json").read_text(
        encoding="utf-8"
    )


def test_an_older_reader_refuses_release_objects_given_as_messages() -> None:
    """release.md §8: a v1 reader's envelope check refuses each object with the code stated."""
    trust = trust_for([1, 2, 3, PIPELINE])  # the pipeline's key known as a plain node
    signed = make_release()[0].sign(node_key(PIPELINE))
    with pytest.raises(FleetwireError) as caught:
        verify_message(signed, trust, T0)
    assert caught.value.code == "signature-invalid"
    for vector in VECTORS["valid"]:
        if "envelope" not in vector:
            with pytest.raises(FleetwireError) as caught:
                verify_message(bytes.fromhex(vector["hex"]), trust, T0)
            assert caught.value.code == "envelope-not-sign1"
