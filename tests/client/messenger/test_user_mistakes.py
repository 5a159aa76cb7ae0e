"""What a careless user (or a hostile contact) finds within the first hour, each one a clear
answer and never a crash or a silent change: a removed group member told only about itself,
attachments with names like ``..`` saved safely (and said where), a known card added again
under another name, empty and whitespace-only messages, stdin's trailing newline, and the
contact commands to remove, rename and block."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.e2e.identity import UserIdentity
from client.messenger import commands, ops
from client.messenger.errors import MessengerError
from client.messenger.messenger import Envelope, Messenger
from client.storage import KdfParams, Store

#: Argon2id far below the floor the store enforces; only tests may ask for it.
FAST_KDF = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)


class Users:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, Messenger] = {}
        self.by_mailbox: dict[bytes, Messenger] = {}
        self.outbox: list[Envelope] = []

    def add(self, name: str) -> Messenger:
        store = Store.create(self.root / f"{name}.db", "pw", kdf=FAST_KDF)
        store.save_identity(UserIdentity.generate())  # what `mixnet client init` does
        m = Messenger(store, provider=os.urandom(32), mailbox=os.urandom(16),
                      mailbox_key=os.urandom(32), clock=time.time)
        self.by_name[name] = m
        self.by_mailbox[m.card.mailbox] = m
        return m

    def send(self, envelopes: list[Envelope]) -> None:
        self.outbox.extend(envelopes)

    def deliver(self) -> None:
        while self.outbox:
            env = self.outbox.pop(0)
            target = self.by_mailbox[env.mailbox]
            self.send(target.receive(env.data) or [])

    def befriend(self, a: str, b: str) -> None:
        self.by_name[a].add_contact(self.by_name[b].card.to_text(), b)
        self.by_name[b].add_contact(self.by_name[a].card.to_text(), a)


@pytest.fixture
def users(tmp_path: Path) -> Iterator[Users]:
    u = Users(tmp_path)
    for name in ("alice", "bob", "carol", "dave"):
        u.add(name)
    yield u
    for m in u.by_name.values():
        m.store.close()


def events(m: Messenger, conversation: str) -> list[str]:
    return [x["text"] for x in m.conversation(conversation)["messages"]
            if x["direction"] == "event"]


def texts(m: Messenger, conversation: str) -> list[str]:
    return [x["text"] for x in m.conversation(conversation)["messages"]
            if x["direction"] != "event"]


# -- 8: a removed member is told that it was removed, not that everyone was --------------------


def test_removed_member_is_not_told_that_the_others_were_removed(users: Users) -> None:
    for other in ("bob", "carol", "dave"):
        users.befriend("alice", other)
    alice, carol = users.by_name["alice"], users.by_name["carol"]
    users.send(alice.create_group("team", ["bob", "carol", "dave"]))
    users.deliver()
    users.send(alice.group_remove("team", "carol"))
    users.deliver()
    seen = events(carol, "#team")
    assert "alice removed you from the group" in seen
    assert not [e for e in seen if "removed bob" in e or "removed dave" in e], seen
    bob_seen = events(users.by_name["bob"], "#team")
    assert "alice removed carol" in bob_seen and "alice removed dave" not in bob_seen


# -- 10: a known card added again under a new name ------------------------------------------


def test_adding_a_known_card_under_another_name_is_refused_not_a_silent_rename(
    users: Users,
) -> None:
    alice, bob = users.by_name["alice"], users.by_name["bob"]
    alice.add_contact(bob.card.to_text(), "bob")
    with pytest.raises(MessengerError, match=r"already.*'bob'.*rename"):
        alice.add_contact(bob.card.to_text(), "robert")
    assert [c["name"] for c in alice.contacts()] == ["bob"]
    users.send(alice.send_text("bob", "still bob"))  # the old name keeps working
    # adding the same card again without a name (or with the same one) is harmless
    assert alice.add_contact(bob.card.to_text())["name"] == "bob"
    assert alice.add_contact(bob.card.to_text(), "bob")["name"] == "bob"


# -- 13: remove, rename, block -------------------------------------------------------------


def test_rename_remove_and_block_a_contact(users: Users) -> None:
    users.befriend("alice", "bob")
    users.befriend("alice", "carol")
    alice, bob = users.by_name["alice"], users.by_name["bob"]
    ops.handle(alice, {"op": "contact_rename", "name": "bob", "new_name": "robert"}, users.send)
    assert [c["name"] for c in alice.contacts()] == ["carol", "robert"]
    with pytest.raises(MessengerError, match="already a contact named 'carol'"):
        alice.rename_contact("robert", "carol")

    ops.handle(alice, {"op": "contact_block", "name": "robert"}, users.send)
    assert next(c for c in alice.contacts() if c["name"] == "robert")["blocked"]
    users.send(bob.send_text("alice", "let me in"))
    users.deliver()
    assert "let me in" not in texts(alice, "robert")
    assert alice.counts["blocked"] == 1
    with pytest.raises(MessengerError, match="blocked"):
        alice.send_text("robert", "hi")
    ops.handle(alice, {"op": "contact_block", "name": "robert", "undo": True}, users.send)
    users.send(bob.send_text("alice", "again"))
    users.deliver()
    assert texts(alice, "robert")[-1] == "again"

    ops.handle(alice, {"op": "contact_remove", "name": "robert"}, users.send)
    assert [c["name"] for c in alice.contacts()] == ["carol"]
    with pytest.raises(MessengerError, match="unknown contact"):
        alice.send_text("robert", "hi")


# -- 13: empty, whitespace-only, and stdin's newline ------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_or_blank_message_is_refused_in_words(users: Users, text: str) -> None:
    users.befriend("alice", "bob")
    alice = users.by_name["alice"]
    with pytest.raises(MessengerError, match="the message is empty"):
        ops.handle(alice, {"op": "msg_send", "to": "bob", "text": text}, users.send)
    assert users.outbox == [] and texts(alice, "bob") == []


def _args(**kw: Any) -> argparse.Namespace:
    base = {"dir": None, "json": False, "file": None, "wait": 0.0, "until": "at_provider",
            "save": None, "name": "bob", "text": None}
    return argparse.Namespace(**{**base, **kw})


def test_text_from_stdin_loses_its_trailing_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    def fake_request(args: argparse.Namespace, op: str, **kw: Any) -> Any:
        sent.append({"op": op, **kw})
        return {"state": "queued"}

    monkeypatch.setattr(commands, "request", fake_request)
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert commands._send(_args(text="-")) == 0
    assert sent == [{"op": "msg_send", "to": "bob", "text": "hi"}]


# -- 9: attachment names from someone else --------------------------------------------------


def test_read_save_keeps_hostile_names_inside_the_folder_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["..", "../../escape.txt", "/etc/passwd", ".", "", "photo.jpg", "photo.jpg"]
    messages = [
        {"kind": "file", "direction": "in", "from": "bob", "at": 0.0, "text": n,
         "expires_at": None, "id": str(i),
         "file": {"name": n, "size": 3, "sha256": hashlib.sha256(b"%d" % i).hexdigest(),
                  "data": b"%d" % i}}
        for i, n in enumerate(names)
    ]

    def fake_request(args: argparse.Namespace, op: str, **kw: Any) -> Any:
        return {"conversation": "bob", "type": "contact", "messages": messages}

    monkeypatch.setattr(commands, "request", fake_request)
    target = tmp_path / "in"
    assert commands._read(_args(save=str(target))) == 0
    saved = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(saved) == len(names), saved  # every one saved, none skipped after a bad one
    assert all(p.parent == target for p in saved), saved  # nothing outside the folder
    assert sorted(p.read_bytes() for p in saved) == sorted(b"%d" % i for i in range(len(names)))
    assert (target / "photo.jpg").exists()
    out = capsys.readouterr()
    for p in saved:
        assert str(p) in out.out + out.err  # says where each one went


# -- 6: limits at send time, as the receiver checks them -------------------------------------


def test_text_longer_than_a_recipient_accepts_is_refused_when_sending(users: Users) -> None:
    """A 65,537-character text used to be accepted, rejected by the receiver and left at
    "at_provider" for ever."""
    from client.messenger.inner import MAX_TEXT

    users.befriend("alice", "bob")
    alice, bob = users.by_name["alice"], users.by_name["bob"]
    with pytest.raises(MessengerError, match="65,536 characters"):
        ops.handle(alice, {"op": "msg_send", "to": "bob", "text": "x" * (MAX_TEXT + 1)},
                   users.send)
    assert users.outbox == [] and texts(alice, "bob") == []
    users.send(alice.send_text("bob", "y" * MAX_TEXT))  # the limit itself is fine
    users.deliver()
    assert texts(bob, "alice") == ["y" * MAX_TEXT]
    assert bob.counts["malformed"] == 0


def test_a_group_larger_than_members_accept_is_refused_when_created(
    users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    from client.messenger import inner

    monkeypatch.setattr(inner, "MAX_MEMBERS", 3)  # the receivers' limit, made small
    for other in ("bob", "carol", "dave"):
        users.befriend("alice", other)
    alice = users.by_name["alice"]
    with pytest.raises(MessengerError, match="recipient would refuse"):
        alice.create_group("big", ["bob", "carol", "dave"])  # 4 with alice
    assert alice.groups() == [] and users.outbox == []
    users.send(alice.create_group("ok", ["bob", "carol"]))
    users.deliver()
    assert users.by_name["bob"].groups()[0]["name"] == "ok"
    with pytest.raises(MessengerError, match="recipient would refuse"):
        alice.group_add("ok", "dave")
    assert sorted(alice.groups()[0]["members"]) == ["bob", "carol"]


# -- 5: a message that finally failed can be sent again -----------------------------------------


def test_retry_sends_a_failed_message_again_and_the_recipient_keeps_one_copy(
    users: Users,
) -> None:
    users.befriend("alice", "bob")
    alice, bob = users.by_name["alice"], users.by_name["bob"]
    [env] = alice.send_text("bob", "are you there?")
    alice.bind(env, b"t" * 16)
    alice.on_transport_failed(b"t" * 16, "retry_budget_exhausted: unacknowledged for 86400 s")
    [sent] = [m for m in alice.conversation("bob")["messages"] if m["direction"] == "out"]
    assert sent["state"] == "failed"
    result = ops.handle(alice, {"op": "msg_retry", "name": "bob"}, users.send)
    assert result["retried"] == 1
    assert alice.conversation("bob")["messages"][-1]["state"] == "queued"
    users.deliver()
    assert texts(bob, "alice") == ["are you there?"]
    assert alice.conversation("bob")["messages"][-1]["state"] == "delivered"
    # The first copy had reached the mailbox after all (its ACK was lost): still one copy.
    users.send([env])
    users.deliver()
    assert texts(bob, "alice") == ["are you there?"] and bob.counts["duplicate"] == 1
    assert ops.handle(alice, {"op": "msg_retry", "name": "bob"}, users.send)["retried"] == 0
