"""The inner message format: every kind round-trips, and any other bytes raise only
InnerFormatError (fuzzed)."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.messenger import inner
from client.messenger.errors import InnerFormatError
from client.messenger.ledger import Delivery, advance, summarize
from mixcore.encoding import pack


@pytest.mark.parametrize(
    "message",
    [
        inner.text("hello ☃", 30),
        inner.file("a.txt", b"data"),
        inner.receipt([os.urandom(16), os.urandom(16)]),
        inner.timer(3600, True),
        inner.group_update(os.urandom(16), "team", [["bob", b"card"]]),
        inner.group_text(os.urandom(16), "hi"),
        inner.group_file(os.urandom(16), "f", b"\x00" * 10),
    ],
)
def test_round_trip(message: inner.Inner) -> None:
    decoded = inner.decode(message.encode())
    assert decoded.kind == message.kind and decoded.uid == message.uid
    assert decoded.ttl == message.ttl
    assert inner.decode(decoded.encode()) == decoded


def test_attachment_hash_is_checked() -> None:
    m = inner.file("a", b"abc")
    forged = inner.Inner("file", m.uid, 0, ("a", b"abd", m.body[2]))
    with pytest.raises(InnerFormatError, match="hash"):
        inner.decode(forged.encode())


def test_unknown_kind_and_wrong_types() -> None:
    for bad in (
        pack([1, "nope", os.urandom(16), 0, []]),
        pack([2, "text", os.urandom(16), 0, ["x"]]),
        pack([1, "text", os.urandom(15), 0, ["x"]]),
        pack([1, "timer", os.urandom(16), 0, [5, 1]]),
        pack([1, "text", os.urandom(16), -1, ["x"]]),
    ):
        with pytest.raises(InnerFormatError):
            inner.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_inner_format_error(data: bytes) -> None:
    with contextlib.suppress(InnerFormatError):
        inner.decode(data)


def test_states_only_move_forward_and_receipts_win() -> None:
    assert advance(Delivery.AT_PROVIDER, Delivery.SENT) is Delivery.AT_PROVIDER
    assert advance(Delivery.FAILED, Delivery.DELIVERED) is Delivery.DELIVERED
    assert advance(Delivery.DELIVERED, Delivery.FAILED) is Delivery.DELIVERED
    rows = {"a": (Delivery.DELIVERED, ""), "b": (Delivery.FAILED, "key changed")}
    assert summarize(rows)["state"] == "failed"
    assert summarize(rows)["delivered"] == 1 and summarize(rows)["reason"] == "key changed"
