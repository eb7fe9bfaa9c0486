"""``fleetwire demo`` on the simulator engine: the default scenarios, to a report on disk."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.demo import demo, demo_sim, report_figures
from fleetwire.runtime.demo.demo_behaviour import DAY, HOUR

SMALL = ["--nodes", "24", "--regions", "2", "--cells", "2", "--days", "3"]


def run_cli(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["demo", *args, "--out", str(out)])
    return code, capsys.readouterr().out


def test_the_default_scenarios_run_on_the_simulator_to_a_clean_report_with_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(SMALL, tmp_path, capsys)  # no --engine: sim plays both scenarios
    assert code == 0, out
    assert "on the sim engine" in out
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["setup"]["engine"] == demo_sim.ENGINE
    assert data["setup"]["scenarios"] == ["contention", "partition"]
    assert data["setup"]["nodes"] == 24 + 2 * 2 + 2
    (verdict,) = data["verdicts"]
    assert verdict["ok"] and verdict["checked"] > 0 and verdict["first_violation"] is None
    for family in data["families"]:
        assert family["sent"] == family["delivered"] > 0, family
    assert data["leases"]["grants"] > 0 and data["leases"]["wait_ms_p50"] is not None
    assert data["exceptions"]["escalations"] > 0
    kinds = [e["kind"] for e in data["events"]]
    assert "partition-cut" in kinds and "partition-healed" in kinds
    assert data["partition"]["max_waiting_at_cut_cell"] > 0
    assert data["partition"]["reconciliation_ms"] is not None
    assert len(data["intervals"]) == 4 * 24
    assert sum(i["bytes_sent"] for i in data["intervals"]) == data["coordination"]["total_bytes"]
    d = data["digests"]
    assert d["periodic"] >= 24 * 2 * 8 and d["refused"] == 0 and d["mean_bytes"] > 200
    assert data["coordination"]["telemetry_stream_baseline_bytes_per_node_per_s"] > 0
    page = (tmp_path / "index.html").read_text()
    if report_figures.available():
        assert page.count("data:image/png;base64,") == 4
    assert "clean:" in page and "report:" in out


def test_a_seed_gives_one_summary_whatever_the_workers_and_the_command_reproduces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*SMALL, "--seed", "5", "--loss", "0.05"]
    code, out = run_cli([*args, "--workers", "1"], tmp_path / "one", capsys)
    assert code == 0, out
    first = (tmp_path / "one" / "summary.json").read_bytes()
    code, out = run_cli([*args, "--workers", "2"], tmp_path / "two", capsys)  # real processes
    assert code == 0, out
    assert (tmp_path / "two" / "summary.json").read_bytes() == first
    argv = shlex.split(json.loads(first)["setup"]["command"])
    assert argv[:2] == ["fleetwire", "demo"] and argv[-2:] == ["--engine", "sim"]
    code, out = run_cli(argv[2:], tmp_path / "again", capsys)
    assert code == 0, out
    assert (tmp_path / "again" / "summary.json").read_bytes() == first
    run_cli([*SMALL, "--seed", "6"], tmp_path / "other", capsys)
    assert (tmp_path / "other" / "summary.json").read_bytes() != first


def test_a_cut_cell_stops_granting_while_cut_and_drains_its_backlog_after_healing() -> None:
    # Six days: cell 0 is cut off from its region on days 1–5, longer than the 3-day
    # authority lease; cell 1 stays connected.
    scenario = demo.Scenario(nodes=16, regions=1, cells=2, days=6, scenarios=("partition",))
    results = demo_sim.run(scenario, workers=1)
    cut, healed = DAY, 5 * DAY
    events = {(e.kind, e.detail): e.at_ms for e in results.events}
    lost = events[("authority-lost", "cell 0")]
    regained = events[("authority-regained", "cell 0")]
    assert cut < lost < healed < regained
    assert ("authority-lost", "cell 1") not in events
    hours = results.intervals
    # While it has no authority, and once the last dock lease it granted (8 h) has run out,
    # nothing in cell 0 is used; cell 1 keeps working.
    idle = [i for i in hours if lost + 8 * HOUR <= i.start_ms and i.end_ms <= healed]
    assert idle and all(i.cell0_dock_use_ms == 0 for i in idle)
    assert all(i.cells_with_authority == 1 for i in idle)
    assert sum(i.dock_use_ms for i in idle) > 0
    assert sum(i.cell0_dock_use_ms for i in hours if i.start_ms >= regained) > 0
    # The backlog at its coordinator grows over the cut and drains after healing.
    before = max(i.waiting_at_cut_cell for i in hours if i.end_ms <= cut)
    during = max(i.waiting_at_cut_cell for i in hours if cut <= i.start_ms and i.end_ms <= healed)
    after = hours[-1].waiting_at_cut_cell
    assert during > 2 * max(before, 1) and after <= before
    assert all(v.ok for v in results.verdicts)
    assert all(f.sent == f.delivered for f in results.families)


def test_scenarios_the_simulator_cannot_play_go_to_loopback_or_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *SMALL, "--scenario", "fault", "--engine", "sim", "--out", str(tmp_path)])
    message = str(exit_.value.code)
    assert "does not play fault" in message and "--engine loopback" in message
    assert "\n" not in message and not (tmp_path / "summary.json").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *SMALL, "--workers", "0", "--out", str(tmp_path)])
    assert "--workers must be at least 1" in str(exit_.value.code)
    with pytest.raises(demo_sim.SimFailed, match="does not play skew"):
        demo_sim.run(demo.Scenario(nodes=4, regions=1, cells=1, days=1, scenarios=("skew",)))


def test_light_time_is_an_option_and_the_leases_stay_safe_an_hour_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--nodes", "8", "--regions", "1", "--cells", "2", "--days", "2", "--workers", "1"]
    code, out = run_cli(args, tmp_path / "near", capsys)
    assert code == 0, out
    code, out = run_cli([*args, "--light-scale", "100"], tmp_path / "far", capsys)
    assert code == 0, out
    near = json.loads((tmp_path / "near" / "summary.json").read_text())
    far = json.loads((tmp_path / "far" / "summary.json").read_text())
    assert "--light-scale 100" in far["setup"]["command"]
    assert "--light-scale" not in near["setup"]["command"]
    # The capability advertisements go out at once over a member's first contact: their
    # latency is the light time, a hundred times longer.
    (cap_near,) = [f for f in near["families"] if f["family"] == "capability"]
    (cap_far,) = [f for f in far["families"] if f["family"] == "capability"]
    assert cap_far["latency_ms_p50"] >= 50 * cap_near["latency_ms_p50"]
    assert far["verdicts"][0]["ok"] and far["leases"]["grants"] > 0
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *args, "--light-scale", "2", "--engine", "loopback", "--out", str(tmp_path)])
    assert "--light-scale is an option of the sim engine" in str(exit_.value.code)


def test_a_region_failing_in_a_worker_process_is_one_line_and_no_worker_is_left() -> None:
    # No cells: building the region fails in the worker (a real spawned process).
    broken = demo.Scenario(nodes=4, regions=2, cells=0, days=1, scenarios=("contention",))
    with pytest.raises(demo_sim.SimFailed) as failed:
        demo_sim.run(broken, workers=2)
    message = str(failed.value)
    assert message.startswith("a simulator worker failed in region ") and "\n" not in message
    assert "ZeroDivisionError" in message and "Traceback" in failed.value.detail
    import multiprocessing

    assert multiprocessing.active_children() == []


def test_a_cut_as_long_as_the_bundle_lifetime_is_not_a_failed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Cut off for the whole 30-day lifetime: a renewal sent as the cut began waits all of it
    # and then the light time, so it expires on the way — the run says so and still passes.
    args = ["--nodes", "4", "--regions", "1", "--cells", "1", "--days", "32"]
    code, out = run_cli([*args, "--scenario", "partition"], tmp_path, capsys)
    assert code == 0, out
    data = json.loads((tmp_path / "summary.json").read_text())
    p = data["partition"]
    assert p["healed_at_ms"] - p["cut_at_ms"] == 30 * DAY
    assert p["cut_cell_authority_regained_at_ms"] > p["healed_at_ms"]
    lost = {f["family"]: f["sent"] - f["delivered"] for f in data["families"]}
    assert lost == {"capability": 0, "commitment": 0, "exception": 0, "lease": 1, "digest": 0}
