"""Moved to :mod:`fleetwire.protocol.agent.contacts` (pure: the bundle agent uses it); the
names stay importable from here."""

from fleetwire.protocol.agent.contacts import (  # noqa: F401
    _DTN_EPOCH,
    _EMPTY_PAIR,
    _REQUIRED,
    DTN_EPOCH_UNIX,
    Clock,
    Contact,
    ContactPlan,
    ContactPlanError,
    _confidence,
    _contact_from_mapping,
    _non_negative,
    _PairIndex,
    _positive,
    dtn_ms_from_datetime,
)

__all__ = [
    "DTN_EPOCH_UNIX",
    "Clock",
    "Contact",
    "ContactPlan",
    "ContactPlanError",
    "dtn_ms_from_datetime",
]
