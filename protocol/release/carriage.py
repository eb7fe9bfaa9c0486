"""What travels on the release service: one release object per bundle, tagged with its kind.

Theory of operation
-------------------
Release objects (spec v3 release §2) are not coordination messages: they have no message
header and several are unsigned, so they do not travel on the FCP service of version 1. They
travel as the payload of a bundle to the **release service** (ipn service :data:`RELEASE_SERVICE`
on every node), one object per bundle, as a two-item CBOR array (RFC 8949 §4.2.1)::

    release-carriage = [kind: uint, body: bstr]     ; body: the object's bytes as in §2

with the kinds of :class:`Kind`. Two objects exist only here, because only a running fleet needs
them (spec v3 release §4.2, §5.1):

Holdings (unsigned; a neighbour telling what chunks it holds, so that the fetch planner knows
whom to ask — a forged one only makes us ask a node that then does not answer, and the request
times out). A node sends its holdings, even empty, to every neighbour when it starts, and
answers the first holdings it hears from a neighbour after its own start with its own (if it
holds anything): so a node that restarted learns again who holds what::

    { 1: chunks [* bstr] }                  ; content ids, at most MAX_HOLDINGS, no repeats

Node report (signed by the reporting node's own key, which must grant the node role,
``external_aad`` = ``"fleetwire release report v3"``): what a node tells the release
authority about a release — installed, its shadow comparisons, the canary gate's interaction
cases, its health — from which the authority builds the cell events of :mod:`.rollout`::

    { 1: issuer     uint     ; the reporting node; must be the signer
      2: issued_at  uint     ; DTN ms; the health observation time
      3: release    bstr     ; release id
      4: cell       uint
      5: installed  bool
      6: agreed     uint     ; running totals of shadow comparisons
      7: diverged   uint
      8: passed     uint     ; running totals of cross-version interaction cases
      9: failed     uint
     10: healthy    bool }

Decoding is bounded (the largest body is a chunk answer) and strict, as every release object.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from .. import cbor
from ..cose import EnvelopeLimits
from ..errors import DecodeError, LocalProtocolError
from ..ids import ContentId
from ..keys import SigningKey
from ..trust import Role
from .errors import ReleaseFormatError
from .manifest import MAX_CHUNK_SIZE, MAX_CHUNKS
from .orders import _check_issuer
from .wire import (
    ReleaseKeyResolver,
    array,
    check_uint,
    content_id,
    decode_map,
    open_signed,
    sign_object,
    uint,
)

__all__ = [
    "MAX_HOLDINGS",
    "RELEASE_SERVICE",
    "REPORT_AAD",
    "Holdings",
    "Kind",
    "NodeReport",
    "decode_carriage",
    "encode_carriage",
    "verify_report",
]

#: ipn service number of release traffic on every node (FCP is 7, revocation lists 8).
RELEASE_SERVICE: Final = 9
#: Chunk ids in one holdings object: a whole release.
MAX_HOLDINGS: Final = MAX_CHUNKS
REPORT_AAD: Final = b"fleetwire release report v3"

_CARRIAGE_CBOR: Final = cbor.Limits(
    max_size=MAX_CHUNK_SIZE + 1024, max_depth=1, max_container_items=2, max_total_items=3,
    max_string_length=MAX_CHUNK_SIZE + 512, allowed_tags=frozenset(),
)  # fmt: skip
_HOLDINGS_CBOR: Final = cbor.Limits(
    max_size=MAX_HOLDINGS * 40 + 16, max_depth=2, max_container_items=MAX_HOLDINGS,
    max_total_items=MAX_HOLDINGS + 4, max_string_length=64, allowed_tags=frozenset(),
)  # fmt: skip
_REPORT_CBOR: Final = cbor.Limits(
    max_size=512, max_depth=1, max_container_items=16, max_total_items=24,
    max_string_length=64, allowed_tags=frozenset(),
)  # fmt: skip
_REPORT_ENVELOPE: Final = EnvelopeLimits(max_size=1024)


class Kind(enum.IntEnum):
    MANIFEST = 1
    CHUNK_REQUEST = 2
    CHUNK_ANSWER = 3
    HOLDINGS = 4
    ROLLOUT_STAGE = 5
    AUTHORITY_REVOCATION = 6
    POLICY_TABLE = 7
    NODE_REPORT = 8


def encode_carriage(kind: Kind, body: bytes) -> bytes:
    """The bundle payload carrying ``body`` as a ``kind``."""
    return cbor.encode([int(kind), body])


def decode_carriage(data: bytes) -> tuple[Kind, bytes]:
    """Split a release-service payload; raise :class:`.errors.ReleaseFormatError`."""
    try:
        value = cbor.decode(data, _CARRIAGE_CBOR)
    except DecodeError as exc:
        raise ReleaseFormatError(f"release carriage: {exc.message}") from None
    if type(value) is not list or len(value) != 2 or type(value[1]) is not bytes:
        raise ReleaseFormatError("release carriage must be [kind, body: bstr]")
    try:
        kind = Kind(uint({0: value[0]}, 0, "release carriage kind"))
    except ValueError:
        raise ReleaseFormatError(f"release carriage kind {value[0]} is not known") from None
    return kind, value[1]


@attrs.frozen(slots=True)
class Holdings:
    chunks: frozenset[ContentId]

    def to_payload(self) -> bytes:
        if len(self.chunks) > MAX_HOLDINGS:
            raise LocalProtocolError(f"holdings name at most {MAX_HOLDINGS} chunks")
        return cbor.encode({1: sorted(chunk.raw for chunk in self.chunks)})

    @classmethod
    def from_payload(cls, data: bytes) -> Holdings:
        fields = decode_map(data, _HOLDINGS_CBOR, (1,), (1,), "holdings")
        items = array(fields, 1, "holdings chunks", MAX_HOLDINGS)
        chunks = frozenset(content_id(item, "holdings chunk") for item in items)
        if len(chunks) != len(items):
            raise ReleaseFormatError("holdings must name distinct chunks")
        return cls(chunks)


@attrs.frozen(slots=True)
class NodeReport:
    issuer: int
    issued_at: int
    release: ContentId
    cell: int
    installed: bool
    agreed: int = 0
    diverged: int = 0
    passed: int = 0
    failed: int = 0
    healthy: bool = True

    def to_payload(self) -> bytes:
        for name in ("issuer", "issued_at", "cell", "agreed", "diverged", "passed", "failed"):
            check_uint(getattr(self, name), name)
        return cbor.encode(
            {
                1: self.issuer, 2: self.issued_at, 3: self.release.raw, 4: self.cell,
                5: self.installed, 6: self.agreed, 7: self.diverged, 8: self.passed,
                9: self.failed, 10: self.healthy,
            }
        )  # fmt: skip

    @classmethod
    def from_payload(cls, data: bytes) -> NodeReport:
        fields = decode_map(data, _REPORT_CBOR, range(1, 11), range(1, 11), "node report")
        for label in (5, 10):
            if type(fields[label]) is not bool:
                raise ReleaseFormatError(f"node report field {label} must be true or false")
        return cls(
            issuer=uint(fields, 1, "node report issuer"),
            issued_at=uint(fields, 2, "node report issued_at"),
            release=content_id(fields[3], "node report release"),
            cell=uint(fields, 4, "node report cell"),
            installed=fields[5],
            agreed=uint(fields, 6, "node report agreed"),
            diverged=uint(fields, 7, "node report diverged"),
            passed=uint(fields, 8, "node report passed"),
            failed=uint(fields, 9, "node report failed"),
            healthy=fields[10],
        )

    def sign(self, key: SigningKey) -> bytes:
        return sign_object(self.to_payload(), key, REPORT_AAD)


def verify_report(data: bytes, trust: ReleaseKeyResolver, now: int) -> NodeReport:
    """The report in envelope ``data`` if the key of the node it names signed it."""
    payload, signer = open_signed(
        data, trust, now, REPORT_AAD, "node report",
        limits=_REPORT_ENVELOPE, signer_roles=(int(Role.NODE),),
    )  # fmt: skip
    report = NodeReport.from_payload(payload)
    _check_issuer(report.issuer, signer.node, "node report")
    return report
