"""Store integrity, attacked the way someone holding the (locked) file would: a flipped byte in
any column of any row (index columns included), a row moved to another id, an older copy of a
row, an older copy of the whole store, a flipped byte in the SQLite header, a damaged page.
Each is refused with a clear error at unlock (or on read), never silently used or skipped; and
the messenger never makes a new identity over a store that lacks one."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.e2e.cards import ContactCard
from client.e2e.identity import UserIdentity
from client.e2e.safety import ContactVerification
from client.e2e.session import Session
from client.messenger.errors import MessengerError
from client.messenger.messenger import Messenger
from client.storage import KdfParams, Store, StoreCorrupted, StoreRolledBack

FAST = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)
PASS = "integrity passphrase"
TABLES_WITH_ROWS = ("identity", "contacts", "sessions", "verification", "settings", "messages")


def populate(path: Path) -> None:
    me, bob = UserIdentity.generate(), UserIdentity.generate()
    my_card = ContactCard.create(me, os.urandom(32), os.urandom(16), os.urandom(32))
    bob_card = ContactCard.create(bob, os.urandom(32), os.urandom(16), os.urandom(32))
    session = Session.initiate(me, my_card, bob_card)
    with Store.create(path, PASS, kdf=FAST) as store:
        store.save_identity(me)
        store.put("contacts", "c1", bob_card.to_bytes())
        store.put("contacts", "c2", b"another contact")
        store.save_session("c1", session)
        store.save_verification("c1", ContactVerification.first_seen(bob_card))
        store.put("settings", "group:1", b"a group")
        store.add_message("c:c1", b"first message")
        store.add_message("c:c1", b"second message")
        store.add_message("c:c2", b"to someone else")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "store.db"
    populate(path)
    return path


def fresh(template: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    for src in template.parent.iterdir():
        if src.name.startswith(template.stem):
            shutil.copy(src, target.parent / (target.stem + src.name[len(template.stem):]))
    return target


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def flip(path: Path, table: str, column: str, *, row: int, offset: int, xor: int) -> None:
    """XOR one byte of one column of one row, through SQL (the row stays well-formed SQLite)."""
    conn = sqlite3.connect(path)
    with conn:
        values = sorted(v for (v,) in conn.execute(f"SELECT {column} FROM {table}"))
        old = values[row % len(values)]
        new = bytearray(old)
        new[offset % len(new)] ^= xor
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (bytes(new), old))
    conn.close()


INDEX_COLUMNS = [
    ("contacts", "key"),
    ("verification", "key"),
    ("messages", "conversation"),
    ("identity", "key"),
]


@pytest.mark.parametrize(("table", "column"), INDEX_COLUMNS, ids=str)
def test_each_tampered_index_column_is_a_clear_error_at_unlock(
    template: Path, tmp_path: Path, table: str, column: str
) -> None:
    path = fresh(template, tmp_path / "s" / "store.db")
    flip(path, table, column, row=0, offset=0, xor=0x01)
    with pytest.raises(StoreCorrupted, match=f"table '{table}'"):
        Store.open(path, PASS)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_flipped_byte_in_any_row_is_detected(
    template: Path, tmp_path: Path, data: st.DataObject
) -> None:
    path = fresh(template, tmp_path / f"h{os.urandom(4).hex()}" / "store.db")
    table = data.draw(st.sampled_from(TABLES_WITH_ROWS))
    conn = sqlite3.connect(path)
    column = data.draw(st.sampled_from(columns(conn, table)))
    conn.close()
    flip(path, table, column, row=data.draw(st.integers(0, 5)),
         offset=data.draw(st.integers(0, 5000)), xor=data.draw(st.integers(1, 255)))
    with pytest.raises(StoreCorrupted, match=f"table '{table}'"):
        Store.open(path, PASS)


def test_a_row_moved_to_another_id_is_detected(template: Path, tmp_path: Path) -> None:
    path = fresh(template, tmp_path / "s" / "store.db")
    conn = sqlite3.connect(path)
    (a, sa), (b, sb) = conn.execute("SELECT key, sealed FROM contacts").fetchall()
    with conn:  # swap the sealed values of the two contacts: every row still authentic alone
        conn.execute("UPDATE contacts SET sealed = ? WHERE key = ?", (sb, a))
        conn.execute("UPDATE contacts SET sealed = ? WHERE key = ?", (sa, b))
    conn.close()
    with pytest.raises(StoreCorrupted, match="table 'contacts'"):
        Store.open(path, PASS)


def test_an_older_copy_of_one_row_is_detected(template: Path, tmp_path: Path) -> None:
    path = fresh(template, tmp_path / "s" / "store.db")
    conn = sqlite3.connect(path)
    old = conn.execute("SELECT key, sealed FROM sessions").fetchall()
    conn.close()
    with Store.open(path, PASS) as store:  # the ratchet moves on
        session = store.load_session("c1")
        assert session is not None
        session.encrypt(b"a later message")
        store.save_session("c1", session)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany("UPDATE sessions SET sealed = ? WHERE key = ?", [(s, k) for k, s in old])
    conn.close()
    with pytest.raises(StoreCorrupted, match="table 'sessions'"):
        Store.open(path, PASS)


def test_a_row_tampered_while_the_store_is_open_is_refused_on_read(
    template: Path, tmp_path: Path
) -> None:
    path = fresh(template, tmp_path / "s" / "store.db")
    with Store.open(path, PASS) as store:
        old = store._db().execute("SELECT key, sealed FROM sessions").fetchall()
        session = store.load_session("c1")
        assert session is not None
        store.save_session("c1", session)
        store._db().executemany(  # an older copy written behind the store's back
            "UPDATE sessions SET sealed = ? WHERE key = ?", [(s, k) for k, s in old])
        with pytest.raises(StoreCorrupted, match="older copy"):
            store.load_session("c1")
        store._db().execute("DELETE FROM contacts")
        with pytest.raises(StoreCorrupted, match="missing"):
            store.get("contacts", "c1")


def test_a_rolled_back_store_is_detected_by_its_counter_file(
    template: Path, tmp_path: Path
) -> None:
    path = fresh(template, tmp_path / "s" / "store.db")
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)
    with Store.open(path, PASS) as store:
        store.put("settings", "later", b"written after the backup")
    shutil.copy(backup, path)  # the old file put back (the counter file is not)
    with pytest.raises(StoreRolledBack, match="older copy") as caught:
        Store.open(path, PASS)
    assert "accept" in str(caught.value)  # names the way out for a deliberate restore
    with Store.open(path, PASS, accept_rollback=True) as store:
        assert store.get("settings", "later") is None
    with Store.open(path, PASS) as store:  # accepted once: opens normally from now on
        assert store.ids("contacts") == ["c1", "c2"]


def test_a_missing_or_forged_counter_file_is_refused(template: Path, tmp_path: Path) -> None:
    path = fresh(template, tmp_path / "s" / "store.db")
    counter = Store.counter_path(path)
    counter.unlink()
    with pytest.raises(StoreRolledBack, match="counter file"):
        Store.open(path, PASS)
    other = fresh(template, tmp_path / "o" / "store.db")
    with Store.open(other, PASS) as store:
        store.put("settings", "x", b"y")
    shutil.copy(Store.counter_path(other), counter)  # another store's (valid) counter file
    with pytest.raises(StoreRolledBack, match="counter file"):
        Store.open(path, PASS)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 99), st.integers(1, 255))
def test_a_flipped_sqlite_header_byte_is_noticed(
    template: Path, tmp_path: Path, offset: int, xor: int
) -> None:
    path = fresh(template, tmp_path / f"hdr{os.urandom(4).hex()}" / "store.db")
    raw = bytearray(path.read_bytes())
    raw[offset] ^= xor
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreCorrupted):
        Store.open(path, PASS)


def test_a_damaged_page_is_noticed_by_quick_check(template: Path, tmp_path: Path) -> None:
    path = fresh(template, tmp_path / "s" / "store.db")
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) >= 3 * page
    raw[2 * page : 2 * page + 8] = b"\xff" * 8  # a b-tree page header
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreCorrupted, match=r"integrity check|damaged"):
        Store.open(path, PASS)


def test_no_new_identity_over_a_store_without_one(tmp_path: Path) -> None:
    with Store.create(tmp_path / "s.db", PASS, kdf=FAST) as store:
        store.put("contacts", "c1", b"someone")
        with pytest.raises(MessengerError, match=r"no identity.*mixnet client init"):
            Messenger(store, provider=os.urandom(32), mailbox=os.urandom(16),
                      mailbox_key=os.urandom(32), clock=time.time)
        assert store.load_identity() is None  # nothing was created


OLDER_TABLES = ("identity", "contacts", "sessions", "verification", "settings", "outbox",
                "inbox", "replay")


def older_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store as a version without the messenger's own tables made it."""
    from client.storage import store as store_module

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "KV_TABLES", OLDER_TABLES)
        patch.setattr(store_module, "TABLES", (*OLDER_TABLES, "messages"))
        with Store.create(path, PASS, kdf=FAST) as store:
            store.put("settings", "group:1", b"a group")
            store.add_message("c:c1", b"first message")


def test_a_store_older_than_a_table_gains_it_empty_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s" / "store.db"
    older_store(path, monkeypatch)
    with Store.open(path, PASS) as store:
        assert store.items("groups") == []
        store.put("groups", "g1", b"a group")
        assert store.get("settings", "group:1") == b"a group"
    with Store.open(path, PASS) as store:  # the new table is part of the integrity record
        assert store.get("groups", "g1") == b"a group"
        assert [body for _, body in store.messages("c:c1")] == [b"first message"]
    flip(path, "groups", "sealed", row=0, offset=30, xor=1)
    with pytest.raises(StoreCorrupted, match="'groups'"):
        Store.open(path, PASS)


def test_a_table_dropped_or_added_outside_the_program_is_refused(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fresh(template, tmp_path / "d" / "store.db")
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE delivery")  # an empty table the record knows
    conn.close()
    with pytest.raises(StoreCorrupted, match=r"'delivery'.*dropped"):
        Store.open(path, PASS)
    older = tmp_path / "a" / "store.db"
    older_store(older, monkeypatch)
    conn = sqlite3.connect(older)
    conn.execute("CREATE TABLE groups (key BLOB PRIMARY KEY, sealed BLOB NOT NULL) WITHOUT ROWID")
    conn.close()  # a table the record does not know, even empty, was not made by this program
    with pytest.raises(StoreCorrupted, match="'groups'"):
        Store.open(older, PASS)
