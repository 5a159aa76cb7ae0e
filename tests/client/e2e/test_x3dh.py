from __future__ import annotations

import os
from dataclasses import replace

import pytest

from client.e2e import x3dh
from client.e2e.cards import ContactCard
from client.e2e.errors import PrekeySignatureError, UnknownPrekeyError
from client.e2e.identity import UserIdentity


def _party() -> tuple[UserIdentity, ContactCard]:
    me = UserIdentity.generate()
    return me, ContactCard.create(me, os.urandom(32), os.urandom(16), os.urandom(32))


def test_both_sides_derive_the_same_keys() -> None:
    alice, alice_card = _party()
    bob, bob_card = _party()
    keys_a, _, ek = x3dh.initiate(alice, bob_card)
    keys_b = x3dh.respond(bob, alice_card, bob_card.prekey_id, ek)
    assert keys_a == keys_b
    assert (
        len({keys_a.shared_key, keys_a.header_key_initiator, keys_a.next_header_key_responder}) == 3
    )
    # a different initiator identity gives different keys
    _mallory, mallory_card = _party()
    assert x3dh.respond(bob, mallory_card, bob_card.prekey_id, ek) != keys_a


def test_each_run_is_fresh() -> None:
    alice, _ = _party()
    _, bob_card = _party()
    assert x3dh.initiate(alice, bob_card)[0] != x3dh.initiate(alice, bob_card)[0]


def test_tampered_signed_prekey_is_rejected() -> None:
    alice, _ = _party()
    _, bob_card = _party()
    forged = replace(bob_card, prekey=os.urandom(32))
    with pytest.raises(PrekeySignatureError):
        x3dh.initiate(alice, forged)
    sig = bytearray(bob_card.signature)
    sig[0] ^= 1
    with pytest.raises(PrekeySignatureError):
        x3dh.initiate(alice, replace(bob_card, signature=bytes(sig)))


def test_responder_needs_the_prekey() -> None:
    alice, alice_card = _party()
    bob, bob_card = _party()
    _, _, ek = x3dh.initiate(alice, bob_card)
    bob.rotate_prekey(keep=1)
    with pytest.raises(UnknownPrekeyError):
        x3dh.respond(bob, alice_card, bob_card.prekey_id, ek)
