"""``fleetwire demo --sweep``: one scenario at growing fleet sizes, to sweep.json and sweep.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.demo import demo, demo_sweep


def test_shape_adds_cells_not_members_per_cell() -> None:
    base = demo.Scenario(regions=3)
    assert demo_sweep.shape(base, 120, 10).cells == 4
    assert demo_sweep.shape(base, 1200, 10).cells == 40
    assert demo_sweep.shape(base, 5, 10).cells == 1


def test_sweep_writes_a_point_per_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo", "--sweep", "24,8", "--sweep-days", "0.5", "--regions", "1",
            "--scenario", "contention", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "sweep.json").read_text())
    points = data["points"]
    assert [(p["members"], p["cells"], p["nodes"]) for p in points] == [(8, 1, 10), (24, 3, 28)]
    for p in points:
        assert p["verdict_ok"] and p["bytes_per_node_per_s"] > 0 and p["wall_seconds"] > 0
    assert data["scenario"] == {"regions": 1, "days": 0.5, "seed": 1, "scenarios": ["contention"]}
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")
    assert "scaling study" in out
    assert not (tmp_path / "summary.json").exists()  # a sweep is not a single run's report


def test_bad_sizes_are_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--sweep", "10,lots"])
    assert "not a comma-separated list of sizes" in capsys.readouterr().err


def test_the_simulator_engine_sweeps_with_the_lease_roles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The discrete-event engine: sizes are nodes (cells of 20 under one hub), real lease roles
    # as agent handlers, the invariant checker over every grant and use.
    args = ["demo", "--sweep", "41,81", "--engine", "sim", "--sweep-days", "0.25",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    assert "(sim)" in capsys.readouterr().out
    points = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert [(p["nodes"], p["cells"], p["engine"]) for p in points] == [(41, 2, "sim"), (81, 4, "sim")]
    for p in points:
        assert p["verdict_ok"] and p["grants"] > 0 and p["decision_wait_ms_p50"] is not None
        assert p["bytes_per_node_per_s"] > 0 and p["cpu_seconds"] > 0
    # The same seed gives the same figures (wall time and memory aside).
    again = json.loads((tmp_path / "sweep.json").read_text())["points"]
    main(args)
    capsys.readouterr()
    rerun = json.loads((tmp_path / "sweep.json").read_text())["points"]
    machine = {"wall_seconds", "cpu_seconds", "peak_rss_mib"}
    assert [{k: v for k, v in p.items() if k not in machine} for p in rerun] == [
        {k: v for k, v in p.items() if k not in machine} for p in again
    ]
