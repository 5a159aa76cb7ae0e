"""What a thief of the (locked) device finds in a messenger client's files: the message store
with the transport state inside it, as the daemon keeps them. No recipient address, mailbox,
card field, name, plaintext or timestamp in the clear; and once a disappearing message has
expired, neither it nor the envelope that carried it can be found in the files any more, not
even as sealed bytes (which the passphrase would open) in free pages or the journal."""

from __future__ import annotations

import os
import sqlite3
import struct
from pathlib import Path

from client.e2e.identity import UserIdentity
from client.messenger.messenger import Envelope, Messenger
from client.storage import KdfParams, Store
from client.transport_db import TransportDB

FAST = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)
TEXT = b"MEET AT THE OLD MILL AT NINE"


class Clock:
    def __init__(self) -> None:
        self.now = 1_712_000_000.5

    def __call__(self) -> float:
        return self.now


class Client:
    """A messenger and its transport state in one store, wired as the daemon wires them."""

    def __init__(self, folder: Path, clock: Clock) -> None:
        self.folder = folder
        store = Store.create(folder / "messenger.db", "pw", kdf=FAST)
        store.save_identity(UserIdentity.generate())
        self.m = Messenger(store, provider=os.urandom(32), mailbox=os.urandom(16),
                           mailbox_key=os.urandom(32), clock=clock)
        self.db = TransportDB(store)
        self.clock = clock

    def send(self, envelopes: list[Envelope]) -> list[bytes]:
        tids = []
        for env in envelopes:
            tid = os.urandom(16)
            self.db.add_outgoing(tid, env.provider, env.mailbox, env.mailbox_key, env.data,
                                 now=self.clock())
            self.m.bind(env, tid)
            tids.append(tid)
        return tids

    def raw(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.folder.iterdir()) if p.is_file())

    def sealed(self, table: str) -> list[bytes]:
        conn = sqlite3.connect(self.m.store.path)
        try:
            return [v for (v,) in conn.execute(f"SELECT sealed FROM {table}")]
        finally:
            conn.close()


def exchange(sender: Client, receiver: Client, envelopes: list[Envelope]) -> list[bytes]:
    """Deliver end to end (receipts come back), but no transport ACK: rows stay pending."""
    tids = sender.send(envelopes)
    for env in envelopes:
        replies = receiver.m.receive(env.data)
        assert replies is not None
        receiver.send(replies)
        for r in replies:
            sender.m.receive(r.data)
    return tids


def test_no_address_card_name_text_or_time_in_the_files_also_after_expiry(
    tmp_path: Path,
) -> None:
    clock = Clock()
    alice = Client(tmp_path / "alice", clock)
    bob = Client(tmp_path / "bob", clock)
    alice.m.add_contact(bob.m.card.to_text(), "bob-the-contact")
    bob.m.add_contact(alice.m.card.to_text(), "alice-the-contact")
    exchange(alice, bob, alice.m.propose_timer("bob-the-contact", 60))
    exchange(bob, alice, bob.m.accept_timer("alice-the-contact"))
    sent_at = clock.now = clock.now + 17.25
    [tid] = exchange(alice, bob, alice.m.send_text("bob-the-contact", TEXT.decode()))
    assert TEXT.decode() in [m["text"] for m in
                             bob.m.conversation("alice-the-contact", mark_read=False)["messages"]]
    needles = {"text": TEXT, "text part": TEXT[:12]}
    for who, c in (("bob", bob), ("alice", alice)):
        card = c.m.card
        needles |= {f"{who} provider": card.provider, f"{who} mailbox": card.mailbox,
                    f"{who} identity": card.identity_key, f"{who} dh": card.dh_identity_key,
                    f"{who} prekey": card.prekey, f"{who} card text": card.to_text()[8:40].encode()}
    needles |= {"name": b"bob-the-contact", "other name": b"alice-the-contact",
                "time >d": struct.pack(">d", sent_at), "time <d": struct.pack("<d", sent_at),
                "time int": struct.pack(">I", int(sent_at))}

    def found() -> list[str]:
        raw = alice.raw() + bob.raw()
        return [name for name, needle in needles.items() if needle in raw]

    assert found() == []
    assert alice.db.get_outgoing(tid) is not None  # still queued (no transport ACK yet)
    old = {f"{who} {t} {i}": blob for who, c in (("alice", alice), ("bob", bob))
           for t in ("messages", "outbox") for i, blob in enumerate(c.sealed(t))}
    assert old
    clock.now += 61
    alice.m.upkeep()
    bob.m.upkeep()
    assert TEXT.decode() not in str(bob.m.conversation("alice-the-contact")["messages"])
    assert TEXT.decode() not in str(alice.m.conversation("bob-the-contact")["messages"])
    # the disappearing message's envelope left the outbox with it, and the daemon is told to
    # withdraw it from the transport's queue too
    assert alice.db.get_outgoing(tid) is None
    assert tid in alice.m.take_withdrawn() and alice.m.take_withdrawn() == []
    assert found() == []
    raw = alice.raw() + bob.raw()
    gone = {k: v for k, v in old.items()
            if v not in alice.sealed("messages") + alice.sealed("outbox")
            + bob.sealed("messages") + bob.sealed("outbox")}
    assert gone  # the expired message's rows are deleted ...
    assert [k for k, v in gone.items() if v[12:60] in raw] == []  # ... and wiped
    alice.m.store.close()
    bob.m.store.close()
