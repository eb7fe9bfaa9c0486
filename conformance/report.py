"""The suite's report files: ``index.json``, ``junit.xml`` and a self-contained ``index.html``.

Theory of operation
-------------------
One :class:`~.suite.SuiteReport` becomes three files in one folder:

- ``index.json`` — everything, for machines (format ``fleetwire-conformance/1``);
- ``junit.xml`` — a testsuite per spec section, a testcase per case, so CI systems show the
  suite like any test run (a failed MUST case is a ``failure``, a failed SHOULD case too but
  named as such, a skipped case ``skipped``);
- ``index.html`` — for people: the verdict, the N-2 matrix, then every case with its quoted
  requirement and each check's request, expectation and answer. One file, inline CSS, no
  script and nothing fetched, so it opens anywhere and can be mailed.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .cases import CaseResult, Status, brief
from .suite import FAMILIES, SuiteReport, as_json

__all__ = ["write_reports"]


def write_reports(report: SuiteReport, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "index.json"
    index.write_text(json.dumps(as_json(report), indent=1) + "\n", encoding="utf-8")
    junit = folder / "junit.xml"
    junit.write_bytes(junit_xml(report))
    page = folder / "index.html"
    page.write_text(html_page(report), encoding="utf-8")
    return [index, junit, page]


def junit_xml(report: SuiteReport) -> bytes:
    root = ET.Element("testsuites", name=f"FCP conformance: {report.implementation}",
                      tests=str(len(report.results)),
                      failures=str(report.count(Status.FAIL)),
                      skipped=str(report.count(Status.SKIP)))  # fmt: skip
    sections: dict[str, list[CaseResult]] = {}
    for result in report.results:
        sections.setdefault(result.case.spec_section(), []).append(result)
    for section, results in sections.items():
        suite = ET.SubElement(root, "testsuite", name=f"§{section}", tests=str(len(results)),
                              failures=str(sum(r.status is Status.FAIL for r in results)),
                              skipped=str(sum(r.status is Status.SKIP for r in results)))  # fmt: skip
        for result in results:
            case = result.case
            element = ET.SubElement(suite, "testcase", classname=f"fcp.v{case.reader}.{section}",
                                    name=f"{case.id} {case.title} [{case.level.value}]")  # fmt: skip
            if result.status is Status.FAIL:
                bad = [c for c in result.checks if c.status is Status.FAIL]
                failure = ET.SubElement(element, "failure",
                                        message=f"{case.level.value}: {case.requirement}"[:500],
                                        type=case.level.value)  # fmt: skip
                failure.text = "\n".join(f"{c.label}: expected {c.expected}; got {c.got}" for c in bad)
            elif result.status is Status.SKIP:
                ET.SubElement(element, "skipped", message=result.note)
            elif result.status is Status.IMPRECISE:
                out = ET.SubElement(element, "system-out")
                out.text = "imprecise (conforming): " + "; ".join(
                    f"{c.label}: {c.got}" for c in result.checks if c.status is Status.IMPRECISE)  # fmt: skip
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px}
.verdict{padding:12px 16px;border-radius:6px;font-weight:600}
.ok{background:#d8ecd8} .bad{background:#f4d7d7}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
.pass{background:#d8ecd8} .fail{background:#f4d7d7} .imprecise{background:#fbeec9}
.skip,.untested,.not-spoken{background:#eeeeee;color:#555} .out-of-window{background:#dde3f0;color:#445}
details{border:1px solid #ddd;border-radius:4px;margin:4px 0;padding:4px 8px}
summary{cursor:pointer} blockquote{margin:6px 0;padding:4px 10px;border-left:3px solid #999;color:#333}
pre{white-space:pre-wrap;word-break:break-all;margin:0;font-size:12px;max-height:240px;overflow:auto}
.tag{display:inline-block;min-width:70px;padding:0 6px;border-radius:3px;text-align:center}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _matrix_html(report: SuiteReport) -> str:
    versions = report.matrix_versions
    head = "".join(f"<th>reader v{r}</th>" for r in versions)
    rows = []
    for w in versions:
        cells = []
        for r in versions:
            cell = report.matrix[w, r]
            inner = "".join(f'<div class="{_e(cell[f])}">{_e(f)}: {_e(cell[f])}</div>'
                            for f in FAMILIES)  # fmt: skip
            cells.append(f"<td>{inner}</td>")
        rows.append(f"<tr><th>writer v{w}</th>{''.join(cells)}</tr>")
    return f'<table class="matrix"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _case_html(result: CaseResult) -> str:
    case = result.case
    status = result.status.value
    checks = "".join(
        f'<tr><td class="{_e(c.status.value)}">{_e(c.status.value)}</td><td>{_e(c.label)}</td>'
        f"<td><pre>{_e(json.dumps(brief(c.request), indent=1))}</pre></td>"
        f"<td>{_e(c.expected)}</td><td><pre>{_e(c.got)}</pre></td></tr>"
        for c in result.checks
    )  # fmt: skip
    table = (f"<table><tr><th>verdict</th><th>check</th><th>request</th><th>expected</th>"
             f"<th>got</th></tr>{checks}</table>") if result.checks else ""  # fmt: skip
    note = f"<p>{_e(result.note)}</p>" if result.note else ""
    opened = " open" if result.status is Status.FAIL else ""
    return (
        f'<details id="case-{_e(case.id)}"{opened}><summary><span class="tag {status}">{status}</span> '
        f"<b>{_e(case.id)}</b> [{_e(case.level.value)}] {_e(case.title)} "
        f"<small>({_e(case.family)}, v{case.writer}→v{case.reader}, {len(result.checks)} checks)</small>"
        f"</summary><blockquote>{_e(case.requirement)}</blockquote>"
        f"<p>Expectation: {_e(case.expectation)}</p>{note}{table}</details>"
    )  # fmt: skip


def html_page(report: SuiteReport) -> str:
    ok = report.exit_code == 0
    verdict = ("Conforming: no MUST case fails." if ok else
               f"Not conforming: {len(report.must_failures)} MUST case(s) fail.")  # fmt: skip
    cases = "".join(_case_html(r) for r in report.results)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>FCP conformance — {_e(report.implementation)}</title><style>{_CSS}</style></head><body>"
        f"<h1>FCP conformance report</h1><p>Implementation: <b>{_e(report.implementation)}</b>"
        f" (speaks v{report.versions[0]}–v{report.versions[1]})<br>Command: <code>{_e(report.command)}</code></p>"
        f'<p class="verdict {"ok" if ok else "bad"}">{_e(verdict)} {_e(report.summary_line())}</p>'
        "<h2>N-2 matrix: writer version × reader version, per case family</h2>"
        "<p>Pairs more than two versions apart are out of window (nothing owed, not a failure); "
        "not spoken: the implementation does not speak that version; untested: no case covers the pair yet.</p>"
        f"{_matrix_html(report)}<h2>Cases</h2>{cases}</body></html>"
    )  # fmt: skip
