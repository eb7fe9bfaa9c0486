"""``fleetwire spec check``: passes on the real spec, and on temporary copies of it with one
breaking change each, fails naming that change's rule and file (spec/v2/versions.md §5)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fleetwire.conformance.breaking import RULES, check, freeze
from fleetwire.runtime.cli.cli import main

SPEC = Path(__file__).resolve().parent.parent / "spec"


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    copy = tmp_path / "spec"
    shutil.copytree(SPEC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def edit_json(path: Path, change: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def test_the_real_spec_passes(capsys: pytest.CaptureFixture[str]) -> None:
    report = check(SPEC)
    assert report.ok, report.summary()
    assert report.versions == (1, 2, 3) and report.released == (1,)
    assert main(["spec", "check", "--spec", str(SPEC)]) == 0
    assert "0 breaking changes" in capsys.readouterr().out


def _faults(spec: Path) -> Path:
    return spec / "v2" / "faults.cddl"


def _drop_rule(path: Path, name: str) -> None:
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{name} = {{")
    end = text.index("\n}\n", start) + 3
    path.write_text(text[:start] + text[end:], encoding="utf-8")


#: One breaking change each: (rule expected, file named, the change).
BREAKS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("type-removed", "v1/fcp.cddl", lambda s: _drop_rule(s / "v1" / "fcp.cddl", "lease-expiry")),
    ("type-renumbered", "v2/faults.cddl",
     lambda s: edit(_faults(s), "header<3>,", "header<30>,")),
    ("type-code-reused", "v3/market.cddl",
     lambda s: edit(s / "v3" / "market.cddl", "header<24>,", "header<4>,")),
    ("key-removed", "v2/faults.cddl",
     lambda s: edit(_faults(s), "  ? 14: text,                     ; detail\n", "")),
    ("key-renumbered", "v2/faults.cddl",
     lambda s: edit(_faults(s), "  9: 1..5,                        ; severity",
                    "  16: 1..5,                       ; severity")),
    ("key-reused", "v2/faults.cddl",
     lambda s: edit(_faults(s), "? 14: text,                     ; detail",
                    "? 14: text,                     ; note")),
    ("type-changed", "v2/faults.cddl",
     lambda s: edit(_faults(s), "  8: uint,                        ; code",
                    "  8: text,                        ; code")),
    ("field-now-mandatory", "v2/faults.cddl",
     lambda s: edit(_faults(s), "? 15: text,", "15: text,")),
    ("key-added-to-released", "v1/fcp.cddl",
     lambda s: edit(s / "v1" / "fcp.cddl", "  10: uint,                       ; priority\n",
                    "  10: uint,                       ; priority\n  ? 11: text,                    ; note\n")),
    ("error-code-reused", "vectors/v2/codes.json",
     lambda s: edit_json(s / "vectors" / "v2" / "codes.json",
                         lambda d: d["codes"].update({"version-unsupported": "remote-protocol"}))),
    ("vector-changed", "vectors/v1/valid.json",
     lambda s: edit_json(s / "vectors" / "v1" / "valid.json",
                         lambda d: d["vectors"][0].update({"description": "edited"}))),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "file", "change"), BREAKS, ids=[b[0] for b in BREAKS])
def test_each_kind_of_break_is_named(
    spec: Path, rule: str, file: str, change: Callable[[Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    change(spec)
    report = check(spec)
    assert not report.ok
    assert {b.rule for b in report.breaks} == {rule}, report.summary()
    assert file in {b.file for b in report.breaks}, report.summary()
    assert main(["spec", "check", "--spec", str(spec)]) == 1
    out = capsys.readouterr().out
    assert f"{file}: {rule}: " in out


def test_every_rule_has_a_case() -> None:
    assert {rule for rule, _, _ in BREAKS} | {"vector-no-longer-met"} == set(RULES)


def test_an_older_vector_the_newer_reader_no_longer_reads(spec: Path) -> None:
    """An unreleased older version's valid vector that the reader of a newer version refuses."""
    (spec / "v1" / "frozen.json").unlink()  # v1 unreleased: only the window comparison runs

    def garble(document: dict) -> None:  # type: ignore[type-arg]
        document["vectors"][0]["hex"] = "a0"

    edit_json(spec / "vectors" / "v1" / "valid.json", garble)
    report = check(spec)
    assert {b.rule for b in report.breaks} == {"vector-no-longer-met"}
    assert {b.where.split(" read as ")[1] for b in report.breaks} == {"v2", "v3"}


def test_a_released_version_may_gain_vectors(spec: Path) -> None:
    def add(document: dict) -> None:  # type: ignore[type-arg]
        document["vectors"].append(dict(document["vectors"][0], id="added/later"))

    edit_json(spec / "vectors" / "v1" / "valid.json", add)
    assert check(spec).ok


def test_freeze_records_a_version_and_then_guards_it(spec: Path) -> None:
    assert main(["spec", "freeze", "2", "--spec", str(spec)]) == 0
    assert (spec / "v2" / "frozen.json").exists()
    assert check(spec).released == (1, 2)
    edit(spec / "v2" / "reservations.cddl", "  10: uint,                       ; term_ms",
         "  10: uint,                       ; term_ms\n  ? 11: text,                    ; note")
    assert {b.rule for b in check(spec).breaks} == {"key-added-to-released"}
    freeze(spec, 2)  # what a maintainer does not do: re-freezing swallows the change
    assert check(spec).ok


def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "check", "--spec", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hint:" in err
    assert main(["spec", "freeze", "9", "--spec", str(SPEC)]) == 2
    assert "hint:" in capsys.readouterr().err
    assert main(["spec"]) == 2
