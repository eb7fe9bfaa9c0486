"""The fault roles' version-2 messages, to and from the sans-IO cores' objects.

Theory of operation
-------------------
The coordination cores (:mod:`fleetwire.protocol.coordination`) keep their own values — a
:class:`~fleetwire.protocol.coordination.digests.Digest` names its node, an
:class:`~fleetwire.protocol.coordination.isolation.IsolationOrder` its issuer, time and
sequence — because they are tested and reasoned about apart from the wire. On the wire the
same content is a version-2 message of spec/v2/faults.md (types 10–15), whose header says who
and when. These functions are the two directions; they add no rule of their own (the codec
bounds and checks the message, the core checks the content).
"""

from __future__ import annotations

from fleetwire.protocol.coordination import digests as dg
from fleetwire.protocol.coordination import isolation as iso
from fleetwire.protocol.messages import Header, Scope, v2

__all__ = ["digest_from_message", "digest_message", "order_from_message", "order_message"]


def digest_message(header: Header, digest: dg.Digest) -> v2.Digest:
    """faults.md §1: a core digest as the type-10 message (its node is the header's issuer)."""
    return v2.Digest(
        header,
        period_start=digest.period_start,
        period_end=digest.period_end,
        trigger=v2.Trigger(int(digest.trigger)),
        metrics=tuple(
            (
                name,
                v2.Stats(
                    s.count,
                    s.mean_milli,
                    s.sigma_milli,
                    s.minimum,
                    s.maximum,
                    tuple(s.buckets),
                    s.out_of_control,
                    s.anomaly_milli,
                ),
            )
            for name, s in digest.metrics.items()
        ),
        details=tuple(digest.details),
    )


def digest_from_message(message: v2.Digest) -> dg.Digest:
    """The core's digest of a received type-10 message: the node is the one that signed it."""
    return dg.Digest(
        message.header.issuer,
        message.period_start,
        message.period_end,
        dg.Trigger(int(message.trigger)),
        {
            name: dg.MetricStats(
                s.count,
                s.mean,
                s.sigma,
                s.minimum,
                s.maximum,
                tuple(s.histogram),
                s.out_of_control,
                s.anomaly,
            )
            for name, s in message.metrics
        },
        tuple(message.details),
    )


def order_message(header: Header, order: iso.IsolationOrder) -> v2.IsolationOrder:
    """faults.md §4: a core order as the type-15 message, signed in the node's envelope."""
    return v2.IsolationOrder(
        header,
        action=v2.IsolationAction(int(order.action)),
        scope=v2.IsolationScope(int(order.target.scope)),
        target=order.target.id,
        reason=order.reason,
    )


def order_from_message(message: v2.IsolationOrder) -> iso.IsolationOrder:
    """The core's order of a received type-15 message (issuer, time, sequence: its header)."""
    header = message.header
    return iso.IsolationOrder(
        header.issuer,
        header.issued_at,
        header.sequence,
        iso.OrderAction(int(message.action)),
        iso.Target(Scope(int(message.scope)), message.target),
        message.reason,
    )
