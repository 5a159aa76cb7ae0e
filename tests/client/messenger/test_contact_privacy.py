"""What a contact learns: the threat model's "a contact | messages to them | your other contacts"
row. Alice talks to Bob and to Carol (1:1, receipts, a timer); everything Bob's messenger ends up
holding — every decrypted row of his store and every API answer — names nobody but Alice."""

from __future__ import annotations

import os
from pathlib import Path

from client.e2e.identity import UserIdentity
from client.messenger.messenger import Envelope, Messenger
from client.storage import KdfParams, Store
from client.storage.store import KV_TABLES

#: Argon2id far below the floor the store enforces; only tests may ask for it.
FAST_KDF = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)


def _user(root: Path, name: str) -> Messenger:
    store = Store.create(root / f"{name}.db", "pw", kdf=FAST_KDF)
    store.save_identity(UserIdentity.generate())
    return Messenger(store, provider=os.urandom(32), mailbox=os.urandom(16),
                     mailbox_key=os.urandom(32), clock=lambda: 1000.0)


def _deliver(users: dict[bytes, Messenger], envelopes: list[Envelope]) -> None:
    while envelopes:
        env = envelopes.pop(0)
        replies = users[env.mailbox].receive(env.data)
        assert replies is not None
        envelopes.extend(replies)


def test_a_contact_learns_nothing_of_your_other_contacts(tmp_path: Path) -> None:
    alice, bob, carol = (_user(tmp_path, n) for n in ("alice", "bob", "carol"))
    users = {m.card.mailbox: m for m in (alice, bob, carol)}
    for other, name in ((bob, "bob"), (carol, "carol")):
        alice.add_contact(other.card.to_text(), name)
        other.add_contact(alice.card.to_text(), "alice")
    for name in ("bob", "carol", "bob"):
        _deliver(users, alice.send_text(name, f"hello {name}"))
    _deliver(users, alice.propose_timer("carol", 60))
    _deliver(users, carol.accept_timer("alice"))
    _deliver(users, carol.send_text("alice", "hi alice, from carol"))
    _deliver(users, alice.send_text("bob", "after talking to someone else"))
    assert [m["text"] for m in bob.conversation("alice")["messages"]][-1] == \
        "after talking to someone else"

    card = carol.card
    needles = {card.identity_key, card.dh_identity_key, card.mailbox, card.mailbox_key,
               card.prekey, card.provider, card.to_text().encode(), b"carol"}
    held = b"".join(value for table in KV_TABLES for _k, value in bob.store.items(table))
    held += repr(bob.store.messages("c:" + bob.contact("alice").cid)).encode()
    held += repr((bob.contacts(), bob.inbox(), bob.groups(), bob.statistics())).encode()
    assert not [n for n in needles if n in held]
