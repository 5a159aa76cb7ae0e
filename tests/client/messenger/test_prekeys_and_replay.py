"""Signed prekeys rotate on the messenger's clock and old secrets are erased after a grace
period; a first message (an X3DH initial message) is accepted once only, also after the
session it started is gone and across a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.e2e.identity import PREKEY_GRACE_S, PREKEY_ROTATION_S, UserIdentity
from client.messenger.messenger import Messenger
from client.storage import KdfParams, Store

FAST = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def user(path: Path, clock: Clock, *, like: Messenger | None = None) -> Messenger:
    store = Store.create(path, "pw", kdf=FAST)
    store.save_identity(UserIdentity.generate())
    provider = like.card.provider if like else os.urandom(32)
    mailbox = like.card.mailbox if like else os.urandom(16)
    return Messenger(store, provider=provider, mailbox=mailbox,
                     mailbox_key=os.urandom(32), clock=clock)


def reopen(m: Messenger, clock: Clock) -> Messenger:
    path = m.store.path
    m.store.close()
    return Messenger(Store.open(path, "pw"), provider=m.card.provider, mailbox=m.card.mailbox,
                     mailbox_key=m.card.mailbox_key,
                     clock=clock)


def test_prekey_rotates_on_schedule_and_the_old_secret_is_erased_after_grace(
    tmp_path: Path,
) -> None:
    clock = Clock()
    alice = user(tmp_path / "alice.db", clock)
    old_card = alice.card
    alice.upkeep()
    assert alice.card == old_card  # nothing due yet
    clock.now += PREKEY_ROTATION_S
    alice.upkeep()
    assert alice.card.prekey_id != old_card.prekey_id
    assert alice.identity.prekey(old_card.prekey_id) is not None  # still in its grace period
    bob = user(tmp_path / "bob.db", clock)
    bob.add_contact(old_card.to_text(), "alice")
    [env] = bob.send_text("alice", "from an old card")
    assert alice.receive(env.data) is not None  # an old card still starts a conversation
    clock.now += PREKEY_GRACE_S
    alice.upkeep()
    assert alice.identity.prekey(old_card.prekey_id) is None
    alice = reopen(alice, clock)  # erased in the store too, not only in memory
    assert alice.identity.prekey(old_card.prekey_id) is None
    assert alice.card.prekey_id == alice.identity.current_prekey.prekey_id
    carol = user(tmp_path / "carol.db", clock)
    carol.add_contact(old_card.to_text(), "alice")
    [late] = carol.send_text("alice", "too late")
    assert alice.receive(late.data) is None
    assert alice.statistics().undecryptable == 1
    for m in (alice, bob, carol):
        m.store.close()


def test_a_replayed_first_message_is_refused_and_counted_also_after_a_restart(
    tmp_path: Path,
) -> None:
    clock = Clock()
    alice = user(tmp_path / "alice.db", clock)
    bob = user(tmp_path / "bob.db", clock)
    bob.add_contact(alice.card.to_text(), "alice")
    [first] = bob.send_text("alice", "hello, it is bob")
    assert alice.receive(first.data) is not None  # a message request
    assert alice.receive(first.data) is None  # the same bytes again
    assert alice.statistics().replayed == 1
    # the session that first message started goes away: the user adopts bob's new card
    [request] = alice.contacts()
    alice.add_contact(bob.card.to_text(), "bob")
    bob2 = user(tmp_path / "bob2.db", clock, like=bob)
    alice.add_contact(bob2.card.to_text(), "bob")
    alice.acknowledge_key_change("bob")
    assert alice.store.load_session(alice.contact("bob").cid) is None
    assert alice.receive(first.data) is None  # not a fresh message request either
    assert alice.statistics().replayed == 2
    assert [c["name"] for c in alice.contacts()] == ["bob"]
    alice = reopen(alice, clock)
    assert alice.receive(first.data) is None
    assert alice.statistics().replayed == 1  # counted by the restarted messenger
    assert [c["name"] for c in alice.contacts()] == ["bob"]
    texts = [m["text"] for m in alice.conversation("bob")["messages"]]
    assert texts.count("hello, it is bob") == 1
    assert request["request"]
    for m in (alice, bob, bob2):
        m.store.close()


def test_first_message_replay_guard_in_the_session_layer() -> None:
    from client.e2e.cards import ContactCard
    from client.e2e.errors import ReplayError
    from client.e2e.session import Session, open_message

    alice, bob = UserIdentity.generate(), UserIdentity.generate()
    a_card = ContactCard.create(alice, os.urandom(32), os.urandom(16), os.urandom(32))
    b_card = ContactCard.create(bob, os.urandom(32), os.urandom(16), os.urandom(32))
    first = Session.initiate(alice, a_card, b_card).encrypt(b"hi")
    seen: set[bytes] = set()
    got = open_message(bob, {}, first, seen=seen.__contains__)
    assert got.new_branch is not None
    seen.add(got.new_branch[0])
    with pytest.raises(ReplayError, match="once"):
        open_message(bob, {}, first, seen=seen.__contains__)
