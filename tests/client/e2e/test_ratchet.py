from __future__ import annotations

import contextlib
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.e2e.errors import MessageError, NotForThisSession, ReplayError, TooManySkippedError
from client.e2e.primitives import AeadError, x25519_generate
from client.e2e.ratchet import (
    ENC_HEADER_LEN,
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    OVERHEAD,
    Ratchet,
    kdf_ck,
    open_body,
)
from mixcore.errors import MixnetError

AD = b"associated-data"


def pair() -> tuple[Ratchet, Ratchet]:
    sk, hka, nhkb = os.urandom(32), os.urandom(32), os.urandom(32)
    secret, public = x25519_generate()
    return (
        Ratchet.init_initiator(sk, public, hka, nhkb),
        Ratchet.init_responder(sk, secret, public, hka, nhkb),
    )


def test_in_order_both_directions() -> None:
    alice, bob = pair()
    assert not bob.can_send
    for i in range(5):
        assert bob.decrypt(alice.encrypt(b"a%d" % i, AD), AD) == b"a%d" % i
    for round_ in range(4):
        for i in range(3):
            m = bob.encrypt(b"b%d%d" % (round_, i), AD)
            assert alice.decrypt(m, AD) == b"b%d%d" % (round_, i)
        m = alice.encrypt(b"x", AD)
        assert bob.decrypt(m, AD) == b"x"


def test_overhead_is_constant() -> None:
    alice, bob = pair()
    for n in (0, 1, 100, 5000):
        m = alice.encrypt(bytes(n), AD)
        assert len(m) == n + OVERHEAD
        bob.decrypt(m, AD)


def test_out_of_order_across_chains() -> None:
    alice, bob = pair()
    first = [alice.encrypt(b"a%d" % i, AD) for i in range(6)]
    # bob gets them shuffled, answers in between; alice sends a new chain meanwhile
    order = [3, 0, 5]
    for i in order:
        assert bob.decrypt(first[i], AD) == b"a%d" % i
    alice.decrypt(bob.encrypt(b"reply", AD), AD)
    second = [alice.encrypt(b"c%d" % i, AD) for i in range(3)]
    assert bob.decrypt(second[2], AD) == b"c2"
    for i in (4, 1, 2):
        assert bob.decrypt(first[i], AD) == b"a%d" % i
    assert bob.decrypt(second[0], AD) == b"c0"
    assert bob.decrypt(second[1], AD) == b"c1"
    assert not bob.state.skipped


def test_random_loss_and_reordering() -> None:
    rng = random.Random(7)
    alice, bob = pair()
    sides = {"a": alice, "b": bob}
    bob.decrypt(alice.encrypt(b"hello", AD), AD)
    in_flight: list[tuple[str, bytes, bytes]] = []
    delivered = 0
    for step in range(300):
        sender = rng.choice("ab")
        pt = b"%s-%d" % (sender.encode(), step)
        in_flight.append((sender, sides[sender].encrypt(pt, AD), pt))
        rng.shuffle(in_flight)
        while in_flight and rng.random() < 0.5:
            s, m, pt = in_flight.pop()
            if rng.random() < 0.2:
                continue  # lost
            receiver = sides["b" if s == "a" else "a"]
            assert receiver.decrypt(m, AD) == pt
            delivered += 1
    assert delivered > 100


def test_lost_messages_leave_skipped_keys_then_later_ones_decrypt() -> None:
    alice, bob = pair()
    msgs = [alice.encrypt(b"%d" % i, AD) for i in range(10)]
    assert bob.decrypt(msgs[9], AD) == b"9"
    assert len(bob.state.skipped) == 9
    assert bob.decrypt(msgs[4], AD) == b"4"
    assert len(bob.state.skipped) == 8


def test_skipped_key_bound_is_enforced_with_a_clear_error() -> None:
    alice, bob = pair()
    bob.decrypt(alice.encrypt(b"first", AD), AD)
    for _ in range(MAX_SKIP + 1):
        alice.encrypt(b"lost", AD)
    before = bob.to_bytes()
    with pytest.raises(TooManySkippedError, match="bound"):
        bob.decrypt(alice.encrypt(b"too far", AD), AD)
    assert bob.to_bytes() == before  # nothing changed


def test_skipped_key_store_is_bounded_in_total() -> None:
    alice, bob = pair()
    bob.decrypt(alice.encrypt(b"first", AD), AD)
    for _ in range(3):
        for _ in range(MAX_SKIP - 1):
            alice.encrypt(b"lost", AD)
        bob.decrypt(alice.encrypt(b"x", AD), AD)
        alice.decrypt(bob.encrypt(b"y", AD), AD)  # new chain each round
    assert len(bob.state.skipped) <= MAX_SKIPPED_KEYS


def test_replayed_ciphertext_is_rejected() -> None:
    alice, bob = pair()
    msgs = [alice.encrypt(b"%d" % i, AD) for i in range(3)]
    bob.decrypt(msgs[2], AD)
    bob.decrypt(msgs[0], AD)
    for m in (msgs[0], msgs[2]):
        with pytest.raises(ReplayError):
            bob.decrypt(m, AD)
    # and after the chain has moved on
    alice.decrypt(bob.encrypt(b"r", AD), AD)
    bob.decrypt(alice.encrypt(b"n", AD), AD)
    with pytest.raises(MessageError):
        bob.decrypt(msgs[2], AD)
    assert bob.decrypt(msgs[1], AD) == b"1"  # the skipped one is still fine, once
    with pytest.raises(MessageError):  # chain forgotten: NotForThisSession, still rejected
        bob.decrypt(msgs[1], AD)


def _windows(state: bytes) -> list[bytes]:
    return [state[i : i + 32] for i in range(len(state) - 31)]


def _opens(candidates: list[bytes], message: bytes) -> bool:
    hdr, body = message[:ENC_HEADER_LEN], message[ENC_HEADER_LEN:]
    for w in candidates:
        for key in (w, kdf_ck(w)[1]):
            try:
                open_body(key, hdr[:12], body, AD + hdr)
                return True
            except AeadError:
                pass
    return False


def test_forward_secrecy_old_message_keys_are_gone_after_use() -> None:
    alice, bob = pair()
    msgs = [alice.encrypt(b"secret %d" % i, AD) for i in range(3)]
    bob.decrypt(msgs[2], AD)
    # the check can see a key when one is there: message 0 is skipped, its key is stored
    assert _opens(_windows(bob.to_bytes()), msgs[0])
    bob.decrypt(msgs[0], AD)
    bob.decrypt(msgs[1], AD)
    alice.decrypt(bob.encrypt(b"r", AD), AD)
    state = bob.to_bytes()
    for m in msgs:
        assert not _opens(_windows(state), m)
        with pytest.raises(MessageError):
            Ratchet.from_bytes(state).decrypt(m, AD)


def test_healing_after_state_compromise() -> None:
    alice, bob = pair()
    bob.decrypt(alice.encrypt(b"hi", AD), AD)
    alice.decrypt(bob.encrypt(b"hey", AD), AD)
    eve = Ratchet.from_bytes(bob.to_bytes())  # the attacker copies Bob's state at time t
    m1 = alice.encrypt(b"before healing", AD)
    assert eve.decrypt(m1, AD) == b"before healing"  # the compromise is real
    assert bob.decrypt(m1, AD) == b"before healing"
    # Bob's next reply carries a fresh ratchet key; Alice's DH step then heals the session
    alice.decrypt(bob.encrypt(b"reply", AD), AD)
    m2 = alice.encrypt(b"after healing", AD)
    eve_fresh = Ratchet.from_bytes(eve.to_bytes())
    with pytest.raises(MessageError):
        eve.decrypt(m2, AD)
    with pytest.raises(MessageError):
        eve_fresh.decrypt(m2, AD)
    assert bob.decrypt(m2, AD) == b"after healing"


def test_tampering_fails_and_changes_nothing() -> None:
    alice, bob = pair()
    m = alice.encrypt(b"payload", AD)
    before = bob.to_bytes()
    for pos in (0, 20, ENC_HEADER_LEN + 1, len(m) - 1):
        bad = bytearray(m)
        bad[pos] ^= 0x40
        with pytest.raises(MessageError):
            bob.decrypt(bytes(bad), AD)
        assert bob.to_bytes() == before
    with pytest.raises(MessageError):
        bob.decrypt(m, AD + b"x")
    assert bob.decrypt(m, AD) == b"payload"


def test_not_for_this_session() -> None:
    alice, _ = pair()
    _, bob = pair()
    with pytest.raises(NotForThisSession):
        bob.decrypt(alice.encrypt(b"x", AD), AD)


def test_state_round_trip_mid_conversation() -> None:
    alice, bob = pair()
    msgs = [alice.encrypt(b"%d" % i, AD) for i in range(4)]
    bob.decrypt(msgs[3], AD)
    bob = Ratchet.from_bytes(bob.to_bytes())
    alice = Ratchet.from_bytes(alice.to_bytes())
    assert bob.decrypt(msgs[1], AD) == b"1"
    assert alice.decrypt(bob.encrypt(b"r", AD), AD) == b"r"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_decrypt_random_bytes(data: bytes) -> None:
    alice, bob = pair()
    bob.decrypt(alice.encrypt(b"x", AD), AD)
    before = bob.to_bytes()
    with pytest.raises(MixnetError):
        bob.decrypt(data, AD)
    assert bob.to_bytes() == before


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_state_decoder(data: bytes) -> None:
    with contextlib.suppress(MixnetError):
        Ratchet.from_bytes(data)
