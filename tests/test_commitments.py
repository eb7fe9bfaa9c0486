"""The commitment tracker (spec §6.2): its table, deadlines, reports, figures, and convergence."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import attrs
import pytest
from fleetwire.protocol.coordination.commitments import (
    SENDER,
    TRANSITIONS,
    Changed,
    CommitmentTracker,
    FetchOffer,
    Figures,
    Ignored,
    IgnoreReason,
    Raise,
    Send,
    Step,
    TrackerConfig,
    diagram,
)
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    Terms,
    content_id,
    decode_message,
    encode_message,
)
from hypothesis import event, given
from hypothesis import strategies as st

S = CommitmentState
T0 = 1_000_000
PROMISOR, PROMISEE, COORDINATOR = 1, 2, 9
CONFIG = TrackerConfig(grace_ms=1_000, resend_ms=100, max_resend_ms=800, retain_ms=50_000)


def counter() -> Iterator[int]:
    return itertools.count(1)


def tracker(node: int, config: TrackerConfig = CONFIG) -> CommitmentTracker:
    return CommitmentTracker(node, counter().__next__, config)


def terms(deadline: int = T0 + 10_000, promisor: int = PROMISOR, promisee: int = PROMISEE) -> Terms:
    return Terms(promisor, promisee, "deliver/refined-carbon", 120, "t", deadline)


def sends(actions: list[object]) -> list[Commitment]:
    return [a.message for a in actions if isinstance(a, Send)]


def raised(actions: list[object]) -> list[ExceptionReport]:
    return [a.report for a in actions if isinstance(a, Raise)]


def wire(message: Commitment) -> Commitment:
    """What the peer decodes: the v1 codec is the wire form, so every message must survive it."""
    decoded = decode_message(encode_message(message))
    assert isinstance(decoded, Commitment)
    return decoded


def test_happy_path_both_views_agree() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    (offer,) = sends(actions)
    assert content_id(offer) == cid and offer.terms == terms()
    assert Changed(cid, None, S.OFFERED) in b.receive(wire(offer), T0 + 5)
    (accept,) = sends(b.accept(cid, T0 + 10))
    assert (
        accept.state is S.ACCEPTED and accept.commitment == cid and cid in accept.header.references
    )
    assert a.receive(wire(accept), T0 + 20) == [Changed(cid, S.OFFERED, S.ACCEPTED)]
    (fulfil,) = sends(a.fulfil(cid, T0 + 30))
    b.receive(wire(fulfil), T0 + 40)
    assert a.state(cid) is b.state(cid) is S.FULFILLED
    assert a.figures(T0 + 50) == b.figures(T0 + 50) == {PROMISOR: Figures(fulfilled=1)}


def test_sequence_numbers_come_from_the_node_counter() -> None:
    numbers = itertools.count(40)
    a = CommitmentTracker(PROMISOR, numbers.__next__, CONFIG)
    _, first = a.offer(terms(), T0)
    _, second = a.offer(terms(deadline=T0 + 20_000), T0)
    assert [m.header.sequence for m in sends(first + second)] == [40, 41]


def test_accepted_commitment_past_its_deadline_is_broken_and_reported() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    a.receive(sends(b.accept(cid, T0 + 1))[0], T0 + 2)
    assert a.tick(T0 + 9_999) == []  # not yet
    actions = a.tick(T0 + 10_000)
    (report,) = raised(actions)
    (brk,) = sends(actions)
    assert report.affects == (cid,) and report.scope_id == PROMISOR and report.severity == 3
    assert brk.state is S.BROKEN and content_id(report) in brk.header.references
    decode_message(encode_message(report))  # a valid v1 exception report
    assert a.state(cid) is S.BROKEN and a.tick(T0 + 20_000) == []
    b.receive(wire(brk), T0 + 10_500)
    assert b.state(cid) is S.BROKEN
    assert a.figures(T0 + 20_000)[PROMISOR] == Figures(broken=1)


def test_explicit_break_names_the_commitment_in_the_report() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    a.receive(sends(b.accept(cid, T0 + 1))[0], T0 + 2)
    other = ExceptionReport(Header(PROMISOR, T0, 99), code=1, severity=4, scope=0, scope_id=1)
    with pytest.raises(LocalProtocolError, match="name the commitment"):
        a.break_(cid, T0 + 3, report=other)
    actions = a.break_(cid, T0 + 3, reason="thermal fault", code=1, severity=4)
    (report,) = raised(actions)
    assert (report.code, report.severity, report.affects) == (1, 4, (cid,))
    assert sends(actions)[0].reason == "thermal fault"


def test_unaccepted_offer_lapses_on_both_sides() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    (withdraw,) = sends(a.tick(T0 + 10_000))
    assert withdraw.state is S.WITHDRAWN and a.state(cid) is S.WITHDRAWN
    assert b.tick(T0 + 10_999) == []
    assert b.tick(T0 + 11_000) == [Changed(cid, S.OFFERED, S.WITHDRAWN)]
    with pytest.raises(LocalProtocolError):
        b.accept(cid, T0 + 11_001)


def test_accept_after_deadline_is_refused_locally() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    with pytest.raises(LocalProtocolError, match="deadline"):
        b.accept(cid, T0 + 10_000)


def test_accept_crossing_a_withdraw_converges_on_withdrawn() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    (withdraw,) = sends(a.withdraw(cid, T0 + 5, reason="changed plans"))
    (accept,) = sends(b.accept(cid, T0 + 5))  # crosses the withdraw in flight
    answer = a.receive(wire(accept), T0 + 10)
    assert answer == [Ignored(cid, IgnoreReason.NO_MOVE)]  # the withdraw is in flight already
    # Had it been lost, the promisee's re-sent accept is answered with it.
    assert sends(b.tick(T0 + 105)) == [accept]
    assert sends(a.receive(wire(accept), T0 + 110)) == [withdraw]
    b.receive(wire(withdraw), T0 + 11)
    assert a.state(cid) is b.state(cid) is S.WITHDRAWN


def test_an_accept_after_the_deadline_finds_the_offer_lapsed_whenever_tick_ran() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    (accept,) = sends(b.accept(cid, T0 + 9_999))  # in time by the promisee's clock
    answer = a.receive(wire(accept), T0 + 10_500)  # arrives after the deadline, no tick since
    (withdraw,) = sends(answer)
    assert withdraw.state is S.WITHDRAWN and a.state(cid) is S.WITHDRAWN
    b.receive(wire(withdraw), T0 + 10_600)
    assert b.state(cid) is S.WITHDRAWN


def test_steps_from_the_wrong_party_are_ignored() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    forged = Commitment(Header(PROMISEE, T0, 5), S.FULFILLED, commitment=cid)
    (ignored,) = b.receive(forged, T0 + 1)
    assert isinstance(ignored, Ignored) and b.state(cid) is S.OFFERED
    stranger = Commitment(Header(77, T0, 5), S.ACCEPTED, commitment=cid)
    assert isinstance(a.receive(stranger, T0 + 1)[0], Ignored) and a.state(cid) is S.OFFERED
    bad_offer = Commitment(Header(77, T0, 5), S.OFFERED, terms=terms())  # issuer is not promisor
    assert isinstance(b.receive(bad_offer, T0)[0], Ignored)


def test_steps_after_a_final_step_are_ignored() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    a.receive(sends(b.accept(cid, T0 + 1))[0], T0 + 2)
    (fulfil,) = sends(a.fulfil(cid, T0 + 3))
    b.receive(fulfil, T0 + 4)
    late_break = Commitment(Header(PROMISOR, T0 + 5, 50), S.BROKEN, commitment=cid)
    assert isinstance(b.receive(late_break, T0 + 6)[0], Ignored)
    assert b.state(cid) is S.FULFILLED
    with pytest.raises(LocalProtocolError):
        a.break_(cid, T0 + 7)


def test_local_steps_follow_the_table() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    with pytest.raises(LocalProtocolError, match="offered"):
        a.fulfil(cid, T0 + 1)  # not accepted yet
    with pytest.raises(LocalProtocolError, match="promisee takes"):
        a.accept(cid, T0 + 1)
    with pytest.raises(LocalProtocolError, match="promisor takes"):
        b.withdraw(cid, T0 + 1)
    with pytest.raises(LocalProtocolError, match="cannot offer"):
        b.offer(terms(), T0)
    with pytest.raises(LocalProtocolError, match="future"):
        a.offer(terms(deadline=T0), T0)


def test_a_step_before_its_offer_waits_for_it() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    obs = tracker(COORDINATOR, TrackerConfig(grace_ms=1_000, observe_all=True))
    cid, actions = a.offer(terms(), T0)
    offer = sends(actions)[0]
    b.receive(offer, T0)
    accept = sends(b.accept(cid, T0 + 1))[0]
    a.receive(accept, T0 + 2)
    fulfil = sends(a.fulfil(cid, T0 + 3))[0]
    # The observer gets the steps in reverse order; it asks for the offer once.
    assert obs.receive(fulfil, T0 + 4) == [FetchOffer(cid, PROMISOR)]
    assert obs.receive(accept, T0 + 5) == []
    assert obs.state(cid) is None
    # The fetch may be lost too: it is asked again, with backoff, until the offer comes.
    assert obs.next_deadline() == T0 + 4 + 10_000
    assert obs.tick(T0 + 10_003) == []
    assert obs.tick(T0 + 10_004) == [FetchOffer(cid, PROMISOR)]
    assert obs.tick(T0 + 30_003) == [] and obs.tick(T0 + 30_004) == [FetchOffer(cid, PROMISOR)]
    obs.receive(offer, T0 + 30_005)
    assert obs.state(cid) is S.FULFILLED
    assert obs.tick(T0 + 10**9) == [] and obs._fetch == {}


def test_an_observer_that_missed_the_accept_keeps_the_commitment_open_and_late() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    obs = tracker(COORDINATOR, attrs.evolve(CONFIG, observe_all=True))
    cid, actions = a.offer(terms(), T0)
    obs.receive(sends(actions)[0], T0)
    b.receive(sends(actions)[0], T0)
    a.receive(sends(b.accept(cid, T0 + 1))[0], T0 + 2)  # the watcher misses the accept
    (fulfil,) = sends(a.fulfil(cid, T0 + 3))  # and, for now, the fulfilment
    # Past the deadline it cannot tell "nobody accepted" from "I missed it": open, and late.
    assert obs.tick(T0 + 20_000) == [] and obs.state(cid) is S.OFFERED
    assert obs.figures(T0 + 20_000) == {PROMISOR: Figures(late=1)}
    obs.receive(fulfil, T0 + 20_001)
    assert obs.state(cid) is S.FULFILLED


def test_pending_steps_are_bounded() -> None:
    b = tracker(PROMISEE, TrackerConfig(max_pending=3))
    cids = [ContentId.of(bytes([i])) for i in range(10)]
    for i, cid in enumerate(cids):
        b.receive(Commitment(Header(PROMISOR, T0, i), S.FULFILLED, commitment=cid), T0)
    assert len(b._pending) == 3 and list(b._pending) == cids[-3:]
    assert list(b._fetch) == cids[-3:]  # the offers it asks for are bounded with them


def test_offers_beyond_the_limit_are_refused() -> None:
    a = tracker(PROMISOR)
    b = tracker(PROMISEE, TrackerConfig(max_commitments=2))
    results = []
    for i in range(3):
        _, actions = a.offer(terms(deadline=T0 + 10_000 + i), T0)
        results.append(b.receive(sends(actions)[0], T0))
    assert isinstance(results[2][0], Ignored) and len(b.commitments()) == 2


def test_promisee_reports_an_overdue_commitment_once_and_counts_it_late() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    b.accept(cid, T0 + 1)  # the accept is lost and the promisor is silent
    assert b.figures(T0 + 10_999) == {PROMISOR: Figures(open=1)}
    (report,) = raised(b.tick(T0 + 11_000))
    assert report.affects == (cid,) and report.scope_id == PROMISOR
    assert raised(b.tick(T0 + 12_000)) == []
    assert b.figures(T0 + 12_000) == {PROMISOR: Figures(late=1)}
    assert b.cell_figures(T0 + 12_000, {PROMISOR: 4}) == {4: Figures(late=1)}


def test_unsettled_steps_are_resent_with_backoff_and_stop_when_answered() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    offer = sends(actions)[0]
    times = []
    now = T0
    while now < T0 + 2_000:
        now += 10
        if sends(a.tick(now)) == [offer]:
            times.append(now - T0)
    assert times == [100, 300, 700, 1500]  # 100, 200, 400, 800 (capped) apart
    b.receive(offer, now)
    a.receive(sends(b.accept(cid, now))[0], now)
    assert sends(a.tick(now + 5_000)) == []  # accepted: the offer evidently arrived
    assert a.next_deadline() == T0 + 10_000  # only the deadline is left


def test_settled_commitments_are_forgotten_but_still_counted() -> None:
    a, b = tracker(PROMISOR), tracker(PROMISEE)
    cid, actions = a.offer(terms(), T0)
    b.receive(sends(actions)[0], T0)
    a.receive(sends(b.accept(cid, T0 + 1))[0], T0 + 2)
    a.fulfil(cid, T0 + 3)
    a.tick(T0 + 3 + 50_000)
    assert a.state(cid) is None and a.next_deadline() is None
    assert a.figures(T0 + 60_000) == {PROMISOR: Figures(fulfilled=1)}


def test_the_table_is_the_spec() -> None:
    final = [s for s, moves in TRANSITIONS.items() if not moves]
    assert set(final) == {S.FULFILLED, S.BROKEN, S.WITHDRAWN}
    assert set(SENDER) == {Step.ACCEPT, Step.FULFIL, Step.BREAK, Step.WITHDRAW}
    assert "offered --> accepted: accept" in diagram()


# --- convergence over a lossy, duplicating, reordering channel ---------------------------


class Harness:
    """Two trackers that offer to each other, the messages in flight between them, and a cell
    coordinator that watches whatever copies reach it (in any order, any number of times)."""

    def __init__(self) -> None:
        keep = attrs.evolve(CONFIG, retain_ms=10**12)  # nothing forgotten while we compare
        self.nodes = {PROMISOR: tracker(PROMISOR, keep), PROMISEE: tracker(PROMISEE, keep)}
        self.flight: list[tuple[int, Commitment]] = []
        self.now = T0
        self.known: list[ContentId] = []
        self.observer = tracker(COORDINATOR, attrs.evolve(keep, observe_all=True))
        self.sent: list[Commitment] = []

    def act(self, actions: list[object], source: int) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.flight.append((action.to, action.message))
                self.sent.append(action.message)
            elif isinstance(action, FetchOffer):
                offer = self.nodes[action.source].offer_message(action.commitment)
                if offer is not None:  # the source answers a fetch from its store
                    self.flight.append((source, offer))

    def deliver(self, index: int, keep: bool, watched: bool = False) -> None:
        to, message = self.flight[index] if keep else self.flight.pop(index)
        self.act(self.nodes[to].receive(wire(message), self.now), to)
        if watched:  # the cell coordinator gets a copy of this one too
            self.observer.receive(wire(message), self.now)

    def tick(self) -> None:
        for node, t in self.nodes.items():
            self.act(t.tick(self.now), node)
        self.observer.tick(self.now)  # it sends nothing; its fetches go unanswered here


operations = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.sampled_from([PROMISOR, PROMISEE]), st.integers(50, 3_000)),
        st.tuples(st.sampled_from(["accept", "fulfil", "withdraw", "break"]), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(1, 1_500)),
        st.tuples(
            st.sampled_from(["deliver", "duplicate", "drop"]), st.integers(0, 50), st.booleans()
        ),
        st.tuples(st.just("observe"), st.integers(0, 50)),
    ),
    min_size=5,
    max_size=80,
)


@given(operations)  # 200 examples by default, many more with --soak
def test_two_views_agree_once_messages_flow(ops: list[tuple[object, ...]]) -> None:
    h = Harness()
    for op in ops:
        kind = op[0]
        if kind == "offer":
            node, ahead = op[1], op[2]
            assert isinstance(node, int) and isinstance(ahead, int)
            other = PROMISEE if node == PROMISOR else PROMISOR
            cid, actions = h.nodes[node].offer(terms(h.now + ahead, node, other), h.now)
            h.known.append(cid)
            h.act(actions, node)
        elif kind in ("accept", "fulfil", "withdraw", "break") and h.known:
            assert isinstance(op[1], int)
            cid = h.known[op[1] % len(h.known)]
            for node, t in h.nodes.items():
                call = {
                    "accept": t.accept,
                    "fulfil": t.fulfil,
                    "withdraw": t.withdraw,
                    "break": t.break_,
                }
                try:
                    h.act(call[str(kind)](cid, h.now), node)
                except LocalProtocolError:
                    pass  # not this party's step, or not from this state: the table refused it
        elif kind == "advance":
            assert isinstance(op[1], int)
            h.now += op[1]
            h.tick()
        elif kind == "observe" and h.sent:
            assert isinstance(op[1], int)
            h.observer.receive(wire(h.sent[op[1] % len(h.sent)]), h.now)
        elif h.flight and kind != "observe":
            assert isinstance(op[1], int)
            index = op[1] % len(h.flight)
            if kind == "drop":
                h.flight.pop(index)
            else:
                h.deliver(index, keep=kind == "duplicate", watched=bool(op[2]))
    # Now messages flow: nothing is lost any more, and time passes beyond every deadline.
    for _ in range(40):
        h.now += CONFIG.max_resend_ms
        h.tick()
        while h.flight:
            h.deliver(0, keep=False)
    a, b = (h.nodes[n].commitments() for n in (PROMISOR, PROMISEE))
    for cid in h.known:
        if cid in a and cid in b:
            assert a[cid] is b[cid], cid
            assert a[cid] in (S.FULFILLED, S.BROKEN, S.WITHDRAWN)
        else:
            # Only an offer that never reached its promisee can be known to one side alone,
            # and an offer never accepted lapses: withdrawn.
            assert (a.get(cid) or b.get(cid)) is S.WITHDRAWN
    # The watcher may have missed steps, but a final state it holds is the parties' one.
    for cid, state in h.observer.commitments().items():
        watched = h.observer.terms(cid)
        assert watched is not None
        if state in (S.FULFILLED, S.BROKEN, S.WITHDRAWN):
            assert h.nodes[watched.promisor].state(cid) is state


# --- hostile but well-formed input --------------------------------------------------------


NODES = st.sampled_from([PROMISOR, PROMISEE, COORDINATOR, 77])


@st.composite
def commitment_streams(draw: st.DrawFn) -> list[Commitment]:
    """Well-formed offers and steps among a few nodes, mostly from the right party and about
    those offers, sometimes from anyone about anything."""

    def issuer(right: int) -> int:
        return right if draw(st.booleans()) else draw(NODES)

    offers = []
    for _ in range(draw(st.integers(1, 8))):
        terms = Terms(draw(NODES), draw(NODES), "x", 1, "t", draw(st.integers(0, 2 * 10**7)))
        header = Header(
            issuer(terms.promisor), draw(st.integers(0, 10**7)), draw(st.integers(0, 50))
        )
        offers.append(Commitment(header, S.OFFERED, terms=terms))
    stream: list[Commitment] = []
    for _ in range(draw(st.integers(0, 30))):
        offer = draw(st.sampled_from(offers))
        if draw(st.integers(0, 3)) == 0:
            stream.append(offer)
            continue
        assert offer.terms is not None
        state = draw(st.sampled_from([S.ACCEPTED, S.FULFILLED, S.BROKEN, S.WITHDRAWN]))
        right = offer.terms.promisee if state is S.ACCEPTED else offer.terms.promisor
        header = Header(issuer(right), draw(st.integers(0, 10**7)), draw(st.integers(0, 50)))
        target = content_id(offer) if draw(st.integers(0, 5)) else ContentId.of(b"no such offer")
        stream.append(Commitment(header, state, commitment=target))
    return stream


@given(commitment_streams(), st.lists(st.integers(0, 10**6), max_size=60))
def test_any_well_formed_steps_leave_the_tracker_bounded_and_consistent(
    stream: list[Commitment], times: list[int]
) -> None:
    """Signed messages from anyone (they are well-formed, the rest is up to their writers)."""
    config = attrs.evolve(CONFIG, max_commitments=5, max_pending=4, observe_all=True)
    t = tracker(PROMISEE, config)
    now = T0
    moved = 0
    for i, message in enumerate(stream):
        now += times[i] if i < len(times) else 1
        for action in t.receive(message, now) + t.tick(now):
            if isinstance(action, Changed) and action.old is not None:
                assert action.new in TRANSITIONS[action.old].values()
                moved += 1
    event(f"steps applied: {min(moved, 3)}{'+' if moved >= 3 else ''}")
    assert len(t.commitments()) <= 5 and len(t._pending) <= 4 and len(t._fetch) <= 4
    for cid in t.commitments():
        offer = t.offer_message(cid)
        assert offer is not None and content_id(offer) == cid
