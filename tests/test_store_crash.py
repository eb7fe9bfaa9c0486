"""Accepted means durable: a child process is SIGKILLed while putting bundles.

The child runs the real SQLite store with several concurrent producers and prints each bundle id
only after ``put`` returned :class:`Accepted` — the moment a node would send XFER_ACK. The parent
kills it mid-stream, then reopens the file: every printed id must be there, and the file must pass
``PRAGMA integrity_check``. (SIGKILL leaves the OS page cache intact, so this exercises the
commit protocol and WAL recovery, not the fsync itself; ``synchronous=FULL`` covers power loss.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
import trio
from fleetwire.runtime.store.sqlite_store import open_sqlite_store

CHILD = r"""
import os, sys, trio
from fleetwire.runtime.store.sqlite_store import open_sqlite_store
from fleetwire.runtime.store.store import Accepted, StoredBundle

async def main(path, run, tidy):
    # tidy: every other bundle is deleted again, and the producers pause often, so the store
    # keeps vacuuming and checkpointing the WAL away while it is killed.
    options = dict(idle_tidy_s=0.002, wal_limit=64 * 1024) if tidy else {}
    async with open_sqlite_store(path, **options) as store:
        async def producer(k):
            for i in range(1_000_000):
                bid = f"ipn:{k}.1/{run}/{i}".encode()
                bundle = StoredBundle(bid, os.urandom(32), f"ipn:{k}.1", "ipn:9.1",
                                      10**12, 0, os.urandom(700))
                if not isinstance(await store.put(bundle), Accepted):
                    continue
                if tidy and i % 2:
                    await store.delete(bid)
                    if i % 16 == 1:
                        await trio.sleep(0.005)
                    continue
                sys.stdout.write(bid.decode() + "\n")
                sys.stdout.flush()
        async with trio.open_nursery() as nursery:
            for k in range(16):
                nursery.start_soon(producer, k)

trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3] == "tidy")
"""


def run_and_kill(path: str, kill_after: int, run: int = 0, tidy: bool = False) -> list[bytes]:
    """Start the child, SIGKILL it once it has printed ``kill_after`` ids; all ids it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, str(run), "tidy" if tidy else "steady"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watchdog = threading.Timer(30, child.kill)  # a hung child fails the test instead of hanging it
    watchdog.start()
    try:
        assert child.stdout is not None
        printed: list[bytes] = []
        while len(printed) < kill_after:
            line = child.stdout.readline()
            if not line:
                _, err = child.communicate()
                pytest.fail(f"child ended early: {err.decode(errors='replace')[-2000:]}")
            printed.append(line)
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate()
    finally:
        watchdog.cancel()
    assert child.returncode == -signal.SIGKILL
    printed.extend(rest.splitlines(keepends=True))
    # A line cut short by the kill was never fully printed, so it promises nothing.
    return [line.rstrip(b"\n") for line in printed if line.endswith(b"\n")]


async def reopen_and_check(path: str, printed: list[bytes]) -> None:
    async with open_sqlite_store(path) as store:
        missing = [i for i in printed if await store.get(i) is None]
        assert missing == [], f"{len(missing)} acknowledged bundles lost, e.g. {missing[:3]}"
        assert await store.count() >= len(printed)
        assert await store.integrity_check() == []


@pytest.mark.parametrize("kill_after", [1, 150, 600])
def test_every_acknowledged_bundle_survives_sigkill(tmp_path: Any, kill_after: int) -> None:
    path = str(tmp_path / "bundles.db")
    printed = run_and_kill(path, kill_after)
    assert len(printed) >= kill_after
    assert os.path.exists(path + "-wal")  # killed before close: recovery has real work to do
    trio.run(reopen_and_check, path, printed)


def test_a_store_survives_repeated_crashes(tmp_path: Any) -> None:
    path = str(tmp_path / "bundles.db")
    acknowledged: list[bytes] = []
    for run in range(2):
        acknowledged += run_and_kill(path, 100, run)
        trio.run(reopen_and_check, path, acknowledged)


@pytest.mark.parametrize("kill_after", [40, 300])
def test_acknowledged_bundles_survive_sigkill_while_the_store_tidies_up(
    tmp_path: Any, kill_after: int
) -> None:
    # Deletes and pauses: killed amid WAL checkpoints (TRUNCATE) and incremental vacuums.
    path = str(tmp_path / "bundles.db")
    acknowledged: list[bytes] = []
    for run in range(2):
        acknowledged += run_and_kill(path, kill_after, run, tidy=True)
        trio.run(reopen_and_check, path, acknowledged)
