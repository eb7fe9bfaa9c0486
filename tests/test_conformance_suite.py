"""The conformance suite (``fleetwire conformance run``): our adapter passes, broken ones fail.

Every run here is a real adapter process speaking the adapter protocol on its pipes: fleetwire's
reference adapter, each deliberately broken adapter of ``fleetwire.conformance.broken``, and the
JavaScript adapter (skipped where Node.js is missing). The HTML report is rendered by headless
Chromium where it is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fleetwire.conformance.broken import CAUGHT_BY, FLAWS
from fleetwire.conformance.cases import Level, Status
from fleetwire.conformance.live import NodeUnderTest, live_cases, run_live_sync
from fleetwire.conformance.suite import all_cases, in_window, matrix, run_suite
from fleetwire.conformance.vectors import AdapterProcess, load_vectors
from fleetwire.runtime.cli.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
JS_ADAPTER = ROOT / "examples" / "js-adapter" / "adapter.mjs"
REFERENCE = [sys.executable, "-m", "fleetwire.conformance.reference"]


def _run(argv: list[str], patterns: list[str] | None = None):  # type: ignore[no-untyped-def]
    with AdapterProcess(argv, timeout=30.0) as adapter:
        return run_suite(adapter, name=" ".join(argv), patterns=patterns)


def test_reference_adapter_passes_every_case_and_writes_the_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert cli(["conformance", "run", "--live", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 fail (0 MUST)" in printed
    index = json.loads((out / "index.json").read_text())
    assert index["summary"]["fail"] == 0 and index["summary"]["exit_status"] == 0
    # Everything ran and passed, but the pairs with versions fleetwire does not speak yet.
    for case in index["cases"]:
        if case["status"] == "skip":
            assert "does not speak" in case["note"] and case["writer"] != case["reader"]
        else:
            assert case["status"] == "pass", case["id"]
    # Every family of case ran: codec, envelope, trust, writer, behaviour.
    assert {case["family"] for case in index["cases"]} == {
        "codec", "envelope", "trust", "writer", "behaviour", "live"}  # fmt: skip
    live = [case for case in index["cases"] if case["family"] == "live"]
    # Every (writer, reader) pair of versions 1..3 exchanged messages live, both ways.
    pairs = {(case["writer"], case["reader"]) for case in live if case["id"] == "7.6"}
    assert pairs == {(w, r) for w in (1, 2, 3) for r in (1, 2, 3)}
    leases = [case for case in live if case["id"] == "6.4.11"]
    assert len(leases) == 3 and all("no overlap" in c["checks"][0]["got"] for c in leases)
    cells = {(c["writer"], c["reader"]): c["families"] for c in index["matrix"]}
    assert all(cells[w, r]["live"] == "pass" for w, r in pairs)
    v1 = next(cell for cell in index["matrix"] if cell["writer"] == cell["reader"] == 1)
    assert set(v1["families"].values()) == {"pass"}
    suites = ET.parse(out / "junit.xml").getroot()
    assert suites.tag == "testsuites" and int(suites.get("tests", 0)) == len(index["cases"])
    assert int(suites.get("failures", -1)) == 0
    page = (out / "index.html").read_text()
    assert "N-2 matrix" in page and "6.4.3" in page and "<script" not in page


def test_every_vector_is_judged_by_some_case() -> None:
    """The cases together cover every vector file entry (no vector silently dropped)."""
    with AdapterProcess(REFERENCE, timeout=30.0) as adapter:
        report = run_suite(adapter, name="reference")
    labels = {check.label for result in report.results for check in result.checks}
    documents = load_vectors(1)
    for name in ("valid.json", "extensions.json", "invalid.json"):
        for vector in documents[name]["vectors"]:
            assert f"{name}:{vector['id']}" in labels
    for group in ("valid", "invalid"):
        for vector in documents["envelopes.json"][group]:
            assert f"envelopes.json:{vector['id']}" in labels
        for vector in documents["trust.json"][group]:
            assert f"trust.json:{vector['id']}" in labels


def test_cases_are_numbered_by_section_with_quoted_requirements() -> None:
    protocol = (ROOT / "spec" / "v1" / "protocol.md").read_text()
    sections = {line.split()[1].rstrip(".") for line in protocol.splitlines()
                if line.startswith("#") and line.split()[1][0].isdigit()}  # fmt: skip
    cases = [*all_cases(), *live_cases()]
    ids = [(case.id, case.writer, case.reader) for case in cases]
    assert len(ids) == len(set(ids))
    for case in cases:
        assert case.spec_section() in sections, case.id
        # The requirement is quoted from the spec: each line of it is in protocol.md.
        words = " ".join(protocol.split())
        assert " ".join(case.requirement.split()) in words, case.id
        # The level is the quote's keyword; a quote without one (a definition, or an
        # informative part of the spec) may be either.
        if "MUST" in case.requirement:
            assert case.level is Level.MUST, case.id
        elif "SHOULD" in case.requirement:
            assert case.level is Level.SHOULD, case.id


def test_cases_select_by_pattern(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert cli(["conformance", "run", "--cases", "6.4.*", "--out", str(out)]) == 0
    ids = {case["id"] for case in json.loads((out / "index.json").read_text())["cases"]}
    assert ids and all(i.startswith("6.4.") for i in ids)
    assert "6.4.10" in ids
    assert cli(["conformance", "run", "--cases", "99.*", "--out", str(out)]) == 2
    assert "no case matches" in capsys.readouterr().err


@pytest.mark.parametrize("flaw", sorted(FLAWS))
def test_each_broken_adapter_is_caught(flaw: str) -> None:
    report = _run([sys.executable, "-m", "fleetwire.conformance.broken", flaw])
    status = {result.case.id: result.status for result in report.results}
    for case_id in CAUGHT_BY[flaw]:
        assert status[case_id] is Status.FAIL, (flaw, case_id)
    assert report.exit_code == 1
    # The catching cases are MUSTs: a flaw never hides behind a SHOULD.
    levels = {r.case.id: r.case.level for r in report.results}
    assert any(levels[c] is Level.MUST for c in CAUGHT_BY[flaw])


def test_broken_adapter_fails_the_cli_and_the_report_names_the_check(tmp_path: Path) -> None:
    out = tmp_path / "r"
    impl = f"{sys.executable} -m fleetwire.conformance.broken overlapping-leases"
    assert cli(["conformance", "run", "--impl", impl, "--cases", "6.4.3", "--out", str(out)]) == 1
    case = json.loads((out / "index.json").read_text())["cases"][0]
    assert case["status"] == "fail" and "invariant checker" in case["checks"][0]["got"]
    failure = ET.parse(out / "junit.xml").getroot().find(".//failure")
    assert failure is not None and failure.get("type") == "MUST"


def test_matrix_reports_out_of_window_pairs_not_failures() -> None:
    assert in_window(3, 1) and in_window(1, 3) and not in_window(4, 1) and not in_window(1, 4)
    cells = matrix([], [1, 2, 3, 4], (2, 4))
    assert set(cells[1, 4].values()) == {"out-of-window"}
    assert set(cells[4, 1].values()) == {"out-of-window"}
    assert set(cells[1, 2].values()) == {"not-spoken"}  # the implementation reads no v1
    assert set(cells[2, 4].values()) == {"untested"}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the JavaScript adapter (examples/js-adapter) needs Node.js 20+")
    return node


def test_js_adapter_passes_the_v1_codec_envelope_and_trust_cases(tmp_path: Path) -> None:
    report = _run([_node(), str(JS_ADAPTER)])
    failed = [r.case.id for r in report.results if r.status is Status.FAIL]
    assert failed == []
    ran = {r.case.family for r in report.results if r.status is Status.PASS}
    assert {"codec", "envelope", "trust", "writer"} <= ran
    must_skipped = [r.case.id for r in report.results
                    if r.status is Status.SKIP and r.case.family in ("codec", "envelope", "trust")
                    and r.case.writer == r.case.reader == 1]  # fmt: skip
    assert must_skipped == []
    assert report.exit_code == 0


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = next((p for p in map(shutil.which, BROWSERS) if p is not None), None)
    if browser is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium); the report is not rendered")
    out = tmp_path / "report"
    impl = f"{sys.executable} -m fleetwire.conformance.broken never-expires"
    assert cli(["conformance", "run", "--impl", impl, "--out", str(out)]) == 1
    shot = tmp_path / "conformance-report.png"
    done = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600",
            f"--screenshot={shot}", (out / "index.html").as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = pytest.importorskip("matplotlib.image").imread(shot)
    rgb = (image[:, :, :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(int(c) for c in px) for px in rgb[:: max(1, len(rgb) // 200_000)]}
    assert (0xD8, 0xEC, 0xD8) in colours  # passing matrix cells and cases
    assert (0xF4, 0xD7, 0xD7) in colours  # the failing verdict band and cases


def test_live_cases_fail_for_a_node_that_never_connects(tmp_path: Path) -> None:
    """A program that reads its input and does nothing else is no node: both live cases fail."""
    silent = NodeUnderTest((sys.executable, "-c", "import sys; sys.stdin.read()"), versions=(1,))
    results = run_live_sync(tmp_path, silent, timeout=2.0)
    assert {r.case.id for r in results} == {"7.6", "6.4.11"}
    assert all(r.status is Status.FAIL for r in results)
    assert all("did not connect" in r.checks[0].got for r in results if r.case.id == "7.6")
