"""A node's authority table: which installed release holds control authority, per lineage.

Theory of operation
-------------------
Bits and authority are separate (seeds: revoke control authority "even if bits remain
installed"). A node keeps every release it installed; each is in one :class:`Mode`:

* ``SHADOW`` — installed, runs compute-only, its outputs compared with the active release's;
* ``ACTIVE`` — holds control authority (at most one release per lineage);
* ``STANDBY`` — held authority once and was superseded by a newer release: the rollback
  target (a release that is itself rolled back goes back to ``SHADOW``, never to standby);
* ``REVOKED`` — a revocation order names it: it stays installed and is never granted again.

:data:`TRANSITIONS` is the table (``{mode: {happening: new mode}}``). Sans-IO: each method takes
``now`` and returns actions (:class:`AuthorityGranted`, :class:`AuthorityWithdrawn`); the
runtime tells the software supervisor. Refusals change nothing (:class:`.errors.AuthorityRevoked`,
:class:`.errors.ReleaseNotInstalled`, :class:`.errors.PolicyStale`,
:class:`.errors.StageOrderStale`).

Revocation takes effect **on arrival, whatever its age**: an order is not a coordination
message with a freshness window, because the seeds' worst case is exactly the node 30 days into
a partition still running a bad release. Applying an order is idempotent (a replay does
nothing new) and only ever takes authority away, so accepting a late or repeated one is safe.
A revocation is never lifted — a fixed release ships as a new version. When the active release
of a lineage is revoked, authority falls back to the newest ``STANDBY`` release of that lineage
that is not revoked; if there is none, the lineage runs without authority (the safety kernel
and conservative mode only).

Rollout-stage orders (:meth:`AuthorityTable.apply_stage`) grant and roll back for the node's
own cell, once each and in serial order per issuer and release: an older one is refused
(``rollout-stage-stale``), because a grant replayed after a roll back would hand a failed
release authority again.

Policy tables carry feature flags and the standing revocations. A table with a lower serial
than the one in force is refused (``policy-stale``), as is a different table under the same
serial; the same table again is a no-op. A new table replaces the flags and adds its
revocations (revocations only accumulate); nothing installed is dropped.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from .errors import AuthorityRevoked, PolicyStale, ReleaseNotInstalled, StageOrderStale
from .manifest import Manifest, Version
from .messages import RolloutStage, StageAction
from .orders import PolicyTable, RevocationOrder

__all__ = [
    "TRANSITIONS",
    "AuthorityGranted",
    "AuthorityTable",
    "AuthorityWithdrawn",
    "InstalledRelease",
    "Mode",
]


class Mode(enum.Enum):
    SHADOW = "shadow"
    ACTIVE = "active"
    STANDBY = "standby"
    REVOKED = "revoked"


TRANSITIONS: Final[dict[Mode, dict[str, Mode]]] = {
    Mode.SHADOW: {"grant": Mode.ACTIVE, "revoke": Mode.REVOKED},
    Mode.ACTIVE: {"supersede": Mode.STANDBY, "roll-back": Mode.SHADOW, "revoke": Mode.REVOKED},
    Mode.STANDBY: {"grant": Mode.ACTIVE, "revoke": Mode.REVOKED},
    Mode.REVOKED: {"revoke": Mode.REVOKED},
}


@attrs.frozen(slots=True)
class InstalledRelease:
    release_id: ContentId
    lineage: str
    version: Version
    mode: Mode


@attrs.frozen(slots=True)
class AuthorityGranted:
    release_id: ContentId
    lineage: str
    version: Version


@attrs.frozen(slots=True)
class AuthorityWithdrawn:
    release_id: ContentId
    lineage: str
    version: Version
    reason: str


Action = AuthorityGranted | AuthorityWithdrawn


class AuthorityTable:
    """Installed releases, who holds authority, the revocations and the policy in force."""

    def __init__(self) -> None:
        self._releases: dict[ContentId, InstalledRelease] = {}
        self._revoked: set[tuple[str, Version | None]] = set()
        self._orders: set[tuple[int, int]] = set()  # (issuer, serial) applied
        # (issuer, release) -> highest rollout-stage serial applied
        self._stage_serials: dict[tuple[int, ContentId], int] = {}
        self.policy: PolicyTable | None = None

    # --- queries -----------------------------------------------------------------------

    def installed(self) -> dict[ContentId, InstalledRelease]:
        return dict(self._releases)

    def active(self, lineage: str) -> InstalledRelease | None:
        """The release of ``lineage`` holding control authority, if any."""
        for release in self._releases.values():
            if release.lineage == lineage and release.mode is Mode.ACTIVE:
                return release
        return None

    def is_revoked(self, lineage: str, version: Version) -> bool:
        return (lineage, None) in self._revoked or (lineage, version) in self._revoked

    def flag(self, name: str) -> bool:
        """A feature flag of the policy in force; unknown flags are off."""
        return bool(self.policy is not None and self.policy.flags.get(name, False))

    # --- changes -----------------------------------------------------------------------

    def _set(self, release: InstalledRelease, happening: str) -> InstalledRelease:
        new = TRANSITIONS[release.mode].get(happening)
        if new is None:
            raise LocalProtocolError(f"{release.version}: no '{happening}' from {release.mode}")
        updated = attrs.evolve(release, mode=new)
        self._releases[release.release_id] = updated
        return updated

    def install(self, manifest: Manifest, now: int) -> InstalledRelease:
        """A fetched, verified release: installed in shadow mode (or revoked, if an order
        already names it — bits are kept either way). Idempotent."""
        release_id = manifest.release_id
        known = self._releases.get(release_id)
        if known is not None:
            return known
        mode = Mode.REVOKED if self.is_revoked(manifest.lineage, manifest.version) else Mode.SHADOW
        release = InstalledRelease(release_id, manifest.lineage, manifest.version, mode)
        self._releases[release_id] = release
        return release

    def grant(self, release_id: ContentId, now: int) -> list[Action]:
        """Give ``release_id`` control authority in its lineage (a rollout stage or a
        rollback); the release that held it goes to standby."""
        release = self._releases.get(release_id)
        if release is None:
            raise ReleaseNotInstalled(f"release {release_id.short()} is not installed here")
        if release.mode is Mode.REVOKED or self.is_revoked(release.lineage, release.version):
            raise AuthorityRevoked(
                f"{release.lineage} {release.version} had its control authority revoked; "
                f"it stays installed but is never granted again (ship a new version)"
            )
        if release.mode is Mode.ACTIVE:
            return []
        actions: list[Action] = []
        current = self.active(release.lineage)
        if current is not None:
            self._set(current, "supersede")
            actions.append(
                AuthorityWithdrawn(
                    current.release_id, current.lineage, current.version, "superseded"
                )
            )
        granted = self._set(release, "grant")
        actions.append(AuthorityGranted(granted.release_id, granted.lineage, granted.version))
        return actions

    def roll_back(self, lineage: str, to: Version, now: int) -> list[Action]:
        """A rollout's roll back: authority returns to ``to``; the release that held it goes
        back to shadow — it never proved itself, so it is no fallback later."""
        target = next(
            (r for r in self._releases.values() if r.lineage == lineage and r.version == to),
            None,
        )
        if target is None:
            raise ReleaseNotInstalled(f"{lineage} {to} is not installed here to roll back to")
        if target.mode is Mode.REVOKED or self.is_revoked(lineage, to):
            raise AuthorityRevoked(f"cannot roll back to {lineage} {to}: its authority is revoked")
        if target.mode is Mode.ACTIVE:
            return []
        actions: list[Action] = []
        current = self.active(lineage)
        if current is not None:
            self._set(current, "roll-back")
            actions.append(
                AuthorityWithdrawn(current.release_id, lineage, current.version, "rolled back")
            )
        granted = self._set(target, "grant")
        actions.append(AuthorityGranted(granted.release_id, lineage, granted.version))
        return actions

    def apply_stage(self, order: RolloutStage, cell: int, now: int) -> list[Action]:
        """Act on a verified rollout-stage order as a node of ``cell``.

        Once per issuer and release, in serial order: an order older than one applied raises
        :class:`.errors.StageOrderStale` (a replayed grant must not undo a roll back); the same
        order again is a no-op. Installing in shadow changes no authority (the runtime fetches
        and then calls :meth:`install`).
        """
        if cell not in order.cells:
            return []
        key = (order.issuer, order.release)
        last = self._stage_serials.get(key)
        if last is not None and order.serial <= last:
            if order.serial == last:
                return []
            raise StageOrderStale(
                f"rollout stage {order.serial} for release {order.release.short()} is older "
                f"than stage order {last}, already applied"
            )
        actions: list[Action] = []
        if order.action is StageAction.GRANT_AUTHORITY:
            actions = self.grant(order.release, now)
        elif order.action is StageAction.ROLL_BACK:
            actions = self._stage_roll_back(order, now)
        self._stage_serials[key] = order.serial
        return actions

    def _stage_roll_back(self, order: RolloutStage, now: int) -> list[Action]:
        release = self._releases.get(order.release)
        if release is None:
            return []  # never installed here: nothing to take back
        if order.to is not None:
            return self.roll_back(release.lineage, order.to, now)
        if release.mode is not Mode.ACTIVE:
            return []
        self._set(release, "roll-back")
        return [
            AuthorityWithdrawn(release.release_id, release.lineage, release.version, "rolled back")
        ]

    def revoke(self, order: RevocationOrder, now: int) -> list[Action]:
        """Apply a verified revocation order at once, however late it arrives."""
        key = (order.issuer, order.serial)
        if key in self._orders:
            return []
        self._orders.add(key)
        return self._apply_revocation(
            order.lineage, order.version, f"revoked by order {order.serial}"
        )

    def apply_policy(self, table: PolicyTable, now: int) -> list[Action]:
        """Put a verified policy table in force; refuse an older one (nothing changes)."""
        current = self.policy
        if current is not None:
            if table.serial < current.serial:
                raise PolicyStale(
                    f"policy table {table.serial} is older than table {current.serial} in force"
                )
            if table.serial == current.serial:
                if table != current:
                    raise PolicyStale(f"two different policy tables carry serial {table.serial}")
                return []
        self.policy = table
        actions: list[Action] = []
        for lineage, version in table.revoked:
            actions += self._apply_revocation(lineage, version, f"revoked by policy {table.serial}")
        return actions

    def _apply_revocation(self, lineage: str, version: Version | None, why: str) -> list[Action]:
        self._revoked.add((lineage, version))
        actions: list[Action] = []
        lost_authority = False
        for release in list(self._releases.values()):
            if release.lineage != lineage or version not in (None, release.version):
                continue
            if release.mode is Mode.ACTIVE:
                lost_authority = True
                actions.append(
                    AuthorityWithdrawn(release.release_id, release.lineage, release.version, why)
                )
            self._set(release, "revoke")
        if lost_authority:
            fallback = self._fallback(lineage)
            if fallback is not None:
                granted = self._set(fallback, "grant")
                actions.append(
                    AuthorityGranted(granted.release_id, granted.lineage, granted.version)
                )
        return actions

    def _fallback(self, lineage: str) -> InstalledRelease | None:
        standby = [
            r for r in self._releases.values() if r.lineage == lineage and r.mode is Mode.STANDBY
        ]
        return max(standby, key=lambda r: r.version, default=None)
