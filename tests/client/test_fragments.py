"""Fragment layout and the strict decoder (Hypothesis: any bytes either decode to a fragment that
re-encodes to the same bytes, or raise FragmentError; never anything else)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.errors import FragmentError, MessageTooLarge
from client.fragments import (
    HEADER_LEN,
    MESSAGE_ID_LEN,
    Fragment,
    chunk_capacity,
    new_message_id,
    split_message,
)
from mixcore.payload import data_capacity
from mixcore.sphinx import SphinxGeometry

SIZE = data_capacity(SphinxGeometry())  # 1683 with the default geometry (suite v2)
SMALL = 64  # a small fragment size keeps Hypothesis fast; the layout does not depend on it


def test_fragments_fill_the_data_capacity_exactly() -> None:
    assert HEADER_LEN == 23
    mid = new_message_id()
    for chunk in (b"", b"x", bytes(chunk_capacity(SIZE))):
        encoded = Fragment(mid, 0, 1, chunk).encode(SIZE)
        assert len(encoded) == SIZE
        assert Fragment.decode(encoded, SIZE) == Fragment(mid, 0, 1, chunk)


def test_split_and_join_round_trip_and_sizes() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    mid = new_message_id()
    fragments = split_message(data, SIZE, 64, mid)
    assert len(fragments) == -(-len(data) // chunk_capacity(SIZE))
    assert {f.count for f in fragments} == {len(fragments)}
    assert [f.index for f in fragments] == list(range(len(fragments)))
    assert all(len(f.encode(SIZE)) == SIZE for f in fragments)
    assert b"".join(f.chunk for f in fragments) == data
    assert split_message(b"", SIZE, 64, mid) == (Fragment(mid, 0, 1, b""),)


def test_oversized_message_is_a_clear_error() -> None:
    limit = chunk_capacity(SIZE) * 4
    split_message(bytes(limit), SIZE, 4, new_message_id())
    with pytest.raises(MessageTooLarge, match=f"limit is {limit} bytes"):
        split_message(bytes(limit + 1), SIZE, 4, new_message_id())


def test_message_ids_are_random() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == MESSAGE_ID_LEN for i in ids)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda b: b[:-1], "fragment is"),
        (lambda b: b + b"\x00", "fragment is"),
        (lambda b: b"\x03" + b[1:], "not a fragment"),
        (lambda b: b"\x02" + b[1:], "not a fragment"),
        (lambda b: b[:17] + b"\x00\x05\x00\x05" + b[21:], "index out of range"),
        (lambda b: b[:17] + b"\x00\x00\x00\x00" + b[21:], "index out of range"),
        (lambda b: b[:21] + b"\xff\xff" + b[23:], "exceeds"),
        (lambda b: b[:-1] + b"\x01", "padding"),
    ],
)
def test_malformed_fragments_are_refused(mutate, why: str) -> None:
    good = Fragment(bytes(16), 1, 3, b"hello").encode(SMALL)
    with pytest.raises(FragmentError, match=why):
        Fragment.decode(mutate(good), SMALL)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=SMALL, max_size=SMALL))
def test_decoder_accepts_exactly_the_canonical_encodings(data: bytes) -> None:
    try:
        fragment = Fragment.decode(data, SMALL)
    except FragmentError:
        return
    assert fragment.encode(SMALL) == data


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=16, max_size=16),
    st.integers(1, 0xFFFF).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))),
    st.binary(max_size=chunk_capacity(SMALL)),
)
def test_encode_decode_round_trip(mid: bytes, count_index: tuple[int, int], chunk: bytes) -> None:
    count, index = count_index
    fragment = Fragment(mid, index, count, chunk)
    encoded = fragment.encode(SMALL)
    assert len(encoded) == SMALL
    assert Fragment.decode(encoded, SMALL) == fragment


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(24, 200))
def test_split_round_trips_any_message(data: bytes, size: int) -> None:
    fragments = split_message(data, size, 10_000, new_message_id())
    decoded = [Fragment.decode(f.encode(size), size) for f in fragments]
    assert b"".join(f.chunk for f in decoded) == data
