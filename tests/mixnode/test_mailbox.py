"""Mailboxes: durable before acknowledged, deleted only by their owner's ack, expired by TTL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import HANG

from mixnode.mailbox import ItemKind, MailboxFull, MailboxStore, mailbox_address

ALICE, BOB = b"a" * 32, b"b" * 32


def store(tmp_path: Path, **kw: object) -> MailboxStore:
    return MailboxStore(tmp_path / "mail.db", ttl=kw.pop("ttl", 100.0), **kw)  # type: ignore[arg-type]


def test_store_fetch_ack(tmp_path: Path) -> None:
    s = store(tmp_path)
    bob = s.register(BOB, now=0.0)
    assert bob == mailbox_address(BOB)
    assert s.hosts(bob)
    ids = [s.store_message(bob, f"m{i}".encode(), now=1.0) for i in range(3)]
    s.store_reply(bob, b"s" * 16, b"reply", now=2.0)
    items = s.fetch(bob, limit=10)
    assert [i.data for i in items] == [b"m0", b"m1", b"m2", b"reply"]
    assert items[3].kind is ItemKind.REPLY and items[3].surb_id == b"s" * 16
    assert s.fetch(bob, limit=10) == items  # fetching deletes nothing
    assert s.ack(bob, ids[:2]) == 2
    assert [i.data for i in s.fetch(bob, limit=10)] == [b"m2", b"reply"]


def test_another_mailbox_cannot_ack_my_items(tmp_path: Path) -> None:
    s = store(tmp_path)
    alice, bob = s.register(ALICE, 0.0), s.register(BOB, 0.0)
    item = s.store_message(bob, b"for bob", 1.0)
    assert s.ack(alice, [item]) == 0
    assert [i.data for i in s.fetch(bob, 10)] == [b"for bob"]
    assert s.fetch(alice, 10) == []


def test_unknown_mailbox_and_full_mailbox(tmp_path: Path) -> None:
    s = store(tmp_path, max_items_per_mailbox=2)
    with pytest.raises(KeyError):
        s.store_message(b"x" * 16, b"nobody", 0.0)
    bob = s.register(BOB, 0.0)
    s.store_message(bob, b"1", 0.0)
    s.store_message(bob, b"2", 0.0)
    with pytest.raises(MailboxFull):
        s.store_message(bob, b"3", 0.0)


def test_ttl_expiry(tmp_path: Path) -> None:
    s = store(tmp_path, ttl=10.0)
    bob = s.register(BOB, 0.0)
    s.store_message(bob, b"old", 0.0)
    s.store_message(bob, b"new", 8.0)
    assert s.expire(now=12.0) == 1
    assert [i.data for i in s.fetch(bob, 10)] == [b"new"]


def test_reopen_keeps_mailboxes_and_items(tmp_path: Path) -> None:
    s = store(tmp_path)
    bob = s.register(BOB, 0.0)
    s.store_message(bob, b"kept", 0.0)
    s.close()
    again = store(tmp_path)
    assert again.hosts(bob)
    assert [i.data for i in again.fetch(bob, 10)] == [b"kept"]


def test_sigkill_right_after_store_loses_nothing(tmp_path: Path) -> None:
    """A real process stores, then is SIGKILLed at once: the item is on disk."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from mixnode.mailbox import MailboxStore
        s = MailboxStore({str(tmp_path / "mail.db")!r}, ttl=100.0)
        bob = s.register({BOB!r}, 0.0)
        for i in range(20):
            s.store_message(bob, b"msg%d" % i, 0.0)
        sys.stdout.write("stored\\n"); sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG, check=False
    )
    assert result.returncode == -9
    assert result.stdout == "stored\n"
    s = store(tmp_path)
    assert len(s.fetch(mailbox_address(BOB), 100)) == 20
    assert os.path.exists(tmp_path / "mail.db")


def test_idle_mailboxes_are_freed_after_their_ttl_and_full_refuses_only_newcomers(
    tmp_path: Path,
) -> None:
    """Issue 13 item 5: any key got a mailbox forever, and the table filled for good."""
    s = store(tmp_path, ttl=100.0, idle_ttl=400.0, max_mailboxes=2)
    alice, bob = s.register(ALICE, 0.0), s.register(BOB, 0.0)
    with pytest.raises(MailboxFull):
        s.register(b"c" * 32, 10.0)
    assert s.register(BOB, 20.0) == bob  # a known owner is never refused
    s.store_message(bob, b"kept", 350.0)
    s.expire(now=401.0)
    assert not s.hosts(alice)  # idle since 0 and empty: freed
    assert s.hosts(bob)  # holds mail: kept, whatever its owner does
    assert s.statistics().mailboxes_freed == 1
    carol = s.register(b"c" * 32, 402.0)
    s.close()
    again = store(tmp_path, ttl=100.0, idle_ttl=400.0, max_mailboxes=2)
    assert again.hosts(carol) and again.hosts(bob) and not again.hosts(alice)
    # The owner's visits keep it: Bob pulls at 700, his mail expired at 450.
    again.touch(bob, 700.0)
    again.expire(now=1000.0)
    assert again.hosts(bob) and not again.hosts(carol)


def test_files_are_private_and_deleted_mail_is_not_left_on_disk(tmp_path: Path) -> None:
    """Issue 13 item 11 and issue 15 item 4: mailboxes.db and its WAL were 0644, and deleted
    mail stayed readable in free pages."""
    old = os.umask(0o022)
    try:
        s = store(tmp_path)
        bob = s.register(BOB, 0.0)
        marker = b"SECRET-MAIL-" * 40
        ids = [s.store_message(bob, marker + bytes([i]), 1.0) for i in range(20)]
        for suffix in ("", "-wal", "-shm"):
            mode = (tmp_path / f"mail.db{suffix}").stat().st_mode & 0o777
            assert mode == 0o600, (suffix, oct(mode))
        assert s.ack(bob, ids) == 20
        assert s.scrub(2.0, force=True)
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("mail.db*"))
        assert b"SECRET-MAIL-" not in raw
        s.close()
    finally:
        os.umask(old)
