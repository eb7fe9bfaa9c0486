"""Protocol version 3: market allocation — bids, asks and the region's awards (spec/v3/market.md).

Types 24–26, written with ``min_version`` 3 at least. Header, encoding and envelope are
version 1's. A region clears each pool once per cycle at a uniform price
(:mod:`fleetwire.protocol.coordination.auction`); an award is a lease on its units.

Older readers (market.md §4, and §5 for the writer's side): a bid for one unit that names the
term it wants (key 11, ``term_ms``) can be written for a version-1 or -2 authority as a lease
claim, and an award of one unit answering a claim as a lease grant
(:func:`.versions.convert`). Release objects (spec/v3/release.md) are not coordination
messages and are not here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs

from .header import Header, MessageType
from .schema import TEXT, UINT, UINT64_MAX, Field, in_range

_AT_LEAST_ONE: Final = in_range(1, UINT64_MAX)


@attrs.frozen(slots=True)
class Bid:
    """A node wants ``quantity`` units of ``pool`` and pays at most ``price`` each (type 24).

    ``term_ms``, optional, is the term the bidder wants if its bid is written as a lease claim
    for an authority that runs no auction (market.md §5); an auction ignores it.
    """

    header: Header
    pool: str
    quantity: int
    price: int
    term_ms: int | None = None
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 3
    TYPE: ClassVar = MessageType.BID
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "pool", TEXT),
        Field(9, "quantity", UINT, check=_AT_LEAST_ONE),
        Field(10, "price", UINT),
        Field(11, "term_ms", UINT, optional=True),
    )


@attrs.frozen(slots=True)
class Ask:
    """A node offers ``quantity`` units of ``pool`` at a reserve ``price`` each (type 25)."""

    header: Header
    pool: str
    quantity: int
    price: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 3
    TYPE: ClassVar = MessageType.ASK
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "pool", TEXT),
        Field(9, "quantity", UINT, check=_AT_LEAST_ONE),
        Field(10, "price", UINT),
    )


@attrs.frozen(slots=True)
class Award:
    """The clearing's result for one bidder: a lease on ``quantity`` units until ``expires_at``
    at the uniform ``price`` (type 26)."""

    header: Header
    pool: str
    bidder: int
    quantity: int
    price: int
    fencing_token: int
    expires_at: int
    extensions: tuple[tuple[int, Any], ...] = ()

    SINCE: ClassVar[int] = 3
    TYPE: ClassVar = MessageType.AWARD
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(8, "pool", TEXT),
        Field(9, "bidder", UINT),
        Field(10, "quantity", UINT, check=_AT_LEAST_ONE),
        Field(11, "price", UINT),
        Field(12, "fencing_token", UINT),
        Field(13, "expires_at", UINT),
    )


V3_MESSAGE_CLASSES: Final = {cls.TYPE: cls for cls in (Bid, Ask, Award)}
