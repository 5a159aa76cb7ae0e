"""The seal under every mailbox item: round trip, fresh per sealing, and every bad input a clear
:class:`SealError` (items come from anyone who holds a card)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.errors import ClientError
from client.mailbox_seal import SEAL_OVERHEAD, MailboxKey, SealError, seal
from mixcore.keys import LinkKey

KEY = MailboxKey.generate()


def test_round_trip_and_two_sealings_share_no_prefix() -> None:
    inner = bytes(100)
    a, b = seal(KEY.public, inner), seal(KEY.public, inner)
    assert len(a) == len(b) == len(inner) + SEAL_OVERHEAD
    assert KEY.open(a) == KEY.open(b) == inner
    assert a[:32] != b[:32] and a[32:] != b[32:]


def test_the_ephemeral_keys_top_bit_carries_nothing() -> None:
    """X25519 ignores it; it is drawn at random so that no bit of an item is constant."""
    tops = {seal(KEY.public, b"x")[31] >> 7 for _ in range(64)}
    assert tops == {0, 1}


def test_the_sealing_key_follows_from_the_link_key_and_differs_from_it() -> None:
    link = LinkKey.generate()
    one, two = MailboxKey.from_link_key(link), MailboxKey.from_link_key(link)
    assert one.public == two.public != link.public
    assert MailboxKey.from_link_key(LinkKey.generate()).public != one.public
    assert "secret" not in repr(one) and link.secret_bytes().hex() not in repr(one)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda s: s[:-1], "does not open"),
        (lambda s: s[:20], "shorter"),
        (lambda s: s[:40] + bytes([s[40] ^ 1]) + s[41:], "does not open"),
        (lambda s: bytes([s[0] ^ 1]) + s[1:], "does not open"),
        (lambda s: bytes(32) + s[32:], "low-order"),
    ],
    ids=["truncated", "shorter-than-overhead", "tampered-body", "tampered-key", "zero-key"],
)
def test_bad_items_are_a_clear_error(mutate, why: str) -> None:
    with pytest.raises(SealError, match=why):
        KEY.open(mutate(seal(KEY.public, b"hello")))


def test_an_item_for_another_mailbox_does_not_open() -> None:
    with pytest.raises(SealError):
        MailboxKey.generate().open(seal(KEY.public, b"not yours"))


def test_sealing_to_a_bad_key_is_refused() -> None:
    with pytest.raises(ClientError, match="32 bytes"):
        seal(b"short", b"x")
    with pytest.raises(ClientError, match="not a usable X25519 key"):
        seal(bytes(32), b"x")


@given(st.binary(max_size=200))
def test_no_input_makes_open_raise_anything_but_seal_error(data: bytes) -> None:
    with pytest.raises(SealError):
        KEY.open(data)
