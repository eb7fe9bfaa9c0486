"""The demo's staged release (``--scenario release``): a canary cell on real nodes, rolled back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.demo import demo_release, report_figures

#: Two regions of two cells, four members a cell (two of lineage B), three days.
ARGS = ["--nodes", "16", "--regions", "2", "--cells", "2", "--days", "3", "--seed", "3"]


def run_cli(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["demo", *args, "--out", str(out)])
    return code, capsys.readouterr().out


def test_a_degrading_canary_is_rolled_back_and_no_other_cell_runs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli([*ARGS, "--scenario", "contention,release"], tmp_path / "a", capsys)
    assert code == 0, out
    text = (tmp_path / "a" / "summary.json").read_text()
    data = json.loads(text)
    rel = data["release"]
    canary = rel["canary"]
    assert canary == 3 and rel["waves"] == [[0, 1, 2]]
    # The stages the pipeline signed: shadow in the canary, authority, then the rollback; the
    # wave never started.
    orders = [(s["order"], s["cells"]) for s in rel["stages"]]
    assert orders == [
        ("install-shadow", [canary]),
        ("grant-authority", [canary]),
        ("roll-back to 2.4.1", [canary]),
        ("halted", []),
    ]
    assert rel["state"] == "rolled-back" and "unhealthy digest" in rel["reason"]
    at = [s["at_ms"] for s in rel["stages"]]
    assert demo_release.PUBLISH_AT == at[0] < at[1] < at[2] == rel["rolled_back_at_ms"]
    # Members by what they run: the canary's two lineage-B members ran 3.0.0 with authority
    # between the grant and the rollback, and none did at the end; the fleet's 8 never left.
    timeline = rel["timeline"]
    peak = max(t["members"].get("3.0.0 active", 0) for t in timeline)
    assert peak == rel["nodes_installed_new"] == 2
    assert timeline[-1]["members"] == {"2.4.1 active": 8, "3.0.0 in shadow": 2}
    assert all(sum(v for k, v in t["members"].items() if "active" in k) == 8 for t in timeline)
    # Bytes: every chunk crossed pipeline → region → coordinator → two members at least once.
    assert rel["artifact_bytes"] == 4096 and rel["refusals"] == 0
    assert 4 * rel["artifact_bytes"] < rel["chunk_bytes"] < rel["bytes"]
    assert data["setup"]["nodes"] == 16 + 4 + 2 + 1  # the pipeline node on top
    assert data["verdicts"][0]["ok"]
    page = (tmp_path / "a" / "index.html").read_text()
    assert "staged release (lineage B 2.4.1 → 3.0.0)" in page and "release-roll-back" in page
    if report_figures.available():
        assert (tmp_path / "a" / "release.png").stat().st_size > 0
    # One seed, one summary.json, byte for byte.
    code, out = run_cli([*ARGS, "--scenario", "contention,release"], tmp_path / "b", capsys)
    assert code == 0, out
    assert (tmp_path / "b" / "summary.json").read_text() == text


def test_without_the_scenario_there_is_no_pipeline_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(
        ["--nodes", "4", "--regions", "1", "--cells", "2", "--days", "1", "--scenario", "none"],
        tmp_path, capsys,
    )  # fmt: skip
    assert code == 0, out
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["release"] is None and data["setup"]["nodes"] == 4 + 2 + 1


def test_help_names_the_release_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "release" in out and "canary" in out and "Not simulated yet" not in out
