"""A raw transport address round-trips, and every malformed one is a ClientError in words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.daemon import format_address, parse_address
from client.errors import ClientError

PROVIDER, MAILBOX, KEY = bytes(range(32)), bytes(range(16)), bytes(range(32, 64))


def test_an_address_round_trips_and_tolerates_surrounding_space() -> None:
    text = format_address(PROVIDER, MAILBOX, KEY)
    assert parse_address(f"  {text}\n") == (PROVIDER, MAILBOX, KEY)


@pytest.mark.parametrize("text", [
    "",
    "abc",
    f"{PROVIDER.hex()}:{MAILBOX.hex()}",  # two parts
    f"{PROVIDER.hex()}:{MAILBOX.hex()}:{KEY.hex()}:00",  # four parts
    f"{PROVIDER.hex()}:{MAILBOX.hex()}:{KEY.hex()[:-2]}",  # a key one byte short
    f"{PROVIDER.hex()}:{MAILBOX.hex()}:{KEY.hex()}00",  # a key one byte long
    f"{PROVIDER.hex()}:{MAILBOX.hex()[:-1]}z:{KEY.hex()}",  # not hex
    f"{PROVIDER.hex()}:zz{MAILBOX.hex()[2:]}:{KEY.hex()}",
    f"{MAILBOX.hex()}:{PROVIDER.hex()}:{KEY.hex()}",  # parts swapped
])
def test_a_malformed_address_is_refused_naming_the_format(text: str) -> None:
    with pytest.raises(ClientError, match="PROVIDER_HEX:MAILBOX_HEX:MAILBOX_KEY_HEX"):
        parse_address(text)


@given(st.text(max_size=200))
def test_no_text_crashes_the_parser(text: str) -> None:
    try:
        parsed = parse_address(text)
    except ClientError:
        return
    assert [len(part) for part in parsed] == [32, 16, 32]
