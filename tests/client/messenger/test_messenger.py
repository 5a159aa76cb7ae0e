"""Three users' messengers exchanging ciphertexts directly (no network): contacts, receipts,
verification and key changes, groups, disappearing timers on an injected clock, attachments,
and garbage that must be counted, never raised."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.e2e.cards import ContactCard
from client.e2e.identity import UserIdentity
from client.messenger.errors import MessageTooLong, MessengerError, UnknownContact
from client.messenger.messenger import DEFAULT_MAX_MESSAGE_LEN, Envelope, Messenger
from client.storage import KdfParams, Store

#: Argon2id far below the floor the store enforces; only tests may ask for it.
FAST_KDF = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """Users by name; ``deliver`` hands every pending envelope to its recipient."""

    def __init__(self, root: Path, clock: Clock) -> None:
        self.root, self.clock = root, clock
        self.users: dict[str, Messenger] = {}
        self.by_mailbox: dict[bytes, Messenger] = {}
        self.outbox: list[Envelope] = []

    def add(self, name: str) -> Messenger:
        store = Store.create(self.root / f"{name}.db", "pw", kdf=FAST_KDF)
        store.save_identity(UserIdentity.generate())  # what `mixnet client init` does
        m = Messenger(store, provider=os.urandom(32), mailbox=os.urandom(16),
                      mailbox_key=os.urandom(32), clock=self.clock)
        self.users[name] = m
        self.by_mailbox[m.card.mailbox] = m
        return m

    def send(self, envelopes: list[Envelope]) -> None:
        self.outbox.extend(envelopes)

    def deliver(self, *, drop_to: str | None = None) -> None:
        while self.outbox:
            env = self.outbox.pop(0)
            target = self.by_mailbox[env.mailbox]
            if drop_to is not None and target is self.users[drop_to]:
                continue
            replies = target.receive(env.data)
            assert replies is not None, target.counts
            self.send(replies)

    def befriend(self, a: str, b: str) -> None:
        ma, mb = self.users[a], self.users[b]
        ma.add_contact(mb.card.to_text(), b)
        mb.add_contact(ma.card.to_text(), a)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, Clock())
    for name in ("alice", "bob", "carol"):
        w.add(name)
    yield w
    for m in w.users.values():
        m.store.close()


def texts(m: Messenger, name: str) -> list[str]:
    return [x["text"] for x in m.conversation(name)["messages"] if x["direction"] != "event"]


def test_contacts_both_ways_send_read_and_receipts(world: World) -> None:
    world.befriend("alice", "bob")
    alice, bob = world.users["alice"], world.users["bob"]
    assert [c["name"] for c in alice.contacts()] == ["bob"]
    world.send(alice.send_text("bob", "hello bob"))
    [msg] = alice.conversation("bob")["messages"]
    assert msg["state"] == "queued"
    world.deliver()
    assert texts(bob, "alice") == ["hello bob"]
    assert alice.conversation("bob")["messages"][0]["state"] == "delivered"
    world.send(bob.send_text("alice", "hi alice"))
    world.deliver()
    assert texts(alice, "bob") == ["hello bob", "hi alice"]


def test_transport_states_are_kept_apart_from_the_receipt(world: World) -> None:
    world.befriend("alice", "bob")
    alice = world.users["alice"]
    [env] = alice.send_text("bob", "x")
    tid = b"t" * 16
    alice.bind(env, tid)
    alice.on_transport_progress(tid, sent=1, acked=0, total=1)
    assert alice.conversation("bob")["messages"][0]["state"] == "sent"
    alice.on_transport_delivered(tid)
    assert alice.conversation("bob")["messages"][0]["state"] == "at_provider"
    [env2] = alice.send_text("bob", "y")
    alice.bind(env2, b"u" * 16)
    alice.on_transport_failed(b"u" * 16, "retry_budget_exhausted")
    last = alice.conversation("bob")["messages"][-1]
    assert last["state"] == "failed" and "retry" in last["reason"]


def test_first_message_from_a_stranger_is_a_request_that_adding_the_card_names(
    world: World,
) -> None:
    alice, bob = world.users["alice"], world.users["bob"]
    alice.add_contact(bob.card.to_text(), "bob")
    world.send(alice.send_text("bob", "you don't know me yet"))
    world.deliver()
    [request] = bob.contacts()
    assert request["request"] and request["name"].startswith("unknown-")
    bob.add_contact(alice.card.to_text(), "alice")
    assert [c["name"] for c in bob.contacts()] == ["alice"]
    assert texts(bob, "alice") == ["you don't know me yet"]


def test_verify_and_key_change_blocks_sending(world: World, tmp_path: Path) -> None:
    # (changed: a new identity writing from bob's address is a separate message request now;
    # the key change is the user adding bob's new card under his name, and a verified bob's
    # new key is accepted only by comparing the new safety number, never by acknowledging)
    world.befriend("alice", "bob")
    alice, bob = world.users["alice"], world.users["bob"]
    shown = alice.verify("bob")
    assert shown["verification"] == "unverified"
    assert shown["digits"] == bob.verify("alice")["digits"]
    assert alice.verify("bob", confirm=True)["verification"] == "verified"
    # Bob reinstalls: new identity, same provider and mailbox
    store = Store.create(tmp_path / "bob2.db", "pw", kdf=FAST_KDF)
    store.save_identity(UserIdentity.generate())
    bob2 = Messenger(store, provider=bob.card.provider, mailbox=bob.card.mailbox,
                     mailbox_key=bob.card.mailbox_key,
                     clock=world.clock)
    world.by_mailbox[bob.card.mailbox] = bob2
    bob2.add_contact(alice.card.to_text(), "alice")
    alice.add_contact(bob2.card.to_text(), "bob")
    assert alice.contacts()[0]["verification"] == "key_changed"
    assert "safety number changed" in " ".join(
        m["text"] for m in alice.conversation("bob")["messages"])
    with pytest.raises(MessengerError, match="blocked"):
        alice.send_text("bob", "are you?")
    new = alice.verify("bob")
    assert new["digits"] != shown["digits"]
    with pytest.raises(MessengerError, match="in person"):
        alice.acknowledge_key_change("bob")
    alice.verify("bob", confirm=True)
    world.send(alice.send_text("bob", "ok"))
    world.deliver()
    assert texts(bob2, "alice")[-1] == "ok"
    store.close()


def test_group_create_add_remove_send_and_removed_member_stops_receiving(
    world: World,
) -> None:
    world.befriend("alice", "bob")
    world.befriend("alice", "carol")
    alice, bob, carol = (world.users[n] for n in ("alice", "bob", "carol"))
    world.send(alice.create_group("friends", ["bob"]))
    world.deliver()
    assert bob.groups()[0]["name"] == "friends"
    world.send(alice.group_add("friends", "carol"))
    world.deliver()
    assert sorted(bob.groups()[0]["members"]) == ["alice", "carol"]
    assert sorted(carol.groups()[0]["members"]) == ["alice", "bob"]
    world.send(bob.send_group("friends", "hi all"))  # bob -> carol needs no prior contact
    world.deliver()
    assert texts(carol, "#friends") == ["hi all"]
    assert texts(alice, "#friends") == ["hi all"]
    world.send(alice.group_remove("friends", "carol"))
    world.deliver()
    assert carol.groups()[0]["left"]
    assert bob.groups()[0]["members"] == ["alice"]
    world.send(alice.send_group("friends", "carol can't read this"))
    world.deliver()
    assert "carol can't read this" not in texts(carol, "#friends")
    assert "carol can't read this" in texts(bob, "#friends")
    with pytest.raises(MessengerError, match="no longer a member"):
        carol.send_group("friends", "let me in")
    with pytest.raises(MessengerError, match="creator"):
        bob.group_add("friends", "alice")
    out = alice.conversation("#friends")["messages"]
    sent = [m for m in out if m["direction"] == "out"]
    assert sent[-1]["state"] == "delivered" and sent[-1]["recipients"] == 1


def test_disappearing_timer_agreement_and_expiry(world: World) -> None:
    world.befriend("alice", "bob")
    alice, bob = world.users["alice"], world.users["bob"]
    world.send(alice.propose_timer("bob", 60))
    world.deliver()
    assert bob.contacts()[0]["timer_proposed_by_them"] == 60
    assert alice.contacts()[0]["timer"] == 0  # not applied until accepted
    world.send(bob.accept_timer("alice"))
    world.deliver()
    assert alice.contacts()[0]["timer"] == 60 and bob.contacts()[0]["timer"] == 60
    world.send(alice.send_text("bob", "self-destructs"))
    world.deliver()
    assert "self-destructs" in texts(bob, "alice")
    world.clock.now += 61
    assert "self-destructs" not in texts(bob, "alice")
    assert "self-destructs" not in texts(alice, "bob")
    assert alice.expire() == 0  # already removed by the read above
    for m in (alice, bob):
        assert all(b"self-destructs" not in body for _, body in m.store.messages(
            f"c:{m.contact('bob' if m is alice else 'alice').cid}"))


def test_expire_removes_from_store_without_reading(world: World) -> None:
    world.befriend("alice", "bob")
    alice, bob = world.users["alice"], world.users["bob"]
    world.send(alice.propose_timer("bob", 5))
    world.deliver()
    world.send(bob.accept_timer("alice"))
    world.deliver()
    world.send(alice.send_text("bob", "gone soon"))
    world.deliver()
    world.clock.now += 10
    assert bob.expire() == 1 and alice.expire() == 1


def test_attachment_round_trip_with_matching_hash(world: World) -> None:
    world.befriend("alice", "bob")
    alice, bob = world.users["alice"], world.users["bob"]
    blob = os.urandom(20_000)
    world.send(alice.send_file("bob", "/tmp/photo.jpg", blob))
    world.deliver()
    [msg] = bob.conversation("alice", with_data=True)["messages"]
    assert msg["file"]["name"] == "photo.jpg"
    assert msg["file"]["data"] == blob
    assert msg["file"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert alice.conversation("bob")["messages"][0]["state"] == "delivered"


def test_too_long_is_a_clear_error_and_changes_nothing(world: World) -> None:
    world.befriend("alice", "bob")
    alice = world.users["alice"]
    assert DEFAULT_MAX_MESSAGE_LEN == 64 * 1660  # 64 fragments with the default geometry (v2)
    with pytest.raises(MessageTooLong, match=f"at most {DEFAULT_MAX_MESSAGE_LEN} bytes"):
        alice.send_file("bob", "big.bin", b"x" * 200_000)
    assert alice.conversation("bob")["messages"] == []
    with pytest.raises(MessageTooLong):
        alice.send_text("bob", "y" * 120_000)


def test_bad_input_unknown_contact_and_garbage(world: World) -> None:
    alice = world.users["alice"]
    with pytest.raises(UnknownContact, match="mixnet contact add"):
        alice.send_text("nobody", "hi")
    with pytest.raises(MessengerError):
        alice.add_contact(alice.card.to_text(), "me")
    for junk in (b"", b"hello raw testnet", os.urandom(600), os.urandom(2000)):
        assert alice.receive(junk) is None
    assert alice.statistics().undecryptable == 4


def test_card_round_trip_from_store(world: World) -> None:
    alice = world.users["alice"]
    assert ContactCard.from_text(alice.card.to_text()) == alice.card


def test_a_stranger_claiming_an_address_does_not_replace_the_session(
    world: World, tmp_path: Path
) -> None:
    world.befriend("alice", "bob")
    alice, bob = world.users["alice"], world.users["bob"]
    world.send(alice.send_text("bob", "hi"))
    world.deliver()
    store = Store.create(tmp_path / "mallory.db", "pw", kdf=FAST_KDF)
    store.save_identity(UserIdentity.generate())
    mallory = Messenger(store, provider=bob.card.provider, mailbox=bob.card.mailbox,
                        mailbox_key=bob.card.mailbox_key,
                        clock=world.clock)
    mallory.add_contact(alice.card.to_text(), "alice")
    for env in mallory.send_text("alice", "I am bob now"):
        alice.receive(env.data)
    # (changed: the stranger is a message request of its own; bob is not even flagged)
    bob_info = next(c for c in alice.contacts() if c["name"] == "bob")
    assert bob_info["verification"] == "unverified"
    assert [c["request"] for c in alice.contacts()].count(True) == 1
    world.send(bob.send_text("alice", "still the real bob"))
    world.deliver()
    assert texts(alice, "bob")[-1] == "still the real bob"
    assert ContactCard.from_bytes(alice.contact("bob").card) == bob.card
    store.close()
