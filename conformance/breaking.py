"""The spec's breaking-change check, in the spirit of ``buf breaking`` (spec/v2/versions.md §5).

Theory of operation
-------------------
The spec of version N is every CDDL file in ``spec/v1/`` .. ``spec/vN/``; a rule in a later
version's file replaces the rule of the same name from an earlier one (version 2's
``exception-report`` adds key 15 to version 1's). Each map rule is read into its members — key,
optional or not, CDDL type, and field name (the comment after each member) — and, for a message,
its type code (``header<N>``). The check then compares:

1. **across the window**: the schema of every version N with that of every older version M in
   N's window (``max(1, N-2) .. N-1``). A type or key of M must still be in N, under the same
   code or key, with the same CDDL type and no stricter optionality; N may add types, and add
   optional keys. Error codes (``codes.json``) of M must keep their place in N's code tree.
   Every valid and extension vector of M must still be read, and re-encoded to the same bytes,
   by the reference reader of N (this package, reading as version N).
2. **against the frozen record of each released version** (``spec/vN/frozen.json``, written by
   ``fleetwire spec freeze N`` when N is released): the schema by the same rules and, besides,
   no key added to a released version; every vector recorded there must still be there,
   byte for byte (only additions are allowed: v1 §5.5); the code tree as above.

Each break names its rule (the table of versions.md §5), the file it is in, and where. Nothing
here writes anything but :func:`freeze`'s record.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.messages import PROTOCOL_VERSION, decode_message, encode_message

#: The rules a break is named by (spec/v2/versions.md §5).
RULES: Final = {
    "type-removed": "a type of an older version in the window is gone",
    "type-renumbered": "a type's rule has another type code",
    "type-code-reused": "a type code of an older version now names another type",
    "key-removed": "a body key of a type is gone",
    "key-renumbered": "a field moved to another key",
    "key-reused": "a key of an older version now holds another field",
    "type-changed": "a key's CDDL type changed",
    "field-now-mandatory": "a mandatory key was added, or an optional one made mandatory",
    "key-added-to-released": "a released version's rule gained a key (add it in a new version)",
    "error-code-reused": "an error code was dropped or moved in the code tree",
    "vector-changed": "a vector of a released version changed or was removed",
    "vector-no-longer-met": "the reader of a newer version no longer reads an older valid vector",
}

FROZEN_NAME: Final = "frozen.json"
FROZEN_FORMAT: Final = "fleetwire-frozen/1"


@attrs.frozen(slots=True)
class Member:
    """One member of a map rule: ``? 11: uint, ; term_ms``."""

    key: int
    optional: bool
    type: str
    name: str


@attrs.frozen(slots=True)
class MapRule:
    """A map rule of the CDDL, with the file that defines it (for the version in question)."""

    name: str
    code: int | None  # the message type code, for rules that include header<code>
    file: str
    members: tuple[Member, ...]

    def by_key(self) -> dict[int, Member]:
        return {member.key: member for member in self.members}


@attrs.frozen(slots=True)
class Break:
    """One breaking change: the rule broken, the file it is in, and where."""

    rule: str
    file: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule}: {self.where}: {self.detail}"


@attrs.frozen(slots=True)
class Report:
    versions: tuple[int, ...]
    released: tuple[int, ...]
    breaks: tuple[Break, ...]

    @property
    def ok(self) -> bool:
        return not self.breaks

    def summary(self) -> str:
        head = (
            f"spec check: versions {', '.join(map(str, self.versions)) or '(none)'}"
            f" (released: {', '.join(map(str, self.released)) or 'none'}): "
            f"{len(self.breaks)} breaking change{'' if len(self.breaks) == 1 else 's'}"
        )
        return "\n".join([head, *(f"  {item}" for item in self.breaks)])


# --- reading the CDDL -------------------------------------------------------------------------

_RULE: Final = re.compile(r"^([a-z][a-z0-9-]*) = \{\n(.*?)\n\}", re.M | re.S)
_HEADER: Final = re.compile(r"^\s*header<(\d+)>,")
_MEMBER: Final = re.compile(r"^\s*(\?\s*)?(\d+):\s*(.+?),?\s*;\s*([A-Za-z_]\w*)")


def parse_cddl(path: Path, label: str) -> dict[str, MapRule]:
    """The map rules of one CDDL file in our style: one member a line, commented by its name."""
    rules: dict[str, MapRule] = {}
    text = path.read_text(encoding="utf-8")
    for match in _RULE.finditer(text):
        code = None
        members = []
        for line in match.group(2).splitlines():
            header = _HEADER.match(line)
            if header is not None:
                code = int(header.group(1))
                continue
            member = _MEMBER.match(line)
            if member is not None:
                optional, key, type_, name = member.groups()
                type_ = " ".join(type_.rstrip(",").split())
                members.append(Member(int(key), bool(optional), type_, name))
        rules[match.group(1)] = MapRule(match.group(1), code, label, tuple(members))
    return rules


def versions_in(spec_dir: Path) -> list[int]:
    """Versions that have a folder of CDDL, ascending."""
    found = [
        int(path.name[1:])
        for path in spec_dir.glob("v*")
        if path.is_dir() and path.name[1:].isdigit() and any(path.glob("*.cddl"))
    ]
    return sorted(found)


def schema(spec_dir: Path, version: int) -> dict[str, MapRule]:
    """Rule name → rule, for version ``version``: its files over every older version's."""
    rules: dict[str, MapRule] = {}
    for each in range(1, version + 1):
        folder = spec_dir / f"v{each}"
        for path in sorted(folder.glob("*.cddl")):
            rules.update(parse_cddl(path, f"v{each}/{path.name}"))
    return rules


def _codes(spec_dir: Path, version: int) -> dict[str, str | None] | None:
    path = spec_dir / "vectors" / f"v{version}" / "codes.json"
    if not path.exists():
        return None
    codes: dict[str, str | None] = json.loads(path.read_text(encoding="utf-8"))["codes"]
    return codes


def _vector_digests(spec_dir: Path, version: int) -> dict[str, str]:
    """"file:id" → SHA-256 of the vector's canonical JSON, for every vector of ``version``."""
    out: dict[str, str] = {}
    folder = spec_dir / "vectors" / f"v{version}"
    for path in sorted(folder.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for key in ("vectors", "valid", "invalid"):
            for vector in document.get(key, []):
                canonical = json.dumps(vector, sort_keys=True, ensure_ascii=False).encode()
                out[f"{path.name}:{vector['id']}"] = hashlib.sha256(canonical).hexdigest()
    return out


# --- comparing --------------------------------------------------------------------------------


def compare_schemas(
    old: dict[str, MapRule], new: dict[str, MapRule], released: bool = False
) -> Iterator[Break]:
    """Breaks between an older schema and a newer one (or a released one and its present)."""
    old_codes: dict[int, set[str]] = {}
    for rule in old.values():
        if rule.code is not None:
            old_codes.setdefault(rule.code, set()).add(rule.name)
    for rule in new.values():
        if rule.code is not None and rule.code in old_codes and rule.name not in old_codes[rule.code]:
            yield Break(
                "type-code-reused", rule.file, rule.name,
                f"type code {rule.code} named {', '.join(sorted(old_codes[rule.code]))} before",
            )  # fmt: skip
    for name, before in old.items():
        after = new.get(name)
        if after is None:
            yield Break("type-removed", before.file, name, "the rule is gone")
            continue
        if before.code != after.code:
            yield Break(
                "type-renumbered", after.file, name, f"type code {before.code} is now {after.code}"
            )
        yield from _compare_members(before, after, released)


def _compare_members(before: MapRule, after: MapRule, released: bool) -> Iterator[Break]:
    now = after.by_key()
    keys_of = {member.name: member.key for member in after.members}
    for member in before.members:
        where = f"{before.name} key {member.key} ({member.name})"
        current = now.get(member.key)
        if current is None:
            moved = keys_of.get(member.name)
            if moved is not None:
                yield Break("key-renumbered", after.file, where, f"{member.name} is now key {moved}")
            else:
                yield Break("key-removed", after.file, where, "the key is gone")
            continue
        if current.name != member.name:
            yield Break("key-reused", after.file, where, f"the key now holds {current.name}")
            continue
        if current.type != member.type:
            yield Break("type-changed", after.file, where, f"{member.type} is now {current.type}")
        if member.optional and not current.optional:
            yield Break("field-now-mandatory", after.file, where, "optional before, mandatory now")
    known = {member.key for member in before.members}
    names = {member.name for member in before.members}
    for member in after.members:
        if member.key in known or member.name in names:
            continue  # an old key, or an old field moved (key-renumbered above)
        where = f"{after.name} key {member.key} ({member.name})"
        if released:
            yield Break("key-added-to-released", after.file, where, "a released rule gained a key")
        elif not member.optional:
            yield Break("field-now-mandatory", after.file, where, "a new key that is mandatory")


def compare_codes(
    old: dict[str, str | None], new: dict[str, str | None], file: str
) -> Iterator[Break]:
    for code, parent in old.items():
        if code not in new:
            yield Break("error-code-reused", file, code, "the code is gone")
        elif new[code] != parent:
            yield Break("error-code-reused", file, code, f"parent {parent} is now {new[code]}")


def _unmet_vectors(spec_dir: Path, old: int, reader: int) -> Iterator[Break]:
    """Valid and extension vectors of ``old`` that the reference reader of ``reader`` no longer
    reads to the same bytes (a spec change the reference implementation follows)."""
    if reader > PROTOCOL_VERSION:
        return  # a version this implementation does not read yet: nothing to run
    folder = spec_dir / "vectors" / f"v{old}"
    for name in ("valid.json", "extensions.json"):
        path = folder / name
        if not path.exists():
            continue
        for vector in json.loads(path.read_text(encoding="utf-8"))["vectors"]:
            data = bytes.fromhex(vector["hex"])
            where = f"v{old} {vector['id']} read as v{reader}"
            try:
                again = encode_message(decode_message(data, version=reader))
            except FleetwireError as exc:
                yield Break("vector-no-longer-met", f"vectors/v{old}/{name}", where, exc.code)
                continue
            if again != data:
                yield Break(
                    "vector-no-longer-met", f"vectors/v{old}/{name}", where, "re-encodes otherwise"
                )


def window(version: int) -> range:
    return range(max(1, version - 2), version + 1)


def frozen_record(spec_dir: Path, version: int) -> dict[str, Any]:
    """What :func:`freeze` writes for ``version``: its schema, code tree and vector digests."""
    return {
        "format": FROZEN_FORMAT,
        "version": version,
        "schema": {
            name: {"code": rule.code, "file": rule.file, "members": [attrs.asdict(m) for m in rule.members]}
            for name, rule in sorted(schema(spec_dir, version).items())
        },
        "codes": _codes(spec_dir, version),
        "vectors": _vector_digests(spec_dir, version),
    }


def freeze(spec_dir: Path, version: int) -> Path:
    """Record ``version`` as released: ``spec/v<version>/frozen.json``."""
    path = spec_dir / f"v{version}" / FROZEN_NAME
    record = frozen_record(spec_dir, version)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _read_frozen(path: Path) -> tuple[dict[str, MapRule], dict[str, str | None] | None, dict[str, str]]:
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") != FROZEN_FORMAT:
        raise ValueError(f"{path.name}: format is not {FROZEN_FORMAT}")
    rules = {
        name: MapRule(name, value["code"], value["file"], tuple(Member(**m) for m in value["members"]))
        for name, value in record["schema"].items()
    }
    return rules, record["codes"], record["vectors"]


def released_versions(spec_dir: Path) -> list[int]:
    return [v for v in versions_in(spec_dir) if (spec_dir / f"v{v}" / FROZEN_NAME).exists()]


def check(spec_dir: Path) -> Report:
    """Every break in ``spec_dir`` (see the module docstring)."""
    versions = versions_in(spec_dir)
    released = released_versions(spec_dir)
    breaks: list[Break] = []
    schemas = {version: schema(spec_dir, version) for version in versions}
    for version in versions:
        for older in window(version):
            if older == version or older not in schemas:
                continue
            breaks.extend(compare_schemas(schemas[older], schemas[version]))
            old_codes, new_codes = _codes(spec_dir, older), _codes(spec_dir, version)
            if old_codes is not None and new_codes is not None:
                breaks.extend(compare_codes(old_codes, new_codes, f"vectors/v{version}/codes.json"))
            breaks.extend(_unmet_vectors(spec_dir, older, version))
    for version in released:
        rules, codes, vectors = _read_frozen(spec_dir / f"v{version}" / FROZEN_NAME)
        breaks.extend(compare_schemas(rules, schemas[version], released=True))
        now_codes = _codes(spec_dir, version)
        if codes is not None and now_codes is not None:
            breaks.extend(compare_codes(codes, now_codes, f"vectors/v{version}/codes.json"))
        now = _vector_digests(spec_dir, version)
        for key, digest in vectors.items():
            file, _, vector_id = key.partition(":")
            where = f"vectors/v{version}/{file}"
            if key not in now:
                breaks.append(Break("vector-changed", where, vector_id, "removed from a released version"))
            elif now[key] != digest:
                breaks.append(Break("vector-changed", where, vector_id, "changed in a released version"))
    unique = list(dict.fromkeys(breaks))  # one break seen from two versions is reported once
    return Report(tuple(versions), tuple(released), tuple(unique))


__all__ = [
    "FROZEN_NAME",
    "RULES",
    "Break",
    "MapRule",
    "Member",
    "Report",
    "check",
    "compare_schemas",
    "freeze",
    "parse_cddl",
    "schema",
    "versions_in",
]
