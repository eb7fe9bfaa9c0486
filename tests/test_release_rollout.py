"""The staged rollout: canary cell, shadow mode, soak, waves, rollback, version discipline."""

from __future__ import annotations

import pytest
from fleetwire.protocol.errors import LocalProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.census import VersionCensus
from fleetwire.protocol.release.errors import RolloutRefused, TooManyMajorVersions
from fleetwire.protocol.release.manifest import Version
from fleetwire.protocol.release.rollout import (
    TRANSITIONS,
    CellInstalled,
    Event,
    GrantAuthority,
    Halt,
    HealthDigest,
    InstallShadow,
    InteractionCases,
    RollBack,
    Rollout,
    RolloutComplete,
    RolloutHalted,
    RolloutPlan,
    RolloutState,
    ShadowReport,
    Start,
    Tick,
)
from hypothesis import given, target
from hypothesis import strategies as st

HOUR = 3_600_000
SOAK = 24 * HOUR
# 3 regions x 4 cells: cell = 10 * region + k.
CELLS = [10 * region + k for region in range(3) for k in range(4)]


def census(majors: dict[int, list[int]] | None = None) -> VersionCensus:
    """One node per cell running lineage B 2.x, or what ``majors`` says for a cell."""
    out = VersionCensus()
    for node, cell in enumerate(CELLS):
        for index, major in enumerate((majors or {}).get(cell, [2])):
            out.observe(1000 * index + node, cell // 10, cell, [("B", major)])
    return out


def plan(**changes: object) -> RolloutPlan:
    fields: dict[str, object] = dict(
        release_id=ContentId.of(b"release B 3.0.0"),
        lineage="B",
        version=Version(3, 0, 0),
        previous=Version(2, 4, 1),
        canary=0,
        waves=(frozenset({1, 2, 3, 10, 11}), frozenset(CELLS) - {0, 1, 2, 3, 10, 11}),
        soak=SOAK,
        shadow_samples=50,
    )
    fields.update(changes)
    return RolloutPlan(**fields)  # type: ignore[arg-type]


def prove_stage(rollout: Rollout, now: int) -> tuple[list[object], int]:
    """Install, agree in shadow, soak healthy: what a good release does in one stage."""
    actions: list[object] = []
    for cell in sorted(rollout.cells):
        actions += rollout.handle(CellInstalled(cell), now)
    if rollout.stage == 0:
        actions += rollout.handle(InteractionCases(rollout.plan.canary, passed=12, failed=0), now)
    for cell in sorted(rollout.cells):
        actions += rollout.handle(ShadowReport(cell, agreed=60, diverged=0), now)
    granted = now
    now += SOAK
    stage_cells = sorted(rollout.cells)
    for cell in stage_cells:
        actions += rollout.handle(HealthDigest(cell, True, granted + SOAK), now)
    assert granted >= 0
    return actions, now + 1


def test_a_good_release_reaches_every_cell_through_the_canary_and_two_waves() -> None:
    rollout = Rollout(plan())
    actions: list[object] = rollout.handle(Start(census()), 0)
    assert actions == [InstallShadow(0, frozenset({0}))]
    now = 1
    for _ in range(3):
        more, now = prove_stage(rollout, now)
        actions += more
    installs = [a for a in actions if isinstance(a, InstallShadow)]
    grants = [a for a in actions if isinstance(a, GrantAuthority)]
    assert [a.cells for a in installs] == list(rollout.plan.stages)
    assert [a.cells for a in grants] == list(rollout.plan.stages)
    assert actions[-1] == RolloutComplete()
    assert rollout.state is RolloutState.COMPLETE
    # Each stage's install comes after the previous stage's grant: strictly staged.
    order = [(type(a).__name__, getattr(a, "stage", None)) for a in actions]
    for stage in (1, 2):
        assert order.index(("GrantAuthority", stage - 1)) < order.index(("InstallShadow", stage))


def test_authority_waits_for_enough_agreeing_shadow_samples_from_every_cell() -> None:
    rollout = Rollout(plan(canary=0, waves=(frozenset({1}),)))
    rollout.handle(Start(census()), 0)
    rollout.handle(CellInstalled(0), 1)
    assert rollout.state is RolloutState.SHADOW
    assert rollout.handle(ShadowReport(0, agreed=49, diverged=0), 2) == []
    assert rollout.handle(ShadowReport(0, agreed=50, diverged=0), 3) == []  # gate not yet
    assert rollout.handle(InteractionCases(0, passed=12, failed=0), 4) == [
        GrantAuthority(0, frozenset({0}))
    ]


def test_a_failed_cross_version_interaction_case_in_the_canary_halts_the_rollout() -> None:
    rollout = Rollout(plan())
    rollout.handle(Start(census()), 0)
    rollout.handle(CellInstalled(0), 1)
    rollout.handle(ShadowReport(0, agreed=500, diverged=0), 2)
    actions = rollout.handle(InteractionCases(0, passed=11, failed=1), 3)
    assert actions == [
        RollBack(frozenset({0}), Version(2, 4, 1)),
        RolloutHalted("cell 0: 1 cross-version interaction cases failed"),
    ]


def test_reports_that_came_while_installing_count_once_the_stage_is_installed() -> None:
    rollout = Rollout(plan(waves=(frozenset({1}),)))
    rollout.handle(Start(census()), 0)
    rollout.handle(InteractionCases(0, passed=12, failed=0), 1)
    rollout.handle(ShadowReport(0, agreed=50, diverged=0), 2)
    assert rollout.state is RolloutState.INSTALLING
    assert rollout.handle(CellInstalled(0), 3) == [GrantAuthority(0, frozenset({0}))]


def test_the_next_stage_waits_for_the_soak_and_for_every_cell_of_the_stage() -> None:
    rollout = Rollout(plan(canary=0, waves=(frozenset({1, 2}), frozenset({3}))))
    rollout.handle(Start(census()), 0)
    rollout.handle(CellInstalled(0), 0)
    rollout.handle(InteractionCases(0, 12, 0), 0)
    rollout.handle(ShadowReport(0, 50, 0), 100)  # granted at 100
    # Healthy, but observed before the soak ends: not enough, however late it is now.
    assert rollout.handle(HealthDigest(0, True, 100 + SOAK - 1), 100 + SOAK + 5) == []
    assert rollout.handle(Tick(), 100 + 2 * SOAK) == []
    assert rollout.handle(HealthDigest(0, True, 100 + SOAK), 100 + 2 * SOAK) == [
        InstallShadow(1, frozenset({1, 2}))
    ]
    rollout.handle(CellInstalled(1), 0)
    rollout.handle(CellInstalled(2), 0)
    rollout.handle(ShadowReport(1, 50, 0), 10)
    rollout.handle(ShadowReport(2, 50, 0), 20)  # granted at 20
    # Cell 2 stays silent: the stage holds, a silent cell never lets a rollout through.
    assert rollout.handle(HealthDigest(1, True, 20 + SOAK), 20 + SOAK) == []
    assert rollout.handle(Tick(), 20 + 10 * SOAK) == []
    assert rollout.stage == 1
    assert rollout.handle(HealthDigest(2, True, 20 + SOAK), 20 + 10 * SOAK) == [
        InstallShadow(2, frozenset({3}))
    ]
    # A digest received early but observed late enough counts when the soak ends (Tick).
    rollout.handle(CellInstalled(3), 0)
    rollout.handle(ShadowReport(3, 50, 0), 0)
    assert rollout.handle(HealthDigest(3, True, SOAK), SOAK - 1) == []
    assert rollout.handle(Tick(), SOAK) == [RolloutComplete()]


def test_shadow_divergence_in_the_canary_rolls_it_back_and_halts_the_fleet() -> None:
    rollout = Rollout(plan())
    actions: list[object] = rollout.handle(Start(census()), 0)
    actions += rollout.handle(CellInstalled(0), 1)
    actions += rollout.handle(ShadowReport(0, agreed=40, diverged=2), 2)
    assert actions[-2:] == [
        RollBack(frozenset({0}), Version(2, 4, 1)),
        RolloutHalted("cell 0: 2 shadow outputs diverged from the active release"),
    ]
    assert rollout.state is RolloutState.ROLLED_BACK
    # Nothing moves it again: not agreement, not health, not time.
    for event in (ShadowReport(0, 500, 0), HealthDigest(0, True, 10 * SOAK), Tick()):
        assert rollout.handle(event, 10 * SOAK) == []
    assert not any(isinstance(a, GrantAuthority) for a in actions)
    assert rollout.authorised == set()


def test_a_canary_whose_digests_degrade_is_rolled_back_and_no_wave_ever_gets_authority() -> None:
    rollout = Rollout(plan())
    actions: list[object] = rollout.handle(Start(census()), 0)
    actions += rollout.handle(CellInstalled(0), 1)
    actions += rollout.handle(InteractionCases(0, 12, 0), 1)
    actions += rollout.handle(ShadowReport(0, 50, 0), 2)
    actions += rollout.handle(HealthDigest(0, True, 2 + HOUR), 2 + HOUR)
    actions += rollout.handle(HealthDigest(0, False, 2 + 5 * HOUR), 2 + 5 * HOUR)
    assert isinstance(actions[-2], RollBack) and actions[-2].cells == {0}
    assert "unhealthy" in rollout.reason
    grants = [a for a in actions if isinstance(a, GrantAuthority)]
    assert [g.cells for g in grants] == [frozenset({0})]
    # Healthy digests later, however many, start nothing.
    assert rollout.handle(HealthDigest(0, True, 3 * SOAK), 3 * SOAK) == []
    assert rollout.handle(CellInstalled(1), 3 * SOAK) == []


def test_a_wave_that_degrades_rolls_back_every_cell_reached() -> None:
    rollout = Rollout(plan())
    rollout.handle(Start(census()), 0)
    _, now = prove_stage(rollout, 1)
    assert rollout.stage == 1
    rollout.handle(CellInstalled(1), now)
    actions = rollout.handle(HealthDigest(11, False, now), now)
    assert actions[0] == RollBack(frozenset({0, 1, 2, 3, 10, 11}), Version(2, 4, 1))


def test_an_operator_halt_rolls_back() -> None:
    rollout = Rollout(plan())
    rollout.handle(Start(census()), 0)
    assert rollout.handle(Halt("conformance gate failed"), 1)[-1] == RolloutHalted(
        "halted by operator: conformance gate failed"
    )


def test_start_twice_is_a_callers_bug() -> None:
    rollout = Rollout(plan())
    rollout.handle(Start(census()), 0)
    with pytest.raises(LocalProtocolError):
        rollout.handle(Start(census()), 1)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"waves": (frozenset(),)}, "stage 1 names no cell"),
        ({"waves": (frozenset({0, 1}),)}, "two stages"),
        ({"soak": 0}, "positive"),
        ({"previous": Version(3, 0, 0)}, "does not follow"),
    ],
)
def test_bad_plans_are_refused(changes: dict[str, object], words: str) -> None:
    with pytest.raises(RolloutRefused, match=words) as caught:
        Rollout(plan(**changes))
    assert caught.value.code == "rollout-refused"


# --- version discipline -----------------------------------------------------------------


def test_a_rollout_that_makes_a_cell_run_four_majors_is_refused_with_a_reason() -> None:
    rollout = Rollout(plan(version=Version(4, 0, 0), previous=Version(3, 1, 0)))
    crowded = census({11: [1, 2, 3]})
    with pytest.raises(TooManyMajorVersions) as caught:
        rollout.handle(Start(crowded), 0)
    assert caught.value.code == "major-versions-exceeded"
    assert caught.value.message == (
        "rollout of B 4.x refused: cell 11 already runs majors 1, 2, 3, and with 4 it would "
        "run 4 (at most 3); retire one first"
    )
    assert rollout.state is RolloutState.PLANNED  # nothing installed


def test_a_rollout_that_makes_a_region_run_four_majors_is_refused() -> None:
    # Each cell of region 2 runs at most two majors; the region as a whole runs three.
    spread = census({20: [1, 2], 21: [2, 3]})
    rollout = Rollout(plan(version=Version(4, 0, 0), previous=Version(3, 1, 0)))
    with pytest.raises(TooManyMajorVersions, match="region 2 already runs majors 1, 2, 3"):
        rollout.handle(Start(spread), 0)


def test_a_minor_release_of_a_running_major_fits_and_other_lineages_do_not_count() -> None:
    crowded = census({11: [1, 2, 3]})
    crowded.observe(5000, 1, 11, [("A", 7), ("A", 8)])
    rollout = Rollout(plan(version=Version(3, 2, 0), previous=Version(3, 1, 0)))
    assert rollout.handle(Start(crowded), 0) == [InstallShadow(0, frozenset({0}))]


# --- property: authority only ever follows the rules --------------------------------------

_SMALL = dict(
    canary=0,
    waves=(frozenset({1, 2}), frozenset({3})),
    soak=100,
    shadow_samples=3,
    interaction_cases=2,
)


def _draw_event(data: st.DataObject, rollout: Rollout, now: int) -> Event:
    """Mostly events about the current stage's cells (so runs get far), sometimes any cell."""
    cell = data.draw(st.sampled_from(sorted(rollout.cells)) | st.integers(0, 3))
    kind = data.draw(st.integers(0, 21))
    if kind < 4:
        return CellInstalled(cell)
    if kind >= 20:
        return InteractionCases(cell, data.draw(st.integers(0, 3)), int(kind == 21))
    if kind < 9:
        return ShadowReport(cell, data.draw(st.integers(0, 5)), int(kind == 8))
    if kind < 16:
        observed = now + data.draw(st.integers(-150, 150))
        return HealthDigest(cell, kind != 15, max(0, observed))
    return Tick()


@given(st.data())
def test_property_authority_is_granted_only_after_shadow_agreement_and_a_proven_stage(
    data: st.DataObject,
) -> None:
    rollout = Rollout(plan(**_SMALL))
    now = 0
    rollout.handle(Start(census()), now)
    agreed: dict[int, int] = {}
    diverged = unhealthy = False
    granted_at: dict[int, int] = {}
    installs_seen: set[int] = set()
    gate = 0
    healthy_at: dict[int, int] = {}
    for _ in range(data.draw(st.integers(0, 80))):
        now += data.draw(st.integers(0, 60))
        event = _draw_event(data, rollout, now)
        before, stage_before, reached = rollout.state, rollout.stage, set(rollout.reached)
        actions = rollout.handle(event, now)
        assert set(TRANSITIONS[before]) >= ({type(event)} if actions else set())
        if isinstance(event, ShadowReport):
            agreed[event.cell] = max(agreed.get(event.cell, 0), event.agreed)
            diverged |= (
                event.diverged > 0
                and event.cell in rollout.plan.stages[stage_before]
                and before in (RolloutState.INSTALLING, RolloutState.SHADOW)
            )
        if isinstance(event, InteractionCases) and event.cell == 0 and stage_before == 0:
            gate = max(gate, event.passed)
            diverged |= event.failed > 0 and before in (
                RolloutState.INSTALLING,
                RolloutState.SHADOW,
            )
        if isinstance(event, HealthDigest):
            unhealthy |= not event.healthy and event.cell in reached
            if event.healthy:
                healthy_at[event.cell] = max(healthy_at.get(event.cell, -1), event.observed_at)
        for action in actions:
            if isinstance(action, GrantAuthority):
                assert not diverged and not unhealthy
                assert all(agreed.get(cell, 0) >= 3 for cell in action.cells)
                assert action.stage > 0 or gate >= 2
                for cell in action.cells:
                    granted_at[cell] = now
                if action.stage > 0:  # the previous stage soaked, healthy at its end
                    previous = rollout.plan.stages[action.stage - 1]
                    for cell in previous:
                        assert healthy_at[cell] >= granted_at[cell] + 100
            if isinstance(action, InstallShadow) and action.stage > 0:
                for cell in rollout.plan.stages[action.stage - 1]:
                    assert now >= granted_at[cell] + 100
                    assert healthy_at.get(cell, -1) >= granted_at[cell] + 100
                installs_seen.add(action.stage)
        if diverged or unhealthy:
            assert rollout.state is RolloutState.ROLLED_BACK
            assert rollout.authorised == set()
    target(float(len(installs_seen)))  # steer towards runs that reach later stages
