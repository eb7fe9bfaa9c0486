"""The SQLite bundle store's file: its schema, its migrations, and how it is opened.

Theory of operation
-------------------
One file per store (see :mod:`.sqlite_store` for the committer that writes it). Opening it
(:func:`_connect`, on a worker thread) takes an exclusive lock (a second process is refused,
not silently sharing it), checks the file is ours (``PRAGMA application_id``) and of a schema
version this code reads (``PRAGMA user_version``), migrates an older one step by step (each
step one transaction: a crash leaves the file at the step before), and on an existing file
runs ``PRAGMA quick_check``. After a crash SQLite has replayed or discarded the WAL by then,
so the file holds exactly the committed transactions.

Durability settings (:data:`TUNING`): WAL with ``synchronous = FULL`` — every commit fsyncs
the log, so a committed bundle survives power loss too — and the WAL bounded near
``wal_limit`` bytes (:func:`wal_pragmas`).
"""

from __future__ import annotations

import sqlite3

from .store import NotABundleStore, SourceShares, StoreCorrupt, StoreError
from .store_eids import EIDS_SCHEMA, EidTable

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_WAL_LIMIT",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TUNING",
    "wal_pragmas",
]

#: ``PRAGMA application_id`` of our files ("FWBS"), so we never adopt someone else's database.
APPLICATION_ID = 0x46574253
#: ``PRAGMA user_version``; bump with a migration when the schema changes.
SCHEMA_VERSION = 5

_REPLAY_SCHEMA = """
CREATE TABLE replay_seen (
    issuer      INTEGER NOT NULL,
    sequence    INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    content_id  BLOB NOT NULL,
    keep_until  INTEGER NOT NULL,
    PRIMARY KEY (issuer, sequence)
) WITHOUT ROWID;
CREATE INDEX replay_seen_by_keep_until ON replay_seen (keep_until);
CREATE TABLE replay_floor (issuer INTEGER PRIMARY KEY, floor INTEGER NOT NULL);
"""
# bundle_id is the key (NOT NULL UNIQUE). The INTEGER PRIMARY KEY is the arrival order the listings
# promise; an explicit alias, because VACUUM may renumber a hidden rowid. EIDs are integer ids of
# the ``eids`` table (:mod:`.store_eids`), NULL for none; a bundle's size is ``length(data)``
# (SQLite reads a blob's length off the record header, without its bytes).
#
# Every index is paid for by every put; each one here answers a query of the hot path, and no
# other index is kept (``test_store_schema`` checks each query's plan):
#   bundle_id (UNIQUE)          get, delete, tombstone, assign_next_hop; duplicate by bundle id
#   content_id (UNIQUE, partial) duplicate by content (the put's ON CONFLICT); NULL content ids
#                               are never compared (NULL is distinct from NULL), so they are
#                               not indexed: bundles without a content id cost no entry
#   next_hop (+ seq, implicit)   pending_for, pending_ids, pending_page: in arrival order
#   expires_at                   expire: the periodic sweep reads only what is due
# ``pending_for_destination`` (an operator's or a test's question, not the node's) scans.
_BUNDLES_TABLE = """
CREATE TABLE {name} (
    seq           INTEGER PRIMARY KEY,
    bundle_id     BLOB NOT NULL UNIQUE,
    content_id    BLOB,
    source        INTEGER NOT NULL,
    destination   INTEGER NOT NULL,
    next_hop      INTEGER,
    received_from INTEGER,
    expires_at    INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    data          BLOB NOT NULL
);
"""
_BUNDLES_INDEXES = """
CREATE UNIQUE INDEX bundles_by_content_id ON bundles (content_id) WHERE content_id IS NOT NULL;
CREATE INDEX bundles_by_next_hop ON bundles (next_hop);
CREATE INDEX bundles_by_expiry ON bundles (expires_at);
"""
# The ingress (custody first, :mod:`.ingress`): runs of received bundles
# held durably before the agent has read them, one row per run (one insert: the link acks after
# its commit). ``data`` is the run's bundles end to end, ``lengths`` each one's size (4-byte
# little-endian unsigned integers); ``received_from`` the neighbour's node number (NULL: none).
_INGRESS_SCHEMA = """
CREATE TABLE ingress (
    seq           INTEGER PRIMARY KEY,
    received_from INTEGER,
    bundles       INTEGER NOT NULL,
    lengths       BLOB NOT NULL,
    data          BLOB NOT NULL
);
"""
SCHEMA = (
    EIDS_SCHEMA + _BUNDLES_TABLE.format(name="bundles") + _BUNDLES_INDEXES + _REPLAY_SCHEMA
    + _INGRESS_SCHEMA
)  # fmt: skip

#: Version 1 → 2: the neighbour each bundle came from (per-source quota share) and the replay
#: memory (:mod:`fleetwire.protocol.replay`).
_MIGRATE_1_TO_2 = "ALTER TABLE bundles ADD COLUMN received_from TEXT;" + _REPLAY_SCHEMA
#: Version 2 → 3: the index by destination goes (no query of the node used it) and content ids
#: are indexed only where present. A column constraint cannot be changed in place, so the table
#: is copied (every column, ``seq`` included: the arrival order stays) inside the migration's
#: one transaction: a crash leaves the version-2 file as it was.
_MIGRATE_2_TO_3 = """
CREATE TABLE bundles_v3 (
    seq         INTEGER PRIMARY KEY,
    bundle_id   BLOB NOT NULL UNIQUE,
    content_id  BLOB,
    source      TEXT NOT NULL,
    destination TEXT NOT NULL,
    next_hop    TEXT,
    expires_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    received_from TEXT
);
INSERT INTO bundles_v3 (seq, bundle_id, content_id, source, destination, next_hop, expires_at,
    received_at, size, data, received_from)
SELECT seq, bundle_id, content_id, source, destination, next_hop, expires_at,
    received_at, size, data, received_from FROM bundles;
DROP TABLE bundles;
ALTER TABLE bundles_v3 RENAME TO bundles;
CREATE UNIQUE INDEX bundles_by_content_id ON bundles (content_id) WHERE content_id IS NOT NULL;
CREATE INDEX bundles_by_next_hop ON bundles (next_hop);
CREATE INDEX bundles_by_expiry ON bundles (expires_at);
"""
#: Version 3 → 4: EIDs move to the ``eids`` table (each once; the rows hold integer ids) and
#: the ``size`` column goes (it was always ``length(data)``: a tombstone empties both). Copied
#: like 2 → 3, every bundle and its ``seq`` kept, in the step's one transaction.
_MIGRATE_3_TO_4 = (
    EIDS_SCHEMA
    + """
INSERT INTO eids (eid)
    SELECT source FROM bundles UNION SELECT destination FROM bundles
    UNION SELECT next_hop FROM bundles WHERE next_hop IS NOT NULL
    UNION SELECT received_from FROM bundles WHERE received_from IS NOT NULL;
"""
    + _BUNDLES_TABLE.format(name="bundles_v4")
    + """
INSERT INTO bundles_v4 (seq, bundle_id, content_id, source, destination, next_hop,
    received_from, expires_at, received_at, data)
SELECT b.seq, b.bundle_id, b.content_id,
    (SELECT id FROM eids WHERE eid = b.source), (SELECT id FROM eids WHERE eid = b.destination),
    (SELECT id FROM eids WHERE eid = b.next_hop), (SELECT id FROM eids WHERE eid = b.received_from),
    b.expires_at, b.received_at, b.data
FROM bundles AS b;
DROP TABLE bundles;
ALTER TABLE bundles_v4 RENAME TO bundles;
"""
    + _BUNDLES_INDEXES
)

#: Version 4 → 5: the ingress table (empty: nothing was received before it existed).
_MIGRATE_4_TO_5 = _INGRESS_SCHEMA

_COLUMNS = (
    "bundle_id, content_id, source, destination, next_hop, received_from, expires_at, "
    "received_at, data"
)
_SELECT = f"SELECT {_COLUMNS} FROM bundles"

#: Per-connection settings after ``journal_mode = WAL`` (the benchmark applies them to its raw
#: SQLite baseline too, so the ratios show the store's own overhead).
TUNING = (
    "PRAGMA synchronous = FULL",  # see _prepare: fsync the WAL at every commit
    "PRAGMA fullfsync = ON",  # macOS: fsync() alone does not flush the disk cache
    "PRAGMA checkpoint_fullfsync = ON",
    "PRAGMA cache_size = -16384",  # 16 MiB: keep the id indexes in memory
)

#: Default WAL size limit (bytes): a checkpoint whenever the log passes it, and the log truncated
#: back to it. A larger limit writes back index pages that many batches touched less often (at
#: 64 MiB, ~25% fewer bytes written per bundle under sustained load) but keeps that much disk
#: for the log of every store, however little it holds: 4 MiB suits the small stores of a fleet.
DEFAULT_WAL_LIMIT = 4 * 1024 * 1024



def wal_pragmas(wal_limit: int, page_size: int = 4096) -> tuple[str, ...]:
    """The pragmas that keep the WAL near ``wal_limit`` bytes (checkpoint, then truncate)."""
    return (
        f"PRAGMA wal_autocheckpoint = {max(1, wal_limit // page_size)}",
        f"PRAGMA journal_size_limit = {wal_limit}",
    )


def _connect(
    path: str, verify: bool, wal_limit: int
) -> tuple[sqlite3.Connection, int, int, SourceShares, EidTable]:
    """Open (or create) the store file; returns the connection, bundle count and bytes held,
    what each neighbour's bundles hold (the per-source quota share), and the EIDs."""
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. timeout=0: a store held by another
        # process fails at once instead of waiting.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open bundle store {path!r}: {exc}") from exc
    try:
        _prepare(conn, path, verify)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        for pragma in wal_pragmas(wal_limit, page_size):
            conn.execute(pragma)
        count, used = conn.execute("SELECT count(*), total(length(data)) FROM bundles").fetchone()
        shares = SourceShares()
        for source, n, size in conn.execute(
            "SELECT e.eid, count(*), total(length(b.data)) FROM bundles AS b "
            "JOIN eids AS e ON e.id = b.received_from GROUP BY b.received_from"
        ):
            shares.add(source, n, int(size))
        eids = EidTable.load(conn)
        return conn, count, int(used), shares, eids
    except sqlite3.DatabaseError as exc:  # past the header checks: the file is ours, but broken
        conn.close()
        raise StoreCorrupt(f"bundle store {path!r} is corrupt: {exc}") from exc
    except BaseException:
        conn.close()
        raise


def _prepare(conn: sqlite3.Connection, path: str, verify: bool) -> None:
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.OperationalError as exc:
        raise StoreError(f"bundle store {path!r} is unavailable: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise NotABundleStore(f"{path!r} is not a fleetwire bundle store: {exc}") from exc
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    fresh = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    if app_id == 0 and version == 0 and fresh:
        pass  # an empty (new) file: the schema is created below
    elif app_id != APPLICATION_ID:
        raise NotABundleStore(
            f"{path!r} is an SQLite database of another application (application_id={app_id:#x})"
        )
    elif version > SCHEMA_VERSION:
        raise NotABundleStore(
            f"{path!r} has bundle store schema version {version}, newer than this fleetwire "
            f"supports ({SCHEMA_VERSION}); upgrade fleetwire"
        )
    elif version < 1:
        raise StoreCorrupt(f"{path!r} is marked as a bundle store but has no schema version")
    else:
        _migrate(conn, version)
    # WAL: a commit appends to the log and fsyncs the log only (one sequential write), and readers
    # never see a half-written transaction; after a crash the log is replayed up to its last
    # complete commit. synchronous=FULL: fsync the WAL at every commit, so a committed bundle
    # survives power loss too (NORMAL, the usual WAL pairing, syncs only at checkpoints and may
    # drop the last commits on power loss — which would break "accepted means durable").
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"bundle store {path!r} cannot use WAL journaling (got {mode!r})")
    for pragma in TUNING:
        conn.execute(pragma)
    if fresh:
        # Before the first table: lets the committer hand freed pages back to the file system
        # when idle (stores created before this stay at their largest size).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.executescript(f"""
            BEGIN IMMEDIATE;
            {SCHEMA}
            PRAGMA application_id = {APPLICATION_ID};
            PRAGMA user_version = {SCHEMA_VERSION};
            COMMIT;
        """)
    elif verify:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise StoreCorrupt(f"bundle store {path!r} failed its integrity check: {problems[:5]}")


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a store of an older schema ``version`` up to :data:`SCHEMA_VERSION`, one step per
    transaction (each step's crash leaves the file at the step before)."""
    steps = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3, 3: _MIGRATE_3_TO_4, 4: _MIGRATE_4_TO_5}
    while version < SCHEMA_VERSION:
        try:
            conn.executescript(f"""
                BEGIN IMMEDIATE;
                {steps[version]}
                PRAGMA user_version = {version + 1};
                COMMIT;
            """)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version += 1
