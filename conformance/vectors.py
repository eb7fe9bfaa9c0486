"""The vector runner: check an implementation against the JSON test vectors of a version.

Theory of operation
-------------------
The vectors in ``spec/vectors/v<N>/`` (format: spec/README.md) say, for a reader of version N,
which bytes it must accept — and then re-encode to the same bytes with the same content id —
and which it must refuse, with which error code. An implementation is anything with the small
:class:`Implementation` interface: ``decode`` message bytes, and ``open_envelope`` (verify a
COSE_Sign1 under a given Ed25519 public key, then decode its payload). Each answer is an
:class:`Accepted` (hex of the message re-encoded, content id) or a :class:`Refused` (code,
field). Two implementations ship here:

- :class:`Fleetwire`: this package, in process;
- :class:`AdapterProcess`: any program that speaks the adapter protocol on stdin/stdout, one
  JSON object per line (spec/README.md, "Adapter protocol"). ``python -m
  fleetwire.conformance.vectors --serve`` is that program for fleetwire itself.

Verdicts (spec/README.md, "Verdicts"): a refusal with the exact code (and the field, where the
vector names one and the implementation reports one) passes; a refusal with an *ancestor* of
the code in the published code tree (``codes.json``), or without a field, is **imprecise**:
conforming (MUST) but not as specific as the spec asks (SHOULD); anything else fails.

A broken adapter is a fact about that vector, never a crash of the runner: a line that is not
a JSON answer, no answer within the timeout, or an exit becomes an :class:`AdapterFault` for
the request that met it (failing that vector, with the request named), and the adapter is
started afresh for the next request, so one fault does not shift every later answer.
"""

from __future__ import annotations

import argparse
import copy
import enum
import importlib.resources
import json
import os
import selectors
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final, Protocol

import attrs
from fleetwire.protocol import envelope
from fleetwire.protocol.cose import parse_sign1, verify_sign1
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import VerifyKey
from fleetwire.protocol.messages import PROTOCOL_VERSION, decode_message, encode_message
from fleetwire.protocol.trust import Role, TrustStore

FORMAT: Final = "fleetwire-vectors/1"
#: Vector files of a version, in the order they are run.
FILES: Final = ("valid.json", "extensions.json", "invalid.json", "envelopes.json", "trust.json")
#: Files a version's folder may lack (added after the first vectors of a version).
OPTIONAL_FILES: Final = frozenset({"trust.json"})


class VectorFormatError(Exception):
    """A vector file that does not follow the format of spec/README.md."""


# --- the implementation interface --------------------------------------------------------


@attrs.frozen(slots=True)
class Accepted:
    """The implementation accepted the input; ``hex`` is the message as it re-encodes it."""

    hex: str
    content_id: str


@attrs.frozen(slots=True)
class Refused:
    """The implementation refused the input with ``code``; ``field`` names where, if it can."""

    code: str
    field: str | None = None
    detail: str = ""


@attrs.frozen(slots=True)
class AdapterFault:
    """The adapter broke the adapter protocol on this request: no verdict but a failure."""

    reason: str


Outcome = Accepted | Refused | AdapterFault


@attrs.frozen(slots=True)
class TrustInput:
    """What a trusted ``open`` is given (spec/README.md, "Adapter protocol")."""

    roots: tuple[bytes, ...]
    now: int
    revocations: tuple[bytes, ...] = ()
    credentials: tuple[bytes, ...] = ()
    role: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "roots": [key.hex() for key in self.roots],
            "revocations": [data.hex() for data in self.revocations],
            "credentials": [data.hex() for data in self.credentials],
            "now": self.now,
        }
        if self.role is not None:
            out["role"] = self.role
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrustInput:
        role = value.get("role")
        now = value["now"]
        if type(now) is not int or (role is not None and type(role) is not int):
            raise TypeError("now and role are integers")
        return cls(
            roots=tuple(bytes.fromhex(key) for key in value["roots"]),
            now=now,
            revocations=tuple(bytes.fromhex(item) for item in value.get("revocations", [])),
            credentials=tuple(bytes.fromhex(item) for item in value.get("credentials", [])),
            role=role,
        )


class Implementation(Protocol):
    """What the runner needs from an implementation under test."""

    name: str

    def decode(self, data: bytes) -> Outcome:
        """Decode one message (the reader of the highest version it speaks)."""
        ...

    def open_envelope(self, data: bytes, public_key: bytes) -> Outcome:
        """Verify a COSE_Sign1 under the Ed25519 ``public_key`` and decode its payload."""
        ...

    def open_trusted(self, data: bytes, trust: TrustInput) -> Outcome:
        """Open a COSE_Sign1 as a reader with a trust store does (protocol.md §7, §8)."""
        ...


class Fleetwire:
    """fleetwire itself, in process."""

    name = "fleetwire (in process)"

    def __init__(self, version: int = PROTOCOL_VERSION) -> None:
        #: The version it reads as: the vectors of version N describe a reader of N, which
        #: fleetwire is when pinned to N.
        self.version = min(max(version, 1), PROTOCOL_VERSION)

    def at_version(self, version: int) -> Fleetwire:
        """fleetwire reading as an implementation of ``version``."""
        reader = copy.copy(self)
        reader.version = min(max(version, 1), PROTOCOL_VERSION)
        return reader

    def decode(self, data: bytes) -> Outcome:
        try:
            message = decode_message(data, version=self.version)
        except FleetwireError as exc:
            return _refused(exc)
        encoded = encode_message(message)
        return Accepted(encoded.hex(), ContentId.of(encoded).raw.hex())

    def open_envelope(self, data: bytes, public_key: bytes) -> Outcome:
        try:
            payload = verify_sign1(parse_sign1(data), VerifyKey(public_key))
        except FleetwireError as exc:
            return _refused(exc)
        return self.decode(payload)

    def open_trusted(self, data: bytes, trust: TrustInput) -> Outcome:
        try:
            store = TrustStore(VerifyKey(key) for key in trust.roots)
            for revocations in trust.revocations:
                store.apply_revocations(revocations, trust.now)
            for credential in trust.credentials:
                store.add_credential(credential, trust.now)
            role = None if trust.role is None else Role(trust.role)
            signed = envelope.verify(data, store, trust.now, role=role, version=self.version)
        except FleetwireError as exc:
            return _refused(exc)
        encoded = encode_message(signed.message)
        return Accepted(encoded.hex(), ContentId.of(encoded).raw.hex())


def _refused(exc: FleetwireError) -> Refused:
    field = getattr(exc, "field", "") or None
    return Refused(exc.code, field, exc.message)


class AdapterProcess:
    """An implementation behind an adapter program (spec/README.md, "Adapter protocol").

    Use as a context manager; the program is started on entry and its stdin closed on exit.
    Each request waits at most ``timeout`` seconds for its answer line. A request the adapter
    breaks on (see the module docstring) gets an :class:`AdapterFault`, and the program is
    started again for the next request.
    """

    #: Longest answer line read; an adapter that writes more without a newline is broken.
    MAX_LINE: Final = 1 << 22

    def __init__(self, argv: list[str], name: str | None = None, timeout: float = 30.0) -> None:
        self.argv = argv
        self.name = name or " ".join(argv)
        self.timeout = timeout
        self.restarts = 0
        self.version: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pending = b""

    def __enter__(self) -> AdapterProcess:
        self._start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def _start(self) -> None:
        self._process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self._pending = b""

    def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.close()
        except OSError:
            pass  # it is gone already
        try:
            process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def _restart(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
        self._stop()
        self.restarts += 1
        self._start()

    def _read_line(self, deadline: float) -> bytes | None:
        """The next line of the adapter's stdout, or None at its end or at the deadline."""
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                if len(self._pending) > self.MAX_LINE:
                    raise _Broken(f"an answer line longer than {self.MAX_LINE} bytes")
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise _Broken(f"no answer within {self.timeout:g} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def _ask(self, request: dict[str, Any]) -> Outcome:
        answer = self.request(request)
        if isinstance(answer, AdapterFault):
            return answer
        outcome = outcome_from_json(answer)
        if isinstance(outcome, AdapterFault):
            self._restart()
            what = request.get("op", "?")
            return AdapterFault(f"adapter broke on the {what!s:.20} request: {outcome.reason}")
        return outcome

    def request(self, request: dict[str, Any]) -> dict[str, Any] | AdapterFault:
        """Send one request; its answer object, or the fault the adapter met (then restarted).

        The answer is any JSON object: each op of the adapter protocol says what it holds.
        """
        if self._process is None:
            raise RuntimeError("use AdapterProcess as a context manager")
        try:
            answer = self._exchange(request)
        except _Broken as exc:
            what = request.get("op", "?")
            self._restart()
            return AdapterFault(f"adapter broke on the {what!s:.20} request: {exc}")
        return answer

    def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdin is not None
        if self.version is not None:
            request = {**request, "version": self.version}
        try:
            process.stdin.write((json.dumps(request) + "\n").encode())
            process.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            raise _Broken(_exited(process)) from None
        line = self._read_line(time.monotonic() + self.timeout)
        if line is None:
            raise _Broken(_exited(process))
        try:
            answer = json.loads(line)
        except ValueError:
            text = line.decode("utf-8", "replace")
            raise _Broken(f"an answer line that is not JSON: {text!r:.80}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise _Broken(f"not an answer: {answer!r:.80}")
        return answer

    def at_version(self, version: int) -> AdapterProcess:
        """From now on, every request names ``version``: the reader version the vectors
        describe; an adapter of one version ignores it (spec/README.md, "Adapter protocol")."""
        self.version = version
        return self

    def decode(self, data: bytes) -> Outcome:
        return self._ask({"op": "decode", "hex": data.hex()})

    def open_envelope(self, data: bytes, public_key: bytes) -> Outcome:
        return self._ask({"op": "open", "hex": data.hex(), "public_key": public_key.hex()})

    def open_trusted(self, data: bytes, trust: TrustInput) -> Outcome:
        return self._ask({"op": "open", "hex": data.hex(), **trust.to_json()})


class _Broken(Exception):
    """The adapter broke the adapter protocol (the message says how)."""


def _exited(process: subprocess.Popen[bytes]) -> str:
    try:
        status = process.wait(5)
    except subprocess.TimeoutExpired:
        return "it closed its output without answering"
    return f"it exited (status {status}) without answering"


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Accepted):
        return {"ok": True, "hex": outcome.hex, "content_id": outcome.content_id}
    if isinstance(outcome, AdapterFault):
        return {"ok": False, "code": "adapter-protocol", "detail": outcome.reason}
    answer: dict[str, Any] = {"ok": False, "code": outcome.code}
    if outcome.field:
        answer["field"] = outcome.field
    if outcome.detail:
        answer["detail"] = outcome.detail
    return answer


def outcome_from_json(answer: Any) -> Outcome:
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        return AdapterFault(f"not an answer: {answer!r:.80}")
    if answer["ok"]:
        hex_, cid = answer.get("hex"), answer.get("content_id")
        if not isinstance(hex_, str) or not isinstance(cid, str):
            return AdapterFault(f"an acceptance without hex and content_id: {answer!r:.80}")
        return Accepted(hex_, cid)
    code, field = answer.get("code"), answer.get("field")
    if not isinstance(code, str):
        return AdapterFault(f"a refusal without a code: {answer!r:.80}")
    return Refused(code, field if isinstance(field, str) else None, str(answer.get("detail", "")))


def serve_adapter(implementation: Implementation, stdin: IO[str], stdout: IO[str]) -> None:
    """Answer adapter-protocol requests from ``stdin`` until it closes."""
    for line in stdin:
        try:
            request = json.loads(line)
            data = bytes.fromhex(request["hex"])
            at_version = getattr(implementation, "at_version", None)
            if "version" in request and at_version is not None:
                implementation = at_version(int(request["version"]))
            if request["op"] == "decode":
                outcome = implementation.decode(data)
            elif request["op"] == "open" and "roots" in request:
                outcome = implementation.open_trusted(data, TrustInput.from_json(request))
            elif request["op"] == "open":
                outcome = implementation.open_envelope(data, bytes.fromhex(request["public_key"]))
            else:
                outcome = Refused("adapter-protocol", None, f"unknown op {request['op']!r}")
        except (ValueError, KeyError, TypeError) as exc:
            outcome = Refused("adapter-protocol", None, f"bad request: {exc}")
        stdout.write(json.dumps(outcome_to_json(outcome)) + "\n")
        stdout.flush()


# --- vectors -------------------------------------------------------------------------------


def default_spec_dir() -> Path:
    """The spec shipped with the package (``fleetwire.spec``), or ``spec/`` in a checkout."""
    installed = Path(str(importlib.resources.files("fleetwire.spec")))
    if (installed / "vectors").is_dir():
        return installed
    here = Path(__file__).resolve().parent.parent / "spec"
    if not (here / "vectors").is_dir():
        raise FileNotFoundError("spec/vectors not found beside the package; pass spec_dir")
    return here


def versions_available(spec_dir: Path | None = None) -> list[int]:
    """Protocol versions that have vectors, ascending."""
    root = (spec_dir or default_spec_dir()) / "vectors"
    found = [int(p.name[1:]) for p in root.glob("v*") if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found)


def load_vectors(version: int, spec_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """File name → document for the vector files of ``version``, after a format check."""
    folder = (spec_dir or default_spec_dir()) / "vectors" / f"v{version}"
    documents: dict[str, dict[str, Any]] = {}
    for name in (*FILES, "codes.json"):
        path = folder / name
        if name in OPTIONAL_FILES and not path.exists():
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != FORMAT:
            raise VectorFormatError(f"{path.name}: format is not {FORMAT}")
        if document.get("protocol_version") != version:
            raise VectorFormatError(f"{path.name}: protocol_version is not {version}")
        documents[name] = document
    return documents


class Verdict(enum.Enum):
    PASS = "pass"
    IMPRECISE = "imprecise"
    FAIL = "fail"


@attrs.frozen(slots=True)
class Result:
    """One vector run against one implementation."""

    file: str
    vector_id: str
    verdict: Verdict
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.verdict.value:9} {self.file}:{self.vector_id}: expected {self.expected}, got {self.got}"


@attrs.frozen(slots=True)
class Report:
    """The outcome of :func:`run_vectors`."""

    version: int
    implementation: str
    results: tuple[Result, ...]

    def of(self, verdict: Verdict) -> list[Result]:
        return [result for result in self.results if result.verdict is verdict]

    @property
    def ok(self) -> bool:
        """Conforming: no vector failed (imprecise refusals are allowed)."""
        return not self.of(Verdict.FAIL)

    def counts(self) -> dict[str, Counter[str]]:
        """Per file, how many vectors got each verdict."""
        out: dict[str, Counter[str]] = {}
        for result in self.results:
            out.setdefault(result.file, Counter())[result.verdict.value] += 1
        return out

    def summary(self) -> str:
        lines = [f"protocol v{self.version} vectors against {self.implementation}:"]
        for file, counter in self.counts().items():
            lines.append(
                f"  {file:16} " + ", ".join(f"{n} {v}" for v, n in sorted(counter.items()))
            )
        lines += [f"  {result}" for result in self.results if result.verdict is not Verdict.PASS]
        return "\n".join(lines)


def _ancestors(code: str, tree: dict[str, str | None]) -> set[str]:
    out: set[str] = set()
    parent = tree.get(code)
    while parent is not None and parent not in out:
        out.add(parent)
        parent = tree.get(parent)
    return out


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, AdapterFault):
        return outcome.reason
    if isinstance(outcome, Accepted):
        return f"accepted as {outcome.hex[:16]}… id {outcome.content_id[:12]}…"
    where = f" at {outcome.field}" if outcome.field else ""
    return f"refused {outcome.code}{where}" + (f" ({outcome.detail})" if outcome.detail else "")


def _judge_accept(outcome: Outcome, hex_: str | None, cid: str) -> Verdict:
    if not isinstance(outcome, Accepted) or outcome.content_id != cid:
        return Verdict.FAIL
    if hex_ is not None and outcome.hex != hex_:
        return Verdict.FAIL
    try:
        named = ContentId.of(bytes.fromhex(outcome.hex)).raw.hex()
    except ValueError:
        return Verdict.FAIL  # not hex
    if named != cid:
        return Verdict.FAIL  # the implementation's id must name the bytes it returned
    return Verdict.PASS


def _judge_refuse(
    outcome: Outcome, code: str, field: str | None, tree: dict[str, str | None]
) -> Verdict:
    if not isinstance(outcome, Refused):
        return Verdict.FAIL
    if outcome.code == code:
        if field is None or outcome.field == field:
            return Verdict.PASS
        return Verdict.IMPRECISE if outcome.field is None else Verdict.FAIL
    return Verdict.IMPRECISE if outcome.code in _ancestors(code, tree) else Verdict.FAIL


def _run(
    documents: dict[str, dict[str, Any]], implementation: Implementation, version: int
) -> Iterator[Result]:
    tree: dict[str, str | None] = documents["codes.json"]["codes"]
    at_version = getattr(implementation, "at_version", None)
    if at_version is not None:  # its reader of that version, where it offers one
        implementation = at_version(version)
    decode = implementation.decode
    for name in ("valid.json", "extensions.json"):
        for vector in documents[name]["vectors"]:
            outcome = decode(bytes.fromhex(vector["hex"]))
            verdict = _judge_accept(outcome, vector["hex"], vector["content_id"])
            yield Result(name, vector["id"], verdict, f"accept, id {vector['content_id'][:12]}…",
                         _describe(outcome))  # fmt: skip
    for vector in documents["invalid.json"]["vectors"]:
        outcome = decode(bytes.fromhex(vector["hex"]))
        field = vector.get("field")
        verdict = _judge_refuse(outcome, vector["code"], field, tree)
        expected = vector["code"] + (f" at {field}" if field else "")
        yield Result("invalid.json", vector["id"], verdict, expected, _describe(outcome))
    envelopes = documents["envelopes.json"]
    public_key = bytes.fromhex(envelopes["key"]["public"])
    for vector in envelopes["valid"]:
        outcome = implementation.open_envelope(bytes.fromhex(vector["hex"]), public_key)
        verdict = _judge_accept(outcome, None, vector["payload_content_id"])
        yield Result("envelopes.json", vector["id"], verdict,
                     f"accept, payload id {vector['payload_content_id'][:12]}…", _describe(outcome))  # fmt: skip
    for vector in envelopes["invalid"]:
        outcome = implementation.open_envelope(bytes.fromhex(vector["hex"]), public_key)
        field = vector.get("field")
        verdict = _judge_refuse(outcome, vector["code"], field, tree)
        expected = vector["code"] + (f" at {field}" if field else "")
        yield Result("envelopes.json", vector["id"], verdict, expected, _describe(outcome))
    trust = documents.get("trust.json")
    if trust is None:
        return
    for vector in trust["valid"]:
        outcome = _open_trusted(implementation, vector)
        verdict = _judge_accept(outcome, None, vector["payload_content_id"])
        yield Result("trust.json", vector["id"], verdict,
                     f"accept, payload id {vector['payload_content_id'][:12]}…", _describe(outcome))  # fmt: skip
    for vector in trust["invalid"]:
        outcome = _open_trusted(implementation, vector)
        field = vector.get("field")
        verdict = _judge_refuse(outcome, vector["code"], field, tree)
        expected = vector["code"] + (f" at {field}" if field else "")
        yield Result("trust.json", vector["id"], verdict, expected, _describe(outcome))


def _open_trusted(implementation: Implementation, vector: dict[str, Any]) -> Outcome:
    open_trusted = getattr(implementation, "open_trusted", None)
    if open_trusted is None:  # an implementation written before the trusted open existed
        return AdapterFault("the implementation has no open_trusted (spec/README.md)")
    outcome: Outcome = open_trusted(bytes.fromhex(vector["hex"]), TrustInput.from_json(vector))
    return outcome


def run_vectors(
    version: int, implementation: Implementation, spec_dir: Path | None = None
) -> Report:
    """Run every vector of ``version`` against ``implementation``."""
    documents = load_vectors(version, spec_dir)
    return Report(version, implementation.name, tuple(_run(documents, implementation, version)))


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwire.conformance.vectors",
        description="Run the protocol test vectors against an implementation.",
    )
    parser.add_argument("--serve", action="store_true", help="be the adapter program for fleetwire")
    parser.add_argument("--version", type=int, default=None, help="protocol version (default: all)")
    parser.add_argument("--spec", type=Path, default=None, help="the spec/ folder")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds an adapter has per answer (default 30)"
    )
    parser.add_argument(
        "adapter", nargs=argparse.REMAINDER, help="adapter program and its arguments"
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve_adapter(Fleetwire(), sys.stdin, sys.stdout)
        return 0
    adapter = args.adapter[1:] if args.adapter[:1] == ["--"] else args.adapter
    versions = [args.version] if args.version is not None else versions_available(args.spec)
    ok = True
    for version in versions:
        if adapter:
            try:
                with AdapterProcess(adapter, timeout=args.timeout) as implementation:
                    report = run_vectors(version, implementation, args.spec)
            except OSError as exc:
                print(f"error: cannot run the adapter {adapter[0]!r}: {exc.strerror or exc} "
                      "(hint: give the program and its arguments after --)", file=sys.stderr)  # fmt: skip
                return 2
        else:
            report = run_vectors(version, Fleetwire(), args.spec)
        print(report.summary())
        ok = ok and report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
