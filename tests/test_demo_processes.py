"""``fleetwire demo --processes``: real ``fleetwire node`` processes on 127.0.0.1, one report.

The run is the CI size: 8 members in 2 cells under 1 region (11 OS processes, TCPCLv4, SQLite
stores), one virtual day at a virtual hour per half second. Its report must have the shape of
the simulated run of the same fleet: the same sections and figures, a clean lease verdict
over the trace of every process, every message family sent and delivered.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.demo import demo, demo_processes
from fleetwire.runtime.demo.demo_process import part_of
from fleetwire.runtime.node.config import ConfigError, parse_config

SHAPE = ["--cells", "2", "--regions", "1", "--days", "1", "--scenario", "contention"]


def headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_processes_report_has_the_simulated_runs_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--processes", "8", "--time-scale", "7200", *SHAPE[4:],
                 "--out", str(tmp_path / "real")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert main(["demo", "--nodes", "8", *SHAPE, "--out", str(tmp_path / "sim")]) == 0
    capsys.readouterr()
    real = json.loads((tmp_path / "real" / "summary.json").read_text())
    sim = json.loads((tmp_path / "sim" / "summary.json").read_text())
    # The same figures, section by section.
    assert sorted(real) == sorted(sim)
    for section in ("setup", "coordination", "leases", "digests", "containment", "exceptions"):
        assert sorted(real[section]) == sorted(sim[section]), section
    assert real["setup"]["nodes"] == sim["setup"]["nodes"] == 11
    assert real["setup"]["engine"].startswith("processes:")
    assert real["setup"]["command"].startswith("fleetwire demo --processes 8")
    assert len(real["intervals"]) == len(sim["intervals"]) == 48
    # One lease verdict over every process's grants and uses, and it is clean.
    (verdict,) = real["verdicts"]
    assert verdict["ok"] and verdict["checked"] > 0 and verdict["first_violation"] is None
    # Every family was sent between processes, and all of it arrived.
    assert [f["family"] for f in real["families"]] == [f["family"] for f in sim["families"]]
    for family in real["families"]:
        assert family["sent"] == family["delivered"] > 0, family
    assert real["leases"]["grants"] > 0 and real["leases"]["claims_granted"] > 0
    assert real["digests"]["periodic"] > 0 and real["digests"]["refused"] == 0
    # The bytes were counted on the real links: every hour of traffic put some on the wire.
    assert real["coordination"]["total_bytes"] > 0
    assert sum(1 for i in real["intervals"][:24] if i["bytes_sent"] > 0) >= 20
    assert max(i["cells_with_authority"] for i in real["intervals"]) == 2
    page = (tmp_path / "real" / "index.html").read_text()
    assert headings(page) == headings((tmp_path / "sim" / "index.html").read_text())
    assert page.count("data:image/png;base64,") == 4
    assert "TCPCLv4 on 127.0.0.1" in page


def test_processes_pin_the_skew_scenarios_nodes_and_count_each_version_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Cell 0's members are pinned at version 1 and the cell coordinators at version 2, in
    # their own configuration files, as an operator pins a node.
    scenario = demo.Scenario(nodes=8, regions=1, cells=2, days=1, scenarios=("skew",))
    (tmp_path / "laid").mkdir()
    laid = demo_processes._layout(scenario, 7200, tmp_path / "laid")
    pinned = {
        node: parse_config(tomllib.loads(config.read_text()), config.parent).protocol_version
        for node, config, _ in laid
    }
    assert pinned == {node: scenario.version_of(node) for node, _, _ in laid}
    assert sorted(pinned.values()) == [1] * 4 + [2] * 2 + [3] * 5
    code = main(["demo", "--processes", "8", "--time-scale", "7200", "--days", "1",
                 "--scenario", "contention,skew", "--out", str(tmp_path / "real")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    real = json.loads((tmp_path / "real" / "summary.json").read_text())
    assert real["setup"]["scenarios"] == ["contention", "skew"]
    assert real["verdicts"][0]["ok"] and real["verdicts"][0]["checked"] > 0
    for family in real["families"]:
        assert family["sent"] == family["delivered"], family
    skew = real["skew"]
    assert skew["nodes_by_version"] == {"v1": 4, "v2": 2, "v3": 5}
    # Every cross-version pair went between the processes (members ⇄ their coordinator,
    # coordinators ⇄ the region), none that the fleet has no peers for; nothing was
    # unwritable or refused on arrival.
    pairs = set(skew["messages"])
    assert {"v1->v2", "v2->v1", "v2->v3", "v3->v2"} <= pairs
    assert pairs <= {"v1->v1", "v1->v2", "v2->v1", "v2->v3", "v3->v2", "v3->v3"}
    assert all(n > 0 for n in skew["messages"].values())
    # With every coordinator at version 2 nothing is written at 3: a version-3 member writes
    # to its coordinator at 2, and to a neighbour that never advertised to it at 1.
    assert set(skew["written_at"]) == {"v1", "v2"} and skew["refused"] == {}
    # Version-1 members have no digests to send; the others' arrive as version-2 messages.
    assert real["digests"]["unwritable"] > 0 and real["digests"]["periodic"] > 0
    assert "messages by writer → reader version" in (tmp_path / "real" / "index.html").read_text()


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ({"role": "king"}, "role must be one of"),
        ({"role": "member", "scenarios": [], "members": "8"}, "`members` as int"),
        ({"role": "member", "scenarios": [], "members": 8, "regions": 1, "cells": 2,
          "days": "one"}, "`days` as a number"),
        ({"role": "member", "members": 8, "regions": 1, "cells": 2, "days": 1, "seed": 1,
          "scenarios": ["meteor"], "scale": 10, "tally": "t.json"}, "unknown scenario"),
    ],
)  # fmt: skip
def test_a_bad_demo_table_is_named(table: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        part_of(table, Path("."))


def test_a_node_config_takes_a_demo_table() -> None:
    text = '[node]\nnumber = 1000\n[demo]\nrole = "member"\n'
    assert parse_config(tomllib.loads(text), Path(".")).demo == {"role": "member"}
    assert parse_config(tomllib.loads("[node]\nnumber = 1\n"), Path(".")).demo is None


def test_bad_processes_options_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--processes", "0"])
    assert "--processes takes 1 to 64 members" in str(exit_.value.code)
