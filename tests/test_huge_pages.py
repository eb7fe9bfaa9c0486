"""Huge-page arenas (runtime/sim/huge_pages.py, protocol/_arenas.c).

The allocator is a setting of the whole process, so every test runs in a process of its own
(real processes, the real allocator): objects land in the regions it mapped, arenas pymalloc
gives back are reused rather than mapped again, the kernel took the huge-page advice for every
region, a fleet gives the same results with and without it, and a fleet split across processes
has its workers follow the caller.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fleetwire.runtime.sim import huge_pages

pytestmark = pytest.mark.skipif(
    getattr(huge_pages._speedups, "huge_arenas_install", None) is None
    or not sys.platform.startswith("linux"),
    reason="needs the C accelerator on Linux",
)


def run(tmp_path: Path, body: str) -> dict[str, object]:
    """Run ``body`` as a script of its own; it prints one JSON object last."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_objects_live_in_the_ranges_and_what_is_freed_is_reused(tmp_path: Path) -> None:
    got = run(tmp_path, """
        import json
        from fleetwire.protocol import _speedups
        from fleetwire.runtime.sim.huge_pages import huge_pages_in_use, use_huge_pages

        before = huge_pages_in_use()
        installed = use_huge_pages(8)
        again = use_huge_pages(16)  # once per process: the first size stands
        (arena_start, arena_end), (block_start, block_end) = _speedups.huge_arenas_ranges()

        def share(objects, start, end):
            return sum(start <= id(o) < end for o in objects) / len(objects)

        # Small objects come from the arenas (a tuple of two ints is 56 bytes), middle-sized
        # ones from the blocks (600 bytes of payload), and a list that outgrows pymalloc is
        # moved to the blocks too.
        small = [(i, i + 1) for i in range(300_000)]
        middle = [bytes([i % 251]) * 600 for i in range(20_000)]
        grown = []
        for i in range(1000):
            grown.append(i)
        lists = [[i] * (i % 400) for i in range(5000)]
        shares = [share(small[-1000:], arena_start, arena_end),
                  share(middle, block_start, block_end)]
        made = _speedups.huge_arenas_stats()
        total = sum(a + b for a, b in small) + sum(b[0] for b in middle) + sum(map(sum, lists))
        del small, middle, lists  # given back: kept for reuse, not unmapped
        freed = _speedups.huge_arenas_stats()
        small = [(i, -i) for i in range(300_000)]
        middle = [bytes(600) for i in range(20_000)]
        again_made = _speedups.huge_arenas_stats()
        print(json.dumps(dict(
            before=before, installed=installed, again=again, shares=shares, made=made,
            freed=freed, again_made=again_made, total=total,
            remade=sum(a + b for a, b in small) + sum(map(sum, middle)),
            grown=sum(grown), in_use=huge_pages_in_use(),
        )))
    """)
    assert got["before"] is False and got["installed"] is True and got["again"] is True
    assert got["in_use"] is True
    assert got["shares"] == [1.0, 1.0]
    _, arena_bytes, block_bytes, arenas_out, arenas_kept, blocks_out, blocks_kept, advised = got[
        "made"
    ]
    assert arena_bytes % (8 << 20) == 0 and block_bytes % (8 << 20) == 0  # the first size stood
    assert arenas_out >= 16 and blocks_out >= 20_000 + 5000 * 0.5  # 300,000 tuples: ~17 MiB
    _, _, _, arenas_out_freed, arenas_kept_freed, blocks_out_freed, blocks_kept_freed, _ = got[
        "freed"
    ]
    assert arenas_kept_freed > arenas_kept and arenas_out_freed < arenas_out  # given back, kept
    assert blocks_kept_freed >= blocks_kept + 20_000 and blocks_out_freed < blocks_out
    # Made again: from what was kept, with nothing more made writable.
    _, arena_bytes_after, block_bytes_after, _, arenas_kept_after, _, blocks_kept_after, _ = got[
        "again_made"
    ]
    assert (arena_bytes_after, block_bytes_after) == (arena_bytes, block_bytes)
    assert arenas_kept_after < arenas_kept_freed and blocks_kept_after <= blocks_kept_freed - 20_000
    # Every region made writable took MADV_HUGEPAGE (the kernel said yes to the advice).
    assert advised == arena_bytes + block_bytes
    # The memory holds what was put in it.
    expected = 300_000 * 300_000 + sum(i % 251 for i in range(20_000))
    expected += sum(i * (i % 400) for i in range(5000))
    assert got["total"] == expected and got["remade"] == 0 and got["grown"] == 999 * 1000 // 2


FLEET = """
    import json, sys
    from fleetwire.runtime.sim import LeaseSetup, add_lease_work, add_traffic, run_fleet
    from fleetwire.runtime.sim.huge_pages import huge_pages_in_use, use_huge_pages

    T0 = 820_000_000_000
    UNTIL = T0 + 3_600_000

    def scenario(fleet):
        add_traffic(fleet, per_node_per_day=400, until=UNTIL)
        add_lease_work(fleet, until=UNTIL)
        return lambda: huge_pages_in_use()

    if __name__ == "__main__":
        huge = {huge}
        if huge:
            assert use_huge_pages()
        run = run_fleet({workers}, UNTIL + 3_600_000, scenario, nodes=45, seed=3, start=T0,
                        leases=LeaseSetup())
        verdict = run.check_leases()
        print(json.dumps(dict(
            delivered=run.stats.delivered, messages=run.stats.messages,
            handled=run.stats.handled, grants=verdict.grants, uses=verdict.uses,
            violations=verdict.violations, parts=list(run.results),
        )))
"""


def test_a_fleet_runs_the_same_with_and_without(tmp_path: Path) -> None:
    plain = run(tmp_path, FLEET.format(huge=False, workers=1))
    huge = run(tmp_path, FLEET.format(huge=True, workers=1))
    assert plain["parts"] == [False] and huge["parts"] == [True]
    for key in ("delivered", "messages", "handled", "grants", "uses", "violations"):
        assert huge[key] == plain[key], key
    assert plain["delivered"] == plain["messages"] and plain["grants"] > 0


def test_workers_follow_the_caller(tmp_path: Path) -> None:
    assert run(tmp_path, FLEET.format(huge=True, workers=2))["parts"] == [True, True]
    assert run(tmp_path, FLEET.format(huge=False, workers=2))["parts"] == [False, False]
