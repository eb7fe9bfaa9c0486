"""The version machinery: one message at any version of the window, and who reads which.

Theory of operation
-------------------
Versions are integers; an implementation of version N reads N, N-1 and N-2 and writes N, or
N-1 or N-2 for peers that only read those (spec/v1/protocol.md §5.1, DESIGN.md "Versions and
N-2"). There is no handshake: DTN peers may never be connected at once. So:

- :func:`convert` rewrites a message as a writer of another version would have written it.
  Within a type that exists at the target version it restamps the header (``version``, and
  ``min_version`` no lower than the type's own version) and moves fields the target does not
  know into extensions — where an older reader keeps them anyway (§5.3) — or, going up, takes
  extensions the target knows back as fields. A type the target does not have goes through
  the *defined down-conversions* of :data:`DOWN_CONVERSIONS` (spec/v3/market.md §5,
  spec/v2/reservations.md §5): a bid for one unit becomes a lease claim, an award of one unit
  or a block grant of one unit a lease grant, and so on. Anything else — a type with no older
  form, a critical key the target does not know, an amount a lease cannot carry — is refused
  with :class:`NotExpressible`, never dropped in silence.
- :func:`encode_at` is :func:`convert` then the deterministic encoding.
- :func:`decode_any` reads as an implementation of the given version would, window included:
  what that version refuses is refused with the code it would give.
- :class:`PeerVersions` learns each peer's versions from its signed capability advertisement
  (``versions``, §6.1) and answers at which version to write to it; to a peer it has not heard
  from, at the oldest version of its own window.

A node pinned to version k (``[node] protocol_version = k``) uses k as its own version here:
it reads with ``decode_any(data, k)`` and writes with ``PeerVersions(own=k)``, so it behaves as
a version-k implementation would.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs

from .. import cbor
from ..errors import LocalProtocolError, MessageError
from .codec import MESSAGE_LIMITS, decode_message, encode_message
from .header import PROTOCOL_VERSION, WINDOW, Header
from .registry import MESSAGE_CLASSES, Message
from .v1 import (
    CapabilityAdvertisement,
    LeaseClaim,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
)
from .v2 import BlockGrant, BlockRelease, BlockRenew, BlockRequest
from .v3 import Award, Bid

__all__ = [
    "DOWN_CONVERSIONS",
    "SUPPORTED_VERSIONS",
    "WINDOW",
    "NoCommonVersion",
    "NotExpressible",
    "PeerRange",
    "PeerVersions",
    "convert",
    "decode_any",
    "encode_at",
    "in_window",
    "window",
]

#: The versions this implementation reads and writes, oldest first.
SUPPORTED_VERSIONS: Final = tuple(range(1, PROTOCOL_VERSION + 1))
#: Per class, the fields added after version 1 (most classes have none).
_LATER_FIELDS: Final = {
    cls: tuple(field for field in cls.FIELDS if field.since > 1) for cls in MESSAGE_CLASSES.values()
}


class NotExpressible(LocalProtocolError):
    """A message cannot be written at the version asked for: the version has no way to say it.

    We were asked to break the protocol (h11's split: a *local* error); the caller decides —
    send something else, or not send to that peer.
    """

    code = "version-not-expressible"

    def __init__(self, message: str, *, type_name: str = "", version: int = 0) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.version = version


class NoCommonVersion(NotExpressible):
    """This node and a peer read no version in common (their windows do not meet)."""

    code = "version-no-common"


def window(version: int) -> range:
    """The versions a reader of ``version`` reads: ``max(1, version - 2) .. version``."""
    return range(max(1, version - WINDOW), version + 1)


def in_window(writer: int, reader: int) -> bool:
    """Whether a writer of version ``writer`` and a reader of version ``reader`` can talk.

    An older writer is read by the newer reader's window; a newer writer writes down to the
    reader's version (it emits N-1 or N-2). Both directions reach exactly two versions apart.
    """
    return writer >= 1 and reader >= 1 and abs(writer - reader) <= WINDOW


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise NotExpressible(
            f"version {version} is not one this implementation writes "
            f"({SUPPORTED_VERSIONS[0]}..{SUPPORTED_VERSIONS[-1]})",
            version=version,
        )


def convert(message: Message, to_version: int) -> Message:
    """``message`` as a writer of ``to_version`` writes it (see the module docstring).

    Raises :class:`NotExpressible` naming what ``to_version`` cannot say. The result is a
    new message (new bytes, new content id): its signer signs it as written.
    """
    cls, header = type(message), message.header
    if header.version == to_version and header.min_version >= cls.SINCE:
        # Already written at that version (the common case of every send): nothing to do,
        # unless it carries a field its version does not have.
        later = _LATER_FIELDS[cls]
        if not later or all(
            field.since <= to_version or getattr(message, field.name) in (None, ())
            for field in later
        ):
            return message
    _check_version(to_version)
    if to_version < cls.SINCE:
        down = DOWN_CONVERSIONS.get(cls)
        if down is None:
            raise NotExpressible(
                f"{cls.__name__} (type {int(cls.TYPE)}) exists from version {cls.SINCE} on and "
                f"has no version-{to_version} form",
                type_name=cls.__name__,
                version=to_version,
            )
        return down(message, to_version)
    return _restamp(message, to_version)


def _restamp(message: Message, to_version: int) -> Message:
    cls, header = type(message), message.header
    name = cls.__name__
    changes: dict[str, Any] = {}
    extensions = dict(message.extensions)
    known = {field.key for field in cls.FIELDS if field.since <= to_version}
    for key in header.critical:
        if key >= 8 and key not in known:
            raise NotExpressible(
                f"{name}: key {key} is marked critical, and a version-{to_version} reader does "
                "not know it: it would refuse the message",
                type_name=name,
                version=to_version,
            )
    for field in cls.FIELDS:
        value = getattr(message, field.name)
        present = value not in (None, ())
        if field.since > to_version and present:
            # An older reader keeps an unknown key as an extension (§5.3): carry it as one.
            extensions[field.key] = field.kind.to_wire(value)
            changes[field.name] = () if value == () else None
        elif field.since <= to_version and not present and field.key in extensions:
            # Going up: an extension the target version knows is that field.
            raw = extensions.pop(field.key)
            try:
                changes[field.name] = field.kind.from_wire(raw, field.name)
            except MessageError as exc:
                raise NotExpressible(
                    f"{name}: extension key {field.key} is not a valid {field.name} at version "
                    f"{to_version} ({exc.reason})",
                    type_name=name,
                    version=to_version,
                ) from None
    min_version = max(cls.SINCE, min(header.min_version, to_version))
    new_header = attrs.evolve(header, version=to_version, min_version=min_version)
    new_extensions = tuple(sorted(extensions.items(), key=lambda item: item[0]))
    return attrs.evolve(message, header=new_header, extensions=new_extensions, **changes)


def encode_at(message: Message, version: int) -> bytes:
    """The deterministic bytes of ``message`` written at ``version`` (:func:`convert` first)."""
    return encode_message(convert(message, version))


def decode_any(
    data: bytes, reader_version: int = PROTOCOL_VERSION, limits: cbor.Limits = MESSAGE_LIMITS
) -> Message:
    """Read ``data`` exactly as an implementation of ``reader_version`` would.

    Its window (``reader_version - 2 .. reader_version``), its types, and its keys: a field
    added after ``reader_version`` is an extension to it, and refused if marked critical
    (``critical-field-unknown``). A message from a newer writer is read by the reader's rules
    when its ``min_version`` allows (§5.1). Errors are the codec's (each with its stable code).
    """
    if reader_version not in SUPPORTED_VERSIONS:
        raise LocalProtocolError(
            f"cannot read as version {reader_version}: this implementation reads as "
            f"{SUPPORTED_VERSIONS[0]}..{SUPPORTED_VERSIONS[-1]}"
        )
    return decode_message(data, limits, version=reader_version)


# --- defined down-conversions (market.md §5, reservations.md §5) ----------------------------


def _down_header(message: Message, target: type[Message], to_version: int) -> Header:
    """The header of a message rewritten as another type: same issuer, time, sequence and
    references; written at ``to_version``, readable from the target type's version."""
    name = type(message).__name__
    if message.header.critical:
        raise NotExpressible(
            f"{name}: its critical keys have no meaning in a {target.__name__}",
            type_name=name,
            version=to_version,
        )
    if message.extensions:
        keys = ", ".join(str(key) for key, _ in message.extensions)
        raise NotExpressible(
            f"{name}: its extension keys ({keys}) have no place in a {target.__name__}",
            type_name=name,
            version=to_version,
        )
    return attrs.evolve(message.header, version=to_version, min_version=target.SINCE)


def _one_unit(message: Message, amount: int, what: str, to_version: int) -> None:
    if amount != 1:
        name = type(message).__name__
        raise NotExpressible(
            f"{name}: a version-{to_version} lease is on one resource, and this {what} is "
            f"for {amount} units",
            type_name=name,
            version=to_version,
        )


def _answered(message: Message, to_version: int, target: str) -> Any:
    """The content id the message answers (its first reference): what a lease message names."""
    if not message.header.references:
        name = type(message).__name__
        raise NotExpressible(
            f"{name}: a {target} names the message it answers, and this one references none",
            type_name=name,
            version=to_version,
        )
    return message.header.references[0]


def _term(message: Message, expires_at: int, to_version: int) -> int:
    term = expires_at - message.header.issued_at
    if term < 0:
        name = type(message).__name__
        raise NotExpressible(
            f"{name}: expires before it was issued, so it has no lease term",
            type_name=name,
            version=to_version,
        )
    return term


def _bid_to_claim(message: Any, to_version: int) -> Message:
    bid: Bid = message
    _one_unit(bid, bid.quantity, "bid", to_version)
    if bid.term_ms is None:
        raise NotExpressible(
            "Bid: a lease claim names a term, and this bid has no term_ms (key 11)",
            type_name="Bid",
            version=to_version,
        )
    header = _down_header(bid, LeaseClaim, to_version)
    return LeaseClaim(header, bid.pool, bid.term_ms)


def _award_to_grant(message: Any, to_version: int) -> Message:
    award: Award = message
    _one_unit(award, award.quantity, "award", to_version)
    claim = _answered(award, to_version, "lease grant")
    term = _term(award, award.expires_at, to_version)
    header = _down_header(award, LeaseGrant, to_version)
    return LeaseGrant(
        header, award.pool, award.bidder, claim, award.fencing_token, term, award.expires_at
    )


def _request_to_claim(message: Any, to_version: int) -> Message:
    request: BlockRequest = message
    _one_unit(request, request.amount, "block request", to_version)
    header = _down_header(request, LeaseClaim, to_version)
    return LeaseClaim(header, request.pool, request.term_ms)


def _block_to_grant(message: Any, to_version: int) -> Message:
    block: BlockGrant = message
    _one_unit(block, block.amount, "block grant", to_version)
    claim = _answered(block, to_version, "lease grant")
    term = _term(block, block.expires_at, to_version)
    header = _down_header(block, LeaseGrant, to_version)
    return LeaseGrant(
        header, block.pool, block.cell, claim, block.fencing_token, term, block.expires_at
    )


def _renew_to_renew(message: Any, to_version: int) -> Message:
    renew: BlockRenew = message
    grant = _answered(renew, to_version, "lease renew")
    header = _down_header(renew, LeaseRenew, to_version)
    return LeaseRenew(header, renew.pool, renew.fencing_token, grant, renew.term_ms)


def _release_to_release(message: Any, to_version: int) -> Message:
    release: BlockRelease = message
    grant = _answered(release, to_version, "lease release")
    header = _down_header(release, LeaseRelease, to_version)
    return LeaseRelease(header, release.pool, release.fencing_token, grant)


#: Message class → how it is written for a version that does not have its type. Every type
#: not listed here has no older form (:class:`NotExpressible`).
DOWN_CONVERSIONS: Final[dict[type[Message], Callable[[Message, int], Message]]] = {
    Bid: _bid_to_claim,
    Award: _award_to_grant,
    BlockRequest: _request_to_claim,
    BlockGrant: _block_to_grant,
    BlockRenew: _renew_to_renew,
    BlockRelease: _release_to_release,
}
assert set(DOWN_CONVERSIONS) <= set(MESSAGE_CLASSES.values())


# --- per-peer versions ----------------------------------------------------------------------


@attrs.frozen(slots=True)
class PeerRange:
    """What one peer said it reads, and the advertisement's sequence that said it."""

    oldest: int
    newest: int
    sequence: int


class PeerVersions:
    """Per peer, the versions it reads, from its signed capability advertisements (§6.1).

    Sans-IO: feed it every *verified* advertisement (:meth:`learn`); ask :meth:`write_version`
    before writing to a peer. ``own`` is this node's version — its newest, or the version it
    is pinned to. A peer never heard from is written to at the oldest version of ``own``'s
    window (§5.1), which every implementation in that window reads.
    """

    def __init__(self, own: int = PROTOCOL_VERSION) -> None:
        if own not in SUPPORTED_VERSIONS:
            raise LocalProtocolError(
                f"own version {own} is not one this implementation speaks "
                f"({SUPPORTED_VERSIONS[0]}..{SUPPORTED_VERSIONS[-1]})"
            )
        self.own = own
        self._peers: dict[int, PeerRange] = {}

    def learn(self, advertisement: CapabilityAdvertisement) -> bool:
        """Take the versions of a verified advertisement; an older one (by the issuer's
        ``sequence``, §4) changes nothing. Returns whether the table changed."""
        issuer = advertisement.header.issuer
        sequence = advertisement.header.sequence
        known = self._peers.get(issuer)
        if known is not None and known.sequence >= sequence:
            return False
        oldest, newest = advertisement.versions
        self._peers[issuer] = PeerRange(oldest, newest, sequence)
        return known is None or (known.oldest, known.newest) != (oldest, newest)

    def versions_of(self, peer: int) -> tuple[int, int] | None:
        """(oldest, newest) the peer reads, or None if it has not said."""
        known = self._peers.get(peer)
        return None if known is None else (known.oldest, known.newest)

    def write_version(self, peer: int) -> int:
        """The version to write to ``peer``: the newest both read."""
        known = self._peers.get(peer)
        own = self.own
        if known is None:  # every send to a peer not heard from: the short road
            return max(1, own - WINDOW)
        # One peer heard from (every send once its advertisement came): write_version_for
        # of it without the loop; where there is no common version, that says why.
        low, high = max(1, own - WINDOW, known.oldest), min(own, known.newest)
        if low <= high:
            return high
        return self.write_version_for((peer,))

    def write_version_for(self, peers: Iterable[int]) -> int:
        """The version to write one message read by all of ``peers`` (a cell, say)."""
        mine = window(self.own)
        low, high = mine.start, self.own
        unknown = False
        for peer in peers:
            known = self._peers.get(peer)
            if known is None:
                unknown = True
                continue
            low, high = max(low, known.oldest), min(high, known.newest)
        if low > high:
            raise NoCommonVersion(
                f"no version read by all of them: this node writes {mine.start}..{self.own}",
                version=self.own,
            )
        # A peer not heard from may read only the oldest version of the window.
        if unknown:
            if low > mine.start:
                raise NoCommonVersion(
                    "a peer not heard from reads only the oldest version of the window "
                    f"({mine.start}), and another reads only {low}..{high}",
                    version=self.own,
                )
            return mine.start
        return high

    def convert_for(self, message: Message, peer: int) -> Message:
        """``message`` as it is written to ``peer`` (:func:`convert` at :meth:`write_version`)."""
        return convert(message, self.write_version(peer))
