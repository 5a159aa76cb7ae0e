"""The daemon's durable transport state (SQLite): messages queued to send, and messages
received but not yet read, so both survive a restart.

Outgoing messages keep their id: after a restart they are queued again with the same id, so
the recipient's reassembly still recognises fragments that arrived before. Incoming messages
are unique by id: a message delivered again after a crash (its pull was not acknowledged in
time) is stored once. The only module of the daemon that speaks SQL.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    message_id BLOB PRIMARY KEY,
    provider BLOB NOT NULL,
    mailbox BLOB NOT NULL,
    data BLOB NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL,
    received_at REAL NOT NULL,
    read INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class Outgoing:
    message_id: bytes
    provider: bytes
    mailbox: bytes
    data: bytes
    state: str
    reason: str
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class Incoming:
    seq: int
    message_id: bytes
    data: bytes
    received_at: float
    read: bool


class TransportDB:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        new = not path.exists()
        self._db = sqlite3.connect(str(path), isolation_level=None)
        if new:
            path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_outgoing(
        self, message_id: bytes, provider: bytes, mailbox: bytes, data: bytes, now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO outbox VALUES (?, ?, ?, ?, 'pending', '', ?, ?)",
            (message_id, provider, mailbox, data, now, now),
        )

    def set_state(self, message_id: bytes, state: str, reason: str, now: float) -> None:
        self._db.execute(
            "UPDATE outbox SET state = ?, reason = ?, updated = ? WHERE message_id = ?",
            (state, reason, now, message_id),
        )

    def outgoing(self, *, state: str | None = None, limit: int = 1000) -> list[Outgoing]:
        query = "SELECT * FROM outbox"
        args: tuple[object, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        rows = self._db.execute(query + " ORDER BY created LIMIT ?", (*args, limit)).fetchall()
        return [Outgoing(*row) for row in rows]

    def get_outgoing(self, message_id: bytes) -> Outgoing | None:
        row = self._db.execute(
            "SELECT * FROM outbox WHERE message_id = ?", (message_id,)
        ).fetchone()
        return Outgoing(*row) if row else None

    def add_incoming(self, message_id: bytes, data: bytes, now: float) -> bool:
        """Store a received message (committed before the pull is acknowledged); False if it
        was already stored."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO inbox(message_id, data, received_at) VALUES (?, ?, ?)",
            (message_id, data, now),
        )
        return cur.rowcount == 1

    def incoming(
        self, *, after: int = 0, unread_only: bool = False, limit: int = 100
    ) -> list[Incoming]:
        query = "SELECT seq, message_id, data, received_at, read FROM inbox WHERE seq > ?"
        if unread_only:
            query += " AND read = 0"
        rows = self._db.execute(query + " ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [Incoming(s, m, d, t, bool(r)) for s, m, d, t, r in rows]

    def mark_read(self, seqs: list[int]) -> int:
        marked = 0
        for seq in seqs:
            marked += self._db.execute("UPDATE inbox SET read = 1 WHERE seq = ?", (seq,)).rowcount
        return marked

    def counts(self) -> dict[str, int]:
        out = {
            f"outbox_{state}": n
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        }
        (unread,) = self._db.execute("SELECT COUNT(*) FROM inbox WHERE read = 0").fetchone()
        out["inbox_unread"] = int(unread)
        return out
