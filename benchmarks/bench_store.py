"""Bundle store benchmark: durable acceptance of 1 KB bundles, against raw SQLite in the same run.

What it measures, all with WAL and ``synchronous=FULL`` (every commit fsync'd) on one disk:

* raw limits, measured here with plain ``sqlite3`` and no Trio (same pragmas as the store):
  - single-row transactions per second (what a store without group commit could do);
  - rows per second with ``executemany`` in transactions of 100 rows;
  each on the store's own table (same indexes, random 32-byte content ids) and on a minimal
  ``(id INTEGER PRIMARY KEY, data BLOB)`` table, the disk's ceiling for 1 KB rows;
* the store: ``open_sqlite_store`` with N concurrent producers, each awaiting ``put`` (so every
  counted bundle was durable before its producer moved on), as accepted bundles per second.

Run: ``python benchmarks/bench_store.py [--seconds 2] [--rounds 3] [--producers 1,16,256,1024]
[--max-batch N] [--dir PATH]`` (``--dir`` picks the disk; the default is the system temporary
directory).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import tempfile
import time

import trio
from fleetwire.runtime.store.memory_store import MemoryBundleStore
from fleetwire.runtime.store.sqlite_store import (
    DEFAULT_MAX_BATCH,
    DEFAULT_WAL_LIMIT,
    SCHEMA,
    TUNING,
    open_sqlite_store,
    wal_pragmas,
)
from fleetwire.runtime.store.store import Accepted, BundleStore, StoredBundle

PAYLOAD = os.urandom(1024)
GOAL = 20_000


def fresh(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


def raw_connection(path: str, minimal: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    # synchronous=FULL and the store's cache and checkpoint settings
    for pragma in (*TUNING, *wal_pragmas(DEFAULT_WAL_LIMIT)):
        conn.execute(pragma)
    if minimal:
        conn.execute("CREATE TABLE bundles (id INTEGER PRIMARY KEY, data BLOB)")
    else:
        conn.executescript(SCHEMA)
    return conn


def raw_row(minimal: bool, n: int) -> tuple[object, ...]:
    if minimal:
        return (None, PAYLOAD)
    bid = f"ipn:1.1/{n}".encode()
    cid = hashlib.sha256(bid).digest()
    return (None, bid, cid, "ipn:1.1", "ipn:2.1", None, 10**12, 0, len(PAYLOAD), PAYLOAD, None)


def raw_rate(directory: str, seconds: float, batch: int, minimal: bool) -> float:
    """Rows/s committed by plain sqlite3 in fsync'd transactions of ``batch`` rows."""
    conn = raw_connection(fresh(directory, "raw.db"), minimal)
    insert = f"INSERT INTO bundles VALUES ({', '.join('?' * len(raw_row(minimal, 0)))})"
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        rows = [raw_row(minimal, n + i) for i in range(batch)]
        conn.execute("BEGIN")
        if batch == 1:
            conn.execute(insert, rows[0])
        else:
            conn.executemany(insert, rows)
        conn.execute("COMMIT")
        n += batch
    conn.close()
    return n / elapsed


def make_bundles(producers: int, per_producer: int) -> list[list[StoredBundle]]:
    """Bundles as a receiving node would store them, built before the clock starts."""
    pools = []
    for k in range(producers):
        pool = []
        for i in range(per_producer):
            bid = f"ipn:{k}.1/{i}".encode()  # (source, sequence): how BPv7 ids grow
            cid = hashlib.sha256(bid).digest()  # content ids are hashes: random keys
            pool.append(StoredBundle(bid, cid, f"ipn:{k}.1", "ipn:2.1", 10**12, 0, PAYLOAD))
        pools.append(pool)
    return pools


async def store_rate(
    directory: str, seconds: float, pools: list[list[StoredBundle]], max_batch: int
) -> tuple[float, int, int]:
    """Accepted bundles/s with one task per pool awaiting ``put``; also batches and total."""
    async with open_sqlite_store(fresh(directory, "store.db"), max_batch=max_batch) as store:
        rate, accepted = await put_rate(store, seconds, pools)
        return rate, store.batches_committed, accepted


async def memory_rate(seconds: float, pools: list[list[StoredBundle]]) -> float:
    """The same load on the in-memory store: what Trio and the producers cost without a disk."""
    async with MemoryBundleStore() as store:
        rate, _ = await put_rate(store, seconds, pools)
        return rate


async def put_rate(
    store: BundleStore, seconds: float, pools: list[list[StoredBundle]]
) -> tuple[float, int]:
    """One producer task per pool, each awaiting ``put`` in turn: accepted/s and the count."""
    accepted = 0

    async def producer(pool: list[StoredBundle]) -> None:
        nonlocal accepted
        for bundle in pool:
            if isinstance(await store.put(bundle), Accepted):
                accepted += 1

    start = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for pool in pools:
                nursery.start_soon(producer, pool)
    elapsed = time.perf_counter() - start
    held = await store.count()
    assert held >= accepted, (held, accepted)  # cancelled puts may have committed too
    return accepted / elapsed, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    parser.add_argument("--producers", default="1,16,256,1024")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-store-", dir=args.dir)
    try:
        producers = [int(p) for p in args.producers.split(",")]
        run(directory, args.seconds, args.rounds, producers, args.max_batch)
    finally:
        shutil.rmtree(directory)


def run(
    directory: str, seconds: float, rounds: int, producer_counts: list[int], max_batch: int
) -> None:
    # Raw limits and store runs are interleaved round by round and each figure is the median of
    # its rounds, so a neighbour's burst of disk or CPU load hits both sides of a ratio alike.
    raw_keys = [(False, 1), (False, 100), (True, 1), (True, 100)]
    raw_runs: dict[tuple[bool, int], list[float]] = {k: [] for k in raw_keys}
    store_runs: dict[int, list[tuple[float, float]]] = {p: [] for p in producer_counts}
    memory_runs: list[float] = []
    pools = {p: make_bundles(p, int(50_000 * seconds) // p + 1) for p in producer_counts}
    for _ in range(rounds):
        for minimal, batch in raw_keys:
            raw_runs[minimal, batch].append(raw_rate(directory, seconds, batch, minimal))
        for p in producer_counts:
            rate, batches, accepted = trio.run(store_rate, directory, seconds, pools[p], max_batch)
            store_runs[p].append((rate, accepted / max(batches, 1)))
        memory_runs.append(trio.run(memory_rate, seconds, pools[producer_counts[-1]]))
    raw = {k: statistics.median(v) for k, v in raw_runs.items()}

    print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=FULL, 1 KB bundles; "
          f"median of {rounds} interleaved rounds of {seconds:g} s")  # fmt: skip
    for minimal, label in ((False, "store schema"), (True, "minimal table")):
        print(f"raw sqlite3, {label:13}: {raw[minimal, 1]:9,.0f} single-row tx/s"
              f"   {raw[minimal, 100]:9,.0f} rows/s in executemany batches of 100")  # fmt: skip
    print()
    print(f"group commit, open_sqlite_store(max_batch={max_batch}): accepted (durable) bundles/s")
    print(f"{'producers':>9} {'bundles/s':>10} {'rows/batch':>10} "
          f"{'x single-tx':>11} {'x batch-100':>11} {'x minimal-100':>13}")  # fmt: skip
    best = 0.0
    for p in producer_counts:
        rate = statistics.median(r for r, _ in store_runs[p])
        per_batch = statistics.median(b for _, b in store_runs[p])
        best = max(best, rate)
        print(f"{p:9} {rate:10,.0f} {per_batch:10.1f} "
              f"{rate / raw[False, 1]:11.2f} {rate / raw[False, 100]:11.2f} "
              f"{rate / raw[True, 100]:13.2f}")  # fmt: skip
    print(f"in-memory store, {producer_counts[-1]} producers (no disk: the Trio-side ceiling): "
          f"{statistics.median(memory_runs):,.0f} bundles/s")  # fmt: skip
    verdict = "met" if best >= GOAL else "NOT met"
    print(f"\ngoal >= {GOAL:,} bundles/s: {verdict} (best median {best:,.0f})")


if __name__ == "__main__":
    main()
