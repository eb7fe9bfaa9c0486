"""The report reads a plain results object: summary.json, HTML with or without matplotlib, views.

These tests fill :class:`Results` by hand, as a second engine would, so they also pin down
that the report needs nothing from the Trio demo.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import attrs
import pytest
from fleetwire.runtime.demo import report
from fleetwire.runtime.demo.demo_live import LiveView
from fleetwire.runtime.demo.demo_results import (
    Event,
    FamilyFigures,
    Interval,
    Results,
    Setup,
    Verdict,
    summary,
)
from rich.console import Console

HOUR = 3_600_000


def results(*, ok: bool = True, days: float = 3.0) -> Results:
    setup = Setup(
        nodes=13, regions=1, cells=2, members=10, docks_per_cell=2, days=days, seed=5, loss=0.0,
        scenarios=("contention", "partition"), partition_days=(1.0, 2.0), interval_ms=HOUR,
        command="fleetwire demo --nodes 10 --regions 1 --cells 2 --days 3 --seed 5",
        engine="hand-filled",
    )  # fmt: skip
    hours = round((days + 1) * 24)
    intervals = tuple(
        Interval(
            start_ms=h * HOUR,
            end_ms=(h + 1) * HOUR,
            bytes_sent=1000 * (h % 5),
            busiest_node_bytes=600 * (h % 5),
            bundles_in_flight=h % 7,
            leases_held=h % 3,
            dock_use_ms=(h % 4) * 15 * 60_000,
            exceptions_open=h % 2,
            cells_with_authority=1 if 24 <= h < 60 else 2,
            waiting_at_cut_cell=(h - 24) if 24 <= h < 48 else 2,
        )
        for h in range(hours)
    )
    violation = None if ok else "dock-1 used by 1001 (token 3) and 1002 (token 2) at once"
    return Results(
        setup=setup,
        intervals=intervals,
        events=(
            Event(24 * HOUR, "partition-cut", "cell 0 ⇄ its region"),
            Event(36 * HOUR, "authority-lost", "cell 0"),
            Event(48 * HOUR, "partition-healed", "cell 0 ⇄ its region"),
            Event(60 * HOUR, "authority-regained", "cell 0"),
        ),
        verdicts=(Verdict("lease invariants", ok, 40, 0 if ok else 1, violation),),
        families=(FamilyFigures("lease", 30, 30, 1000, 9000),),
        lease_waits_ms=(HOUR, 2 * HOUR, 5 * HOUR),
        claims_given_up=1,
        grants=3,
        escalations=2,
        wall_seconds=1.5,
    )


def test_summary_figures_follow_from_the_intervals() -> None:
    data = summary(results())
    assert data["coordination"]["total_bytes"] == sum(1000 * (h % 5) for h in range(96))
    # 4000 bytes in the busiest hour over 13 nodes: 4000 / 13 / 3600 B/s.
    assert data["coordination"]["peak_interval_bytes_per_node_per_s"] == round(4000 / 13 / 3600, 3)
    assert data["leases"]["wait_ms_p50"] == 2 * HOUR
    p = data["partition"]
    assert p["cut_cell_authority_lost_at_ms"] == 36 * HOUR
    assert p["cut_cell_authority_regained_at_ms"] == 60 * HOUR
    # Two bundles waited in the day before the cut; right after healing it is two again.
    assert p["usual_waiting_before_cut"] == 2 and p["reconciliation_ms"] == HOUR
    assert p["min_cells_with_authority_after_first_grants"] == 1


def test_wall_time_stays_out_of_summary_json(tmp_path: Path) -> None:
    a = report.write(results(), tmp_path / "a")
    b = report.write(attrs.evolve(results(), wall_seconds=99.0), tmp_path / "b")
    assert a.summary.read_bytes() == b.summary.read_bytes()
    assert "wall" not in a.summary.read_text()


def test_html_embeds_the_figures_and_says_how_to_reproduce(tmp_path: Path) -> None:
    written = report.write(results(), tmp_path)
    names = sorted(p.name for p in written.figures)
    assert names == ["coordination.png", "exceptions.png", "leases.png", "partition.png"]
    for png in written.figures:
        assert png.read_bytes().startswith(b"\x89PNG")
    page = written.html.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "fleetwire demo --nodes 10 --regions 1 --cells 2 --days 3 --seed 5" in page
    assert "clean: 40 uses checked, zero overlapping" in page
    assert "<b>contention</b>" in page and "<b>partition</b>" in page
    assert json.loads(written.summary.read_text())["setup"]["seed"] == 5


def test_html_shows_the_first_violation(tmp_path: Path) -> None:
    page = report.write(results(ok=False), tmp_path).html.read_text()
    assert "class='bad'" in page
    assert "dock-1 used by 1001 (token 3) and 1002 (token 2) at once" in page


def test_without_matplotlib_the_page_still_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes ``import matplotlib`` fail, as on a machine without it.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = report.write(results(), tmp_path)
    assert written.figures == ()
    assert not list(tmp_path.glob("*.png"))
    page = written.html.read_text()
    assert "Figures omitted: matplotlib is not installed" in page
    assert "pip install &#x27;fleetwire[report]&#x27;" in page
    assert "Key figures" in page and page.rstrip().endswith("</html>")


def test_terminal_summary_prints_the_verdict_and_families() -> None:
    out = io.StringIO()
    report.print_summary(results(), Console(file=out, width=120))
    text = out.getvalue()
    assert "clean: 40 uses, none overlapping" in text
    assert "lease" in text and "16.7 min" not in text  # latency p50 of 1000 ms reads "1.0 s"
    assert "1.0 s" in text


def test_live_view_is_quiet_when_not_a_terminal() -> None:
    out = io.StringIO()
    with LiveView(4.0, Console(file=out)) as live:
        for interval in results().intervals:
            live(interval)
    assert not live.active and live.updates == 96
    assert out.getvalue() == ""


def test_live_view_shows_day_and_counts_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with LiveView(4.0, console) as live:
        for interval in results().intervals[:30]:
            live(interval)
    text = out.getvalue()
    assert live.active
    assert "day  1.25" in text
    assert "in flight" in text and "leases" in text and "exceptions open" in text
