from __future__ import annotations

import os

import pytest

from client.e2e.cards import ContactCard
from client.e2e.errors import KeyChangedError, VerificationError
from client.e2e.identity import UserIdentity
from client.e2e.safety import (
    TRANSITIONS,
    ContactVerification,
    SafetyNumber,
    VerificationEvent,
    VerificationState,
    identity_keys,
)
from mixcore.errors import MixnetError


def card(me: UserIdentity) -> ContactCard:
    return ContactCard.create(me, os.urandom(32), os.urandom(16), os.urandom(32))


ALICE, BOB = UserIdentity.generate(), UserIdentity.generate()
A_CARD, B_CARD = card(ALICE), card(BOB)


def test_same_number_on_both_sides() -> None:
    n_alice = SafetyNumber.of(A_CARD, B_CARD)
    n_bob = SafetyNumber.of(B_CARD, A_CARD)
    assert n_alice == n_bob
    assert len(n_alice.digits) == 60 and n_alice.digits.isdigit()
    assert len(n_alice.groups) == 12 and all(len(g) == 5 for g in n_alice.groups)
    assert n_alice.formatted().count("\n") == 2
    assert n_alice.qr_payload() == n_bob.qr_payload()
    assert n_bob.matches_scan(n_alice.qr_payload())
    assert "█" in n_alice.qr_text() or "▀" in n_alice.qr_text()
    # a new card with another provider or prekey, same identity: same number
    assert SafetyNumber.of(card(ALICE), B_CARD) == n_alice


def test_number_changes_when_either_key_changes() -> None:
    n = SafetyNumber.of(A_CARD, B_CARD)
    assert SafetyNumber.of(card(UserIdentity.generate()), B_CARD) != n
    assert SafetyNumber.of(A_CARD, card(UserIdentity.generate())) != n
    # only the X25519 identity key changed
    keys = B_CARD.identity_key + os.urandom(32)
    assert SafetyNumber.of(A_CARD, keys) != n


def test_verify_then_key_change_blocks_sending_until_acknowledged() -> None:
    v = ContactVerification.first_seen(B_CARD)
    assert v.state is VerificationState.UNVERIFIED and v.can_send
    assert not v.observe(B_CARD)
    with pytest.raises(VerificationError, match="does not match"):
        v.verify(A_CARD, "0" * 60)
    assert v.state is VerificationState.UNVERIFIED
    v.verify(A_CARD, SafetyNumber.of(B_CARD, A_CARD).formatted())
    assert v.state is VerificationState.VERIFIED
    v.check_send()

    # (changed: the old keys now stay pinned during a key change, and a contact that was
    # verified can only take the new keys by verifying them, not by acknowledging)
    old_keys = B_CARD.identity_key + B_CARD.dh_identity_key
    new_bob = card(UserIdentity.generate())
    assert v.observe(new_bob)
    assert v.state is VerificationState.KEY_CHANGED
    assert v.pinned_keys == old_keys and v.pending_keys == identity_keys(new_bob)
    assert v.shown_keys == identity_keys(new_bob)
    with pytest.raises(KeyChangedError):
        v.check_send()
    v = ContactVerification.from_bytes(v.to_bytes())  # persisted, still blocked
    with pytest.raises(KeyChangedError):
        v.check_send()
    with pytest.raises(VerificationError, match="in person"):
        v.acknowledge_key_change()
    assert v.pinned_keys == old_keys
    with pytest.raises(VerificationError, match="does not match"):
        v.verify(A_CARD, SafetyNumber.of(A_CARD, B_CARD))  # the old number is not enough
    v.verify(A_CARD, SafetyNumber.of(A_CARD, new_bob))
    assert v.state is VerificationState.VERIFIED and v.pinned_keys == identity_keys(new_bob)
    v.check_send()


def test_unverified_contact_key_change_can_be_acknowledged() -> None:
    v = ContactVerification.first_seen(B_CARD)
    new_bob = card(UserIdentity.generate())
    v.observe(new_bob)
    v.acknowledge_key_change()
    assert v.state is VerificationState.UNVERIFIED and v.pinned_keys == identity_keys(new_bob)
    assert v.pending_keys is None


def test_unverified_contact_key_change_also_blocks() -> None:
    v = ContactVerification.first_seen(B_CARD)
    v.observe(card(UserIdentity.generate()))
    assert not v.can_send


def test_transitions_outside_the_table_are_errors() -> None:
    for state in VerificationState:
        for event in VerificationEvent:
            v = ContactVerification(b"k" * 64, state)
            if (state, event) in TRANSITIONS:
                continue
            with pytest.raises(VerificationError):
                v._apply(event)
    v = ContactVerification.first_seen(B_CARD)
    with pytest.raises(VerificationError):
        v.acknowledge_key_change()
    with pytest.raises(VerificationError):
        v.unverify()


def test_verification_decoder_rejects_garbage() -> None:
    for data in (b"", b"\x94\x01", os.urandom(40)):
        with pytest.raises(MixnetError):
            ContactVerification.from_bytes(data)


def test_session_refuses_to_send_while_key_change_unacknowledged() -> None:
    from client.e2e.session import Session

    v = ContactVerification.first_seen(B_CARD)
    s = Session.initiate(ALICE, A_CARD, B_CARD)
    s.encrypt(b"fine", verification=v)
    v.observe(card(UserIdentity.generate()))
    with pytest.raises(KeyChangedError, match="acknowledge"):
        s.encrypt(b"blocked", verification=v)
    v.acknowledge_key_change()
    s.encrypt(b"fine again", verification=v)
