"""A passphrase change re-keys the store: a new data key, every row re-sealed (new index
columns too), old pages vacuumed. Someone holding an old copy of the file and the old
passphrase can open the old copy, and nothing written after the change."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from client.storage import KdfParams, Store, StoreCorrupted, StoreRolledBack, WrongPassphrase
from mixcore.params import NetworkParams
from mixnet.cli import main

FAST = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)
OLD, NEW = "the old passphrase", "the new passphrase"


def sealed_values(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'meta'")]
        out = []
        for t in tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
            if "sealed" in cols:
                out += [v for (v,) in conn.execute(f"SELECT sealed FROM {t}")]
        return out
    finally:
        conn.close()


def splice_meta(target: Path, source: Path, names: tuple[str, ...]) -> None:
    """Put ``source``'s meta rows ``names`` (the passphrase wrap) into ``target``."""
    src = sqlite3.connect(source)
    rows = [(n, v) for n, v in src.execute("SELECT name, value FROM meta") if n in names]
    src.close()
    dst = sqlite3.connect(target)
    with dst:
        dst.executemany("UPDATE meta SET value = ? WHERE name = ?", [(v, n) for n, v in rows])
    dst.close()


def test_passphrase_change_makes_an_old_copy_and_old_passphrase_useless_for_new_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s" / "store.db"
    with Store.create(path, OLD, kdf=FAST) as store:
        store.put("contacts", "bob", b"bob's card")
        store.add_message("c:bob", b"written before the change")
    old_copy = tmp_path / "old.db"
    shutil.copy(path, old_copy)
    before = sealed_values(path)
    with Store.open(path, OLD) as store:
        store.change_passphrase(OLD, NEW)
        store.put("settings", "after", b"SECRET WRITTEN AFTER THE CHANGE")
        store.add_message("c:bob", b"message after the change")
    # every row was re-sealed and the old sealed bytes are gone from the file
    raw = path.read_bytes()
    assert not [v for v in before if v[12:44] in raw]
    assert not set(before) & set(sealed_values(path))
    # the old wrap (old salt, old wrapped key) spliced into the new file opens nothing
    spliced = tmp_path / "spliced" / "store.db"
    spliced.parent.mkdir(mode=0o700)
    shutil.copy(path, spliced)
    shutil.copy(Store.counter_path(path), Store.counter_path(spliced))
    splice_meta(spliced, old_copy, ("kdf", "wrapped_key"))
    with pytest.raises(StoreCorrupted):
        Store.open(spliced, OLD, sleep=lambda _: None)
    with pytest.raises(WrongPassphrase):
        Store.open(path, OLD, sleep=lambda _: None)
    with Store.open(path, NEW, sleep=lambda _: None) as store:
        assert store.get("settings", "after") == b"SECRET WRITTEN AFTER THE CHANGE"
        assert [b for _, b in store.messages("c:bob")] == [
            b"written before the change", b"message after the change"]
        assert store.get("contacts", "bob") == b"bob's card"


def test_a_wrong_old_passphrase_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s" / "store.db"
    with Store.create(path, OLD, kdf=FAST) as store:
        store.put("contacts", "bob", b"card")
        before = sealed_values(path)
        with pytest.raises(WrongPassphrase):
            store.change_passphrase("not it", NEW, sleep=lambda _: None)
        assert sealed_values(path) == before
        assert store.get("contacts", "bob") == b"card"
    with Store.open(path, OLD, sleep=lambda _: None) as store:
        assert store.get("contacts", "bob") == b"card"


def test_weak_kdf_parameters_need_the_explicit_test_flag(tmp_path: Path) -> None:
    weak = KdfParams(memory_kib=1024, iterations=1, lanes=1)
    with pytest.raises(Exception, match="below"):
        Store.create(tmp_path / "w.db", OLD, kdf=weak)
    assert FAST.insecure_for_tests and not KdfParams().insecure_for_tests
    assert KdfParams().memory_kib >= 64 * 1024


def params_file(tmp_path: Path) -> str:
    """A params file: ``client init`` never guesses a network's parameters."""
    path = tmp_path / "params.json"
    path.write_text(json.dumps(NetworkParams().to_dict()))
    return str(path)


def test_mixnet_client_passphrase_rekeys_the_clients_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIXNET_PASSPHRASE", OLD)
    data = tmp_path / "c"
    assert main(["client", "init", "--dir", str(data), "--provider", "cd" * 32,
                 "--authority", "ab" * 32 + "@http://127.0.0.1:1", "--json",
                 "--params", params_file(tmp_path)]) == 0
    capsys.readouterr()
    store_path = data / "messenger.db"
    before = sealed_values(store_path)
    new_file = tmp_path / "new-pass"
    new_file.write_text(NEW + "\n")
    assert main(["client", "passphrase", "--dir", str(data),
                 "--new-passphrase-file", str(new_file), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rekeyed"] is True
    assert OLD not in out + err and NEW not in out + err
    assert not set(before) & set(sealed_values(store_path))
    with pytest.raises(WrongPassphrase):
        Store.open(store_path, OLD, sleep=lambda _: None)
    with Store.open(store_path, NEW, sleep=lambda _: None) as store:
        assert store.load_identity() is not None
    assert os.stat(store_path).st_mode & 0o777 == 0o600


def test_mixnet_client_accept_restore_accepts_a_deliberately_restored_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIXNET_PASSPHRASE", OLD)
    data = tmp_path / "c"
    assert main(["client", "init", "--dir", str(data), "--provider", "cd" * 32,
                 "--authority", "ab" * 32 + "@http://127.0.0.1:1",
                 "--params", params_file(tmp_path)]) == 0
    store_path = data / "messenger.db"
    backup = tmp_path / "backup.db"
    shutil.copy(store_path, backup)
    with Store.open(store_path, OLD) as store:
        store.put("settings", "after the backup", b"x")
    shutil.copy(backup, store_path)
    capsys.readouterr()
    with pytest.raises(StoreRolledBack, match="accept-restore"):
        Store.open(store_path, OLD)
    assert main(["client", "accept-restore", "--dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accepted"] == [str(store_path)]
    with Store.open(store_path, OLD) as store:
        assert store.get("settings", "after the backup") is None
