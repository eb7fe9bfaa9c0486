"""Endpoint IDs (RFC 9171 §4.2.5.1): ``dtn:none``, ``dtn://node/demux`` and ``ipn`` numbers.

Each EID is a small frozen value with its text form (``str(eid)``) and its CBOR form
(``eid.wire``, computed once): ``[scheme code, SSP]``, scheme 1 = dtn, 2 = ipn (§4.2.5.1).

dtn (§4.2.5.1.1): ``dtn:none`` is the null endpoint and its SSP is the unsigned integer 0 on the
wire; every other dtn EID is ``"dtn:" "//" node-name "/" demux`` and its SSP travels as the text
after ``dtn:``. We require node-name to be a non-empty RFC 3986 reg-name and demux to be VCHARs.

ipn (§4.2.5.1.2 as updated by RFC 9758): a fully-qualified node number (FQNN) made of a 32-bit
allocator identifier and a 32-bit node number, and a service number. Two CBOR forms exist:
the 2-element ``[FQNN, service]`` of RFC 9171 (FQNN = allocator << 32 | node) and the
3-element ``[allocator, node, service]`` of RFC 9758. We write the 2-element form when the
allocator is 0 and the 3-element form otherwise; a decoded EID remembers which form it came in
(``elements``, not part of equality) so that a received block re-encodes to its exact bytes. Text:
``ipn:node.service`` (node may be a whole 64-bit FQNN) or ``ipn:allocator.node.service``.
"""

from __future__ import annotations

import re
from typing import Any, Final

import attrs

from .errors import EidError, InvalidEid
from .wire import UINT64_MAX, head, read_head, read_text, read_uint, uint

__all__ = [
    "Eid",
    "NullEid",
    "DtnEid",
    "IpnEid",
    "DTN_NONE",
    "parse_eid",
    "eid_from_cbor",
    "read_eid",
    "SCHEME_DTN",
    "SCHEME_IPN",
]

SCHEME_DTN: Final = 1
SCHEME_IPN: Final = 2
_U32_MAX: Final = 0xFFFFFFFF
_RULE: Final = "RFC 9171 §4.2.5.1"
_RULE_DTN: Final = "RFC 9171 §4.2.5.1.1"
_RULE_IPN: Final = "RFC 9171 §4.2.5.1.2, RFC 9758"

# RFC 3986 reg-name = *( unreserved / pct-encoded / sub-delims ), here at least one character.
_NODE_NAME: Final = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+\Z")
_DEMUX: Final = re.compile(r"[\x21-\x7e]*\Z")  # *VCHAR
_DIGITS: Final = re.compile(r"[0-9]+\Z")


@attrs.frozen(slots=True)
class NullEid:
    """``dtn:none``, the null endpoint: no members; an anonymous source (§4.2.5.1.1)."""

    @property
    def wire(self) -> bytes:
        return b"\x82\x01\x00"

    @property
    def is_null(self) -> bool:
        return True

    def __str__(self) -> str:
        return "dtn:none"


DTN_NONE: Final = NullEid()


@attrs.frozen(slots=True)
class DtnEid:
    """``dtn://<node>/<demux>``; an empty demux names the node's administrative endpoint."""

    node: str
    demux: str = ""
    #: The EID as it is written (CBOR, RFC 9171 §4.2.5.1): a slot, not a property, since every
    #: bundle on every hop reads it several times.
    wire: bytes = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.node, str) or not _NODE_NAME.match(self.node):
            raise InvalidEid("dtn-node-name", f"bad node name {self.node!r}", rule=_RULE_DTN)
        if not isinstance(self.demux, str) or not _DEMUX.match(self.demux):
            raise InvalidEid("dtn-demux", f"bad demux {self.demux!r}", rule=_RULE_DTN)
        ssp = f"//{self.node}/{self.demux}".encode("ascii")
        object.__setattr__(self, "wire", b"\x82\x01" + head(3, len(ssp)) + ssp)

    @property
    def is_null(self) -> bool:
        return False

    @property
    def is_singleton(self) -> bool:
        """Demuxes starting with ``~`` name non-singleton endpoints (§4.2.5.1.1)."""
        return not self.demux.startswith("~")

    def __str__(self) -> str:
        return f"dtn://{self.node}/{self.demux}"


@attrs.frozen(slots=True)
class IpnEid:
    """``ipn:[allocator.]node.service`` (RFC 9171 §4.2.5.1.2, RFC 9758)."""

    node: int
    service: int
    allocator: int = 0
    #: CBOR form: 2 (``[FQNN, service]``) or 3 (``[allocator, node, service]``); 0 = choose.
    elements: int = attrs.field(default=0, eq=False, repr=False)
    #: The EID as it is written (CBOR, RFC 9171 §4.2.5.1): a slot, not a property, since every
    #: bundle on every hop reads it several times.
    wire: bytes = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        for name, value, top in (
            ("allocator", self.allocator, _U32_MAX),
            ("node", self.node, _U32_MAX),
            ("service", self.service, UINT64_MAX),
        ):
            if type(value) is not int or not 0 <= value <= top:
                raise InvalidEid(f"ipn-{name}", f"{name} number {value!r} out of range", rule=_RULE_IPN)
        elements = self.elements or (3 if self.allocator else 2)
        if elements == 2:
            wire = b"\x82\x02\x82" + uint(self.fqnn) + uint(self.service)
        elif elements == 3:
            wire = b"\x82\x02\x83" + uint(self.allocator) + uint(self.node) + uint(self.service)
        else:
            raise InvalidEid("ipn-elements", f"{elements}-element ipn form", rule=_RULE_IPN)
        object.__setattr__(self, "elements", elements)
        object.__setattr__(self, "wire", wire)

    @classmethod
    def _trusted(cls, node: int, service: int, allocator: int, elements: int, wire: bytes) -> IpnEid:
        """Build from values a wire reader already checked, with their exact CBOR."""
        eid = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(eid, "node", node)
        setattr_(eid, "service", service)
        setattr_(eid, "allocator", allocator)
        setattr_(eid, "elements", elements)
        setattr_(eid, "wire", wire)
        return eid

    @classmethod
    def from_fqnn(cls, fqnn: int, service: int, elements: int = 0) -> IpnEid:
        """Split a 64-bit fully-qualified node number into allocator and node."""
        if type(fqnn) is not int or not 0 <= fqnn <= UINT64_MAX:
            raise InvalidEid("ipn-node", f"node number {fqnn!r} out of range", rule=_RULE_IPN)
        return cls(fqnn & _U32_MAX, service, fqnn >> 32, elements)

    @property
    def fqnn(self) -> int:
        return self.allocator << 32 | self.node

    @property
    def is_null(self) -> bool:
        """``ipn:0.0`` is the ipn form of the null endpoint (RFC 9758)."""
        return self.fqnn == 0 and self.service == 0

    def __str__(self) -> str:
        if self.allocator:
            return f"ipn:{self.allocator}.{self.node}.{self.service}"
        return f"ipn:{self.node}.{self.service}"


Eid = NullEid | DtnEid | IpnEid


def parse_eid(text: str) -> Eid:
    """Parse the text form of an EID; raise :class:`InvalidEid` if it is not one."""
    if not isinstance(text, str):
        raise InvalidEid("eid-type", f"EID text must be str, not {type(text).__name__}", rule=_RULE)
    if text == "dtn:none":
        return DTN_NONE
    if text.startswith("dtn://"):
        node, slash, demux = text[6:].partition("/")
        if not slash:
            raise InvalidEid("dtn-syntax", f"{text!r} has no '/' after the node name", rule=_RULE_DTN)
        return DtnEid(node, demux)
    if text.startswith("ipn:"):
        parts = text[4:].split(".")
        if len(parts) not in (2, 3) or not all(_DIGITS.match(part) for part in parts):
            raise InvalidEid("ipn-syntax", f"{text!r} is not ipn:[a.]n.s", rule=_RULE_IPN)
        numbers = [int(part) for part in parts]
        if len(numbers) == 2:
            return IpnEid.from_fqnn(numbers[0], numbers[1])
        return IpnEid(numbers[1], numbers[2], numbers[0])
    raise InvalidEid("eid-scheme", f"{text!r}: scheme is not dtn or ipn", rule=_RULE)


def _from_parts(scheme: int, ssp: Any) -> Eid:
    """Build an EID from a decoded scheme code and SSP value; InvalidEid if not valid."""
    if scheme == SCHEME_DTN:
        if type(ssp) is int and ssp == 0:
            return DTN_NONE
        if isinstance(ssp, str):
            if ssp == "none":
                raise InvalidEid("dtn-ssp", "dtn:none travels as the integer 0", rule=_RULE_DTN)
            if not ssp.startswith("//"):
                raise InvalidEid("dtn-syntax", f"dtn SSP {ssp!r} does not start with //", rule=_RULE_DTN)
            node, slash, demux = ssp[2:].partition("/")
            if not slash:
                raise InvalidEid("dtn-syntax", f"dtn SSP {ssp!r} has no '/'", rule=_RULE_DTN)
            return DtnEid(node, demux)
        raise InvalidEid("dtn-ssp", "dtn SSP must be text or the integer 0", rule=_RULE_DTN)
    if scheme == SCHEME_IPN:
        if isinstance(ssp, list) and all(type(n) is int for n in ssp):
            if len(ssp) == 2:
                return IpnEid.from_fqnn(ssp[0], ssp[1], elements=2)
            if len(ssp) == 3:
                return IpnEid(ssp[1], ssp[2], ssp[0], elements=3)
        raise InvalidEid("ipn-ssp", "ipn SSP must be an array of 2 or 3 unsigned integers", rule=_RULE_IPN)
    raise InvalidEid("eid-scheme", f"unknown URI scheme code {scheme!r}", rule=_RULE)


def eid_from_cbor(value: Any) -> Eid:
    """An EID from its decoded CBOR value (``[scheme, SSP]``); raise :class:`EidError`."""
    if not isinstance(value, list) or len(value) != 2 or type(value[0]) is not int:
        raise EidError("eid-structure", "EID must be [scheme code, SSP]", rule=_RULE)
    try:
        return _from_parts(value[0], value[1])
    except InvalidEid as exc:
        raise EidError(exc.code, exc.detail, rule=exc.rule) from None


def read_eid(data: bytes, pos: int, end: int, limit: int) -> tuple[Eid, int]:
    """Read an EID's CBOR at ``pos`` (at most ``limit`` bytes of SSP text); return (EID, next).

    Raises :class:`~.wire.WireError` for CBOR-level faults and :class:`InvalidEid` for EID rules;
    the block decoder names the block. The common ipn and null forms take a short road: their
    numbers are read with the same checked readers and the EID keeps the exact bytes it came in.
    """
    start = pos
    if pos + 3 <= end and data[pos] == 0x82:
        scheme = data[pos + 1]
        form = data[pos + 2]
        if scheme == SCHEME_IPN and form == 0x82:
            fqnn, pos = read_uint(data, pos + 3, end)
            service, pos = read_uint(data, pos, end)
            return IpnEid._trusted(fqnn & _U32_MAX, service, fqnn >> 32, 2, data[start:pos]), pos
        if scheme == SCHEME_IPN and form == 0x83:
            allocator, pos = read_uint(data, pos + 3, end)
            node, pos = read_uint(data, pos, end)
            service, pos = read_uint(data, pos, end)
            if allocator <= _U32_MAX and node <= _U32_MAX:
                return IpnEid._trusted(node, service, allocator, 3, data[start:pos]), pos
            return IpnEid(node, service, allocator, 3), pos  # raises the range error
        if scheme == SCHEME_DTN and form == 0x00:
            return DTN_NONE, pos + 3
    count, pos = read_head(data, pos, end, 4)
    if count != 2:
        raise InvalidEid("eid-structure", f"EID array of {count} items, not 2", rule=_RULE)
    scheme, pos = read_uint(data, pos, end)
    if scheme == SCHEME_DTN:
        if pos < end and data[pos] >> 5 == 0:
            raise InvalidEid("dtn-ssp", "dtn SSP integer other than 0", rule=_RULE_DTN)
        ssp, pos = read_text(data, pos, end, limit)
        return _from_parts(SCHEME_DTN, ssp), pos
    if scheme == SCHEME_IPN:
        n, pos = read_head(data, pos, end, 4)
        raise InvalidEid("ipn-ssp", f"ipn SSP of {n} items, not 2 or 3", rule=_RULE_IPN)
    raise InvalidEid("eid-scheme", f"unknown URI scheme code {scheme}", rule=_RULE)
