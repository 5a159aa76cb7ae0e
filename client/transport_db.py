"""The daemon's durable transport state: messages queued to send, and raw payloads received but
not yet read, so both survive a restart. Sealed rows of the client's encrypted store
(:mod:`client.storage`), never plaintext on disk.

* **Outbox** (table ``outbox``, row id = the transport message id): recipient provider,
  mailbox and mailbox sealing key, the ciphertext, state, reason, times, all inside the sealed
  value; the row's index is a keyed hash. A row is **deleted** when its message reaches a
  final state (``delivered`` or ``undeliverable``): the outcome stays in memory only, for
  ``send --wait`` and the status counters, and is forgotten at a restart. The messenger
  deletes the rows of a disappearing message when its timer fires (:func:`forget`).
* **Inbox** (table ``inbox``, row id = the transport message id): payloads the messenger could
  not use (raw ``mixnet client send`` traffic), numbered by a sealed counter. Unique by id: a
  message delivered again after a crash is stored once.

Outgoing messages keep their id: after a restart they are queued again with the same id, so
the recipient's reassembly still recognises fragments that arrived before.

A messenger client keeps these tables in its message store (``messenger.db``, one passphrase,
one data key). A transport-only client (created without a passphrase) has no secret to seal
with: its store is ``transport.db``, sealed under a random key in ``transport.key`` (0600) next
to it, which guards only against the database being copied alone. A plaintext ``transport.db``
of the earlier format is imported once, then overwritten and deleted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from client.storage import Store, StoreCorrupted
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError
from mixcore.files import exposure, write_atomic

DATABASE_NAME = "transport.db"
KEY_NAME = "transport.key"
OUTBOX = "outbox"
INBOX = "inbox"
FINAL_STATES = frozenset({"delivered", "undeliverable"})
MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Outgoing:
    message_id: bytes
    provider: bytes
    mailbox: bytes
    mailbox_key: bytes
    data: bytes
    state: str
    reason: str
    created: float
    updated: float
    size: int = 0

    def __repr__(self) -> str:  # no recipient or ciphertext in logs
        return f"Outgoing({self.message_id[:4].hex()}…, {self.state})"


@dataclass(frozen=True, slots=True)
class Incoming:
    seq: int
    message_id: bytes
    data: bytes
    received_at: float
    read: bool

    def __repr__(self) -> str:
        return f"Incoming(seq={self.seq})"


def _decode_out(message_id: bytes, value: bytes) -> Outgoing:
    try:
        provider, mailbox, key, data, state, reason, created, updated = expect_list(
            unpack_canonical(value, max_bytes=1 << 24), 8, "outbox row")
        return Outgoing(
            message_id, expect_bytes(provider, "provider", max_len=64),
            expect_bytes(mailbox, "mailbox", max_len=64), expect_bytes(key, "key", max_len=64),
            expect_bytes(data, "data"),
            str(state), str(reason), float(created), float(updated), len(data),
        )
    except (DecodeError, TypeError, ValueError):
        raise StoreCorrupted("an outbox row has a malformed body") from None


def _decode_in(message_id: bytes, value: bytes) -> Incoming:
    try:
        seq, data, received_at, read = expect_list(
            unpack_canonical(value, max_bytes=1 << 24), 4, "inbox row")
        return Incoming(expect_int(seq, "seq", lo=1, hi=1 << 62), message_id,
                        expect_bytes(data, "data"), float(received_at), bool(read))
    except (DecodeError, TypeError, ValueError):
        raise StoreCorrupted("an inbox row has a malformed body") from None


def forget(store: Store, message_id: bytes) -> bool:
    """Delete an outgoing message's row (its disappearing timer fired); True if there was one."""
    return store.delete(OUTBOX, message_id.hex())


class TransportDB:
    """The outbox and raw inbox over a :class:`Store` (see the module docstring)."""

    def __init__(self, store: Store, *, owned: bool = False) -> None:
        self.store = store
        self._owned = owned
        self._finished: OrderedDict[bytes, Outgoing] = OrderedDict()
        self._final_counts: Counter[str] = Counter()
        self._counts: tuple[int, dict[str, int]] | None = None  # (store revision, counts)

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], store: Store | None) -> TransportDB:
        """The transport state of the client in ``data_dir``: inside ``store`` (a messenger
        client), else in its own keyed store ``transport.db``. A legacy plaintext database is
        imported first and destroyed."""
        data_dir = Path(data_dir)
        path = data_dir / DATABASE_NAME
        legacy = _read_legacy(path) if path.exists() else None
        if legacy is not None:
            _destroy(path)
        owned = store is None
        if store is None:
            key = _device_key(data_dir / KEY_NAME)
            store = Store.open(path, key) if path.exists() else Store.create(path, key)
        db = cls(store, owned=owned)
        if legacy is not None:
            db._import(*legacy)
        return db

    def close(self) -> None:
        if self._owned:
            self.store.close()

    # -- outbox

    def add_outgoing(
        self,
        message_id: bytes,
        provider: bytes,
        mailbox: bytes,
        mailbox_key: bytes,
        data: bytes,
        *,
        now: float,
    ) -> None:
        self.store.put(OUTBOX, message_id.hex(),
                       pack([provider, mailbox, mailbox_key, data, "pending", "", now, now]))

    def set_state(self, message_id: bytes, state: str, reason: str, now: float) -> None:
        """A new state; a final one deletes the row (its outcome is kept in memory only)."""
        row = self.get_outgoing(message_id)
        if state in FINAL_STATES:
            self.store.delete(OUTBOX, message_id.hex())
            self._remember(Outgoing(
                message_id, b"", b"", b"", b"", state, reason,
                row.created if row else now, now, row.size if row else 0,
            ))
            return
        if row is None or message_id in self._finished:
            return
        self.store.put(OUTBOX, message_id.hex(), pack(
            [row.provider, row.mailbox, row.mailbox_key, row.data, state, reason, row.created,
             now]))

    def _remember(self, out: Outgoing) -> None:
        if out.message_id not in self._finished:
            self._final_counts[out.state] += 1
        self._finished[out.message_id] = out
        while len(self._finished) > MAX_REMEMBERED:
            self._finished.popitem(last=False)

    def outgoing(self, *, state: str | None = None, limit: int = 1000) -> list[Outgoing]:
        """Stored (not yet final) messages oldest first, then the final outcomes this process
        remembers."""
        rows = [_decode_out(bytes.fromhex(i), v) for i, v in self.store.items(OUTBOX)]
        rows.sort(key=lambda r: r.created)
        rows += list(self._finished.values())
        if state is not None:
            rows = [r for r in rows if r.state == state]
        return rows[:limit]

    def get_outgoing(self, message_id: bytes) -> Outgoing | None:
        value = self.store.get(OUTBOX, message_id.hex())
        if value is not None:
            return _decode_out(message_id, value)
        return self._finished.get(message_id)

    # -- inbox

    def add_incoming(self, message_id: bytes, data: bytes, now: float) -> bool:
        """Store a received message (committed before the pull is acknowledged); False if it
        was already stored."""
        with self.store.transaction():
            if self.store.get(INBOX, message_id.hex()) is not None:
                return False
            seq = self.store.next_sequence(INBOX)
            self.store.put(INBOX, message_id.hex(), pack([seq, data, now, False]))
        return True

    def _inbox(self) -> list[Incoming]:
        rows = [_decode_in(bytes.fromhex(i), v) for i, v in self.store.items(INBOX)]
        return sorted(rows, key=lambda r: r.seq)

    def incoming(
        self, *, after: int = 0, unread_only: bool = False, limit: int = 100
    ) -> list[Incoming]:
        rows = [r for r in self._inbox() if r.seq > after and not (unread_only and r.read)]
        return rows[:limit]

    def mark_read(self, seqs: list[int]) -> int:
        wanted = set(seqs)
        marked = 0
        with self.store.transaction():
            for r in self._inbox():
                if r.seq in wanted and not r.read:
                    self.store.put(INBOX, r.message_id.hex(),
                                   pack([r.seq, r.data, r.received_at, True]))
                    marked += 1
        return marked

    def counts(self) -> dict[str, int]:
        """Outbox rows by state (plus the final outcomes remembered) and unread payloads;
        recounted only when the store changed (the daemon asks every second)."""
        if self._counts is not None and self._counts[0] == self.store.revision:
            return self._with_finals(self._counts[1])
        stored: Counter[str] = Counter(
            f"outbox_{_decode_out(bytes.fromhex(i), v).state}"
            for i, v in self.store.items(OUTBOX)
        )
        stored["inbox_unread"] = sum(1 for r in self._inbox() if not r.read)
        self._counts = (self.store.revision, dict(stored))
        return self._with_finals(stored)

    def _with_finals(self, stored: dict[str, int]) -> dict[str, int]:
        out = Counter(stored)
        for state, n in self._final_counts.items():
            out[f"outbox_{state}"] += n
        return dict(out)

    # -- the earlier plaintext format

    def _import(self, outgoing: list[tuple[bytes, ...]], incoming: list[tuple[bytes, ...]]
                ) -> None:
        with self.store.transaction():
            for message_id, provider, mailbox, data, created in outgoing:
                if self.store.get(OUTBOX, message_id.hex()) is None:
                    # no sealing key in the old format: re-queued, it fails with a clear error
                    self.store.put(OUTBOX, message_id.hex(), pack(
                        [provider, mailbox, b"", data, "pending", "", created, created]))
            for message_id, data, received_at in incoming:
                self.add_incoming(message_id, data, float(received_at))


def _device_key(path: Path) -> str:
    """The transport-only client's random store key (created 0600 on first use)."""
    if path.exists():
        problem = exposure(path, path.stat(), "transport key")
        if problem:
            raise StoreCorrupted(problem)
        return path.read_text().strip()
    key = secrets.token_hex(32)
    write_atomic(path, key.encode() + b"\n")
    return key


def _read_legacy(path: Path) -> tuple[list[tuple[bytes, ...]], list[tuple[bytes, ...]]] | None:
    """Pending sends and unread payloads of a plaintext transport.db, or None if ``path`` is
    a sealed store (or not the old format)."""
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "meta" in tables or "outbox" not in tables:
            return None
        cols = {r[1] for r in conn.execute("PRAGMA table_info(outbox)")}
        if "provider" not in cols:
            return None
        outgoing = conn.execute(
            "SELECT message_id, provider, mailbox, data, created FROM outbox"
            " WHERE state = 'pending'").fetchall()
        incoming = conn.execute(
            "SELECT message_id, data, received_at FROM inbox WHERE read = 0 ORDER BY seq"
        ).fetchall() if "inbox" in tables else []
        return outgoing, incoming
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _destroy(path: Path) -> None:
    """Overwrite a plaintext database (and its WAL and shared-memory files) with zeros, then
    delete it."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
              path.with_name(path.name + "-journal")):
        with contextlib.suppress(FileNotFoundError):
            size = p.stat().st_size
            with open(p, "r+b") as f:
                f.write(bytes(size))
                f.flush()
                os.fsync(f.fileno())
            p.unlink()
