"""COSE_Sign1 envelopes with EdDSA: RFC 9052 §4.2 (structure), §4.4 (Sig_structure), RFC 9053 §2.2.

Format
------
Every signed fleet message is a tagged COSE_Sign1 (CBOR tag 18, RFC 9052 §2 Table 1)::

    18([ protected:   bstr .cbor {1: -8, ...},   ; alg EdDSA, always protected (§3.1)
         unprotected: {? 4: kid},                ; kid = content id of the public key
         payload:     bstr,                      ; attached; detached (nil) is refused
         signature:   bstr .size 64 ])           ; Ed25519 (114 for Ed448, verify only)

The signature covers the Sig_structure of RFC 9052 §4.4,
``["Signature1", protected, external_aad, payload]`` in deterministic CBOR; ``external_aad``
lets a caller bind context that is not carried (the trust store uses it to keep credentials,
revocation lists and messages from being taken for one another).

What we write and what we read (spec/v1/protocol.md §7)
-------------------------------------------------------
We write the core deterministic encoding of RFC 8949 §4.2.1, with protected header
``a1 01 27`` (``{1: -8}``) and unprotected ``{4: kid}`` unless the caller asks otherwise. We
read only what a deterministic writer could have produced for the envelope: shortest heads,
definite lengths, deterministic header maps. On top, the COSE rules: tag 18 and a 4-element
array; the protected bucket a bstr holding a non-empty map with ``alg`` = -8 (RFC 9053 §2.2);
``crit`` (label 2, RFC 9052 §3.1) protected, non-empty, and naming only labels we understand
({1, 2, 3, 4}); ``alg`` and ``crit`` never unprotected; no label in both buckets (§3); a
``kid`` in one bucket, a 34-byte content id; the payload present (detached content needs an
agreement we have none of, §4.1); the signature exactly 64 bytes; a bound on every size.

Every refusal is a typed :class:`~.errors.EnvelopeError`, by where the fault is: the
envelope's own CBOR (tag, array, element heads, truncation, trailing bytes) is
:class:`NotCoseSign1`; anything inside a header bucket (its CBOR or its content) is
:class:`BadHeader` or one of the alg / crit codes; a size or depth past its bound is
:class:`EnvelopeTooLarge`. Only the payload, after the signature verifies, gets message codes.

Non-malleability: the unprotected bucket is not signed, so by default we read nothing from
it but ``kid`` (:attr:`EnvelopeLimits.unprotected_labels` widens that), and
:func:`verify_sign1` requires the kid to be present and to name the verifying key. With the
deterministic-encoding rules above, an envelope that verifies has no byte that could be
changed, added or dropped unnoticed (Ed25519 signatures themselves are not malleable, RFC
8032 §8.4), so its bytes — and so its content id — are fixed by its signer.

Theory of operation (speed)
---------------------------
Signing and verifying are a few microseconds of Python around one Ed25519 call, so no
generic CBOR encoder runs on the hot path. The constant protected header, the Sig_structure
prefix ``84 6a "Signature1" 43 a10127 40`` and the envelope prefix ``d2 84 43 a10127`` are
precomputed; a bstr head comes from a 256-entry table or ``int.to_bytes``; the envelope is
plain concatenation. Parsing compares the common heads against those constants and slices
the fields out; only unusual headers go through :func:`.cbor.decode`.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from . import cbor
from .errors import (
    DecodeError,
    EnvelopeError,
    LimitExceeded,
    LocalProtocolError,
    SignatureInvalid,
    TruncatedCBOR,
)
from .keys import ALG_EDDSA, SigningKey, VerifyKey

__all__ = [
    "DEFAULT_ENVELOPE_LIMITS",
    "MAX_ENVELOPE_SIZE",
    "MAX_HEADER_SIZE",
    "MAX_PAYLOAD_SIZE",
    "PROTECTED_EDDSA",
    "TAG_COSE_SIGN1",
    "BadHeader",
    "BadSignatureSize",
    "DetachedPayload",
    "EnvelopeLimits",
    "EnvelopeTooLarge",
    "KeyMismatch",
    "NotCoseSign1",
    "Sign1",
    "UnknownCriticalHeader",
    "UnsupportedAlgorithm",
    "parse_sign1",
    "sig_structure",
    "sign1",
    "verify_sign1",
]

#: CBOR tag of a COSE_Sign1 (RFC 9052 §2, Table 1).
TAG_COSE_SIGN1: Final = 18
#: The protected header we write: ``{1: -8}`` (alg EdDSA), deterministic CBOR.
PROTECTED_EDDSA: Final = b"\xa1\x01\x27"

# Header labels (RFC 9052 §3.1, Table 2).
_ALG: Final = 1
_CRIT: Final = 2
_CONTENT_TYPE: Final = 3
_KID: Final = 4
_UNDERSTOOD: Final = frozenset({_ALG, _CRIT, _CONTENT_TYPE, _KID})

_SIG1_CONTEXT: Final = b"\x84\x6aSignature1"  # array(4), tstr(10) "Signature1"
_TBS_PREFIX: Final = _SIG1_CONTEXT + b"\x43" + PROTECTED_EDDSA + b"\x40"  # empty external_aad
_ENVELOPE_PREFIX: Final = b"\xd2\x84\x43" + PROTECTED_EDDSA  # tag 18, array(4), bstr(3)
_PROTECTED_FIELD: Final = b"\x43" + PROTECTED_EDDSA
_KID_HEAD: Final = b"\xa1\x04\x58\x22"  # {4: bstr(34) ...}: the kid map we write
_SIG_HEAD: Final = b"\x58\x40"  # bstr(64)
#: What every envelope sign1() writes by default starts with: tag, array, {1: -8}, {4: bstr(34)
#: and the content id's own head 0x12 0x20 (parse_sign1's fixed-offset road).
_OUR_PREFIX: Final = _ENVELOPE_PREFIX + _KID_HEAD + b"\x12\x20"
#: The shortest such envelope: prefix, kid, an empty payload (0x40), the signature.
_OUR_SMALLEST: Final = 44 + 1 + 66
_SIG448_HEAD: Final = b"\x58\x72"  # bstr(114)
_SMALL_BSTR_HEADS: Final = tuple(
    bytes((0x40 | n,)) if n < 24 else bytes((0x58, n)) for n in range(256)
)


class NotCoseSign1(EnvelopeError):
    """Not a tagged COSE_Sign1: wrong tag, not a 4-element array, truncated or trailing bytes."""

    code = "envelope-not-sign1"


class BadHeader(EnvelopeError):
    """A header bucket breaks RFC 9052 §3: wrong type, misplaced or repeated label."""

    code = "envelope-header-invalid"


class UnsupportedAlgorithm(EnvelopeError):
    """The protected ``alg`` is missing or is not EdDSA (-8)."""

    code = "envelope-alg-unsupported"


class UnknownCriticalHeader(EnvelopeError):
    """``crit`` names a header parameter this implementation does not understand (§3.1)."""

    code = "envelope-crit-unknown"


class DetachedPayload(EnvelopeError):
    """The payload is nil (detached content, §4.1), which this protocol does not use."""

    code = "envelope-payload-detached"


class BadSignatureSize(EnvelopeError):
    """The signature is not a bstr of the size EdDSA produces."""

    code = "envelope-signature-size"


class EnvelopeTooLarge(EnvelopeError):
    """The envelope or one of its headers is larger than the limits allow."""

    code = "envelope-too-large"


class KeyMismatch(SignatureInvalid):
    """The envelope's ``kid`` names a different key from the one asked to verify it."""

    code = "envelope-kid-mismatch"


#: spec/v1/protocol.md §7 bounds for an envelope that carries a protocol message.
MAX_HEADER_SIZE: Final = 1024
MAX_HEADER_DEPTH: Final = 8
MAX_PAYLOAD_SIZE: Final = 65536
#: The longest envelope within those bounds: tag and array heads, a 1024-byte protected
#: bucket (3-byte head), ``{4: kid}``, a 65536-byte payload (5-byte head), the signature.
MAX_ENVELOPE_SIZE: Final = 1 + 1 + 3 + MAX_HEADER_SIZE + 38 + 5 + MAX_PAYLOAD_SIZE + 2 + 64


@attrs.frozen(slots=True)
class EnvelopeLimits:
    """Bounds for :func:`parse_sign1`; every crossing is :class:`EnvelopeTooLarge`."""

    #: Whole envelope, bytes.
    max_size: int = 1 << 20
    #: Each header bucket (encoded), bytes; deeper nesting than ``max_header_depth`` too.
    max_header_size: int = MAX_HEADER_SIZE
    max_header_depth: int = MAX_HEADER_DEPTH
    #: The payload, bytes; ``None``: only ``max_size`` bounds it.
    max_payload_size: int | None = None
    #: The fleet's rule (§7): a kid in one bucket, a 34-byte content id. Off only to read
    #: COSE from elsewhere (the RFC examples name keys by labels such as ``"11"``).
    require_kid: bool = True
    #: Accept 114-byte (Ed448) signatures; the fleet signs with Ed25519 only.
    allow_ed448: bool = False
    #: Labels besides ``kid`` the unprotected bucket may carry; ``None`` allows any. That
    #: bucket is not signed, so by default it holds only the kid :func:`verify_sign1` checks.
    unprotected_labels: frozenset[int | str] | None = frozenset()


#: The envelope of a protocol message (spec/v1/protocol.md §7).
DEFAULT_ENVELOPE_LIMITS: Final = EnvelopeLimits(
    max_size=MAX_ENVELOPE_SIZE, max_payload_size=MAX_PAYLOAD_SIZE
)


@attrs.frozen(slots=True)
class Sign1:
    """A parsed COSE_Sign1. Not yet verified: call :func:`verify_sign1`."""

    #: The protected bucket exactly as received (it is what the signature covers).
    protected_bytes: bytes
    protected: dict[int | str, Any]
    unprotected: dict[int | str, Any]
    payload: bytes
    signature: bytes

    @property
    def kid(self) -> bytes | None:
        """The key id (label 4) from the unprotected or, failing that, the protected bucket."""
        kid = self.unprotected.get(_KID)
        return self.protected.get(_KID) if kid is None else kid


def _bstr_head(length: int) -> bytes:
    """Shortest head of a byte string of ``length`` bytes (RFC 8949 §3.1, §4.2.1)."""
    if length < 256:
        return _SMALL_BSTR_HEADS[length]
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    if length < 0x100000000:
        return b"\x5a" + length.to_bytes(4, "big")
    return b"\x5b" + length.to_bytes(8, "big")


def sig_structure(protected_bytes: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """The bytes an EdDSA signature covers: Sig_structure for COSE_Sign1 (RFC 9052 §4.4)."""
    if protected_bytes == PROTECTED_EDDSA and not external_aad:
        return _TBS_PREFIX + _bstr_head(len(payload)) + payload
    return b"".join(
        (
            _SIG1_CONTEXT,
            _bstr_head(len(protected_bytes)),
            protected_bytes,
            _bstr_head(len(external_aad)),
            external_aad,
            _bstr_head(len(payload)),
            payload,
        )
    )


def sign1(
    payload: bytes,
    key: SigningKey,
    *,
    protected: bytes = PROTECTED_EDDSA,
    unprotected: dict[int | str, Any] | None = None,
    external_aad: bytes = b"",
    limits: EnvelopeLimits = DEFAULT_ENVELOPE_LIMITS,
) -> bytes:
    """Sign ``payload`` into a tagged COSE_Sign1 (RFC 9052 §4.2, §4.4), deterministic CBOR.

    ``protected`` is the encoded protected bucket (default ``{1: -8}``); ``unprotected``
    defaults to ``{4: key.kid}``, which names the signer (and which :func:`verify_sign1`
    requires unless told otherwise). Headers that :func:`parse_sign1` would refuse with
    ``limits`` raise :class:`LocalProtocolError`.
    """
    size = len(payload)
    head = _SMALL_BSTR_HEADS[size] if size < 256 else _bstr_head(size)
    if unprotected is None and not external_aad and protected == PROTECTED_EDDSA:
        signature = key.sign(_TBS_PREFIX + head + payload)
        return b"".join((_ENVELOPE_PREFIX, _KID_HEAD, key.kid, head, payload, _SIG_HEAD, signature))
    unprotected_bytes = _KID_HEAD + key.kid if unprotected is None else cbor.encode(unprotected)
    # The general road: check we would accept what we are about to write.
    try:
        protected_map = _decode_protected(protected, limits)
        header = {_KID: key.kid} if unprotected is None else unprotected
        _check_unprotected(header, protected_map, limits)
        if limits.require_kid and _KID not in header and _KID not in protected_map:
            raise BadHeader("no kid: a reader refuses an envelope that names no key (§7)")
    except (EnvelopeError, DecodeError) as exc:
        raise LocalProtocolError(f"refusing to sign with these headers: {exc.message}") from None
    signature = key.sign(sig_structure(protected, external_aad, payload))
    return b"".join(
        (
            b"\xd2\x84",
            _bstr_head(len(protected)),
            protected,
            unprotected_bytes,
            head,
            payload,
            _SIG_HEAD,
            signature,
        )
    )


def _bstr_at(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Find the definite, shortest-head bstr at ``pos``; return (content start, end)."""
    if pos >= len(data):
        raise NotCoseSign1(f"truncated: {what} expected at offset {pos}")
    initial = data[pos]
    if initial >> 5 != 2:
        raise NotCoseSign1(f"{what} at offset {pos} is not a byte string (head 0x{initial:02x})")
    info = initial & 31
    if info < 24:
        start, length = pos + 1, info
    elif info <= 27:
        width = 1 << (info - 24)
        start = pos + 1 + width
        if start > len(data):
            raise NotCoseSign1(f"truncated head of {what} at offset {pos}")
        length = int.from_bytes(data[pos + 1 : start], "big")
        if length < (24 if width == 1 else 1 << (width * 4)):
            raise NotCoseSign1(f"{what} length not in shortest form at {pos} (§7: deterministic)")
    elif info == 31:
        raise NotCoseSign1(f"indefinite-length {what} at offset {pos} (§7: deterministic)")
    else:
        raise NotCoseSign1(f"reserved additional information {info} at offset {pos}")
    end = start + length
    if end > len(data):
        raise NotCoseSign1(f"{what} at offset {pos} runs past the end of the envelope")
    return start, end


def _header_limits(limits: EnvelopeLimits) -> cbor.Limits:
    # Counts and strings are bounded by the bucket's size; only size and depth are limits.
    return cbor.Limits(
        max_size=max(limits.max_size, limits.max_header_size),
        max_depth=limits.max_header_depth,
        max_container_items=limits.max_header_size,
        max_total_items=limits.max_header_size,
        max_string_length=limits.max_header_size,
        allowed_tags=frozenset(),
    )


def _kid_ok(kid: Any) -> bool:
    """A kid is a v1 content id: 34 bytes, 0x12 0x20 then the SHA-256 digest (§3.3, §7)."""
    return type(kid) is bytes and len(kid) == 34 and kid[0] == 0x12 and kid[1] == 0x20


def _check_labels(header: dict[Any, Any], bucket: str, limits: EnvelopeLimits) -> None:
    for label in header:
        if type(label) not in (int, str):
            raise BadHeader(f"{bucket} header label {label!r} is not an int or text (§3)")
    if _KID in header:
        kid = header[_KID]
        if type(kid) is not bytes:
            raise BadHeader(f"{bucket} kid (label 4) is not a byte string (§3.1)")
        if limits.require_kid and not _kid_ok(kid):
            raise BadHeader(f"{bucket} kid is not a 34-byte content id 0x12 0x20 ... (§7)")
    if _CONTENT_TYPE in header and type(header[_CONTENT_TYPE]) not in (int, str):
        raise BadHeader(f"{bucket} content type (label 3) is not a uint or text (§3.1)")


def _decode_protected(protected_bytes: bytes, limits: EnvelopeLimits) -> dict[int | str, Any]:
    """Decode and check the protected bucket (RFC 9052 §3, §3.1; RFC 9053 §2.2)."""
    if len(protected_bytes) > limits.max_header_size:
        raise EnvelopeTooLarge(f"protected header of {len(protected_bytes)} bytes")
    if not protected_bytes:
        raise UnsupportedAlgorithm("protected header is empty: alg -8 must be protected")
    try:
        header = cbor.decode(protected_bytes, _header_limits(limits))
    except LimitExceeded as exc:
        raise EnvelopeTooLarge(f"protected header: {exc.message}") from None
    except DecodeError as exc:  # inside a bstr of known length: even truncation is the header's
        raise BadHeader(f"protected header is not acceptable CBOR: {exc.message}") from None
    if not isinstance(header, dict):
        raise BadHeader("protected header is not a map (RFC 9052 §3)")
    if not header:
        raise BadHeader("empty protected map must be a zero-length bstr (RFC 9052 §3)")
    _check_labels(header, "protected", limits)
    alg = header.get(_ALG)
    if type(alg) is not int or alg != ALG_EDDSA:
        raise UnsupportedAlgorithm(f"protected alg is {alg!r}, only -8 (EdDSA) is accepted")
    if _CRIT in header:
        crit = header[_CRIT]
        if not isinstance(crit, list) or not crit:
            raise BadHeader("crit (label 2) must be a non-empty array (RFC 9052 §3.1)")
        for label in crit:
            if type(label) not in (int, str):
                raise BadHeader(f"crit names {label!r}, which is not a label")
            if label not in _UNDERSTOOD:
                raise UnknownCriticalHeader(f"crit names header {label!r}, not understood here")
    return header


def _check_unprotected(
    header: Any, protected: dict[int | str, Any], limits: EnvelopeLimits
) -> None:
    if not isinstance(header, dict):
        raise BadHeader("unprotected header is not a map (RFC 9052 §3)")
    _check_labels(header, "unprotected", limits)
    if _ALG in header or _CRIT in header:
        raise BadHeader("alg and crit must be in the protected header (RFC 9052 §3.1)")
    for label in header:
        if label in protected:
            raise BadHeader(f"label {label!r} is in both header buckets (RFC 9052 §3)")
    allowed = limits.unprotected_labels
    if allowed is not None:
        for label in header:
            if label != _KID and label not in allowed:
                raise BadHeader(f"unprotected label {label!r} refused: only kid is read unsigned")


def parse_sign1(
    data: bytes | bytearray | memoryview, limits: EnvelopeLimits = DEFAULT_ENVELOPE_LIMITS
) -> Sign1:
    """Parse a tagged COSE_Sign1 (RFC 9052 §4.2) and check its headers; do not verify it.

    Raises a typed :class:`EnvelopeError` (or :class:`DecodeError` for bad CBOR in a header)
    for everything the module docstring lists as refused.
    """
    # The envelope sign1() writes — what every fleet message carries, on every hop — read by
    # its fixed offsets: the prefix and kid head are constants, the kid a 34-byte content id,
    # the payload head one to three bytes, the signature the last 66. Anything else (another
    # shape, a size or limit that does not fit, a bytearray), errors included, goes to the
    # general road below, which gives the same Sign1 for this shape.
    size = len(data)
    if type(data) is bytes and size >= _OUR_SMALLEST and data[:12] == _OUR_PREFIX:
        initial = data[44]
        if 0x40 <= initial < 0x58:
            start, length = 45, initial - 0x40
        elif initial == 0x58 and data[45] >= 24:
            start, length = 46, data[45]
        elif initial == 0x59 and (length := data[45] << 8 | data[46]) >= 256:
            start = 47
        else:
            start = length = -1
        end = start + length
        if (
            start > 0 and end + 66 == size and data[end : end + 2] == _SIG_HEAD
            and size <= limits.max_size
            and (limits.max_payload_size is None or length <= limits.max_payload_size)
        ):  # fmt: skip
            return Sign1(PROTECTED_EDDSA, {_ALG: ALG_EDDSA}, {_KID: data[10:44]},
                         data[start:end], data[end + 2 :])  # fmt: skip
    # Slices of a bytearray or memoryview would not be bytes.
    data = data if type(data) is bytes else bytes(data)
    size = len(data)
    if size > limits.max_size:
        raise EnvelopeTooLarge(f"envelope of {size} bytes (limit {limits.max_size})")
    if data[:2] != b"\xd2\x84":
        if size < 2:
            raise NotCoseSign1("truncated: shorter than a COSE_Sign1 head")
        if data[0] == 0x84:
            raise NotCoseSign1("untagged COSE_Sign1: tag 18 is required")
        if data[0] != 0xD2:
            raise NotCoseSign1(f"head 0x{data[0]:02x} is not tag 18 (COSE_Sign1)")
        raise NotCoseSign1(f"tag 18 wraps head 0x{data[1]:02x}, not a 4-element array")
    # Protected bucket: the constant {1: -8} nearly always.
    if data[2:6] == _PROTECTED_FIELD:
        protected_bytes: bytes = PROTECTED_EDDSA
        protected: dict[int | str, Any] = {_ALG: ALG_EDDSA}
        pos = 6
    else:
        start, pos = _bstr_at(data, 2, "protected header")
        protected_bytes = data[start:pos]
        protected = _decode_protected(protected_bytes, limits)
    # Unprotected bucket: {4: kid} or {} nearly always.
    unprotected: dict[int | str, Any]
    if data[pos : pos + 4] == _KID_HEAD and pos + 38 <= size and data[pos + 4 : pos + 6] == b"\x12\x20":
        unprotected = {_KID: data[pos + 4 : pos + 38]}
        pos += 38
        if _KID in protected:
            raise BadHeader("label 4 is in both header buckets (RFC 9052 §3)")
    elif data[pos : pos + 1] == b"\xa0":
        unprotected = {}
        pos += 1
    else:
        if pos >= size or data[pos] >> 5 != 5:
            raise NotCoseSign1(f"unprotected header at offset {pos} is not a map")
        header_limits = _header_limits(limits)
        try:
            end = cbor.item_end(data, pos, header_limits)
            if end - pos > limits.max_header_size:
                raise EnvelopeTooLarge(f"unprotected header of {end - pos} bytes")
            unprotected = cbor.decode(data[pos:end], header_limits)
        except TruncatedCBOR as exc:  # the envelope ends inside the bucket
            raise NotCoseSign1(f"truncated unprotected header: {exc.message}") from None
        except LimitExceeded as exc:
            raise EnvelopeTooLarge(f"unprotected header: {exc.message}") from None
        except DecodeError as exc:
            raise BadHeader(f"unprotected header is not acceptable CBOR: {exc.message}") from None
        _check_unprotected(unprotected, protected, limits)
        pos = end
    if limits.require_kid and _KID not in unprotected and _KID not in protected:
        raise BadHeader("no kid (label 4): the envelope must name its signing key (§7)")
    # Payload, then the signature, then nothing.
    if data[pos : pos + 1] == b"\xf6":
        raise DetachedPayload("payload is nil (detached content is not used, RFC 9052 §4.1)")
    # The payload's head inline for the usual sizes (24..65,535 bytes, shortest heads, within
    # the envelope: what _bstr_at accepts); anything else, errors included, goes to it.
    initial = data[pos] if pos < size else 0
    if initial == 0x58 and pos + 2 <= size and data[pos + 1] >= 24 and pos + 2 + data[pos + 1] <= size:
        start = pos + 2
        pos = start + data[pos + 1]
    elif initial == 0x59 and pos + 3 <= size and (
        (length := data[pos + 1] << 8 | data[pos + 2]) >= 256 and pos + 3 + length <= size
    ):
        start = pos + 3
        pos = start + length
    else:
        start, pos = _bstr_at(data, pos, "payload")
    if limits.max_payload_size is not None and pos - start > limits.max_payload_size:
        raise EnvelopeTooLarge(f"payload of {pos - start} bytes (limit {limits.max_payload_size})")
    payload = data[start:pos]
    head = data[pos : pos + 2]
    if head == _SIG_HEAD:
        end = pos + 66
    elif head == _SIG448_HEAD and limits.allow_ed448:
        end = pos + 116
    else:
        start, end = _bstr_at(data, pos, "signature")
        raise BadSignatureSize(f"signature of {end - start} bytes; EdDSA (Ed25519) makes 64")
    if end != size:
        if end > size:
            raise NotCoseSign1("signature runs past the end of the envelope")
        raise NotCoseSign1(f"{size - end} trailing bytes after the COSE_Sign1")
    return Sign1(protected_bytes, protected, unprotected, payload, data[pos + 2 : end])


def verify_sign1(
    envelope: Sign1,
    public_key: VerifyKey,
    external_aad: bytes = b"",
    *,
    check_kid: bool = True,
) -> bytes:
    """Verify ``envelope`` under ``public_key`` (RFC 9052 §4.4); return its payload.

    With ``check_kid`` (the default) the envelope must name ``public_key`` by its ``kid``:
    an envelope that names one key is never accepted under another, and since the kid is the
    only unsigned header we read, no byte of an accepted envelope can be changed without
    the change being caught. Raises :class:`SignatureInvalid` (or :class:`KeyMismatch`).
    """
    if check_kid:
        kid = envelope.kid
        if kid != public_key.kid:
            named = "no key" if kid is None else f"key {kid.hex()}"
            raise KeyMismatch(f"envelope names {named}, not {public_key.kid.hex()}")
    signature = envelope.signature
    if len(signature) != public_key.signature_size:
        raise SignatureInvalid(f"{len(signature)}-byte signature cannot be {public_key.curve.name}")
    payload = envelope.payload
    if envelope.protected_bytes is PROTECTED_EDDSA and not external_aad:
        tbs = _TBS_PREFIX + _bstr_head(len(payload)) + payload
    else:
        tbs = sig_structure(envelope.protected_bytes, external_aad, payload)
    public_key.verify(signature, tbs)
    return payload
