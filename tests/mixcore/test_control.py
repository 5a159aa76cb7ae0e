"""Client-provider control messages: exact round trips, clear errors, fuzzed decoders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixcore.control import MAX_ACK_IDS, ItemType, PullAck, PullItem, PullRequest
from mixcore.errors import DecodeError, MixnetError


def test_round_trips() -> None:
    assert PullRequest.decode(PullRequest(7).encode()) == PullRequest(7)
    item = PullItem(7, 2, 8, ItemType.REPLY, 123456789, b"s" * 16, b"body")
    assert PullItem.decode(item.encode()) == item
    ack = PullAck(7, (1, 2, 2**63))
    assert PullAck.decode(ack.encode()) == ack


@pytest.mark.parametrize(
    "bad",
    [
        PullItem(1, 0, 1, ItemType.MESSAGE, 1, b"s" * 16, b"abc").encode()[:-1],
        PullItem(1, 3, 2, ItemType.MESSAGE, 1, b"s" * 16, b"").encode(),
        b"\x00" * 10,
    ],
)
def test_bad_items(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        PullItem.decode(bad)


def test_bad_acks() -> None:
    with pytest.raises(DecodeError):
        PullAck.decode(PullAck(1, (5,)).encode() + b"\x00")
    with pytest.raises(DecodeError):
        PullAck(1, tuple(range(MAX_ACK_IDS + 1))).encode()


@given(st.binary(max_size=120))
def test_fuzz_decoders(data: bytes) -> None:
    for cls in (PullRequest, PullItem, PullAck):
        try:
            value = cls.decode(data)  # type: ignore[attr-defined]
        except MixnetError:
            continue
        assert value.encode() == data
