"""The disk-backed artifact store: release manifests, chunks by content id, and signed orders.

Theory of operation
-------------------
A node keeps what it fetched of a release (spec v3 release §4) in one SQLite file, beside its
bundle store: the signed **manifests** it admitted, the **chunks** it holds (keyed by content id,
so a chunk two releases share is stored once), and a journal of the signed **orders** it acted
on (rollout stages, authority revocations, policy tables), in arrival order. Bookkeeping —
quota, which chunks are missing — is the sans-IO :class:`~fleetwire.protocol.release.ledger.ArtifactLedger`;
this module keeps the bytes and rebuilds the ledger when it opens.

Durability: WAL with ``synchronous = FULL``; every write is its own committed transaction, so
a write that returned is on disk, and a crash leaves exactly the committed writes. The release
role stores a chunk *before* it tells a neighbour it holds it, and journals an order before it
acts on it, so nothing announced or obeyed is lost across a restart. Writes are small (one
chunk, at most 1 MiB) and made on the Trio thread: keeping them there keeps a MockClock run
deterministic, and one chunk's commit is short next to a contact.

Trusting our own disk no more than a neighbour: a chunk is hashed again on every read and
refused (``artifact-corrupt``, the row dropped so it is fetched again) if its bytes no longer
match its id; a manifest or order is verified again, signature and all, at the time it
arrived, when the store opens, and one that fails is dropped with a log line. Only chunks a
kept manifest names are stored (the ledger checks size and hash first), within the quota;
rows are read with the same bounds as the wire (:data:`MAX_CHUNK_SIZE`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

from fleetwire.protocol.errors import FleetwireError, RemoteProtocolError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.release.carriage import Kind
from fleetwire.protocol.release.errors import ChunkNotWanted
from fleetwire.protocol.release.ledger import DEFAULT_QUOTA, ArtifactLedger, ArtifactQuota
from fleetwire.protocol.release.manifest import (
    MAX_CHUNK_SIZE,
    Manifest,
    verify_chunk,
    verify_manifest,
)
from fleetwire.protocol.release.wire import ReleaseKeyResolver

log = logging.getLogger("fleetwire.release")

__all__ = ["ArtifactCorrupt", "ArtifactStore"]

_APPLICATION_ID: Final = 0x46575241  # "FWRA"
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS manifests (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id BLOB UNIQUE NOT NULL, envelope BLOB NOT NULL, arrived_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS chunks (id BLOB PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS orders (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id BLOB UNIQUE NOT NULL, kind INTEGER NOT NULL, envelope BLOB NOT NULL,"
    " arrived_at INTEGER NOT NULL)",
)


class ArtifactCorrupt(RemoteProtocolError):
    """A stored chunk whose bytes no longer hash to its id (the disk, not a peer, broke it)."""

    code = "artifact-corrupt"


class ArtifactStoreError(FleetwireError):
    """The file is not an artifact store (another application's database)."""

    code = "artifact-store-invalid"


#: Re-verifies a journalled order at the time it arrived; raises if it no longer verifies.
OrderCheck = Callable[[Kind, bytes, int], object]


class ArtifactStore:
    """One node's release artifacts on disk; see the module docstring."""

    def __init__(self, db: sqlite3.Connection, ledger: ArtifactLedger) -> None:
        self._db = db
        self.ledger = ledger
        self._envelopes: dict[ContentId, bytes] = {}

    @classmethod
    def open(
        cls,
        path: Path,
        trust: ReleaseKeyResolver,
        quota: ArtifactQuota = DEFAULT_QUOTA,
        *,
        durable: bool = True,
    ) -> ArtifactStore:
        """Open (or create) the store at ``path`` and rebuild the ledger from what it holds.

        ``durable=False`` skips the fsync of each commit (``synchronous = NORMAL``): a commit
        then survives the process crashing but not the machine losing power. For simulations
        of many nodes on one disk, never for a node in service.
        """
        db = sqlite3.connect(path, isolation_level=None)
        (app,) = db.execute("PRAGMA application_id").fetchone()
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app != _APPLICATION_ID and tables:
            db.close()
            raise ArtifactStoreError(f"{path.name} is not an artifact store (hint: another file?)")
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed write is on disk (the WAL is fsynced at every commit).
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        for statement in _SCHEMA:
            db.execute(statement)
        store = cls(db, ArtifactLedger(quota))
        rows = db.execute("SELECT id, envelope, arrived_at FROM manifests ORDER BY seq")
        for raw, envelope, arrived_at in rows.fetchall():
            try:
                manifest = verify_manifest(envelope, trust, arrived_at)
                store.ledger.admit(manifest)
            except FleetwireError as exc:
                log.warning("event=artifact-dropped what=manifest code=%s reason=%s",
                            exc.code, exc.message)  # fmt: skip
                store._delete("manifests", raw)
                continue
            store._envelopes[manifest.release_id] = envelope
        held = [ContentId.from_bytes(raw) for (raw,) in db.execute("SELECT id FROM chunks")]
        store.ledger.restore_held(held)
        return store

    def close(self) -> None:
        self._db.close()

    def _delete(self, table: str, raw: bytes) -> None:
        self._db.execute(f"DELETE FROM {table} WHERE id = ?", (raw,))

    # --- manifests ---------------------------------------------------------------------

    def admit(self, manifest: Manifest, envelope: bytes, now: int) -> ContentId:
        """Admit a verified manifest under the quota (``QuotaExceeded`` changes nothing) and
        keep its envelope durably."""
        release_id = manifest.release_id
        if release_id in self._envelopes:
            return release_id
        self.ledger.admit(manifest)
        self._db.execute(
            "INSERT OR IGNORE INTO manifests (id, envelope, arrived_at) VALUES (?, ?, ?)",
            (release_id.raw, envelope, now),
        )
        self._envelopes[release_id] = envelope
        return release_id

    def envelope(self, release_id: ContentId) -> bytes | None:
        return self._envelopes.get(release_id)

    def manifests(self) -> dict[ContentId, Manifest]:
        return self.ledger.releases()

    # --- chunks ------------------------------------------------------------------------

    def write_chunk(self, chunk: ContentId, data: bytes) -> None:
        """Commit a chunk the fetch planner verified (its ``StoreChunk`` action). Checked
        again here against the manifest's id and size, so nothing unverified reaches disk."""
        ref = self.ledger.wanted(chunk)
        if ref is None:
            raise ChunkNotWanted(f"chunk {chunk.short()} is named by no kept manifest")
        verify_chunk(ref, data)
        self._db.execute("INSERT OR IGNORE INTO chunks (id, data) VALUES (?, ?)",
                         (chunk.raw, data))  # fmt: skip

    def get_chunk(self, chunk: ContentId) -> bytes | None:
        """The chunk's bytes, hashed again; None if not held. Raises :class:`ArtifactCorrupt`
        (and forgets the row, so the chunk is fetched again) if the disk changed them."""
        if not self.ledger.holds(chunk):
            return None
        row = self._db.execute(
            "SELECT substr(data, 1, ?), length(data) FROM chunks WHERE id = ?",
            (MAX_CHUNK_SIZE, chunk.raw),
        ).fetchone()
        ref = self.ledger.wanted(chunk)
        if row is not None and ref is not None and row[1] == ref.size and chunk.matches(row[0]):
            data: bytes = row[0]
            return data
        self._delete("chunks", chunk.raw)
        self.ledger.forget_held(chunk)
        raise ArtifactCorrupt(f"stored chunk {chunk.short()} no longer matches its id; dropped")

    def held(self) -> frozenset[ContentId]:
        return self.ledger.held

    # --- orders ------------------------------------------------------------------------

    def journal(self, kind: Kind, envelope: bytes, now: int) -> bool:
        """Keep a verified order before acting on it; False if it was kept already."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO orders (id, kind, envelope, arrived_at) VALUES (?, ?, ?, ?)",
            (ContentId.of(envelope).raw, int(kind), envelope, now),
        )
        return cursor.rowcount == 1

    def orders(self, check: OrderCheck) -> list[tuple[Kind, bytes, int]]:
        """The journalled orders in arrival order, each re-verified by ``check`` (dropped with a
        log line if it fails)."""
        out = []
        rows = self._db.execute("SELECT id, kind, envelope, arrived_at FROM orders ORDER BY seq")
        for raw, kind, envelope, arrived_at in rows.fetchall():
            try:
                check(Kind(kind), envelope, arrived_at)
            except (FleetwireError, ValueError) as exc:
                log.warning("event=artifact-dropped what=order reason=%s", exc)
                self._delete("orders", raw)
                continue
            out.append((Kind(kind), envelope, arrived_at))
        return out
