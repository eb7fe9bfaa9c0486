"""``fleetwire demo`` end to end: a small fleet through the real roles, to a report on disk."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.demo import demo

SMALL = ["--nodes", "16", "--regions", "1", "--cells", "2", "--days", "3"]


def run_cli(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    # These are the loopback engine's tests (the sim engine's are in test_demo_sim.py).
    engine = [] if "--engine" in args else ["--engine", "loopback"]
    code = main(["demo", *args, *engine, "--out", str(out)])
    return code, capsys.readouterr().out


def test_the_printed_command_reproduces_summary_json_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli([*SMALL, "--seed", "7"], tmp_path / "first", capsys)
    assert code == 0, out
    first = (tmp_path / "first" / "summary.json").read_bytes()
    command = json.loads(first)["setup"]["command"]
    argv = shlex.split(command)
    assert argv[:2] == ["fleetwire", "demo"] and "--seed" in argv
    code, out = run_cli(argv[2:], tmp_path / "again", capsys)
    assert code == 0, out
    assert (tmp_path / "again" / "summary.json").read_bytes() == first
    # …and the seed matters: another seed is another run.
    code, _ = run_cli([*SMALL, "--seed", "8"], tmp_path / "other", capsys)
    assert (tmp_path / "other" / "summary.json").read_bytes() != first


def test_default_scenarios_report_a_clean_verdict_and_the_partition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(SMALL, tmp_path, capsys)
    assert code == 0, out
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["setup"]["scenarios"] == ["contention", "partition"]
    (verdict,) = data["verdicts"]
    assert verdict["ok"] and verdict["checked"] > 0 and verdict["first_violation"] is None
    for family in data["families"]:
        assert family["sent"] == family["delivered"] > 0, family
    assert data["leases"]["grants"] > 0 and data["leases"]["wait_ms_p50"] is not None
    kinds = [e["kind"] for e in data["events"]]
    assert "partition-cut" in kinds and "partition-healed" in kinds
    assert data["partition"]["max_waiting_at_cut_cell"] > 0
    assert data["partition"]["reconciliation_ms"] is not None
    # One value per virtual hour: three days of traffic and one to drain.
    assert len(data["intervals"]) == 4 * 24
    assert sum(i["bytes_sent"] for i in data["intervals"]) == data["coordination"]["total_bytes"]
    assert data["coordination"]["total_bytes"] > 0
    # Members digest their telemetry: a periodic digest every 3 hours, none refused, and
    # streaming the raw samples instead would cost far more than all the coordination traffic.
    d = data["digests"]
    assert d["periodic"] >= 16 * 2 * 8 and d["refused"] == 0 and d["mean_bytes"] > 200
    c = data["coordination"]
    assert c["telemetry_stream_baseline_bytes_per_node_per_s"] > 10 * c["mean_bytes_per_node_per_s"]
    page = (tmp_path / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "clean:" in page and "invariant verdict" in out
    assert "report:" in out


def test_a_long_cut_lapses_the_cells_authority_until_it_heals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Six days: cell 0 is cut off on days 1–5, longer than its 3-day authority lease.
    args = ["--nodes", "8", "--regions", "1", "--cells", "2", "--days", "6"]
    code, out = run_cli([*args, "--scenario", "partition"], tmp_path, capsys)
    assert code == 0, out
    data = json.loads((tmp_path / "summary.json").read_text())
    p = data["partition"]
    assert (p["cut_at_ms"], p["healed_at_ms"]) == (demo.DAY, 5 * demo.DAY)
    lost = p["cut_cell_authority_lost_at_ms"]
    regained = p["cut_cell_authority_regained_at_ms"]
    assert lost is not None and p["cut_at_ms"] < lost < p["healed_at_ms"]
    assert regained is not None and regained > p["healed_at_ms"]
    # Only the cut-off cell lost its authority; the other cell kept granting throughout.
    lapses = [e for e in data["events"] if e["kind"] == "authority-lost"]
    assert [e["detail"] for e in lapses] == ["cell 0"]
    assert p["min_cells_with_authority_after_first_grants"] == 1
    # What the cut cost: cell 0's docks stood idler than the other cell's over the cut.
    assert p["cut_cell_dock_utilisation_during_cut"] < p["other_cells_dock_utilisation_during_cut"]
    assert data["verdicts"][0]["ok"]


def test_contention_makes_claims_wait(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--nodes", "16", "--regions", "1", "--cells", "2", "--days", "2"]
    run_cli([*args, "--scenario", "none"], tmp_path / "calm", capsys)
    run_cli([*args, "--scenario", "contention"], tmp_path / "busy", capsys)
    calm = json.loads((tmp_path / "calm" / "summary.json").read_text())
    busy = json.loads((tmp_path / "busy" / "summary.json").read_text())
    assert calm["partition"] is None and busy["partition"] is None
    assert (calm["setup"]["docks_per_cell"], busy["setup"]["docks_per_cell"]) == (4, 2)
    assert busy["leases"]["mean_dock_utilisation"] > calm["leases"]["mean_dock_utilisation"]
    assert busy["leases"]["wait_ms_p50"] > calm["leases"]["wait_ms_p50"]
    assert busy["verdicts"][0]["ok"] and calm["verdicts"][0]["ok"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "meteor"], "unknown scenario 'meteor'"),
        (["--nodes", "3"], "--nodes must be at least --regions × --cells"),
        (["--loss", "2"], "--loss is a probability"),
    ],
)
def test_bad_options_are_one_line_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *args, "--out", str(tmp_path)])
    err = str(exit_.value.code) + capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "summary.json").exists()


def test_help_documents_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for name in ("contention", "partition", "skew", "fault", "isolation", "release"):
        assert f"  {name} " in text
    assert "Not simulated yet" not in text  # every scenario of the issue now plays
    assert "pip install 'fleetwire[report]'" in text


def test_a_double_booking_in_the_trace_fails_the_verdict_and_the_run(tmp_path: Path) -> None:
    from fleetwire.protocol.coordination import invariants
    from fleetwire.runtime.demo import report

    tally = demo._Tally()
    t = demo.START
    tally.lease_trace += [
        invariants.Granted("cell-0/dock-0", 1001, 1, t + demo.HOUR, 10, t, t),
        invariants.Granted("cell-0/dock-0", 1002, 2, t + demo.HOUR, 10, t + 60_000, t + 60_000),
        invariants.Used("cell-0/dock-0", 1001, 1, t, t + 900_000, t),
        invariants.Used("cell-0/dock-0", 1002, 2, t + 600_000, t + 1_500_000, t + 600_000),
    ]
    results = demo._results(demo.Scenario(nodes=2, regions=1, cells=1, days=1), tally)
    (verdict,) = results.verdicts
    assert not verdict.ok and verdict.violations >= 1
    assert verdict.first_violation is not None and "cell-0/dock-0" in verdict.first_violation
    page = report.write(results, tmp_path).html.read_text()
    assert "class='bad'" in page and "cell-0/dock-0" in page


def test_a_correlated_fault_is_contained_in_its_lineage_and_region(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two regions of one cell each: lineage B of region 0 has the defect; region 1's B has not.
    args = ["--nodes", "20", "--regions", "2", "--cells", "1", "--days", "3"]
    code, out = run_cli([*args, "--scenario", "fault"], tmp_path, capsys)
    assert code == 0, out
    data = json.loads((tmp_path / "summary.json").read_text())
    k = data["containment"]
    assert k["faulty_nodes"] == 5
    assert k["quarantined_faulty"] == 5 and k["quarantined_healthy"] == 0
    assert k["quarantined_by_lineage"] == {"B": 5}
    assert k["cluster_escalations"] == 1
    assert k["first_quarantine_at_ms"] >= demo.FAULT_FROM
    clusters = [e for e in data["events"] if e["kind"] == "cluster-escalated"]
    assert [e["detail"] for e in clusters] == ["lineage 'B' quarantined in cell 0: 3 nodes"]
    assert max(i["quarantined"] for i in data["intervals"]) == 5
    # The defect crossed the feedstock metric's control limits: event-driven digests went out
    # at once, and the coordinators saw samples out of control in them.
    assert data["digests"]["event_driven"] > 0
    assert data["digests"]["anomalous_at_coordinators"] >= data["digests"]["event_driven"]
    assert "correlated fault" in (tmp_path / "index.html").read_text()


def test_summary_json_does_not_depend_on_the_interpreters_hash_seed(tmp_path: Path) -> None:
    # Two real processes with different string hashing: nothing in a run may follow set order.
    args = ["--nodes", "20", "--regions", "2", "--cells", "1", "--days", "3",
            "--scenario", "contention,partition,fault"]  # fmt: skip
    code = "import sys; from fleetwire.runtime.cli.cli import main; sys.exit(main(sys.argv[1:]))"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = tmp_path / hash_seed
        done = subprocess.run(
            [sys.executable, "-c", code, "demo", *args, "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "1" / "summary.json").read_bytes() == (
        tmp_path / "2" / "summary.json"
    ).read_bytes()


def test_a_30_day_cut_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The autonomy window is 30 days: bundles live that long, so a cell cut off for all of it
    # still delivers its backlog (before, a 7-day lifetime expired what waited at the cut).
    args = ["--nodes", "4", "--regions", "1", "--cells", "1", "--days", "32"]
    code, out = run_cli([*args, "--scenario", "partition"], tmp_path, capsys)
    assert code == 0, out
    data = json.loads((tmp_path / "summary.json").read_text())
    p = data["partition"]
    assert (p["cut_at_ms"], p["healed_at_ms"]) == (demo.DAY, 31 * demo.DAY)
    assert data["setup"]["lifetime_days"] == 30
    assert p["max_waiting_at_cut_cell"] > 0
    for family in data["families"]:
        assert family["sent"] == family["delivered"] > 0, family
    # The exceptions escalated across the cut waited it out and still arrived.
    (exceptions,) = [f for f in data["families"] if f["family"] == "exception"]
    assert exceptions["latency_ms_p95"] > 20 * demo.DAY
    assert "none: every message sent arrived" in (tmp_path / "index.html").read_text()


def test_a_misbehaving_region_is_severed_everywhere_and_lifted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three regions of one cell: region 2's cell floods region 0's coordinator from day 2.
    args = ["--nodes", "12", "--regions", "3", "--cells", "1", "--days", "4"]
    code, out = run_cli([*args, "--scenario", "isolation"], tmp_path, capsys)
    assert code == 0, out
    data = json.loads((tmp_path / "summary.json").read_text())
    iso = data["isolation"]
    assert demo.FAULT_FROM <= iso["severed_at_ms"] < iso["lifted_at_ms"]
    # Region 0 signed a sever and a lift; it and region 1 verified and applied both; nothing
    # was refused, and the flood was stopped at the boundary while the region was severed.
    assert iso["orders_issued"] == 2 and iso["orders_applied"] == 4 and iso["orders_refused"] == 0
    # Region 1 got both as version-2 isolation order messages (type 15), not carried inside
    # another message.
    assert iso["orders_received"] == 2
    assert 0 < iso["refused_at_boundary"] < iso["flood_sent"]
    details = sorted(e["detail"] for e in data["events"] if e["kind"].startswith("isolation"))
    assert details == ["region 2 at region 0"] * 2 + ["region 2 at region 1"] * 2
    assert data["verdicts"][0]["ok"]
    assert "isolation of the misbehaving region" in (tmp_path / "index.html").read_text()
