"""Signed, content-addressed coordination messages: the unit that travels in a bundle payload.

Send: message → deterministic CBOR (:func:`.messages.encode_message`) → content id (hash of
those bytes, :mod:`.ids`) → COSE_Sign1 with the node's Ed25519 key (:mod:`.cose`, RFC 9052
§4.2). Receive, in the order that wastes least on hostile input: parse the envelope (bounded,
no signature work) → look the ``kid`` up in the trust store (unknown, revoked or expired keys
stop here, before the expensive verify) → verify the signature → decode the payload at its
version → check that the key belongs to the node the header names as issuer.

The content id names the message, not the envelope: the same message signed twice (Ed25519
is deterministic, so only a different key could make different bytes) has one content id.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import attrs

from . import cose
from .errors import UntrustedKey
from .ids import ContentId
from .keys import SigningKey, VerifyKey
from .messages import PROTOCOL_VERSION, Message, accel, decode_message, encode_message
from .trust import Role

__all__ = [
    "IssuerMismatch", "KeyResolver", "SignedMessage", "TrustedKey", "seal", "verify",
    "verify_trusted",
]  # fmt: skip


class IssuerMismatch(UntrustedKey):
    """The message claims an issuer other than the node the signing key belongs to."""

    code = "issuer-mismatch"


class TrustedKey(Protocol):
    """What a key lookup returns: the key and the node it belongs to (a trust credential)."""

    @property
    def node(self) -> int: ...

    @property
    def public_key(self) -> VerifyKey: ...


class KeyResolver(Protocol):
    """Finds the trusted key for a ``kid`` at ``now`` or raises :class:`UntrustedKey`.

    :class:`.trust.TrustStore` is the implementation; tests and tools may use simpler ones.
    """

    def key_for(self, kid: bytes, now: int, role: Role | None = None) -> TrustedKey: ...


_Key = TypeVar("_Key", bound=TrustedKey, covariant=True)


class _ResolverOf(Protocol[_Key]):
    """A :class:`KeyResolver` whose answers are of one known type (a trust store's
    credentials), so :func:`verify_trusted` can hand the same type back."""

    def key_for(self, kid: bytes, now: int, role: Role | None = None) -> _Key: ...


@attrs.frozen(slots=True)
class SignedMessage:
    """A message with its content id, its envelope bytes and the key that signed it."""

    message: Message
    content_id: ContentId
    envelope: bytes
    kid: bytes

    @property
    def issuer(self) -> int:
        return self.message.header.issuer


# The values every seal and verify builds get the accelerator's __init__ too (a no-op without
# it); see .messages.accel.install_fast_init. ContentId is here rather than in .ids because
# the accelerator's module imports .ids.
FAST_INIT_CLASSES = (SignedMessage, cose.Sign1, ContentId)
for _cls in FAST_INIT_CLASSES:
    accel.install_fast_init(_cls)


def seal(message: Message, key: SigningKey) -> SignedMessage:
    """Encode, name and sign ``message`` with ``key``."""
    payload = encode_message(message)
    return SignedMessage(message, ContentId.of(payload), cose.sign1(payload, key), key.kid)


def verify(
    data: bytes,
    trust: KeyResolver,
    now: int,
    *,
    role: Role | None = None,
    limits: cose.EnvelopeLimits = cose.DEFAULT_ENVELOPE_LIMITS,
    version: int = PROTOCOL_VERSION,
    parsed: cose.Sign1 | None = None,
) -> SignedMessage:
    """Return the message in envelope ``data`` only if a key trusted at ``now`` signed it.

    ``role``, when given, is required of the signer's credential (e.g. a lease grant must come
    from a cell coordinator). Raises :class:`~.errors.EnvelopeError` (malformed, bad
    signature), :class:`~.errors.UntrustedKey` (unknown, revoked, expired, wrong role, issuer
    mismatch), or the message errors of :func:`.messages.decode_message`, reading as an
    implementation of ``version`` (a node pinned to an older version passes its own).

    ``parsed``: ``cose.parse_sign1(data)`` with the default limits, if the caller has it
    already (the bundle agent parses every payload on reception); with other ``limits`` it is
    not used, so the limits asked for are always the ones applied.
    """
    return verify_trusted(
        data, trust, now, role=role, limits=limits, version=version, parsed=parsed
    )[0]


def verify_trusted(
    data: bytes,
    trust: _ResolverOf[_Key],
    now: int,
    *,
    role: Role | None = None,
    limits: cose.EnvelopeLimits = cose.DEFAULT_ENVELOPE_LIMITS,
    version: int = PROTOCOL_VERSION,
    parsed: cose.Sign1 | None = None,
) -> tuple[SignedMessage, _Key]:
    """:func:`verify`, and the credential ``trust`` answered for the signing key at ``now``:
    a caller that checks the signer further (its role, spec §8) need not look it up again."""
    if parsed is not None and limits is cose.DEFAULT_ENVELOPE_LIMITS:
        envelope = parsed
    else:
        envelope = cose.parse_sign1(data, limits)
    kid = envelope.kid
    if not isinstance(kid, bytes):
        raise UntrustedKey("the envelope names no signing key (kid)")
    trusted = trust.key_for(kid, now, role)
    payload = cose.verify_sign1(envelope, trusted.public_key)
    message = decode_message(payload, version=version)
    if message.header.issuer != trusted.node:
        raise IssuerMismatch(
            f"message claims issuer {message.header.issuer} but is signed by the key of node "
            f"{trusted.node}"
        )
    return SignedMessage(message, ContentId.of(payload), bytes(data), kid), trusted
