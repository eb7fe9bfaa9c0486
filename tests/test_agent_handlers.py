"""Roles attached to the agent as sans-IO handlers (protocol/agent/handlers.py)."""

from __future__ import annotations

from fleetwire.protocol.agent.actions import Handled, Sent, WakeAt
from fleetwire.protocol.agent.handlers import Handler, Outgoing
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.messages import (
    ExceptionCode,
    ExceptionReport,
    Family,
    Header,
    Scope,
)
from fleetwire.runtime.sim.engine import LinkModel, Simulator

from .fleet import T0
from .test_sim import HOUR, A, B, C, chain, claim


class Echo(Handler):
    """Answers each lease message with an exception report to its issuer, and once more a
    second later (a deadline the agent must keep among its timers)."""

    families = frozenset({Family.LEASE})

    def __init__(self, node: int) -> None:
        super().__init__()
        self.node = node
        self.seen: list[tuple[int, SignedMessage]] = []
        self.due: tuple[int, int] | None = None  # (at, to)
        self.ticks: list[int] = []

    def _report(self, to: int, now: int) -> Outgoing:
        header = Header(issuer=self.node, issued_at=now, sequence=self.next_sequence())
        report = ExceptionReport(header=header, code=ExceptionCode.THERMAL, severity=1,
                                 scope=Scope.NODE, scope_id=to)  # fmt: skip
        return Outgoing(report, to)

    def on_message(self, signed: SignedMessage, now: int) -> list[Outgoing]:
        self.seen.append((now, signed))
        to = signed.message.header.issuer
        self.due = (now + 1_000, to)
        return [self._report(to, now)]

    def on_tick(self, now: int) -> list[Outgoing]:
        self.ticks.append(now)
        if self.due is None or now < self.due[0]:
            return []
        to, self.due = self.due[1], None
        return [self._report(to, now)]

    def deadline(self) -> int | None:
        return None if self.due is None else self.due[0]


def test_a_handler_takes_its_family_answers_and_keeps_its_deadline() -> None:
    sim, got = chain(LinkModel(owlt_ms=100), LinkModel(owlt_ms=100))
    echo = Echo(C)
    sim.attach(C, echo)
    handled: list[Handled] = []
    sent_by_c: list[Sent] = []

    def on_sent(sim: Simulator, node: int, sent: Sent) -> None:
        if node == C:
            sent_by_c.append(sent)

    sim.on_sent = on_sent
    # Every Handled action goes through the simulator's handler for its type (the event
    # loop runs the agents' actions inline, not through a method a spy could replace).
    original = sim._handlers[Handled]

    def spy(node, action, came):  # type: ignore[no-untyped-def]
        handled.append(action)
        original(node, action, came)

    sim._handlers[Handled] = spy
    sim.send_at(T0 + 10, A, C, claim(1))
    sim.run(T0 + HOUR)
    # C's application never saw the claim: the role took it, and C acknowledged it.
    assert [d.message.message for _, node, d in got if node == C] == []
    assert len(echo.seen) == 1 and echo.seen[0][1].message == claim(1)
    assert [h.message.message for h in handled] == [claim(1)]
    assert sim.agents[C].held_state(handled[0].delivery) is None
    assert sim.agents[C].stats.acknowledged == 1
    # Its answer and the one its deadline called for reached A, a second apart.
    answers = [(at, d.message.message) for at, node, d in got if node == A]
    assert len(answers) == 2 and all(isinstance(m, ExceptionReport) for _, m in answers)
    assert answers[1][0] - answers[0][0] == 1_000
    assert echo.ticks and echo.ticks[-1] == echo.seen[0][0] + 1_000
    # The answers are signed by C and numbered from C's one counter, growing.
    sequences = [s.message.message.header.sequence for s in sent_by_c]
    assert len(sequences) == 2 and sequences[0] < sequences[1]
    assert all(s.message.kid == sim.agents[C].config.key.kid for s in sent_by_c)


def test_other_families_still_reach_the_application() -> None:
    sim, got = chain(LinkModel(owlt_ms=100), LinkModel(owlt_ms=100))
    echo = Echo(C)
    sim.attach(C, echo)
    report = ExceptionReport(
        header=Header(issuer=A, issued_at=T0, sequence=5), code=ExceptionCode.THERMAL,
        severity=2, scope=Scope.NODE, scope_id=A,
    )  # fmt: skip
    sim.send_at(T0 + 10, A, C, report)
    sim.run(T0 + HOUR)
    assert [d.message.message for _, node, d in got if node == C] == [report]
    assert echo.seen == []


def test_an_agent_wakes_for_an_attached_roles_deadline() -> None:
    from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
    from fleetwire.protocol.agent.agent_store import MemoryAgentStore

    from .fleet import node_key, trust_for

    agent = BundleAgent(AgentConfig(node=B, key=node_key(B), trust=trust_for([A, B])),
                        MemoryAgentStore())  # fmt: skip
    agent.start(T0)
    echo = Echo(B)
    echo.due = (T0 + 5_000, A)
    actions = agent.attach(echo, T0)
    assert WakeAt(T0 + 5_000) in actions
    assert not [a for a in agent.poll(T0 + 4_999) if isinstance(a, Sent)]
    sent = [a for a in agent.poll(T0 + 5_000) if isinstance(a, Sent)]
    assert len(sent) == 1 and isinstance(sent[0].message.message, ExceptionReport)
    assert echo.ticks == [T0 + 5_000]
