"""The invariant checker: proves or refutes, over a trace, that leases never double-book.

Theory of operation
-------------------
A trace is what happened, recorded with both clocks: each record carries the node's own clock
reading and the true time (known to a simulator, or to a test bench with a reference clock).
The checker judges the trace by true time alone — physics does not care what the clocks
believed — and states:

1. **Mutual exclusion** (spec §6.4): at no true instant do two different (holder, fencing
   token) pairs *use* one resource. A use is an operation the resource actually executed, over
   ``[start, end)`` in true time; operations the fencing guard refused are not uses.
2. **Tokens only grow** (§6.4): a grant of a resource to a new holder (or with a new token)
   carries a token above every token granted for it before; renewals keep theirs.
3. **Every use is granted**: the (resource, holder, token) of a use was granted to that holder.
4. **Sub-leases stay within their block** (hierarchical reservations): a sub-lease lies inside
   a true-time interval of its block, and at no instant do the sub-leases of a block add up to
   more than its capacity.

:func:`check` sweeps the whole trace (sorting, then one pass per resource and block) and either
proves the four statements for this trace or names the **first** violation by true instant:
the rule, the resource, the holders, the instant and the tokens. It also reports the largest
difference between any two nodes' clocks seen in the trace, so a verdict can be read against
the drift bound it assumed.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable

import attrs

__all__ = [
    "Block",
    "Expired",
    "Granted",
    "Record",
    "Released",
    "Report",
    "Revoked",
    "Rule",
    "SubLease",
    "Used",
    "Violation",
    "check",
]


@attrs.frozen(slots=True)
class Granted:
    """``authority`` granted ``resource`` to ``holder`` with ``token`` until ``expires_at``
    (authority's clock), at true time ``true_time`` = authority clock ``local_time``."""

    resource: str
    holder: int
    token: int
    expires_at: int
    authority: int
    true_time: int
    local_time: int


@attrs.frozen(slots=True)
class Used:
    """``resource`` executed an operation of ``holder`` under ``token`` over ``[start, end)``
    true time (``local_start`` by the holder's clock)."""

    resource: str
    holder: int
    token: int
    start: int
    end: int
    local_start: int


@attrs.frozen(slots=True)
class Released:
    resource: str
    holder: int
    token: int
    true_time: int
    local_time: int


@attrs.frozen(slots=True)
class Revoked:
    resource: str
    holder: int
    token: int
    effective_at: int
    authority: int
    true_time: int
    local_time: int


@attrs.frozen(slots=True)
class Expired:
    resource: str
    holder: int
    token: int
    authority: int
    true_time: int
    local_time: int


@attrs.frozen(slots=True)
class Block:
    """A reservation ``block`` of ``capacity`` units held by ``holder`` (a cell) over
    ``[start, end)`` true time; a renewal is another record with the same ``block``."""

    block: str
    holder: int
    capacity: int
    start: int
    end: int


@attrs.frozen(slots=True)
class SubLease:
    """``amount`` units of ``block`` sub-leased to ``holder`` over ``[start, end)`` true time."""

    block: str
    holder: int
    amount: int
    start: int
    end: int


Record = Granted | Used | Released | Revoked | Expired | Block | SubLease


class Rule(enum.Enum):
    OVERLAP = "overlap"  # two holders used one resource at the same true instant
    TOKEN_ORDER = "token-order"  # a new grant did not carry a higher token
    UNGRANTED_USE = "ungranted-use"  # a use under a token never granted to its holder
    OUTSIDE_BLOCK = "outside-block"  # a sub-lease outside every interval of its block
    OVER_BLOCK = "over-block"  # sub-leases of a block added up to more than its capacity


@attrs.frozen(slots=True)
class Violation:
    rule: Rule
    resource: str  # the resource, or the block
    holders: tuple[int, ...]
    instant: int  # true time
    tokens: tuple[int, ...]  # fencing tokens (or amounts, for blocks)

    def __str__(self) -> str:
        return (
            f"{self.rule.value} on {self.resource} at t={self.instant}: "
            f"holders {list(self.holders)}, tokens {list(self.tokens)}"
        )


@attrs.frozen(slots=True)
class Report:
    violation: Violation | None  # the first, by true instant
    violations: int  # how many were found in all
    uses: int
    grants: int
    max_clock_difference: int  # largest difference between two nodes' clocks seen

    @property
    def ok(self) -> bool:
        return self.violation is None


def check(trace: Iterable[Record], clocks: Iterable[tuple[int, int, int]] = ()) -> Report:
    """Judge ``trace``; ``clocks`` adds (node, true time, local time) samples for the drift figure."""
    grants: dict[str, list[Granted]] = defaultdict(list)
    uses: dict[str, list[Used]] = defaultdict(list)
    blocks: dict[str, list[Block]] = defaultdict(list)
    subs: dict[str, list[SubLease]] = defaultdict(list)
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in trace:
        if isinstance(record, Granted):
            grants[record.resource].append(record)
            offsets[record.authority].append(record.local_time - record.true_time)
        elif isinstance(record, Used):
            uses[record.resource].append(record)
            offsets[record.holder].append(record.local_start - record.start)
        elif isinstance(record, Block):
            blocks[record.block].append(record)
        elif isinstance(record, SubLease):
            subs[record.block].append(record)
        elif isinstance(record, Released):
            offsets[record.holder].append(record.local_time - record.true_time)
        else:
            offsets[record.authority].append(record.local_time - record.true_time)
    for node, true_time, local_time in clocks:
        offsets[node].append(local_time - true_time)

    found: list[Violation] = []
    for resource, granted in grants.items():
        found.extend(_token_order(resource, granted))
    for resource, used in uses.items():
        found.extend(_ungranted(resource, used, grants.get(resource, [])))
        found.extend(_overlaps(resource, used))
    for block, sub in subs.items():
        found.extend(_sub_leases(block, sub, blocks.get(block, [])))

    spread = 0
    if offsets:
        lows = [min(v) for v in offsets.values()]
        highs = [max(v) for v in offsets.values()]
        spread = max(highs) - min(lows)
    first = min(found, key=lambda v: (v.instant, v.rule.value)) if found else None
    return Report(
        violation=first,
        violations=len(found),
        uses=sum(len(v) for v in uses.values()),
        grants=sum(len(v) for v in grants.values()),
        max_clock_difference=spread,
    )


def _token_order(resource: str, granted: list[Granted]) -> list[Violation]:
    out: list[Violation] = []
    highest: Granted | None = None
    for g in sorted(granted, key=lambda g: g.true_time):
        if highest is not None:
            renewal = g.token == highest.token and g.holder == highest.holder
            if not renewal and g.token <= highest.token:
                out.append(
                    Violation(
                        Rule.TOKEN_ORDER,
                        resource,
                        (highest.holder, g.holder),
                        g.true_time,
                        (highest.token, g.token),
                    )
                )
        if highest is None or g.token > highest.token:
            highest = g
    return out


def _ungranted(resource: str, used: list[Used], granted: list[Granted]) -> list[Violation]:
    known: dict[tuple[int, int], int] = {}
    for g in granted:  # the first grant of a token counts, not its renewals
        at = known.get((g.holder, g.token))
        if at is None or g.true_time < at:
            known[(g.holder, g.token)] = g.true_time
    out = []
    for u in used:
        at = known.get((u.holder, u.token))
        if at is None or at > u.start:
            out.append(Violation(Rule.UNGRANTED_USE, resource, (u.holder,), u.start, (u.token,)))
    return out


def _overlaps(resource: str, used: list[Used]) -> list[Violation]:
    out: list[Violation] = []
    active: list[Used] = []
    for u in sorted(used, key=lambda u: (u.start, u.end)):
        active = [a for a in active if a.end > u.start]
        for a in active:
            if (a.holder, a.token) != (u.holder, u.token):
                out.append(
                    Violation(
                        Rule.OVERLAP, resource, (a.holder, u.holder), u.start, (a.token, u.token)
                    )
                )
                break
        active.append(u)
    return out


def _sub_leases(block: str, sub: list[SubLease], intervals: list[Block]) -> list[Violation]:
    out: list[Violation] = []
    # A renewal continues its block: touching or overlapping intervals cover one span.
    spans: list[list[int]] = []
    for b in sorted(intervals, key=lambda b: b.start):
        if spans and b.start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b.end)
        else:
            spans.append([b.start, b.end])
    for s in sub:
        if not any(start <= s.start and s.end <= end for start, end in spans):
            out.append(Violation(Rule.OUTSIDE_BLOCK, block, (s.holder,), s.start, (s.amount,)))
    # Sweep: at equal instants ends come before starts (intervals are half-open).
    events = sorted(
        [(s.start, 1, s) for s in sub] + [(s.end, 0, s) for s in sub],
        key=lambda e: (e[0], e[1]),
    )
    live: dict[int, SubLease] = {}
    for instant, starting, s in events:
        if not starting:
            live.pop(id(s), None)
            continue
        live[id(s)] = s
        total = sum(x.amount for x in live.values())
        capacity = max((b.capacity for b in intervals if b.start <= instant < b.end), default=0)
        if total > capacity:
            out.append(
                Violation(
                    Rule.OVER_BLOCK,
                    block,
                    tuple(x.holder for x in live.values()),
                    instant,
                    tuple(x.amount for x in live.values()),
                )
            )
    return out
