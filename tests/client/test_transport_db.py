"""The daemon's transport state (outbox, raw inbox) lives sealed in the client's encrypted
store: the files hold no recipient provider or mailbox, ciphertext, size or time in the clear;
a row is deleted (and its bytes wiped) when its message reaches a final state; pending sends
and unread payloads survive a restart; a legacy plaintext ``transport.db`` is imported and
destroyed."""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.storage import KdfParams, Store
from client.transport_db import DATABASE_NAME, TransportDB

FAST = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)
NOW = 1_712_345_678.25


def raw_files(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def time_needles(t: float) -> list[bytes]:
    return [struct.pack(">d", t), struct.pack("<d", t), struct.pack(">I", int(t)),
            str(int(t)).encode()]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.create(tmp_path / "c" / "messenger.db", "pw", kdf=FAST)
    yield s
    s.close()


def test_nothing_about_a_recipient_is_in_the_clear(store: Store, tmp_path: Path) -> None:
    db = TransportDB(store)
    provider, mailbox, mid = os.urandom(32), os.urandom(16), os.urandom(16)
    data = b"CIPHERTEXT-MARKER" + os.urandom(500)
    db.add_outgoing(mid, provider, mailbox, os.urandom(32), data, now=NOW)
    db.set_state(mid, "pending", "", NOW + 3)
    db.add_incoming(os.urandom(16), b"RAW-PAYLOAD-MARKER from the testnet", NOW + 5)
    raw = raw_files(tmp_path / "c")
    needles = [provider, provider[:8], mailbox, mailbox[:8], mid, data[:24], data[-24:],
               b"RAW-PAYLOAD-MARKER", b"pending", *time_needles(NOW), *time_needles(NOW + 5)]
    assert [n[:8].hex() for n in needles if n in raw] == []
    assert db.get_outgoing(mid) is not None  # the check is able to fail: the row is there
    assert db.get_outgoing(mid).mailbox == mailbox  # type: ignore[union-attr]


def test_sealed_sizes_are_bucketed(store: Store, tmp_path: Path) -> None:
    db = TransportDB(store)
    for size in (520, 650, 760, 860):  # one power-of-two bucket
        db.add_outgoing(os.urandom(16), os.urandom(32), os.urandom(16), os.urandom(32),
                        os.urandom(size), now=NOW)
    conn = sqlite3.connect(store.path)
    lengths = {n for (n,) in conn.execute("SELECT length(sealed) FROM outbox")}
    conn.close()
    assert len(lengths) == 1, lengths


@pytest.mark.parametrize("final", ["delivered", "undeliverable"])
def test_a_final_state_deletes_the_row_and_wipes_its_bytes(
    store: Store, tmp_path: Path, final: str
) -> None:
    db = TransportDB(store)
    mid = os.urandom(16)
    db.add_outgoing(mid, os.urandom(32), os.urandom(16), os.urandom(32), os.urandom(400), now=NOW)
    conn = sqlite3.connect(store.path)
    [(sealed,)] = conn.execute("SELECT sealed FROM outbox").fetchall()
    conn.close()
    assert sealed[12:60] in raw_files(tmp_path / "c")
    db.set_state(mid, final, "retry_budget_exhausted: 5 tries" if final != "delivered" else "",
                 NOW + 9)
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    conn.close()
    assert sealed[12:60] not in raw_files(tmp_path / "c")  # secure_delete: not in free pages
    got = db.get_outgoing(mid)  # --wait still learns the outcome (kept in memory only)
    assert got is not None and got.state == final
    assert db.counts()[f"outbox_{final}"] == 1 and db.outgoing(state="pending") == []


def test_pending_and_unread_survive_a_restart_and_duplicates_are_stored_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c" / "messenger.db"
    store = Store.create(path, "pw", kdf=FAST)
    db = TransportDB(store)
    mid, inc = os.urandom(16), os.urandom(16)
    db.add_outgoing(mid, b"p" * 32, b"m" * 16, b"k" * 32, b"queued data", now=NOW)
    assert db.add_incoming(inc, b"payload one", NOW)
    assert not db.add_incoming(inc, b"payload one", NOW + 1)
    assert db.add_incoming(os.urandom(16), b"payload two", NOW + 2)
    store.close()
    store = Store.open(path, "pw")
    db = TransportDB(store)
    [out] = db.outgoing(state="pending")
    assert (out.message_id, out.provider, out.mailbox, out.data) == (
        mid, b"p" * 32, b"m" * 16, b"queued data")
    rows = db.incoming()
    assert [r.data for r in rows] == [b"payload one", b"payload two"]
    assert db.mark_read([rows[0].seq]) == 1
    assert [r.data for r in db.incoming(unread_only=True)] == [b"payload two"]
    assert db.incoming(after=rows[0].seq)[0].data == b"payload two"
    assert db.counts() == {"outbox_pending": 1, "inbox_unread": 1}
    store.close()


LEGACY_SCHEMA = """
CREATE TABLE outbox (message_id BLOB PRIMARY KEY, provider BLOB NOT NULL, mailbox BLOB NOT NULL,
    data BLOB NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL, received_at REAL NOT NULL, read INTEGER NOT NULL DEFAULT 0);
"""


def make_legacy(folder: Path) -> bytes:
    """A plaintext transport.db as the previous version wrote it."""
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / DATABASE_NAME)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(LEGACY_SCHEMA)
    provider = b"LEGACY-PROVIDER-" + os.urandom(16)
    with conn:
        conn.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, 'pending', '', ?, ?)",
                     (b"i" * 16, provider, b"LEGACY-MAILBOX!!", b"LEGACY-DATA", NOW, NOW))
        conn.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, 'delivered', '', ?, ?)",
                     (b"j" * 16, provider, b"LEGACY-MAILBOX!!", b"LEGACY-OLD", NOW, NOW))
        conn.execute("INSERT INTO inbox (message_id, data, received_at) VALUES (?, ?, ?)",
                     (b"k" * 16, b"LEGACY-UNREAD", NOW))
    conn.close()
    return provider


@pytest.mark.parametrize("with_store", [True, False], ids=["messenger", "transport-only"])
def test_a_legacy_plaintext_transport_db_is_imported_then_destroyed(
    tmp_path: Path, with_store: bool
) -> None:
    folder = tmp_path / "c"
    provider = make_legacy(folder)
    store = Store.create(folder / "messenger.db", "pw", kdf=FAST) if with_store else None
    db = TransportDB.open(folder, store)
    [out] = db.outgoing(state="pending")
    assert out.provider == provider and out.data == b"LEGACY-DATA"
    assert [r.data for r in db.incoming()] == [b"LEGACY-UNREAD"]
    db.close()
    if store is not None:
        store.close()
        assert not (folder / DATABASE_NAME).exists()
    raw = raw_files(folder)
    for needle in (b"LEGACY", provider[16:], *time_needles(NOW)):
        assert needle not in raw
    reopened = Store.open(folder / "messenger.db", "pw") if with_store else None
    again = TransportDB.open(folder, reopened)
    assert len(again.outgoing(state="pending")) == 1
    again.close()
    if reopened is not None:
        reopened.close()
