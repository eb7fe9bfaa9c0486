"""The ingress: runs of received bundles held durably before the node's agent has read them.

Theory of operation
-------------------
Custody first, the store-and-forward way: a contact window is the scarce resource, so a
node's accepted sessions write each run of received bundles to the ingress in one insert and
acknowledge it after that commit; the node adopts the runs into its agent (parse, dedupe,
route, journal) afterwards (see :mod:`fleetwire.runtime.node.adopt`). Both stores keep an
ingress with the same interface: :meth:`ingress_put` (durable on return, for the SQLite
store), :meth:`ingress_runs` (oldest first, paged by ``seq``) and :meth:`ingress_delete`.

A run is stored as its bundles end to end plus their lengths (:func:`pack_lengths`), so one
row holds a run of any size without a row per bundle.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence

import attrs

__all__ = ["IngressRun", "pack_lengths", "split_run"]


@attrs.frozen(slots=True)
class IngressRun:
    """One run of received bundles in the ingress: its row (``seq``, arrival order), the
    neighbour it came from (node number; ``None``: not known) and the bundles, in order."""

    seq: int
    received_from: int | None
    bundles: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(map(len, self.bundles))


def pack_lengths(bundles: Sequence[bytes]) -> bytes:
    """Each bundle's length as a 4-byte little-endian unsigned integer (the row's ``lengths``)."""
    lengths = array.array("I", map(len, bundles))
    if lengths.itemsize != 4:  # pragma: no cover - every platform fleetwire runs on
        raise RuntimeError("array 'I' is not 4 bytes here")
    if sys.byteorder != "little":  # pragma: no cover
        lengths.byteswap()
    return lengths.tobytes()


def split_run(lengths: bytes, data: bytes) -> tuple[bytes, ...]:
    """The bundles of a stored run; ``ValueError`` if the lengths do not add up to ``data``
    (a damaged row: the caller logs it and drops it, it cannot be acknowledged twice)."""
    if len(lengths) % 4:
        raise ValueError(f"{len(lengths)} bytes of lengths (a multiple of 4 expected)")
    sizes = array.array("I")
    sizes.frombytes(lengths)
    if sys.byteorder != "little":  # pragma: no cover
        sizes.byteswap()
    if sum(sizes) != len(data):
        raise ValueError(f"the lengths add up to {sum(sizes)} bytes, the run has {len(data)}")
    view = memoryview(data)
    bundles: list[bytes] = []
    start = 0
    for size in sizes:
        bundles.append(bytes(view[start : start + size]))
        start += size
    return tuple(bundles)
