"""``fleetwire demo --scenario skew``: nodes pinned at protocol versions 1 and 2 among version-3
nodes still coordinate, each writing to a peer at the version that peer advertised it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.demo import demo

# Two regions of two cells: cell 0's members at v1, region 2's cell coordinators at v2.
SKEW = ["--nodes", "12", "--regions", "2", "--cells", "2", "--days", "3", "--scenario", "skew"]


def run(out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    code = main(["demo", *SKEW, *extra, "--out", str(out)])
    assert code == 0, capsys.readouterr().out
    return json.loads((out / "summary.json").read_text())


def test_the_skew_scenario_pins_versions_where_it_says() -> None:
    s = demo.Scenario(nodes=12, regions=2, cells=2, scenarios=("skew",))
    members = s.members()
    assert {s.version_of(m) for m, c in members.items() if c == 0} == {1}
    assert {s.version_of(m) for m, c in members.items() if c != 0} == {3}
    assert [s.version_of(s.cell_coordinator(c)) for c in range(4)] == [3, 3, 2, 2]
    assert {s.version_of(r) for r in (1, 2)} == {3}
    # Without the scenario everyone speaks the newest version.
    plain = demo.Scenario(nodes=12, regions=2, cells=2, scenarios=())
    assert {plain.version_of(n) for n in (1, 10, *members)} == {3}


def test_a_mixed_fleet_coordinates_and_counts_each_version_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run(tmp_path, capsys)
    assert data["verdicts"][0]["ok"] and data["verdicts"][0]["checked"] > 0
    for family in data["families"]:
        assert family["sent"] == family["delivered"] > 0, family
    # Commitments kept: every offer was accepted (an offer and its acceptance each way).
    assert data["leases"]["grants"] > 0 and data["leases"]["claims_given_up"] == 0
    skew = data["skew"]
    assert skew["nodes_by_version"] == {"v1": 3, "v2": 2, "v3": 13}
    # Every writer → reader pair this fleet has carried messages; none other appears.
    pairs = {"v1->v1", "v1->v3", "v3->v1", "v2->v3", "v3->v2", "v3->v3"}
    assert set(skew["messages"]) == pairs
    assert all(n > 0 for n in skew["messages"].values())
    # All three versions went on the wire, and nothing was unwritable or refused.
    assert set(skew["written_at"]) == {"v1", "v2", "v3"}
    assert all(n > 0 for n in skew["written_at"].values())
    assert skew["refused"] == {}
    assert sum(skew["messages"].values()) == sum(skew["written_at"].values())
    html = (tmp_path / "index.html").read_text()
    assert "messages by writer → reader version" in html
    assert "Not simulated yet" not in html


def test_pinned_writers_never_write_above_their_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the version-3 nodes in version-3 company write version 3: a v1 or v2 node, and a
    # v3 node writing to one, stay at or below the reader's version.
    skew = run(tmp_path, capsys)["skew"]
    at_v3 = skew["written_at"]["v3"]
    assert at_v3 <= skew["messages"]["v3->v3"]
    assert skew["written_at"]["v1"] >= skew["messages"]["v1->v1"] + skew["messages"]["v1->v3"]


def test_summary_json_with_skew_is_byte_for_byte_per_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path / "a", capsys, "--seed", "3")
    run(tmp_path / "b", capsys, "--seed", "3")
    first = (tmp_path / "a" / "summary.json").read_bytes()
    assert (tmp_path / "b" / "summary.json").read_bytes() == first
    assert "skew" in json.loads(first)["setup"]["command"]
