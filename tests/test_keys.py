"""Ed25519 keys (RFC 8032 test vectors) and their COSE_Key encoding (RFC 9052 §7, RFC 9053 §7.2)."""

from __future__ import annotations

import json

import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import FleetwireError, LocalProtocolError, SignatureInvalid
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import Curve, KeyFormatError, SigningKey, VerifyKey, kid_of
from hypothesis import given
from hypothesis import strategies as st

from .conftest import VECTORS

# RFC 8032 §7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]
TEST1_SEED = bytes.fromhex(RFC8032[0][0])


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    key = SigningKey.from_seed(bytes.fromhex(seed))
    assert key.public.raw.hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    key.public.verify(bytes.fromhex(signature), bytes.fromhex(message))


def test_kid_is_content_id_of_public_key() -> None:
    key = SigningKey.from_seed(TEST1_SEED)
    assert key.kid == ContentId.of(key.public.raw).raw == kid_of(key.public.raw)
    assert len(key.kid) == 34 and key.kid[:2] == b"\x12\x20"
    assert key.public.kid == key.kid


def test_generate_takes_randomness_from_the_caller() -> None:
    calls: list[int] = []

    def randbytes(n: int) -> bytes:
        calls.append(n)
        return TEST1_SEED

    assert SigningKey.generate(randbytes).seed == TEST1_SEED
    assert calls == [32]
    with pytest.raises(LocalProtocolError):
        SigningKey.generate(lambda n: b"\x00" * 31)


def test_bad_sizes_refused() -> None:
    with pytest.raises(KeyFormatError):
        SigningKey.from_seed(b"\x00" * 31)
    with pytest.raises(KeyFormatError):
        VerifyKey(b"\x00" * 33)
    with pytest.raises(KeyFormatError):
        VerifyKey(b"\x00" * 32, Curve.ED448)


def test_verify_refuses_wrong_signature_and_data() -> None:
    key = SigningKey.from_seed(TEST1_SEED)
    signature = key.sign(b"data")
    with pytest.raises(SignatureInvalid):
        key.public.verify(signature, b"date")
    with pytest.raises(SignatureInvalid):
        key.public.verify(bytes([signature[0] ^ 1]) + signature[1:], b"data")
    other = SigningKey.from_seed(bytes(32))
    with pytest.raises(SignatureInvalid):
        other.public.verify(signature, b"data")


def test_equality_hash_and_repr() -> None:
    key = SigningKey.from_seed(TEST1_SEED)
    same = VerifyKey(key.public.raw)
    assert same == key.public and hash(same) == hash(key.public)
    assert same != SigningKey.from_seed(bytes(32)).public
    assert TEST1_SEED.hex() not in repr(key) and key.kid.hex() in repr(key)


def test_cose_key_layout_for_rfc8032_test1() -> None:
    key = SigningKey.from_seed(TEST1_SEED)
    private = key.to_cose_key()
    public = key.public.to_cose_key()
    x, d = key.public.raw, TEST1_SEED
    # RFC 8949 §4.2.1 order: 1, 2, 3 (0x01..0x03) then -1, -2, -4 (0x20, 0x21, 0x23).
    assert public == (b"\xa5\x01\x01\x02\x58\x22" + key.kid + b"\x03\x27\x20\x06\x21\x58\x20" + x)
    assert private == b"\xa6" + public[1:] + b"\x23\x58\x20" + d
    assert cbor2.loads(private) == {1: 1, 2: key.kid, 3: -8, -1: 6, -2: x, -4: d}
    assert SigningKey.from_cose_key(private).seed == d
    assert VerifyKey.from_cose_key(public) == key.public


def test_public_and_private_files_are_not_interchangeable() -> None:
    key = SigningKey.from_seed(TEST1_SEED)
    with pytest.raises(KeyFormatError, match="private part"):
        VerifyKey.from_cose_key(key.to_cose_key())
    with pytest.raises(KeyFormatError, match="lacks d"):
        SigningKey.from_cose_key(key.public.to_cose_key())


def test_ed448_public_cose_key_from_the_cose_wg_example() -> None:
    example = json.loads((VECTORS / "cose-wg-examples" / "eddsa-sig-02.json").read_text())
    x = bytes.fromhex(example["input"]["sign0"]["key"]["x_hex"])
    key = VerifyKey(x, Curve.ED448)
    assert VerifyKey.from_cose_key(key.to_cose_key()) == key
    assert key.signature_size == 114


_ABSENT = object()


def _key_map(changes: dict[int, object] | None = None) -> dict[int, object]:
    """The test-1 private COSE_Key as a dict, with ``changes`` (``_ABSENT`` removes)."""
    key = SigningKey.from_seed(TEST1_SEED)
    fields: dict[int, object] = {1: 1, 2: key.kid, 3: -8, -1: 6, -2: key.public.raw, -4: key.seed}
    for label, value in (changes or {}).items():
        if value is _ABSENT:
            del fields[label]
        else:
            fields[label] = value
    return fields


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({1: 2}, "kty"),
        ({1: True}, "kty"),
        ({3: -7}, "alg"),
        ({-1: 1}, "crv"),
        ({-1: 7}, "must be Ed25519"),
        ({2: b"\x12\x20" + bytes(32)}, "kid"),
        ({-2: bytes(32)}, "not the public key of d"),
        ({-4: _ABSENT}, "lacks d"),
        ({-4: "text"}, "byte string"),
        ({-4: b"\x00" * 31}, "32 bytes"),
        ({9: 1}, "label 9"),
        ({"x": 1}, "label 'x'"),
        ({4: [2]}, "key_ops"),
    ],
)
def test_private_cose_key_refusals(changes: dict[int, object], rule: str) -> None:
    with pytest.raises(KeyFormatError, match=rule):
        SigningKey.from_cose_key(cbor.encode(_key_map(changes)))


def test_key_ops_allowing_the_use_is_accepted() -> None:
    assert SigningKey.from_cose_key(cbor.encode(_key_map({4: [1, 2]}))).seed == TEST1_SEED
    public = _key_map({-4: _ABSENT, 4: [2]})
    assert VerifyKey.from_cose_key(cbor.encode(public)).raw == public[-2]
    with pytest.raises(KeyFormatError, match="key_ops"):
        VerifyKey.from_cose_key(cbor.encode(_key_map({-4: _ABSENT, 4: [1]})))


def test_x_is_optional_in_a_private_key() -> None:
    assert SigningKey.from_cose_key(cbor.encode(_key_map({-2: _ABSENT}))).seed == TEST1_SEED


def test_non_deterministic_and_oversized_cose_keys_refused() -> None:
    fields = _key_map()
    # Negative labels first (numeric order) is not the bytewise order of RFC 8949 §4.2.1.
    shuffled = cbor2.dumps(dict(sorted(fields.items())))
    with pytest.raises(KeyFormatError, match="not acceptable CBOR"):
        SigningKey.from_cose_key(shuffled)
    with pytest.raises(KeyFormatError):
        SigningKey.from_cose_key(cbor.encode(fields) + b"\x00")
    with pytest.raises(KeyFormatError):
        VerifyKey.from_cose_key(cbor.encode({1: 1, -2: bytes(600)}))
    with pytest.raises(KeyFormatError, match="map"):
        VerifyKey.from_cose_key(cbor.encode([1, 2]))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_key_format_errors(data: bytes) -> None:
    for decode in (SigningKey.from_cose_key, VerifyKey.from_cose_key):
        try:
            decode(data)
        except KeyFormatError:
            pass


@given(st.data())
def test_mutated_cose_keys_raise_only_typed_errors(data: st.DataObject) -> None:
    good = bytearray(SigningKey.from_seed(TEST1_SEED).to_cose_key())
    index = data.draw(st.integers(0, len(good) - 1))
    good[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(good)))
    for decode in (SigningKey.from_cose_key, VerifyKey.from_cose_key):
        try:
            decode(bytes(good[:cut]))
        except FleetwireError as exc:
            assert isinstance(exc, KeyFormatError)


def test_curve_given_as_its_cose_code() -> None:
    key = SigningKey.from_seed(TEST1_SEED)
    assert VerifyKey(key.public.raw, 6) == key.public  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        VerifyKey(key.public.raw, 5)  # type: ignore[arg-type]
