"""The reference adapter: fleetwire behind every op of the adapter protocol.

Theory of operation
-------------------
The suite talks to an implementation only through the adapter protocol (spec/README.md,
"Adapter protocol"): one JSON request per line in, one JSON answer per line out. This module
is that program for fleetwire — ``python -m fleetwire.conformance.reference`` — built on the
library alone, as another team's adapter is built on theirs:

``hello``
    what it is: its name, the versions it reads and writes, the ops it answers;
``decode`` / ``open``
    the reader (:mod:`fleetwire.conformance.vectors` holds those two);
``encode``
    a message given as named fields (the ``message`` object of the vectors) written at a
    version;
``convert``
    a message's bytes rewritten at another version, or refused when that version cannot say it;
``content_id``
    the content id of bytes (protocol.md §3.3);
``sign``
    a message sealed in a COSE_Sign1 under a test key given by its seed (protocol.md §7);
``scenario``
    a scripted run of a coordination state machine (:mod:`.machines`).

:class:`Reference` answers each op in its own method, so a deliberately broken adapter
(:mod:`.broken`) is the reference with one method changed.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import cbor2
from fleetwire.protocol.cose import sign1
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    MESSAGE_CLASSES,
    OLDEST_READ_VERSION,
    PROTOCOL_VERSION,
    decode_message,
    encode_message,
)
from fleetwire.protocol.messages.header import HEADER_FIELDS
from fleetwire.protocol.messages.schema import BYTES, CID, Field, Kind, ListOf, MapOf, Struct
from fleetwire.protocol.messages.versions import convert, decode_any

from .machines import MACHINES, ScenarioError, run_scenario
from .vectors import Fleetwire, TrustInput, outcome_to_json

__all__ = ["OPS", "Reference", "fields_to_bytes", "serve"]

#: Every op of the adapter protocol, in the order spec/README.md lists them.
OPS = ("hello", "decode", "open", "encode", "convert", "content_id", "sign", "scenario")


def refusal(code: str, detail: str = "", field: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "code": code}
    if field:
        answer["field"] = field
    if detail:
        answer["detail"] = detail
    return answer


def _item(kind: Kind[Any], value: Any, path: str) -> Any:
    if isinstance(kind, Struct):
        return _map(kind.fields, value, path)
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list")
        return [_item(kind.item, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(kind, MapOf):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object")
        return {name: _item(kind.value, item, f"{path}[{name}]") for name, item in value.items()}
    if kind is CID or kind is BYTES:
        return bytes.fromhex(value)
    return value


def _map(fields: tuple[Field, ...], value: Any, path: str) -> dict[int, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path or 'message'}: expected an object")
    by_name = {field.name: field for field in fields}
    unknown = set(value) - set(by_name)
    if unknown:
        raise ValueError(f"{path or 'message'}: unknown fields {sorted(unknown)}")
    out = {
        by_name[name].key: _item(by_name[name].kind, item, f"{path}.{name}".lstrip("."))
        for name, item in value.items()
    }
    return dict(sorted(out.items()))


def fields_to_bytes(message: dict[str, Any]) -> bytes:
    """The CBOR of a message given as named fields (spec/README.md, vector ``message``).

    Only maps the names to keys; the library's writer then decides the encoding.
    """
    fields = dict(message)
    type_code = fields.pop("type")
    cls = next((c for c in MESSAGE_CLASSES.values() if int(c.TYPE) == type_code), None)
    if cls is None:
        raise ValueError(f"no message type {type_code}")
    header = {k: fields.pop(k) for k in [f.name for f in HEADER_FIELDS] if k in fields}
    raw = {0: type_code, **_map(HEADER_FIELDS, header, ""), **_map(cls.FIELDS, fields, "")}
    # cbor2's canonical order (RFC 7049 §3.9, length first) is RFC 8949 §4.2.1's bytewise
    # order for every key a message has: small unsigned integers and short names.
    return cbor2.dumps(raw, canonical=True)


class Reference:
    """fleetwire's answers to every op (module docstring)."""

    name = "fleetwire reference adapter"
    versions = (OLDEST_READ_VERSION, PROTOCOL_VERSION)

    def __init__(self) -> None:
        self.reader = Fleetwire()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op not in OPS:
            return refusal("adapter-protocol", f"unknown op {op!r}")
        try:
            handler = getattr(self, f"op_{op}")
            result: dict[str, Any] = handler(request)
            return result
        except FleetwireError as exc:
            return refusal(exc.code, exc.message, getattr(exc, "field", None) or None)
        except ScenarioError as exc:
            return refusal("adapter-protocol", str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return refusal("adapter-protocol", f"bad request: {exc!r:.200}")

    def _spoken(self, version: Any) -> bool:
        return type(version) is int and self.versions[0] <= version <= self.versions[1]

    def accepted(self, data: bytes) -> dict[str, Any]:
        """The answer for message bytes this implementation wrote or read."""
        return {"ok": True, "hex": data.hex(), "content_id": self.content_id(data)}

    def content_id(self, data: bytes) -> str:
        return ContentId.of(data).raw.hex()

    def write(self, message: Any) -> bytes:
        """The writer: the message's deterministic bytes (protocol.md §3.1)."""
        return encode_message(message)

    # --- ops ---------------------------------------------------------------------------

    def op_hello(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "name": self.name,
            "versions": list(self.versions),
            "ops": list(OPS),
            "machines": list(MACHINES),
        }

    def _reader(self, request: dict[str, Any]) -> Fleetwire | None:
        """fleetwire reading as the version the request names (its newest by default)."""
        version = request.get("version", self.versions[1])
        return self.reader.at_version(version) if self._spoken(version) else None

    def op_decode(self, request: dict[str, Any]) -> dict[str, Any]:
        reader = self._reader(request)
        if reader is None:
            return refusal("version-unsupported", f"this implementation reads no v{request['version']}")
        return outcome_to_json(reader.decode(bytes.fromhex(request["hex"])))

    def op_open(self, request: dict[str, Any]) -> dict[str, Any]:
        reader = self._reader(request)
        if reader is None:
            return refusal("version-unsupported", f"this implementation reads no v{request['version']}")
        data = bytes.fromhex(request["hex"])
        if "roots" in request:
            return outcome_to_json(reader.open_trusted(data, TrustInput.from_json(request)))
        key = bytes.fromhex(request["public_key"])
        return outcome_to_json(reader.open_envelope(data, key))

    def op_encode(self, request: dict[str, Any]) -> dict[str, Any]:
        """The message given by its fields, written at ``version`` (protocol.md §5.1)."""
        version = request.get("version", self.versions[1])
        if not self._spoken(version):
            return refusal("version-unsupported", f"this implementation writes no v{version}")
        message = decode_message(fields_to_bytes(request["message"]), version=self.versions[1])
        return self.accepted(self.write_at(message, version))

    def op_convert(self, request: dict[str, Any]) -> dict[str, Any]:
        """A message's bytes rewritten at ``version`` (up or down), or not-expressible."""
        version = request["version"]
        if not self._spoken(version):
            return refusal("version-unsupported", f"this implementation writes no v{version}")
        message = decode_any(bytes.fromhex(request["hex"]), self.versions[1])
        return self.accepted(self.write_at(message, version))

    def write_at(self, message: Any, version: int) -> bytes:
        """The writer at ``version``: :func:`~fleetwire.protocol.messages.versions.convert`,
        then the deterministic encoding (NotExpressible, code version-not-expressible, where
        that version cannot say it)."""
        return self.write(convert(message, version))

    def op_content_id(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "content_id": self.content_id(bytes.fromhex(request["hex"]))}

    def op_sign(self, request: dict[str, Any]) -> dict[str, Any]:
        key = SigningKey(bytes.fromhex(request["seed"]))
        payload = bytes.fromhex(request["hex"])
        decode_message(payload)  # a writer signs only messages it can stand behind
        return {"ok": True, "hex": sign1(payload, key).hex()}

    def op_scenario(self, request: dict[str, Any]) -> dict[str, Any]:
        outputs = run_scenario(request["machine"], request.get("config", {}), request["steps"])
        return {"ok": True, "outputs": outputs}


def serve(adapter: Reference, stdin: IO[str], stdout: IO[str]) -> None:
    """Answer adapter-protocol requests from ``stdin`` until it closes."""
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError:
            answer = refusal("adapter-protocol", "a request that is not JSON")
        else:
            if isinstance(request, dict):
                answer = adapter.answer(request)
            else:
                answer = refusal("adapter-protocol", "a request that is not an object")
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


if __name__ == "__main__":
    serve(Reference(), sys.stdin, sys.stdout)
