"""The report of a fleet run: ``summary.json``, a self-contained HTML page, and PNG figures.

Theory of operation
-------------------
:func:`write` takes a :class:`~.demo_results.Results` (whichever engine filled it) and a
folder, and writes:

- ``summary.json``: every figure (:func:`~.demo_results.summary`), sorted keys, so a seed gives
  the same file byte for byte;
- the PNG figures of :mod:`.report_figures` when matplotlib is installed (the ``report`` extra);
- ``index.html``: one page with the figures embedded as data URIs (it can be mailed or opened
  from anywhere, no other file needed), the invariant verdicts, the scenarios played, the
  figures as tables, the events, and the command that reproduces the run. Without matplotlib
  the page says so where the figures would be.

:func:`print_summary` shows the key figures on a terminal with ``rich``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from . import report_figures
from .demo_results import SCENARIOS, Results, summary

INSTALL_HINT = "pip install 'fleetwire[report]'"


@attrs.frozen(slots=True)
class Written:
    folder: Path
    summary: Path
    html: Path
    figures: tuple[Path, ...]


def duration(ms: float | None) -> str:
    """A latency in the unit that reads best."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def summary_json(results: Results) -> str:
    return json.dumps(summary(results), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(results: Results, out: Path) -> Written:
    """Write the report into ``out`` (made if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary_path.write_text(summary_json(results), encoding="utf-8")
    figures = report_figures.draw(results, out)
    page = out / "index.html"
    page.write_text(render_html(results, out, figures), encoding="utf-8")
    return Written(out, summary_path, page, tuple(out / f.name for f in figures))


def _rows(rows: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )


def _day(ms: int | None) -> str:
    return "—" if ms is None else f"day {ms / 86_400_000:.2f}"


def key_figures(results: Results) -> list[tuple[str, str]]:
    """The figures a reader looks at first, as (label, text) pairs (HTML and terminal)."""
    s = summary(results)
    c, lease, exc, d = s["coordination"], s["leases"], s["exceptions"], s["digests"]
    undelivered = sum(f.sent - f.delivered for f in results.families)
    rows = [
        ("coordination, fleet mean", f"{c['mean_bytes_per_node_per_s']} B/s per node"),
        (
            "coordination, busiest hour (mean per node)",
            f"{c['peak_interval_bytes_per_node_per_s']} B/s per node "
            f"(budget {s['budget_bytes_per_node_per_s']['low']}–"
            f"{s['budget_bytes_per_node_per_s']['high']} B/s)",
        ),
        ("coordination, busiest node's busiest hour", f"{c['busiest_node_peak_bytes_per_s']} B/s"),
        (
            "telemetry digests",
            f"{d['periodic']} periodic, {d['event_driven']} on threshold crossings, "
            f"{d['mean_bytes'] or 0} B each; {d['anomalous_at_coordinators']} showed samples "
            "out of control at a coordinator",
        ),
        (
            "streaming raw telemetry instead",
            f"{c['telemetry_stream_baseline_bytes_per_node_per_s']} B/s per member (1 Hz, "
            "no envelopes)",
        ),
        ("dock leases granted", str(lease["grants"])),
        (
            "dock utilisation",
            f"mean {100 * lease['mean_dock_utilisation']:.0f}%, "
            f"peak {100 * lease['peak_dock_utilisation']:.0f}%",
        ),
        (
            "wait from claim to usable grant",
            f"p50 {duration(lease['wait_ms_p50'])}, p95 {duration(lease['wait_ms_p95'])}, "
            f"max {duration(lease['wait_ms_max'])}",
        ),
        (
            "claims",
            f"{lease['claims_granted']} granted, {lease['claims_given_up']} gave up after 12 h",
        ),
        ("exceptions", f"{exc['escalations']} escalated, at most {exc['max_open']} open"),
        (
            "messages not delivered",
            f"{undelivered} (expired in a store after their "
            f"{results.setup.lifetime_days:g}-day lifetime, refused as stale, "
            "or lost on a lossy link)"
            if undelivered
            else "none: every message sent arrived",
        ),
    ]
    if "fault" in results.setup.scenarios:
        k = s["containment"]
        rows += [
            (
                "correlated fault (lineage B, region 0)",
                f"{k['quarantined_faulty']} of the {k['faulty_nodes']} faulty nodes quarantined "
                f"(first {_day(k['first_quarantine_at_ms'])}); "
                f"{k['cluster_escalations']} cluster report(s) sent to a region",
            ),
            (
                "quarantined without the defect",
                f"{k['quarantined_healthy']} (clusters of background exceptions in one lineage)",
            ),
        ]
    skew = s["skew"]
    if skew is not None:
        refused = skew["refused"]
        rows += [
            (
                "version mix (nodes)",
                ", ".join(f"{n} at {v}" for v, n in skew["nodes_by_version"].items()),
            ),
            (
                "messages by writer → reader version",
                ", ".join(f"{pair.replace('->', '→')}: {n}" for pair, n in skew["messages"].items())
                + "; on the wire: "
                + ", ".join(f"{v}: {n}" for v, n in skew["written_at"].items()),
            ),
            (
                "not writable or refused on arrival",
                ", ".join(f"{code}: {n}" for code, n in refused.items()) if refused else "none",
            ),
        ]
    rel = s["release"]
    if rel is not None:
        stages = "; ".join(
            st["order"]
            + (f" (cell {', '.join(map(str, st['cells']))})" if st["cells"] else "")
            + f" {_day(st['at_ms'])}"
            for st in rel["stages"]
        )
        rows += [
            (
                f"staged release (lineage {rel['lineage']} {rel['previous']} → {rel['version']})",
                f"{rel['state']}: {stages or 'no stage ordered'}"
                + (f" — {rel['reason']}" if rel["reason"] else ""),
            ),
            (
                "release bytes on the links",
                f"{rel['bytes']} B in {rel['bundles']} bundles ({rel['chunk_bytes']} B of chunk "
                f"answers) for a {rel['artifact_bytes']} B artifact; "
                f"{rel['nodes_installed_new']} member(s) installed it, {rel['refusals']} "
                "release object(s) refused",
            ),
        ]
    iso = s["isolation"]
    if iso is not None:
        rows += [
            (
                "isolation of the misbehaving region",
                f"severed {_day(iso['severed_at_ms'])}, lifted {_day(iso['lifted_at_ms'])}; "
                f"{iso['orders_issued']} signed orders issued, applied "
                f"{iso['orders_applied']} times at region boundaries, {iso['orders_refused']} "
                "refused",
            ),
            (
                "the flood",
                f"{iso['flood_sent']} reports sent, {iso['refused_at_boundary']} refused at the "
                "boundary while the region was severed",
            ),
        ]
    p = s["partition"]
    if p is not None:
        rows += [
            ("partition", f"cell 0 cut off {_day(p['cut_at_ms'])} – {_day(p['healed_at_ms'])}"),
            (
                "what the cut cost cell 0",
                f"its docks were in use {100 * p['cut_cell_dock_utilisation_during_cut']:.0f}% "
                f"of the cut, the other cells' "
                + (
                    "—"
                    if p["other_cells_dock_utilisation_during_cut"] is None
                    else f"{100 * p['other_cells_dock_utilisation_during_cut']:.0f}%"
                ),
            ),
            (
                "cell 0's authority lease",
                f"lost {_day(p['cut_cell_authority_lost_at_ms'])}, "
                f"regained {_day(p['cut_cell_authority_regained_at_ms'])}",
            ),
            (
                "reconciliation",
                f"at most {p['max_waiting_at_cut_cell']} bundles waited at cell 0's coordinator; "
                f"its backlog was back to the day before's ({p['usual_waiting_before_cut']}) "
                f"{duration(p['reconciliation_ms'])} after healing",
            ),
        ]
    return rows


def render_html(results: Results, out: Path, figures: list[report_figures.Figure]) -> str:
    s = results.setup
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>fleetwire demo report</title><style>",
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
        "padding:.25em .6em;text-align:left}th{background:#f3f3f3}",
        ".ok{background:#d8ecd8;padding:.6em}.bad{background:#f4d7d7;padding:.6em}",
        "code{background:#f3f3f3;padding:.1em .3em}img{max-width:100%}",
        "</style></head><body>",
        "<h1>fleetwire demo report</h1>",
        f"<p>{s.nodes} nodes ({s.members} members in {s.cells} cells of {s.regions} region(s), "
        f"with their coordinators), {s.days:g} virtual days of traffic and one to drain, "
        f"seed {s.seed}, loss {s.loss:g}. Engine: {html.escape(s.engine)}.</p>",
        "<p>Reproduce exactly: <code>" + html.escape(s.command) + "</code></p>",
        "<h2>Invariant verdicts</h2>",
    ]
    for v in results.verdicts:
        klass = "ok" if v.ok else "bad"
        text = (
            f"clean: {v.checked} uses checked, zero overlapping"
            if v.ok
            else f"{v.violations} violations; first: {v.first_violation}"
        )
        parts.append(f"<p class='{klass}'><b>{html.escape(v.checker)}</b>: {html.escape(text)}</p>")
    parts.append("<h2>Scenarios</h2><ul>")
    for name in s.scenarios:
        parts.append(f"<li><b>{html.escape(name)}</b>: {html.escape(SCENARIOS[name])}</li>")
    if not s.scenarios:
        parts.append("<li>none: the baseline traffic only</li>")
    others = [name for name in SCENARIOS if name not in s.scenarios]
    parts.append("</ul>")
    if others:
        parts.append(f"<p>Also available (not in this run): {html.escape(', '.join(others))}.</p>")
    parts.append(
        "<p>The baseline traffic runs on links without loss unless <code>--loss</code> says "
        "otherwise.</p>"
    )
    parts.append("<h2>Key figures</h2><table>")
    parts.append(_rows(list(key_figures(results))))
    parts.append("</table><h2>Figures</h2>")
    if not figures:
        parts.append(
            "<p class='bad'>Figures omitted: matplotlib is not installed. "
            f"<code>{html.escape(INSTALL_HINT)}</code> adds them; "
            "every figure is in <code>summary.json</code> either way.</p>"
        )
    for f in figures:
        data = base64.b64encode((out / f.name).read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{html.escape(f.title)}</b>. {html.escape(f.caption)}</figcaption>"
            "</figure>"
        )
    parts.append(
        "<h2>Messages by family</h2><table><tr><th>family</th><th>sent</th><th>delivered</th>"
        "<th>latency p50</th><th>latency p95</th></tr>"
    )
    for fam in results.families:
        parts.append(
            f"<tr><td>{fam.family}</td><td>{fam.sent}</td><td>{fam.delivered}</td>"
            f"<td>{duration(fam.latency_ms_p50)}</td><td>{duration(fam.latency_ms_p95)}</td></tr>"
        )
    parts.append("</table><h2>Events</h2><table><tr><th>when</th><th>what</th></tr>")
    for e in results.events:
        parts.append(
            f"<tr><td>{_day(e.at_ms)}</td><td>{html.escape(e.kind)}: "
            f"{html.escape(e.detail)}</td></tr>"
        )
    parts.append(
        "</table><p>Every figure, per hour, is in <code>summary.json</code> beside this page. "
        f"This run took {results.wall_seconds:.1f} s of wall time.</p></body></html>\n"
    )
    return "\n".join(parts)


def print_summary(results: Results, console: Console | None = None) -> None:
    """The key figures and the per-family counts on a terminal (plain text when piped)."""
    console = console or Console()
    figures = Table(title="fleet run", show_header=False)
    figures.add_column("figure")
    figures.add_column("value")
    for verdict in results.verdicts:
        figures.add_row(
            "invariant verdict",
            f"clean: {verdict.checked} uses, none overlapping"
            if verdict.ok
            else f"{verdict.violations} violations, first: {verdict.first_violation}",
        )
    for label, text in key_figures(results):
        figures.add_row(label, text)
    console.print(figures)
    families = Table(title="messages by family")
    for column in ("family", "sent", "delivered", "latency p50", "latency p95"):
        families.add_column(column, justify="left" if column == "family" else "right")
    for fam in results.families:
        families.add_row(
            fam.family,
            str(fam.sent),
            str(fam.delivered),
            duration(fam.latency_ms_p50),
            duration(fam.latency_ms_p95),
        )
    console.print(families)
