"""The staged rollout: canary cell first, then waves; shadow mode before authority; rollback.

Theory of operation
-------------------
Seeds: canaries must be **cells**, not scattered nodes, so that the interfaces between updated
and old nodes are exercised; a new release runs in **shadow mode** (installed, compute-only, its
outputs compared with the active release's) before it is given control authority; and a canary
whose health degrades is **rolled back** and the rollout halted fleet-wide. This is the release
authority's side of that, sans-IO: :meth:`Rollout.handle` takes an event with ``now`` (DTN ms)
and returns actions for the runtime to send (as signed rollout-stage orders) to the cells.

A :class:`RolloutPlan` is a canary cell and then waves of cells. Each stage goes through::

    INSTALLING --every cell installed--> SHADOW --every cell agreed on enough samples
    (and, in the canary cell, the cross-version interaction cases passed)--> SOAKING --every cell healthy at the end of the soak--> next stage's INSTALLING / COMPLETE

with authority granted on the way into SOAKING and to no cell before (a cell whose nodes are
installed runs its shadow while the rest of the stage installs, so a divergence may come in
INSTALLING too; after the grant the shadow is over). From any of the three, a
shadow divergence or an unhealthy digest — from the stage's cells or from any earlier stage
that holds authority — leads to ROLLED_BACK: every cell reached so far is rolled back to the
previous release and the rollout halts for the whole fleet; nothing is granted afterwards.
So does a failed cross-version interaction case in the canary cell (the conformance suite's
cases between updated and old nodes, run there as the canary gate), and an operator's
:class:`Halt`. :data:`TRANSITIONS` is the table; the handlers
around it only decide which of the table's allowed states the guards pick. Reports that a
state does not expect (a late shadow report during the soak) are ignored, not errors: in a
DTN fleet they are normal.

Soak rule: stage ``n+1`` starts only when every cell of stage ``n`` has sent a healthy digest
observed at or after ``granted_at + soak`` and no unhealthy one since authority was granted —
a silent cell holds the rollout, it never lets it through.

Version discipline (:mod:`.census`) is checked when the rollout starts, for every cell of the
plan: a rollout that would take a cell or region past three major versions is refused before
anything is installed.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from ..errors import LocalProtocolError
from ..ids import ContentId
from .census import VersionCensus
from .errors import RolloutRefused
from .manifest import Version

__all__ = [
    "TRANSITIONS",
    "CellInstalled",
    "GrantAuthority",
    "Halt",
    "HealthDigest",
    "InstallShadow",
    "InteractionCases",
    "RollBack",
    "Rollout",
    "RolloutComplete",
    "RolloutHalted",
    "RolloutPlan",
    "RolloutState",
    "ShadowReport",
    "Start",
    "Tick",
]


class RolloutState(enum.Enum):
    PLANNED = "planned"
    INSTALLING = "installing"
    SHADOW = "shadow"
    SOAKING = "soaking"
    COMPLETE = "complete"
    ROLLED_BACK = "rolled-back"


# --- events ----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Start:
    """Begin: check the version discipline against ``census`` and install the canary."""

    census: VersionCensus = attrs.field(eq=False)


@attrs.frozen(slots=True)
class CellInstalled:
    """Every node of ``cell`` holds the release, verified, in shadow mode."""

    cell: int


@attrs.frozen(slots=True)
class ShadowReport:
    """``cell``'s running totals of shadow outputs that agreed / diverged with the active ones."""

    cell: int
    agreed: int
    diverged: int


@attrs.frozen(slots=True)
class InteractionCases:
    """The canary gate: ``cell``'s run of the conformance suite's cross-version interaction
    cases between its updated nodes and its old ones (running totals)."""

    cell: int
    passed: int
    failed: int


@attrs.frozen(slots=True)
class HealthDigest:
    """``cell``'s health digest (control-chart verdict over its nodes) at ``observed_at``."""

    cell: int
    healthy: bool
    observed_at: int


@attrs.frozen(slots=True)
class Halt:
    """An operator stops the rollout; the cells reached so far are rolled back."""

    reason: str


@attrs.frozen(slots=True)
class Tick:
    """Time passed (a soak may have ended)."""


Event = Start | CellInstalled | ShadowReport | InteractionCases | HealthDigest | Halt | Tick


# --- actions ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class InstallShadow:
    """Fetch and install the release in ``cells``, compute-only: no control authority."""

    stage: int
    cells: frozenset[int]


@attrs.frozen(slots=True)
class GrantAuthority:
    stage: int
    cells: frozenset[int]


@attrs.frozen(slots=True)
class RollBack:
    """Take authority from the release in ``cells`` and give it back to ``to``."""

    cells: frozenset[int]
    to: Version | None


@attrs.frozen(slots=True)
class RolloutHalted:
    reason: str


@attrs.frozen(slots=True)
class RolloutComplete:
    pass


Action = InstallShadow | GrantAuthority | RollBack | RolloutHalted | RolloutComplete


#: {state: {event: states the handler may choose}}; events a state does not list are ignored
#: (reports arrive late in a DTN fleet), except Start outside PLANNED, which is a caller's bug.
TRANSITIONS: Final[dict[RolloutState, dict[type[Event], frozenset[RolloutState]]]] = {
    RolloutState.PLANNED: {Start: frozenset({RolloutState.INSTALLING})},
    RolloutState.INSTALLING: {
        CellInstalled: frozenset(
            {RolloutState.INSTALLING, RolloutState.SHADOW, RolloutState.SOAKING}
        ),
        ShadowReport: frozenset({RolloutState.INSTALLING, RolloutState.ROLLED_BACK}),
        InteractionCases: frozenset({RolloutState.INSTALLING, RolloutState.ROLLED_BACK}),
        HealthDigest: frozenset({RolloutState.INSTALLING, RolloutState.ROLLED_BACK}),
        Halt: frozenset({RolloutState.ROLLED_BACK}),
    },
    RolloutState.SHADOW: {
        ShadowReport: frozenset(
            {RolloutState.SHADOW, RolloutState.SOAKING, RolloutState.ROLLED_BACK}
        ),
        InteractionCases: frozenset(
            {RolloutState.SHADOW, RolloutState.SOAKING, RolloutState.ROLLED_BACK}
        ),
        HealthDigest: frozenset({RolloutState.SHADOW, RolloutState.ROLLED_BACK}),
        Halt: frozenset({RolloutState.ROLLED_BACK}),
    },
    RolloutState.SOAKING: {
        HealthDigest: frozenset(
            {
                RolloutState.SOAKING,
                RolloutState.INSTALLING,
                RolloutState.COMPLETE,
                RolloutState.ROLLED_BACK,
            }
        ),
        Tick: frozenset({RolloutState.SOAKING, RolloutState.INSTALLING, RolloutState.COMPLETE}),
        Halt: frozenset({RolloutState.ROLLED_BACK}),
    },
    RolloutState.COMPLETE: {},
    RolloutState.ROLLED_BACK: {},
}


@attrs.frozen(slots=True)
class RolloutPlan:
    """Which release goes where, in which order, and how long each stage must prove itself."""

    release_id: ContentId
    lineage: str
    version: Version
    #: The release to return to on rollback (``None``: the lineage's safety kernel only).
    previous: Version | None
    canary: int
    waves: tuple[frozenset[int], ...]
    #: Healthy time a stage must show, with authority, before the next one starts (ms).
    soak: int
    #: Agreeing shadow comparisons each cell must report before it is granted authority.
    shadow_samples: int = 100
    #: Cross-version interaction cases the canary cell must pass (none may fail) before it
    #: is granted authority: the canary gate (seeds: canaries test the interfaces between
    #: updated and old nodes).
    interaction_cases: int = 1

    @property
    def stages(self) -> tuple[frozenset[int], ...]:
        return (frozenset({self.canary}), *self.waves)

    def check(self) -> None:
        """Refuse (:class:`.errors.RolloutRefused`) a plan that breaks the staging rules."""
        seen: set[int] = set()
        for index, cells in enumerate(self.stages):
            if not cells:
                raise RolloutRefused(f"stage {index} names no cell")
            twice = seen & cells
            if twice:
                raise RolloutRefused(f"cells {sorted(twice)} appear in two stages")
            seen |= cells
        if self.soak <= 0 or self.shadow_samples <= 0 or self.interaction_cases < 0:
            raise RolloutRefused("soak time and shadow samples must be positive")
        if self.previous is not None and self.previous >= self.version:
            raise RolloutRefused(f"{self.version} does not follow {self.previous}")


class Rollout:
    """One release's staged rollout, driven by cell reports; see the module docstring."""

    def __init__(self, plan: RolloutPlan) -> None:
        plan.check()
        self.plan = plan
        self.state = RolloutState.PLANNED
        self.stage = 0
        self.reason = ""
        self._installed: set[int] = set()
        self._agreed: dict[int, int] = {}
        self._gate_passed = 0
        self._granted_at = 0
        self._healthy_until: dict[int, int] = {}
        #: Every cell the release has reached, and those holding authority.
        self.reached: set[int] = set()
        self.authorised: set[int] = set()

    @property
    def cells(self) -> frozenset[int]:
        return self.plan.stages[self.stage]

    def handle(self, event: Event, now: int) -> list[Action]:
        """Apply ``event`` at ``now``; return the actions, in order."""
        allowed = TRANSITIONS[self.state].get(type(event))
        if allowed is None:
            if isinstance(event, Start):
                raise LocalProtocolError(f"rollout already {self.state.value}")
            return []
        actions: list[Action] = []
        new = self._dispatch(event, now, actions)
        if new not in allowed:  # pragma: no cover - the table and the handlers disagree
            raise LocalProtocolError(f"{self.state.value} may not go to {new.value}")
        self.state = new
        return actions

    def _dispatch(self, event: Event, now: int, actions: list[Action]) -> RolloutState:
        if isinstance(event, Start):
            event.census.check_rollout(
                self.plan.lineage,
                self.plan.version.major,
                (cell for stage in self.plan.stages for cell in stage),
            )
            return self._begin_stage(actions)
        if isinstance(event, Halt):
            return self._roll_back(f"halted by operator: {event.reason}", actions)
        if isinstance(event, CellInstalled):
            if event.cell in self.cells:
                self._installed.add(event.cell)
            if self._installed >= self.cells:
                self.state = RolloutState.SHADOW
                return self._try_grant(now, actions)
            return self.state
        if isinstance(event, ShadowReport):
            return self._on_shadow(event, now, actions)
        if isinstance(event, InteractionCases):
            return self._on_gate(event, now, actions)
        if isinstance(event, HealthDigest):
            if not event.healthy and event.cell in self.reached:
                return self._roll_back(
                    f"cell {event.cell} reported an unhealthy digest at {event.observed_at}",
                    actions,
                )
            if (
                event.healthy
                and event.cell in self.cells
                and self.state is RolloutState.SOAKING
                and event.observed_at >= self._granted_at
            ):
                last = self._healthy_until.get(event.cell, 0)
                self._healthy_until[event.cell] = max(last, event.observed_at)
            return self._maybe_advance(now, actions)
        return self._maybe_advance(now, actions)  # Tick

    def _begin_stage(self, actions: list[Action]) -> RolloutState:
        self._installed.clear()
        self._agreed.clear()
        self._gate_passed = 0
        self._healthy_until.clear()
        self.reached |= self.cells
        actions.append(InstallShadow(self.stage, self.cells))
        return RolloutState.INSTALLING

    def _on_shadow(self, event: ShadowReport, now: int, actions: list[Action]) -> RolloutState:
        if event.cell not in self.cells:
            return self.state
        if event.diverged > 0:
            return self._roll_back(
                f"cell {event.cell}: {event.diverged} shadow outputs diverged from the active "
                f"release",
                actions,
            )
        self._agreed[event.cell] = max(self._agreed.get(event.cell, 0), event.agreed)
        return self._try_grant(now, actions)

    def _on_gate(self, event: InteractionCases, now: int, actions: list[Action]) -> RolloutState:
        if self.stage != 0 or event.cell not in self.cells:
            return self.state
        if event.failed > 0:
            return self._roll_back(
                f"cell {event.cell}: {event.failed} cross-version interaction cases failed",
                actions,
            )
        self._gate_passed = max(self._gate_passed, event.passed)
        return self._try_grant(now, actions)

    def _try_grant(self, now: int, actions: list[Action]) -> RolloutState:
        """Authority once the whole stage is installed, every cell agreed on enough shadow
        samples, and (in the canary stage) the interaction cases passed."""
        if self.state is not RolloutState.SHADOW:
            return self.state
        if any(self._agreed.get(cell, 0) < self.plan.shadow_samples for cell in self.cells):
            return self.state
        if self.stage == 0 and self._gate_passed < self.plan.interaction_cases:
            return self.state
        self._granted_at = now
        self.authorised |= self.cells
        actions.append(GrantAuthority(self.stage, self.cells))
        return RolloutState.SOAKING

    def _maybe_advance(self, now: int, actions: list[Action]) -> RolloutState:
        if self.state is not RolloutState.SOAKING:
            return self.state
        end = self._granted_at + self.plan.soak
        if now < end or any(self._healthy_until.get(c, -1) < end for c in self.cells):
            return self.state
        if self.stage + 1 == len(self.plan.stages):
            actions.append(RolloutComplete())
            return RolloutState.COMPLETE
        self.stage += 1
        return self._begin_stage(actions)

    def _roll_back(self, reason: str, actions: list[Action]) -> RolloutState:
        self.reason = reason
        actions.append(RollBack(frozenset(self.reached), self.plan.previous))
        actions.append(RolloutHalted(reason))
        self.authorised.clear()
        return RolloutState.ROLLED_BACK
