"""Signed orders of the release authority: authority revocations and policy tables.

Theory of operation
-------------------
Seeds (response a, §4B): what matters more than a rollback window is the "ability to revoke
control authority immediately (policy flip) even if bits remain installed"; and feature flags
and policy tables let behaviour change "without reflashing core safety code". Both travel as
COSE_Sign1 envelopes (RFC 9052 §4.2) signed by a key whose credential grants the release role
(:mod:`.wire`), each under its own ``external_aad``, as bundles like any message — so they are
store-and-forward and may arrive days late. :mod:`.authority` decides what they do; this module
only says what they are and checks their bytes.

Authority revocation (``external_aad`` = ``"fleetwire authority revocation v3"``)::

    { 1: serial     uint          ; names the order (idempotence: applied once)
      2: issued_at  uint          ; DTN ms — informational: a revocation never goes stale
      3: issuer     uint          ; must be the signer's node
      4: lineage    tstr .size (1..64)
    ? 5: version    [uint, uint, uint]   ; absent: every version of the lineage
    ? 6: reason     tstr .size (..256) }

Policy table (``external_aad`` = ``"fleetwire policy table v3"``)::

    { 1: serial     uint          ; strictly increasing: an older table is refused
      2: issued_at  uint
      3: issuer     uint
      4: flags      { * tstr .size (1..64) => bool }     ; at most 256
      5: revoked    [* [lineage: tstr, ? version: [uint, uint, uint]]] }  ; at most 256

A policy table lists the revocations standing when it was written, so a node that missed an
order learns it from the next table.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

import attrs

from .. import cbor
from ..cose import EnvelopeLimits, parse_sign1
from ..envelope import IssuerMismatch
from ..errors import DecodeError, LocalProtocolError
from ..keys import SigningKey
from ..trust import KeyExpired
from .errors import ReleaseFormatError
from .manifest import Version
from .wire import (
    POLICY_AAD,
    RELEASE_ROLE,
    REVOCATION_AAD,
    ReleaseKeyResolver,
    array,
    check_lineage,
    check_uint,
    decode_map,
    open_signed,
    sign_object,
    text,
    uint,
)

__all__ = ["MAX_FLAGS", "PolicyTable", "RevocationOrder", "verify_policy", "verify_revocation"]

MAX_FLAGS: Final = 256
MAX_REVOKED: Final = 256
_MAX_REASON: Final = 256

_ORDER_CBOR: Final = cbor.Limits(
    max_size=1024, max_depth=2, max_container_items=8, max_total_items=32,
    max_string_length=_MAX_REASON, allowed_tags=frozenset(),
)  # fmt: skip
_POLICY_CBOR: Final = cbor.Limits(
    max_size=64 * 1024, max_depth=4, max_container_items=MAX_FLAGS,
    max_total_items=8 * MAX_FLAGS + 16, max_string_length=64, allowed_tags=frozenset(),
)  # fmt: skip
_ORDER_ENVELOPE: Final = EnvelopeLimits(max_size=2048)
_POLICY_ENVELOPE: Final = EnvelopeLimits(max_size=66 * 1024)


@attrs.frozen(slots=True)
class RevocationOrder:
    """Take control authority from ``lineage`` (``version``, or all versions if ``None``)."""

    serial: int
    issued_at: int
    issuer: int
    lineage: str
    version: Version | None = None
    reason: str = ""

    def covers(self, lineage: str, version: Version) -> bool:
        return lineage == self.lineage and self.version in (None, version)

    def to_payload(self) -> bytes:
        for name in ("serial", "issued_at", "issuer"):
            check_uint(getattr(self, name), name)
        check_lineage(self.lineage)
        if len(self.reason.encode()) > _MAX_REASON:
            raise LocalProtocolError(f"reason over {_MAX_REASON} bytes")
        fields: dict[int, Any] = {
            1: self.serial,
            2: self.issued_at,
            3: self.issuer,
            4: self.lineage,
        }
        if self.version is not None:
            fields[5] = _version_out(self.version)
        if self.reason:
            fields[6] = self.reason
        return cbor.encode(fields)

    @classmethod
    def from_payload(cls, data: bytes) -> RevocationOrder:
        fields = decode_map(data, _ORDER_CBOR, range(1, 7), range(1, 5), "revocation order")
        return cls(
            serial=uint(fields, 1, "revocation serial"),
            issued_at=uint(fields, 2, "revocation issued_at"),
            issuer=uint(fields, 3, "revocation issuer"),
            lineage=text(fields, 4, "revocation lineage"),
            version=_version_in(fields[5], "revocation version") if 5 in fields else None,
            reason=text(fields, 6, "revocation reason", _MAX_REASON) if 6 in fields else "",
        )

    def sign(self, key: SigningKey) -> bytes:
        return sign_object(self.to_payload(), key, REVOCATION_AAD)


def _sorted_flags(flags: Mapping[str, bool]) -> dict[str, bool]:
    return dict(sorted(flags.items()))


@attrs.frozen(slots=True)
class PolicyTable:
    """Feature flags and the standing revocations, in force from a serial on."""

    serial: int
    issued_at: int
    issuer: int
    flags: Mapping[str, bool] = attrs.field(factory=dict, converter=_sorted_flags)
    revoked: tuple[tuple[str, Version | None], ...] = ()

    def to_payload(self) -> bytes:
        for name in ("serial", "issued_at", "issuer"):
            check_uint(getattr(self, name), name)
        if len(self.flags) > MAX_FLAGS or len(self.revoked) > MAX_REVOKED:
            raise LocalProtocolError(f"at most {MAX_FLAGS} flags and {MAX_REVOKED} revocations")
        for name, value in self.flags.items():
            check_lineage(name, "flag name")
            if type(value) is not bool:
                raise LocalProtocolError(f"flag {name} must be true or false")
        for lineage, _ in self.revoked:
            check_lineage(lineage)
        return cbor.encode(
            {
                1: self.serial,
                2: self.issued_at,
                3: self.issuer,
                4: dict(self.flags),
                5: [
                    [lineage] if version is None else [lineage, _version_out(version)]
                    for lineage, version in self.revoked
                ],
            }
        )

    @classmethod
    def from_payload(cls, data: bytes) -> PolicyTable:
        fields = decode_map(data, _POLICY_CBOR, range(1, 6), range(1, 6), "policy table")
        flags = fields[4]
        if type(flags) is not dict or len(flags) > MAX_FLAGS:
            raise ReleaseFormatError(f"policy flags (field 4) must be a map of ≤ {MAX_FLAGS}")
        for name, value in flags.items():
            text({0: name}, 0, "policy flag name")
            if type(value) is not bool:
                raise ReleaseFormatError(f"policy flag {name!r} must be true or false")
        revoked: list[tuple[str, Version | None]] = []
        for item in array(fields, 5, "policy revoked", MAX_REVOKED):
            if type(item) is not list or not 1 <= len(item) <= 2:
                raise ReleaseFormatError("policy revoked entry must be [lineage, ? version]")
            lineage = text({0: item[0]}, 0, "policy revoked lineage")
            version = _version_in(item[1], "policy revoked version") if len(item) == 2 else None
            revoked.append((lineage, version))
        return cls(
            serial=uint(fields, 1, "policy serial"),
            issued_at=uint(fields, 2, "policy issued_at"),
            issuer=uint(fields, 3, "policy issuer"),
            flags=flags,
            revoked=tuple(revoked),
        )

    def sign(self, key: SigningKey) -> bytes:
        return sign_object(self.to_payload(), key, POLICY_AAD)


def verify_revocation(
    data: bytes,
    trust: ReleaseKeyResolver,
    now: int,
    *,
    signer_roles: Collection[int] = (RELEASE_ROLE,),
) -> RevocationOrder:
    """The order in envelope ``data`` if a release-role key signed it (errors as manifests).

    The **late-order rule** (spec v3 release §5.3): an order whose key has *expired* by ``now``
    is still accepted if the key was trusted, with the release role, at the order's
    ``issued_at``, that time is not after ``now``, and the key, its credential and its issuer
    are not revoked (the trust store checks revocation whatever the time). Expiry is the end of
    a key's ordinary life, not a compromise: the order a partitioned node receives weeks late
    was signed while the key was good, and it only takes authority away. A *revoked* key is
    refused (``key-revoked``), because whoever holds it can sign any ``issued_at``.
    """
    try:
        payload, signer = open_signed(
            data, trust, now, REVOCATION_AAD, "revocation order",
            limits=_ORDER_ENVELOPE, signer_roles=signer_roles,
        )  # fmt: skip
    except KeyExpired:
        issued_at = _claimed_issued_at(data)
        if issued_at is None or issued_at > now:
            raise
        # Verified against the key as it stood when the order says it was signed: the
        # signature covers issued_at, so the claim is the signer's, checked below.
        payload, signer = open_signed(
            data, trust, issued_at, REVOCATION_AAD, "revocation order",
            limits=_ORDER_ENVELOPE, signer_roles=signer_roles,
        )  # fmt: skip
    order = RevocationOrder.from_payload(payload)
    _check_issuer(order.issuer, signer.node, "revocation order")
    return order


def _claimed_issued_at(data: bytes) -> int | None:
    """The ``issued_at`` an order's (not yet verified) payload claims, or None if unreadable."""
    try:
        return RevocationOrder.from_payload(parse_sign1(data, _ORDER_ENVELOPE).payload).issued_at
    except (DecodeError, ReleaseFormatError):
        return None


def verify_policy(
    data: bytes,
    trust: ReleaseKeyResolver,
    now: int,
    *,
    signer_roles: Collection[int] = (RELEASE_ROLE,),
) -> PolicyTable:
    """The policy table in envelope ``data`` if a release-role key signed it."""
    payload, signer = open_signed(
        data, trust, now, POLICY_AAD, "policy table",
        limits=_POLICY_ENVELOPE, signer_roles=signer_roles,
    )  # fmt: skip
    table = PolicyTable.from_payload(payload)
    _check_issuer(table.issuer, signer.node, "policy table")
    return table


def _check_issuer(claimed: int, signer: int, what: str) -> None:
    if claimed != signer:
        raise IssuerMismatch(f"{what} names issuer {claimed} but is signed by node {signer}")


def _version_out(version: Version) -> list[int]:
    for name in ("major", "minor", "patch"):
        check_uint(getattr(version, name), f"version {name}")
    return [version.major, version.minor, version.patch]


def _version_in(value: object, what: str) -> Version:
    if type(value) is not list or len(value) != 3:
        raise ReleaseFormatError(f"{what} must be [major, minor, patch]")
    return Version(*(uint({0: part}, 0, what) for part in value))
