"""Shared wire rules of the release objects: bounded deterministic CBOR maps and signed orders.

Every release object (manifest, revocation order, policy table, fetch and rollout messages) is
one CBOR map with small unsigned keys in the core deterministic encoding (RFC 8949 §4.2.1).
Decoding is bounded (size, depth, counts, string lengths — :class:`..cbor.Limits`) and strict:
unknown keys are refused, not ignored, because a key a later version adds to a release object
may narrow what it allows, and an old reader that dropped it would grant more than its signer
meant. Every refusal is a :class:`.errors.ReleaseFormatError` naming the field.

Signed release objects are COSE_Sign1 envelopes (RFC 9052 §4.2, EdDSA RFC 9053 §2.2) whose
``external_aad`` (RFC 9052 §4.3) names the kind — ``"fleetwire release manifest v3"`` and so
on — so that no signed object can be taken for another or for a coordination message, whatever
its bytes (the trust store keeps credentials apart from messages the same way).

Who may sign: a key the trust store vouches for at ``now`` whose credential grants the
**release role** (:attr:`fleetwire.protocol.trust.Role.RELEASE`, spec §8). The check runs here,
against the credential's roles, because only release objects ask for it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final, Protocol

from .. import cbor
from ..cose import EnvelopeLimits, parse_sign1, sign1, verify_sign1
from ..errors import DecodeError, LocalProtocolError, UntrustedKey
from ..ids import ContentId, ContentIdError
from ..keys import SigningKey, VerifyKey
from ..trust import Role
from .errors import ReleaseFormatError, ReleaseSignerNotAuthorised

U64_MAX: Final = (1 << 64) - 1
#: The credential role code that lets a key sign releases, orders and policy tables.
RELEASE_ROLE: Final = int(Role.RELEASE)
#: At most this many bytes of UTF-8 in a lineage name.
MAX_LINEAGE: Final = 64

MANIFEST_AAD: Final = b"fleetwire release manifest v3"
REVOCATION_AAD: Final = b"fleetwire authority revocation v3"
POLICY_AAD: Final = b"fleetwire policy table v3"
ROLLOUT_STAGE_AAD: Final = b"fleetwire rollout stage v3"


class RoleBearingKey(Protocol):
    """What a key lookup returns: the node, its public key and the roles its credential grants.

    :class:`..trust.Credential` is one.
    """

    @property
    def node(self) -> int: ...

    @property
    def public_key(self) -> VerifyKey: ...

    @property
    def roles(self) -> Collection[int]: ...


class ReleaseKeyResolver(Protocol):
    """Finds the trusted key for a ``kid`` at ``now``; :class:`..trust.TrustStore` is one."""

    def key_for(self, kid: bytes, now: int) -> RoleBearingKey: ...


def sign_object(payload: bytes, key: SigningKey, aad: bytes) -> bytes:
    """Sign a release object's payload under its kind's ``external_aad``."""
    return sign1(payload, key, external_aad=aad)


def open_signed(
    data: bytes,
    trust: ReleaseKeyResolver,
    now: int,
    aad: bytes,
    what: str,
    *,
    limits: EnvelopeLimits,
    signer_roles: Collection[int] = (RELEASE_ROLE,),
) -> tuple[bytes, RoleBearingKey]:
    """Parse, check the signer and verify a signed release object; return (payload, signer).

    Cheapest refusals first: envelope shape (bounded), then the key lookup (unknown, revoked,
    expired keys stop there), then the role, and only then the signature.
    """
    try:
        envelope = parse_sign1(data, limits)
    except DecodeError as exc:
        raise ReleaseFormatError(f"{what} envelope: {exc.message}") from None
    kid = envelope.kid
    if not isinstance(kid, bytes):
        raise UntrustedKey(f"the {what} names no signing key (kid)")
    signer = trust.key_for(kid, now)
    if not any(int(role) in signer.roles for role in signer_roles):
        raise ReleaseSignerNotAuthorised(
            f"{what} is signed by node {signer.node}, whose credential does not grant the "
            f"release role (hint: the release pipeline's key needs a credential with role "
            f"{RELEASE_ROLE})"
        )
    return verify_sign1(envelope, signer.public_key, aad), signer


# --- payload fields ----------------------------------------------------------------------


def decode_map(
    data: bytes, limits: cbor.Limits, known: Collection[int], required: Collection[int], what: str
) -> dict[int, Any]:
    """Decode a release object's map, refusing unknown keys and missing required ones."""
    try:
        value = cbor.decode(data, limits)
    except DecodeError as exc:
        raise ReleaseFormatError(f"{what}: {exc.message}") from None
    if not isinstance(value, dict):
        raise ReleaseFormatError(f"{what} is not a map")
    for label in value:
        if type(label) is not int or label not in known:
            raise ReleaseFormatError(f"{what} field {label!r} is not known (refused, not ignored)")
    for label in required:
        if label not in value:
            raise ReleaseFormatError(f"{what} lacks field {label}")
    return value


def uint(fields: dict[int, Any], label: int, what: str) -> int:
    value = fields[label]
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise ReleaseFormatError(f"{what} (field {label}) must be a uint64")
    return value


def text(fields: dict[int, Any], label: int, what: str, max_bytes: int = MAX_LINEAGE) -> str:
    value = fields[label]
    if type(value) is not str:
        raise ReleaseFormatError(f"{what} (field {label}) must be a text string")
    if not value or len(value.encode()) > max_bytes:
        raise ReleaseFormatError(f"{what} (field {label}) must be 1..{max_bytes} bytes of UTF-8")
    return value


def array(fields: dict[int, Any], label: int, what: str, max_items: int) -> list[Any]:
    value = fields[label]
    if type(value) is not list:
        raise ReleaseFormatError(f"{what} (field {label}) must be an array")
    if len(value) > max_items:
        raise ReleaseFormatError(f"{what} (field {label}) holds over {max_items} items")
    return value


def content_id(value: Any, what: str) -> ContentId:
    if type(value) is not bytes:
        raise ReleaseFormatError(f"{what} must be a content id (bstr)")
    try:
        return ContentId.from_bytes(value)
    except ContentIdError as exc:
        raise ReleaseFormatError(f"{what}: {exc.message}") from None


def check_uint(value: object, what: str) -> None:
    """A writer's check: refuse to build an object a reader would refuse."""
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise LocalProtocolError(f"{what} must be a uint64, not {value!r}")


def check_lineage(value: object, what: str = "lineage") -> None:
    if type(value) is not str or not value or len(value.encode()) > MAX_LINEAGE:
        raise LocalProtocolError(f"{what} must be 1..{MAX_LINEAGE} bytes of UTF-8")
