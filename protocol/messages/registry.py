"""Every message type of every version this implementation speaks, and the version of each.

The codec (:mod:`.codec`) builds its readers and writers from :data:`MESSAGE_CLASSES`; what a
reader of version *k* knows is what this table says existed at *k*: a type whose class has
``SINCE <= k``, and of its fields those with ``since <= k`` (:func:`.schema.fields_at`). A type
code names one type for ever (protocol.md §5.5: codes are not reused), so one table serves every
version.

A later type is added by writing its class (a header, a ``FIELDS`` table, ``SINCE``, ``TYPE``
with a new :class:`.header.MessageType` code) and listing it here; ``fleetwire spec check``
then guards its CDDL and vectors once its version is released.
"""

from __future__ import annotations

from typing import Final

from .header import PROTOCOL_VERSION, MessageType
from .v1 import (
    V1_MESSAGE_CLASSES,
    CapabilityAdvertisement,
    Commitment,
    ExceptionReport,
    LeaseClaim,
    LeaseExpiry,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    LeaseRevoke,
)
from .v2 import (
    V2_MESSAGE_CLASSES,
    BlockGrant,
    BlockRelease,
    BlockRenew,
    BlockRequest,
    DetailAnswer,
    DetailRequest,
    Digest,
    EscalationAck,
    EscalationClose,
    IsolationOrder,
)
from .v3 import V3_MESSAGE_CLASSES, Ask, Award, Bid

Message = (
    CapabilityAdvertisement
    | Commitment
    | ExceptionReport
    | LeaseClaim
    | LeaseGrant
    | LeaseRenew
    | LeaseRelease
    | LeaseRevoke
    | LeaseExpiry
    | Digest
    | DetailRequest
    | DetailAnswer
    | EscalationAck
    | EscalationClose
    | IsolationOrder
    | BlockRequest
    | BlockGrant
    | BlockRenew
    | BlockRelease
    | Bid
    | Ask
    | Award
)

#: Every message class of every version, by type code.
MESSAGE_CLASSES: Final[dict[MessageType, type[Message]]] = {
    **V1_MESSAGE_CLASSES,
    **V2_MESSAGE_CLASSES,
    **V3_MESSAGE_CLASSES,
}
#: The message classes by the version that introduced them.
CLASSES_BY_VERSION: Final[dict[int, tuple[type[Message], ...]]] = {
    version: tuple(cls for cls in MESSAGE_CLASSES.values() if version == cls.SINCE)
    for version in range(1, PROTOCOL_VERSION + 1)
}


__all__ = ["CLASSES_BY_VERSION", "MESSAGE_CLASSES", "Message"]
