"""The inner message format: every kind round-trips, and any other bytes raise only
InnerFormatError (fuzzed)."""

from __future__ import annotations

import contextlib
import hashlib
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
    ],
)
def test_round_trip(message: inner.Inner) -> None:
    decoded = inner.decode(message.encode())
    assert decoded.kind == message.kind and decoded.uid == message.uid
    assert decoded.ttl == message.ttl
    assert inner.decode(decoded.encode()) == decoded


def test_the_bytes_are_those_of_the_untyped_format() -> None:
    """Typed kinds, same wire: each encodes to exactly ``[1, kind, uid, ttl, body]`` as the
    earlier untyped module packed it, and those bytes decode to the same object."""
    uid, gid, card = os.urandom(16), os.urandom(16), os.urandom(300)
    data = b"\x00\x01" * 40
    digest = hashlib.sha256(data).digest()
    cases = [
        (inner.Text(text="hi ☃", uid=uid, ttl=30), ["text", 30, ["hi ☃"]]),
        (inner.File(name="a.txt", data=data, sha256=digest, uid=uid),
         ["file", 0, ["a.txt", data, digest]]),
        (inner.Receipt(uids=(gid, uid), uid=uid), ["receipt", 0, [[gid, uid]]]),
        (inner.Timer(seconds=3600, accept=True, uid=uid), ["timer", 0, [3600, True]]),
        (inner.GroupUpdate(gid=gid, name="team", members=(("", card), ("bob", card)), uid=uid),
         ["gupdate", 0, [gid, "team", [["", card], ["bob", card]]]]),
        (inner.GroupText(gid=gid, text="all", uid=uid, ttl=5), ["gtext", 5, [gid, "all"]]),
    ]
    assert sorted(c[1][0] for c in cases) == sorted(inner.KINDS)
    for message, (kind, ttl, body) in cases:
        old = pack([1, kind, uid, ttl, body])
        assert message.encode() == old == inner.encode(message), kind
        assert inner.decode(old) == message


def test_attachment_hash_is_checked() -> None:
    m = inner.file("a", b"abc")
    forged = inner.File(name="a", data=b"abd", sha256=m.sha256, uid=m.uid)
    with pytest.raises(InnerFormatError, match="hash"):
        inner.decode(forged.encode())


def test_unknown_kind_and_wrong_types() -> None:
    for bad in (
        pack([1, "nope", os.urandom(16), 0, []]),
        # the never-sent group attachment kind is no longer in the format
        pack([1, "gfile", os.urandom(16), 0, [os.urandom(16), "f", b"x",
                                               hashlib.sha256(b"x").digest()]]),
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
