"""Errors of the release machinery, each with a stable ``code``.

The split of :mod:`..errors` holds: what a peer or a signed order sent that we refuse is a
:class:`~..errors.RemoteProtocolError`; what our own caller asked that breaks the rules is a
:class:`~..errors.LocalProtocolError`. Refusing never costs what is already installed: every
check runs before any state changes.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, RemoteProtocolError, UntrustedKey


class ReleaseFormatError(RemoteProtocolError):
    """A manifest, order, policy table or release message whose bytes break its format."""

    code = "release-format"


class ReleaseSignerNotAuthorised(UntrustedKey):
    """Signed by a trusted key whose credential does not grant the release role."""

    code = "release-signer-unauthorised"


class ChunkMismatch(RemoteProtocolError):
    """A chunk whose bytes do not hash to the content id it was sent under."""

    code = "chunk-hash-mismatch"


class ChunkNotWanted(RemoteProtocolError):
    """A chunk no wanted manifest names (unsolicited bytes are not stored)."""

    code = "chunk-not-wanted"


class QuotaExceeded(RemoteProtocolError):
    """Storing a release would take the node's artifact store over its quota."""

    code = "artifact-quota-exceeded"


class RolloutRefused(LocalProtocolError):
    """A rollout plan that breaks a rule (empty stage, a cell in two stages, ...)."""

    code = "rollout-refused"


class TooManyMajorVersions(RolloutRefused):
    """The rollout would make a cell or a region run more than three major versions at once."""

    code = "major-versions-exceeded"


class PolicyStale(RemoteProtocolError):
    """A policy table older than the one in force, or a second table with the same serial."""

    code = "policy-stale"


class AuthorityRevoked(LocalProtocolError):
    """Control authority was asked for a release that a revocation order has taken it from."""

    code = "authority-revoked"


class ReleaseNotInstalled(LocalProtocolError):
    """Control authority or shadow mode was asked for a release this node does not hold."""

    code = "release-not-installed"


class StageOrderStale(RemoteProtocolError):
    """A rollout-stage order older than one already applied for the same release (a replay,
    or overtaken in the store-and-forward network): acting on it could undo a roll back."""

    code = "rollout-stage-stale"
