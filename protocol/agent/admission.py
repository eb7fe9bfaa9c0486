"""What the agent delivers: the checks between "a bundle for me" and "the application has it".

Theory of operation
-------------------
Pure function of the bundle, the trust store, the replay guard and ``now``
(:func:`admit`); the same order as the runtime's admission, cheapest and least trusting first
(spec §10):

1. **service** — the trust service carries a revocation list (:class:`RevocationBundle`, for
   the agent to apply); the FCP service a message; anything else is refused
   (``service-unknown``), so one message cannot be delivered twice under two service numbers.
2. **signature and trust** — :func:`fleetwire.protocol.envelope.verify` (key known, valid now,
   not revoked, issuer is the key's node).
3. **role** — :func:`fleetwire.protocol.roles.check_role` (spec §8, ``key-wrong-role``).
4. **replay** — :meth:`fleetwire.protocol.replay.ReplayGuard.check`. The guard remembers at
   once; the agent persists the record (``store.remember``) when the application acknowledged
   the message, just before the bundle becomes a tombstone.

A node at an isolation boundary passes ``boundary`` (an
:meth:`~fleetwire.protocol.coordination.isolation.IsolationBoundary.admits`): a message from a
node it does not admit is refused (``source-isolated``, spec/v2/faults.md §4) — by the bundle's
source before anything is verified (cheap), and by the verified issuer after (the source is not
signed). Revocation lists pass: they are root-signed and protect the fleet whoever carries them.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..bpv7 import Bundle, IpnEid
from ..cose import Sign1
from ..envelope import SignedMessage, verify_trusted
from ..errors import FleetwireError
from ..messages import PROTOCOL_VERSION, accel
from ..replay import Accept, ReplayGuard, Seen
from ..roles import check_role
from ..trust import TrustStore

__all__ = ["Admitted", "Refusal", "RevocationBundle", "admit"]


@attrs.frozen(slots=True)
class Refusal:
    """A bundle for this node that will not be delivered; ``code`` is the stable code."""

    code: str
    reason: str


@attrs.frozen(slots=True)
class Admitted:
    """A verified message to deliver; ``accept`` is what the replay guard recorded."""

    signed: SignedMessage
    accept: Accept


@attrs.frozen(slots=True)
class RevocationBundle:
    """A bundle on the trust service: a root-signed revocation list for the agent to apply."""

    data: bytes


#: What every admitted delivery builds (the replay guard's record and answer, the verdict) gets
#: the accelerator's ``__init__`` (:func:`fleetwire.protocol.messages.accel.install_fast_init`;
#: a no-op without it). The replay classes are listed here, not in :mod:`.replay`, which stays
#: free of the message package.
FAST_INIT_CLASSES = (Admitted, Seen, Accept)
for _cls in FAST_INIT_CLASSES:
    accel.install_fast_init(_cls)


def admit(
    bundle: Bundle,
    now: int,
    *,
    service: int,
    trust_service: int,
    trust: TrustStore,
    guard: ReplayGuard,
    reader_cell: int | None = None,
    boundary: Callable[[int], bool] | None = None,
    version: int = PROTOCOL_VERSION,
    sign1: Sign1 | None = None,
) -> Admitted | Refusal | RevocationBundle:
    """Decide delivery of ``bundle`` (module docstring); the message is read as an
    implementation of ``version`` reads it (a node pinned to an older version passes its own).
    ``sign1``: the payload already parsed (``cose.parse_sign1`` with the default limits), so
    that it is not parsed twice."""
    destination = bundle.primary.destination
    to_service = destination.service if isinstance(destination, IpnEid) else None
    if to_service == trust_service:
        return RevocationBundle(bundle.payload)
    if to_service != service:
        return Refusal(
            "service-unknown",
            f"bundle for service {to_service}; this node delivers messages on service {service}",
        )
    source = bundle.primary.source
    if boundary is not None and isinstance(source, IpnEid) and not boundary(source.node):
        return _isolated(source.node)
    try:
        # The credential that answered for the signature is the one whose role counts (a
        # second look-up at the same ``now`` would find the same one).
        signed, signer = verify_trusted(bundle.payload, trust, now, version=version, parsed=sign1)
        check_role(signed.message, signer, reader_cell)
    except FleetwireError as exc:
        return Refusal(exc.code, exc.message)
    header = signed.message.header
    if boundary is not None and not boundary(header.issuer):
        return _isolated(header.issuer)
    verdict = guard.check(
        header.issuer, header.sequence, header.issued_at, signed.content_id.raw, now
    )
    if not isinstance(verdict, Accept):
        return Refusal(verdict.code.value, verdict.reason)
    return Admitted(signed, verdict)


def _isolated(node: int) -> Refusal:
    return Refusal("source-isolated", f"node {node} is behind an isolation order")
