"""What a node accepts at delivery: the checks between "a bundle for me" and "the app has it".

Theory of operation
-------------------
The node's deliver task hands every bundle addressed to it here (:meth:`Admission.admit`),
and acts only on what comes back. The decision itself is the sans-IO agent's
(:func:`fleetwire.protocol.agent.admission.admit`); this driver logs refusals, applies and
spreads revocation lists, and keeps the replay memory durable. In order, cheapest and least
trusting first:

1. **service** — the bundle's destination service must be the node's FCP service (a message)
   or its trust service (a revocation list); anything else is refused (``service-unknown``),
   so one message cannot be delivered again under another service number.
2. **signature and trust** — :func:`fleetwire.protocol.envelope.verify` against the trust
   store (key known, valid now, not revoked; issuer is the key's node).
3. **role** — :func:`fleetwire.protocol.roles.check_role` (spec §8, ``key-wrong-role``).
4. **replay** — :class:`fleetwire.protocol.replay.ReplayGuard` (per-issuer window and the
   ``issued_at`` window). It remembers at once (a second copy arriving meanwhile is refused);
   the node makes that memory durable with :meth:`Admission.settle` once the application has
   the message and before the bundle becomes a tombstone. A crash in between delivers the
   message again after the restart (at-least-once to the application, as before); a crash
   after it cannot make the message acceptable again.

A **revocation list** (trust service) is applied to the trust store at once — from then on
every delivery checks against it — kept in the node's revocation file when it has one, and
spread to every neighbour as a bundle of its own, so it crosses the fleet hop by hop like any
bundle, waiting out partitions in the stores on the way. A node spreads only a list that was
new to it, so the flood stops by itself.

A node at an isolation boundary sets :attr:`Admission.boundary` (the faults role does): the
agent's ``admit`` then refuses a message from a severed cell or region (``source-isolated``).

Every refusal is logged as one line with its stable code (``event=refused code=...``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from fleetwire.protocol.agent.admission import Admitted, Refusal, RevocationBundle, admit
from fleetwire.protocol.bpv7 import Bundle
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.messages import PROTOCOL_VERSION
from fleetwire.protocol.replay import ReplayGuard, ReplayPolicy
from fleetwire.protocol.trust import RevocationsRefused, TrustStore

from .store import BundleStore

log = logging.getLogger("fleetwire.node")

__all__ = ["Admission", "Admitted", "Refusal"]


#: Spread a revocation list: (envelope bytes, neighbour it came from or None).
Spread = Callable[[bytes, int | None], Awaitable[None]]


class Admission:
    """The delivery checks of one node (module docstring)."""

    def __init__(
        self,
        *,
        node: int,
        service: int,
        trust_service: int,
        trust: TrustStore,
        store: BundleStore,
        policy: ReplayPolicy,
        spread: Spread,
        revocations_file: Path | None = None,
        reader_cell: int | None = None,
        floor_at_start: bool = False,
        protocol_version: int = PROTOCOL_VERSION,
    ) -> None:
        self.node = node
        #: The version this node reads as (``[node] protocol_version``; spec/v2/versions.md §1).
        self.protocol_version = protocol_version
        self.service = service
        self.trust_service = trust_service
        self.trust = trust
        self.store = store
        self.guard = ReplayGuard(policy)
        self._spread = spread
        self.revocations_file = revocations_file
        self.reader_cell = reader_cell
        self.floor_at_start = floor_at_start
        self._written: bytes | None = None  # the revocation list this node last wrote
        #: The isolation boundary's filter on a message's source node (set by the faults
        #: role at a boundary node; ``source-isolated``); None admits every source.
        self.boundary: Callable[[int], bool] | None = None
        #: Set (and replaced) each time a newer revocation list is put in force.
        self.revocations_applied = trio.Event()

    async def restore(self, now: int) -> None:
        """Read the replay memory back from the store. With ``floor_at_start`` a store that
        keeps nothing across restarts makes the node refuse everything issued before it
        started (spec §10); without it, such a node is open to replays after a restart."""
        if not self.store.durable and self.floor_at_start:
            self.guard.not_before = now
            log.warning(
                "node=%s event=replay-memory-volatile hint=without a durable store, messages "
                "issued before this start are refused; set [node] store to keep replay memory",
                self.node,
            )
        seen, floors = await self.store.remembered()
        self.guard.restore(seen, floors)

    async def admit(
        self, bundle: Bundle, now: int, from_peer: int | None = None
    ) -> Admitted | Refusal | None:
        """The verified message to deliver, a :class:`Refusal`, or None (a revocation list,
        handled here)."""
        verdict = admit(
            bundle, now, service=self.service, trust_service=self.trust_service,
            trust=self.trust, guard=self.guard, reader_cell=self.reader_cell,
            boundary=self.boundary,
            version=self.protocol_version,
        )  # fmt: skip
        if isinstance(verdict, RevocationBundle):
            return await self.take_revocations(verdict.data, now, from_peer)
        if isinstance(verdict, Refusal):
            return self._refuse(verdict.code, verdict.reason)
        return verdict

    async def settle(self, admitted: Admitted) -> None:
        """Make the guard's record of a delivered message durable (module docstring, 4)."""
        accept = admitted.accept
        floors = {} if accept.floor is None else {accept.seen.issuer: accept.floor}
        await self.store.remember([accept.seen], floors)

    async def take_revocations(
        self, data: bytes, now: int, from_peer: int | None = None, *, from_file: bool = False
    ) -> Refusal | None:
        """Put a root-signed revocation list in force if it is newer; keep and spread it.

        A list read from a file (``from_file``) is spread even when it is the one in force
        already (it was loaded at start, before any link was up), unless this node wrote
        that file itself on receiving the list.
        """
        if from_file and data == self._written:
            return None
        current = self.trust.revocations
        try:
            revocations = self.trust.apply_revocations(data, now)
        except RevocationsRefused as exc:
            log.info("node=%s event=revocations-ignored code=%s reason=%s", self.node,
                     exc.code, exc.message)  # fmt: skip
            return None  # an older list: no harm, nothing to spread
        except FleetwireError as exc:
            return self._refuse(exc.code, exc.message)
        if current is not None and revocations.serial == current.serial:
            if from_file:
                await self._spread(data, None)
            return None  # the list in force already
        self.revocations_applied.set()
        self.revocations_applied = trio.Event()
        log.warning(
            "node=%s event=revocations-applied serial=%s kids=%s serials=%s from=%s",
            self.node, revocations.serial, len(revocations.kids),
            len(revocations.credential_serials), from_peer,
        )  # fmt: skip
        if self.revocations_file is not None and not from_file:
            _write_atomically(self.revocations_file, data)
            self._written = data
        await self._spread(data, from_peer)
        return None

    async def prune(self, now: int) -> None:
        """Let go of replay records the ``issued_at`` window makes unnecessary."""
        self.guard.prune(now)
        await self.store.forget_seen(now)

    def _refuse(self, code: str, reason: str) -> Refusal:
        log.warning("node=%s event=refused code=%s reason=%s", self.node, code, reason)
        return Refusal(code, reason)


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
