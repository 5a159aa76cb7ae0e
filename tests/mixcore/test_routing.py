"""Routing commands: fixed layouts, exact round trips, and clear errors on anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixcore.errors import MixnetError, RoutingError
from mixcore.routing import (
    MAX_DELAY_US,
    RELAY_LEN,
    DeliverCommand,
    RelayCommand,
    SurbReplyCommand,
    decode_command,
    encode_command,
)


@given(st.binary(min_size=32, max_size=32), st.integers(0, MAX_DELAY_US))
def test_relay_round_trip_has_fixed_length(node: bytes, delay_us: int) -> None:
    command = RelayCommand(node, delay_us)
    encoded = encode_command(command)
    assert len(encoded) == RELAY_LEN
    assert decode_command(encoded) == command


def test_final_commands_round_trip() -> None:
    for command in (DeliverCommand(b"m" * 16), SurbReplyCommand(b"m" * 16, b"s" * 16)):
        assert decode_command(encode_command(command)) == command


def test_delay_in_seconds_is_rounded_to_microseconds() -> None:
    assert RelayCommand.with_delay(b"n" * 32, 0.25).delay_us == 250_000
    assert RelayCommand.with_delay(b"n" * 32, 1e-7).delay_us == 0
    with pytest.raises(RoutingError):
        RelayCommand.with_delay(b"n" * 32, MAX_DELAY_US / 1e6 + 1)
    with pytest.raises(RoutingError):
        RelayCommand.with_delay(b"n" * 32, float("nan"))


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01" + b"n" * 32, b"\x01" + b"n" * 37, b"\x02" + b"m" * 15, b"\x09" + b"m" * 16],
)
def test_malformed_commands_are_rejected(bad: bytes) -> None:
    with pytest.raises(RoutingError):
        decode_command(bad)


@given(st.binary(max_size=80))
def test_fuzz_decode_command(data: bytes) -> None:
    try:
        command = decode_command(data)
    except MixnetError:
        return
    assert encode_command(command) == data
