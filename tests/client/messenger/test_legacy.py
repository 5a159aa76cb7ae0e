"""A store of the earlier layout (groups, pending cards, read marks and delivery states as
prefixed rows of ``settings``) opens with everything where it was: the rows move into their
tables once, and the messenger shows the same contacts, groups, states and unread counts."""

from __future__ import annotations

import os
import time
from pathlib import Path

from client.e2e.identity import UserIdentity
from client.messenger.ledger import BY_TRANSPORT, DELIVERY, Entry
from client.messenger.legacy import move_settings_rows
from client.messenger.messenger import Messenger
from client.storage import KdfParams, Store
from mixcore.encoding import pack

FAST_KDF = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)

T1 = b"t" * 16


def user(path: Path) -> Messenger:
    store = Store.create(path, "pw", kdf=FAST_KDF)
    store.save_identity(UserIdentity.generate())
    return Messenger(store, provider=os.urandom(32), mailbox=os.urandom(16),
                     mailbox_key=os.urandom(32), clock=time.time)


def to_earlier_layout(store: Store) -> None:
    """Write the messenger's rows back the way the earlier version kept them."""
    with store.transaction():
        for table, prefix in (("groups", "group:"), ("unconfirmed_cards", "pending_card:"),
                              ("read_marks", "read:"), (BY_TRANSPORT, "transport:")):
            for key, value in store.items(table):
                store.delete(table, key)
                store.put("settings", prefix + key, value)
        for uid, value in store.items(DELIVERY):
            store.delete(DELIVERY, uid)
            entry = Entry.decode(value)
            store.put("settings", f"delivery:{uid}", pack(
                [[cid, state.value, reason] for cid, (state, reason) in entry.rows.items()]))
            store.put("settings", f"tids:{uid}", b"".join(entry.transport_ids))


def test_an_earlier_store_opens_with_everything_in_place(tmp_path: Path) -> None:
    alice, bob, carol = (user(tmp_path / f"{n}.db") for n in ("alice", "bob", "carol"))
    alice.add_contact(bob.card.to_text(), "bob")
    alice.add_contact(carol.card.to_text(), "carol")
    bob.add_contact(alice.card.to_text(), "alice")
    for env in alice.create_group("team", ["bob"]):
        bob.receive(env.data)
    [env] = alice.send_text("bob", "hello")
    alice.bind(env, T1)
    alice.on_transport_progress(T1, sent=1, acked=0, total=1)
    for reply in bob.receive(env.data) or []:
        for answer in alice.receive(reply.data) or []:
            bob.receive(answer.data)
    for env in bob.send_text("alice", "unread by alice"):
        alice.receive(env.data)
    alice.add_contact(user(tmp_path / "carol2.db").card.to_text(), "carol")  # a key change
    before = (alice.contacts(), alice.groups(), alice.inbox(),
              alice.conversation("bob", mark_read=False)["messages"])
    store = alice.store
    to_earlier_layout(store)
    assert any(k.startswith("delivery:") for k in store.ids("settings"))
    assert store.ids("groups") == [] and store.ids(DELIVERY) == []

    again = Messenger(store, provider=alice.card.provider, mailbox=alice.card.mailbox,
                      mailbox_key=alice.card.mailbox_key, clock=time.time)
    assert store.ids("settings") == [] and move_settings_rows(store) == 0
    after = (again.contacts(), again.groups(), again.inbox(),
             again.conversation("bob", mark_read=False)["messages"])
    for item in before[3]:  # the transport's progress lives in memory only (as before)
        item.pop("fragments_acked", None)
        item.pop("fragments_total", None)
    assert after == before
    assert again.tracks(T1) and again.ledger.in_flight() == [T1]
    assert before[3][0]["state"] == "delivered"
    again.acknowledge_key_change("carol")  # the pending card was found where it moved
    assert again.contacts()[1]["verification"] == "unverified"
    for m in (alice, bob, carol):
        m.store.close()
