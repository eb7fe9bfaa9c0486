"""Isolation: a signed order that severs a suspect cell or region at the boundary, and lifts it.

Theory of operation
-------------------
"The ability to sacrifice a region to save the fleet" (the seeds): a region coordinator may
order that a cell of its own region, or another region, be **severed** — every bundle from it
refused at the boundary, its leases revoked, its reservations reclaimed — and later **lifted**.

The order (:class:`IsolationOrder`) is a small deterministic CBOR map signed as a COSE_Sign1
(RFC 9052 §4.2) under its own ``external_aad`` (:data:`ORDER_AAD`), so no other signed object
can pass for one (spec §7, as credentials do in §8). Its payload, in the CDDL (RFC 8610) of
:data:`CDDL`: ``{1: issuer, 2: issued_at, 3: sequence, 4: action, 5: scope, 6: target, ? 7: reason}``.

An :class:`IsolationBoundary` — on every node that accepts bundles from outside — takes an
order (:meth:`IsolationBoundary.order`) and acts on it only if all of these hold, in this order
(cheapest refusal first; each refusal is a typed error with a stable code):

1. the envelope parses and its key is trusted *now* with role region coordinator
   (:class:`~..trust.Role`, spec §8), and the signature verifies under :data:`ORDER_AAD`;
2. the payload is a well-formed order (``isolation-order-invalid``), issued by the node the key
   belongs to (``issuer-mismatch``);
3. the issuer has the authority (``isolation-not-authorised``): a cell only of its own region
   (the boundary knows which region each cell is in), a region only other than its own; and a
   lift only if its region is the one whose order severed the target;
4. it is fresh and new (``isolation-order-stale``): ``issued_at`` within ``max_age_ms`` (and not
   beyond ``max_drift_ms`` in the future), and its ``sequence`` above every order seen from that
   issuer, so a replayed sever cannot undo a later lift, however late it comes.

Each target's state moves only through :data:`TRANSITIONS` (a lift of what is not severed, or a
second sever, changes nothing). A sever returns :class:`Severed`, :class:`RevokeLeases` and
:class:`ReclaimReservations` for the runtime and the lease authority; a lift returns
:class:`Lifted`. :meth:`IsolationBoundary.admits` is the filter every arriving bundle's source
node goes through: refused if its cell, or its cell's region, is severed. It takes effect at the
``now`` the order is applied — well within one auction cycle of its issue, the seeds' bound.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, Protocol

import attrs

from .. import cbor, cose
from ..envelope import IssuerMismatch
from ..errors import (
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
    UntrustedKey,
)
from ..ids import ContentId
from ..keys import SigningKey, VerifyKey
from ..messages import Scope
from ..trust import Role

__all__ = [
    "CDDL",
    "DRAFT_WIRE",
    "ORDER_AAD",
    "TRANSITIONS",
    "Action",
    "IsolationBoundary",
    "IsolationOrder",
    "Lifted",
    "NotAuthorised",
    "OrderAction",
    "OrderInvalid",
    "ReclaimReservations",
    "RevokeLeases",
    "Severed",
    "StaleOrder",
    "Target",
    "issue_order",
]

#: Binds the signature to this kind of document (RFC 9052 §4.3 externally supplied data).
ORDER_AAD: Final = b"fleetwire isolation order v1"

#: The order payload in CDDL (RFC 8610); the tests validate encodings against it.
CDDL: Final = """
isolation-order = {
  1: uint,                     ; issuer: node id of a region coordinator
  2: uint,                     ; issued_at, DTN time
  3: uint,                     ; sequence, above every earlier order of the issuer
  4: 0 / 1,                    ; action: sever / lift
  5: 1 / 2,                    ; scope of the target: cell / region
  6: uint,                     ; target: the cell or region id
  ? 7: tstr .size (1..256),    ; reason
}
"""
_U64_MAX: Final = (1 << 64) - 1
_ORDER_LIMITS: Final = cbor.Limits(
    max_size=1024, max_depth=1, max_container_items=8, max_total_items=16,
    max_string_length=256, allowed_tags=frozenset(),
)  # fmt: skip
_ENVELOPE_LIMITS: Final = cose.EnvelopeLimits(max_size=2048)

#: The proposed version-2 message (spec/v2/faults.md, a draft): type code and body keys. As a
#: message its type names it, so it needs no AAD of its own; until the codec reads version 2 the
#: standalone form above, under :data:`ORDER_AAD`, carries the same fields.
DRAFT_WIRE: Final[dict[str, tuple[int, tuple[tuple[int, str], ...]]]] = {
    "isolation-order": (15, ((8, "action"), (9, "scope"), (10, "target"), (11, "reason"))),
}


class OrderInvalid(RemoteProtocolError):
    code = "isolation-order-invalid"


class NotAuthorised(UntrustedKey):
    """The signer may not isolate that target."""

    code = "isolation-not-authorised"


class StaleOrder(RemoteProtocolError):
    """Too old, from the future, or not newer than an order already applied from its issuer."""

    code = "isolation-order-stale"


class OrderAction(enum.IntEnum):
    SEVER = 0
    LIFT = 1


class TargetState(enum.Enum):
    CONNECTED = "connected"
    SEVERED = "severed"


TRANSITIONS: Final[dict[TargetState, dict[OrderAction, TargetState]]] = {
    TargetState.CONNECTED: {OrderAction.SEVER: TargetState.SEVERED},
    TargetState.SEVERED: {OrderAction.LIFT: TargetState.CONNECTED},
}


@attrs.frozen(slots=True)
class Target:
    scope: Scope
    id: int

    def __attrs_post_init__(self) -> None:
        if self.scope is Scope.NODE:
            raise LocalProtocolError("isolation severs a cell or a region, not a node")


@attrs.frozen(slots=True)
class IsolationOrder:
    issuer: int
    issued_at: int
    sequence: int
    action: OrderAction
    target: Target
    reason: str | None = None

    def to_payload(self) -> bytes:
        body: dict[int, Any] = {
            1: self.issuer,
            2: self.issued_at,
            3: self.sequence,
            4: int(self.action),
            5: int(self.target.scope),
            6: self.target.id,
        }
        if self.reason is not None:
            body[7] = self.reason
        return cbor.encode(body)

    def draft_body(self) -> dict[str, Any]:
        """The body of the draft version-2 isolation order (:data:`DRAFT_WIRE`), by field name."""
        fields: dict[str, Any] = {
            "action": int(self.action),
            "scope": int(self.target.scope),
            "target": self.target.id,
        }
        if self.reason is not None:
            fields["reason"] = self.reason
        return fields

    @classmethod
    def from_payload(cls, data: bytes) -> IsolationOrder:
        try:
            value = cbor.decode(data, _ORDER_LIMITS)
        except DecodeError as exc:
            raise OrderInvalid(f"order payload: {exc.message}") from None
        if not isinstance(value, dict) or not set(range(1, 7)) <= set(value) <= set(range(1, 8)):
            raise OrderInvalid("an order is the map {1..6, ?7}")
        for key, name in ((1, "issuer"), (2, "issued_at"), (3, "sequence"), (6, "target")):
            if type(value[key]) is not int or not 0 <= value[key] <= _U64_MAX:
                raise OrderInvalid(f"{name}: an unsigned integer")
        try:
            action = OrderAction(value[4])
            scope = Scope(value[5])
        except ValueError:
            raise OrderInvalid("action is 0 or 1 and scope 1 (cell) or 2 (region)") from None
        if scope is Scope.NODE:
            raise OrderInvalid("scope: a cell (1) or a region (2)")
        reason = value.get(7)
        if reason is not None and (not isinstance(reason, str) or not reason):
            raise OrderInvalid("reason: non-empty text")
        return cls(value[1], value[2], value[3], action, Target(scope, value[6]), reason)


def issue_order(order: IsolationOrder, key: SigningKey) -> bytes:
    """Sign ``order`` with ``key`` (a region coordinator's); return the COSE_Sign1 bytes."""
    if order.reason is not None and not 1 <= len(order.reason.encode()) <= 256:
        raise LocalProtocolError("reason: 1..256 bytes of text")
    return cose.sign1(order.to_payload(), key, external_aad=ORDER_AAD)


class _Credential(Protocol):
    @property
    def node(self) -> int: ...
    @property
    def public_key(self) -> VerifyKey: ...
    @property
    def region(self) -> int | None: ...


class _Trust(Protocol):
    def key_for(self, kid: bytes, now: int, role: Role | None = None) -> _Credential: ...


# --- actions -----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Severed:
    target: Target
    order: IsolationOrder
    order_id: ContentId


@attrs.frozen(slots=True)
class RevokeLeases:
    """The lease authority revokes every lease held by a node of ``target``."""

    target: Target


@attrs.frozen(slots=True)
class ReclaimReservations:
    """Reservations handed to ``target`` return to the region's pool."""

    target: Target


@attrs.frozen(slots=True)
class Lifted:
    target: Target
    order: IsolationOrder


Action = Severed | RevokeLeases | ReclaimReservations | Lifted


class IsolationBoundary:
    """The boundary filter (module docstring)."""

    def __init__(
        self,
        trust: _Trust,
        region_of_cell: Mapping[int, int],
        *,
        max_age_ms: int = 3_600_000,
        max_drift_ms: int = 60_000,
        max_issuers: int = 4_096,
    ) -> None:
        self._trust = trust
        self._region_of_cell = dict(region_of_cell)
        self.max_age_ms = max_age_ms
        self.max_drift_ms = max_drift_ms
        self.max_issuers = max_issuers
        self._cell_of: dict[int, int] = {}
        self._region_of_node: dict[int, int] = {}
        #: Severed targets: the order that severed each, and the region of its issuer.
        self._severed: dict[Target, tuple[IsolationOrder, int]] = {}
        self._high_water: dict[int, int] = {}

    def place(self, node: int, cell: int) -> None:
        """Where ``node`` is (from its capability advertisement, §6.1, or configuration)."""
        self._cell_of[node] = cell

    def place_in_region(self, node: int, region: int) -> None:
        """``node`` is in ``region`` but in no cell (its region coordinator, from its credential
        §8, or configuration): refused while that region is severed."""
        self._region_of_node[node] = region

    def severed(self) -> set[Target]:
        return set(self._severed)

    def admits(self, source: int) -> bool:
        """Whether a bundle from node ``source`` may pass the boundary."""
        if not self._severed:
            return True
        cell = self._cell_of.get(source)
        if cell is None:
            region = self._region_of_node.get(source)
            # A node we cannot place belongs to no severed target we know of.
            return region is None or Target(Scope.REGION, region) not in self._severed
        if Target(Scope.CELL, cell) in self._severed:
            return False
        region = self._region_of_cell.get(cell)
        return region is None or Target(Scope.REGION, region) not in self._severed

    def order(self, data: bytes, now: int) -> list[Action]:
        """Verify and apply a signed order (module docstring, steps 1-4)."""
        try:
            envelope = cose.parse_sign1(data, _ENVELOPE_LIMITS)
        except DecodeError as exc:
            raise OrderInvalid(f"order envelope: {exc.message}") from None
        if not isinstance(envelope.kid, bytes):
            raise UntrustedKey("the order names no signing key (kid)")
        credential = self._trust.key_for(envelope.kid, now, Role.REGION_COORDINATOR)
        payload = cose.verify_sign1(envelope, credential.public_key, ORDER_AAD)
        order = IsolationOrder.from_payload(payload)
        return self._apply(order, credential, ContentId.of(payload), now)

    def order_message(
        self, order: IsolationOrder, kid: bytes, order_id: ContentId, now: int
    ) -> list[Action]:
        """Apply an order that arrived as a version-2 message (spec/v2/faults.md, type 15),
        whose envelope the node has verified already: steps 1 (the key's role *now*) to 4."""
        credential = self._trust.key_for(kid, now, Role.REGION_COORDINATOR)
        return self._apply(order, credential, order_id, now)

    def _apply(
        self, order: IsolationOrder, credential: _Credential, order_id: ContentId, now: int
    ) -> list[Action]:
        if order.issuer != credential.node:
            raise IssuerMismatch(
                f"order claims issuer {order.issuer}, signed by node {credential.node}"
            )
        region = self._check_authority(order, credential.region)
        self._check_fresh(order, now)
        target = order.target
        severed = self._severed.get(target)
        new = TRANSITIONS[TargetState.SEVERED if severed else TargetState.CONNECTED].get(
            order.action
        )
        if new is TargetState.CONNECTED and severed is not None and severed[1] != region:
            # Only the region that cut a target off may let it back in.
            raise NotAuthorised(f"{_name(target)} was severed by region {severed[1]}, not {region}")
        self._high_water[order.issuer] = order.sequence
        if new is None:
            return []  # already severed, or not severed: nothing to change
        if new is TargetState.SEVERED:
            self._severed[target] = (order, region)
            return [
                Severed(target, order, order_id),
                RevokeLeases(target),
                ReclaimReservations(target),
            ]
        del self._severed[target]
        return [Lifted(target, order)]

    def _check_authority(self, order: IsolationOrder, region: int | None) -> int:
        target = order.target
        if region is None:
            raise NotAuthorised("the signer's credential names no region")
        if target.scope is Scope.CELL and self._region_of_cell.get(target.id) != region:
            raise NotAuthorised(f"cell {target.id} is not in region {region} of the signer")
        if target.scope is Scope.REGION and target.id == region:
            raise NotAuthorised(f"region {region} cannot sever itself")
        return region

    def _check_fresh(self, order: IsolationOrder, now: int) -> None:
        if order.issued_at > now + self.max_drift_ms:
            raise StaleOrder(f"issued at {order.issued_at}, in the future of {now}")
        if now - order.issued_at > self.max_age_ms:
            raise StaleOrder(f"issued at {order.issued_at}, older than {self.max_age_ms} ms")
        seen = self._high_water.get(order.issuer)
        if seen is not None and order.sequence <= seen:
            raise StaleOrder(f"sequence {order.sequence} from {order.issuer} is not above {seen}")
        if seen is None and len(self._high_water) >= self.max_issuers:
            raise StaleOrder(f"{len(self._high_water)} issuers tracked (the limit)")


def _name(target: Target) -> str:
    return f"{target.scope.name.lower()} {target.id}"
