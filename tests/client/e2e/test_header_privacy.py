"""What a provider stores must not link the messages of one conversation: across many messages
in both directions, no 8-byte string repeats between ciphertexts, and no ratchet public key,
identity key or header counter appears in the clear."""

from __future__ import annotations

import os
import random
import struct

from client.e2e.cards import ContactCard
from client.e2e.identity import UserIdentity
from client.e2e.ratchet import OVERHEAD
from client.e2e.session import INIT_PREFIX_LEN, Session, open_message

WINDOW = 8


def repeated_substrings(messages: list[bytes], n: int = WINDOW) -> set[bytes]:
    owner: dict[bytes, int] = {}
    repeats = set()
    for index, m in enumerate(messages):
        for i in range(len(m) - n + 1):
            chunk = m[i : i + n]
            if owner.setdefault(chunk, index) != index:
                repeats.add(chunk)
    return repeats


def test_the_check_finds_a_shared_field() -> None:
    field = os.urandom(8)
    assert repeated_substrings([os.urandom(50) + field, field + os.urandom(50)]) == {field}
    assert not repeated_substrings([os.urandom(100) for _ in range(20)])


def test_conversation_ciphertexts_share_nothing() -> None:
    rng = random.Random(3)
    alice, bob = UserIdentity.generate(), UserIdentity.generate()
    alice_card = ContactCard.create(alice, os.urandom(32), os.urandom(16), os.urandom(32))
    bob_card = ContactCard.create(bob, os.urandom(32), os.urandom(16), os.urandom(32))
    sa = Session.initiate(alice, alice_card, bob_card)
    sessions: dict[str, Session] = {}
    ciphertexts: list[bytes] = []
    secrets: set[bytes] = {
        alice.identity_key,
        alice.dh_public,
        bob.identity_key,
        bob.dh_public,
        bob_card.prekey,
        alice_card.prekey,
    }
    headers: set[bytes] = set()

    def send(sender: Session, plaintext: bytes) -> bytes:
        state = sender._branches[0].ratchet.state
        headers.add(struct.pack(">II", state.pn, state.ns))
        secrets.add(state.dhs_public)
        m = sender.encrypt(plaintext)
        secrets.add(sender._branches[0].ratchet.state.dhs_public)
        secrets.add(sender._branches[0].ephemeral)
        ciphertexts.append(m)
        return m

    sent = {"a": 0, "b": 0}
    # Alice sends a burst before any reply (several initial messages), then both talk
    for i in range(3):
        received = open_message(bob, sessions, send(sa, b"hello %d" % i))
        sessions.setdefault("alice", received.session)
        sent["a"] += 1
    sb = sessions["alice"]
    while sent["a"] < 50 or sent["b"] < 50:
        who = rng.choice("ab")
        for _ in range(rng.randint(1, 4)):
            if who == "a" and sent["a"] < 50:
                m = send(sa, b"same text")
                assert sb.decrypt(m) == b"same text"
                sent["a"] += 1
            elif who == "b" and sent["b"] < 50:
                m = send(sb, b"same text")
                assert sa.decrypt(m) == b"same text"
                sent["b"] += 1
    assert len(ciphertexts) == 100
    assert not repeated_substrings(ciphertexts)
    for m in ciphertexts:
        for s in secrets:
            assert s not in m
        for h in headers:
            assert h not in m
    # the same plaintext always gives the same length (padding bucket), plus the fixed init
    # prefix on the initiator's messages until its first reply
    lengths = {len(m) for m in ciphertexts[3:]}
    assert lengths <= {256 + OVERHEAD, 256 + OVERHEAD + INIT_PREFIX_LEN}
