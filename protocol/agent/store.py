"""What a bundle agent's store holds, and what it answers: records, quotas, put results.

Theory of operation
-------------------
A bundle node keeps every bundle it has accepted until it is delivered, forwarded, or its
lifetime runs out (RFC 9171 §4.3.1). The store does not parse bundles: the caller hands it the
bytes plus the metadata it already decoded (:class:`StoredBundle`). ``put`` answers
:class:`Accepted` (durable), :class:`Duplicate` (same bundle id, or same content id for the same
destination: nothing changed) or :class:`Refused` (a quota, :func:`check_quota`, would be
crossed: nothing stored, the caller must not acknowledge).

These value classes are shared by every store: the agent's synchronous interface
(:mod:`.agent_store`) and the runtime's asynchronous ones. Times are DTN times (ms since
2000-01-01T00:00:00Z, RFC 9171 §4.2.6), always passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from ..errors import FleetwireError

__all__ = [
    "Accepted",
    "MAX_DTN_TIME",
    "DuplicateOf",
    "Duplicate",
    "NotABundleStore",
    "PutResult",
    "Quota",
    "RefusalReason",
    "Refused",
    "SourceShares",
    "check_quota",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoredBundle",
]


#: Latest time a store can hold (SQLite integers are signed 64-bit). 2**63 ms is 292 million years:
#: a later expiry (a hostile creation time + lifetime can reach 2**65) means "never" and is clamped
#: here, so one absurd bundle cannot fail the batch it is committed in.
MAX_DTN_TIME = 2**63 - 1
_MIN_TIME = -MAX_DTN_TIME - 1


def _clamp_time(value: int) -> int:
    if type(value) is int:  # anything else is left for the type check to refuse
        return max(-MAX_DTN_TIME - 1, min(value, MAX_DTN_TIME))
    return value


def _text(name: str, value: object) -> None:
    if type(value) is not str:
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    if not value.isascii():  # EIDs are ASCII in practice: only other text pays for this check
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate cannot be written as SQLite text
            raise ValueError(f"{name} is not valid Unicode text: {exc}") from None


def _id(name: str, value: object) -> None:
    if type(value) is not bytes:
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")


@attrs.frozen(slots=True)
class StoredBundle:
    """One bundle as the store holds it: the encoded bytes plus the metadata the router needs.

    Checked on construction (types, non-empty ids, text SQLite can store, times clamped to
    :data:`MAX_DTN_TIME`), in one function rather than a validator per field: stores build one
    of these for every row they list.
    """

    bundle_id: bytes
    content_id: bytes | None
    source: str
    destination: str
    expires_at: int = attrs.field(converter=_clamp_time)
    received_at: int = attrs.field(converter=_clamp_time)
    data: bytes = attrs.field(repr=False)
    next_hop: str | None = None
    #: The neighbour that handed it over (``ipn:N.0``), ``None`` for bundles made here: the
    #: key of the per-source share of the quota.
    received_from: str | None = None

    def __attrs_post_init__(self) -> None:
        _id("bundle_id", self.bundle_id)
        if self.content_id is not None:
            _id("content_id", self.content_id)
        _text("source", self.source)
        _text("destination", self.destination)
        if self.next_hop is not None:
            _text("next_hop", self.next_hop)
        if self.received_from is not None:
            _text("received_from", self.received_from)
        for name in ("expires_at", "received_at"):
            if type(getattr(self, name)) is not int:
                raise TypeError(f"{name} must be int, not {type(getattr(self, name)).__name__}")
        if type(self.data) is not bytes:
            raise TypeError(f"data must be bytes, not {type(self.data).__name__}")

    @classmethod
    def checked_by_caller(
        cls, bundle_id: bytes, content_id: bytes | None, source: str, destination: str,
        expires_at: int, received_at: int, data: bytes, next_hop: str | None = None,
        received_from: str | None = None,
    ) -> StoredBundle:  # fmt: skip
        """A record whose fields the caller built from a decoded bundle (bytes keys, EID
        text, int times): the checks of :meth:`__attrs_post_init__` are only re-run for
        values of another type; times are clamped as always. The agent builds one of these
        for every bundle on every hop."""
        if (
            type(bundle_id) is not bytes or not bundle_id or type(data) is not bytes
            or type(expires_at) is not int or type(received_at) is not int
            or (content_id is not None and (type(content_id) is not bytes or not content_id))
            or type(source) is not str or not source.isascii()
            or type(destination) is not str or not destination.isascii()
            or (next_hop is not None and (type(next_hop) is not str or not next_hop.isascii()))
            or (received_from is not None
                and (type(received_from) is not str or not received_from.isascii()))
        ):  # fmt: skip
            return cls(bundle_id, content_id, source, destination, expires_at, received_at,
                       data, next_hop, received_from)  # fmt: skip
        # The slots filled by one C call (_FILL) or, without the accelerator, by their own
        # descriptors fetched once (_SLOT_SETTERS): object.__setattr__ looks each name up
        # again (the whole record: 1.7 against 2.1-2.2 µs).
        record = object.__new__(cls)
        # Clamped as _clamp_time clamps; a time in range (every real one) costs one compare.
        if not _MIN_TIME <= expires_at <= MAX_DTN_TIME:
            expires_at = _MIN_TIME if expires_at < _MIN_TIME else MAX_DTN_TIME
        if not _MIN_TIME <= received_at <= MAX_DTN_TIME:
            received_at = _MIN_TIME if received_at < _MIN_TIME else MAX_DTN_TIME
        if _FILL is not None and cls is StoredBundle:  # every slot in one C call
            _FILL(record, bundle_id, content_id, source, destination, expires_at, received_at,
                  data, next_hop, received_from)  # fmt: skip
            return record
        (set_bundle_id, set_content_id, set_source, set_destination, set_expires_at,
         set_received_at, set_data, set_next_hop, set_received_from) = _SLOT_SETTERS  # fmt: skip
        set_bundle_id(record, bundle_id)
        set_content_id(record, content_id)
        set_source(record, source)
        set_destination(record, destination)
        set_expires_at(record, expires_at)
        set_received_at(record, received_at)
        set_data(record, data)
        set_next_hop(record, next_hop)
        set_received_from(record, received_from)
        return record

    @classmethod
    def of_decoded(
        cls, bundle_id: bytes, content_id: bytes | None, source: str, destination: str,
        expires_at: int, received_at: int, data: bytes, next_hop: str | None = None,
        received_from: str | None = None,
    ) -> StoredBundle:  # fmt: skip
        """:meth:`checked_by_caller` for a caller that made ``bundle_id`` and ``content_id``
        itself, non-empty bytes (or ``None``), and ``next_hop`` ASCII text or ``None``
        (:func:`~.bundling.accept_record`, on every hop): only the other fields are checked
        (EID text, times, data), and a record with any of them unusual is built by
        :meth:`checked_by_caller`, so the result is the same (0.5 us less a record)."""
        if (
            type(data) is bytes and type(expires_at) is int and type(received_at) is int
            and _MIN_TIME <= expires_at <= MAX_DTN_TIME
            and _MIN_TIME <= received_at <= MAX_DTN_TIME
            and type(source) is str and source.isascii()
            and type(destination) is str and destination.isascii()
            and (received_from is None
                 or (type(received_from) is str and received_from.isascii()))
            and _FILL is not None and cls is StoredBundle
        ):  # fmt: skip
            record = object.__new__(cls)
            _FILL(record, bundle_id, content_id, source, destination, expires_at, received_at,
                  data, next_hop, received_from)  # fmt: skip
            return record
        return cls.checked_by_caller(bundle_id, content_id, source, destination, expires_at,
                                     received_at, data, next_hop, received_from)  # fmt: skip

    @property
    def size(self) -> int:
        """Bytes this bundle counts against the ``max_bytes`` quota."""
        return len(self.data)


#: The slot descriptors' setters of :class:`StoredBundle`, in field order (see
#: ``checked_by_caller``).
_SLOT_SETTERS: tuple[Callable[[StoredBundle, object], None], ...] = tuple(
    StoredBundle.__dict__[field.name].__set__ for field in attrs.fields(StoredBundle)
)


def _slot_filler() -> Callable[..., object] | None:
    """The accelerator's ``SlotInit`` for :class:`StoredBundle`, called as a function (never
    installed as ``__init__``: the checks stay ``checked_by_caller``'s): it stores its
    arguments into a fresh record's slots, in field order — the setters of
    :data:`_SLOT_SETTERS` in one call. ``None`` without the accelerator."""
    try:
        from .. import _speedups  # type: ignore[attr-defined]
    except ImportError:  # built without a C compiler
        return None
    names = tuple(field.name for field in attrs.fields(StoredBundle))
    offsets = tuple(_speedups.slot_offset(StoredBundle.__dict__[name]) for name in names)
    required = object()  # every argument is passed
    filler: Callable[..., object] = _speedups.SlotInit(
        StoredBundle, names, offsets, tuple(required for _ in names), required,
        StoredBundle.__init__,
    )  # fmt: skip
    return filler


#: See :func:`_slot_filler`; tests set it to ``None`` to take the setters' road.
_FILL: Callable[..., object] | None = _slot_filler()


def _share(_: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1
    ):
        raise ValueError(f"{attribute.name} must be a fraction in (0, 1], not {value!r}")


@attrs.frozen(slots=True)
class Quota:
    """Upper bounds on what a store holds; ``None`` means unbounded.

    ``source_share`` caps what bundles received from any one neighbour (``received_from``) may
    hold, as a fraction of ``max_bundles`` and of ``max_bytes``: one neighbour cannot fill the
    store and lock the others out. Bundles made here (``received_from`` None) have no share.
    """

    max_bundles: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            [attrs.validators.instance_of(int), attrs.validators.ge(0)]
        ),
    )
    max_bytes: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            [attrs.validators.instance_of(int), attrs.validators.ge(0)]
        ),
    )
    source_share: float | None = attrs.field(default=None, validator=_share)

    def share_of(self, limit: int | None) -> int | None:
        """The per-source part of ``limit`` (``None``: no per-source bound)."""
        if limit is None or self.source_share is None:
            return None
        return int(limit * self.source_share)

    def admits(self, count: int, used: int, source: tuple[int, int] | None = None) -> bool:
        """Whether a store holding ``count`` bundles of ``used`` bytes — ``source`` =
        (bundles, bytes) of them from one neighbour — is within this quota (what
        :func:`check_quota` refuses past, for a whole run at once)."""
        if self.max_bundles is not None and count > self.max_bundles:
            return False
        if self.max_bytes is not None and used > self.max_bytes:
            return False
        if source is None or self.source_share is None:
            return True
        share_bundles, share_bytes = self.share_of(self.max_bundles), self.share_of(self.max_bytes)
        return (share_bundles is None or source[0] <= share_bundles) and (
            share_bytes is None or source[1] <= share_bytes
        )


class DuplicateOf(enum.Enum):
    """Which identity of a held bundle the new one repeats."""

    BUNDLE_ID = "bundle-id"
    CONTENT_ID = "content-id"


class RefusalReason(enum.Enum):
    """Why ``put`` refused a bundle (nothing was stored; the caller must not acknowledge it)."""

    MAX_BUNDLES = "max-bundles"
    MAX_BYTES = "max-bytes"
    SOURCE_SHARE = "source-share"


@attrs.frozen(slots=True)
class Accepted:
    """The bundle is held, durably: the caller may acknowledge it."""

    bundle_id: bytes


@attrs.frozen(slots=True)
class Duplicate:
    """An equal bundle is already held (``existing`` is its bundle id); nothing changed."""

    bundle_id: bytes
    of: DuplicateOf
    existing: bytes


@attrs.frozen(slots=True)
class Refused:
    """The bundle would cross a quota; nothing was stored."""

    bundle_id: bytes
    reason: RefusalReason
    message: str


PutResult = Accepted | Duplicate | Refused


def check_quota(
    quota: Quota,
    count: int,
    used: int,
    bundle: StoredBundle,
    source: tuple[int, int] = (0, 0),
) -> Refused | None:
    """The refusal for adding ``bundle`` to a store holding ``count`` bundles of ``used`` bytes,
    of which ``source`` = (bundles, bytes) came from the same neighbour as ``bundle``."""
    if quota.max_bundles is not None and count + 1 > quota.max_bundles:
        return Refused(
            bundle.bundle_id,
            RefusalReason.MAX_BUNDLES,
            f"store full: holds {count} bundles, quota max_bundles={quota.max_bundles}",
        )
    if quota.max_bytes is not None and used + bundle.size > quota.max_bytes:
        return Refused(
            bundle.bundle_id,
            RefusalReason.MAX_BYTES,
            f"store full: {used} bytes held + {bundle.size} bytes of this bundle "
            f"> quota max_bytes={quota.max_bytes}",
        )
    if bundle.received_from is not None:
        share_bundles = quota.share_of(quota.max_bundles)
        share_bytes = quota.share_of(quota.max_bytes)
        if (share_bundles is not None and source[0] + 1 > share_bundles) or (
            share_bytes is not None and source[1] + bundle.size > share_bytes
        ):
            return Refused(
                bundle.bundle_id,
                RefusalReason.SOURCE_SHARE,
                f"store share of {bundle.received_from} used up: it holds {source[0]} bundles, "
                f"{source[1]} bytes here (source_share={quota.source_share} of the quota)",
            )
    return None


class SourceShares:
    """(bundles, bytes) held per neighbour, for the per-source share of a :class:`Quota`."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[str, tuple[int, int]] = {}

    def of(self, source: str | None) -> tuple[int, int]:
        return (0, 0) if source is None else self.held.get(source, (0, 0))

    def add(self, source: str | None, bundles: int, size: int) -> None:
        if source is None:
            return
        count, used = self.held.get(source, (0, 0))
        count, used = count + bundles, used + size
        if count <= 0:
            self.held.pop(source, None)
        else:
            self.held[source] = (count, used)


class StoreError(FleetwireError):
    """The store could not do what was asked (I/O failure, closed, unusable file)."""

    code = "store"


class StoreClosed(StoreError):
    """The store was used after ``close``."""

    code = "store-closed"


class NotABundleStore(StoreError):
    """The file exists but is not a fleetwire bundle store (or is one from a newer version)."""

    code = "store-not-ours"


class StoreCorrupt(StoreError):
    """The file is a bundle store but fails its integrity check."""

    code = "store-corrupt"
