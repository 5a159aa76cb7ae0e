"""SQLite persistence of an authority: the only module of the directory that speaks SQL.

What survives a restart: accepted descriptors (so the authority still votes for nodes that
uploaded before it went down), its own and its peers' votes (so it serves the same vote it
already served), the body and signature it produced per epoch (so it can never sign a second,
different body for that epoch), and the published documents (so it serves the same bytes).

The file (and its ``-wal``/``-shm``) is mode 0600 and runs with ``secure_delete`` on, so what
was pruned is overwritten rather than left in free pages. The database runs in WAL mode with
``synchronous=FULL``: every accepted descriptor, vote,
signature and document is on disk before the HTTP answer or the published document that
depends on it is visible. Writes are tiny and rare (per upload, per epoch), so this costs
little; they run on the event loop's thread, which keeps the voting state and the database in
one order.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from directory.errors import StoreError
from mixcore.files import private_dir, private_file

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS descriptors (
    identity_key BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    wire BLOB NOT NULL,
    PRIMARY KEY (identity_key, epoch)
);
CREATE TABLE IF NOT EXISTS votes (
    epoch INTEGER NOT NULL,
    authority_key BLOB NOT NULL,
    vote BLOB NOT NULL,
    PRIMARY KEY (epoch, authority_key)
);
CREATE TABLE IF NOT EXISTS signatures (
    epoch INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    epoch INTEGER PRIMARY KEY,
    document BLOB NOT NULL
);
"""


class DirectoryStore:
    """One authority's database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            private_dir(self.path.parent)
            private_file(self.path)  # 0600 before SQLite opens it; -wal and -shm inherit it
            self._db = sqlite3.connect(self.path, isolation_level=None)
            # Deleted descriptors and votes are overwritten, not left in free pages.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"database {self.path} has schema {row[0]}, expected {SCHEMA_VERSION}"
                )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    # -- descriptors ------------------------------------------------------------------------

    def put_descriptor(self, identity_key: bytes, epoch: int, wire: bytes) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO descriptors (identity_key, epoch, wire) VALUES (?, ?, ?)",
            (identity_key, epoch, wire),
        )

    def delete_node(self, identity_key: bytes) -> None:
        """Forget every descriptor of a node (revoked, or evicted for an approved one)."""
        self._db.execute("DELETE FROM descriptors WHERE identity_key = ?", (identity_key,))

    def descriptors(self, min_epoch: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT wire FROM descriptors WHERE epoch >= ? ORDER BY epoch, identity_key",
            (min_epoch,),
        )
        return [bytes(r[0]) for r in rows]

    # -- votes ------------------------------------------------------------------------------

    def put_vote(self, epoch: int, authority_key: bytes, vote: bytes) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO votes (epoch, authority_key, vote) VALUES (?, ?, ?)",
            (epoch, authority_key, vote),
        )

    def votes(self, min_epoch: int) -> list[tuple[int, bytes, bytes]]:
        rows = self._db.execute(
            "SELECT epoch, authority_key, vote FROM votes WHERE epoch >= ? ORDER BY epoch",
            (min_epoch,),
        )
        return [(int(e), bytes(k), bytes(v)) for e, k, v in rows]

    # -- own signatures ---------------------------------------------------------------------

    def put_signature(self, epoch: int, body: bytes, signature: bytes) -> None:
        """Record the body signed for ``epoch``; a different body for that epoch is refused."""
        row = self._db.execute("SELECT body FROM signatures WHERE epoch = ?", (epoch,)).fetchone()
        if row is not None:
            if bytes(row[0]) != body:
                raise StoreError(f"refusing to record a second, different body for epoch {epoch}")
            return
        self._db.execute(
            "INSERT INTO signatures (epoch, body, signature) VALUES (?, ?, ?)",
            (epoch, body, signature),
        )

    def signatures(self, min_epoch: int) -> list[tuple[int, bytes, bytes]]:
        rows = self._db.execute(
            "SELECT epoch, body, signature FROM signatures WHERE epoch >= ? ORDER BY epoch",
            (min_epoch,),
        )
        return [(int(e), bytes(b), bytes(s)) for e, b, s in rows]

    # -- documents --------------------------------------------------------------------------

    def put_document(self, epoch: int, document: bytes) -> None:
        """Store (or replace with a better-signed version) the document for ``epoch``."""
        self._db.execute(
            "INSERT INTO documents (epoch, document) VALUES (?, ?) "
            "ON CONFLICT (epoch) DO UPDATE SET document = excluded.document",
            (epoch, document),
        )

    def document(self, epoch: int) -> bytes | None:
        row = self._db.execute(
            "SELECT document FROM documents WHERE epoch = ?", (epoch,)
        ).fetchone()
        return bytes(row[0]) if row is not None else None

    def documents(self, min_epoch: int) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT epoch, document FROM documents WHERE epoch >= ? ORDER BY epoch", (min_epoch,)
        )
        return [(int(e), bytes(d)) for e, d in rows]

    def latest_document_epoch(self) -> int | None:
        row = self._db.execute("SELECT MAX(epoch) FROM documents").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else None

    # -- expiry -----------------------------------------------------------------------------

    def prune(self, current_epoch: int, *, keep_documents: int) -> None:
        """Forget descriptors and votes that no consensus can use any more, and old documents.

        Own signatures are kept as long as documents, which is what makes "never sign twice"
        hold for every epoch anyone could still ask about.
        """
        self._db.execute("DELETE FROM descriptors WHERE epoch + 1 < ?", (current_epoch,))
        self._db.execute("DELETE FROM votes WHERE epoch + 1 < ?", (current_epoch,))
        oldest = current_epoch - keep_documents
        self._db.execute("DELETE FROM documents WHERE epoch < ?", (oldest,))
        self._db.execute("DELETE FROM signatures WHERE epoch < ?", (oldest,))
