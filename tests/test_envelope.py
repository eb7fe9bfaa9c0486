"""Signed messages: seal → verify against a real trust store with real Ed25519 keys."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from fleetwire.protocol.envelope import IssuerMismatch, SignedMessage, seal, verify, verify_trusted
from fleetwire.protocol.errors import EnvelopeError, FleetwireError, SignatureInvalid, UntrustedKey
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import Header, LeaseClaim, LeaseGrant, Message, encode_message
from fleetwire.protocol.trust import Role, TrustStore, issue_credential, issue_revocations
from hypothesis import given, settings
from hypothesis import strategies as st

from .strategies import messages

NOW = 820_000_000_000
ROOT = SigningKey.from_seed(bytes(range(32)))
NODE_KEY = SigningKey.from_seed(bytes(range(1, 33)))
COORDINATOR_KEY = SigningKey.from_seed(bytes(range(2, 34)))


def make_trust() -> TrustStore:
    trust = TrustStore([ROOT.public])
    for serial, (node, key, roles) in enumerate(
        [(7, NODE_KEY, [Role.NODE]), (1, COORDINATOR_KEY, [Role.NODE, Role.CELL_COORDINATOR])], 1
    ):
        trust.add_credential(
            issue_credential(
                ROOT,
                node=node,
                public_key=key.public,
                roles=roles,
                not_before=NOW - 1000,
                not_after=NOW + 86_400_000,
                serial=serial,
                cell=3,
            ),
            NOW,
        )
    return trust


CLAIM = LeaseClaim(
    header=Header(issuer=7, issued_at=NOW, sequence=1), resource="bay/3", term_ms=60_000
)


def test_seal_then_verify() -> None:
    signed = seal(CLAIM, NODE_KEY)
    assert signed.content_id == ContentId.of(encode_message(CLAIM))
    opened = verify(signed.envelope, make_trust(), NOW)
    assert opened == signed
    assert opened.message == CLAIM


@settings(max_examples=50)
@given(messages)
def test_any_message_survives_the_envelope(message: Message) -> None:
    trust = make_trust()
    message = _with_issuer(message, 7)
    signed = seal(message, NODE_KEY)
    assert verify(signed.envelope, trust, NOW).message == message


def _with_issuer(message: Message, issuer: int) -> Message:
    return attrs.evolve(message, header=attrs.evolve(message.header, issuer=issuer))


def test_issuer_must_own_the_key() -> None:
    forged = _with_issuer(CLAIM, 1)  # claims to be the coordinator, signed by node 7
    with pytest.raises(IssuerMismatch):
        verify(seal(forged, NODE_KEY).envelope, make_trust(), NOW)


def test_role_is_required_when_asked() -> None:
    grant = LeaseGrant(
        header=Header(issuer=7, issued_at=NOW, sequence=2),
        resource="bay/3",
        holder=7,
        claim=ContentId.of(b"claim"),
        fencing_token=1,
        term_ms=60_000,
        expires_at=NOW + 60_000,
    )
    with pytest.raises(UntrustedKey):
        verify(seal(grant, NODE_KEY).envelope, make_trust(), NOW, role=Role.CELL_COORDINATOR)
    grant = _with_issuer(grant, 1)
    assert verify(
        seal(grant, COORDINATOR_KEY).envelope, make_trust(), NOW, role=Role.CELL_COORDINATOR
    )


def test_unknown_expired_and_revoked_keys_are_refused() -> None:
    trust = make_trust()
    stranger = SigningKey.from_seed(b"\x09" * 32)
    with pytest.raises(UntrustedKey):
        verify(seal(CLAIM, stranger).envelope, trust, NOW)
    with pytest.raises(UntrustedKey):
        verify(seal(CLAIM, NODE_KEY).envelope, trust, NOW + 86_400_000)
    trust.apply_revocations(
        issue_revocations(ROOT, serial=1, issued_at=NOW, kids=[NODE_KEY.kid]), NOW
    )
    with pytest.raises(UntrustedKey):
        verify(seal(CLAIM, NODE_KEY).envelope, trust, NOW)


def test_every_bit_of_the_envelope_is_protected() -> None:
    trust = make_trust()
    envelope = seal(CLAIM, NODE_KEY).envelope
    for index in range(len(envelope)):
        for bit in (0x01, 0x80):
            tampered = bytearray(envelope)
            tampered[index] ^= bit
            with pytest.raises(FleetwireError):
                verify(bytes(tampered), trust, NOW)


def test_signature_from_another_key_under_the_right_kid_fails() -> None:
    envelope = bytearray(seal(CLAIM, NODE_KEY).envelope)
    other = seal(CLAIM, COORDINATOR_KEY).envelope
    envelope[-64:] = other[-64:]
    with pytest.raises(SignatureInvalid):
        verify(bytes(envelope), make_trust(), NOW)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    try:
        verify(data, make_trust(), NOW)
    except FleetwireError:
        pass


def test_not_an_envelope() -> None:
    with pytest.raises(EnvelopeError):
        verify(encode_message(CLAIM), make_trust(), NOW)


def test_a_parse_already_made_is_used_only_under_the_default_limits() -> None:
    from fleetwire.protocol import cose

    signed = seal(CLAIM, NODE_KEY)
    parsed = cose.parse_sign1(signed.envelope)
    assert verify(signed.envelope, make_trust(), NOW, parsed=parsed) == signed
    # Other limits are always applied to the bytes themselves, whatever was parsed before.
    small = attrs.evolve(cose.DEFAULT_ENVELOPE_LIMITS, max_size=16)
    with pytest.raises(EnvelopeError):
        verify(signed.envelope, make_trust(), NOW, limits=small, parsed=parsed)


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except FleetwireError as exc:
        return (type(exc), exc.message)


@settings(max_examples=60, deadline=None)
@given(
    signer=st.sampled_from([NODE_KEY, COORDINATOR_KEY, SigningKey.from_seed(b"\x09" * 32)]),
    issuer=st.sampled_from([1, 7, 8]),
    offset=st.sampled_from([-2000, 0, 86_399_999, 86_400_000]),
    role=st.sampled_from([None, Role.NODE, Role.CELL_COORDINATOR]),
    flip=st.integers(min_value=-1, max_value=400),
)
def test_verify_trusted_is_verify_and_the_credential_key_for_answers(
    signer: SigningKey, issuer: int, offset: int, role: Role | None, flip: int
) -> None:
    # What verify_trusted returns is what verify returns (or the same error), and the
    # credential is the one a look-up of the signing key at the same time finds.
    trust = make_trust()
    envelope = bytearray(seal(_with_issuer(CLAIM, issuer), signer).envelope)
    if 0 <= flip < len(envelope):
        envelope[flip] ^= 0x01
    data, now = bytes(envelope), NOW + offset
    expected = _outcome(lambda: verify(data, trust, now, role=role))
    got = _outcome(lambda: verify_trusted(data, trust, now, role=role))
    if isinstance(expected, SignedMessage):
        assert isinstance(got, tuple)
        signed, credential = got
        assert signed == expected
        assert credential == trust.key_for(signed.kid, now, role)
    else:
        assert got == expected
