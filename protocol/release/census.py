"""Version discipline: how many major versions of a lineage run at once in a cell and a region.

Seeds (response b, "The Version Compatibility Matrix"): enforce at most three concurrent major
versions, or the compatibility matrix to validate grows without bound. The cap here is per
lineage — lineages are deliberately different software (genetic diversity), each with its own
major numbers — and per cell and per region, the two scopes whose nodes talk to each other
every day. :meth:`VersionCensus.check_rollout` refuses a rollout that would take any cell or
region it touches past :data:`MAX_MAJOR_VERSIONS`, with a reason that names the place and the
versions, before anything is installed.

The census is built from what nodes report (their capability advertisements name their
lineage and installed releases): pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .errors import TooManyMajorVersions

__all__ = ["MAX_MAJOR_VERSIONS", "VersionCensus"]

#: Seeds: "a maximum of 3 concurrent software major versions".
MAX_MAJOR_VERSIONS: Final = 3


class VersionCensus:
    """Which major versions of each lineage each node runs, and where the node is."""

    def __init__(self, limit: int = MAX_MAJOR_VERSIONS) -> None:
        self.limit = limit
        self._place: dict[int, tuple[int, int]] = {}  # node -> (region, cell)
        self._installed: dict[int, frozenset[tuple[str, int]]] = {}  # node -> {(lineage, major)}

    def observe(
        self, node: int, region: int, cell: int, installed: Iterable[tuple[str, int]]
    ) -> None:
        """What ``node`` (in ``cell`` of ``region``) reports installed: (lineage, major) pairs."""
        self._place[node] = (region, cell)
        self._installed[node] = frozenset(installed)

    def region_of(self, cell: int) -> int | None:
        for region, known in self._place.values():
            if known == cell:
                return region
        return None

    def majors(
        self, lineage: str, *, cell: int | None = None, region: int | None = None
    ) -> set[int]:
        """Major versions of ``lineage`` installed in ``cell`` or ``region``."""
        out: set[int] = set()
        for node, (node_region, node_cell) in self._place.items():
            if cell is not None and node_cell != cell:
                continue
            if region is not None and node_region != region:
                continue
            out |= {major for name, major in self._installed[node] if name == lineage}
        return out

    def check_rollout(self, lineage: str, major: int, cells: Iterable[int]) -> None:
        """Refuse (:class:`.errors.TooManyMajorVersions`) a rollout of ``lineage`` ``major`` to
        ``cells`` that would make a cell or a region run more than :attr:`limit` majors."""
        regions: set[int] = set()
        for cell in sorted(set(cells)):
            after = self.majors(lineage, cell=cell) | {major}
            if len(after) > self.limit:
                raise TooManyMajorVersions(
                    _reason(lineage, major, f"cell {cell}", after, self.limit)
                )
            region = self.region_of(cell)
            if region is not None:
                regions.add(region)
        for region in sorted(regions):
            after = self.majors(lineage, region=region) | {major}
            if len(after) > self.limit:
                raise TooManyMajorVersions(
                    _reason(lineage, major, f"region {region}", after, self.limit)
                )


def _reason(lineage: str, major: int, where: str, after: set[int], limit: int) -> str:
    running = ", ".join(str(m) for m in sorted(after - {major}))
    return (
        f"rollout of {lineage} {major}.x refused: {where} already runs majors {running}, and "
        f"with {major} it would run {len(after)} (at most {limit}); retire one first"
    )
