"""COSE_Sign1 with EdDSA (RFC 9052 §4.2, §4.4; RFC 9053 §2.2): vectors, refusals, properties."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.cose import (
    DEFAULT_ENVELOPE_LIMITS,
    MAX_ENVELOPE_SIZE,
    MAX_HEADER_SIZE,
    MAX_PAYLOAD_SIZE,
    PROTECTED_EDDSA,
    BadHeader,
    BadSignatureSize,
    DetachedPayload,
    EnvelopeLimits,
    EnvelopeTooLarge,
    KeyMismatch,
    NotCoseSign1,
    UnknownCriticalHeader,
    UnsupportedAlgorithm,
    parse_sign1,
    sig_structure,
    sign1,
    verify_sign1,
)
from fleetwire.protocol.errors import (
    DecodeError,
    EnvelopeError,
    LocalProtocolError,
    SignatureInvalid,
)
from fleetwire.protocol.keys import Curve, SigningKey, VerifyKey
from hypothesis import given
from hypothesis import strategies as st

from .conftest import VECTORS

EXAMPLES = VECTORS / "cose-wg-examples"
KEY = SigningKey.from_seed(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
OTHER = SigningKey.from_seed(bytes(range(32)))
CONTENT = b"This is the content."


def _example(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return result


def _envelope(protected: Any, unprotected: Any, payload: Any, signature: Any) -> bytes:
    """A COSE_Sign1 written by the generic encoder, for crafting refusals."""
    return cbor.encode(cbor2.CBORTag(18, [protected, unprotected, payload, signature]))


#: Most refusal cases below write no kid to keep them short; the kid rule has its own tests.
NO_KID = EnvelopeLimits(require_kid=False)


def _refused(
    data: bytes, error: type[Exception], match: str | None = None, limits: EnvelopeLimits = NO_KID
) -> None:
    with pytest.raises(error, match=match):
        parse_sign1(data, limits)


# --- vectors ---------------------------------------------------------------------------


def test_eddsa_sig_01_byte_for_byte() -> None:
    example = _example("eddsa-sig-01.json")
    key_info = example["input"]["sign0"]["key"]
    assert KEY.public.raw.hex() == key_info["x_hex"]
    protected = bytes.fromhex("a201270300")  # {1: -8, 3: 0}
    tbs = sig_structure(protected, b"", CONTENT)
    assert tbs == bytes.fromhex(example["intermediates"]["ToBeSign_hex"])
    foreign = EnvelopeLimits(require_kid=False)  # the example names its key "11"
    out = sign1(CONTENT, KEY, protected=protected, unprotected={4: b"11"}, limits=foreign)
    assert out == bytes.fromhex(example["output"]["cbor"])
    with pytest.raises(BadHeader, match="content id"):
        parse_sign1(out)

    parsed = parse_sign1(out, foreign)
    assert parsed.protected_bytes == protected
    assert parsed.protected == {1: -8, 3: 0}
    assert parsed.unprotected == {4: b"11"} and parsed.kid == b"11"
    assert parsed.payload == CONTENT
    # The example's kid "11" is a label, not our content-id kid: verify without that check.
    assert verify_sign1(parsed, KEY.public, check_kid=False) == CONTENT
    with pytest.raises(KeyMismatch):
        verify_sign1(parsed, KEY.public)


def test_eddsa_sig_02_is_ed448_verified_only_when_allowed() -> None:
    example = _example("eddsa-sig-02.json")
    data = bytes.fromhex(example["output"]["cbor"])
    with pytest.raises(BadSignatureSize, match="114 bytes"):
        parse_sign1(data, NO_KID)
    parsed = parse_sign1(data, EnvelopeLimits(allow_ed448=True, require_kid=False))
    key = VerifyKey(bytes.fromhex(example["input"]["sign0"]["key"]["x_hex"]), Curve.ED448)
    assert sig_structure(parsed.protected_bytes, b"", parsed.payload) == bytes.fromhex(
        example["intermediates"]["ToBeSign_hex"]
    )
    assert verify_sign1(parsed, key, check_kid=False) == CONTENT
    with pytest.raises(SignatureInvalid):
        verify_sign1(parsed, KEY.public, check_kid=False)  # 114-byte signature, Ed25519 key


@pytest.mark.parametrize("name", ["eddsa-01.json", "eddsa-02.json"])
def test_cose_sign_multi_signer_examples_are_not_sign1(name: str) -> None:
    _refused(bytes.fromhex(_example(name)["output"]["cbor"]), NotCoseSign1, "tag 18")


# --- what we write ---------------------------------------------------------------------


def test_default_envelope_layout_matches_the_generic_deterministic_encoder() -> None:
    payload = bytes(range(220))
    out = sign1(payload, KEY)
    signature = out[-64:]
    assert out == _envelope(PROTECTED_EDDSA, {4: KEY.kid}, payload, signature)
    assert out.startswith(b"\xd2\x84\x43\xa1\x01\x27\xa1\x04\x58\x22" + KEY.kid)
    KEY.public.verify(signature, cbor.encode(["Signature1", PROTECTED_EDDSA, b"", payload]))


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
def test_payload_sizes_across_head_widths(size: int) -> None:
    payload = bytes(size)
    out = sign1(payload, KEY)
    assert out == _envelope(PROTECTED_EDDSA, {4: KEY.kid}, payload, out[-64:])
    assert verify_sign1(parse_sign1(out), KEY.public) == payload


def test_parse_accepts_bytearray_and_memoryview() -> None:
    out = sign1(b"payload", KEY)
    for view in (bytearray(out), memoryview(out)):
        parsed = parse_sign1(view)
        assert type(parsed.payload) is bytes and parsed == parse_sign1(out)


def test_external_aad_binds_context() -> None:
    out = sign1(b"payload", KEY, external_aad=b"context A")
    parsed = parse_sign1(out)
    assert verify_sign1(parsed, KEY.public, b"context A") == b"payload"
    for aad in (b"", b"context B"):
        with pytest.raises(SignatureInvalid):
            verify_sign1(parsed, KEY.public, aad)


def test_wrong_key_and_kid_mismatch() -> None:
    parsed = parse_sign1(sign1(b"payload", KEY))
    with pytest.raises(KeyMismatch):
        verify_sign1(parsed, OTHER.public)
    with pytest.raises(SignatureInvalid):
        verify_sign1(parsed, OTHER.public, check_kid=False)
    with pytest.raises(LocalProtocolError, match="no kid"):
        sign1(b"payload", KEY, unprotected={})
    anonymous_bytes = sign1(b"payload", KEY, unprotected={}, limits=EnvelopeLimits(require_kid=False))
    with pytest.raises(BadHeader, match="no kid"):
        parse_sign1(anonymous_bytes)
    anonymous = parse_sign1(anonymous_bytes, EnvelopeLimits(require_kid=False))
    assert anonymous.kid is None
    with pytest.raises(KeyMismatch, match="names no key"):
        verify_sign1(anonymous, KEY.public)
    assert verify_sign1(anonymous, KEY.public, check_kid=False) == b"payload"
    with pytest.raises(SignatureInvalid):
        verify_sign1(anonymous, OTHER.public, check_kid=False)


def test_only_the_kid_is_read_from_the_unsigned_bucket() -> None:
    data = _envelope(PROTECTED_EDDSA, {4: KEY.kid, 5: b"iv"}, b"x", SIG)
    with pytest.raises(BadHeader, match="unprotected label 5"):
        parse_sign1(data)
    assert parse_sign1(data, EnvelopeLimits(unprotected_labels=None)).unprotected[5] == b"iv"
    assert parse_sign1(data, EnvelopeLimits(unprotected_labels=frozenset({5}))).kid == KEY.kid


def test_kid_in_protected_bucket() -> None:
    protected = cbor.encode({1: -8, 4: KEY.kid})
    parsed = parse_sign1(sign1(b"x", KEY, protected=protected, unprotected={}))
    assert parsed.kid == KEY.kid
    assert verify_sign1(parsed, KEY.public) == b"x"
    with pytest.raises(KeyMismatch):
        verify_sign1(parsed, OTHER.public)


def test_understood_critical_header_is_accepted() -> None:
    protected = cbor.encode({1: -8, 2: [3], 3: "application/cbor"})
    parsed = parse_sign1(sign1(b"x", KEY, protected=protected))
    assert parsed.protected[3] == "application/cbor"
    assert verify_sign1(parsed, KEY.public) == b"x"


@pytest.mark.parametrize(
    ("protected", "unprotected"),
    [
        (cbor.encode({1: -7}), None),
        (b"", None),
        (cbor.encode({1: -8, 2: [99]}), None),
        (PROTECTED_EDDSA, {1: -8}),
        (PROTECTED_EDDSA, {2: [4]}),
        (cbor.encode({1: -8, 4: b"k"}), {4: b"k"}),
        (PROTECTED_EDDSA, {4: "text kid"}),
        (PROTECTED_EDDSA, {5: b"iv"}),
        (cbor.encode({1: -8, 4: b"k"}), None),  # default unprotected kid would repeat label 4
    ],
)
def test_sign1_refuses_headers_it_would_not_accept(protected: bytes, unprotected: Any) -> None:
    with pytest.raises(LocalProtocolError):
        sign1(b"x", KEY, protected=protected, unprotected=unprotected)


# --- what we refuse --------------------------------------------------------------------

SIG = bytes(64)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"", NotCoseSign1, "truncated"),
        (cbor.encode([PROTECTED_EDDSA, {}, b"x", SIG]), NotCoseSign1, "untagged"),
        (cbor.encode(cbor2.CBORTag(17, [PROTECTED_EDDSA, {}, b"x", SIG])), NotCoseSign1, "tag 18"),
        (cbor.encode(cbor2.CBORTag(18, [PROTECTED_EDDSA, {}, b"x"])), NotCoseSign1, "4-element"),
        (
            cbor.encode(cbor2.CBORTag(18, [PROTECTED_EDDSA, {}, b"x", SIG, 0])),
            NotCoseSign1,
            "4-element",
        ),
        (cbor.encode(cbor2.CBORTag(18, {1: 2})), NotCoseSign1, "4-element"),
        (_envelope({1: -8}, {}, b"x", SIG), NotCoseSign1, "protected header .* not a byte string"),
        (_envelope(cbor.encode(5), {}, b"x", SIG), BadHeader, "not a map"),
        (_envelope(b"\xa0", {}, b"x", SIG), BadHeader, "zero-length"),
        (_envelope(b"", {}, b"x", SIG), UnsupportedAlgorithm, "empty"),
        (_envelope(cbor.encode({3: 0}), {}, b"x", SIG), UnsupportedAlgorithm, "None"),
        (_envelope(cbor.encode({1: -7}), {}, b"x", SIG), UnsupportedAlgorithm, "-7"),
        (_envelope(cbor.encode({1: "-8"}), {}, b"x", SIG), UnsupportedAlgorithm, "'-8'"),
        (_envelope(cbor.encode({1: -8, 2: [7]}), {}, b"x", SIG), UnknownCriticalHeader, "7"),
        (_envelope(cbor.encode({1: -8, 2: ["new"]}), {}, b"x", SIG), UnknownCriticalHeader, "new"),
        (_envelope(cbor.encode({1: -8, 2: []}), {}, b"x", SIG), BadHeader, "non-empty"),
        (_envelope(cbor.encode({1: -8, 2: 3}), {}, b"x", SIG), BadHeader, "non-empty"),
        (_envelope(cbor.encode({1: -8, 2: [b"3"]}), {}, b"x", SIG), BadHeader, "not a label"),
        (_envelope(cbor.encode({1: -8, 4: 5}), {}, b"x", SIG), BadHeader, "kid"),
        (_envelope(cbor.encode({1: -8, 3: 1.5}), {}, b"x", SIG), BadHeader, "content type"),
        (_envelope(PROTECTED_EDDSA, {1: -8}, b"x", SIG), BadHeader, "protected header"),
        (_envelope(PROTECTED_EDDSA, {2: [4]}, b"x", SIG), BadHeader, "protected header"),
        (_envelope(PROTECTED_EDDSA, {4: "kid"}, b"x", SIG), BadHeader, "kid"),
        (_envelope(PROTECTED_EDDSA, {b"l": 1}, b"x", SIG), BadHeader, "label"),
        (
            _envelope(cbor.encode({1: -8, 4: KEY.kid}), {4: KEY.kid}, b"x", SIG),
            BadHeader,
            "both",
        ),
        (_envelope(cbor.encode({1: -8, 3: 0}), {3: 0}, b"x", SIG), BadHeader, "both"),
        (_envelope(PROTECTED_EDDSA, [4], b"x", SIG), NotCoseSign1, "not a map"),
        (_envelope(PROTECTED_EDDSA, {}, None, SIG), DetachedPayload, "nil"),
        (_envelope(PROTECTED_EDDSA, {}, "x", SIG), NotCoseSign1, "payload"),
        (_envelope(PROTECTED_EDDSA, {}, b"x", bytes(63)), BadSignatureSize, "63 bytes"),
        (_envelope(PROTECTED_EDDSA, {}, b"x", bytes(65)), BadSignatureSize, "65 bytes"),
        (_envelope(PROTECTED_EDDSA, {}, b"x", bytes(114)), BadSignatureSize, "114 bytes"),
        (_envelope(PROTECTED_EDDSA, {}, b"x", None), NotCoseSign1, "signature"),
        (_envelope(PROTECTED_EDDSA, {}, b"x", SIG) + b"\x00", NotCoseSign1, "trailing"),
        (_envelope(PROTECTED_EDDSA, {}, b"x", SIG)[:-1], NotCoseSign1, "past the end"),
    ],
)
def test_malformed_envelopes_are_refused(data: bytes, error: type[Exception], match: str) -> None:
    _refused(data, error, match)


def test_every_refusal_is_an_envelope_or_decode_error() -> None:
    assert issubclass(NotCoseSign1, EnvelopeError) and issubclass(BadHeader, EnvelopeError)
    assert issubclass(KeyMismatch, SignatureInvalid) and issubclass(SignatureInvalid, EnvelopeError)


@pytest.mark.parametrize(
    "data",
    [
        # protected bstr length in a 1-byte argument although < 24
        b"\xd2\x84\x58\x03\xa1\x01\x27\xa0\x41x\x58\x40" + SIG,
        # payload bstr with a 2-byte length argument for 1 byte
        b"\xd2\x84\x43\xa1\x01\x27\xa0\x59\x00\x01x\x58\x40" + SIG,
        # indefinite-length payload
        b"\xd2\x84\x43\xa1\x01\x27\xa0\x5f\x41x\xff\x58\x40" + SIG,
        # array head in long form
        b"\xd2\x98\x04\x43\xa1\x01\x27\xa0\x41x\x58\x40" + SIG,
        # unprotected map keys out of bytewise order: {4: h'', 3: 0}
        b"\xd2\x84\x43\xa1\x01\x27\xa2\x04\x40\x03\x00\x41x\x58\x40" + SIG,
        # protected map keys out of order: {3: 0, 1: -8}
        b"\xd2\x84\x45\xa2\x03\x00\x01\x27\xa0\x41x\x58\x40" + SIG,
        # signature bstr head in long form: 59 0040
        b"\xd2\x84\x43\xa1\x01\x27\xa0\x41x\x59\x00\x40" + SIG,
    ],
)
def test_only_deterministic_envelopes_are_read(data: bytes) -> None:
    # §7: the envelope's own CBOR is envelope-not-sign1, a header bucket's envelope-header-invalid.
    with pytest.raises((NotCoseSign1, BadHeader)):
        parse_sign1(data, NO_KID)


def test_non_deterministic_heads_are_envelope_codes() -> None:
    _refused(b"\xd2\x84\x58\x03\xa1\x01\x27\xa0\x41x\x58\x40" + SIG, NotCoseSign1, "shortest")
    _refused(b"\xd2\x84\x43\xa1\x01\x27\xa0\x5f\x41x\xff\x58\x40" + SIG, NotCoseSign1, "indefinite")
    _refused(b"\xd2\x84\x43\xa1\x01\x27\xa2\x04\x40\x03\x00\x41x\x58\x40" + SIG, BadHeader, "unprotected")
    _refused(b"\xd2\x84\x45\xa2\x03\x00\x01\x27\xa0\x41x\x58\x40" + SIG, BadHeader, "protected")


def test_kid_is_required_and_is_a_content_id() -> None:
    payload = b"x"
    _refused(_envelope(PROTECTED_EDDSA, {}, payload, SIG), BadHeader, "no kid", DEFAULT_ENVELOPE_LIMITS)
    for kid in (KEY.kid[:-1], b"\x13" + KEY.kid[1:], b"\x12\x21" + KEY.kid[2:], KEY.kid + b"\x00"):
        _refused(_envelope(PROTECTED_EDDSA, {4: kid}, payload, SIG), BadHeader, "content id",
                 DEFAULT_ENVELOPE_LIMITS)  # fmt: skip
    protected = cbor.encode({1: -8, 4: KEY.kid})
    assert parse_sign1(_envelope(protected, {}, payload, SIG)).kid == KEY.kid


def test_faults_inside_the_protected_bucket_are_header_faults() -> None:
    # Truncated, trailing, tagged or invalid UTF-8 CBOR inside the protected bstr.
    for protected in (b"\xa1\x01", b"\xa1\x01\x27\x00", b"\xa1\x01\xc1\x27", b"\xa2\x01\x27\x03\x61\xff"):
        _refused(_envelope(protected, {4: KEY.kid}, b"x", SIG), BadHeader, "protected header")
    # A truncated unprotected bucket is a truncated envelope.
    cut = _envelope(PROTECTED_EDDSA, {4: KEY.kid}, b"x", SIG)[:20]
    _refused(cut, NotCoseSign1)


def test_envelope_bounds_are_exact() -> None:
    at = sign1(bytes(MAX_PAYLOAD_SIZE), KEY)
    assert parse_sign1(at).payload == bytes(MAX_PAYLOAD_SIZE)
    _refused(sign1(bytes(MAX_PAYLOAD_SIZE + 1), KEY, limits=EnvelopeLimits()), EnvelopeTooLarge,
             "payload", DEFAULT_ENVELOPE_LIMITS)  # fmt: skip
    protected = cbor.encode({1: -8, 99: bytes(MAX_HEADER_SIZE - 8)})
    assert len(protected) == MAX_HEADER_SIZE
    widest = sign1(bytes(MAX_PAYLOAD_SIZE), KEY, protected=protected)
    assert len(widest) == MAX_ENVELOPE_SIZE and parse_sign1(widest).kid == KEY.kid
    protected = cbor.encode({1: -8, 99: bytes(MAX_HEADER_SIZE - 7)})
    _refused(_envelope(protected, {4: KEY.kid}, b"x", SIG), EnvelopeTooLarge, "protected",
             DEFAULT_ENVELOPE_LIMITS)  # fmt: skip
    _refused(widest + b"\x00", EnvelopeTooLarge, "envelope of", DEFAULT_ENVELOPE_LIMITS)


def test_hostile_sizes() -> None:
    # A payload that claims 2**64-1 bytes: refused from its head, nothing allocated.
    _refused(b"\xd2\x84\x43\xa1\x01\x27\xa0\x5b" + b"\xff" * 8 + SIG, NotCoseSign1, "past the end")
    with pytest.raises(EnvelopeTooLarge):
        parse_sign1(sign1(bytes(2000), KEY), EnvelopeLimits(max_size=1000))
    big_header = cbor.encode({1: -8, 3: "t" * 2000})
    _refused(_envelope(big_header, {}, b"x", SIG), EnvelopeTooLarge)
    _refused(_envelope(PROTECTED_EDDSA, {5: bytes(2000)}, b"x", SIG), EnvelopeTooLarge)
    deep: Any = 0
    for _ in range(40):
        deep = [deep]
    _refused(_envelope(PROTECTED_EDDSA, {5: deep}, b"x", SIG), EnvelopeTooLarge)
    _refused(_envelope(PROTECTED_EDDSA, {5: cbor2.CBORTag(1, 0)}, b"x", SIG), BadHeader)


def test_every_truncation_is_refused() -> None:
    out = sign1(b"payload bytes", KEY)
    for cut in range(len(out)):
        with pytest.raises((EnvelopeError, DecodeError)):
            parse_sign1(out[:cut])


def test_every_single_bit_flip_is_caught() -> None:
    out = sign1(b"a fleet message of modest length" * 3, KEY)
    for index in range(len(out) * 8):
        flipped = bytearray(out)
        flipped[index // 8] ^= 1 << (index % 8)
        with pytest.raises((EnvelopeError, DecodeError)):
            verify_sign1(parse_sign1(bytes(flipped)), KEY.public)


# --- properties ------------------------------------------------------------------------

headers = st.sampled_from([None, {}, {4: b"a hint, not our kid"}])


@given(st.binary(max_size=600), st.binary(max_size=40), headers)
def test_roundtrip(payload: bytes, aad: bytes, unprotected: Any) -> None:
    out = sign1(payload, KEY, unprotected=unprotected, external_aad=aad, limits=NO_KID)
    parsed = parse_sign1(out, NO_KID)
    assert parsed.payload == payload
    assert parsed.unprotected == ({4: KEY.kid} if unprotected is None else unprotected)
    check = unprotected is None
    assert verify_sign1(parsed, KEY.public, aad, check_kid=check) == payload
    # Deterministic: signing again gives the same bytes (Ed25519 is deterministic too).
    assert sign1(payload, KEY, unprotected=unprotected, external_aad=aad, limits=NO_KID) == out


@given(st.binary(max_size=300), st.data())
def test_single_bit_flip_property(payload: bytes, data: st.DataObject) -> None:
    out = bytearray(sign1(payload, KEY))
    index = data.draw(st.integers(0, len(out) * 8 - 1))
    out[index // 8] ^= 1 << (index % 8)
    with pytest.raises((EnvelopeError, DecodeError)):
        verify_sign1(parse_sign1(bytes(out)), KEY.public)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    try:
        parse_sign1(data)
    except (EnvelopeError, DecodeError):
        pass


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=8), st.data())
def test_spliced_envelopes_raise_only_typed_errors(
    payload: bytes, junk: bytes, data: st.DataObject
) -> None:
    out = sign1(payload, KEY)
    at = data.draw(st.integers(0, len(out)))
    drop = data.draw(st.integers(0, 4))
    mutated = out[:at] + junk + out[at + drop :]
    try:
        verify_sign1(parse_sign1(mutated), KEY.public)
    except (EnvelopeError, DecodeError):
        return
    assert mutated == out  # anything that still verifies must be the original bytes


def test_signature_with_s_plus_l_is_refused() -> None:
    """RFC 8032 §8.4: a second encoding of S (S + L) must not verify, or envelopes and their
    content ids would be malleable."""
    order = 2**252 + 27742317777372353535851937790883648493
    out = sign1(b"payload", KEY)
    s = int.from_bytes(out[-32:], "little")
    forged = out[:-32] + (s + order).to_bytes(32, "little")
    with pytest.raises(SignatureInvalid):
        verify_sign1(parse_sign1(forged), KEY.public)
