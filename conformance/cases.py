"""Conformance cases: one requirement of the spec each, numbered by its section.

Theory of operation
-------------------
A :class:`Case` is one requirement of ``spec/v<N>/protocol.md``: its number is the section it
comes from and an ordinal within it (``6.4.3`` is the third case of §6.4), its ``requirement``
is the sentence quoted from the spec, its ``level`` the keyword of that sentence (MUST or
SHOULD; a defining sentence without a keyword counts as MUST), and ``expectation`` says in a
line what passing looks like. ``family`` groups cases for the version matrix (codec, envelope,
trust, writer, behaviour), and ``writer``/``reader`` are the versions the case is about.

Running a case sends adapter-protocol requests (:class:`Probe`, anything with ``request``) and
judges each answer into a :class:`Check` — the request, what was expected, what came back and a
:class:`Status`. A case's status is its worst check's. A case whose op the implementation does
not offer (its ``hello`` answer), or at a version it does not speak, is **skipped** with the
reason, never failed: the report shows what was not tested.

This module holds the framework and the cases built from the vector files (reader and writer);
:mod:`.scenarios` adds the behaviour cases.
"""

from __future__ import annotations

import enum
import fnmatch
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs
import cbor2
from fleetwire.protocol.ids import ContentId

from .vectors import (
    Accepted,
    AdapterFault,
    Outcome,
    Refused,
    Verdict,
    _describe,
    _judge_accept,
    _judge_refuse,
    load_vectors,
    outcome_from_json,
)

__all__ = [
    "Case",
    "CaseResult",
    "Check",
    "Context",
    "Level",
    "Probe",
    "Status",
    "cross_version_cases",
    "select",
    "vector_cases",
]


class Level(enum.Enum):
    MUST = "MUST"
    SHOULD = "SHOULD"


class Status(enum.Enum):
    """A check's or case's outcome, worst last."""

    PASS = "pass"
    SKIP = "skip"
    IMPRECISE = "imprecise"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return list(Status).index(self)


_FROM_VERDICT = {Verdict.PASS: Status.PASS, Verdict.IMPRECISE: Status.IMPRECISE,
                 Verdict.FAIL: Status.FAIL}  # fmt: skip


@attrs.frozen(slots=True)
class Check:
    """One request and its judgement."""

    label: str
    request: dict[str, Any]
    expected: str
    got: str
    status: Status


class Probe(Protocol):
    """What a case talks to: an adapter (``AdapterProcess``) or anything answering the same."""

    def request(self, request: dict[str, Any]) -> dict[str, Any] | AdapterFault: ...


@attrs.define
class Context:
    """What a case runs with: the implementation, what it said it offers, the spec folder."""

    probe: Probe
    versions: tuple[int, int]
    ops: frozenset[str]
    machines: frozenset[str]
    spec_dir: Path | None = None
    _vectors: dict[int, dict[str, dict[str, Any]]] = attrs.Factory(dict)

    def vectors(self, version: int) -> dict[str, dict[str, Any]]:
        if version not in self._vectors:
            self._vectors[version] = load_vectors(version, self.spec_dir)
        return self._vectors[version]

    def ask(self, request: dict[str, Any]) -> dict[str, Any] | AdapterFault:
        return self.probe.request(request)

    def outcome(self, request: dict[str, Any]) -> Outcome:
        answer = self.ask(request)
        return answer if isinstance(answer, AdapterFault) else outcome_from_json(answer)


@attrs.frozen(slots=True)
class Case:
    id: str
    title: str
    level: Level
    requirement: str
    expectation: str
    family: str
    run: Callable[[Context], list[Check]] = attrs.field(repr=False, eq=False)
    needs: tuple[str, ...] = ("decode",)
    machine: str | None = None
    writer: int = 1
    reader: int = 1
    section: str = ""

    def spec_section(self) -> str:
        return self.section or self.id.rsplit(".", 1)[0]


@attrs.frozen(slots=True)
class CaseResult:
    case: Case
    status: Status
    checks: tuple[Check, ...]
    note: str = ""

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for check in self.checks:
            out[check.status.value] = out.get(check.status.value, 0) + 1
        return out


#: The note of a case whose version's vectors have nothing for it (left out of reports).
NOTHING_TO_CHECK = "nothing to check at this version"
#: The start of the note of a case at a version the implementation does not speak.
UNSPOKEN = "the implementation does not speak"


def run_case(case: Case, context: Context) -> CaseResult:
    missing = [op for op in case.needs if op not in context.ops]
    if missing:
        return CaseResult(case, Status.SKIP, (), f"the adapter offers no {', '.join(missing)}")
    if case.machine is not None and case.machine not in context.machines:
        return CaseResult(case, Status.SKIP, (), f"the adapter runs no {case.machine} scenarios")
    low, high = context.versions
    spoken = [v for v in (case.writer, case.reader) if not low <= v <= high]
    if spoken:
        return CaseResult(case, Status.SKIP, (), f"{UNSPOKEN} v{spoken[0]}")
    checks = tuple(case.run(context))
    if not checks:
        return CaseResult(case, Status.SKIP, (), NOTHING_TO_CHECK)
    worst = max((check.status for check in checks), key=lambda s: s.rank)
    return CaseResult(case, worst, checks)


def select(cases: Iterable[Case], patterns: Iterable[str] | None) -> list[Case]:
    """The cases whose id matches one of ``patterns`` (``6.4.*``, ``3.1.2``, or a section such as
    ``6.4``; all if none)."""
    chosen = list(patterns or [])
    if not chosen:
        return list(cases)
    return [
        case for case in cases
        if any(fnmatch.fnmatchcase(case.id, p) or case.id.startswith(p + ".") for p in chosen)
    ]  # fmt: skip


def brief(request: dict[str, Any]) -> dict[str, Any]:
    """The request as the report shows it: long byte strings cut (the full vector is named)."""
    out: dict[str, Any] = {}
    for key, value in request.items():
        if isinstance(value, str) and len(value) > 240:
            out[key] = f"{value[:240]}… ({len(value) // 2} bytes)"
        elif isinstance(value, list) and len(json.dumps(value)) > 2000:
            out[key] = f"[{len(value)} items]"
        else:
            out[key] = value
    return out


# --- cases from the vector files -------------------------------------------------------

Selector = Callable[[dict[str, Any]], bool]


def _prefix(*prefixes: str) -> Selector:
    return lambda vector: any(vector["id"].startswith(p) for p in prefixes)


def _code(*codes: str) -> Selector:
    return lambda vector: vector.get("code") in codes


def _accept_checks(context: Context, version: int, file: str, chosen: Selector) -> list[Check]:
    out = []
    for vector in context.vectors(version)[file]["vectors"]:
        if not chosen(vector):
            continue
        request = {"op": "decode", "hex": vector["hex"], "version": version}
        outcome = context.outcome(request)
        verdict = _judge_accept(outcome, vector["hex"], vector["content_id"])
        out.append(Check(f"{file}:{vector['id']}", request,
                         f"accept; re-encoded to the same bytes, content id {vector['content_id']}",
                         _describe(outcome), _FROM_VERDICT[verdict]))  # fmt: skip
    return out


def _refuse_checks(context: Context, version: int, chosen: Selector) -> list[Check]:
    documents = context.vectors(version)
    tree = documents["codes.json"]["codes"]
    out = []
    for vector in documents["invalid.json"]["vectors"]:
        if not chosen(vector):
            continue
        request = {"op": "decode", "hex": vector["hex"], "version": version}
        outcome = context.outcome(request)
        field = vector.get("field")
        verdict = _judge_refuse(outcome, vector["code"], field, tree)
        expected = f"refuse with {vector['code']}" + (f" at {field}" if field else "")
        out.append(Check(f"invalid.json:{vector['id']}", request, expected, _describe(outcome),
                         _FROM_VERDICT[verdict]))  # fmt: skip
    return out


def _envelope_checks(context: Context, version: int, valid: bool, chosen: Selector) -> list[Check]:
    documents = context.vectors(version)
    envelopes = documents["envelopes.json"]
    tree = documents["codes.json"]["codes"]
    public = envelopes["key"]["public"]
    out = []
    for vector in envelopes["valid" if valid else "invalid"]:
        if not chosen(vector):
            continue
        request = {"op": "open", "hex": vector["hex"], "public_key": public, "version": version}
        outcome = context.outcome(request)
        if valid:
            verdict = _judge_accept(outcome, None, vector["payload_content_id"])
            expected = f"accept; payload content id {vector['payload_content_id']}"
        else:
            field = vector.get("field")
            verdict = _judge_refuse(outcome, vector["code"], field, tree)
            expected = f"refuse with {vector['code']}" + (f" at {field}" if field else "")
        out.append(Check(f"envelopes.json:{vector['id']}", request, expected, _describe(outcome),
                         _FROM_VERDICT[verdict]))  # fmt: skip
    return out


def _trust_checks(context: Context, version: int, valid: bool) -> list[Check]:
    documents = context.vectors(version)
    trust = documents.get("trust.json")
    if trust is None:
        return []
    tree = documents["codes.json"]["codes"]
    out = []
    for vector in trust["valid" if valid else "invalid"]:
        request = {"op": "open", "hex": vector["hex"], "roots": vector["roots"],
                   "revocations": vector.get("revocations", []),
                   "credentials": vector.get("credentials", []), "now": vector["now"],
                   "version": version}  # fmt: skip
        if "role" in vector:
            request["role"] = vector["role"]
        outcome = context.outcome(request)
        if valid:
            verdict = _judge_accept(outcome, None, vector["payload_content_id"])
            expected = f"accept; payload content id {vector['payload_content_id']}"
        else:
            verdict = _judge_refuse(outcome, vector["code"], vector.get("field"), tree)
            expected = f"refuse with {vector['code']}"
        out.append(Check(f"trust.json:{vector['id']}", request, expected, _describe(outcome),
                         _FROM_VERDICT[verdict]))  # fmt: skip
    return out


def _encode_checks(context: Context, version: int) -> list[Check]:
    out = []
    for vector in context.vectors(version)["valid.json"]["vectors"]:
        if vector["message"].get("version") != version:
            continue  # written at another version: the version matrix covers it
        request = {"op": "encode", "message": vector["message"], "version": version}
        answer = context.ask(request)
        expected = f"the bytes {vector['hex'][:32]}… with content id {vector['content_id'][:16]}…"
        if isinstance(answer, AdapterFault):
            out.append(Check(f"valid.json:{vector['id']}", request, expected, answer.reason,
                             Status.FAIL))  # fmt: skip
            continue
        got_hex = answer.get("hex")
        ok = answer.get("ok") is True and got_hex == vector["hex"]
        ok = ok and answer.get("content_id") == vector["content_id"]
        got = (f"bytes {str(got_hex)[:32]}… id {str(answer.get('content_id'))[:16]}…"
               if answer.get("ok") else f"refused {answer.get('code')}: {answer.get('detail', '')}")  # fmt: skip
        if answer.get("ok") and got_hex != vector["hex"]:
            got += f" (full: {got_hex})"
        out.append(Check(f"valid.json:{vector['id']}", request, expected, got,
                         Status.PASS if ok else Status.FAIL))  # fmt: skip
    return out


def _content_id_checks(context: Context, version: int) -> list[Check]:
    out = []
    samples = [v["hex"] for v in context.vectors(version)["valid.json"]["vectors"][:3]]
    samples += ["", "00", "ff" * 100]  # any bytes: the id names bytes, not only messages
    for data in samples:
        request = {"op": "content_id", "hex": data}
        answer = context.ask(request)
        want = ContentId.of(bytes.fromhex(data)).raw.hex()
        if isinstance(answer, AdapterFault):
            out.append(Check(f"{len(data) // 2} bytes", request, want, answer.reason, Status.FAIL))
            continue
        got = str(answer.get("content_id", answer))
        out.append(Check(f"{len(data) // 2} bytes", request, want, got,
                         Status.PASS if got == want else Status.FAIL))  # fmt: skip
    return out


def _sign_checks(context: Context, version: int) -> list[Check]:
    envelopes = context.vectors(version)["envelopes.json"]
    seed = envelopes["key"]["seed"]
    # The writer's form (§7 "Encoding"): protected a1 01 27, unprotected {4: kid}, nothing else.
    canonical = "d28443a10127a1045822" + envelopes["key"]["kid"]
    valid = {v["payload_content_id"]: v for v in envelopes["valid"] if v["hex"].startswith(canonical)}
    out = []
    for vector in context.vectors(version)["valid.json"]["vectors"]:
        match = valid.get(vector["content_id"])
        if match is None:
            continue
        request = {"op": "sign", "hex": vector["hex"], "seed": seed}
        answer = context.ask(request)
        expected = f"the envelope {match['hex'][:40]}… (envelopes.json:{match['id']})"
        if isinstance(answer, AdapterFault):
            got, status = answer.reason, Status.FAIL
        elif not answer.get("ok"):
            got, status = f"refused {answer.get('code')}", Status.FAIL
        else:
            got = str(answer.get("hex"))
            status = Status.PASS if got == match["hex"] else Status.FAIL
        out.append(Check(f"valid.json:{vector['id']}", request, expected, got, status))
    return out


def vector_cases(version: int) -> Iterator[Case]:
    """The reader and writer cases of one version's vector files."""
    v = version

    def case(id_: str, title: str, level: Level, requirement: str, expectation: str,
             family: str, run: Callable[[Context], list[Check]],
             needs: tuple[str, ...] = ("decode",)) -> Case:  # fmt: skip
        return Case(id_, title, level, requirement, expectation, family, run, needs,
                    writer=v, reader=v)  # fmt: skip

    yield case(
        "3.1.1", "Refuse what is not deterministic CBOR", Level.MUST,
        "A reader MUST refuse a message that is not in this encoding (`cbor-not-deterministic`, §9).",
        "every non-deterministic encoding is refused with cbor-not-deterministic", "codec",
        lambda c: _refuse_checks(c, v, _code("cbor-not-deterministic")))  # fmt: skip
    yield case(
        "3.1.2", "Write deterministic CBOR", Level.MUST,
        "A writer MUST encode every message in the core deterministic encoding of [RFC 8949] §4.2.1",
        "each valid vector's named fields encode to exactly its bytes", "writer",
        lambda c: _encode_checks(c, v), ("encode",))  # fmt: skip
    yield case(
        "3.2.1", "Accept, then re-encode to the same bytes and id", Level.MUST,
        "A reader that accepts a message MUST be able to re-encode it — including unknown "
        "extension keys, kept as read (§5.3) — to exactly the bytes it received.",
        "every valid vector is accepted, re-encoded to its bytes, with its content id", "codec",
        lambda c: _accept_checks(c, v, "valid.json", lambda x: True))  # fmt: skip
    yield case(
        "3.3.1", "Content ids name bytes", Level.MUST,
        "content-id = 0x12 0x20 || SHA-256(bytes)          ; 34 bytes",
        "the content id of any bytes is 1220 followed by their SHA-256", "codec",
        lambda c: _content_id_checks(c, v), ("content_id",))  # fmt: skip
    yield case(
        "3.3.2", "Refuse a malformed content id", Level.MUST,
        "A reader MUST refuse, in any content-id field, a byte string whose first byte is not "
        "`0x12`, whose second byte is not `0x20`, or whose length is not 34 (`message-invalid`, "
        "naming the field).",
        "each bad content id is refused with message-invalid at its field", "codec",
        lambda c: _refuse_checks(c, v, lambda x: "content-id" in x["id"] or "reference-" in x["id"]))  # fmt: skip
    yield case(
        "3.4.1", "Refuse input over the limits", Level.MUST,
        "MUST refuse input longer than 65536 bytes, or nesting deeper than 8 levels, with `cbor-limit`.",
        "over-size and over-deep input is refused with cbor-limit", "codec",
        lambda c: _refuse_checks(c, v, _code("cbor-limit")))  # fmt: skip
    yield case(
        "3.4.2", "Truncation is not a limit", Level.MUST,
        "A declared length — of a string, or a count of array items or map pairs — that runs "
        "past the end of the input is truncation: `cbor-malformed`, whatever the declared length",
        "every truncated input is refused with cbor-malformed", "codec",
        lambda c: _refuse_checks(c, v, _code("cbor-malformed")))  # fmt: skip
    yield case(
        "4.1", "Header fields present and typed", Level.MUST,
        "the header fields (keys 1–7) are present where required and of their types "
        "(`message-invalid`, naming the field);",
        "each broken header is refused with message-invalid at the header field", "codec",
        lambda c: _refuse_checks(c, v, lambda x: x["id"].startswith(("header/", "empty-list/references", "empty-list/critical"))))  # fmt: skip
    yield case(
        "5.1.1", "Refuse versions outside the window", Level.MUST,
        "A reader of version N with window `[max(1, N-2), N]` (for version 1: `[1, 1]`) MUST refuse:",
        "each out-of-window or inconsistent version is refused with its code and field",
        "codec", lambda c: _refuse_checks(c, v, _prefix("version/")))  # fmt: skip
    yield case(
        "5.1.2", "Read a newer writer's message by the rules of N", Level.MUST,
        "A message written at a *newer* version than N whose `min_version` is at most N is read "
        "by the rules of N: its unknown keys are extensions (§5.3).",
        "a message written at a newer version with min_version <= N is accepted, bytes kept",
        "codec", lambda c: _accept_checks(c, v, "valid.json", _prefix("header/newer-writer")))  # fmt: skip
    yield case(
        "5.2.1", "Refuse what is not one well-formed CBOR item", Level.MUST,
        "the bytes are one well-formed CBOR item within the limits (§3.4), with nothing after it, "
        "with no tag anywhere and every text string valid UTF-8",
        "malformed CBOR, tags and bad UTF-8 are refused with their cbor-* code", "codec",
        lambda c: _refuse_checks(c, v, _code("cbor-decode")))  # fmt: skip
    yield case(
        "5.2.2", "Refuse what is not a message map", Level.MUST,
        "the item is a map and every key is an unsigned integer (`message-invalid`);",
        "non-maps and maps with other keys are refused with message-invalid", "codec",
        lambda c: _refuse_checks(c, v, _prefix("shape/")))  # fmt: skip
    yield case(
        "5.2.3", "Refuse unknown or malformed types", Level.MUST,
        "the type is one the reader knows at a version in its window (`message-type-unknown`);",
        "unknown types are refused with message-type-unknown, a malformed type with message-invalid",
        "codec", lambda c: _refuse_checks(c, v, _prefix("type/")))  # fmt: skip
    yield case(
        "5.3.1", "Accept and keep unknown non-critical keys", Level.MUST,
        "Unless it is critical (§5.4), a reader MUST accept the message, MUST ignore the extension "
        "when acting on the message, and MUST keep it with its value, so that the message "
        "re-encodes to the same bytes and keeps its content id (§3.2).",
        "every extension vector is accepted with its bytes and content id", "codec",
        lambda c: _accept_checks(c, v, "extensions.json", lambda x: True))  # fmt: skip
    yield case(
        "5.4.1", "Refuse unknown critical keys", Level.MUST,
        "A reader MUST refuse a message whose `critical` names a key the reader does not know for "
        "that type, whether or not the key is present (`critical-field-unknown`, field "
        "`header.critical`).",
        "each unknown critical key is refused with critical-field-unknown at header.critical",
        "codec", lambda c: _refuse_checks(c, v, _prefix("critical/")))  # fmt: skip
    yield case(
        "5.4.2", "Known critical keys change nothing", Level.MUST,
        "Listing a key the reader knows is allowed and changes nothing.",
        "a message whose critical lists known keys is accepted", "codec",
        lambda c: _accept_checks(c, v, "valid.json", _prefix("header/critical")))  # fmt: skip
    body = ("body/", "empty-list/affects", "empty-list/rests-on")
    for id_, name, words in (
        ("6.1.1", "capability advertisements", ("capabilit", "versions")),
        ("6.2.1", "commitments", ("terms", "offer", "accepted", "fulfilled", "state", "rests-on")),
        ("6.3.1", "exception reports", ("severity", "scope", "affects")),
        ("6.4.1", "lease messages", ("grant", "priority", "missing-field")),
    ):
        yield case(
            id_, f"Refuse malformed {name}", Level.MUST,
            "the body fields, in key order, are present where required, of their types (§2) and "
            "within their ranges and bounds, an optional array present only with at least one item "
            "(`message-invalid`, naming the field",
            f"each malformed body of {name} is refused with message-invalid at its field", "codec",
            lambda c, words=words: _refuse_checks(  # type: ignore[misc]
                c, v, lambda x: x["id"].startswith(body) and any(w in x["id"] for w in words)))  # fmt: skip
    typed = ("wrong-type", "float-for-uint", "null-for-optional", "negative-uint", "text-too-long")
    yield case(
        "2.1", "Refuse values of the wrong kind", Level.MUST,
        "the body fields, in key order, are present where required, of their types (§2)",
        "floats, null, text, bool, bytes or negative values for typed fields are refused with "
        "message-invalid at the field", "codec",
        lambda c: _refuse_checks(c, v, lambda x: x["id"].startswith("body/")
                                 and any(t in x["id"] for t in typed)))  # fmt: skip
    yield case(
        "7.1", "Open valid envelopes", Level.MUST,
        "A reader MUST accept an envelope at every bound",
        "every valid envelope verifies under the test key and its payload decodes", "envelope",
        lambda c: _envelope_checks(c, v, True, lambda x: True), ("open",))  # fmt: skip
    yield case(
        "7.2", "Refuse malformed envelopes", Level.MUST,
        "A reader MUST refuse each of the following, and SHOULD check in this order",
        "each malformed envelope is refused with its envelope-* code", "envelope",
        lambda c: _envelope_checks(c, v, False, lambda x: x["code"].startswith("envelope-")
                                   and x["code"] != "envelope-kid-mismatch"), ("open",))  # fmt: skip
    yield case(
        "7.3", "Verify the signature under the kid's key", Level.MUST,
        "a reader MUST use it only to look up the key and MUST then check that the key it verifies "
        "with has exactly that kid (`envelope-kid-mismatch`).",
        "a bad signature or a foreign kid is refused (signature-invalid, envelope-kid-mismatch)",
        "envelope", lambda c: _envelope_checks(c, v, False, _code("signature-invalid",
                                                                  "envelope-kid-mismatch")), ("open",))  # fmt: skip
    yield case(
        "7.4", "Judge the payload by the message rules", Level.MUST,
        "only the payload, and only after the signature verifies, is judged by the message rules (§5.2).",
        "a signed payload that breaks a message rule is refused with that rule's code", "envelope",
        lambda c: _envelope_checks(c, v, False, lambda x: not x["code"].startswith(("envelope-", "signature-"))),
        ("open",))  # fmt: skip
    yield case(
        "7.5", "Write the envelope deterministically", Level.MUST,
        "A writer MUST write the envelope in deterministic encoding (§3.1), with the protected "
        "bucket `a1 01 27` and the unprotected bucket `{4: kid}`.",
        "signing a message with the test key gives exactly the vector's envelope", "writer",
        lambda c: _sign_checks(c, v), ("sign",))  # fmt: skip
    yield case(
        "8.1", "Trust what the roots vouch for", Level.MUST,
        "treat a key as trusted at time `now` only if a credential for its kid is valid at `now`",
        "each envelope signed under a valid credential is accepted", "trust",
        lambda c: _trust_checks(c, v, True), ("open",))  # fmt: skip
    yield case(
        "8.2", "Refuse what the roots do not vouch for", Level.MUST,
        "accept a credential only if it is signed by a root key that is not revoked, under the "
        "credential `external_aad`, and its `issuer` field is that key's kid",
        "each untrusted, expired, revoked or wrong-role signer is refused with its code", "trust",
        lambda c: _trust_checks(c, v, False), ("open",))  # fmt: skip


# --- cases across versions (the N-2 matrix) --------------------------------------------------


def _cross_read_checks(context: Context, writer: int, reader: int) -> list[Check]:
    """Messages written at ``writer`` (its valid vectors) read by the implementation as a
    reader of ``reader``: accepted with the same bytes and id when ``min_version <= reader``,
    refused with version-unsupported otherwise (protocol.md §5.1)."""
    out = []
    tree = context.vectors(writer)["codes.json"]["codes"]
    for vector in context.vectors(writer)["valid.json"]["vectors"]:
        request = {"op": "decode", "hex": vector["hex"], "version": reader}
        outcome = context.outcome(request)
        if vector["message"].get("min_version", 1) <= reader:
            verdict = _judge_accept(outcome, vector["hex"], vector["content_id"])
            expected = f"accept; same bytes, content id {vector['content_id']}"
        else:
            verdict = _judge_refuse(outcome, "version-unsupported", "header.min_version", tree)
            expected = "refuse with version-unsupported at header.min_version"
        out.append(Check(f"v{writer} valid.json:{vector['id']}", request, expected,
                         _describe(outcome), _FROM_VERDICT[verdict]))  # fmt: skip
    return out


def _convert_checks(context: Context, writer: int, reader: int,
                    judge_read: Callable[[bytes, int], Outcome | None] | None) -> list[Check]:  # fmt: skip
    """Each valid vector of ``writer`` converted to version ``reader``: either a message that
    names version ``reader`` and that a reader of ``reader`` accepts, or the typed refusal
    ``version-not-expressible`` — never anything else, never a silent drop."""
    out = []
    for vector in context.vectors(writer)["valid.json"]["vectors"]:
        request = {"op": "convert", "hex": vector["hex"], "version": reader}
        outcome = context.outcome(request)
        label = f"v{writer} valid.json:{vector['id']} → v{reader}"
        expected = (f"a message written at v{reader} that a v{reader} reader accepts, or "
                    "version-not-expressible")  # fmt: skip
        if isinstance(outcome, Refused):
            ok = outcome.code == "version-not-expressible"
            out.append(Check(label, request, expected, _describe(outcome),
                             Status.PASS if ok else Status.FAIL))  # fmt: skip
            continue
        if not isinstance(outcome, Accepted):
            out.append(Check(label, request, expected, _describe(outcome), Status.FAIL))
            continue
        data = bytes.fromhex(outcome.hex)
        read = judge_read(data, reader) if judge_read is not None else None
        if read is None:
            got, status = "converted; no reference reader of that version to judge it", Status.SKIP
        elif not isinstance(read, Accepted):
            got, status = f"converted, but a v{reader} reader says: {_describe(read)}", Status.FAIL
        elif _version_of(data) != reader:
            got, status = f"converted, but the message names version {_version_of(data)}", Status.FAIL
        else:
            got, status = f"converted and read at v{reader}", Status.PASS
        out.append(Check(label, request, expected, got, status))
    return out


def _version_of(data: bytes) -> int | None:
    try:
        value = cbor2.loads(data)
    except (ValueError, cbor2.CBORDecodeError):
        return None
    version = value.get(1) if isinstance(value, dict) else None
    return version if isinstance(version, int) else None


def cross_version_cases(pairs: Iterable[tuple[int, int]],
                        judge_read: Callable[[bytes, int], Outcome | None] | None = None) -> Iterator[Case]:  # fmt: skip
    """The cases of each (writer, reader) pair of different versions inside the window."""
    for writer, reader in pairs:
        yield Case(
            "5.1.3", f"A v{reader} reader reads what v{writer} wrote", Level.MUST,
            "An implementation of version N reads messages written at N, N-1 and N-2",
            "each valid message of the writer's version is accepted with its bytes and id, or "
            "refused as version-unsupported where its min_version is newer than the reader",
            "codec", lambda c, w=writer, r=reader: _cross_read_checks(c, w, r),  # type: ignore[misc]
            writer=writer, reader=reader)  # fmt: skip
        if reader < writer:
            yield Case(
                "5.1.4", f"Write v{writer} messages for a v{reader} peer", Level.MUST,
                "and writes messages at N, or at N-1 or N-2 for peers that only read those.",
                f"each message converts to one a v{reader} reader accepts, or is refused with "
                "version-not-expressible", "writer",
                lambda c, w=writer, r=reader: _convert_checks(c, w, r, judge_read),  # type: ignore[misc]
                ("convert",), writer=writer, reader=reader)  # fmt: skip
