"""Durable mailboxes at a provider (SQLite, WAL, synchronous commits).

A delivered payload is committed to disk before the provider counts it delivered or sends its
SURB-ACK, so a provider killed at any instant has lost nothing it acknowledged. An item leaves
only when its owner acknowledges a pull that returned it, or when its TTL runs out.

A mailbox belongs to the client whose link (Noise static) key derives its address: the address
is the first 16 bytes of SHA-256("mixnet-mailbox-v1" || link key). Only a link authenticated with
that key can pull or acknowledge it, so no separate password exists to leak.

A mailbox whose owner has not connected for ``idle_ttl`` and that holds nothing is freed, so
keys that registered once and went away do not hold places forever. When the owner was last
seen is kept only to the hour (``last_seen``), which is all freeing needs.

The database file and its ``-wal``/``-shm`` are mode 0600 and run with ``secure_delete`` on:
acknowledged and expired mail is overwritten on disk, not left readable in free pages. The WAL
still holds older copies of changed pages until a checkpoint, so after deleting the store
checkpoints and truncates it (:meth:`MailboxStore.scrub`, at most every ``scrub_interval``).

This is the only module of the provider that speaks SQL.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from mixcore.files import private_file
from mixcore.routing import SURB_ID_LEN, mailbox_address
from mixcore.statistics import Statistics

SCHEMA = """
CREATE TABLE IF NOT EXISTS mailboxes (
    address BLOB PRIMARY KEY,
    credential BLOB NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_seen REAL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    address BLOB NOT NULL REFERENCES mailboxes(address),
    kind INTEGER NOT NULL,
    surb_id BLOB,
    data BLOB NOT NULL,
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_address ON items(address, id);
CREATE INDEX IF NOT EXISTS items_by_time ON items(stored);
"""


class ItemKind(IntEnum):
    MESSAGE = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class MailboxItem:
    item_id: int
    kind: ItemKind
    surb_id: bytes
    data: bytes


class MailboxFull(Exception):
    """The mailbox holds its maximum number of items; the payload is not stored."""


class StoreFailed(Exception):
    """The database refused a batch (a full or broken disk): nothing of it was stored."""


@dataclass(frozen=True, slots=True)
class MailboxStatistics(Statistics):
    """A provider's mailbox store in counts (part of ``stats.json``)."""

    mailboxes: int = 0
    stored_items: int = 0
    mailboxes_freed: int = 0
    """Idle mailboxes forgotten (only ones that hold no mail)."""


class MailboxStore:
    def __init__(
        self,
        path: str | Path,
        *,
        ttl: float,
        max_items_per_mailbox: int = 10_000,
        max_mailboxes: int = 100_000,
        idle_ttl: float | None = None,
        scrub_interval: float = 10.0,
    ) -> None:
        self.ttl = ttl
        self.scrub_interval = scrub_interval
        self._dirty = False
        self._last_scrub = -math.inf
        self.idle_ttl = max(ttl, idle_ttl or ttl)
        self.max_items = max_items_per_mailbox
        self.max_mailboxes = max_mailboxes
        #: ``last_seen`` is rounded down to this many seconds (an hour, or finer for short TTLs).
        self.seen_granularity = min(3600.0, self.idle_ttl / 4)
        private_file(path)  # 0600 before SQLite opens it; -wal and -shm inherit the mode
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(mailboxes)")}
        if "last_seen" not in columns:  # a database from before idle mailboxes were freed
            self._db.execute("ALTER TABLE mailboxes ADD COLUMN last_seen REAL")
        self._db.execute("UPDATE mailboxes SET last_seen = created WHERE last_seen IS NULL")
        self._hosted: dict[bytes, float] = {
            bytes(address): float(seen if seen is not None else created)
            for address, created, seen in self._db.execute(
                "SELECT address, created, last_seen FROM mailboxes"
            )
        }
        self.freed = 0
        self._next_idle_scan = -math.inf

    def close(self) -> None:
        if self._dirty:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    # -- mailboxes ---------------------------------------------------------------------------

    def register(self, credential: bytes, now: float) -> bytes:
        """Host the mailbox of ``credential`` (idempotent); returns its address."""
        address = mailbox_address(credential)
        if address in self._hosted:
            self.touch(address, now)
            return address
        if len(self._hosted) >= self.max_mailboxes:
            raise MailboxFull("provider hosts its maximum number of mailboxes")
        seen = self._coarse(now)
        self._db.execute(
            "INSERT OR IGNORE INTO mailboxes(address, credential, created, last_seen) "
            "VALUES (?, ?, ?, ?)",
            (address, credential, seen, seen),
        )
        self._hosted[address] = seen
        return address

    def _coarse(self, now: float) -> float:
        return now - now % self.seen_granularity

    def touch(self, address: bytes, now: float) -> None:
        """The owner is here: keep the mailbox (written at most once per granularity step)."""
        seen = self._coarse(now)
        if address in self._hosted and self._hosted[address] < seen:
            self._db.execute(
                "UPDATE mailboxes SET last_seen = ? WHERE address = ?", (seen, address)
            )
            self._hosted[address] = seen

    def hosts(self, address: bytes) -> bool:
        return address in self._hosted

    def is_registered(self, credential: bytes) -> bool:
        return mailbox_address(credential) in self._hosted

    # -- storing -------------------------------------------------------------------------------

    def _count(self, address: bytes) -> int:
        query = "SELECT COUNT(*) FROM items WHERE address = ?"
        (n,) = self._db.execute(query, (address,)).fetchone()
        return int(n)

    def _store(
        self, address: bytes, kind: ItemKind, surb_id: bytes, data: bytes, now: float
    ) -> int:
        if address not in self._hosted:
            raise KeyError("mailbox not hosted here")
        if self._count(address) >= self.max_items:
            raise MailboxFull("mailbox is full")
        cur = self._db.execute(
            "INSERT INTO items(address, kind, surb_id, data, stored) VALUES (?, ?, ?, ?, ?)",
            (address, int(kind), surb_id, data, now),
        )
        return int(cur.lastrowid or 0)

    def store_message(self, address: bytes, payload: bytes, now: float) -> int:
        """Commit ``payload`` durably (returns once it is on disk)."""
        return self._store(address, ItemKind.MESSAGE, b"", payload, now)

    def store_reply(self, address: bytes, surb_id: bytes, body: bytes, now: float) -> int:
        if len(surb_id) != SURB_ID_LEN:
            raise ValueError("bad SURB id length")
        return self._store(address, ItemKind.REPLY, surb_id, body, now)

    def store_many(
        self, items: Sequence[tuple[bytes, bytes | None, bytes, float]]
    ) -> list[int | None]:
        """Store ``(address, surb_id or None for a message, data, now)`` items in ONE
        transaction (one commit, one fsync for the batch); returns each item's id, or None
        where it was refused (the mailbox is full, or no longer hosted here). Returns once all
        of them are on disk; raises :class:`StoreFailed` when nothing of the batch was."""
        if not items:
            return []
        try:
            return self._store_many(items)
        except sqlite3.Error as exc:
            raise StoreFailed(str(exc)) from exc

    def _store_many(
        self, items: Sequence[tuple[bytes, bytes | None, bytes, float]]
    ) -> list[int | None]:
        out: list[int | None] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for address, surb_id, data, now in items:
                try:
                    if surb_id is None:
                        out.append(self._store(address, ItemKind.MESSAGE, b"", data, now))
                    else:
                        out.append(self.store_reply(address, surb_id, data, now))
                except (MailboxFull, KeyError, ValueError):
                    out.append(None)
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # (no transaction left to roll back)
                self._db.execute("ROLLBACK")
            raise
        return out

    # -- pulling -------------------------------------------------------------------------------

    def fetch(self, address: bytes, limit: int) -> list[MailboxItem]:
        """Up to ``limit`` oldest items; nothing is deleted until :meth:`ack`."""
        rows = self._db.execute(
            "SELECT id, kind, surb_id, data FROM items WHERE address = ? ORDER BY id LIMIT ?",
            (address, limit),
        ).fetchall()
        return [MailboxItem(int(i), ItemKind(k), bytes(s or b""), bytes(d)) for i, k, s, d in rows]

    def ack(self, address: bytes, item_ids: list[int]) -> int:
        """Delete acknowledged items of this mailbox only; returns how many went."""
        if not item_ids:
            return 0
        deleted = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for item_id in item_ids:
                cur = self._db.execute(
                    "DELETE FROM items WHERE id = ? AND address = ?", (item_id, address)
                )
                deleted += cur.rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._dirty = self._dirty or deleted > 0
        return deleted

    def scrub(self, now: float, *, force: bool = False) -> bool:
        """After deletions, checkpoint and truncate the WAL, which still holds the deleted
        mail's pages (at most once per ``scrub_interval`` unless ``force``)."""
        if not self._dirty or (not force and now - self._last_scrub < self.scrub_interval):
            return False
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._dirty = False
        self._last_scrub = now
        return True

    def expire(self, now: float) -> int:
        """Delete items older than the TTL, then free empty mailboxes idle past ``idle_ttl``;
        returns how many items went."""
        cur = self._db.execute("DELETE FROM items WHERE stored < ?", (now - self.ttl,))
        expired = cur.rowcount
        self._dirty = self._dirty or expired > 0
        self.scrub(now)
        if now < self._next_idle_scan:
            return expired
        self._next_idle_scan = now + self.seen_granularity / 4
        cutoff = now - self.idle_ttl
        idle = [a for a, seen in self._hosted.items() if seen < cutoff]
        if idle:
            freed = []
            for address in idle:
                gone = self._db.execute(
                    "DELETE FROM mailboxes WHERE address = ? AND last_seen < ? AND NOT EXISTS "
                    "(SELECT 1 FROM items WHERE items.address = mailboxes.address)",
                    (address, cutoff),
                ).rowcount
                if gone:
                    freed.append(address)
            for address in freed:
                del self._hosted[address]
            self.freed += len(freed)
            self._dirty = self._dirty or bool(freed)
        return expired

    def statistics(self) -> MailboxStatistics:
        (items,) = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
        return MailboxStatistics(mailboxes=len(self._hosted), stored_items=int(items),
                                 mailboxes_freed=self.freed)
