"""Content ids: self-describing hashes that name messages, keys and artifacts by their bytes.

A content id is the multihash form ``<algorithm code> <digest length> <digest>``: today always
SHA-256 (code ``0x12``, 32 bytes), so 34 bytes in all. The code makes room for a later hash
without a flag day; a reader refuses codes it does not know rather than guess.

Every delivered message is named twice (sealed at its source, checked where it is read), so
:meth:`ContentId.of` takes the C accelerator's SHA-256 (``protocol/_content_id.c``) when it is
built: inside a fleet, hashlib's road through OpenSSL's digest objects costs several times its
tight-loop figure. Both give the same bytes (the tests hold them together).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import Final

import attrs

from .errors import RemoteProtocolError

try:
    from . import _speedups  # type: ignore[attr-defined]
except ImportError:  # no C compiler at install: hashlib's road
    _speedups = None

_sha256: Callable[[bytes], bytes] | None = getattr(_speedups, "sha256", None)


def sha256_digest(content: bytes) -> bytes:
    """The 32-byte SHA-256 digest of ``content``, as content ids hold it: the C road when it
    is built (module docstring), hashlib's otherwise. The agent names every bundle it takes
    by it too (bundle keys, ``protocol/agent/bundling.py``), on every hop."""
    if _sha256 is not None:
        return _sha256(content)
    return hashlib.sha256(content).digest()


class HashAlgorithm(enum.IntEnum):
    """Multihash codes of the hashes a content id may use."""

    SHA2_256 = 0x12


_DIGEST_SIZE: Final = {HashAlgorithm.SHA2_256: 32}
_SHA256_PREFIX: Final = bytes((HashAlgorithm.SHA2_256, 32))


class ContentIdError(RemoteProtocolError):
    """Bytes that are not a content id this implementation can check."""

    code = "content-id-invalid"


@attrs.frozen(slots=True, order=True)
class ContentId:
    """The name of a piece of content: the multihash of its exact bytes."""

    raw: bytes

    @classmethod
    def of(cls, content: bytes) -> ContentId:
        """Name ``content`` (SHA-256)."""
        if _sha256 is not None:  # sha256_digest inlined: every message is named this way
            return cls(_SHA256_PREFIX + _sha256(content))
        return cls(_SHA256_PREFIX + hashlib.sha256(content).digest())

    @classmethod
    def from_bytes(cls, raw: bytes) -> ContentId:
        """Validate a content id read from the wire."""
        if len(raw) < 2:
            raise ContentIdError(f"content id of {len(raw)} bytes is too short")
        try:
            algorithm = HashAlgorithm(raw[0])
        except ValueError:
            raise ContentIdError(f"unknown content id hash algorithm 0x{raw[0]:02x}") from None
        size = _DIGEST_SIZE[algorithm]
        if raw[1] != size or len(raw) != 2 + size:
            raise ContentIdError(f"{algorithm.name} content id must hold a {size}-byte digest")
        return cls(bytes(raw))

    @property
    def algorithm(self) -> HashAlgorithm:
        return HashAlgorithm(self.raw[0])

    @property
    def digest(self) -> bytes:
        return self.raw[2:]

    def matches(self, content: bytes) -> bool:
        """Whether ``content`` is what this id names."""
        return sha256_digest(content) == self.digest

    def __str__(self) -> str:
        return self.raw.hex()

    def short(self) -> str:
        """A few hex digits of the digest, for logs and reports."""
        return self.raw[2:8].hex()
