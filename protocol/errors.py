"""Errors of the protocol core.

The split follows h11: a :class:`RemoteProtocolError` means the bytes or the peer broke the
protocol (hostile or corrupt input: refuse it, keep running); a :class:`LocalProtocolError`
means our own caller asked us to break it (a bug on this side). Every decoder raises only
subclasses of :class:`FleetwireError`, each with a stable ``code`` that conformance reports
and other implementations can match on.
"""

from __future__ import annotations


class FleetwireError(Exception):
    """Base of every error the protocol core raises on purpose."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RemoteProtocolError(FleetwireError):
    """The input (bytes from a peer, a file, a store) breaks the protocol."""

    code = "remote-protocol"


class LocalProtocolError(FleetwireError):
    """The caller asked for something the protocol does not allow."""

    code = "local-protocol"


# --- CBOR codec (RFC 8949) -------------------------------------------------------------


class DecodeError(RemoteProtocolError):
    """Bytes that are not acceptable CBOR for the context they arrived in."""

    code = "cbor-decode"


class LimitExceeded(DecodeError):
    """A hostile-input bound (size, depth, item count, string length) was crossed."""

    code = "cbor-limit"


class MalformedCBOR(DecodeError):
    """Not well-formed CBOR (RFC 8949 §3, Appendix F)."""

    code = "cbor-malformed"


class TruncatedCBOR(MalformedCBOR):
    """The input ends before the item does, including a declared length past its end.

    Same code as any malformed input (spec/v1/protocol.md §3.4); the class lets a container
    format (an envelope, §7) tell "the whole input is cut short" from a fault inside it.
    """


class NonDeterministicEncoding(DecodeError):
    """Well-formed, but not the core deterministic encoding of RFC 8949 §4.2.1."""

    code = "cbor-not-deterministic"


# --- messages --------------------------------------------------------------------------


class MessageError(RemoteProtocolError):
    """A decoded message that fails validation; ``field`` names where."""

    code = "message-invalid"

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class UnsupportedVersion(MessageError):
    """The message cannot be read at any version this implementation speaks."""

    code = "version-unsupported"


class UnknownCriticalField(MessageError):
    """The writer marked a field critical and we do not understand it."""

    code = "critical-field-unknown"


# --- envelope and trust ----------------------------------------------------------------


class EnvelopeError(RemoteProtocolError):
    """A COSE_Sign1 envelope that is malformed or uses what we do not accept."""

    code = "envelope-invalid"


class SignatureInvalid(EnvelopeError):
    """The signature does not verify under the named key."""

    code = "signature-invalid"


class UntrustedKey(EnvelopeError):
    """The signing key is unknown, expired, revoked, or not allowed this role."""

    code = "key-untrusted"
