"""The agent's wakes: a WakeAt only when it is news (protocol/agent/actions.py, ``WakeAt``).

The agent used to end every batch with the wake for its earliest timer; it now names a wake
only when it is earlier than the one it named since the last ``poll``, and always after a
``poll``. The property here: a driver keeping the earliest wake it was given (the simulator)
or the latest one (the Trio node, the embedding example) polls the agent at exactly the times
a driver of the always-naming agent did, and the two agents do exactly the same otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetwire.protocol.agent.actions import Action, Deliver, Transmit, WakeAt
from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.agent.contacts import Contact, ContactPlan
from fleetwire.protocol.bpv7 import encode_bundle
from fleetwire.protocol.envelope import seal
from fleetwire.protocol.messages import Header, LeaseClaim
from hypothesis import given
from hypothesis import strategies as st

from .fleet import T0, node_key, trust_for

A, B, C, D = 1, 2, 3, 4
MINUTE = 60_000


class AlwaysWaking(BundleAgent):
    """The former contract: every batch names the earliest wake (the agent forgets, before
    each batch's end, that it named one already)."""

    def _finish(self, now: int, actions: list[Action]) -> list[Action]:
        self._wake_sent = None
        return super()._finish(now, actions)


def rounded(at: int) -> int:
    """An expiry as the agent wakes for it (rounded up to the granularity)."""
    return -(-at // MINUTE) * MINUTE


def make(kind: type[BundleAgent]) -> BundleAgent:
    plan = ContactPlan([Contact(A, D, T0 + 5 * MINUTE, T0 + 9 * MINUTE, 1_000_000, 50)])
    config = AgentConfig(
        node=A, key=node_key(A), trust=trust_for([A, B, C]), static_routes={C: B},
        contact_plan=plan, retain_unconfirmed_ms=20_000, refused_retry_ms=30_000,
        expiry_granularity_ms=MINUTE,
    )  # fmt: skip
    made = kind(config, MemoryAgentStore())
    made.start(T0)
    return made


def incoming(sequence: int, now: int, lifetime: int) -> bytes:
    """A lease claim from C to A, carried in over B."""
    header = Header(issuer=C, issued_at=now, sequence=sequence)
    signed = seal(LeaseClaim(header=header, resource="dock/1", term_ms=MINUTE), node_key(C))
    return encode_bundle(message_bundle(
        signed.envelope, source=C, destination=A, created_at=now, sequence=sequence,
        lifetime_ms=lifetime,
    ))  # fmt: skip


class Drivers:
    """The wake each kind of driver holds for one agent."""

    def __init__(self) -> None:
        self.earliest: int | None = None  # keeps the earliest (the simulator)
        self.latest: int | None = None  # keeps the latest (the Trio node, the example)

    def fired(self) -> None:
        self.earliest = self.latest = None

    def take(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, WakeAt):
                if self.earliest is None or action.at < self.earliest:
                    self.earliest = action.at
                self.latest = action.at


OPS = st.one_of(
    st.tuples(st.just("send"), st.sampled_from([B, C, D]),
              st.sampled_from([MINUTE, 2 * MINUTE + 1, 60 * MINUTE])),
    st.tuples(st.just("up"), st.booleans(), st.just(0)),
    st.tuples(st.just("down"), st.just(False), st.just(0)),
    st.tuples(st.just("ok"), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("fail"), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("receive"), st.booleans(), st.sampled_from([MINUTE, 30 * MINUTE])),
)
STEPS = st.lists(st.tuples(st.integers(0, 45_000), OPS), max_size=25)


def run(agent: BundleAgent, op: tuple[str, object, int], now: int, state: dict[str, int],
        transmits: list[Transmit]) -> list[Action]:  # fmt: skip
    kind, flag, number = op
    if kind == "send":
        header = Header(issuer=A, issued_at=now, sequence=agent.next_message_sequence(now))
        claim = LeaseClaim(header=header, resource="dock/7", term_ms=MINUTE)
        return agent.send(claim, int(flag), now, lifetime_ms=number)  # type: ignore[call-overload]
    if kind == "up":
        return agent.link_up(B, now, confirms=bool(flag))
    if kind == "down":
        return agent.link_down(B, now)
    if kind in ("ok", "fail"):
        if not transmits:
            return []
        sent = transmits.pop(number % len(transmits))
        if kind == "ok":
            return agent.transmitted(sent.link, sent.bundle, now)
        return agent.transmit_failed(sent.link, sent.bundle, now, refused=bool(flag))
    state["sequence"] += 1
    actions = agent.receive(incoming(state["sequence"], now, number), B, now)
    if flag:  # the application takes it at once (else it stays handed over)
        for action in list(actions):
            if isinstance(action, Deliver):
                actions += agent.acknowledge(action.delivery, now)
    return actions


def others(actions: Sequence[Action]) -> list[Action]:
    return [action for action in actions if not isinstance(action, WakeAt)]


@given(STEPS)
def test_a_driver_wakes_the_agent_when_the_always_waking_agent_would_have(
    steps: list[tuple[int, tuple[str, object, int]]],
) -> None:
    new, old = make(BundleAgent), make(AlwaysWaking)
    new_wake, old_wake = Drivers(), Drivers()
    new_tx: list[Transmit] = []
    old_tx: list[Transmit] = []
    new_state, old_state = {"sequence": 0}, {"sequence": 0}
    now = T0
    polls = 0

    def batch(new_actions: list[Action], old_actions: list[Action]) -> None:
        assert others(new_actions) == others(old_actions)
        new_wake.take(new_actions)
        old_wake.take(old_actions)
        new_tx.extend(a for a in new_actions if isinstance(a, Transmit))
        old_tx.extend(a for a in old_actions if isinstance(a, Transmit))
        # Both kinds of driver of the new agent hold the wake the old agent's driver holds.
        assert new_wake.earliest == new_wake.latest == old_wake.earliest

    for dt, op in [*steps, (4 * 60 * MINUTE, ("down", False, 0))]:
        now += dt
        while old_wake.earliest is not None and old_wake.earliest <= now:
            at = old_wake.earliest
            new_wake.fired()
            old_wake.fired()
            polls += 1
            batch(new.poll(at), old.poll(at))
        batch(run(new, op, now, new_state, new_tx), run(old, op, now, old_state, old_tx))
    assert new.stats == old.stats
    assert new._held.keys() == old._held.keys() and polls >= 0


def test_the_wake_is_named_once_then_only_when_earlier_or_after_a_poll() -> None:
    agent = make(BundleAgent)
    header = Header(issuer=A, issued_at=T0, sequence=agent.next_message_sequence(T0))
    first = agent.send(LeaseClaim(header=header, resource="r", term_ms=MINUTE), C, T0,
                       lifetime_ms=10 * MINUTE)  # fmt: skip
    assert [a for a in first if isinstance(a, WakeAt)] == [WakeAt(rounded(T0 + 10 * MINUTE))]
    # A later expiry: the wake held already comes first, nothing to say.
    header = Header(issuer=A, issued_at=T0, sequence=agent.next_message_sequence(T0))
    later = agent.send(LeaseClaim(header=header, resource="r", term_ms=MINUTE), C, T0 + 1,
                       lifetime_ms=20 * MINUTE)  # fmt: skip
    assert not [a for a in later if isinstance(a, WakeAt)]
    # An earlier one (a parked bundle's contact opens first) is named.
    header = Header(issuer=A, issued_at=T0, sequence=agent.next_message_sequence(T0))
    earlier = agent.send(LeaseClaim(header=header, resource="r", term_ms=MINUTE), D, T0 + 2)
    assert [a for a in earlier if isinstance(a, WakeAt)] == [WakeAt(T0 + 5 * MINUTE)]
    # A poll consumes the wake: its batch names the next one even if nothing changed.
    assert [a for a in agent.poll(T0 + 3) if isinstance(a, WakeAt)] == [WakeAt(T0 + 5 * MINUTE)]
    assert [a for a in agent.poll(T0 + 5 * MINUTE) if isinstance(a, WakeAt)] == [
        WakeAt(rounded(T0 + 10 * MINUTE))  # the contact was looked at: the first expiry
    ]
