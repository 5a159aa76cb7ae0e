"""The SQLite store: what survives a reopen, and the refusal to record a second body."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from directory.errors import StoreError
from directory.store import DirectoryStore


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "db.sqlite3")
    store.put_descriptor(b"n" * 32, 5, b"desc5")
    store.put_descriptor(b"n" * 32, 5, b"other")  # first one stays: descriptors are immutable
    store.put_vote(6, b"a" * 32, b"vote")
    store.put_signature(6, b"body", b"sig")
    store.put_document(6, b"doc-2-sigs")
    store.put_document(6, b"doc-3-sigs")  # better-signed versions replace the document
    store.close()
    again = DirectoryStore(tmp_path / "db.sqlite3")
    assert again.descriptors(0) == [b"desc5"]
    assert again.votes(0) == [(6, b"a" * 32, b"vote")]
    assert again.signatures(0) == [(6, b"body", b"sig")]
    assert again.document(6) == b"doc-3-sigs"
    assert again.latest_document_epoch() == 6
    assert again.document(7) is None
    again.close()


def test_a_second_different_body_for_an_epoch_is_refused(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "db.sqlite3")
    store.put_signature(6, b"body", b"sig")
    store.put_signature(6, b"body", b"sig")  # the same record again is fine
    with pytest.raises(StoreError, match="epoch 6"):
        store.put_signature(6, b"another body", b"sig2")
    assert store.signatures(0) == [(6, b"body", b"sig")]


def test_prune_forgets_what_no_consensus_can_use(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "db.sqlite3")
    for epoch in range(10):
        store.put_descriptor(b"n" * 32, epoch, b"d%d" % epoch)
        store.put_vote(epoch, b"a" * 32, b"v")
        store.put_document(epoch, b"doc")
        store.put_signature(epoch, b"b", b"s")
    store.prune(9, keep_documents=3)
    assert store.descriptors(0) == [b"d8", b"d9"]
    assert [e for e, _, _ in store.votes(0)] == [8, 9]
    assert [e for e, _ in store.documents(0)] == [6, 7, 8, 9]
    assert [e for e, _, _ in store.signatures(0)] == [6, 7, 8, 9]


def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "db.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        DirectoryStore(tmp_path / "db.sqlite3")


def test_database_files_are_private_and_pruned_rows_are_overwritten(tmp_path) -> None:
    """Issue 15 item 4 / issue 13 item 11: the authority's database was 0644, and what it
    pruned stayed in free pages."""
    old = os.umask(0o022)
    try:
        store = DirectoryStore(tmp_path / "dir" / "directory.sqlite3")
        marker = b"DESCRIPTOR-OF-A-GONE-NODE" * 20
        for epoch in range(5):
            store.put_descriptor(bytes(32), epoch, marker + bytes([epoch]))
        for suffix in ("", "-wal", "-shm"):
            path = tmp_path / "dir" / f"directory.sqlite3{suffix}"
            assert path.stat().st_mode & 0o777 == 0o600, suffix
        assert (tmp_path / "dir").stat().st_mode & 0o777 == 0o700
        store.prune(100, keep_documents=2)
        store.close()  # the last connection checkpoints the WAL into the file
        raw = b"".join(p.read_bytes() for p in (tmp_path / "dir").iterdir())
        assert b"DESCRIPTOR-OF-A-GONE-NODE" not in raw
    finally:
        os.umask(old)
