"""The conformance suite: every case against one implementation, the N-2 matrix, the verdict.

Theory of operation
-------------------
``fleetwire conformance run --impl "<command>"`` starts the implementation's adapter program
(spec/README.md, "Adapter protocol"), asks it ``hello`` (its versions, ops and machines; an
adapter without ``hello`` is taken as a v1 reader offering ``decode`` and ``open``), runs the
selected cases (:mod:`.cases`, :mod:`.scenarios`) and writes the reports (:mod:`.report`).

**The N-2 matrix** has a row per writer version and a column per reader version, over every
version the spec or the implementation knows. Each cell holds, per case family, the worst
status of the cases about that (writer, reader) pair that ran. A pair more than two versions
apart is **out of window** (no reader of N owes anything to a writer older than N-2, nor a
writer of N to a reader older than N-2: spec/README.md, "Version policy") — reported as such,
never as a failure. A pair with a version the implementation does not speak is **not spoken**;
a pair inside the window that no case covered yet is **untested**.

The exit status is 1 when any MUST case fails, 0 otherwise (SHOULD failures and imprecise
refusals are reported, not fatal).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from .cases import (
    NOTHING_TO_CHECK,
    UNSPOKEN,
    Case,
    CaseResult,
    Context,
    Level,
    Probe,
    Status,
    cross_version_cases,
    run_case,
    select,
    vector_cases,
)
from .live import NodeUnderTest, live_cases, run_live_sync
from .reference import Reference
from .scenarios import behaviour_cases
from .vectors import (
    AdapterFault,
    AdapterProcess,
    Outcome,
    default_spec_dir,
    outcome_from_json,
    versions_available,
)

__all__ = ["FAMILIES", "SuiteReport", "all_cases", "in_window", "main", "matrix", "run_suite"]

FAMILIES = ("codec", "envelope", "trust", "writer", "behaviour", "live")
#: How far apart a writer and a reader may be (spec/README.md, "Version policy").
WINDOW = 2


def in_window(writer: int, reader: int) -> bool:
    return abs(writer - reader) <= WINDOW


def _key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def all_cases(spec_dir: Path | None = None) -> list[Case]:
    """Every case, ordered by section number."""
    cases: list[Case] = []
    with_vectors = versions_available(spec_dir)
    for version in with_vectors:
        cases.extend(vector_cases(version))
    known = spec_versions(spec_dir)
    pairs = [(w, r) for w in with_vectors for r in known if w != r and in_window(w, r)]
    cases.extend(cross_version_cases(pairs, _reference_read))
    cases.extend(behaviour_cases())
    return sorted(cases, key=lambda case: (_key(case.id), case.writer, case.reader))


def _reference_read(data: bytes, version: int) -> Outcome | None:
    """fleetwire's reader of ``version`` judging a converted message (None: it reads no such
    version, so the conversion cannot be judged here)."""
    reference = Reference()
    if not reference.versions[0] <= version <= reference.versions[1]:
        return None
    return outcome_from_json(reference.op_decode({"hex": data.hex(), "version": version}))


def spec_versions(spec_dir: Path | None = None) -> list[int]:
    """Versions the spec has a folder for (``spec/v<N>``), drafts included."""
    root = spec_dir or default_spec_dir()
    found = {int(p.name[1:]) for p in root.glob("v*") if p.is_dir() and p.name[1:].isdigit()}
    return sorted(found | set(versions_available(spec_dir)))


@attrs.frozen(slots=True)
class Hello:
    name: str
    versions: tuple[int, int]
    ops: frozenset[str]
    machines: frozenset[str]


def hello(probe: Probe, fallback_name: str) -> Hello:
    answer = probe.request({"op": "hello"})
    if isinstance(answer, AdapterFault) or not answer.get("ok"):
        return Hello(fallback_name, (1, 1), frozenset({"decode", "open"}), frozenset())
    versions = answer.get("versions")
    if not (isinstance(versions, list) and len(versions) == 2
            and all(type(v) is int for v in versions)):  # fmt: skip
        versions = [1, 1]
    return Hello(
        str(answer.get("name") or fallback_name),
        (versions[0], versions[1]),
        frozenset(str(op) for op in answer.get("ops", ["decode", "open"])),
        frozenset(str(m) for m in answer.get("machines", [])),
    )


def matrix(results: Iterable[CaseResult], versions: list[int],
           spoken: tuple[int, int]) -> dict[tuple[int, int], dict[str, str]]:  # fmt: skip
    """(writer, reader) → family → status (a :class:`Status` value or a word above)."""
    results = list(results)
    out: dict[tuple[int, int], dict[str, str]] = {}
    low, high = spoken
    for writer in versions:
        for reader in versions:
            cell: dict[str, str] = {}
            for family in FAMILIES:
                if not in_window(writer, reader):
                    cell[family] = "out-of-window"
                    continue
                if not (low <= writer <= high and low <= reader <= high):
                    cell[family] = "not-spoken"
                    continue
                ran = [r.status for r in results if r.case.family == family
                       and (r.case.writer, r.case.reader) == (writer, reader)
                       and r.status is not Status.SKIP]  # fmt: skip
                cell[family] = max(ran, key=lambda s: s.rank).value if ran else "untested"
            out[writer, reader] = cell
    return out


@attrs.frozen(slots=True)
class SuiteReport:
    implementation: str
    command: str
    versions: tuple[int, int]
    results: tuple[CaseResult, ...]
    matrix_versions: tuple[int, ...]
    matrix: dict[tuple[int, int], dict[str, str]]

    def count(self, status: Status, level: Level | None = None) -> int:
        return sum(1 for r in self.results if r.status is status
                   and (level is None or r.case.level is level))  # fmt: skip

    @property
    def must_failures(self) -> list[CaseResult]:
        return [r for r in self.results if r.status is Status.FAIL and r.case.level is Level.MUST]

    @property
    def exit_code(self) -> int:
        return 1 if self.must_failures else 0

    def summary_line(self) -> str:
        n = len(self.results)
        return (f"conformance: {self.implementation}: {n} cases: "
                f"{self.count(Status.PASS)} pass, {self.count(Status.IMPRECISE)} imprecise, "
                f"{self.count(Status.FAIL)} fail ({len(self.must_failures)} MUST), "
                f"{self.count(Status.SKIP)} skipped")  # fmt: skip


def run_suite(probe: Probe, *, name: str, command: str = "", patterns: Iterable[str] | None = None,
              spec_dir: Path | None = None, live: NodeUnderTest | None = None,
              live_timeout: float = 30.0) -> SuiteReport:  # fmt: skip
    """Run the selected cases against the implementation behind ``probe``; with ``live``, also
    the live cases against that node (:mod:`.live`)."""
    said = hello(probe, name)
    context = Context(probe, said.versions, said.ops, said.machines, spec_dir)
    chosen = select(all_cases(spec_dir), patterns)
    results = [run_case(case, context) for case in chosen]
    results = [r for r in results if r.note != NOTHING_TO_CHECK]
    live_chosen = select(live_cases(), patterns)
    if live_chosen:
        if live is None:
            results += [CaseResult(case, Status.SKIP, (), "live cases not asked for (--live)")
                        for case in live_chosen]  # fmt: skip
        else:
            spoken = tuple(range(said.versions[0], said.versions[1] + 1))
            live = attrs.evolve(live, versions=live.versions or spoken)
            with tempfile.TemporaryDirectory(prefix="fcp-live-") as scratch:
                ran = run_live_sync(Path(scratch), live, live_timeout)
            wanted = {case.id for case in live_chosen}
            results += [r for r in ran if r.case.id in wanted]
    results.sort(key=lambda r: (_key(r.case.id), r.case.writer, r.case.reader))
    versions = sorted(set(spec_versions(spec_dir)) | set(range(said.versions[0], said.versions[1] + 1)))
    return SuiteReport(said.name, command, said.versions, tuple(results), tuple(versions),
                       matrix(results, versions, said.versions))  # fmt: skip


def console(report: SuiteReport) -> str:
    """The console summary: a line per case that did not pass, then the totals."""
    lines = []
    unspoken = 0
    for result in report.results:
        if result.status is Status.PASS:
            continue
        if result.note.startswith(UNSPOKEN):
            unspoken += 1
            continue
        case = result.case
        lines.append(f"  {result.status.value:9} {case.id:7} {case.level.value:6} {case.title}"
                     + (f" — {result.note}" if result.note else ""))  # fmt: skip
        for check in result.checks:
            if check.status in (Status.FAIL, Status.IMPRECISE):
                lines.append(f"      {check.label}: expected {check.expected}; got {check.got:.300}")
    if unspoken:
        lines.append(f"  skip      {unspoken} cases at versions the implementation does not speak")
    lines.append("  matrix (writer → reader): " + "; ".join(
        f"v{w}→v{r} {_cell_word(cell)}" for (w, r), cell in report.matrix.items()))  # fmt: skip
    lines.append(report.summary_line())
    return "\n".join(lines)


def _cell_word(cell: dict[str, str]) -> str:
    words = set(cell.values())
    for word in ("out-of-window", "not-spoken"):
        if words == {word}:
            return word
    if "fail" in words:
        return "fail"
    return "pass" if "pass" in words else sorted(words)[0]


def main(argv: list[str] | None = None) -> int:
    from .report import write_reports

    parser = argparse.ArgumentParser(
        prog="fleetwire conformance run",
        description="Run the conformance suite against an implementation's adapter program.",
    )
    parser.add_argument("--impl", help='the adapter command, quoted (default: fleetwire\'s own)')
    parser.add_argument("--cases", action="append", default=[], metavar="PATTERN",
                        help="case ids to run, e.g. 6.4.* or 3.1.2 (repeatable; default all)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("conformance-report"),
                        help="folder for index.json, junit.xml and index.html")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per answer")
    parser.add_argument("--spec", type=Path, default=None, help="the spec/ folder")
    parser.add_argument("--live", action="store_true",
                        help="also run the live cases: reference nodes on loopback TCPCLv4 and "
                             "the node under test (default: fleetwire's own node)")  # fmt: skip
    parser.add_argument("--live-node", metavar="COMMAND",
                        help='the node under test, quoted, {config} for its config file '
                             '(default: "fleetwire node {config} --stdin"; implies --live)')  # fmt: skip
    args = parser.parse_args(argv)
    live = None
    if args.live_node:
        live = NodeUnderTest(tuple(shlex.split(args.live_node)), versions=())
    elif args.live:
        live = NodeUnderTest(versions=())
    if args.impl:
        argv_impl = shlex.split(args.impl)
        if not argv_impl:
            parser.error("--impl is empty (hint: --impl \"node adapter.mjs\")")
    else:
        argv_impl = [sys.executable, "-m", "fleetwire.conformance.reference"]
    command = shlex.join(argv_impl)
    try:
        with AdapterProcess(argv_impl, timeout=args.timeout) as adapter:
            report = run_suite(adapter, name=command, command=command, patterns=args.cases,
                               spec_dir=args.spec, live=live, live_timeout=args.timeout)  # fmt: skip
    except OSError as exc:
        print(f"error: cannot start the adapter {argv_impl[0]!r}: {exc.strerror or exc} "
              "(hint: --impl takes the whole command in quotes)", file=sys.stderr)  # fmt: skip
        return 2
    if not report.results:
        print(f"error: no case matches {' '.join(args.cases)} (hint: --cases '6.4.*')",
              file=sys.stderr)  # fmt: skip
        return 2
    paths = write_reports(report, args.out)
    print(console(report))
    print(f"reports: {', '.join(str(p) for p in paths)}")
    return report.exit_code


def as_json(report: SuiteReport) -> dict[str, Any]:
    """index.json's content (format ``fleetwire-conformance/1``)."""
    return {
        "format": "fleetwire-conformance/1",
        "implementation": report.implementation,
        "command": report.command,
        "versions": list(report.versions),
        "summary": {
            "cases": len(report.results),
            **{s.value: report.count(s) for s in Status},
            "must_failures": len(report.must_failures),
            "exit_status": report.exit_code,
        },
        "matrix": [
            {"writer": w, "reader": r, "families": cell} for (w, r), cell in report.matrix.items()
        ],
        "cases": [
            {
                "id": r.case.id, "title": r.case.title, "level": r.case.level.value,
                "section": r.case.spec_section(), "requirement": r.case.requirement,
                "expectation": r.case.expectation, "family": r.case.family,
                "writer": r.case.writer, "reader": r.case.reader, "status": r.status.value,
                "note": r.note,
                "checks": [
                    {"label": c.label, "status": c.status.value, "request": c.request,
                     "expected": c.expected, "got": c.got}
                    for c in r.checks
                ],
            }
            for r in report.results
        ],
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
