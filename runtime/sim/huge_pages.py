"""A large simulation's heap in transparent huge pages.

Theory of operation
-------------------
A fleet of 10,000 agents is some 450 MiB of Python objects, and each message touches three
or four agents' worth of them at random: in 4 KiB pages nearly every such touch misses the
TLB as well as the cache. :func:`use_huge_pages` puts what the process allocates from then on
in memory marked for transparent huge pages (the accelerator's ``_arenas.c``), so a TLB entry
covers 2 MiB instead of 4 KiB: CPython's small-object allocator takes its arenas from there
(``PyObject_SetArenaAllocator``), and the larger blocks it would leave to the C library's
``malloc`` (a dict's table, a list's items, a bundle's bytes, 513 bytes to 32 MiB) come from
there too (``PyMem_SetAllocator``, the MEM and OBJ domains; anything allocated before, and
anything larger, stays with the allocator that was there).

It is a setting of the *process*, for a program whose heap is one large working set: the
fleet benchmark and the simulator's command-line runs call it at their start, before the
fleet is built (what was allocated earlier stays where it is), and a fleet split across
processes (:mod:`.parallel`) has each worker do the same when the caller did. Memory given
back is kept for reuse rather than returned to the system (unmapping a piece would split its
huge page), so it is not for a long-lived process whose heap shrinks — nor for a library to
call on its caller's behalf.

Measured (``python benchmarks/bench_sim.py --sizes 10000 --hours 1 --roles``, one process,
four runs with and four without, interleaved): everything beside the signatures cost
0.86-0.96x the Ed25519 bound with huge pages, 0.95-1.00x without; the CPU ratio 0.48-0.51
against 0.47-0.48. Where the system has no huge pages (``madvise`` refused, THP ``never``)
the memory is ordinary and nothing else changes; without the accelerator, or off Linux,
:func:`use_huge_pages` answers ``False`` and changes nothing.
"""

from __future__ import annotations

try:
    from fleetwire.protocol import _speedups  # type: ignore[attr-defined]
except ImportError:  # no C compiler at install
    _speedups = None

__all__ = ["REGION_MIB", "huge_pages_in_use", "use_huge_pages"]

#: MiB made writable at a time (32 huge pages; the address space is reserved at once).
REGION_MIB = 64


def use_huge_pages(region_mib: int = REGION_MIB) -> bool:
    """From now on, put what this process allocates in huge-page memory (module
    docstring); ``True`` if in use (already, or now), ``False`` if this system or build
    cannot. Once per process: a later call with another ``region_mib`` changes nothing."""
    install = getattr(_speedups, "huge_arenas_install", None)
    if install is None:
        return False
    return bool(install(region_mib))


def huge_pages_in_use() -> bool:
    """Whether :func:`use_huge_pages` took effect in this process."""
    stats = getattr(_speedups, "huge_arenas_stats", None)
    return stats is not None and bool(stats()[0])
