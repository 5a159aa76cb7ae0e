from __future__ import annotations

import contextlib
import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.e2e.cards import CARD_PREFIX, ContactCard
from client.e2e.errors import CardError, PrekeySignatureError
from client.e2e.identity import UserIdentity
from mixcore.errors import MixnetError

ME = UserIdentity.generate()
CARD = ContactCard.create(ME, os.urandom(32), os.urandom(16), os.urandom(32))


def test_text_round_trip_and_case_and_whitespace() -> None:
    text = CARD.to_text()
    assert text.startswith(CARD_PREFIX)
    assert ContactCard.from_text(text) == CARD
    assert ContactCard.from_text(text.upper()) == CARD
    spaced = " ".join(text[i : i + 40] for i in range(0, len(text), 40)) + "\n"
    assert ContactCard.from_text(spaced) == CARD
    assert len(text) < 450  # 32 bytes more since cards carry the mailbox sealing key


def test_card_holds_what_the_sender_needs_and_nothing_else() -> None:
    assert CARD.identity_key == ME.identity_key
    assert CARD.dh_identity_key == ME.dh_public
    assert CARD.prekey == ME.current_prekey.public
    assert CARD.prekey_id == ME.current_prekey.prekey_id
    assert len(CARD.to_bytes()) < 260


def test_typo_is_caught_by_the_checksum() -> None:
    text = CARD.to_text()
    i = len(CARD_PREFIX) + 50
    typo = text[:i] + ("a" if text[i] != "a" else "b") + text[i + 1 :]
    with pytest.raises(CardError, match="checksum"):
        ContactCard.from_text(typo)
    with pytest.raises(CardError, match=r"checksum|truncated"):
        ContactCard.from_text(text[:-3])


def test_not_a_card() -> None:
    with pytest.raises(CardError, match="start with"):
        ContactCard.from_text("hello")
    with pytest.raises(CardError, match="base32"):
        ContactCard.from_text(CARD_PREFIX + "!!!!")


def test_tampered_prekey_or_address_fails_the_signature() -> None:
    other = os.urandom(32)
    for field, value in [("prekey", other), ("provider", other), ("mailbox", other[:16])]:
        forged = replace(CARD, **{field: value})
        with pytest.raises(PrekeySignatureError):
            ContactCard.from_text(forged.to_text())
    bad_sig = replace(CARD, signature=bytes(64))
    with pytest.raises(PrekeySignatureError):
        ContactCard.from_bytes(bad_sig.to_bytes())


def test_rotation_changes_the_card_and_old_prekeys_expire() -> None:
    me = UserIdentity.generate()
    first = me.current_prekey
    me.rotate_prekey(keep=2)
    assert me.prekey(first.prekey_id) is not None
    me.rotate_prekey(keep=2)
    assert me.prekey(first.prekey_id) is None
    again = UserIdentity.from_bytes(me.to_bytes())
    assert [p.public for p in again.prekeys] == [p.public for p in me.prekeys]
    assert again.identity_key == me.identity_key and again.dh_public == me.dh_public


def test_qr_renders_the_card() -> None:
    art = CARD.qr_text()
    lines = art.splitlines()
    assert len(lines) > 20 and len({len(line) for line in lines}) == 1
    assert set(art) <= {"█", "▀", "▄", " ", "\n"}
    assert CARD.qr().mode == "alphanumeric"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_fuzz_card_text(text: str) -> None:
    with contextlib.suppress(MixnetError):
        ContactCard.from_text(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_card_bytes(data: bytes) -> None:
    with contextlib.suppress(MixnetError):
        ContactCard.from_bytes(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(0, 255))
def test_fuzz_card_byte_flips_are_rejected(pos: int, value: int) -> None:
    raw = bytearray(CARD.to_bytes())
    pos %= len(raw)
    if raw[pos] == value:
        return
    raw[pos] = value
    with pytest.raises(MixnetError):
        ContactCard.from_bytes(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_identity_state_decoder(data: bytes) -> None:
    with contextlib.suppress(MixnetError):
        UserIdentity.from_bytes(data)
