"""The encrypted local store: one SQLite file for everything a client keeps (identity, contacts,
sessions, messages, and the transport's outbox and raw inbox), every value sealed.

**Keys.** At ``create`` a random 256-bit *data key* is drawn. The passphrase goes through
Argon2id (``cryptography``'s KDF; default 64 MiB, 3 passes, 4 lanes, 16-byte random salt) to a
*key-encryption key* that wraps the data key with ChaCha20-Poly1305. A wrong passphrase fails
the wrap's authentication: :class:`WrongPassphrase`. :meth:`Store.change_passphrase` *re-keys*:
a new data key, every row re-sealed (and re-indexed) under it, the file vacuumed, so an old
copy of the file and the old passphrase open nothing written afterwards.

**Rows.** Key/value tables (:data:`KV_TABLES`: ``key BLOB PRIMARY KEY, sealed BLOB``) and
``messages`` (``key, conversation, sealed``), all ``WITHOUT ROWID``: rows sit in the order of
their keys, which are keyed hashes, so neither row ids nor order say which row was written
when. ``key = HMAC-SHA256(index_key, table || 0 || id)[:16]`` (a message's id is its sequence
number, kept only inside the sealed value; ``conversation = HMAC(index_key, "conversation" ||
0 || conversation id)[:16]``). ``sealed = nonce(12) || ChaCha20-Poly1305(row_key, nonce,
pad(pack(body)), ad)`` with ``ad = pack(["mixnet-store-row-v2", 2, store_id, table, key
(, conversation)])``: the AD binds the table, the row's id and every index column, so a value
moved to another row, table or conversation fails authentication. Values are padded to a power
of two (at least 256 bytes) so row sizes show only their order of magnitude.

**Integrity record.** A sealed ``state`` row holds a write counter, the sequence counters, and
per table a multiset hash of its rows (sum mod 2^256 of ``HMAC(integrity_key, pack([table,
index columns, BLAKE2b(sealed)]))``). Unlock recomputes every table's hash: a row changed,
deleted, added, moved or replaced by an older copy of itself is refused with the table's name
(:class:`StoreCorrupted`), and while the store is open every read compares the row with the
fingerprint kept in memory. A second copy of the write counter lives in a small file next to
the store (``<store>.counter``, MAC'd under a key from the data key): a store older than its
counter file was rolled back, :class:`StoreRolledBack` (``accept_rollback`` accepts a
deliberate restore once). Unlock also runs ``PRAGMA quick_check`` and checks the SQLite header
field by field. **New tables**: a table of :data:`KV_TABLES` that neither the file nor the
record has (a store made before the table existed) is created empty at unlock and recorded in
the same commit; one that the record lists but the file lacks, or that the file has but the
record does not, is refused.

**Meta** (not secret): format version, store id, the KDF parameters and salt, the wrapped data
key (the wrap's AD binds id, format and KDF parameters), the count of failed unlocks, and the
sealed state.

**Throttle.** Before each unlock attempt the store waits :func:`throttle_delay` of the failures
so far (0, then 1, 2, 4 ... up to 300 s), then records one more failure *before* running
Argon2id (killing the process mid-attempt does not reset it), and resets the count on success.
The ``sleep`` function is injected. This slows guessing through this program; an attacker who
copies the file is slowed only by Argon2id's cost.

**Files.** The database is created 0600 (refused at open if others may read it: ``chmod 600``),
in a directory created 0700; SQLite gives its journal the database file's mode. The rollback
journal (``journal_mode=DELETE``) exists only during a write, and ``secure_delete`` zeroes what
a delete or update frees, so a deleted row (an expired message, a delivered envelope) cannot
be recovered from the file's free pages (``docs/e2e.md`` says why not WAL).

SQL is built only from literals and the fixed table whitelist, never from caller input (the
``noqa: S608`` markers); every value is a bound parameter.

**Why one module of ~920 lines:** the sealing rules (which columns each row's associated data
binds, the rollback counter, re-keying) must be read together with every table's reads and
writes to check that none skips them; split by table, a reader could not see at once that every
path seals.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from client.e2e.identity import UserIdentity
from client.e2e.safety import ContactVerification
from client.e2e.session import Session
from client.storage.errors import (
    StoreCorrupted,
    StoreError,
    StoreExists,
    StoreLocked,
    StoreMissing,
    StoreRolledBack,
    WrongPassphrase,
)
from client.storage.sealing import (
    COUNTER_CONTEXT,
    FORMAT_VERSION,
    KEY_LEN,
    NONCE_LEN,
    TAG_LEN,
    KdfParams,
    Sealer,
    fingerprint,
    throttle_delay,
    wrap_ad,
)
from client.storage.sqlite_header import (
    APPLICATION_ID,
    HEADER_LEN,
    PAGE_SIZE,
    SQLITE_VERSION_NUMBER,
    check_header,
    check_keyed_fields,
)
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError, MixnetError
from mixcore.files import exposure, write_atomic

STORE_ID_LEN = 16
SALT_LEN = 16
KV_TABLES = (
    "identity", "contacts", "sessions", "verification", "settings", "outbox", "inbox", "replay",
    # the messenger's own rooms (client/messenger/records.py says what each holds)
    "groups", "unconfirmed_cards", "read_marks", "delivery", "delivery_transport",
)
MESSAGES = "messages"
TABLES = (*KV_TABLES, MESSAGES)
BUSY_TIMEOUT_S = 10.0
_IDENTITY_ID = "self"
_MOD = 1 << 256


@dataclass(slots=True)
class _Tables:
    """What this program last wrote: per table, each row's index columns and fingerprint,
    and the tables' multiset hashes (the sealed integrity record holds the same hashes)."""

    rows: dict[str, dict[bytes, tuple[bytes, bytes]]]  # table -> key -> (conversation, fp)
    digests: dict[str, int]
    by_conversation: dict[bytes, set[bytes]]


def _empty_tables() -> _Tables:
    return _Tables({t: {} for t in TABLES}, dict.fromkeys(TABLES, 0), {})


class Store:
    """An unlocked store. Create with :meth:`create`, open with :meth:`open`, then
    :meth:`close` (or use as a context manager)."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, sealer: Sealer, *, fd: int | None = None
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._fd = fd  # kept open until after the connection closes (POSIX lock semantics)
        self.path = path
        self._sealer = sealer
        self._depth = 0
        self._tables = _empty_tables()
        self._counter = 0
        self._sequences: dict[str, int] = {}
        self._dirty = False
        self._undo: list[tuple[str, bytes, tuple[bytes, bytes] | None]] = []
        self._saved: tuple[int, dict[str, int], dict[str, int]] | None = None
        self.counter_write_failures = 0

    # -- lifecycle

    @property
    def revision(self) -> int:
        """The write counter: it moves with every committed change (for callers' caches)."""
        return self._counter

    @staticmethod
    def counter_path(path: str | os.PathLike[str]) -> Path:
        """The file next to the store that holds the second copy of its write counter."""
        path = Path(path)
        return path.with_name(path.name + ".counter")

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        passphrase: str | bytes,
        *,
        kdf: KdfParams | None = None,
    ) -> Store:
        """Make a new store at ``path`` (:class:`StoreExists` if something is there)."""
        kdf = kdf or KdfParams()
        kdf.check_strength()
        if not passphrase:
            raise StoreError("the passphrase must not be empty")
        path = Path(path)
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            raise StoreExists(f"{path} already exists") from None
        os.fchmod(fd, 0o600)
        os.close(fd)
        conn: sqlite3.Connection | None = None
        try:
            conn = cls._connect(path)
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            store_id = os.urandom(STORE_ID_LEN)
            data_key = os.urandom(KEY_LEN)
            salt = os.urandom(SALT_LEN)
            wrapped = cls._wrap(kdf, salt, store_id, passphrase, data_key)
            conn.execute("BEGIN IMMEDIATE")  # the whole schema in one commit
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)"
                         " WITHOUT ROWID")
            for table in KV_TABLES:
                _create_kv(conn, table)
            conn.execute(
                f"CREATE TABLE {MESSAGES} (key BLOB PRIMARY KEY, conversation BLOB NOT NULL,"
                " sealed BLOB NOT NULL) WITHOUT ROWID"
            )
            conn.execute(f"CREATE INDEX messages_conv ON {MESSAGES} (conversation)")
            conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [
                    ("format", pack(FORMAT_VERSION)),
                    ("store_id", store_id),
                    ("kdf", pack([salt, kdf.memory_kib, kdf.iterations, kdf.lanes])),
                    ("wrapped_key", wrapped),
                    ("failures", pack(0)),
                    ("state", b""),
                ],
            )
            conn.execute("COMMIT")
            store = cls(conn, path, Sealer(data_key, store_id))
            with store._transaction():
                store._dirty = True  # the first integrity record and counter file
        except BaseException:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            path.unlink(missing_ok=True)
            cls.counter_path(path).unlink(missing_ok=True)
            raise
        return store

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        passphrase: str | bytes,
        *,
        sleep: Callable[[float], None] = time.sleep,
        accept_rollback: bool = False,
    ) -> Store:
        """Unlock the store; :class:`WrongPassphrase` (slowed down after repeated failures),
        :class:`StoreMissing`, :class:`StoreLocked` (unsafe file mode), :class:`StoreCorrupted`
        (a damaged file, a header or any row changed outside this program),
        :class:`StoreRolledBack` (older than its counter file; ``accept_rollback`` accepts a
        deliberate restore and records the store's counter as the new reference)."""
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise StoreMissing(f"no store at {path} (create one first)") from None
        problem = exposure(path, st, "store")
        if problem:
            raise StoreLocked(problem)
        # Closing any descriptor of a file drops every POSIX lock this process holds on it, so
        # the one that reads the raw header stays open as long as the SQLite connection.
        fd = os.open(path, os.O_RDONLY)
        try:
            conn = cls._connect(path)
        except BaseException:
            os.close(fd)
            raise
        try:
            header, meta = cls._check_file(conn, path, fd)
            store_id, kdf, salt, wrapped, failures = meta
            delay = throttle_delay(failures)
            if delay > 0:
                sleep(delay)
            cls._set_failures(conn, failures + 1)  # count the attempt before spending the time
            data_key = cls._unwrap(kdf, salt, store_id, passphrase, wrapped)
            if data_key is None:
                raise WrongPassphrase(failures + 1, throttle_delay(failures + 1))
            store = cls(conn, path, Sealer(data_key, store_id), fd=fd)
            store._load(header, accept_rollback=accept_rollback)
            cls._set_failures(conn, 0)
        except BaseException:
            conn.close()
            os.close(fd)
            raise
        return store

    @staticmethod
    def failed_attempts(path: str | os.PathLike[str]) -> int:
        """The persisted count of wrong passphrases in a row (readable without unlocking)."""
        conn = Store._connect(Path(path))
        try:
            return Store._read_meta(conn)[4]
        finally:
            conn.close()

    def change_passphrase(
        self,
        old: str | bytes,
        new: str | bytes,
        *,
        kdf: KdfParams | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Re-key: check ``old`` (throttled like an unlock), draw a new data key, re-seal every
        row under it, wrap it under ``new`` (fresh salt; optionally new KDF parameters), then
        vacuum so no page of the old rows stays in the file. On :class:`WrongPassphrase`, or
        any error before the commit, nothing changes."""
        if not new:
            raise StoreError("the passphrase must not be empty")
        if self._depth:
            raise StoreError("cannot change the passphrase inside a transaction")
        conn = self._db()
        store_id, cur_kdf, salt, wrapped, failures = self._read_meta(conn)
        delay = throttle_delay(failures)
        if delay > 0:
            sleep(delay)
        self._set_failures(conn, failures + 1)
        if self._unwrap(cur_kdf, salt, store_id, old, wrapped) is None:
            raise WrongPassphrase(failures + 1, throttle_delay(failures + 1))
        kdf = kdf or cur_kdf
        if kdf == cur_kdf:
            kdf.check()  # keeping the parameters the store was made with
        else:
            kdf.check_strength()
        data_key = os.urandom(KEY_LEN)
        new_salt = os.urandom(SALT_LEN)
        new_wrapped = self._wrap(kdf, new_salt, store_id, new, data_key)
        old_sealer, new_sealer = self._sealer, Sealer(data_key, store_id)
        # The counter file accepts both keys until the new one is committed (a crash in
        # between leaves a store that either key's counter MAC vouches for).
        self._write_counter(self._counter, [old_sealer, new_sealer])
        rows = {t: self._all(t) for t in TABLES}
        old_tables = self._tables
        try:
            with self._transaction():
                self._sealer, self._tables = new_sealer, _empty_tables()
                for table in KV_TABLES:
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608
                    for row_id, value in rows[table]:
                        self._put(table, row_id, value)
                conn.execute(f"DELETE FROM {MESSAGES}")  # noqa: S608
                for seq, conv_id, body in rows[MESSAGES]:
                    self._insert_message(seq, conv_id, body)
                conn.execute(
                    "UPDATE meta SET value = ? WHERE name = 'kdf'",
                    (pack([new_salt, kdf.memory_kib, kdf.iterations, kdf.lanes]),),
                )
                conn.execute("UPDATE meta SET value = ? WHERE name = 'wrapped_key'",
                             (new_wrapped,))
                conn.execute("UPDATE meta SET value = ? WHERE name = 'failures'", (pack(0),))
        except BaseException:
            self._sealer, self._tables = old_sealer, old_tables
            raise
        conn.execute("VACUUM")  # rebuild the file from the live rows only
        with self._transaction():
            self._dirty = True  # VACUUM moved the schema cookie: record it

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generic sealed key/value rows

    def put(self, table: str, row_id: str, value: bytes) -> None:
        self._kv(table)
        with self._transaction():
            self._put(table, row_id, bytes(value))

    def get(self, table: str, row_id: str) -> bytes | None:
        self._kv(table)
        key = self._sealer.row_key(table, row_id)
        rows = self._fetch(f"SELECT sealed FROM {table} WHERE key = ?", (key,))  # noqa: S608
        sealed = rows[0][0] if rows else None
        self._check_row(table, key, b"", sealed)
        if sealed is None:
            return None
        stored_id, value = self._open_kv(table, key, sealed)
        if stored_id != row_id:
            raise StoreCorrupted(f"a row of table {table!r} holds another id than its key")
        return value

    def delete(self, table: str, row_id: str) -> bool:
        self._kv(table)
        key = self._sealer.row_key(table, row_id)
        with self._transaction():
            cur = self._db().execute(f"DELETE FROM {table} WHERE key = ?", (key,))  # noqa: S608
            if cur.rowcount:
                self._record(table, key, None)
        return cur.rowcount > 0

    def items(self, table: str) -> list[tuple[str, bytes]]:
        """All ``(id, value)`` of a table (each row authenticated), sorted by id."""
        self._kv(table)
        found = self._fetch(f"SELECT key, sealed FROM {table}")  # noqa: S608
        self._check_set(table, {k for k, _ in found}, set(self._tables.rows[table]))
        out = []
        for key, sealed in found:
            self._check_row(table, key, b"", sealed)
            row_id, value = self._open_kv(table, key, sealed)
            if self._sealer.row_key(table, row_id) != key:
                raise StoreCorrupted(f"a row of table {table!r} holds another id than its key")
            out.append((row_id, value))
        return sorted(out)

    def ids(self, table: str) -> list[str]:
        return [row_id for row_id, _ in self.items(table)]

    def next_sequence(self, name: str) -> int:
        """The next number of a named counter kept in the sealed integrity record (1, 2 ...).
        Counts only inside a transaction that commits."""
        with self._transaction():
            value = self._sequences.get(name, 0) + 1
            self._sequences[name] = value
            self._dirty = True
        return value

    # -- messages

    def add_message(self, contact_id: str, body: bytes) -> int:
        """Append a message (the caller's encoding: direction, time, text...) to a
        conversation; returns its sequence number (kept only inside the sealed row)."""
        with self._transaction():
            seq = self.next_sequence(MESSAGES)
            self._insert_message(seq, contact_id, bytes(body))
        return seq

    def messages(
        self, contact_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        conv = self._sealer.index("conversation", contact_id)
        found = self._fetch("SELECT key, sealed FROM messages WHERE conversation = ?", (conv,))
        self._check_set(MESSAGES, {k for k, _ in found},
                        self._tables.by_conversation.get(conv, set()))
        out = []
        for key, sealed in found:
            self._check_row(MESSAGES, key, conv, sealed)
            seq, stored_conv, body = self._sealer.open(MESSAGES, [key, conv], sealed, 3)
            if stored_conv != contact_id or not isinstance(seq, int) or not isinstance(body, bytes):
                raise StoreCorrupted("a message row holds another conversation than its index")
            if self._sealer.index(MESSAGES, str(seq)) != key:
                raise StoreCorrupted("a message row holds another number than its key")
            if seq > after:
                out.append((seq, body))
        out.sort()
        return out if limit is None else out[:limit]

    def delete_message(self, seq: int) -> bool:
        key = self._sealer.index(MESSAGES, str(seq))
        with self._transaction():
            cur = self._db().execute("DELETE FROM messages WHERE key = ?", (key,))
            if cur.rowcount:
                self._record(MESSAGES, key, None)
        return cur.rowcount > 0

    def delete_conversation(self, contact_id: str) -> int:
        conv = self._sealer.index("conversation", contact_id)
        with self._transaction():
            keys = [k for (k,) in self._fetch(
                "SELECT key FROM messages WHERE conversation = ?", (conv,))]
            for key in keys:
                self._db().execute("DELETE FROM messages WHERE key = ?", (key,))
                self._record(MESSAGES, key, None)
        return len(keys)

    # -- typed helpers for the end-to-end objects

    def save_identity(self, identity: UserIdentity) -> None:
        self.put("identity", _IDENTITY_ID, identity.to_bytes())

    def load_identity(self) -> UserIdentity | None:
        data = self.get("identity", _IDENTITY_ID)
        return None if data is None else _parse(UserIdentity.from_bytes, data, "identity")

    def save_session(self, contact_id: str, session: Session) -> None:
        self.put("sessions", contact_id, session.to_bytes())

    def load_session(self, contact_id: str) -> Session | None:
        data = self.get("sessions", contact_id)
        return None if data is None else _parse(Session.from_bytes, data, "session")

    def sessions(self) -> dict[str, Session]:
        return {cid: _parse(Session.from_bytes, d, "session") for cid, d in self.items("sessions")}

    def save_verification(self, contact_id: str, verification: ContactVerification) -> None:
        self.put("verification", contact_id, verification.to_bytes())

    def load_verification(self, contact_id: str) -> ContactVerification | None:
        data = self.get("verification", contact_id)
        if data is None:
            return None
        return _parse(ContactVerification.from_bytes, data, "verification")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes (e.g. a session update and the message it decrypted) atomically."""
        with self._transaction():
            yield

    # -- rows and the integrity record

    def _put(self, table: str, row_id: str, value: bytes) -> None:
        key = self._sealer.row_key(table, row_id)
        sealed = self._sealer.seal(table, [key], [row_id, value])
        self._db().execute(
            f"INSERT OR REPLACE INTO {table} (key, sealed) VALUES (?, ?)",  # noqa: S608
            (key, sealed),
        )
        self._record(table, key, (b"", fingerprint(sealed)))

    def _insert_message(self, seq: int, contact_id: str, body: bytes) -> None:
        key = self._sealer.index(MESSAGES, str(seq))
        conv = self._sealer.index("conversation", contact_id)
        sealed = self._sealer.seal(MESSAGES, [key, conv], [seq, contact_id, body])
        self._db().execute(
            "INSERT INTO messages (key, conversation, sealed) VALUES (?, ?, ?)",
            (key, conv, sealed),
        )
        self._record(MESSAGES, key, (conv, fingerprint(sealed)))

    def _open_kv(self, table: str, key: bytes, sealed: Any) -> tuple[str, bytes]:
        row_id, value = self._sealer.open(table, [key], sealed, 2)
        if not isinstance(row_id, str) or not isinstance(value, bytes):
            raise StoreCorrupted(f"a row of table {table!r} has a malformed body")
        return row_id, value

    def _entry(self, table: str, key: bytes, row: tuple[bytes, bytes]) -> int:
        conv, fp = row
        cols = [key, conv] if table == MESSAGES else [key]
        return self._sealer.entry(table, cols, fp)

    def _record(self, table: str, key: bytes, row: tuple[bytes, bytes] | None) -> None:
        """Bring the in-memory record (and the table's hash) to a row's new value."""
        t = self._tables
        old = t.rows[table].get(key)
        self._undo.append((table, key, old))
        if old is not None:
            t.digests[table] = (t.digests[table] - self._entry(table, key, old)) % _MOD
            del t.rows[table][key]
            if table == MESSAGES:
                t.by_conversation.get(old[0], set()).discard(key)
        if row is not None:
            t.digests[table] = (t.digests[table] + self._entry(table, key, row)) % _MOD
            t.rows[table][key] = row
            if table == MESSAGES:
                t.by_conversation.setdefault(row[0], set()).add(key)
        self._dirty = True

    def _check_row(self, table: str, key: bytes, conv: bytes, sealed: Any) -> None:
        expected = self._tables.rows[table].get(key)
        where = f"a row of table {table!r}"
        if sealed is None:
            if expected is not None:
                raise StoreCorrupted(f"{where} is missing (deleted outside this program)")
            return
        if expected is None:
            raise StoreCorrupted(f"{where} was added outside this program")
        if not isinstance(sealed, bytes) or (conv, fingerprint(sealed)) != expected:
            raise StoreCorrupted(
                f"{where} is not the one this program wrote last (an older copy, or changed "
                "outside this program)"
            )

    def _check_set(self, table: str, found: set[bytes], expected: set[bytes]) -> None:
        if found - expected:
            raise StoreCorrupted(f"a row of table {table!r} was added outside this program")
        if expected - found:
            raise StoreCorrupted(f"a row of table {table!r} is missing (deleted outside this "
                                 "program)")

    def _all(self, table: str) -> list[Any]:
        """Every row of a table, opened and checked (for re-keying)."""
        if table != MESSAGES:
            return self.items(table)
        found = self._fetch("SELECT key, conversation, sealed FROM messages")
        self._check_set(MESSAGES, {k for k, _, _ in found}, set(self._tables.rows[MESSAGES]))
        out = []
        for key, conv, sealed in found:
            self._check_row(MESSAGES, key, conv, sealed)
            seq, conv_id, body = self._sealer.open(MESSAGES, [key, conv], sealed, 3)
            out.append((seq, conv_id, body))
        return out

    def _state(self) -> list[Any]:
        cookie = self._db().execute("PRAGMA schema_version").fetchone()[0]
        return [
            self._counter,
            sorted([k, v] for k, v in self._sequences.items()),
            [[t, self._tables.digests[t].to_bytes(32, "big")] for t in TABLES],
            cookie,
            SQLITE_VERSION_NUMBER,
        ]

    def _load(self, header: bytes, *, accept_rollback: bool) -> None:
        """Read the integrity record, recompute every table's hash from the file and compare;
        then compare the write counter with the counter file's."""
        counter_file = self._read_counter()  # before the store: the store is written first
        conn = self._db()
        try:
            conn.execute("BEGIN")  # one snapshot for the record and the rows
            try:
                sealed_state = conn.execute(
                    "SELECT value FROM meta WHERE name = 'state'").fetchone()
                state = self._sealer.open_state(sealed_state[0] if sealed_state else b"")
                tables = _empty_tables()
                present = {_text(name) for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                missing = [t for t in KV_TABLES if t not in present]
                for table in KV_TABLES:
                    if table in missing:
                        continue
                    for key, sealed in conn.execute(f"SELECT key, sealed FROM {table}"):  # noqa: S608
                        self._load_row(tables, table, key, b"", sealed)
                for key, conv, sealed in conn.execute(
                    "SELECT key, conversation, sealed FROM messages"
                ):
                    self._load_row(tables, MESSAGES, key, conv, sealed)
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"{self.path}: the database is damaged ({exc})") from None
        try:
            counter, sequences, digests, cookie, version = expect_list(state, 5, "state")
            counter = expect_int(counter, "counter", lo=0, hi=1 << 62)
            seqs = {str(k): expect_int(v, "sequence", lo=0, hi=1 << 62) for k, v in sequences}
            recorded = {str(t): int.from_bytes(expect_bytes(d, "digest", length=32), "big")
                        for t, d in digests}
        except (DecodeError, TypeError, ValueError):
            raise StoreCorrupted("the store's integrity record is malformed") from None
        dropped = [t for t in missing if t in recorded]
        if dropped:
            names = ", ".join(f"table {t!r}" for t in dropped)
            raise StoreCorrupted(f"{self.path}: {names} of the store's integrity record is "
                                 "missing from the file (dropped outside this program)")
        # a table the record does not know is a new one (the store predates it): none in the
        # file, no rows, hash 0; one that is in the file but not in the record is refused
        bad = [t for t in TABLES
               if recorded.get(t, 0 if t in missing else None) != tables.digests[t]]
        if bad:
            names = ", ".join(f"table {t!r}" for t in bad)
            raise StoreCorrupted(
                f"{self.path}: the rows of {names} do not match the store's integrity record:"
                " rows were changed, removed, added or replaced by older copies outside this"
                " program"
            )
        check_keyed_fields(header, self.path, cookie=cookie, version=version)
        self._tables, self._counter, self._sequences = tables, counter, seqs
        if not accept_rollback:
            self._check_counter(counter_file)
        if counter_file is None or accept_rollback or counter_file[0] < counter:
            self._write_counter(counter, [self._sealer])
        if missing:
            self._add_tables(missing)

    def _add_tables(self, tables: list[str]) -> None:
        """Create the tables a store made by an earlier version lacks, and record them (empty)
        in the integrity record with the new schema cookie, in one commit."""
        with self._transaction():
            for table in tables:
                _create_kv(self._db(), table)
            self._dirty = True

    def _load_row(self, tables: _Tables, table: str, key: Any, conv: Any, sealed: Any) -> None:
        if not isinstance(key, bytes) or not isinstance(conv, bytes) or not isinstance(
            sealed, bytes
        ) or key in tables.rows[table]:
            raise StoreCorrupted(
                f"{self.path}: the rows of table {table!r} do not match the store's integrity "
                "record: a row holds a value that this program never writes"
            )
        row = (conv, fingerprint(sealed))
        tables.rows[table][key] = row
        tables.digests[table] = (tables.digests[table] + self._entry(table, key, row)) % _MOD
        if table == MESSAGES:
            tables.by_conversation.setdefault(conv, set()).add(key)

    # -- the counter file

    def _read_counter(self) -> tuple[int, list[bytes]] | None:
        path = self.counter_path(self.path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreCorrupted(f"cannot read the counter file {path}: {exc.strerror}") from None
        try:
            ctx, store_id, counter, macs = expect_list(unpack_canonical(data), 4, "counter")
            if ctx != COUNTER_CONTEXT or store_id != self._sealer.store_id:
                raise DecodeError("another store")
            counter = expect_int(counter, "counter", lo=0, hi=1 << 62)
            if not isinstance(macs, list) or not 1 <= len(macs) <= 2:
                raise DecodeError("macs")
            macs = [expect_bytes(m, "mac", length=32) for m in macs]
        except (DecodeError, TypeError):
            raise StoreRolledBack(self._rollback_text(
                f"its counter file {path} belongs to another store or is damaged")) from None
        return counter, macs

    def _check_counter(self, found: tuple[int, list[bytes]] | None) -> None:
        path = self.counter_path(self.path)
        if found is None:
            raise StoreRolledBack(self._rollback_text(
                f"its counter file {path} is missing (deleted, or the store was copied without "
                "it), so an older copy cannot be ruled out"))
        counter, macs = found
        if not any(hmac.compare_digest(m, self._sealer.counter_mac(counter)) for m in macs):
            raise StoreRolledBack(self._rollback_text(
                f"its counter file {path} was not written with this store's key (forged, or "
                "the store is an older copy from before a passphrase change)"))
        if counter > self._counter:
            raise StoreRolledBack(self._rollback_text(
                f"it is an older copy than its counter file records (store at write "
                f"{self._counter}, counter file at {counter}): rolled back, or restored from a "
                "backup"))

    def _rollback_text(self, why: str) -> str:
        return (
            f"{self.path}: {why}. If you restored this copy yourself, accept it once with: "
            f"mixnet client accept-restore --dir {self.path.parent}"
        )

    def _write_counter(self, counter: int, sealers: list[Sealer]) -> None:
        body = pack([COUNTER_CONTEXT, self._sealer.store_id, counter,
                     [s.counter_mac(counter) for s in sealers]])
        try:
            write_atomic(self.counter_path(self.path), body)
        except OSError:
            self.counter_write_failures += 1  # the store stays ahead: detection only weakens

    # -- internals

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db()
        if self._depth == 0:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"the store cannot be written: {exc}") from None
            self._undo, self._dirty = [], False
            self._saved = (self._counter, dict(self._sequences), dict(self._tables.digests))
        self._depth += 1
        try:
            yield
        except BaseException as exc:
            self._depth -= 1
            if self._depth == 0:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self._revert()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"the store cannot be written: {exc}") from None
            raise
        self._depth -= 1
        if self._depth == 0:
            if not self._dirty:
                db.execute("COMMIT")
                return
            try:
                self._counter += 1
                db.execute("UPDATE meta SET value = ? WHERE name = 'state'",
                           (self._sealer.seal_state(self._state()),))
                db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self._revert()
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"the store cannot be written: {exc}") from None
                raise
            self._undo = []
            self._write_counter(self._counter, [self._sealer])

    def _revert(self) -> None:
        t = self._tables
        for table, key, old in reversed(self._undo):
            cur = t.rows[table].pop(key, None)
            if table == MESSAGES and cur is not None:
                t.by_conversation.get(cur[0], set()).discard(key)
            if old is not None:
                t.rows[table][key] = old
                if table == MESSAGES:
                    t.by_conversation.setdefault(old[0], set()).add(key)
        assert self._saved is not None
        self._counter, self._sequences, t.digests = self._saved
        self._undo, self._dirty = [], False

    def _fetch(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db().execute(query, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"the database cannot be read: {exc}") from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreLocked("the store is closed")
        return self._conn

    @staticmethod
    def _kv(table: str) -> None:
        if table not in KV_TABLES:
            raise StoreError(f"unknown table {table!r}; one of {', '.join(KV_TABLES)}")

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            conn.text_factory = bytes  # a value tampered into TEXT must reach the AEAD check
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"{path} is not a store database: {exc}") from None
        return conn

    @classmethod
    def _check_file(
        cls, conn: sqlite3.Connection, path: Path, fd: int
    ) -> tuple[bytes, tuple[bytes, KdfParams, bytes, bytes, int]]:
        """Under a read lock: the raw header checked field by field, ``PRAGMA quick_check``,
        and the meta rows. Returns the header (for the checks that need the key) and meta."""
        try:
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                header = os.pread(fd, HEADER_LEN, 0)
                check_header(header, path)
                result = conn.execute("PRAGMA quick_check").fetchall()
                if result not in ([(b"ok",)], [("ok",)]):
                    first = result[0][0] if result else b"?"
                    text = first.decode(errors="replace") if isinstance(first, bytes) else first
                    raise StoreCorrupted(
                        f"{path}: the database failed its integrity check (the file is damaged:"
                        f" {text.splitlines()[-1][:120]})"
                    )
                meta = cls._read_meta(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"{path}: the database is damaged or not a store ({exc})"
                                 ) from None
        return header, meta

    @staticmethod
    def _set_failures(conn: sqlite3.Connection, failures: int) -> None:
        try:
            with conn:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'failures'",
                             (pack(failures),))
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"the store cannot be written: {exc}") from None

    @staticmethod
    def _read_meta(conn: sqlite3.Connection) -> tuple[bytes, KdfParams, bytes, bytes, int]:
        try:
            meta = {
                (k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v
                for k, v in conn.execute("SELECT name, value FROM meta").fetchall()
            }
            if unpack_canonical(meta["format"]) != FORMAT_VERSION:
                raise StoreCorrupted("store has an unsupported format version")
            store_id = expect_bytes(meta["store_id"], "store id", length=STORE_ID_LEN)
            salt, memory, iterations, lanes = expect_list(unpack_canonical(meta["kdf"]), 4, "kdf")
            salt = expect_bytes(salt, "salt", length=SALT_LEN)
            kdf = KdfParams(
                expect_int(memory, "memory", lo=1, hi=1 << 32),
                expect_int(iterations, "iterations", lo=1, hi=1 << 32),
                expect_int(lanes, "lanes", lo=1, hi=1 << 24),
            )
            kdf.check()
            wrapped = expect_bytes(
                meta["wrapped_key"], "wrapped key", length=NONCE_LEN + KEY_LEN + TAG_LEN
            )
            failures = expect_int(unpack_canonical(meta["failures"]), "failures", lo=0, hi=1 << 62)
        except (sqlite3.DatabaseError, KeyError, DecodeError, TypeError) as exc:
            raise StoreCorrupted(f"store header is missing or malformed: {exc}") from None
        return store_id, kdf, salt, wrapped, failures

    @staticmethod
    def _wrap(
        kdf: KdfParams, salt: bytes, store_id: bytes, passphrase: str | bytes, data_key: bytes
    ) -> bytes:
        kek = kdf.derive(passphrase, salt)
        nonce = os.urandom(NONCE_LEN)
        return nonce + ChaCha20Poly1305(kek).encrypt(nonce, data_key, wrap_ad(kdf, salt, store_id))

    @staticmethod
    def _unwrap(
        kdf: KdfParams, salt: bytes, store_id: bytes, passphrase: str | bytes, wrapped: bytes
    ) -> bytes | None:
        kek = kdf.derive(passphrase, salt)
        try:
            return ChaCha20Poly1305(kek).decrypt(
                wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], wrap_ad(kdf, salt, store_id)
            )
        except InvalidTag:
            return None


def _create_kv(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(f"CREATE TABLE {table} (key BLOB PRIMARY KEY,"
                 " sealed BLOB NOT NULL) WITHOUT ROWID")


def _text(value: str | bytes) -> str:
    """A name from ``sqlite_master`` (the connection returns text as bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


T = TypeVar("T")

def _parse(fn: Callable[[bytes], T], data: bytes, what: str) -> T:
    try:
        return fn(data)
    except MixnetError as exc:
        raise StoreCorrupted(f"stored {what} does not parse: {exc}") from None
