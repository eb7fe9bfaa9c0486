"""Correlated-fault containment: production quarantine when anomalies cluster in one software lineage.

Theory of operation
-------------------
Nodes replicated from the same design share their defects; a subtle one shows up as the same
anomaly in many nodes of one software lineage at once (the seeds' "monoculture" failure). A
cell or region coordinator runs one :class:`Containment`: it learns each node's lineage and cell
from its capability advertisement (§6.1, :meth:`Containment.advertise`), and is told of every
anomaly — an exception report of a node in its scope (:meth:`Containment.anomaly`; at a region,
the nodes listed by its cells' escalated incidents).

When anomalies cluster in one lineage inside the coordinator's scope past the thresholds of
:data:`THRESHOLDS` — this table is the policy:

=======  ========  =========  ==============  ============  =====================================
scope    window    min nodes  min share of    min severity  then
                              lineage (%)
=======  ========  =========  ==============  ============  =====================================
cell     1 h       3          20              2             quarantine the affected nodes, escalate
region   6 h       5          10              2             quarantine the affected nodes, escalate
=======  ========  =========  ==============  ============  =====================================

(*min nodes*: distinct nodes of the lineage with an anomaly of at least *min severity* inside the
window; *min share*: those nodes as a percentage of the lineage's nodes known in the scope; both
must hold, so one flaky node of a small lineage does not quarantine it) — the coordinator puts
the affected nodes in **production quarantine** (the seeds: a false positive costs a delay, a
missed one the fleet). While the cluster lasts, a further anomaly of that lineage in the scope
quarantines its node at once. The actions say what follows:

- :class:`Quarantined` per node: the node's commitments are to be **re-homed**
  (:meth:`Containment.rehome` plans it, preferring nodes of *other* lineages in the same cell:
  deliberate diversity) and its **claims refused** (:meth:`Containment.admits` is the gate a
  lease authority consults);
- one :class:`EscalateCluster` with an exception report for the level above (severity at least 4:
  "the cell is affected", §6.3), naming the anomaly reports it rests on;
- :class:`Released` when an operator lifts the quarantine (:meth:`Containment.lift`).

A node's quarantine state moves only through :data:`TRANSITIONS`. Memory is bounded: anomalies
older than the window are dropped on :meth:`Containment.tick`, and at most ``max_nodes`` nodes
are known. No I/O, no clock: ``now`` comes in with every call.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from ..messages import CommitmentState, ExceptionReport, Header, Scope, Terms

__all__ = [
    "THRESHOLDS",
    "TRANSITIONS",
    "Action",
    "Containment",
    "EscalateCluster",
    "NodeState",
    "Quarantined",
    "Rehome",
    "Released",
    "Threshold",
]


@attrs.frozen(slots=True)
class Threshold:
    """When a lineage's anomalies in one scope count as a correlated fault (module table)."""

    window_ms: int
    min_nodes: int
    min_share_percent: int
    min_severity: int


#: The policy (module docstring table).
THRESHOLDS: Final[dict[Scope, Threshold]] = {
    Scope.CELL: Threshold(window_ms=3_600_000, min_nodes=3, min_share_percent=20, min_severity=2),
    Scope.REGION: Threshold(
        window_ms=6 * 3_600_000, min_nodes=5, min_share_percent=10, min_severity=2
    ),
}

#: Severity of the escalated report: §6.3 "major fault: the cell is affected".
CLUSTER_SEVERITY: Final = 4
MAX_REFERENCES: Final = 64


class NodeState(enum.Enum):
    ACTIVE = "active"
    QUARANTINED = "quarantined"


class Move(enum.Enum):
    QUARANTINE = "quarantine"
    LIFT = "lift"


TRANSITIONS: Final[dict[NodeState, dict[Move, NodeState]]] = {
    NodeState.ACTIVE: {Move.QUARANTINE: NodeState.QUARANTINED},
    NodeState.QUARANTINED: {Move.LIFT: NodeState.ACTIVE},
}


# --- actions -----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Quarantined:
    """``node`` is in production quarantine: re-home its commitments, refuse its claims."""

    node: int
    lineage: str
    since: int


@attrs.frozen(slots=True)
class EscalateCluster:
    """Seal ``report`` and send it up: lineage ``lineage`` is faulty across ``nodes``."""

    report: ExceptionReport
    lineage: str
    nodes: tuple[int, ...]


@attrs.frozen(slots=True)
class Released:
    node: int


@attrs.frozen(slots=True)
class Rehome:
    """Ask ``to_node`` to take over ``commitment`` of quarantined ``from_node`` with ``terms``."""

    commitment: ContentId
    from_node: int
    to_node: int
    terms: Terms


Action = Quarantined | EscalateCluster | Released


@attrs.define(slots=True)
class _Node:
    lineage: str
    cell: int | None
    state: NodeState = NodeState.ACTIVE
    anomalies: collections.deque[tuple[int, int, int, ContentId]] = attrs.Factory(collections.deque)
    #: (time, code, severity, report id), oldest first


class Containment:
    """A coordinator's correlated-fault containment (module docstring)."""

    def __init__(
        self,
        node: int,
        scope: Scope,
        scope_id: int,
        next_sequence: Callable[[], int],
        threshold: Threshold | None = None,
        max_nodes: int = 100_000,
    ) -> None:
        if scope is Scope.NODE:
            raise LocalProtocolError("containment runs in a cell or region coordinator")
        self.node = node
        self.scope = scope
        self.scope_id = scope_id
        self.threshold = threshold or THRESHOLDS[scope]
        self.max_nodes = max_nodes
        self._next_sequence = next_sequence
        self._nodes: dict[int, _Node] = {}
        #: Lineages whose cluster is active (crossed the thresholds, not yet lifted).
        self._clustered: set[str] = set()
        #: How many commitments each node has taken over, to spread re-homing.
        self._taken: collections.Counter[int] = collections.Counter()

    # --- membership and queries ---

    def advertise(self, node: int, lineage: str, cell: int | None = None) -> None:
        """What the node's latest capability advertisement says (§6.1)."""
        known = self._nodes.get(node)
        if known is None:
            if len(self._nodes) >= self.max_nodes:
                raise LocalProtocolError(f"{len(self._nodes)} nodes known (the limit)")
            self._nodes[node] = _Node(lineage, cell)
        else:
            known.lineage, known.cell = lineage, cell

    def admits(self, node: int) -> bool:
        """Whether claims of ``node`` may be granted (quarantined nodes' are refused)."""
        known = self._nodes.get(node)
        return known is None or known.state is NodeState.ACTIVE

    def quarantined(self) -> set[int]:
        return {n for n, k in self._nodes.items() if k.state is NodeState.QUARANTINED}

    def lineage_of(self, node: int) -> str | None:
        known = self._nodes.get(node)
        return None if known is None else known.lineage

    # --- inputs ---

    def anomaly(self, report: ExceptionReport, report_id: ContentId, now: int) -> list[Action]:
        """An exception report about node ``report.scope_id`` (scope node) in this scope."""
        node = report.scope_id
        known = self._nodes.get(node)
        if known is None or report.severity < self.threshold.min_severity:
            return []  # a node we do not place, or below the policy's notice
        if not any(a[3] == report_id for a in known.anomalies):
            known.anomalies.append((now, report.code, report.severity, report_id))
        lineage = known.lineage
        if lineage in self._clustered:
            return self._quarantine([node], now)
        affected = self._affected(lineage, now)
        population = sum(1 for k in self._nodes.values() if k.lineage == lineage)
        if (
            len(affected) < self.threshold.min_nodes
            or 100 * len(affected) < self.threshold.min_share_percent * population
        ):
            return []
        self._clustered.add(lineage)
        actions = self._quarantine(affected, now)
        actions.append(self._escalate(lineage, affected, now))
        return actions

    def tick(self, now: int) -> None:
        """Forget anomalies older than the window."""
        for known in self._nodes.values():
            self._expire(known, now)

    def lift(
        self, now: int, *, nodes: Iterable[int] = (), lineage: str | None = None
    ) -> list[Action]:
        """An operator lifts the quarantine of ``nodes``, or of every node of ``lineage``."""
        chosen = set(nodes)
        if lineage is not None:
            self._clustered.discard(lineage)
            chosen |= {n for n, k in self._nodes.items() if k.lineage == lineage}
        actions: list[Action] = []
        for node in sorted(chosen):
            known = self._nodes.get(node)
            if known is not None and known.state is NodeState.QUARANTINED:
                self._move(known, Move.LIFT)
                known.anomalies.clear()  # judged afresh from now on
                actions.append(Released(node))
        return actions

    def rehome(
        self,
        commitments: Iterable[tuple[ContentId, Terms, CommitmentState]],
        capable: Callable[[int, Terms], bool] | None = None,
    ) -> list[Rehome]:
        """Plan new promisors for the open commitments of quarantined nodes.

        The replacement is an admitted node that can do the work (``capable``, judged from its
        capability advertisement, §6.1; any node if not given), preferably of another lineage
        (the fault may be in the lineage), preferably in the same cell, and among those the one
        that has taken over the fewest so far (ties by node id: deterministic). A commitment no
        node can take stays where it is.
        """
        plan: list[Rehome] = []
        for cid, terms, state in commitments:
            owner = self._nodes.get(terms.promisor)
            if state not in (CommitmentState.OFFERED, CommitmentState.ACCEPTED):
                continue
            if owner is None or owner.state is not NodeState.QUARANTINED:
                continue
            candidates = [
                (k.lineage == owner.lineage, k.cell != owner.cell, self._taken[n], n)
                for n, k in self._nodes.items()
                if k.state is NodeState.ACTIVE
                and n != terms.promisee
                and (capable is None or capable(n, terms))
            ]
            if not candidates:
                continue
            to_node = min(candidates)[3]
            self._taken[to_node] += 1
            plan.append(Rehome(cid, terms.promisor, to_node, attrs.evolve(terms, promisor=to_node)))
        return plan

    # --- internals ---

    def _expire(self, known: _Node, now: int) -> None:
        while known.anomalies and now - known.anomalies[0][0] >= self.threshold.window_ms:
            known.anomalies.popleft()

    def _affected(self, lineage: str, now: int) -> list[int]:
        affected = []
        for n, k in self._nodes.items():
            if k.lineage == lineage:
                self._expire(k, now)
                if k.anomalies:
                    affected.append(n)
        return sorted(affected)

    def _quarantine(self, nodes: Iterable[int], now: int) -> list[Action]:
        actions: list[Action] = []
        for node in nodes:
            known = self._nodes[node]
            if known.state is NodeState.ACTIVE:
                self._move(known, Move.QUARANTINE)
                actions.append(Quarantined(node, known.lineage, now))
        return actions

    def _escalate(self, lineage: str, nodes: list[int], now: int) -> EscalateCluster:
        anomalies = [a for n in nodes for a in self._nodes[n].anomalies]
        codes = collections.Counter(a[1] for a in anomalies)
        code = min(codes, key=lambda c: (-codes[c], c))  # the most frequent, then the lowest
        severity = max(CLUSTER_SEVERITY, *(a[2] for a in anomalies))
        references = tuple(dict.fromkeys(a[3] for a in anomalies))[:MAX_REFERENCES]
        where = "cell" if self.scope is Scope.CELL else "region"
        detail = f"lineage {lineage!r} quarantined in {where} {self.scope_id}: {len(nodes)} nodes"
        report = ExceptionReport(
            Header(self.node, now, self._next_sequence(), references=references),
            code=code,
            severity=severity,
            scope=self.scope,
            scope_id=self.scope_id,
            detail=detail[:256],
        )
        return EscalateCluster(report, lineage, tuple(nodes))

    @staticmethod
    def _move(known: _Node, move: Move) -> None:
        new = TRANSITIONS[known.state].get(move)
        if new is None:
            raise LocalProtocolError(f"cannot {move.value} a node that is {known.state.value}")
        known.state = new
