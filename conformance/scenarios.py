"""Behaviour cases: scripted scenarios for the lease authority and holder, commitments and
escalation (spec/v1/protocol.md §6.2–§6.4), judged from what the machine sends.

Theory of operation
-------------------
Each case sends one or more ``scenario`` requests (spec/README.md, "Scenarios"): a machine, its
configuration and a script of steps at given times. The machine's answer — per step, the
messages it sends (as bytes) and its answers to queries — is decoded with fleetwire's own reader
and judged against the rule the case quotes. The lease cases also hand the grants to the
invariant checker (:mod:`fleetwire.protocol.coordination.invariants`): each holder is taken to
use its grant from when it was sent until ``expires_at - max_drift``, as §6.4 allows it, and
the checker must find no two holders using the resource at one instant.

Where a script needs what the machine wrote (the token of a grant, to release it; the content id
of a claim, to grant it), the case runs the scenario's prefix first, reads the value, and runs
the whole script again from the start: a scenario is a pure function of its script (time is
passed in; spec/README.md), so the prefix runs the same the second time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fleetwire.protocol.coordination import invariants as inv
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseClaim,
    LeaseExpiry,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    LeaseRevoke,
    Message,
    Scope,
    Terms,
    decode_message,
    encode_message,
)

from .cases import Case, Check, Context, Level, Status, brief
from .vectors import AdapterFault

__all__ = ["behaviour_cases"]

T0 = 817_000_000_000  # a DTN time (ms), as in the vectors
DRIFT = 1_000
TERM = 60_000
AUTHORITY, A, B = 1, 21, 22
RESOURCE = "dock/3"
AUTHORITY_CONFIG = {"node": AUTHORITY, "max_drift_ms": DRIFT, "max_term_ms": TERM, "min_term_ms": 0}
HOLDER_CONFIG = {"node": A, "authority": AUTHORITY, "max_drift_ms": DRIFT,
                 "renew_lead_ms": 5_000, "retry_ms": 2_000, "min_use_ms": 1}  # fmt: skip



def _hex(message: Message) -> str:
    return encode_message(message).hex()


def _cid(message: Message) -> ContentId:
    return ContentId.of(encode_message(message))


def _header(issuer: int, at: int, sequence: int, *refs: ContentId) -> Header:
    return Header(issuer=issuer, issued_at=at, sequence=sequence, references=refs)


def claim(holder: int, at: int, sequence: int = 1, term: int = TERM) -> LeaseClaim:
    return LeaseClaim(_header(holder, at, sequence), RESOURCE, term, 0)


class _Run:
    """One scenario run: its request, and per step the decoded sends and query answers."""

    def __init__(self, context: Context, machine: str, config: dict[str, Any],
                 steps: list[dict[str, Any]]) -> None:  # fmt: skip
        self.request = {"op": "scenario", "machine": machine, "config": config, "steps": steps}
        self.steps = steps
        self.error: str | None = None
        self.outputs: list[list[dict[str, Any]]] = []
        answer = context.ask(self.request)
        if isinstance(answer, AdapterFault):
            self.error = answer.reason
        elif not answer.get("ok"):
            self.error = f"refused the scenario: {answer.get('code')} {answer.get('detail', '')}"
        elif not isinstance(answer.get("outputs"), list) or len(answer["outputs"]) != len(steps):
            self.error = "an answer without one output list per step"
        else:
            self.outputs = answer["outputs"]

    def sends(self) -> Iterator[tuple[int, int, Message, ContentId, int | None]]:
        """(step index, time, message, its content id, destination) of every message sent."""
        for index, (step, output) in enumerate(zip(self.steps, self.outputs, strict=True)):
            for item in output:
                if not isinstance(item, dict) or "send" not in item:
                    continue
                data = bytes.fromhex(item["send"])
                try:
                    message = decode_message(data)
                except FleetwireError as exc:
                    raise _Unreadable(f"step {index} sent bytes fleetwire refuses: {exc}") from exc
                yield index, int(step["at"]), message, ContentId.of(data), item.get("to")

    def answers(self, key: str) -> list[Any]:
        return [item.get(key) for output in self.outputs for item in output
                if isinstance(item, dict) and key in item]  # fmt: skip

    def check(self, label: str, expected: str, judge: Callable[[_Run], str | None]) -> Check:
        """Judge the run: ``judge`` returns None when it holds, else what went wrong."""
        if self.error is not None:
            return Check(label, brief(self.request), expected, self.error, Status.FAIL)
        try:
            wrong = judge(self)
        except _Unreadable as exc:
            wrong = str(exc)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            wrong = f"an answer the suite cannot read: {exc!r:.200}"
        got = "as expected" if wrong is None else wrong
        return Check(label, self.request, expected, got, Status.PASS if wrong is None else Status.FAIL)


class _Unreadable(Exception):
    pass


def _grants(run: _Run) -> list[tuple[int, LeaseGrant, ContentId]]:
    return [(at, m, cid) for _i, at, m, cid, _to in run.sends() if isinstance(m, LeaseGrant)]


# --- lease authority (§6.4) ------------------------------------------------------------------


def _first_grant(context: Context) -> tuple[LeaseGrant, ContentId] | None:
    run = _Run(context, "lease-authority", AUTHORITY_CONFIG,
               [{"at": T0, "receive": _hex(claim(A, T0))}])  # fmt: skip
    if run.error is not None:
        return None
    try:
        grants = _grants(run)
    except _Unreadable:
        return None
    return (grants[0][1], grants[0][2]) if grants else None


def _case_grant(context: Context) -> list[Check]:
    first = claim(A, T0)
    run = _Run(context, "lease-authority", AUTHORITY_CONFIG, [{"at": T0, "receive": _hex(first)}])

    def judge(run: _Run) -> str | None:
        grants = _grants(run)
        if len(grants) != 1:
            return f"{len(grants)} grants sent"
        _at, g, _cid2 = grants[0]
        if g.holder != A or g.resource != RESOURCE:
            return f"a grant of {g.resource!r} to {g.holder}"
        if g.claim != _cid(first):
            return "the grant names another claim"
        if not T0 < g.expires_at <= T0 + TERM:
            return f"expires_at {g.expires_at - T0:+} ms from the claim (term {TERM})"
        return None

    return [run.check("claim on a free resource", "one grant to the claimant naming its claim, "
                      f"expiring within the term ({TERM} ms)", judge)]  # fmt: skip


def _case_exclusion(context: Context) -> list[Check]:
    expires = T0 + TERM  # the authority SHOULD set issued_at + term_ms; checked against its own below
    at = [T0, T0 + 1_000, expires - 1, expires, expires + DRIFT - 1, expires + DRIFT, expires + DRIFT + 1]
    steps: list[dict[str, Any]] = [
        {"at": at[0], "receive": _hex(claim(A, at[0]))},
        {"at": at[1], "receive": _hex(claim(B, at[1]))},
        *({"at": t, "tick": True} for t in at[2:]),
    ]
    run = _Run(context, "lease-authority", AUTHORITY_CONFIG, steps)

    def judge(run: _Run) -> str | None:
        grants = _grants(run)
        trace: list[inv.Record] = []
        for sent_at, g, _cid2 in grants:
            trace.append(inv.Granted(g.resource, g.holder, g.fencing_token, g.expires_at,
                                     AUTHORITY, sent_at, sent_at))  # fmt: skip
            if sent_at < g.expires_at - DRIFT:
                trace.append(inv.Used(g.resource, g.holder, g.fencing_token, sent_at,
                                      g.expires_at - DRIFT, sent_at))  # fmt: skip
        report = inv.check(trace)
        if not report.ok:
            return f"the invariant checker: {report.violation}"
        to_a = [(t, g) for t, g, _ in grants if g.holder == A]
        if not to_a:
            return "no grant to the first claimant"
        end = max(g.expires_at for _t, g in to_a)
        early = [(t, g) for t, g, _ in grants if g.holder == B and t < end + DRIFT]
        if early:
            return (f"granted to {B} at {early[0][0] - end:+} ms from the first grant's expires_at, "
                    f"before expires_at + max_drift ({DRIFT} ms)")
        return None

    return [run.check("two claimants, no release",
                      "the second claimant is not granted before the first grant's expires_at + "
                      "max_drift; the invariant checker finds no two holders at one instant", judge)]  # fmt: skip


def _case_lapse(context: Context) -> list[Check]:
    expires = T0 + TERM
    steps: list[dict[str, Any]] = [
        {"at": T0, "receive": _hex(claim(A, T0))},
        {"at": T0 + 1_000, "receive": _hex(claim(B, T0 + 1_000))},
        {"at": expires + DRIFT + 1, "tick": True},
        {"at": expires + DRIFT + 10_000, "tick": True},
    ]
    run = _Run(context, "lease-authority", AUTHORITY_CONFIG, steps)

    def judge(run: _Run) -> str | None:
        if not any(g.holder == B for _t, g, _c in _grants(run)):
            return ("the waiting claimant was never granted: the first grant did not end "
                    f"(ticks up to {DRIFT + 10_000} ms past its expires_at)")
        return None

    return [run.check("a grant that is neither renewed nor released",
                      "the grant ends at its expires_at: the queued claimant is granted once "
                      "expires_at + max_drift has passed", judge)]  # fmt: skip


def _case_expiry_notice(context: Context) -> list[Check]:
    expires = T0 + TERM
    steps: list[dict[str, Any]] = [
        {"at": T0, "receive": _hex(claim(A, T0))},
        {"at": expires + 1, "tick": True},
    ]
    run = _Run(context, "lease-authority", AUTHORITY_CONFIG, steps)

    def judge(run: _Run) -> str | None:
        notices = [m for _i, _t, m, _c, _to in run.sends() if isinstance(m, LeaseExpiry)]
        if not notices or notices[0].holder != A:
            return "no expiry notice to the holder"
        return None

    return [run.check("a grant lapses", "an expiry notice to the holder", judge)]


def _case_tokens_grow(context: Context) -> list[Check]:
    first = _first_grant(context)
    label, expected = "release, then another claimant", "the next grant's token is greater"
    if first is None:
        return [Check(label, {"op": "scenario"}, expected, "no grant to start from", Status.FAIL)]
    grant, gid = first
    release = LeaseRelease(_header(A, T0 + 5_000, 2, gid), RESOURCE, grant.fencing_token, gid)
    steps = [
        {"at": T0, "receive": _hex(claim(A, T0))},
        {"at": T0 + 5_000, "receive": _hex(release)},
        {"at": T0 + 6_000, "receive": _hex(claim(B, T0 + 6_000))},
    ]
    run = _Run(context, "lease-authority", AUTHORITY_CONFIG, steps)

    def judge(run: _Run) -> str | None:
        to_b = [g for _t, g, _c in _grants(run) if g.holder == B]
        if not to_b:
            return "the second claimant was not granted after the release"
        if to_b[0].fencing_token <= grant.fencing_token:
            return f"token {to_b[0].fencing_token} after {grant.fencing_token}"
        return None

    return [run.check(label, expected, judge)]


def _case_renew(context: Context) -> list[Check]:
    first = _first_grant(context)
    label = "renew before expiry"
    expected = "a new grant with the same token and a later expires_at"
    if first is None:
        return [Check(label, {"op": "scenario"}, expected, "no grant to start from", Status.FAIL)]
    grant, gid = first
    renew = LeaseRenew(_header(A, T0 + 30_000, 2, gid), RESOURCE, grant.fencing_token, gid, TERM)
    steps = [{"at": T0, "receive": _hex(claim(A, T0))}, {"at": T0 + 30_000, "receive": _hex(renew)}]
    run = _Run(context, "lease-authority", AUTHORITY_CONFIG, steps)

    def judge(run: _Run) -> str | None:
        later = [g for t, g, _c in _grants(run) if t == T0 + 30_000]
        if not later:
            return "no grant answered the renew"
        g = later[0]
        if g.fencing_token != grant.fencing_token:
            return f"token {g.fencing_token}, was {grant.fencing_token}"
        if g.expires_at <= grant.expires_at:
            return "expires_at did not move later"
        return None

    return [run.check(label, expected, judge)]


# --- lease holder (§6.4) ---------------------------------------------------------------------


def _holder_claim(context: Context) -> LeaseClaim | None:
    run = _Run(context, "lease-holder", HOLDER_CONFIG,
               [{"at": T0, "want": {"resource": RESOURCE, "term_ms": TERM}}])  # fmt: skip
    try:
        claims = [m for _i, _t, m, _c, _to in run.sends() if isinstance(m, LeaseClaim)]
    except _Unreadable:
        return None
    return claims[0] if claims and run.error is None else None


def _grant_for(c: LeaseClaim, at: int, expires_at: int, token: int = 7) -> LeaseGrant:
    cid = _cid(c)
    return LeaseGrant(_header(AUTHORITY, at, 1, cid), RESOURCE, A, cid, token,
                      expires_at - at, expires_at)  # fmt: skip


def _holder_case(context: Context, label: str, expected: str, grant_at: int, expires_at: int,
                 uses: list[tuple[int, int, bool]]) -> list[Check]:  # fmt: skip
    c = _holder_claim(context)
    if c is None:
        return [Check(label, {"op": "scenario"}, expected, "the holder sent no readable claim",
                      Status.FAIL)]  # fmt: skip
    steps: list[dict[str, Any]] = [
        {"at": T0, "want": {"resource": RESOURCE, "term_ms": TERM}},
        {"at": grant_at, "receive": _hex(_grant_for(c, grant_at, expires_at))},
        *({"at": at, "use": {"resource": RESOURCE, "duration_ms": d}} for at, d, _ok in uses),
    ]
    run = _Run(context, "lease-holder", HOLDER_CONFIG, steps)

    def judge(run: _Run) -> str | None:
        tokens = run.answers("use")
        if len(tokens) != len(uses):
            return f"{len(tokens)} answers to {len(uses)} use queries"
        for (at, d, ok), token in zip(uses, tokens, strict=True):
            when = f"use at expires_at {at - expires_at:+} ms for {d} ms"
            if ok and token != 7:
                return f"{when}: refused, but the grant allows it"
            if not ok and token is not None:
                return f"{when}: allowed with token {token}"
        return None

    return [run.check(label, expected, judge)]


def _case_holder_drift(context: Context) -> list[Check]:
    grant_at, expires = T0 + 1_000, T0 + 1_000 + TERM
    uses = [(grant_at + 10, 100, True), (expires - DRIFT - 20, 10, True),
            (expires - DRIFT - 5, 10, False), (expires - DRIFT, 0, False), (expires + 5, 0, False)]  # fmt: skip
    return _holder_case(context, "uses near expires_at",
                        "use allowed only until expires_at - max_drift by the holder's clock",
                        grant_at, expires, uses)  # fmt: skip


def _case_holder_late(context: Context) -> list[Check]:
    grant_at = T0 + 1_000
    expires = grant_at + DRIFT // 2  # already past expires_at - max_drift when it arrives
    return _holder_case(context, "a grant that arrives too late",
                        "the resource is not used at all", grant_at, expires,
                        [(grant_at, 0, False), (grant_at + 1, 0, False)])  # fmt: skip


def _case_holder_revoke(context: Context) -> list[Check]:
    label = "a revoke for the held token"
    expected = "use stops at effective_at - max_drift"
    c = _holder_claim(context)
    if c is None:
        return [Check(label, {"op": "scenario"}, expected, "no readable claim", Status.FAIL)]
    grant_at, expires = T0 + 1_000, T0 + 1_000 + TERM
    effective = T0 + 20_000
    revoke = LeaseRevoke(_header(AUTHORITY, T0 + 5_000, 2), RESOURCE, 7, A, effective)
    steps: list[dict[str, Any]] = [
        {"at": T0, "want": {"resource": RESOURCE, "term_ms": TERM}},
        {"at": grant_at, "receive": _hex(_grant_for(c, grant_at, expires))},
        {"at": T0 + 5_000, "receive": _hex(revoke)},
        {"at": effective - DRIFT - 100, "use": {"resource": RESOURCE, "duration_ms": 10}},
        {"at": effective - DRIFT, "use": {"resource": RESOURCE, "duration_ms": 0}},
    ]
    run = _Run(context, "lease-holder", HOLDER_CONFIG, steps)

    def judge(run: _Run) -> str | None:
        tokens = run.answers("use")
        if tokens != [7, None]:
            return f"use answers {tokens} (expected [7, None])"
        return None

    return [run.check(label, expected, judge)]


# --- commitments (§6.2) ----------------------------------------------------------------------

PROMISOR, PROMISEE, STRANGER = 11, 12, 13


def _offer() -> Commitment:
    terms = Terms(PROMISOR, PROMISEE, "deliver/refined-carbon", 120_000, "kg", T0 + 86_400_000)
    return Commitment(_header(PROMISOR, T0, 1), CommitmentState.OFFERED, terms=terms)


def _step(issuer: int, state: CommitmentState, at: int, sequence: int) -> Commitment:
    offer = _cid(_offer())
    return Commitment(_header(issuer, at, sequence, offer), state, commitment=offer)


def _commitment_case(context: Context, label: str, expected: str,
                     steps: list[dict[str, Any]], states: list[str]) -> list[Check]:  # fmt: skip
    run = _Run(context, "commitment-tracker", {"node": PROMISEE}, steps)

    def judge(run: _Run) -> str | None:
        got = run.answers("state")
        return None if got == states else f"states {got}"

    return [run.check(label, f"{expected}: states {states}", judge)]


def _case_wrong_issuer(context: Context) -> list[Check]:
    offer = _cid(_offer()).raw.hex()
    steps: list[dict[str, Any]] = [
        {"at": T0, "receive": _hex(_offer())},
        {"at": T0 + 10, "receive": _hex(_step(STRANGER, CommitmentState.WITHDRAWN, T0 + 10, 1))},
        {"at": T0 + 20, "state": offer},
        {"at": T0 + 30, "receive": _hex(_step(PROMISOR, CommitmentState.WITHDRAWN, T0 + 30, 2))},
        {"at": T0 + 40, "state": offer},
    ]
    return _commitment_case(context, "a withdraw from a stranger, then from the promisor",
                            "the stranger's step is ignored", steps, ["offered", "withdrawn"])  # fmt: skip


def _case_final(context: Context) -> list[Check]:
    offer = _cid(_offer()).raw.hex()
    steps: list[dict[str, Any]] = [
        {"at": T0, "receive": _hex(_offer())},
        {"at": T0 + 10, "accept": offer},
        {"at": T0 + 20, "receive": _hex(_step(PROMISOR, CommitmentState.FULFILLED, T0 + 20, 2))},
        {"at": T0 + 30, "receive": _hex(_step(PROMISOR, CommitmentState.BROKEN, T0 + 30, 3))},
        {"at": T0 + 40, "state": offer},
    ]
    return _commitment_case(context, "a break after fulfilment",
                            "a step after a final one is ignored", steps, ["fulfilled"])  # fmt: skip


# --- escalation (§6.3) -----------------------------------------------------------------------

COORDINATOR, CELL = 100, 3


def _report(at: int, severity: int, node: int = A, sequence: int = 1) -> ExceptionReport:
    return ExceptionReport(_header(node, at, sequence), 1, severity, Scope.NODE, node)


def _escalations(run: _Run, about: ContentId) -> list[ExceptionReport]:
    return [m for _i, _t, m, _c, _to in run.sends()
            if isinstance(m, ExceptionReport) and about in m.header.references]  # fmt: skip


def _case_escalate(context: Context) -> list[Check]:
    report = _report(T0, 4)
    cid = _cid(report)
    steps: list[dict[str, Any]] = [
        {"at": T0, "receive": _hex(report), "lineage": "B"},
        *({"at": T0 + s * 1_000, "tick": True} for s in (1, 30, 31, 60, 120)),
    ]
    run = _Run(context, "escalation", {"node": COORDINATOR, "scope": 1, "scope_id": CELL}, steps)

    def judge(run: _Run) -> str | None:
        up = _escalations(run, cid)
        if not up:
            return "no report referencing the fault was sent up within 120 s"
        e = up[0]
        if e.scope != Scope.CELL or e.scope_id != CELL:
            return f"scope {int(e.scope)} id {e.scope_id}"
        if e.severity < report.severity:
            return f"severity {e.severity} below the report's {report.severity}"
        return None

    return [run.check("a severity-4 fault in a node of the cell",
                      "a new report with scope cell, the cell's id, severity >= 4, referencing it",
                      judge)]  # fmt: skip


def _case_once(context: Context) -> list[Check]:
    report = _report(T0, 5)
    cid = _cid(report)
    steps: list[dict[str, Any]] = [
        {"at": T0, "receive": _hex(report), "lineage": "B"},
        {"at": T0 + 60_000, "tick": True},
        {"at": T0 + 61_000, "receive": _hex(report), "lineage": "B"},
        {"at": T0 + 120_000, "tick": True},
    ]
    run = _Run(context, "escalation", {"node": COORDINATOR, "scope": 1, "scope_id": CELL}, steps)

    def judge(run: _Run) -> str | None:
        distinct = {encode_message(m) for m in _escalations(run, cid)}
        if len(distinct) > 1:
            return f"{len(distinct)} different escalations of one report"
        return None

    return [run.check("the same report twice", "at most one escalation (re-sends identical)", judge)]


# --- the catalogue ---------------------------------------------------------------------------


def behaviour_cases() -> Iterator[Case]:
    def case(id_: str, title: str, level: Level, requirement: str, expectation: str,
             machine: str, run: Callable[[Context], list[Check]]) -> Case:  # fmt: skip
        return Case(id_, title, level, requirement, expectation, "behaviour", run,
                    ("scenario",), machine)  # fmt: skip

    yield case("6.2.2", "Ignore steps from the wrong issuer", Level.MUST,
               "The issuer of each step MUST be the party the table names; a reader MUST ignore a "
               "step from any other issuer.",
               "a withdraw signed by a stranger leaves the offer offered", "commitment-tracker",
               _case_wrong_issuer)  # fmt: skip
    yield case("6.2.3", "Final states are final", Level.MUST,
               "Fulfilled, broken and withdrawn are final: a reader MUST ignore any step that "
               "arrives for a commitment after a final one",
               "a break after fulfilment leaves it fulfilled", "commitment-tracker", _case_final)  # fmt: skip
    yield case("6.3.2", "Escalate what the cell cannot contain", Level.MUST,
               "it sends a new report with scope cell (`scope_id` its cell), a severity no lower "
               "than the report's, and `references` that include the report it escalates.",
               "a severity-4 node fault goes up as a cell report referencing it", "escalation",
               _case_escalate)  # fmt: skip
    yield case("6.3.3", "Do not escalate one report twice", Level.SHOULD,
               "A coordinator SHOULD remember the content ids it has escalated and not escalate "
               "one twice.", "the same report received twice goes up once", "escalation",
               _case_once)  # fmt: skip
    yield case("6.4.2", "Grant a claim on a free resource", Level.MUST,
               "The authority answers a claim with a grant naming the claim's content id.",
               "one grant to the claimant, naming its claim, within the term", "lease-authority",
               _case_grant)  # fmt: skip
    yield case("6.4.3", "No second holder before expires_at + max_drift", Level.MUST,
               "The authority MUST NOT grant the resource to another holder before `expires_at + "
               "max_drift` by its own clock, unless the holder released it.",
               "a second claimant waits; the invariant checker finds no overlap", "lease-authority",
               _case_exclusion)  # fmt: skip
    yield case("6.4.4", "Leases end", Level.MUST,
               "`expires_at` is when the grant ends, by the authority's clock",
               "a grant neither renewed nor released ends; the queued claimant gets the resource",
               "lease-authority", _case_lapse)  # fmt: skip
    yield case("6.4.5", "Tell the holder its grant lapsed", Level.SHOULD,
               "**Expiry notice.** The authority states that the grant with `fencing_token` lapsed "
               "at `expired_at` without renewal.",
               "an expiry notice to the holder after expires_at", "lease-authority",
               _case_expiry_notice)  # fmt: skip
    yield case("6.4.6", "Fencing tokens only grow", Level.MUST,
               "Its `fencing_token` MUST be strictly greater than every token the authority issued "
               "before for that resource", "the grant after a release carries a greater token",
               "lease-authority", _case_tokens_grow)  # fmt: skip
    yield case("6.4.7", "Renewal keeps the token", Level.MUST,
               "A renewal is answered by a new grant with the **same** token and a later "
               "`expires_at`.", "a renew is answered with the same token, later expires_at",
               "lease-authority", _case_renew)  # fmt: skip
    yield case("6.4.8", "The holder stops max_drift early", Level.MUST,
               "A holder MUST stop using the resource `max_drift` before `expires_at` (and before "
               "`effective_at` of a revoke) **by its own clock**",
               "use allowed until expires_at - max_drift, refused from then on", "lease-holder",
               _case_holder_drift)  # fmt: skip
    yield case("6.4.9", "A late grant is not used", Level.MUST,
               "and MUST NOT use it at all if it receives the grant after that instant.",
               "a grant received after expires_at - max_drift is never used", "lease-holder",
               _case_holder_late)  # fmt: skip
    yield case("6.4.10", "The holder obeys a revoke", Level.MUST,
               "the holder MUST stop using the resource by `effective_at - max_drift` by its own "
               "clock", "use refused from effective_at - max_drift", "lease-holder",
               _case_holder_revoke)  # fmt: skip
