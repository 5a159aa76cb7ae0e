"""Contacts are keys, not addresses: a stranger (a new identity key) whose self-signed card
claims a known contact's provider and mailbox never lands in that contact's thread, never
replaces its keys or session, and cannot block sending to it; a verified contact's key change
(the user adding a new card under its name) keeps the old keys pinned until the new safety
number is compared, with no one-click acknowledge."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.e2e.identity import UserIdentity
from client.e2e.safety import SafetyNumber, identity_keys
from client.messenger.errors import MessengerError
from client.messenger.messenger import Envelope, Messenger
from client.storage import KdfParams, Store

FAST = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Net:
    """Users by name; an envelope goes to the *real* owner of its mailbox (whoever claims an
    address in a card, mail to it still reaches the device that pulls that mailbox)."""

    def __init__(self, root: Path) -> None:
        self.root, self.clock = root, Clock()
        self.users: dict[str, Messenger] = {}
        self.owner: dict[bytes, Messenger] = {}

    def user(self, name: str, *, like: Messenger | None = None) -> Messenger:
        store = Store.create(self.root / f"{name}.db", "pw", kdf=FAST)
        store.save_identity(UserIdentity.generate())
        provider = like.card.provider if like else os.urandom(32)
        mailbox = like.card.mailbox if like else os.urandom(16)
        m = Messenger(store, provider=provider, mailbox=mailbox,
                      mailbox_key=os.urandom(32), clock=self.clock)
        self.users[name] = m
        self.owner.setdefault(mailbox, m)
        return m

    def deliver(self, envelopes: list[Envelope], *, to: Messenger | None = None) -> None:
        queue = list(envelopes)
        while queue:
            env = queue.pop(0)
            target = to or self.owner[env.mailbox]
            to = None
            replies = target.receive(env.data)
            queue.extend(replies or [])

    def close(self) -> None:
        for m in self.users.values():
            m.store.close()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    alice, bob = n.user("alice"), n.user("bob")
    alice.add_contact(bob.card.to_text(), "bob")
    bob.add_contact(alice.card.to_text(), "alice")
    n.deliver(alice.send_text("bob", "hi bob"))
    n.deliver(bob.send_text("alice", "hi alice"))
    yield n
    n.close()


def texts(m: Messenger, name: str) -> list[str]:
    return [x["text"] for x in m.conversation(name, mark_read=False)["messages"]]


def snapshot(m: Messenger, name: str) -> tuple[Any, ...]:
    c = m.contact(name)
    v = m.store.load_verification(c.cid)
    s = m.store.load_session(c.cid)
    assert v is not None and s is not None
    return c.card, v.pinned_keys, v.state, s.peer.identity_key


def impostor_writes(net: Net, victim: Messenger, claimed: Messenger, text: str) -> Messenger:
    """A new identity whose self-signed card carries ``claimed``'s provider and mailbox."""
    mallory = net.user(f"mallory{len(net.users)}", like=claimed)
    mallory.add_contact(victim.card.to_text(), "victim")
    for env in mallory.send_text("victim", text):
        assert victim.receive(env.data) is not None  # decrypted: a message request
    return mallory


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "unverified"])
def test_forged_first_message_claiming_a_contacts_address_is_a_separate_request(
    net: Net, verified: bool
) -> None:
    alice, bob = net.users["alice"], net.users["bob"]
    if verified:
        alice.verify("bob", confirm=True)
    before = snapshot(alice, "bob")
    state = "verified" if verified else "unverified"
    impostor_writes(net, alice, bob, "I am bob now, reply here")
    # bob's thread, keys, card, session and state are untouched
    assert "I am bob now, reply here" not in " ".join(texts(alice, "bob"))
    assert snapshot(alice, "bob") == before
    assert alice.contact_info(alice.contact("bob"))["verification"] == state
    # the stranger is a message request of its own, with a warning in *its* thread
    [request] = [c for c in alice.contacts() if c["request"]]
    thread = " ".join(texts(alice, request["name"]))
    assert "I am bob now, reply here" in thread and "same address as your contact bob" in thread
    # nothing to acknowledge on bob: the impostor cannot be adopted with one click
    with pytest.raises(MessengerError, match="not changed"):
        alice.acknowledge_key_change("bob")
    assert snapshot(alice, "bob") == before
    # sending to bob is not blocked and reaches the real bob; bob's replies land in his thread
    net.deliver(alice.send_text("bob", "still you?"))
    assert texts(bob, "alice")[-1] == "still you?"
    net.deliver(bob.send_text("alice", "yes, the real one"))
    assert texts(alice, "bob")[-1] == "yes, the real one"
    assert alice.conversation("bob")["messages"][-2]["state"] == "delivered"


def test_a_group_member_who_learned_a_contacts_card_cannot_block_or_take_it_over(
    net: Net,
) -> None:
    alice, bob = net.users["alice"], net.users["bob"]
    carol = net.user("carol")
    alice.add_contact(carol.card.to_text(), "carol")
    carol.add_contact(alice.card.to_text(), "alice")
    alice.verify("bob", confirm=True)
    net.deliver(alice.create_group("friends", ["bob", "carol"]))
    assert "bob" in carol.groups()[0]["members"]  # carol learned bob's card (and address)
    before = snapshot(alice, "bob")
    impostor_writes(net, alice, bob, "bob here, new key, trust me")
    assert snapshot(alice, "bob") == before
    assert "bob here, new key, trust me" not in " ".join(texts(alice, "bob"))
    net.deliver(alice.send_group("friends", "to everyone"))
    assert texts(bob, "#friends")[-1] == "to everyone"
    net.deliver(alice.send_text("bob", "direct"))
    assert texts(bob, "alice")[-1] == "direct"


def test_a_group_creator_cannot_slip_in_a_card_claiming_a_contacts_address(net: Net) -> None:
    alice, bob = net.users["alice"], net.users["bob"]
    carol = net.user("carol")
    alice.add_contact(carol.card.to_text(), "carol")
    carol.add_contact(alice.card.to_text(), "alice")
    alice.verify("bob", confirm=True)
    before = snapshot(alice, "bob")
    mallory = net.user("mallory", like=bob)  # carol's accomplice, with bob's address
    carol.add_contact(mallory.card.to_text(), "bob")  # named "bob" in the member list
    net.deliver(carol.create_group("trap", ["alice", "bob"]))
    assert snapshot(alice, "bob") == before
    members = alice.groups()[0]["members"]
    assert "bob" not in members and len(members) == 2  # carol and a separate "bob-2"
    mallory.add_contact(alice.card.to_text(), "alice")
    net.deliver(mallory.send_text("alice", "it's bob"), to=alice)
    assert "it's bob" not in " ".join(texts(alice, "bob"))
    assert snapshot(alice, "bob") == before
    net.deliver(alice.send_text("bob", "fine"))
    assert texts(bob, "alice")[-1] == "fine"


def test_verified_contacts_key_change_keeps_old_keys_until_the_new_number_is_compared(
    net: Net,
) -> None:
    alice, bob = net.users["alice"], net.users["bob"]
    alice.verify("bob", confirm=True)
    old_card, old_keys, _, _ = snapshot(alice, "bob")
    bob2 = net.user("bob2", like=bob)  # bob's new phone: new identity, same address
    bob2.add_contact(alice.card.to_text(), "alice")
    net.deliver(bob2.send_text("alice", "new phone"), to=alice)  # a request, for now
    alice.add_contact(bob2.card.to_text(), "bob")  # the user says: this is bob's new card
    info = alice.contact_info(alice.contact("bob"))
    assert info["verification"] == "key_changed"
    card, keys, _, _ = snapshot(alice, "bob")
    assert (card, keys) == (old_card, old_keys)  # the old keys stay pinned and in use
    with pytest.raises(MessengerError, match="blocked"):
        alice.send_text("bob", "hello?")
    with pytest.raises(MessengerError, match="in person"):
        alice.acknowledge_key_change("bob")  # no one-click accept for a verified contact
    shown = alice.verify("bob")
    assert shown["digits"] == SafetyNumber.of(alice.card, bob2.card).digits
    assert shown["verification"] == "key_changed"
    net.deliver(bob.send_text("alice", "old phone still here"))  # old keys still decrypt
    assert texts(alice, "bob")[-1] == "old phone still here"
    # compared in person: now the new keys are pinned, verified, and mail goes to them
    assert alice.verify("bob", confirm=True)["verification"] == "verified"
    card, keys, _, _ = snapshot_after_confirm(alice)
    assert keys == identity_keys(bob2.card) and card == bob2.card.to_bytes()
    assert not [c for c in alice.contacts() if c["request"]]  # bob2's request merged in
    assert "new phone" in texts(alice, "bob")
    net.deliver(alice.send_text("bob", "verified again"), to=bob2)
    assert texts(bob2, "alice")[-1] == "verified again"


def snapshot_after_confirm(m: Messenger) -> tuple[Any, ...]:
    c = m.contact("bob")
    v = m.store.load_verification(c.cid)
    assert v is not None
    return c.card, v.pinned_keys, v.state, None


def test_unverified_contacts_key_change_can_be_acknowledged(net: Net) -> None:
    alice, bob = net.users["alice"], net.users["bob"]
    bob2 = net.user("bob2", like=bob)
    bob2.add_contact(alice.card.to_text(), "alice")
    alice.add_contact(bob2.card.to_text(), "bob")
    assert alice.contact_info(alice.contact("bob"))["verification"] == "key_changed"
    with pytest.raises(MessengerError, match="blocked"):
        alice.send_text("bob", "x")
    info = alice.acknowledge_key_change("bob")
    assert info["verification"] == "unverified"
    assert alice.contact("bob").card == bob2.card.to_bytes()
    net.deliver(alice.send_text("bob", "hello new phone"), to=bob2)
    assert texts(bob2, "alice")[-1] == "hello new phone"
