"""Administrative records (RFC 9171 §6.1) and bundle status reports (§6.1.1).

An administrative record is the payload of a bundle whose ADMIN_RECORD flag is set: the CBOR
array ``[record type code, record content]``. Type 1, the bundle status report, is
``[status information, reason code, source node ID, creation timestamp, ?fragment offset,
?payload length]`` where the status information holds four items — received, forwarded,
delivered, deleted — each ``[asserted]`` or ``[asserted, DTN time]``; the time appears only for an
asserted status when the subject bundle asked for status times (§6.1.1). The subject fields are
exactly a :class:`~.bundle.BundleId`.

We write the record directly as CBOR heads (deterministic by construction) and read it with the
codec's bounded decoder (:func:`fleetwire.protocol.cbor.decode`, which scans before it decodes)
under :data:`ADMIN_LIMITS`, then check its shape; other record types come back as
:class:`UnknownAdminRecord` with their bytes.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from ..cbor import Limits, decode
from ..errors import DecodeError
from .blocks import BundleFlags, CreationTimestamp, PrimaryBlock
from .bundle import Bundle, BundleId
from .crc import CrcType
from .eid import Eid, eid_from_cbor
from .errors import BundleError, EidError, InvalidBundle
from .extensions import payload_block
from .wire import UINT64_MAX, uint

__all__ = [
    "AdminRecordType",
    "StatusReason",
    "StatusAssertion",
    "StatusReport",
    "UnknownAdminRecord",
    "ADMIN_LIMITS",
    "decode_admin_record",
    "admin_record_of",
    "status_report_bundle",
]

_RULE_ADMIN: Final = "RFC 9171 §6.1"
_RULE_REPORT: Final = "RFC 9171 §6.1.1"

#: Bounds for administrative records: small, no tags; non-deterministic CBOR is tolerated.
ADMIN_LIMITS: Final = Limits(
    max_size=1 << 16,
    max_depth=8,
    max_container_items=64,
    max_total_items=512,
    max_string_length=4096,
    deterministic=False,
    allowed_tags=frozenset(),
)


class AdminRecordType(enum.IntEnum):
    """Administrative record type codes (§6.1; IANA "Bundle Administrative Record Types")."""

    STATUS_REPORT = 1


class StatusReason(enum.IntEnum):
    """Bundle status report reason codes (§6.1.1 Table 1)."""

    NO_INFO = 0
    LIFETIME_EXPIRED = 1
    FORWARDED_UNIDIRECTIONAL = 2
    TRANSMISSION_CANCELED = 3
    DEPLETED_STORAGE = 4
    DESTINATION_UNAVAILABLE = 5
    NO_KNOWN_ROUTE = 6
    NO_TIMELY_CONTACT = 7
    BLOCK_UNINTELLIGIBLE = 8
    HOP_LIMIT_EXCEEDED = 9
    TRAFFIC_PARED = 10
    BLOCK_UNSUPPORTED = 11


@attrs.frozen(slots=True)
class StatusAssertion:
    """One status item: whether it is asserted and, if requested, when (DTN time, §6.1.1)."""

    asserted: bool = False
    time: int | None = None


NOT_ASSERTED: Final = StatusAssertion()


@attrs.frozen(slots=True)
class StatusReport:
    """A bundle status report (§6.1.1) about the bundle ``subject``."""

    subject: BundleId
    reason: int = StatusReason.NO_INFO
    received: StatusAssertion = NOT_ASSERTED
    forwarded: StatusAssertion = NOT_ASSERTED
    delivered: StatusAssertion = NOT_ASSERTED
    deleted: StatusAssertion = NOT_ASSERTED

    def to_payload(self) -> bytes:
        """The administrative record ``[1, report]`` as bytes, ready to be a payload."""
        subject = self.subject
        fragment = subject.fragment_offset is not None
        parts = [b"\x82\x01", b"\x86" if fragment else b"\x84", b"\x84"]
        for item, what in ((self.received, "received"), (self.forwarded, "forwarded"),
                           (self.delivered, "delivered"), (self.deleted, "deleted")):
            if item.time is None:
                parts.append(b"\x81\xf5" if item.asserted else b"\x81\xf4")
            elif not item.asserted:
                raise InvalidBundle("status-item", f"{what}: a time for a status not asserted",
                                    rule=_RULE_REPORT)
            else:
                parts += (b"\x82\xf5", _uint(item.time, f"{what} time"))
        parts += (_uint(self.reason, "reason code"), subject.source.wire, b"\x82",
                  _uint(subject.creation.time, "creation time"),
                  _uint(subject.creation.sequence, "sequence number"))
        if fragment:
            parts += (_uint(subject.fragment_offset, "fragment offset"),
                      _uint(subject.payload_length, "payload length"))
        return b"".join(parts)


@attrs.frozen(slots=True)
class UnknownAdminRecord:
    """An administrative record of a type we do not interpret, kept as its payload bytes."""

    record_type: int
    payload: bytes


def _uint(value: object, what: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT64_MAX:
        raise InvalidBundle("field-range", f"{what} {value!r} is not an unsigned integer",
                            rule=_RULE_REPORT)
    return uint(value)


def _is_uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= UINT64_MAX


def _bad(message: str, rule: str = _RULE_REPORT) -> BundleError:
    return BundleError("admin-record", message, block=1, rule=rule)


def _assertion(item: Any, what: str) -> StatusAssertion:
    if not isinstance(item, list) or not 1 <= len(item) <= 2 or type(item[0]) is not bool:
        raise _bad(f"{what}: a status item is [bool] or [bool, DTN time]")
    if len(item) == 1:
        return StatusAssertion(item[0]) if item[0] else NOT_ASSERTED
    if not item[0] or not _is_uint(item[1]):
        raise _bad(f"{what}: a time only with an asserted status, as a DTN time")
    return StatusAssertion(True, item[1])


def _status_report(content: Any) -> StatusReport:
    if not isinstance(content, list) or len(content) not in (4, 6):
        raise _bad("a status report is an array of 4 or 6 items")
    info, reason, source, creation = content[:4]
    if not isinstance(info, list) or len(info) < 4:
        raise _bad("status information needs at least four items")
    if not _is_uint(reason):
        raise _bad("reason code must be an unsigned integer")
    try:
        source_eid: Eid = eid_from_cbor(source)
    except EidError as exc:
        raise BundleError(exc.code, f"report source: {exc.detail}", block=1, rule=exc.rule) from None
    if not isinstance(creation, list) or len(creation) != 2 or not all(map(_is_uint, creation)):
        raise _bad("creation timestamp must be [DTN time, sequence]", "RFC 9171 §4.2.7")
    offset = length = None
    if len(content) == 6:
        offset, length = content[4], content[5]
        if not _is_uint(offset) or not _is_uint(length):
            raise _bad("fragment offset and payload length must be unsigned integers")
    subject = BundleId(source_eid, CreationTimestamp(creation[0], creation[1]), offset, length)
    names = ("received", "forwarded", "delivered", "deleted")
    received, forwarded, delivered, deleted = (
        _assertion(item, name) for item, name in zip(info[:4], names, strict=True)
    )
    return StatusReport(subject, reason, received, forwarded, delivered, deleted)


def decode_admin_record(payload: bytes) -> StatusReport | UnknownAdminRecord:
    """Read an administrative record from a payload; raise :class:`BundleError` if malformed."""
    try:
        record = decode(bytes(payload), ADMIN_LIMITS)
    except DecodeError as exc:
        raise BundleError("admin-record", f"undecodable: {exc.message}", block=1,
                          rule=_RULE_ADMIN) from None
    if not isinstance(record, list) or len(record) != 2 or not _is_uint(record[0]):
        raise _bad("an administrative record is [record type code, content]", _RULE_ADMIN)
    if record[0] == AdminRecordType.STATUS_REPORT:
        return _status_report(record[1])
    return UnknownAdminRecord(record[0], bytes(payload))


def admin_record_of(bundle: Bundle) -> StatusReport | UnknownAdminRecord:
    """The administrative record a bundle carries; refuses bundles without the flag (§4.2.3)."""
    if not int(bundle.primary.flags) & BundleFlags.ADMIN_RECORD:
        raise BundleError("admin-record", "the bundle's ADU is not an administrative record",
                          block=0, rule="RFC 9171 §4.2.3")
    return decode_admin_record(bundle.payload)


def status_report_bundle(report: StatusReport, *, source: Eid, destination: Eid,
                         creation: CreationTimestamp, lifetime: int,
                         crc_type: CrcType = CrcType.CRC32C) -> Bundle:
    """A bundle carrying ``report`` to ``destination`` (the subject's report-to, §6.2).

    The admin-record flag is set and no status reports are requested of it (§4.2.3).
    """
    primary = PrimaryBlock(destination, source, source, creation, lifetime,
                           BundleFlags.ADMIN_RECORD, crc_type)
    return Bundle(primary, (payload_block(report.to_payload(), crc_type),))


__all__ += ["NOT_ASSERTED"]
