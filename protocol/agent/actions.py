"""What the bundle agent asks its driver to do, and what it tells it (RFC 9171 §5).

Every public method of :class:`~.agent.BundleAgent` returns a list of these, in the order
they are to be carried out. They are values: the driver (the Trio node, the simulator, an
embedder's loop) executes them with its own I/O and clock and reports back with the agent's
methods (``transmitted``, ``transmit_failed``, ``acknowledge``, ``poll``).
"""

from __future__ import annotations

import attrs

from ..bpv7 import StatusReport
from ..envelope import SignedMessage
from ..messages import accel

__all__ = [
    "Action",
    "Deliver",
    "DeliveryRefused",
    "Discarded",
    "RevocationsApplied",
    "Sent",
    "StatusReportReceived",
    "TransferAccepted",
    "TransferRefused",
    "Transmit",
    "WakeAt",
]


@attrs.frozen(slots=True)
class Transmit:
    """Send ``data`` (a whole encoded bundle) on the link to ``link``; then call
    ``transmitted(link, bundle, now)`` once the link has it (a TCPCL link: acknowledged), or
    ``transmit_failed(link, bundle, now)`` if it does not. ``bundle`` is the store's key."""

    link: int
    data: bytes = attrs.field(repr=False)
    bundle: bytes


@attrs.frozen(slots=True)
class TransferAccepted:
    """The bundle received from ``link`` is held durably: the link may acknowledge it."""

    link: int
    bundle: bytes


@attrs.frozen(slots=True)
class TransferRefused:
    """Do not acknowledge the bundle received from ``link`` (malformed, or the store is full:
    ``code`` says which); the sender keeps its copy."""

    link: int
    code: str
    reason: str


@attrs.frozen(slots=True)
class Sent:
    """A message this node sent is held durably (``bundle`` is the store's key)."""

    message: SignedMessage
    bundle: bytes


@attrs.frozen(slots=True)
class Deliver:
    """Hand ``message`` to the application; call ``acknowledge(delivery, now)`` once it has
    it. Until then the bundle stays held (after a restart it is delivered again)."""

    delivery: bytes
    message: SignedMessage
    from_link: int | None


@attrs.frozen(slots=True)
class Handled:
    """A role attached to the agent (:mod:`.handlers`) took ``message`` in place of the
    application; its answers are held and the bundle is acknowledged. For the driver's
    records only: there is nothing to do."""

    delivery: bytes
    message: SignedMessage
    from_link: int | None


@attrs.frozen(slots=True)
class DeliveryRefused:
    """A bundle for this node failed admission (signature, trust, role, replay, service)."""

    bundle: bytes
    code: str
    reason: str


@attrs.frozen(slots=True)
class StatusReportReceived:
    """A bundle status report addressed to this node (RFC 9171 §6.1.1): it informs only."""

    report: StatusReport


@attrs.frozen(slots=True)
class RevocationsApplied:
    """A newer root-signed revocation list is in force; keep ``data`` (e.g. in a file)."""

    data: bytes = attrs.field(repr=False)
    serial: int


@attrs.frozen(slots=True)
class Discarded:
    """An accepted bundle left without being delivered or forwarded; ``reason`` is the status
    report reason code (RFC 9171 §6.1.1: lifetime expired, hop limit, no known route)."""

    bundle: bytes
    reason: int


@attrs.frozen(slots=True)
class WakeAt:
    """Call ``poll`` at DTN time ``at`` (ms) at the latest.

    The agent returns one only when ``at`` is earlier than the wake it returned since the
    last ``poll`` (or it returned none since), and it always names the next wake in the batch
    ``poll`` returns. So the driver keeps the earliest ``WakeAt`` it holds until that time
    comes, then calls ``poll`` (which consumes it) and sets the wake that batch names, if any.
    A driver that simply keeps the latest ``WakeAt`` and forgets it when it polls follows
    this too (each new one is earlier, or follows a poll)."""

    at: int


Action = (
    Transmit | TransferAccepted | TransferRefused | Sent | Deliver | Handled | DeliveryRefused
    | StatusReportReceived | RevocationsApplied | Discarded | WakeAt
)  # fmt: skip


# Every batch the agent returns is made of these (a wake, a transmission, an acceptance…): with
# the accelerator their __init__ is the C one that stores straight into the slots, as for the
# message classes (:func:`fleetwire.protocol.messages.accel.install_fast_init`; a no-op
# without it, and undone on the pure-Python road).
FAST_INIT_CLASSES = (Transmit, TransferAccepted, TransferRefused, Sent, Deliver, Handled,
                     DeliveryRefused, StatusReportReceived, RevocationsApplied, Discarded, WakeAt)  # fmt: skip
for _cls in FAST_INIT_CLASSES:
    accel.install_fast_init(_cls)
