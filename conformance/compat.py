"""Compatibility check across the version window, in the spirit of ``buf breaking``.

Theory of operation
-------------------
An implementation of version N reads N, N-1 and N-2 (spec/README.md, "Version policy"), and
every released version's spec is frozen. So a change is *breaking* when, for any version V in
the window that has vectors:

1. a valid (or extension, or signed) vector of V is no longer accepted, or no longer
   re-encodes to the same bytes and the same content id — a reader would now name the same
   content differently, or refuse what a V writer sends;
2. an invalid vector of V whose fault is in the encoding or in a content id (codes under
   ``cbor-decode`` and ``content-id-invalid``, and the empty-list rule) is now accepted — the
   rules that keep "one content, one id" never loosen. (Other refusals may become acceptances:
   a newer reader knows more types and keys.)
3. given a *baseline* copy of the spec (an older checkout, the way ``buf breaking --against``
   takes one), a vector of a version below N was removed or changed — released versions are
   frozen; only the current version may still change.

With only v1 the window is v1 alone, and the check guards v1 against regressions of the
implementation; once v2 exists the same code checks v1 vectors against a v2 reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from fleetwire.protocol.messages import OLDEST_READ_VERSION, PROTOCOL_VERSION

from .vectors import (
    Accepted,
    AdapterFault,
    Implementation,
    Refused,
    load_vectors,
    versions_available,
)

#: Codes whose rules may never loosen within the window (their descendants included).
NEVER_LOOSEN = frozenset({"cbor-decode", "content-id-invalid"})


@attrs.frozen(slots=True)
class Issue:
    """One breaking change found."""

    version: int
    vector_id: str
    problem: str

    def __str__(self) -> str:
        return f"v{self.version} {self.vector_id}: {self.problem}"


@attrs.frozen(slots=True)
class CompatReport:
    current: int
    versions: tuple[int, ...]
    checked: int
    issues: tuple[Issue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues

    def summary(self) -> str:
        head = (
            f"compatibility of a v{self.current} reader with versions "
            f"{', '.join(map(str, self.versions)) or '(none)'}: {self.checked} vectors checked, "
            f"{len(self.issues)} breaking"
        )
        return "\n".join([head, *(f"  {issue}" for issue in self.issues)])


def window(current: int) -> range:
    """Versions a reader of ``current`` must read (N-2 policy)."""
    return range(max(1, current - 2), current + 1)


def _never_loosens(code: str, tree: dict[str, str | None], vector: dict[str, Any]) -> bool:
    if vector.get("id", "").startswith("empty-list/"):
        return True  # an empty optional list would give one content two encodings
    walk: str | None = code
    while walk is not None:
        if walk in NEVER_LOOSEN:
            return True
        walk = tree.get(walk)
    return False


def _check_version(
    version: int, documents: dict[str, dict[str, Any]], implementation: Implementation
) -> Iterator[Issue | None]:
    """Yield an Issue per breaking vector and None per vector checked fine."""
    for name in ("valid.json", "extensions.json"):
        for vector in documents[name]["vectors"]:
            outcome = implementation.decode(bytes.fromhex(vector["hex"]))
            if isinstance(outcome, AdapterFault):
                yield Issue(version, vector["id"], f"no verdict: {outcome.reason}")
            elif not isinstance(outcome, Accepted):
                yield Issue(version, vector["id"], f"no longer accepted ({outcome.code})")
            elif outcome.hex != vector["hex"] or outcome.content_id != vector["content_id"]:
                yield Issue(
                    version, vector["id"], "re-encodes to other bytes or another content id"
                )
            else:
                yield None
    envelopes = documents["envelopes.json"]
    public_key = bytes.fromhex(envelopes["key"]["public"])
    for vector in envelopes["valid"]:
        outcome = implementation.open_envelope(bytes.fromhex(vector["hex"]), public_key)
        if not isinstance(outcome, Accepted) or outcome.content_id != vector["payload_content_id"]:
            yield Issue(
                version, vector["id"], "signed vector no longer opens to the same content id"
            )
        else:
            yield None
    tree: dict[str, str | None] = documents["codes.json"]["codes"]
    for vector in documents["invalid.json"]["vectors"]:
        if not _never_loosens(vector["code"], tree, vector):
            continue
        outcome = implementation.decode(bytes.fromhex(vector["hex"]))
        if isinstance(outcome, Refused):
            yield None
        else:
            yield Issue(
                version, vector["id"], f"now accepted, but {vector['code']} must never loosen"
            )


def _frozen(
    version: int, baseline: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]
) -> Iterator[Issue]:
    """Released vectors may only be added to, never removed or changed."""

    def index(documents: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, document in documents.items():
            for key in ("vectors", "valid", "invalid"):
                for vector in document.get(key, []):
                    out[f"{name}:{vector['id']}"] = vector
        return out

    now = index(current)
    for key, vector in index(baseline).items():
        if key not in now:
            yield Issue(version, key, "removed from a released version")
        elif now[key] != vector:
            yield Issue(version, key, "changed in a released version")


def check_compatibility(
    implementation: Implementation,
    current: int = PROTOCOL_VERSION,
    spec_dir: Path | None = None,
    baseline_dir: Path | None = None,
) -> CompatReport:
    """Check ``implementation`` (a reader of ``current``) against every version in its window."""
    assert OLDEST_READ_VERSION in window(PROTOCOL_VERSION)
    versions = tuple(v for v in window(current) if v in versions_available(spec_dir))
    issues: list[Issue] = []
    checked = 0
    for version in versions:
        documents = load_vectors(version, spec_dir)
        for issue in _check_version(version, documents, implementation):
            checked += 1
            if issue is not None:
                issues.append(issue)
        if (
            baseline_dir is not None
            and version < current
            and version in versions_available(baseline_dir)
        ):
            issues.extend(_frozen(version, load_vectors(version, baseline_dir), documents))
    return CompatReport(current, versions, checked, tuple(issues))
