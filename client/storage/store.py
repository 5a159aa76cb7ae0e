"""The encrypted local store.

**Keys.** At ``create`` a random 256-bit *data key* is drawn. The passphrase goes through
Argon2id (``cryptography``'s KDF; default 64 MiB, 3 passes, 4 lanes, 16-byte random salt) to a
*key-encryption key* that wraps the data key with ChaCha20-Poly1305. Changing the passphrase
re-wraps the data key under a new salt and KEK in one transaction: no row is re-encrypted and
nothing is lost. A wrong passphrase fails the wrap's authentication: :class:`WrongPassphrase`.

**Rows.** Tables ``identity``, ``contacts``, ``sessions``, ``verification``, ``settings``
(``key BLOB PRIMARY KEY, sealed BLOB``) and ``messages`` (``seq INTEGER PRIMARY KEY,
conversation BLOB, sealed BLOB``). A row's ``key`` is ``HMAC-SHA256(index_key, table || 0 ||
id)[:16]`` so even the caller's ids (contact names...) are not in the file; the id is stored
inside the sealed value. ``sealed = nonce(12) || ChaCha20-Poly1305(row_key, nonce,
pack([id, value]), ad)`` with ``ad = pack(["mixnet-store-row-v1", store_id, table, key])``
(messages: ``[..., "messages", seq, conversation]``): a row copied or moved to another id or
table, truncated or altered fails authentication and raises :class:`StoreCorrupted`.
``index_key`` and ``row_key`` come from the data key by HKDF-SHA256.

**Meta** (not secret, authenticated by the wrap's AD where it matters): format version, store
id, the KDF parameters and salt, the wrapped data key, and the count of failed unlocks in a row.

**Throttle.** Before each unlock attempt the store waits :func:`throttle_delay` of the failures
so far (0, then 1, 2, 4 ... up to 300 s), then records one more failure *before* running
Argon2id (killing the process mid-attempt does not reset it), and resets the count on success.
The ``sleep`` function is injected. This slows guessing through this program; an attacker who
copies the file is slowed only by Argon2id's cost.

SQL is built only from literals and the fixed table whitelist (``KV_TABLES``), never from
caller input (the ``noqa: S608`` markers); every value is a bound parameter.

**Files.** The database is created 0600 (refused at open if others may read it: ``chmod 600``),
in a directory created 0700; SQLite gives its journal the database file's mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.e2e.identity import UserIdentity
from client.e2e.safety import ContactVerification
from client.e2e.session import Session
from client.storage.errors import (
    StoreCorrupted,
    StoreError,
    StoreExists,
    StoreLocked,
    StoreMissing,
    WrongPassphrase,
)
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError, MixnetError
from mixcore.files import exposure

FORMAT_VERSION = 1
KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
ROW_KEY_LEN = 16
STORE_ID_LEN = 16
SALT_LEN = 16
KV_TABLES = ("identity", "contacts", "sessions", "verification", "settings")
MESSAGES = "messages"
THROTTLE_BASE = 1.0
THROTTLE_MAX = 300.0
_WRAP_CONTEXT = "mixnet-store-key-v1"
_ROW_CONTEXT = "mixnet-store-row-v1"
_IDENTITY_ID = "self"


def throttle_delay(failures: int) -> float:
    """Seconds to wait before an unlock attempt after ``failures`` wrong ones in a row."""
    if failures <= 0:
        return 0.0
    return min(THROTTLE_BASE * 2.0 ** min(failures - 1, 30), THROTTLE_MAX)


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters (RFC 9106's second recommended option is 64 MiB, t=3, p=4)."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    @classmethod
    def fast_for_tests(cls) -> KdfParams:
        return cls(memory_kib=8 * 4, iterations=1, lanes=4)

    def check(self) -> None:
        if not (8 * self.lanes <= self.memory_kib <= 4 * 1024 * 1024):
            raise StoreCorrupted("store header: Argon2id memory out of range")
        if not (1 <= self.iterations <= 64 and 1 <= self.lanes <= 64):
            raise StoreCorrupted("store header: Argon2id iterations or lanes out of range")

    def derive(self, passphrase: str | bytes, salt: bytes) -> bytes:
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
        return Argon2id(
            salt=salt,
            length=KEY_LEN,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        ).derive(secret)


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=info).derive(key)


class Sealer:
    """Seals and opens rows under keys derived from the data key."""

    __slots__ = ("_aead", "_index_key", "store_id")

    def __init__(self, data_key: bytes, store_id: bytes) -> None:
        self._aead = ChaCha20Poly1305(_hkdf(data_key, b"mixnet-store-rows-v1"))
        self._index_key = _hkdf(data_key, b"mixnet-store-index-v1")
        self.store_id = store_id

    def row_key(self, table: str, row_id: str) -> bytes:
        msg = table.encode() + b"\x00" + row_id.encode("utf-8")
        return hmac.new(self._index_key, msg, hashlib.sha256).digest()[:ROW_KEY_LEN]

    def _ad(self, table: str, locator: list[Any]) -> bytes:
        return pack([_ROW_CONTEXT, self.store_id, table, *locator])

    def seal(self, table: str, locator: list[Any], row_id: str, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, pack([row_id, value]), self._ad(table, locator))

    def open(self, table: str, locator: list[Any], sealed: Any) -> tuple[str, bytes]:
        """Authenticate and open a row; :class:`StoreCorrupted` on any mismatch."""
        where = f"a row of table {table!r}"
        if not isinstance(sealed, bytes) or len(sealed) < NONCE_LEN + TAG_LEN:
            raise StoreCorrupted(f"{where} is truncated or not a sealed value")
        try:
            plain = self._aead.decrypt(
                sealed[:NONCE_LEN], sealed[NONCE_LEN:], self._ad(table, locator)
            )
        except InvalidTag:
            raise StoreCorrupted(
                f"{where} failed authentication (tampered, truncated or moved from another row)"
            ) from None
        try:
            row_id, value = expect_list(unpack_canonical(plain), 2, "row")
            if not isinstance(row_id, str):
                raise DecodeError("row id")
            value = expect_bytes(value, "row value", max_len=1 << 30)
        except DecodeError:
            raise StoreCorrupted(f"{where} has a malformed body") from None
        return row_id, value


def _wrap_ad(params: KdfParams, salt: bytes, store_id: bytes) -> bytes:
    return pack(
        [
            _WRAP_CONTEXT,
            FORMAT_VERSION,
            store_id,
            salt,
            params.memory_kib,
            params.iterations,
            params.lanes,
        ]
    )


class Store:
    """An unlocked store. Create with :meth:`create`, open with :meth:`open`, then
    :meth:`close` (or use as a context manager)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, sealer: Sealer) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._sealer = sealer
        self._depth = 0

    # -- lifecycle

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
        kdf.check()
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
        try:
            conn = cls._connect(path)
            store_id = os.urandom(STORE_ID_LEN)
            data_key = os.urandom(KEY_LEN)
            salt = os.urandom(SALT_LEN)
            wrapped = cls._wrap(kdf, salt, store_id, passphrase, data_key)
            with conn:
                conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
                for table in KV_TABLES:
                    conn.execute(
                        f"CREATE TABLE {table} (key BLOB PRIMARY KEY, sealed BLOB NOT NULL)"
                    )
                conn.execute(
                    f"CREATE TABLE {MESSAGES} (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " conversation BLOB NOT NULL, sealed BLOB NOT NULL)"
                )
                conn.execute(f"CREATE INDEX messages_conv ON {MESSAGES} (conversation, seq)")
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [
                        ("format", pack(FORMAT_VERSION)),
                        ("store_id", store_id),
                        ("kdf", pack([salt, kdf.memory_kib, kdf.iterations, kdf.lanes])),
                        ("wrapped_key", wrapped),
                        ("failures", pack(0)),
                    ],
                )
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            path.unlink(missing_ok=True)
            raise
        return cls(conn, path, Sealer(data_key, store_id))

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        passphrase: str | bytes,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Store:
        """Unlock the store; :class:`WrongPassphrase` (slowed down after repeated failures),
        :class:`StoreMissing`, :class:`StoreLocked` (unsafe file mode), :class:`StoreCorrupted`."""
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise StoreMissing(f"no store at {path} (create one first)") from None
        problem = exposure(path, st, "store")
        if problem:
            raise StoreLocked(problem)
        conn = cls._connect(path)
        try:
            store_id, kdf, salt, wrapped, failures = cls._read_meta(conn)
            delay = throttle_delay(failures)
            if delay > 0:
                sleep(delay)
            with conn:  # count the attempt before spending the time on it
                conn.execute(
                    "UPDATE meta SET value = ? WHERE name = 'failures'", (pack(failures + 1),)
                )
            data_key = cls._unwrap(kdf, salt, store_id, passphrase, wrapped)
            if data_key is None:
                raise WrongPassphrase(failures + 1, throttle_delay(failures + 1))
            with conn:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'failures'", (pack(0),))
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, Sealer(data_key, store_id))

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
        """Re-wrap the data key under ``new`` (fresh salt; optionally new KDF parameters).
        ``old`` is checked first, throttled like an unlock; on :class:`WrongPassphrase`
        nothing changes."""
        if not new:
            raise StoreError("the passphrase must not be empty")
        conn = self._db()
        store_id, cur_kdf, salt, wrapped, failures = self._read_meta(conn)
        delay = throttle_delay(failures)
        if delay > 0:
            sleep(delay)
        with conn:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'failures'", (pack(failures + 1),))
        data_key = self._unwrap(cur_kdf, salt, store_id, old, wrapped)
        if data_key is None:
            raise WrongPassphrase(failures + 1, throttle_delay(failures + 1))
        kdf = kdf or cur_kdf
        kdf.check()
        new_salt = os.urandom(SALT_LEN)
        new_wrapped = self._wrap(kdf, new_salt, store_id, new, data_key)
        with self._transaction():
            conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'kdf'",
                (pack([new_salt, kdf.memory_kib, kdf.iterations, kdf.lanes]),),
            )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'wrapped_key'", (new_wrapped,))
            conn.execute("UPDATE meta SET value = ? WHERE name = 'failures'", (pack(0),))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generic sealed key/value rows

    def put(self, table: str, row_id: str, value: bytes) -> None:
        self._kv(table)
        key = self._sealer.row_key(table, row_id)
        sealed = self._sealer.seal(table, [key], row_id, bytes(value))
        with self._transaction():
            self._db().execute(
                f"INSERT OR REPLACE INTO {table} (key, sealed) VALUES (?, ?)",  # noqa: S608
                (key, sealed),
            )

    def get(self, table: str, row_id: str) -> bytes | None:
        self._kv(table)
        key = self._sealer.row_key(table, row_id)
        row = self._fetch(f"SELECT sealed FROM {table} WHERE key = ?", (key,))  # noqa: S608
        row = row[0] if row else None
        if row is None:
            return None
        stored_id, value = self._sealer.open(table, [key], row[0])
        if stored_id != row_id:
            raise StoreCorrupted(f"a row of table {table!r} holds another id than its key")
        return value

    def delete(self, table: str, row_id: str) -> bool:
        self._kv(table)
        key = self._sealer.row_key(table, row_id)
        with self._transaction():
            cur = self._db().execute(f"DELETE FROM {table} WHERE key = ?", (key,))  # noqa: S608
        return cur.rowcount > 0

    def items(self, table: str) -> list[tuple[str, bytes]]:
        """All ``(id, value)`` of a table (each row authenticated), sorted by id."""
        self._kv(table)
        out = []
        for key, sealed in self._fetch(f"SELECT key, sealed FROM {table}"):  # noqa: S608
            row_id, value = self._sealer.open(table, [key], sealed)
            if not isinstance(key, bytes) or self._sealer.row_key(table, row_id) != key:
                raise StoreCorrupted(f"a row of table {table!r} holds another id than its key")
            out.append((row_id, value))
        return sorted(out)

    def ids(self, table: str) -> list[str]:
        return [row_id for row_id, _ in self.items(table)]

    # -- messages

    def add_message(self, contact_id: str, body: bytes) -> int:
        """Append a message (the caller's encoding: direction, time, text...) to a
        conversation; returns its sequence number."""
        conv = self._sealer.row_key(MESSAGES, contact_id)
        db = self._db()
        with self._transaction():
            cur = db.execute(
                "INSERT INTO messages (conversation, sealed) VALUES (?, x'')",
                (conv,),
            )
            seq = cur.lastrowid
            assert seq is not None
            sealed = self._sealer.seal(MESSAGES, [seq, conv], contact_id, bytes(body))
            db.execute("UPDATE messages SET sealed = ? WHERE seq = ?", (sealed, seq))
        return seq

    def messages(
        self, contact_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        conv = self._sealer.row_key(MESSAGES, contact_id)
        rows = self._fetch(
            "SELECT seq, sealed FROM messages WHERE conversation = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (conv, after, -1 if limit is None else limit),
        )
        out = []
        for seq, sealed in rows:
            stored_id, body = self._sealer.open(MESSAGES, [seq, conv], sealed)
            if stored_id != contact_id:
                raise StoreCorrupted("a message row holds another conversation than its index")
            out.append((seq, body))
        return out

    def delete_message(self, seq: int) -> bool:
        with self._transaction():
            cur = self._db().execute("DELETE FROM messages WHERE seq = ?", (seq,))
        return cur.rowcount > 0

    def delete_conversation(self, contact_id: str) -> int:
        conv = self._sealer.row_key(MESSAGES, contact_id)
        with self._transaction():
            cur = self._db().execute("DELETE FROM messages WHERE conversation = ?", (conv,))
        return cur.rowcount

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

    # -- internals

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db()
        if self._depth == 0:
            db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            db.execute("COMMIT")

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
            conn = sqlite3.connect(path, isolation_level=None)
            conn.text_factory = bytes  # a value tampered into TEXT must reach the AEAD check
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(f"{path} is not a store database: {exc}") from None
        return conn

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
        return nonce + ChaCha20Poly1305(kek).encrypt(nonce, data_key, _wrap_ad(kdf, salt, store_id))

    @staticmethod
    def _unwrap(
        kdf: KdfParams, salt: bytes, store_id: bytes, passphrase: str | bytes, wrapped: bytes
    ) -> bytes | None:
        kek = kdf.derive(passphrase, salt)
        try:
            return ChaCha20Poly1305(kek).decrypt(
                wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], _wrap_ad(kdf, salt, store_id)
            )
        except InvalidTag:
            return None


def _parse(fn: Callable[[bytes], Any], data: bytes, what: str) -> Any:
    try:
        return fn(data)
    except MixnetError as exc:
        raise StoreCorrupted(f"stored {what} does not parse: {exc}") from None
