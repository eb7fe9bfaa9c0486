"""Where a held bundle is in the agent's care: the states and the table of transitions.

Theory of operation
-------------------
Every bundle the store holds and the agent has not finished with is in exactly one state;
the agent moves it only through :data:`TRANSITIONS` (``{state: {event: new_state}}``, h11
style): the table is the specification, and a move it does not list is a bug in the agent
(:class:`AgentStateError`), never something a peer can cause. ``GONE`` means the agent is done
with the bundle: it was forwarded or delivered (a tombstone remembers it so that a late copy
is a duplicate), refused, discarded (RFC 9171 §5.4 expiry, hop limit, no known route), or the
store expired it.

Two rules: nothing here does I/O or reads a clock; nothing but the table decides a move.
"""

from __future__ import annotations

import enum
from typing import Final

from ..errors import FleetwireError

__all__ = ["TRANSITIONS", "AgentStateError", "BundleEvent", "BundleState", "next_state"]


class BundleState(enum.Enum):
    UNROUTED = "unrouted"  # held; next hop not chosen (after accept, restart, link loss)
    PARKED = "parked"  # no route now, or the next hop has no link yet
    QUEUED = "queued"  # waiting for the link to its next hop to come up
    IN_FLIGHT = "in-flight"  # given to a link, waiting for it to say it has it
    RETAINED = "retained"  # sent on a link without acknowledgements: kept a while
    LOCAL = "local"  # for this node, not yet admitted (or waiting to be offered again)
    HANDED = "handed"  # delivered to the application, waiting for its acknowledgement
    GONE = "gone"

    # Members are singletons, so identity hashes them; Enum's own hash runs Python code on
    # every transition-table lookup (two per move, several moves per bundle per hop).
    __hash__ = object.__hash__


class BundleEvent(enum.Enum):
    ROUTE = "route"  # a next hop with a link
    PARK = "park"  # no next hop with a link
    REROUTE = "reroute"  # a link came up, a contact opened, or the queued link went away
    TRANSMIT = "transmit"  # the link is up: handed to it
    CUSTODY = "custody"  # the link acknowledged it (RFC 9174 §5.2.3 XFER_ACK)
    UNCONFIRMED = "unconfirmed"  # written on a link that cannot acknowledge
    FAILED = "failed"  # the link lost it (session ended, refused)
    RELEASE = "release"  # retention over, or a status report says it arrived downstream
    RESEND = "resend"  # the no-ack session ended during retention: the next hop may lack it
    HAND = "hand"  # admitted and delivered to the application
    GIVE_BACK = "give-back"  # the application gave it back unacknowledged (offered again)
    ACKNOWLEDGE = "acknowledge"  # the application has it
    FINISH = "finish"  # an administrative record or revocation list, consumed
    REFUSE = "refuse"  # failed admission
    DISCARD = "discard"  # expired, hop limit, no known route (a deletion report if asked)
    EXPIRE = "expire"  # the store dropped it (its lifetime is over)

    __hash__ = object.__hash__  # as BundleState's


S, E = BundleState, BundleEvent

TRANSITIONS: Final[dict[BundleState, dict[BundleEvent, BundleState]]] = {
    S.UNROUTED: {E.ROUTE: S.QUEUED, E.PARK: S.PARKED, E.DISCARD: S.GONE, E.EXPIRE: S.GONE},
    S.PARKED: {E.REROUTE: S.UNROUTED, E.EXPIRE: S.GONE},
    S.QUEUED: {E.TRANSMIT: S.IN_FLIGHT, E.REROUTE: S.UNROUTED, E.DISCARD: S.GONE,
               E.EXPIRE: S.GONE},
    S.IN_FLIGHT: {E.CUSTODY: S.GONE, E.UNCONFIRMED: S.RETAINED, E.FAILED: S.UNROUTED,
                  E.EXPIRE: S.GONE},
    S.RETAINED: {E.RELEASE: S.GONE, E.RESEND: S.UNROUTED, E.EXPIRE: S.GONE},
    S.LOCAL: {E.HAND: S.HANDED, E.FINISH: S.GONE, E.REFUSE: S.GONE, E.EXPIRE: S.GONE},
    S.HANDED: {E.ACKNOWLEDGE: S.GONE, E.GIVE_BACK: S.LOCAL, E.EXPIRE: S.GONE},
    S.GONE: {},
}  # fmt: skip

del S, E


class AgentStateError(FleetwireError):
    """The agent tried a move its transition table does not allow (a bug, never the peer's)."""

    code = "agent-state"


def next_state(state: BundleState, event: BundleEvent) -> BundleState:
    """The state ``event`` leads to from ``state``; :class:`AgentStateError` if none."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise AgentStateError(f"no transition from {state.value} on {event.value}") from None
