"""Chunk fetch requests and answers (unsigned), and the signed rollout-stage order the release
authority sends to cells.

Theory of operation
-------------------
A chunk answer needs no signature: the chunk is named by the hash of its bytes and the
manifest that names it is signed, so the receiver checks the answer against what it asked for
(:meth:`.ledger.ArtifactLedger.store`) and trusts no sender. A request needs none either: the
worst a forged one can do is ask a holder for bytes, which the holder budgets per neighbour
like any other work. Both are deterministic CBOR maps (RFC 8949 §4.2.1) carried as bundle
payloads; decoding is bounded and strict (:mod:`.wire`).

Chunk request::

    { 1: release  bstr        ; release id (content id of the manifest)
      2: chunks   [+ bstr] }  ; content ids wanted, at most 64, no repeats

Chunk answer::

    { 1: chunk    bstr        ; content id
      2: data     bstr }      ; at most MAX_CHUNK_SIZE bytes

A rollout stage is an order (signed like a manifest, ``external_aad`` =
``"fleetwire rollout stage v3"``) from the release authority's :class:`.rollout.Rollout` to the
cells it names::

    { 1: serial     uint
      2: issued_at  uint
      3: issuer     uint
      4: release    bstr                  ; release id
      5: stage      uint                  ; 0 = the canary cell
      6: action     uint                  ; 1 install in shadow, 2 grant authority, 3 roll back
      7: cells      [+ uint]              ; ascending, no repeats, at most 1024
    ? 8: to         [uint, uint, uint] }  ; roll back only: the version that gets authority
                                          ; back (absent: none; the lineage runs without)
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Collection
from typing import Any, Final

import attrs

from .. import cbor
from ..cose import EnvelopeLimits
from ..envelope import IssuerMismatch
from ..errors import LocalProtocolError
from ..ids import ContentId
from ..keys import SigningKey
from .errors import ReleaseFormatError
from .manifest import MAX_CHUNK_SIZE, Version
from .rollout import GrantAuthority, InstallShadow, RollBack, RolloutPlan
from .wire import (
    RELEASE_ROLE,
    ROLLOUT_STAGE_AAD,
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
    "MAX_CELLS",
    "MAX_REQUESTED",
    "ChunkAnswer",
    "ChunkRequest",
    "RolloutStage",
    "StageAction",
    "stage_order",
    "verify_rollout_stage",
]

MAX_REQUESTED: Final = 64
MAX_CELLS: Final = 1024

_REQUEST_CBOR: Final = cbor.Limits(
    max_size=64 + MAX_REQUESTED * 40, max_depth=2, max_container_items=MAX_REQUESTED,
    max_total_items=MAX_REQUESTED + 8, max_string_length=64, allowed_tags=frozenset(),
)  # fmt: skip
_ANSWER_CBOR: Final = cbor.Limits(
    max_size=MAX_CHUNK_SIZE + 64, max_depth=1, max_container_items=2, max_total_items=8,
    max_string_length=MAX_CHUNK_SIZE, allowed_tags=frozenset(),
)  # fmt: skip
_STAGE_CBOR: Final = cbor.Limits(
    max_size=16 * 1024, max_depth=2, max_container_items=MAX_CELLS,
    max_total_items=MAX_CELLS + 32, max_string_length=64, allowed_tags=frozenset(),
)  # fmt: skip
_STAGE_ENVELOPE: Final = EnvelopeLimits(max_size=17 * 1024)


class StageAction(enum.IntEnum):
    INSTALL_SHADOW = 1
    GRANT_AUTHORITY = 2
    ROLL_BACK = 3


@attrs.frozen(slots=True)
class ChunkRequest:
    release: ContentId
    chunks: tuple[ContentId, ...]

    def to_payload(self) -> bytes:
        if not 1 <= len(self.chunks) <= MAX_REQUESTED or len(set(self.chunks)) != len(self.chunks):
            raise LocalProtocolError(f"a request names 1..{MAX_REQUESTED} distinct chunks")
        return cbor.encode({1: self.release.raw, 2: [chunk.raw for chunk in self.chunks]})

    @classmethod
    def from_payload(cls, data: bytes) -> ChunkRequest:
        fields = decode_map(data, _REQUEST_CBOR, (1, 2), (1, 2), "chunk request")
        items = array(fields, 2, "chunk request chunks", MAX_REQUESTED)
        chunks = tuple(content_id(item, "chunk request chunk") for item in items)
        if not chunks or len(set(chunks)) != len(chunks):
            raise ReleaseFormatError("chunk request must name 1.. distinct chunks")
        return cls(content_id(fields[1], "chunk request release"), chunks)


@attrs.frozen(slots=True)
class ChunkAnswer:
    chunk: ContentId
    data: bytes

    def to_payload(self) -> bytes:
        if not 0 < len(self.data) <= MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"a chunk holds 1..{MAX_CHUNK_SIZE} bytes")
        return cbor.encode({1: self.chunk.raw, 2: self.data})

    @classmethod
    def from_payload(cls, data: bytes) -> ChunkAnswer:
        fields = decode_map(data, _ANSWER_CBOR, (1, 2), (1, 2), "chunk answer")
        body = fields[2]
        if type(body) is not bytes or not body:
            raise ReleaseFormatError("chunk answer data (field 2) must be a non-empty bstr")
        return cls(content_id(fields[1], "chunk answer chunk"), body)


@attrs.frozen(slots=True)
class RolloutStage:
    serial: int
    issued_at: int
    issuer: int
    release: ContentId
    stage: int
    action: StageAction
    cells: tuple[int, ...]
    to: Version | None = None

    def to_payload(self) -> bytes:
        for name in ("serial", "issued_at", "issuer", "stage"):
            check_uint(getattr(self, name), name)
        if not 1 <= len(self.cells) <= MAX_CELLS or list(self.cells) != sorted(set(self.cells)):
            raise LocalProtocolError(f"a stage names 1..{MAX_CELLS} cells, ascending")
        for cell in self.cells:
            check_uint(cell, "cell")
        if self.to is not None and self.action is not StageAction.ROLL_BACK:
            raise LocalProtocolError("only a roll back names the version to return to")
        fields: dict[int, Any] = {
            1: self.serial,
            2: self.issued_at,
            3: self.issuer,
            4: self.release.raw,
            5: self.stage,
            6: int(self.action),
            7: list(self.cells),
        }
        if self.to is not None:
            fields[8] = [self.to.major, self.to.minor, self.to.patch]
        return cbor.encode(fields)

    @classmethod
    def from_payload(cls, data: bytes) -> RolloutStage:
        fields = decode_map(data, _STAGE_CBOR, range(1, 9), range(1, 8), "rollout stage")
        try:
            action = StageAction(uint(fields, 6, "rollout stage action"))
        except ValueError:
            raise ReleaseFormatError(f"rollout stage action {fields[6]} is not known") from None
        cells = array(fields, 7, "rollout stage cells", MAX_CELLS)
        for cell in cells:
            uint({0: cell}, 0, "rollout stage cell")
        if not cells or any(a >= b for a, b in itertools.pairwise(cells)):
            raise ReleaseFormatError("rollout stage cells must be 1.. ascending, no repeats")
        to = None
        if 8 in fields:
            parts = array(fields, 8, "rollout stage to", 3)
            if len(parts) != 3:
                raise ReleaseFormatError("rollout stage to (field 8) must be [major, minor, patch]")
            to = Version(*(uint({0: p}, 0, "rollout stage to") for p in parts))
        if to is not None and action is not StageAction.ROLL_BACK:
            raise ReleaseFormatError("rollout stage: field 8 comes only with a roll back")
        return cls(
            serial=uint(fields, 1, "rollout stage serial"),
            issued_at=uint(fields, 2, "rollout stage issued_at"),
            issuer=uint(fields, 3, "rollout stage issuer"),
            release=content_id(fields[4], "rollout stage release"),
            stage=uint(fields, 5, "rollout stage number"),
            action=action,
            cells=tuple(cells),
            to=to,
        )

    def sign(self, key: SigningKey) -> bytes:
        return sign_object(self.to_payload(), key, ROLLOUT_STAGE_AAD)


def stage_order(
    action: InstallShadow | GrantAuthority | RollBack,
    plan: RolloutPlan,
    *,
    serial: int,
    issuer: int,
    now: int,
) -> RolloutStage:
    """The wire order for a :class:`.rollout.Rollout` action, to sign and send to its cells."""
    if isinstance(action, RollBack):
        return RolloutStage(
            serial, now, issuer, plan.release_id, 0, StageAction.ROLL_BACK,
            tuple(sorted(action.cells)), action.to,
        )  # fmt: skip
    kind = (
        StageAction.INSTALL_SHADOW
        if isinstance(action, InstallShadow)
        else StageAction.GRANT_AUTHORITY
    )
    return RolloutStage(
        serial, now, issuer, plan.release_id, action.stage, kind, tuple(sorted(action.cells))
    )


def verify_rollout_stage(
    data: bytes,
    trust: ReleaseKeyResolver,
    now: int,
    *,
    signer_roles: Collection[int] = (RELEASE_ROLE,),
) -> RolloutStage:
    """The rollout stage in envelope ``data`` if a release-role key signed it."""
    payload, signer = open_signed(
        data, trust, now, ROLLOUT_STAGE_AAD, "rollout stage",
        limits=_STAGE_ENVELOPE, signer_roles=signer_roles,
    )  # fmt: skip
    stage = RolloutStage.from_payload(payload)
    if stage.issuer != signer.node:
        raise IssuerMismatch(
            f"rollout stage names issuer {stage.issuer} but is signed by node {signer.node}"
        )
    return stage
