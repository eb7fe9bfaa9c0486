"""Fleet trust: credentials and revocation lists signed by a fleet root, and the trust store.

Theory of operation
-------------------
A fleet has one or more root keys (several only to allow rotation: they act as one
authority). A root vouches for a node key by signing a **credential**; it withdraws trust by
signing a **revocation list**. Both are COSE_Sign1 envelopes (:mod:`.cose`, RFC 9052 §4.2)
whose payload is a deterministic CBOR map (RFC 8949 §4.2.1) with small unsigned int keys.
Each kind is signed with its own ``external_aad`` (RFC 9052 §4.3), so a credential can never
be taken for a revocation list or for a protocol message, whatever its bytes.

Credential payload (``external_aad`` = ``"fleetwire credential v1"``)::

    { 1: node        uint            ; ipn node number
      2: key         bstr .size 32   ; Ed25519 public key (kid = content id of it)
      3: roles       [+ uint]        ; Role values, ascending, no repeats
    ? 4: cell        uint
    ? 5: region      uint
      6: not_before  uint            ; DTN ms (RFC 9171 §4.2.6), valid from (inclusive)
      7: not_after   uint            ; valid until (exclusive); > not_before
      8: lineage     tstr            ; software lineage, at most 256 bytes of UTF-8
      9: serial      uint            ; unique per issuer; revocable by serial
     10: issuer      bstr .size 34 } ; kid of the signing key

Revocation list payload (``external_aad`` = ``"fleetwire revocations v1"``)::

    { 1: serial      uint            ; strictly increasing across the fleet's lists
      2: issued_at   uint            ; DTN ms
      3: kids        [* bstr]        ; revoked keys, ascending bytewise, no repeats
      4: serials     [* uint]        ; revoked credential serials, ascending, no repeats
      5: issuer      bstr .size 34 }

Unknown payload keys are refused, not ignored: a key a later version adds to a credential
may well be a restriction, and an old reader that dropped it would grant more than the root
meant. The ``issuer`` field names the signer so that a later version can let a region
coordinator issue cell credentials (root → region → cell): :meth:`TrustStore._issuer_key`
is the one place that decides who may issue; today it answers "a root, not revoked".

The store is pure: no I/O, no clock; ``now`` (DTN ms) comes in with every call. It keeps,
per kid, the few most recent credentials (a renewal may overlap the credential it
replaces), and the newest revocation list. A revocation list replaces the previous one
whole; an older one is refused, a repeat of the current one is accepted as a no-op. Revoked
kids apply to subjects and to issuers (revoking a root kid withdraws everything it signed).
Every refusal of a key is an :class:`~.errors.UntrustedKey` subclass naming the reason.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from . import cbor
from .cose import EnvelopeLimits, parse_sign1, sign1, verify_sign1
from .errors import (
    DecodeError,
    EnvelopeError,
    LocalProtocolError,
    RemoteProtocolError,
    UntrustedKey,
)
from .keys import KID_SIZE, KeyFormatError, SigningKey, VerifyKey

__all__ = [
    "CREDENTIAL_AAD",
    "REVOCATIONS_AAD",
    "Credential",
    "CredentialError",
    "IssuerUnknown",
    "KeyExpired",
    "KeyNotYetValid",
    "KeyRevoked",
    "KeyUnknown",
    "RevocationList",
    "RevocationsRefused",
    "Role",
    "TrustStore",
    "WrongRole",
    "issue_credential",
    "issue_revocations",
]

CREDENTIAL_AAD: Final = b"fleetwire credential v1"
REVOCATIONS_AAD: Final = b"fleetwire revocations v1"

_U64_MAX: Final = (1 << 64) - 1
_MAX_LINEAGE: Final = 256
#: Credentials kept per kid; a renewal overlaps at most one or two older ones.
_MAX_PER_KID: Final = 4
#: How many key_for answers a trust store keeps (a fleet has at most this many nodes in view).
_MAX_ANSWERS: Final = 65_536
#: How long a credential granting the release role is kept after it expires (three times the
#: 30-day partition a cell must survive): an authority revocation signed while it was valid
#: may arrive that late and must still verify (spec v3 release §5.3). Such a key is never
#: trusted at a ``now`` past ``not_after``; it is only looked up at an order's ``issued_at``.
RELEASE_KEY_KEPT_MS: Final = 90 * 86_400_000

_CREDENTIAL_ENVELOPE: Final = EnvelopeLimits(max_size=4096)
_CREDENTIAL_CBOR: Final = cbor.Limits(
    max_size=2048, max_depth=2, max_container_items=16, max_total_items=64,
    max_string_length=_MAX_LINEAGE, allowed_tags=frozenset(),
)  # fmt: skip
_REVOCATION_ENVELOPE: Final = EnvelopeLimits(max_size=1 << 22)
_REVOCATION_CBOR: Final = cbor.Limits(
    max_size=1 << 22, max_depth=2, max_container_items=1 << 16, max_total_items=1 << 17,
    max_string_length=64, allowed_tags=frozenset(),
)  # fmt: skip


class Role(enum.IntEnum):
    """What a credential lets its key do. Values are the wire codes."""

    NODE = 1
    CELL_COORDINATOR = 2
    REGION_COORDINATOR = 3
    AUDITOR = 4
    #: Signs release manifests, rollout stages, policy tables and authority revocations
    #: (spec/v3/release.md); holds no lease or coordination authority.
    RELEASE = 5


class CredentialError(RemoteProtocolError):
    """A credential or revocation list whose payload breaks the format above."""

    code = "credential-invalid"


class RevocationsRefused(RemoteProtocolError):
    """A revocation list older than (or conflicting with) the one in force."""

    code = "revocations-stale"


class KeyUnknown(UntrustedKey):
    """No credential names this kid."""

    code = "key-unknown"


class KeyNotYetValid(UntrustedKey):
    code = "key-not-yet-valid"


class KeyExpired(UntrustedKey):
    code = "key-expired"


class KeyRevoked(UntrustedKey):
    """The key, its credential's serial, or its issuer is on the revocation list."""

    code = "key-revoked"


class WrongRole(UntrustedKey):
    code = "key-wrong-role"


class IssuerUnknown(UntrustedKey):
    """Signed by a key that may not issue credentials (not a root, or a revoked one)."""

    code = "issuer-untrusted"


@attrs.frozen(slots=True)
class Credential:
    """A root's statement: ``public_key`` belongs to ``node`` with ``roles``, in a time window."""

    node: int
    public_key: VerifyKey
    roles: frozenset[Role]
    not_before: int
    not_after: int
    serial: int
    issuer: bytes
    lineage: str = ""
    cell: int | None = None
    region: int | None = None

    @property
    def kid(self) -> bytes:
        return self.public_key.kid

    def valid_at(self, now: int) -> bool:
        """Within ``[not_before, not_after)``."""
        return self.not_before <= now < self.not_after

    def to_payload(self) -> bytes:
        """The deterministic CBOR payload (module docstring)."""
        fields: dict[int, Any] = {
            1: self.node,
            2: self.public_key.raw,
            3: sorted(int(role) for role in self.roles),
            6: self.not_before,
            7: self.not_after,
            8: self.lineage,
            9: self.serial,
            10: self.issuer,
        }
        if self.cell is not None:
            fields[4] = self.cell
        if self.region is not None:
            fields[5] = self.region
        return cbor.encode(fields)

    @classmethod
    def from_payload(cls, data: bytes) -> Credential:
        """Decode and check a credential payload; raise :class:`CredentialError`."""
        fields = _decode_map(data, _CREDENTIAL_CBOR, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "credential")
        for label in (1, 2, 3, 6, 7, 8, 9, 10):
            if label not in fields:
                raise CredentialError(f"credential lacks field {label}")
        key_raw = _typed(fields, 2, bytes, "credential key")
        try:
            public_key = VerifyKey(key_raw)
        except KeyFormatError as exc:
            raise CredentialError(f"credential key: {exc.message}") from None
        roles = _ascending(fields, 3, int, "credential roles")
        if not roles:
            raise CredentialError("credential grants no role")
        try:
            role_set = frozenset(Role(role) for role in roles)
        except ValueError as exc:
            raise CredentialError(f"credential roles: {exc}") from None
        lineage = _typed(fields, 8, str, "credential lineage")
        credential = cls(
            node=_uint(fields, 1, "node"),
            public_key=public_key,
            roles=role_set,
            not_before=_uint(fields, 6, "not_before"),
            not_after=_uint(fields, 7, "not_after"),
            serial=_uint(fields, 9, "serial"),
            issuer=_kid(fields, 10, "issuer"),
            lineage=lineage,
            cell=_uint(fields, 4, "cell") if 4 in fields else None,
            region=_uint(fields, 5, "region") if 5 in fields else None,
        )
        try:
            _check_credential(credential)
        except LocalProtocolError as exc:
            raise CredentialError(exc.message) from None
        return credential


@attrs.frozen(slots=True)
class RevocationList:
    """A root's list of revoked kids and credential serials; the newest list is in force."""

    serial: int
    issued_at: int
    issuer: bytes
    kids: frozenset[bytes] = frozenset()
    credential_serials: frozenset[int] = frozenset()

    def to_payload(self) -> bytes:
        return cbor.encode(
            {
                1: self.serial,
                2: self.issued_at,
                3: sorted(self.kids),
                4: sorted(self.credential_serials),
                5: self.issuer,
            }
        )

    @classmethod
    def from_payload(cls, data: bytes) -> RevocationList:
        """Decode and check a revocation list payload; raise :class:`CredentialError`."""
        fields = _decode_map(data, _REVOCATION_CBOR, {1, 2, 3, 4, 5}, "revocation list")
        for label in (1, 2, 3, 4, 5):
            if label not in fields:
                raise CredentialError(f"revocation list lacks field {label}")
        kids = _ascending(fields, 3, bytes, "revoked kids")
        for kid in kids:
            if len(kid) != KID_SIZE:
                raise CredentialError(f"revoked kid of {len(kid)} bytes, not {KID_SIZE}")
        serials = _ascending(fields, 4, int, "revoked serials")
        for serial in serials:
            if not 0 <= serial <= _U64_MAX:
                raise CredentialError("revoked serial is not a uint64")
        return cls(
            serial=_uint(fields, 1, "serial"),
            issued_at=_uint(fields, 2, "issued_at"),
            issuer=_kid(fields, 5, "issuer"),
            kids=frozenset(kids),
            credential_serials=frozenset(serials),
        )


# --- issuing ---------------------------------------------------------------------------


def _check_credential(credential: Credential) -> None:
    """Rules a credential must keep, whoever wrote it."""
    for name in ("node", "not_before", "not_after", "serial"):
        value = getattr(credential, name)
        if type(value) is not int or not 0 <= value <= _U64_MAX:
            raise LocalProtocolError(f"credential {name} must be a uint64")
    for name in ("cell", "region"):
        value = getattr(credential, name)
        if value is not None and (type(value) is not int or not 0 <= value <= _U64_MAX):
            raise LocalProtocolError(f"credential {name} must be a uint64")
    if credential.not_after <= credential.not_before:
        raise LocalProtocolError("credential not_after must be later than not_before")
    if not credential.roles:
        raise LocalProtocolError("credential must grant at least one role")
    if Role.CELL_COORDINATOR in credential.roles and credential.cell is None:
        raise LocalProtocolError("a cell coordinator credential must name its cell")
    if Role.REGION_COORDINATOR in credential.roles and credential.region is None:
        raise LocalProtocolError("a region coordinator credential must name its region")
    if len(credential.lineage.encode()) > _MAX_LINEAGE:
        raise LocalProtocolError(f"lineage longer than {_MAX_LINEAGE} bytes")
    if len(credential.issuer) != KID_SIZE:
        raise LocalProtocolError("issuer must be a kid")


def issue_credential(
    issuer: SigningKey,
    *,
    node: int,
    public_key: VerifyKey,
    roles: Iterable[Role],
    not_before: int,
    not_after: int,
    serial: int,
    lineage: str = "",
    cell: int | None = None,
    region: int | None = None,
) -> bytes:
    """Sign a credential with ``issuer`` (a root key today); return the COSE_Sign1 bytes."""
    credential = Credential(
        node=node,
        public_key=public_key,
        roles=frozenset(Role(role) for role in roles),
        not_before=not_before,
        not_after=not_after,
        serial=serial,
        issuer=issuer.kid,
        lineage=lineage,
        cell=cell,
        region=region,
    )
    _check_credential(credential)
    return sign1(credential.to_payload(), issuer, external_aad=CREDENTIAL_AAD)


def issue_revocations(
    issuer: SigningKey,
    *,
    serial: int,
    issued_at: int,
    kids: Iterable[bytes] = (),
    credential_serials: Iterable[int] = (),
) -> bytes:
    """Sign a revocation list with ``issuer`` (a root key); return the COSE_Sign1 bytes."""
    revocations = RevocationList(
        serial=serial,
        issued_at=issued_at,
        issuer=issuer.kid,
        kids=frozenset(kids),
        credential_serials=frozenset(credential_serials),
    )
    for value in (serial, issued_at, *revocations.credential_serials):
        if type(value) is not int or not 0 <= value <= _U64_MAX:
            raise LocalProtocolError("serials and times must be uint64")
    if any(len(kid) != KID_SIZE for kid in revocations.kids):
        raise LocalProtocolError(f"revoked kids must be {KID_SIZE} bytes")
    return sign1(revocations.to_payload(), issuer, external_aad=REVOCATIONS_AAD)


# --- the store -------------------------------------------------------------------------


class TrustStore:
    """Which keys the fleet trusts, for what, and when. Pure: ``now`` is always passed in."""

    def __init__(self, root_public_keys: Iterable[VerifyKey]) -> None:
        self._roots: dict[bytes, VerifyKey] = {key.kid: key for key in root_public_keys}
        if not self._roots:
            raise LocalProtocolError("a trust store needs at least one root key")
        # kid -> credentials for that kid, newest serial first (at most _MAX_PER_KID).
        self._credentials: dict[bytes, list[Credential]] = {}
        #: key_for's answers without a role, by kid: only a kid's newest credential, which
        #: answers again for as long as ``now`` is inside its window and the credentials
        #: and revocations are the same (both changes clear this). Capped (_MAX_ANSWERS).
        self._answers: dict[bytes, Credential] = {}
        self._revocations: RevocationList | None = None
        self._revoked_kids: frozenset[bytes] = frozenset()
        self._revoked_serials: frozenset[int] = frozenset()

    @property
    def roots(self) -> Mapping[bytes, VerifyKey]:
        return self._roots

    @property
    def revocations(self) -> RevocationList | None:
        """The revocation list in force, if any."""
        return self._revocations

    def is_root(self, kid: bytes) -> bool:
        """Whether ``kid`` is a root key that is not revoked."""
        return kid in self._roots and kid not in self._revoked_kids

    def _issuer_key(self, kid: bytes | None, what: str) -> VerifyKey:
        """The key allowed to sign ``what`` under ``kid``: today, only an unrevoked root.

        A later version resolves a region coordinator's credential here to let it issue
        cell credentials; the credential's ``issuer`` field already names the signer.
        """
        if kid is None:
            raise IssuerUnknown(f"{what} names no signer (kid)")
        if kid not in self._roots:
            raise IssuerUnknown(f"{what} is signed by {kid.hex()}, which is not a fleet root")
        if kid in self._revoked_kids:
            raise IssuerUnknown(f"{what} is signed by revoked root {kid.hex()}")
        return self._roots[kid]

    def _open(
        self, data: bytes, limits: EnvelopeLimits, aad: bytes, what: str
    ) -> tuple[bytes, bytes]:
        """Parse and verify a root-signed envelope; return (payload, signer kid)."""
        try:
            envelope = parse_sign1(data, limits)
        except (EnvelopeError, DecodeError) as exc:
            raise CredentialError(f"{what} envelope: {exc.message}") from None
        signer = self._issuer_key(envelope.kid, what)
        return verify_sign1(envelope, signer, aad), signer.kid

    def add_credential(self, data: bytes, now: int) -> Credential:
        """Verify a signed credential and keep it; return it.

        Refuses (typed errors) a bad envelope or payload, an issuer that is not a root, a
        payload ``issuer`` that is not the signer, and a credential already expired or
        revoked at ``now``. A credential not yet valid is kept for later.
        """
        payload, signer = self._open(data, _CREDENTIAL_ENVELOPE, CREDENTIAL_AAD, "credential")
        credential = Credential.from_payload(payload)
        if credential.issuer != signer:
            raise CredentialError("credential issuer field is not the key that signed it")
        self._check_not_revoked(credential)
        if now >= credential.not_after:
            raise KeyExpired(_describe(credential, f"expired at {credential.not_after}"))
        kept = [c for c in self._credentials.get(credential.kid, []) if _kept(c, now)]
        if all(c.serial != credential.serial for c in kept):
            kept.append(credential)
        kept.sort(key=lambda c: c.serial, reverse=True)
        self._credentials[credential.kid] = kept[:_MAX_PER_KID]
        self._answers.clear()
        return credential

    def apply_revocations(self, data: bytes, now: int) -> RevocationList:
        """Verify a signed revocation list and put it in force if it is newer; return it.

        An older serial raises :class:`RevocationsRefused`; the same serial with the same
        content is a no-op, with other content a refusal. ``now`` drops expired credentials.
        """
        payload, signer = self._open(data, _REVOCATION_ENVELOPE, REVOCATIONS_AAD, "revocation list")
        revocations = RevocationList.from_payload(payload)
        if revocations.issuer != signer:
            raise CredentialError("revocation list issuer field is not the key that signed it")
        current = self._revocations
        if current is not None:
            if revocations.serial < current.serial:
                raise RevocationsRefused(
                    f"revocation list {revocations.serial} is older than {current.serial}"
                )
            if revocations.serial == current.serial:
                if revocations.kids != current.kids or (
                    revocations.credential_serials != current.credential_serials
                ):
                    raise RevocationsRefused(
                        f"two different revocation lists carry serial {revocations.serial}"
                    )
                return current
        self._revocations = revocations
        self._answers.clear()
        self._revoked_kids = revocations.kids
        self._revoked_serials = revocations.credential_serials
        for kid in list(self._credentials):
            kept = [c for c in self._credentials[kid] if _kept(c, now)]
            if kept:
                self._credentials[kid] = kept
            else:
                del self._credentials[kid]
        return revocations

    def _check_not_revoked(self, credential: Credential) -> None:
        if credential.kid in self._revoked_kids:
            raise KeyRevoked(_describe(credential, "key is revoked"))
        if credential.serial in self._revoked_serials:
            raise KeyRevoked(_describe(credential, f"credential {credential.serial} is revoked"))
        if credential.issuer in self._revoked_kids:
            raise KeyRevoked(_describe(credential, "its issuer is revoked"))

    def key_for(self, kid: bytes, now: int, role: Role | None = None) -> Credential:
        """The credential that makes ``kid`` trusted at ``now`` (for ``role``, if given).

        Raises an :class:`UntrustedKey` subclass naming why not: unknown, revoked, not yet
        valid, expired, or wrong role (for the newest credential when several exist).
        """
        if role is None:  # every delivery asks this: the answer kept (see _answers)
            kept = self._answers.get(kid)
            if kept is not None and kept.not_before <= now < kept.not_after:
                return kept
        candidates = self._credentials.get(kid)
        if not candidates:
            raise KeyUnknown(f"no credential for key {kid.hex()}")
        failure: UntrustedKey | None = None
        for credential in candidates:
            try:
                self._check_not_revoked(credential)
                if now < credential.not_before:
                    raise KeyNotYetValid(
                        _describe(credential, f"not valid before {credential.not_before}")
                    )
                if now >= credential.not_after:
                    raise KeyExpired(_describe(credential, f"expired at {credential.not_after}"))
                if role is not None and role not in credential.roles:
                    raise WrongRole(_describe(credential, f"does not grant {role.name}"))
            except UntrustedKey as exc:
                failure = failure or exc
                continue
            # The newest credential answered: it will again, at any time inside its window,
            # until the credentials or the revocations change (the checks above depend on
            # nothing else). An older one answers only while the newer cannot: not kept.
            if role is None and credential is candidates[0]:
                answers = self._answers
                if len(answers) >= _MAX_ANSWERS:
                    answers.clear()
                answers[kid] = credential
            return credential
        assert failure is not None
        raise failure

    def credentials(self) -> list[Credential]:
        """Every credential kept, newest first per kid."""
        return [c for kept in self._credentials.values() for c in kept]

    def credentials_of(self, kid: bytes) -> list[Credential]:
        """The credentials kept for ``kid``, newest first (one dict lookup: a fleet of N agents
        each asking about its own key must not cost N × N)."""
        return list(self._credentials.get(kid, ()))


def _kept(credential: Credential, now: int) -> bool:
    """Whether the store still keeps ``credential`` at ``now`` (see :data:`RELEASE_KEY_KEPT_MS`)."""
    if Role.RELEASE in credential.roles:
        return now < credential.not_after + RELEASE_KEY_KEPT_MS
    return now < credential.not_after


def _describe(credential: Credential, why: str) -> str:
    return f"key {credential.kid.hex()} (node {credential.node}, serial {credential.serial}): {why}"


# --- payload field helpers -------------------------------------------------------------


def _decode_map(data: bytes, limits: cbor.Limits, known: set[int], what: str) -> dict[int, Any]:
    try:
        value = cbor.decode(data, limits)
    except DecodeError as exc:
        raise CredentialError(f"{what} payload: {exc.message}") from None
    if not isinstance(value, dict):
        raise CredentialError(f"{what} payload is not a map")
    for label in value:
        if type(label) is not int or label not in known:
            raise CredentialError(f"{what} field {label!r} is not known (refused, not ignored)")
    return value


def _typed(fields: dict[int, Any], label: int, kind: type, what: str) -> Any:
    value = fields[label]
    if type(value) is not kind:
        raise CredentialError(f"{what} (field {label}) must be {kind.__name__}")
    return value


def _uint(fields: dict[int, Any], label: int, what: str) -> int:
    value = fields[label]
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        raise CredentialError(f"{what} (field {label}) must be a uint64")
    return value


def _kid(fields: dict[int, Any], label: int, what: str) -> bytes:
    value = _typed(fields, label, bytes, what)
    if len(value) != KID_SIZE:
        raise CredentialError(f"{what} (field {label}) must be a {KID_SIZE}-byte kid")
    return bytes(value)


def _ascending(fields: dict[int, Any], label: int, kind: type, what: str) -> list[Any]:
    """An array of ``kind`` in strictly ascending order (deterministic sets, no repeats)."""
    value = fields[label]
    if not isinstance(value, list):
        raise CredentialError(f"{what} (field {label}) must be an array")
    for item in value:
        if type(item) is not kind:
            raise CredentialError(f"{what} (field {label}) holds a non-{kind.__name__}")
    for left, right in itertools.pairwise(value):
        if not left < right:
            raise CredentialError(f"{what} (field {label}) not strictly ascending")
    return value
