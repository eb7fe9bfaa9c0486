"""The vector runner against broken adapters (real processes), and the JavaScript adapter.

A broken adapter is a finding about that adapter, reported per vector — never a traceback of
the runner (spec/README.md, "Adapter protocol"): a stray non-JSON line, a missing answer and
an early exit each fail the one vector they happened on, named in the report, and the runner
starts the adapter afresh so the vectors after it are judged on their own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fleetwire.conformance.vectors import (
    AdapterFault,
    AdapterProcess,
    Fleetwire,
    Verdict,
    load_vectors,
    main,
    run_vectors,
)

SPEC = Path(__file__).resolve().parent.parent / "spec"
JS_ADAPTER = Path(__file__).resolve().parent.parent / "examples" / "js-adapter" / "adapter.mjs"

#: fleetwire's own adapter loop, except on the request whose hex is TARGET, where it misbehaves.
BROKEN = textwrap.dedent(
    """
    import json, sys
    from fleetwire.conformance.vectors import Fleetwire, outcome_to_json
    mode, target = sys.argv[1], sys.argv[2]
    fleetwire = Fleetwire()
    for line in sys.stdin:
        request = json.loads(line)
        if request["hex"] == target:
            if mode == "garble":
                print("debug: about to answer", flush=True)
                continue
            if mode == "exit":
                sys.exit(3)
            if mode == "silent":
                for _ in sys.stdin:  # hangs without answering; the runner must not hang too
                    pass
            if mode == "not-an-answer":
                print(json.dumps(["ok"]), flush=True)
                continue
        data = bytes.fromhex(request["hex"])
        reader = fleetwire.at_version(request.get("version", 1))
        if request["op"] == "decode":
            outcome = reader.decode(data)
        else:
            outcome = reader.open_envelope(data, bytes.fromhex(request["public_key"]))
        print(json.dumps(outcome_to_json(outcome)), flush=True)
    """
)

#: The valid vector the broken adapters break on, and the invalid one after it.
TARGET_ID = "lease-claim/basic"


def _target() -> str:
    vectors = load_vectors(1, SPEC)["valid.json"]["vectors"]
    return next(v["hex"] for v in vectors if v["id"] == TARGET_ID)


def _spec_without_trust(tmp_path: Path) -> Path:
    """The v1 vectors without trust.json: the broken adapters serve only decode and open."""
    spec = tmp_path / "spec"
    shutil.copytree(SPEC / "vectors", spec / "vectors")
    (spec / "vectors" / "v1" / "trust.json").unlink()
    return spec


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garble", "not JSON: 'debug: about to answer'"),
        ("exit", "exited (status 3) without answering"),
        ("silent", "no answer within 2 s"),
        ("not-an-answer", "not an answer: ['ok']"),
    ],
)
def test_a_broken_adapter_fails_only_the_vector_it_broke_on(
    tmp_path: Path, mode: str, reason: str
) -> None:
    script = tmp_path / "broken_adapter.py"
    script.write_text(BROKEN, encoding="utf-8")
    spec = _spec_without_trust(tmp_path)
    argv = [sys.executable, str(script), mode, _target()]
    with AdapterProcess(argv, timeout=2.0) as adapter:
        report = run_vectors(1, adapter, spec)
        assert adapter.restarts == 1
    failed = report.of(Verdict.FAIL)
    assert [r.vector_id for r in failed] == [TARGET_ID]
    assert reason in failed[0].got and "decode request" in failed[0].got
    assert f"valid.json:{TARGET_ID}" in report.summary()
    # Every other vector was judged on its own answers: the runner resynchronised.
    in_process = run_vectors(1, Fleetwire(), spec)
    assert len(report.results) == len(in_process.results)
    assert all(r.verdict is Verdict.PASS for r in report.results if r.vector_id != TARGET_ID)


def test_an_adapter_that_always_dies_fails_every_vector_without_a_traceback(
    tmp_path: Path,
) -> None:
    script = tmp_path / "dies.py"
    script.write_text("import sys\nsys.stdin.readline()\nsys.exit(1)\n", encoding="utf-8")
    with AdapterProcess([sys.executable, str(script)], timeout=5.0) as adapter:
        outcome = adapter.decode(b"\xa0")
        again = adapter.decode(b"\xa0")
    assert isinstance(outcome, AdapterFault) and "exited (status 1)" in outcome.reason
    assert isinstance(again, AdapterFault)  # restarted, and broken again


class BeforeTrustedOpen:
    """An implementation written against the interface before the trusted open existed."""

    name = "older implementation"

    def __init__(self) -> None:
        self._inner = Fleetwire(version=1)  # a version-1 implementation
        self.decode = self._inner.decode
        self.open_envelope = self._inner.open_envelope


def test_an_implementation_without_the_trusted_open_fails_only_trust_vectors() -> None:
    report = run_vectors(1, BeforeTrustedOpen(), SPEC)  # type: ignore[arg-type]
    failed = {r.file for r in report.of(Verdict.FAIL)}
    assert failed == {"trust.json"}
    assert all("no open_trusted" in r.got for r in report.of(Verdict.FAIL))


def test_command_line_names_a_missing_adapter_program(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = main(["--version", "1", "--spec", str(SPEC), "--", str(tmp_path / "no-such-adapter")])
    err = capsys.readouterr().err
    assert status == 2 and "cannot run the adapter" in err and "Traceback" not in err


# --- the second-language adapter ----------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the JavaScript adapter (examples/js-adapter) needs Node.js 20+")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"the JavaScript adapter needs Node.js 20+, found {version.stdout.strip()}")
    return node


def test_javascript_adapter_meets_every_vector() -> None:
    with AdapterProcess([_node(), str(JS_ADAPTER)], timeout=30.0) as adapter:
        report = run_vectors(1, adapter, SPEC)
    not_passed = [str(r) for r in report.results if r.verdict is not Verdict.PASS]
    assert not not_passed, "\n".join(not_passed)
    assert len(report.results) == len(run_vectors(1, Fleetwire(), SPEC).results)


def test_javascript_adapter_agrees_with_fleetwire_answer_for_answer() -> None:
    """Not only the verdicts: the very codes, fields, bytes and content ids."""
    documents = load_vectors(1, SPEC)
    inputs = [
        bytes.fromhex(v["hex"])
        for name in ("valid.json", "extensions.json", "invalid.json")
        for v in documents[name]["vectors"]
    ]
    fleetwire = Fleetwire(version=1)  # the JavaScript adapter is a version-1 reader
    with AdapterProcess([_node(), str(JS_ADAPTER)], timeout=30.0) as adapter:
        for data in inputs:
            ours, theirs = fleetwire.decode(data), adapter.decode(data)
            assert type(ours) is type(theirs), data.hex()[:80]
            assert (getattr(ours, "code", None), getattr(ours, "field", None)) == (
                getattr(theirs, "code", None),
                getattr(theirs, "field", None),
            ), data.hex()[:80]
            assert getattr(ours, "hex", None) == getattr(theirs, "hex", None)


@pytest.mark.soak
def test_javascript_adapter_agrees_on_mutated_inputs() -> None:
    """Stacked byte edits of real messages and envelopes, answered by both implementations.

    A mutation often breaks several rules at once; for such input any of their codes conforms
    (protocol.md §5.2), and the JavaScript reader, a strict parser, meets non-determinism first.
    So pairs where one side reports ``cbor-not-deterministic`` are not compared; every other
    answer must be the same code, field and bytes. This probe found the two step-order bugs
    the vectors ``type/negative`` and ``cbor/tag-in-defined-field`` now pin.
    """
    import random

    documents = load_vectors(1, SPEC)
    seeds = [
        bytes.fromhex(v["hex"])
        for name in ("valid.json", "extensions.json")
        for v in documents[name]["vectors"]
        if len(v["hex"]) < 2000
    ]
    envelopes = [bytes.fromhex(v["hex"]) for v in documents["envelopes.json"]["valid"] if len(v["hex"]) < 2000]
    public = bytes.fromhex(documents["envelopes.json"]["key"]["public"])
    rng = random.Random(17)

    def mutate(data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            at = rng.randrange(len(out))
            edit = rng.randrange(4)
            if edit == 0:
                out[at] = rng.randrange(256)
            elif edit == 1:
                out[at] ^= 1 << rng.randrange(8)
            elif edit == 2:
                out.insert(at, rng.randrange(256))
            elif len(out) > 1:
                del out[at]
        return bytes(out)

    def key(outcome: object) -> tuple[object, ...]:
        return tuple(getattr(outcome, name, None) for name in ("code", "field", "hex", "reason"))

    fleetwire = Fleetwire()
    differences = []
    with AdapterProcess([_node(), str(JS_ADAPTER)], timeout=30.0) as adapter:
        for n in range(4000):
            if n % 2:
                data = mutate(rng.choice(seeds))
                ours, theirs = fleetwire.decode(data), adapter.decode(data)
            else:
                data = mutate(rng.choice(envelopes))
                ours, theirs = fleetwire.open_envelope(data, public), adapter.open_envelope(data, public)
            if "cbor-not-deterministic" in (key(ours)[0], key(theirs)[0]):
                continue
            if key(ours) != key(theirs):
                differences.append(f"{data.hex()}: {key(ours)[:2]} vs {key(theirs)[:2]} {getattr(ours, 'detail', '')} | {getattr(theirs, 'detail', '')}")
    assert not differences, "\n".join(differences[:20])


def test_fleetwire_conformance_command_runs_the_javascript_adapter_with_a_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fleetwire.runtime.cli.cli import main as cli

    status = cli(["conformance", "--version", "1", "--timeout", "20", "--", _node(), str(JS_ADAPTER)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "trust.json" in out and "fail" not in out
