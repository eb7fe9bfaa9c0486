"""The spec's test vectors: fresh, complete, and met by fleetwire (in process and as an adapter)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import cbor2
import pytest
from fleetwire.conformance.compat import check_compatibility
from fleetwire.conformance.vectors import (
    Accepted,
    AdapterProcess,
    Fleetwire,
    Outcome,
    Refused,
    TrustInput,
    Verdict,
    load_vectors,
    main,
    run_vectors,
    versions_available,
)
from fleetwire.protocol.messages import V1_MESSAGE_CLASSES

SPEC = Path(__file__).resolve().parent.parent / "spec"

#: Where fleetwire's reader reports a less fitting code than spec/v1/protocol.md §9 requires
#: (vector id → why). Empty now; this list may only shrink: the test below fails when an
#: entry starts to pass.
KNOWN_DEVIATIONS: dict[str, str] = {}

#: Known deviations where fleetwire accepts what the spec refuses (the rest are refusals).
KNOWN_ACCEPTANCES: set[str] = set()


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_vectors", SPEC / "generate_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_vectors_equal_a_fresh_generation() -> None:
    generator = load_generator()
    folder = SPEC / "vectors" / "v1"
    documents = generator.documents()
    assert sorted(documents) == sorted(p.name for p in folder.glob("*.json"))
    for name, document in documents.items():
        assert (folder / name).read_text(encoding="utf-8") == generator.render(document), (
            f"{name} is stale: run python spec/generate_vectors.py"
        )


def test_fleetwire_meets_every_vector() -> None:
    report = run_vectors(1, Fleetwire(), SPEC)
    failed = {result.vector_id: result for result in report.of(Verdict.FAIL)}
    unexpected = [str(result) for vid, result in failed.items() if vid not in KNOWN_DEVIATIONS]
    fixed = sorted(set(KNOWN_DEVIATIONS) - set(failed))
    assert not unexpected, "vectors fleetwire does not meet:\n" + "\n".join(unexpected)
    assert not fixed, f"deviations now fixed, remove them from KNOWN_DEVIATIONS: {fixed}"


def test_every_vector_was_run() -> None:
    documents = load_vectors(1, SPEC)
    expected = sum(
        len(documents[name]["vectors"])
        for name in ("valid.json", "extensions.json", "invalid.json")
    )
    for name in ("envelopes.json", "trust.json"):
        expected += len(documents[name]["valid"]) + len(documents[name]["invalid"])
    assert len(run_vectors(1, Fleetwire(), SPEC).results) == expected
    assert versions_available(SPEC) == [1, 2, 3]


def test_vectors_cover_every_type_and_reader_code() -> None:
    documents = load_vectors(1, SPEC)
    types = {vector["message"]["type"] for vector in documents["valid.json"]["vectors"]}
    assert types == {int(t) for t in V1_MESSAGE_CLASSES}
    codes = {vector["code"] for vector in documents["invalid.json"]["vectors"]}
    assert codes >= {
        "cbor-malformed",
        "cbor-limit",
        "cbor-not-deterministic",
        "cbor-decode",
        "message-invalid",
        "message-type-unknown",
        "version-unsupported",
        "critical-field-unknown",
    }
    envelope_codes = {vector["code"] for vector in documents["envelopes.json"]["invalid"]}
    trust_codes = {vector["code"] for vector in documents["trust.json"]["invalid"]}
    tree = documents["codes.json"]["codes"]
    # Every code a reader of messages, envelopes and trust can report has a vector; only the
    # abstract parents and the two codes no v1 op can meet (protocol.md §9) have none.
    reachable = set(tree) - {
        "remote-protocol",
        "envelope-invalid",
        "key-untrusted",
        "content-id-invalid",
        "key-invalid",
    }
    assert codes | envelope_codes | trust_codes >= reachable
    assert codes | envelope_codes | trust_codes <= set(tree), "every code is in the code tree"
    ids = [
        v["id"]
        for name in ("valid.json", "invalid.json", "extensions.json")
        for v in documents[name]["vectors"]
    ] + [v["id"] for name in ("envelopes.json", "trust.json") for k in ("valid", "invalid")
         for v in documents[name][k]]  # fmt: skip
    assert len(ids) == len(set(ids)), "vector ids are unique"


class AcceptsEverything:
    name = "accepts everything"

    def decode(self, data: bytes) -> Outcome:
        return Accepted(data.hex(), "12" + "20" + "00" * 32)

    def open_envelope(self, data: bytes, public_key: bytes) -> Outcome:
        return self.decode(data)

    def open_trusted(self, data: bytes, trust: TrustInput) -> Outcome:
        return self.decode(data)


class VagueRefusals(Fleetwire):
    """fleetwire, but every refusal says only ``remote-protocol`` and names no field."""

    name = "vague"

    def decode(self, data: bytes) -> Outcome:
        outcome = super().decode(data)
        return Refused("remote-protocol") if isinstance(outcome, Refused) else outcome

    def open_envelope(self, data: bytes, public_key: bytes) -> Outcome:
        outcome = super().open_envelope(data, public_key)
        return Refused("remote-protocol") if isinstance(outcome, Refused) else outcome

    def open_trusted(self, data: bytes, trust: TrustInput) -> Outcome:
        outcome = super().open_trusted(data, trust)
        return Refused("remote-protocol") if isinstance(outcome, Refused) else outcome


def test_runner_fails_an_implementation_that_accepts_everything() -> None:
    report = run_vectors(1, AcceptsEverything(), SPEC)
    assert not report.ok
    assert not report.of(Verdict.PASS)  # wrong content ids, and nothing refused


def test_runner_calls_ancestor_codes_imprecise_not_wrong() -> None:
    report = run_vectors(1, VagueRefusals(), SPEC)
    assert {r.vector_id for r in report.of(Verdict.FAIL)} == KNOWN_ACCEPTANCES
    refusals = [r for r in report.results if r.got.startswith("refused")]
    assert refusals and all(r.verdict is Verdict.IMPRECISE for r in refusals)


def test_adapter_process_gives_the_same_verdicts_as_in_process() -> None:
    argv = [sys.executable, "-m", "fleetwire.conformance.vectors", "--serve"]
    with AdapterProcess(argv) as adapter:
        through_adapter = run_vectors(1, adapter, SPEC)
        answer = adapter._ask({"op": "frobnicate", "hex": ""})
    in_process = run_vectors(1, Fleetwire(), SPEC)
    assert [(r.vector_id, r.verdict) for r in through_adapter.results] == [
        (r.vector_id, r.verdict) for r in in_process.results
    ]
    assert isinstance(answer, Refused) and answer.code == "adapter-protocol"


def test_vector_files_are_plain_json_with_the_documented_keys() -> None:
    for path in sorted((SPEC / "vectors" / "v1").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["format"] == "fleetwire-vectors/1"
        assert document["protocol_version"] == 1
        assert document["kind"] == path.stem
    for vector in load_vectors(1, SPEC)["valid.json"]["vectors"]:
        assert set(vector) == {"id", "description", "type", "message", "edn", "hex", "content_id"}
        assert vector["content_id"].startswith("1220") and len(vector["content_id"]) == 68


def test_known_deviations_are_refusals_but_the_listed_ones() -> None:
    report = run_vectors(1, Fleetwire(), SPEC)
    for result in report.results:
        if result.vector_id in KNOWN_DEVIATIONS:
            accepted = not result.got.startswith("refused")
            assert accepted == (result.vector_id in KNOWN_ACCEPTANCES), result


# --- compatibility across the version window -----------------------------------------------


def test_fleetwire_reads_every_version_in_its_window_unchanged() -> None:
    report = check_compatibility(Fleetwire(), spec_dir=SPEC)
    assert {issue.vector_id for issue in report.issues} == KNOWN_ACCEPTANCES, report.summary()
    assert report.versions == (1, 2, 3)
    documents = load_vectors(1, SPEC)
    floor = len(documents["valid.json"]["vectors"]) + len(documents["extensions.json"]["vectors"])
    assert report.checked > floor  # valid, extensions, signed, and never-loosen invalid vectors


class RenamesGrants(Fleetwire):
    """A regression: lease grants re-encode with one more key, so their content id changes."""

    name = "renames grants"

    def decode(self, data: bytes) -> Outcome:
        outcome = super().decode(data)
        if isinstance(outcome, Accepted) and cbor2.loads(data)[0] == 5:
            return Accepted(outcome.hex + "00", outcome.content_id)
        return outcome


class AcceptsNonDeterministic(Fleetwire):
    """A regression: a reader that stopped checking the encoding."""

    name = "lax"

    def decode(self, data: bytes) -> Outcome:
        outcome = super().decode(data)
        if isinstance(outcome, Refused) and outcome.code.startswith("cbor-"):
            return Accepted(data.hex(), "")
        return outcome


def test_compat_finds_a_changed_encoding_and_a_loosened_rule() -> None:
    changed = check_compatibility(RenamesGrants(), spec_dir=SPEC)
    found = [
        issue.vector_id for issue in changed.issues if issue.vector_id not in KNOWN_ACCEPTANCES
    ]
    assert found == ["lease-grant/basic", "extension/big-key"]
    loosened = check_compatibility(AcceptsNonDeterministic(), spec_dir=SPEC)
    assert {issue.vector_id for issue in loosened.issues} >= {
        "deterministic/indefinite-map",
        "deterministic/duplicate-key",
    }


def test_compat_finds_a_changed_or_removed_vector_of_a_released_version(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    shutil.copytree(SPEC / "vectors", baseline / "vectors")
    # As a v2 reader, v1 is released and frozen; the baseline is the spec before the change.
    before = check_compatibility(Fleetwire(), current=2, spec_dir=SPEC, baseline_dir=baseline)
    assert {issue.vector_id for issue in before.issues} == KNOWN_ACCEPTANCES
    path = baseline / "vectors" / "v1" / "valid.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["vectors"][0]["hex"] = "a0"
    document["vectors"].append({**document["vectors"][1], "id": "dropped/since"})
    path.write_text(json.dumps(document), encoding="utf-8")
    report = check_compatibility(Fleetwire(), current=2, spec_dir=SPEC, baseline_dir=baseline)
    assert [
        (i.vector_id, i.problem) for i in report.issues if i.vector_id not in KNOWN_ACCEPTANCES
    ] == [
        ("valid.json:capability-advertisement/full", "changed in a released version"),
        ("valid.json:dropped/since", "removed from a released version"),
    ]


def test_command_line_runs_an_adapter_program(capsys: pytest.CaptureFixture[str]) -> None:
    serve = [sys.executable, "-m", "fleetwire.conformance.vectors", "--serve"]
    status = main(["--version", "1", "--spec", str(SPEC), "--", *serve])
    out = capsys.readouterr().out
    assert "protocol v1 vectors against" in out and "fleetwire.conformance.vectors --serve" in out
    assert re.search(r"valid\.json +\d+ pass\n", out)
    assert status == (0 if not KNOWN_DEVIATIONS else 1)
