"""Errors of the Bundle Protocol v7 codec (RFC 9171).

Every refusal names the rule it enforces: a stable ``code`` (for conformance reports and other
implementations), the ``block`` it concerns (``0`` is the primary block, ``None`` the bundle as a
whole, otherwise the block number or, before the number is known, ``"#<index>"``), and ``rule``, the
RFC section and the sentence it applies. Bytes from a peer that break a rule raise
:class:`BundleError` (a :class:`RemoteProtocolError`); a bundle we were asked to encode that breaks
one raises :class:`InvalidBundle` (a :class:`LocalProtocolError`) with the same fields.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = ["BundleError", "EidError", "InvalidBundle", "InvalidEid", "BlockRef"]

#: Where a problem was found: bundle-wide (None), a block number, or "#<index>" by position.
BlockRef = int | str | None


def _describe(code: str, message: str, block: BlockRef, rule: str) -> str:
    where = "bundle" if block is None else ("primary block" if block == 0 else f"block {block}")
    return f"{where}: {message} [{code}; {rule}]"


class BundleError(RemoteProtocolError):
    """Received bundle bytes that break RFC 9171; refuse the bundle (§5.6 step 3)."""

    def __init__(self, code: str, message: str, *, block: BlockRef = None, rule: str = "") -> None:
        super().__init__(_describe(code, message, block, rule))
        self.code = code
        self.block = block
        self.rule = rule
        self.detail = message


class InvalidBundle(LocalProtocolError):
    """A bundle or block we were asked to build that RFC 9171 does not allow."""

    def __init__(self, code: str, message: str, *, block: BlockRef = None, rule: str = "") -> None:
        super().__init__(_describe(code, message, block, rule))
        self.code = code
        self.block = block
        self.rule = rule
        self.detail = message


class EidError(BundleError):
    """An endpoint ID on the wire that RFC 9171 §4.2.5.1 (or RFC 9758) does not allow."""


class InvalidEid(InvalidBundle, ValueError):
    """An endpoint ID given by the caller (text or values) that is not valid."""
