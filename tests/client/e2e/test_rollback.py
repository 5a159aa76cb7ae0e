"""A rolled-back session state (a restored backup, a VM snapshot) re-sends a chain step it has
already used. The per-message salt keeps that from ever encrypting two plaintexts under one
body key and nonce: ``body1 xor body2`` must not equal ``m1 xor m2``, also when the machine's
randomness repeats too (a snapshot restores the RNG state with everything else)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.e2e import ratchet
from client.e2e.cards import ContactCard
from client.e2e.identity import UserIdentity
from client.e2e.primitives import pad
from client.e2e.ratchet import ENC_HEADER_LEN, TAG_LEN
from client.e2e.session import PAD_BUCKET, Session, open_message


def confirmed_pair() -> tuple[Session, Session]:
    """Alice and Bob with a session both ways (Alice's sending chain is a ratchet chain)."""
    alice, bob = UserIdentity.generate(), UserIdentity.generate()
    a_card = ContactCard.create(alice, os.urandom(32), os.urandom(16), os.urandom(32))
    b_card = ContactCard.create(bob, os.urandom(32), os.urandom(16), os.urandom(32))
    a = Session.initiate(alice, a_card, b_card)
    got = open_message(bob, {}, a.encrypt(b"hello"))
    b = got.session
    a.decrypt(b.encrypt(b"hi"))
    return a, b


def xor(x: bytes, y: bytes) -> bytes:
    return bytes(i ^ j for i, j in zip(x, y, strict=False))


def bodies_after_rollback(a: Session, m1: bytes, m2: bytes) -> tuple[bytes, bytes]:
    saved = a.to_bytes()
    c1 = a.encrypt(m1)
    c2 = Session.from_bytes(saved).encrypt(m2)  # the same chain step, again
    return c1[ENC_HEADER_LEN:-TAG_LEN], c2[ENC_HEADER_LEN:-TAG_LEN]


def test_a_rolled_back_chain_step_never_reuses_key_and_nonce() -> None:
    a, _b = confirmed_pair()
    m1, m2 = b"attack at dawn" * 4, b"retreat at ten" * 4
    body1, body2 = bodies_after_rollback(a, m1, m2)
    p1, p2 = pad(m1, PAD_BUCKET), pad(m2, PAD_BUCKET)
    assert xor(body1, body2) != xor(p1, p2)  # would be equal under one key and nonce
    assert body1[:16] != body2[:16]


def test_even_with_repeated_randomness_two_plaintexts_get_two_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, _ = confirmed_pair()
    monkeypatch.setattr(ratchet, "random_bytes", bytes)  # the RNG repeats
    m1, m2 = b"pay alice 10", b"pay mallory 9"
    body1, body2 = bodies_after_rollback(a, m1, m2)
    assert xor(body1, body2) != xor(pad(m1, PAD_BUCKET), pad(m2, PAD_BUCKET))


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.binary(min_size=1, max_size=300))
def test_rollback_property(m1: bytes, m2: bytes) -> None:
    if m1 == m2:
        return
    a, _ = confirmed_pair()
    body1, body2 = bodies_after_rollback(a, m1, m2)
    n = min(len(body1), len(body2))
    assert xor(body1[:n], body2[:n]) != xor(pad(m1, PAD_BUCKET)[:n], pad(m2, PAD_BUCKET)[:n])


def test_the_receiver_still_opens_each_message_once() -> None:
    a, b = confirmed_pair()
    saved = a.to_bytes()
    c1 = a.encrypt(b"one")
    c2 = Session.from_bytes(saved).encrypt(b"two")
    assert b.decrypt(c1) == b"one"
    with pytest.raises(ratchet.ReplayError):
        b.decrypt(c2)  # the same message number: refused, not a second plaintext
