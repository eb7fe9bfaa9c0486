"""The accounting ledger: per-node resource production and consumption as a state-based CRDT.

Theory of operation
-------------------
Accounting need only be *eventually* right (DESIGN.md "Fleet shape"): a cell cut off for 30 days
keeps producing and consuming, and when it reconnects its books must merge into the region's
with nothing lost and nothing counted twice, whatever order, however often, and however stale the
copies that arrive. A state-based CRDT does exactly that (Shapiro et al., "Conflict-free
Replicated Data Types", 2011, §3.2): each ledger is a join-semilattice and :meth:`Ledger.merge`
is its least upper bound, so merging is commutative, associative and idempotent.

The lattice is a PN-counter per resource whose replicas are the nodes: for every
``(node, resource)`` two grow-only counts, *produced* and *consumed*, and merging takes the
larger of each. That is correct because **only the node itself ever counts its own entries**
(:meth:`Ledger.record` refuses any other node) — so of two copies of an entry, the larger one has
seen every increment the smaller one has. The net of a resource is produced minus consumed.

Wire form (:meth:`Ledger.to_cbor`), deterministic CBOR (RFC 8949 §4.2.1), in the CDDL
(RFC 8610) of :data:`CDDL`: ``{1: {* node => {+ resource => [produced, consumed]}}}``. An entry that is ``[0, 0]`` is never written (absence is its one encoding) and a node without
entries is left out, so one ledger state has exactly one encoding. The reader
(:meth:`Ledger.from_cbor`) faces hostile bytes: size, depth and entry counts are bounded
(:class:`LedgerLimits`) before anything is built, and every refusal is a :class:`LedgerError`
(code ``ledger-invalid``) or a CBOR :class:`~..errors.DecodeError`, each naming where.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

from .. import cbor
from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = ["CDDL", "Counts", "Ledger", "LedgerError", "LedgerLimits"]

UINT64_MAX: Final = (1 << 64) - 1
MAX_RESOURCE_BYTES: Final = 256

#: The wire form in CDDL (RFC 8610); the tests validate encodings against it.
CDDL: Final = """
ledger = {1: {* node => resources}}
node = uint
resources = {+ resource => counts}
resource = tstr .size (1..256)
counts = [produced: uint, consumed: uint]   ; never [0, 0]: an empty entry is left out
"""


class LedgerError(RemoteProtocolError):
    """Ledger bytes that are not a ledger state this reader accepts."""

    code = "ledger-invalid"


@attrs.frozen(slots=True)
class LedgerLimits:
    """What :meth:`Ledger.from_cbor` accepts (a region of 5,000 nodes × 20 resources fits)."""

    max_bytes: int = 16 << 20
    max_nodes: int = 65_536
    max_resources_per_node: int = 256
    max_entries: int = 250_000


DEFAULT_LIMITS: Final = LedgerLimits()


@attrs.frozen(slots=True)
class Counts:
    """One node's grow-only totals for one resource, in the resource's unit."""

    produced: int = 0
    consumed: int = 0

    @property
    def net(self) -> int:
        return self.produced - self.consumed

    def join(self, other: Counts) -> Counts:
        """The least upper bound: each count's larger value."""
        return Counts(max(self.produced, other.produced), max(self.consumed, other.consumed))

    def __le__(self, other: object) -> bool:  # the lattice order, not attrs' tuple order
        if not isinstance(other, Counts):
            return NotImplemented
        return self.produced <= other.produced and self.consumed <= other.consumed


class Ledger:
    """A replica of the accounting ledger (module docstring). Mutable; not thread-safe."""

    __slots__ = ("_entries", "owner")

    def __init__(self, owner: int | None = None) -> None:
        #: The node whose own production and consumption this replica may record (``None``: a
        #: pure aggregator, such as a region's copy, that only merges).
        self.owner = owner
        self._entries: dict[int, dict[str, Counts]] = {}

    # --- the local node's updates ---

    def record(self, node: int, resource: str, *, produced: int = 0, consumed: int = 0) -> None:
        """Count ``produced`` and ``consumed`` (in the resource's unit) for this replica's node."""
        if node != self.owner:
            # Another replica counting this node's entry could make two copies that each miss
            # the other's increments; max() would then lose one. Only the node counts itself.
            raise LocalProtocolError(f"ledger of node {self.owner} cannot record for node {node}")
        _check_resource(resource, LocalProtocolError)
        if produced < 0 or consumed < 0:
            raise LocalProtocolError("counts only grow: record production and consumption as >= 0")
        if produced == 0 and consumed == 0:
            return
        resources = self._entries.setdefault(node, {})
        old = resources.get(resource, Counts())
        new = Counts(old.produced + produced, old.consumed + consumed)
        if new.produced > UINT64_MAX or new.consumed > UINT64_MAX:
            raise LocalProtocolError(f"{resource}: a count would pass 2^64-1")
        resources[resource] = new

    # --- the lattice ---

    def merge(self, other: Ledger) -> bool:
        """Join ``other`` into this replica; return whether anything changed."""
        changed = False
        for node, theirs in other._entries.items():
            mine = self._entries.setdefault(node, {})
            for resource, counts in theirs.items():
                old = mine.get(resource)
                new = counts if old is None else old.join(counts)
                if new != old:
                    mine[resource] = new
                    changed = True
        return changed

    def delta(self, known: Ledger) -> Ledger:
        """The entries of this replica that ``known`` has not seen (a join decomposition).

        Merging the delta into any replica that has seen at least ``known`` gives what merging
        this whole replica would: so a node sends only what a peer's last acknowledged state
        lacks, and a cell back from a long partition sends its 30 days, not the fleet's books.
        """
        out = Ledger()
        for node, resource, counts in self.entries():
            if not counts <= known.counts(node, resource):
                out._entries.setdefault(node, {})[resource] = counts
        return out

    def __le__(self, other: Ledger) -> bool:
        """Whether ``other`` has seen everything this replica has (the lattice order)."""
        return all(
            counts <= other._entries.get(node, {}).get(resource, Counts())
            for node, resource, counts in self.entries()
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ledger):
            return NotImplemented
        return self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self, owner: int | None = None) -> Ledger:
        clone = Ledger(owner)
        clone._entries = {node: dict(resources) for node, resources in self._entries.items()}
        return clone

    # --- reading the books ---

    def entries(self) -> Iterator[tuple[int, str, Counts]]:
        for node, resources in self._entries.items():
            for resource, counts in resources.items():
                yield node, resource, counts

    def counts(self, node: int, resource: str) -> Counts:
        return self._entries.get(node, {}).get(resource, Counts())

    def totals(self, nodes: Mapping[int, object] | None = None) -> dict[str, Counts]:
        """Fleet (or, given ``nodes``, those nodes') totals per resource."""
        out: dict[str, Counts] = {}
        for node, resource, counts in self.entries():
            if nodes is None or node in nodes:
                old = out.get(resource, Counts())
                out[resource] = Counts(
                    old.produced + counts.produced, old.consumed + counts.consumed
                )
        return out

    def __len__(self) -> int:
        return sum(len(resources) for resources in self._entries.values())

    def __repr__(self) -> str:
        return f"Ledger(owner={self.owner}, entries={len(self)})"

    # --- wire form ---

    def to_cbor(self) -> bytes:
        """The deterministic encoding (module docstring): one state, one byte string."""
        body = {
            node: {resource: [c.produced, c.consumed] for resource, c in resources.items()}
            for node, resources in self._entries.items()
            if resources
        }
        return cbor.encode({1: body})

    @classmethod
    def from_cbor(
        cls, data: bytes, limits: LedgerLimits = DEFAULT_LIMITS, owner: int | None = None
    ) -> Ledger:
        """Read a ledger state from untrusted bytes; raise :class:`LedgerError` or a CBOR error."""
        if len(data) > limits.max_bytes:
            raise LedgerError(f"{len(data)} bytes of ledger (limit {limits.max_bytes})")
        decoded = cbor.decode(
            data,
            cbor.Limits(
                max_size=limits.max_bytes,
                max_depth=4,
                max_container_items=max(limits.max_nodes, limits.max_resources_per_node, 2),
                max_total_items=4 * limits.max_entries + 2 * limits.max_nodes + 3,
                max_string_length=MAX_RESOURCE_BYTES,
                allowed_tags=frozenset(),
            ),
        )
        if not isinstance(decoded, dict) or set(decoded) != {1}:
            raise LedgerError("a ledger is the map {1: entries}")
        body = decoded[1]
        if not isinstance(body, dict):
            raise LedgerError("entries: must be a map of node => resources")
        if len(body) > limits.max_nodes:
            raise LedgerError(f"entries: {len(body)} nodes (limit {limits.max_nodes})")
        ledger = cls(owner)
        total = 0
        for node, resources in body.items():
            path = f"entries[{node!r}]"
            if not _is_uint(node):
                raise LedgerError(f"{path}: a node id is an unsigned integer")
            if not isinstance(resources, dict) or not resources:
                raise LedgerError(f"{path}: must be a non-empty map of resource => counts")
            if len(resources) > limits.max_resources_per_node:
                raise LedgerError(
                    f"{path}: {len(resources)} resources (limit {limits.max_resources_per_node})"
                )
            total += len(resources)
            if total > limits.max_entries:
                raise LedgerError(f"more than {limits.max_entries} entries")
            ledger._entries[node] = {
                _check_resource(resource, LedgerError, path): _counts(
                    value, f"{path}[{resource!r}]"
                )
                for resource, value in resources.items()
            }
        return ledger


def _is_uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= UINT64_MAX


def _check_resource(resource: Any, error: type[Exception], path: str = "resource") -> str:
    if not isinstance(resource, str) or not 1 <= len(resource.encode()) <= MAX_RESOURCE_BYTES:
        raise error(f"{path}: a resource name is text of 1..{MAX_RESOURCE_BYTES} bytes")
    return resource


def _counts(value: Any, path: str) -> Counts:
    if not isinstance(value, list) or len(value) != 2 or not all(_is_uint(v) for v in value):
        raise LedgerError(f"{path}: counts are [produced, consumed], unsigned integers")
    if value == [0, 0]:
        raise LedgerError(f"{path}: an empty entry is written by leaving it out")
    return Counts(value[0], value[1])
